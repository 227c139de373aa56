//! `dd_image`: an opened image reference (any transport), its identity and layers.

use std::ffi::{c_char, CString};
use std::sync::Mutex;

use super::error::{dd_error, Failure};
use super::{
    cstring, guard, guard_value, handle_arg, opt_str_arg, out_arg, ptr_of, put_string, str_arg,
    to_json,
};
use docker_delta::image::LayerCheck;
use docker_delta::platform::Platform;
use docker_delta::reference::ImageReference;
use docker_delta::transport::{ImageSource, OpenOptions};

/// An opened image. Its metadata was read and checked when it was opened; layers are read
/// only by `dd_image_verify`. Strings returned by the accessors are borrowed and live
/// until `dd_image_free`. Accessors may be called from several threads at once.
pub struct dd_image {
    source: Box<dyn ImageSource>,
    reference: CString,
    transport: CString,
    manifest_format: CString,
    image_id: CString,
    platform: CString,
    tags: Vec<CString>,
    layers: Vec<LayerStrings>,
    checks: Mutex<Option<Vec<LayerCheck>>>,
}

struct LayerStrings {
    diff_id: CString,
    digest: Option<CString>,
    media_type: CString,
    size: u64,
}

impl dd_image {
    fn new(source: Box<dyn ImageSource>) -> dd_image {
        let img = source.image();
        dd_image {
            reference: cstring(img.reference.to_string()),
            transport: cstring(img.transport.to_string()),
            manifest_format: cstring(serde_name(&img.manifest_kind)),
            image_id: cstring(img.config_digest.to_string()),
            platform: cstring(img.platform.to_string()),
            tags: img.repo_tags.iter().map(|t| cstring(t.as_str())).collect(),
            layers: img
                .layers
                .iter()
                .map(|l| LayerStrings {
                    diff_id: cstring(l.diff_id.to_string()),
                    digest: l.digest.as_ref().map(|d| cstring(d.to_string())),
                    media_type: cstring(l.media_type.as_str()),
                    size: l.size,
                })
                .collect(),
            checks: Mutex::new(None),
            source,
        }
    }
}

/// The name serde gives a unit enum variant (`oci-manifest`), as in the JSON.
fn serde_name(v: &impl serde::Serialize) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

/// Opens the image `reference` names, in skopeo syntax (`docker-archive:PATH`,
/// `oci:DIR[:REF]`, `oci-archive:PATH[:REF]`, `docker-daemon:NAME:TAG`, or a path whose
/// transport is detected). `platform` (`os/arch[/variant]`, may be NULL for the host's)
/// chooses from a multi-platform index. A `docker-daemon:` reference talks to the daemon
/// at `DOCKER_HOST`. A `docker://` reference is read with TLS verified and the credentials
/// found where skopeo and Docker keep them (see `dd_create_options_set_authfile`); to pass
/// credentials, plain HTTP or a CA directory, use `dd_create` or `dd_apply` with options.
///
/// On success `*out` is a new image to free with `dd_image_free`; otherwise it is NULL.
///
/// # Safety
///
/// `reference` and `platform` must be NULL or NUL-terminated strings; `out` must point to
/// writable storage; `err` must be NULL or point to writable storage.
#[no_mangle]
pub unsafe extern "C" fn dd_image_open(
    reference: *const c_char,
    platform: *const c_char,
    out: *mut *mut dd_image,
    err: *mut *mut dd_error,
) -> super::dd_status {
    guard(err, || {
        // SAFETY: caller's contract for every pointer argument.
        let out = unsafe { out_arg(out, "out") }?;
        let reference = unsafe { str_arg(reference, "reference") }?;
        let platform = unsafe { opt_str_arg(platform, "platform") }?;
        let options = OpenOptions {
            platform: platform.map(Platform::parse).transpose()?,
            // Credentials where skopeo and Docker keep them; TLS verified.
            registry: super::registry::RegistrySettings::default().options()?,
            ..OpenOptions::default()
        };
        let source = docker_delta::transport::open(&ImageReference::parse(reference)?, &options)?;
        *out = Box::into_raw(Box::new(dd_image::new(source)));
        Ok(())
    })
}

/// Frees an image. NULL is ignored.
///
/// # Safety
///
/// `image` must be NULL or an image from `dd_image_open`, not freed before.
#[no_mangle]
pub unsafe extern "C" fn dd_image_free(image: *mut dd_image) {
    if image.is_null() {
        return;
    }
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: made by `Box::into_raw` in `dd_image_open` (caller's contract).
        drop(unsafe { Box::from_raw(image) });
    }));
}

/// A borrowed string field of a live image, or NULL.
///
/// # Safety
///
/// `image` must be NULL or a live image.
unsafe fn image_str(image: *const dd_image, field: fn(&dd_image) -> &CString) -> *const c_char {
    // SAFETY: caller's contract.
    guard_value(std::ptr::null(), || {
        ptr_of(unsafe { image.as_ref() }.map(field))
    })
}

/// The reference, in canonical form (`docker-archive:/abs/path.tar`). NULL for NULL.
///
/// # Safety
///
/// `image` must be NULL or a live image.
#[no_mangle]
pub unsafe extern "C" fn dd_image_reference(image: *const dd_image) -> *const c_char {
    // SAFETY: caller's contract.
    unsafe { image_str(image, |i| &i.reference) }
}

/// The transport: `docker-archive`, `oci`, `oci-archive` or `docker-daemon`.
///
/// # Safety
///
/// `image` must be NULL or a live image.
#[no_mangle]
pub unsafe extern "C" fn dd_image_transport(image: *const dd_image) -> *const c_char {
    // SAFETY: caller's contract.
    unsafe { image_str(image, |i| &i.transport) }
}

/// The manifest format the image was described by, as `manifest_format` in
/// `dd_image_json`: `docker-archive-manifest`, `oci-manifest`, `docker-schema2`
/// (`oci-index`/`docker-manifest-list` walked to reach it are in `index_formats`).
///
/// # Safety
///
/// `image` must be NULL or a live image.
#[no_mangle]
pub unsafe extern "C" fn dd_image_manifest_format(image: *const dd_image) -> *const c_char {
    // SAFETY: caller's contract.
    unsafe { image_str(image, |i| &i.manifest_format) }
}

/// The config digest, `sha256:<hex>`: the Docker image ID.
///
/// # Safety
///
/// `image` must be NULL or a live image.
#[no_mangle]
pub unsafe extern "C" fn dd_image_config_digest(image: *const dd_image) -> *const c_char {
    // SAFETY: caller's contract.
    unsafe { image_str(image, |i| &i.image_id) }
}

/// The Docker image ID (the same string as `dd_image_config_digest`).
///
/// # Safety
///
/// `image` must be NULL or a live image.
#[no_mangle]
pub unsafe extern "C" fn dd_image_id(image: *const dd_image) -> *const c_char {
    // SAFETY: caller's contract.
    unsafe { image_str(image, |i| &i.image_id) }
}

/// The image's platform from its config, `os/arch[/variant]`.
///
/// # Safety
///
/// `image` must be NULL or a live image.
#[no_mangle]
pub unsafe extern "C" fn dd_image_platform(image: *const dd_image) -> *const c_char {
    // SAFETY: caller's contract.
    unsafe { image_str(image, |i| &i.platform) }
}

/// Number of tags the source gives the image (`RepoTags`, OCI `ref.name`, daemon tags).
///
/// # Safety
///
/// `image` must be NULL or a live image.
#[no_mangle]
pub unsafe extern "C" fn dd_image_tag_count(image: *const dd_image) -> usize {
    // SAFETY: caller's contract.
    guard_value(0, || unsafe { image.as_ref() }.map_or(0, |i| i.tags.len()))
}

/// Tag `index` (0-based), or NULL when out of range.
///
/// # Safety
///
/// `image` must be NULL or a live image.
#[no_mangle]
pub unsafe extern "C" fn dd_image_tag(image: *const dd_image, index: usize) -> *const c_char {
    // SAFETY: caller's contract.
    guard_value(std::ptr::null(), || {
        ptr_of(unsafe { image.as_ref() }.and_then(|i| i.tags.get(index)))
    })
}

/// Number of layers.
///
/// # Safety
///
/// `image` must be NULL or a live image.
#[no_mangle]
pub unsafe extern "C" fn dd_image_layer_count(image: *const dd_image) -> usize {
    // SAFETY: caller's contract.
    guard_value(0, || {
        unsafe { image.as_ref() }.map_or(0, |i| i.layers.len())
    })
}

/// Layer `index`'s diff_id (sha256 of the uncompressed tar), or NULL when out of range.
///
/// # Safety
///
/// `image` must be NULL or a live image.
#[no_mangle]
pub unsafe extern "C" fn dd_image_layer_diff_id(
    image: *const dd_image,
    index: usize,
) -> *const c_char {
    // SAFETY: caller's contract.
    guard_value(std::ptr::null(), || {
        ptr_of(
            unsafe { image.as_ref() }
                .and_then(|i| i.layers.get(index))
                .map(|l| &l.diff_id),
        )
    })
}

/// Layer `index`'s stored blob digest, or NULL when out of range or not known without
/// reading the layer (see `dd_image_json` after `dd_image_verify`).
///
/// # Safety
///
/// `image` must be NULL or a live image.
#[no_mangle]
pub unsafe extern "C" fn dd_image_layer_digest(
    image: *const dd_image,
    index: usize,
) -> *const c_char {
    // SAFETY: caller's contract.
    guard_value(std::ptr::null(), || {
        ptr_of(
            unsafe { image.as_ref() }
                .and_then(|i| i.layers.get(index))
                .and_then(|l| l.digest.as_ref()),
        )
    })
}

/// Layer `index`'s media type, or NULL when out of range.
///
/// # Safety
///
/// `image` must be NULL or a live image.
#[no_mangle]
pub unsafe extern "C" fn dd_image_layer_media_type(
    image: *const dd_image,
    index: usize,
) -> *const c_char {
    // SAFETY: caller's contract.
    guard_value(std::ptr::null(), || {
        ptr_of(
            unsafe { image.as_ref() }
                .and_then(|i| i.layers.get(index))
                .map(|l| &l.media_type),
        )
    })
}

/// Layer `index`'s stored size in bytes (0 when out of range).
///
/// # Safety
///
/// `image` must be NULL or a live image.
#[no_mangle]
pub unsafe extern "C" fn dd_image_layer_size(image: *const dd_image, index: usize) -> u64 {
    // SAFETY: caller's contract.
    guard_value(0, || {
        unsafe { image.as_ref() }
            .and_then(|i| i.layers.get(index))
            .map_or(0, |l| l.size)
    })
}

/// Reads every layer to its end and verifies its stored digest and diff_id. Afterwards
/// `dd_image_json` reports `"layers_verified": true` with every digest and uncompressed size.
///
/// # Safety
///
/// `image` must be NULL or a live image; `err` must be NULL or point to writable storage.
#[no_mangle]
pub unsafe extern "C" fn dd_image_verify(
    image: *const dd_image,
    err: *mut *mut dd_error,
) -> super::dd_status {
    guard(err, || {
        // SAFETY: caller's contract.
        let image = unsafe { handle_arg(image, "image") }?;
        let checks = image.source.verify_layers()?;
        if let Ok(mut slot) = image.checks.lock() {
            *slot = Some(checks);
        }
        Ok(())
    })
}

/// The image described as JSON: the `image` document (docs/JSON.md), exactly as
/// `docker-delta inspect --json` prints it:
///
/// ```json
/// {"schema_version": 1, "document": "image",
///  "reference": "docker-archive:/x/app-2.tar", "transport": "docker-archive",
///  "manifest_format": "...", "index_formats": [], "image_id": "sha256:...",
///  "manifest_digest": "sha256:..." | null,
///  "config_digest": "sha256:...", "config_size": 1234, "repo_tags": ["app:2"],
///  "platform": {"os": "linux", "architecture": "amd64"}, "layers_verified": false,
///  "layers": [{"index": 0, "diff_id": "sha256:...", "digest": "sha256:..." | null,
///              "media_type": "...", "compression": "none", "stored_size": 1024,
///              "uncompressed_size": 1024 | null}]}
/// ```
///
/// `layers_verified` is true after a successful `dd_image_verify`. `*json` is an owned string to
/// release with `dd_string_free`.
///
/// # Safety
///
/// `image` must be NULL or a live image; `json` must point to writable storage; `err` must
/// be NULL or point to writable storage.
#[no_mangle]
pub unsafe extern "C" fn dd_image_json(
    image: *const dd_image,
    json: *mut *mut c_char,
    err: *mut *mut dd_error,
) -> super::dd_status {
    guard(err, || {
        // SAFETY: caller's contract.
        let json = unsafe { out_arg(json, "json") }?;
        let image = unsafe { handle_arg(image, "image") }?;
        let checks = image
            .checks
            .lock()
            .map_err(|_| Failure::Lib(docker_delta::Error::Other("image state poisoned".into())))?;
        let report = image.source.image().report(checks.as_deref());
        let text = to_json(&report)?;
        // SAFETY: `json` is a valid out-parameter (checked above).
        unsafe { put_string(json, text) };
        Ok(())
    })
}
