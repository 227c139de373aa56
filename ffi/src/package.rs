//! `dd_package`: an opened delta package, its metadata and layer list.

use std::ffi::{c_char, CString};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use super::error::dd_error;
use super::{
    cstring, guard, guard_value, handle_arg, out_arg, ptr_of, put_string, str_arg, to_json,
};
use docker_delta::delta::format::Package;
use docker_delta::delta::info;

/// An opened delta package: its structure and header checksum were checked when it was
/// opened; the payload is checked by `dd_package_verify` (and by apply). Strings returned
/// by the accessors are borrowed and live until `dd_package_free`.
pub struct dd_package {
    package: Package,
    target_image_id: CString,
    base_image_id: Option<CString>,
    created_by: CString,
    layers: Vec<(CString, CString)>,
    verified: AtomicBool,
}

/// Opens a delta package file: checks its magic bytes, format version, lengths and header
/// checksum. On success `*out` is a new package to free with `dd_package_free`.
///
/// # Safety
///
/// `path` must be NULL or a NUL-terminated string; `out` must point to writable storage;
/// `err` must be NULL or point to writable storage.
#[no_mangle]
pub unsafe extern "C" fn dd_package_open(
    path: *const c_char,
    out: *mut *mut dd_package,
    err: *mut *mut dd_error,
) -> super::dd_status {
    guard(err, || {
        // SAFETY: caller's contract.
        let out = unsafe { out_arg(out, "out") }?;
        let path = unsafe { str_arg(path, "path") }?;
        let package = Package::open(Path::new(path))?;
        let h = &package.header;
        let handle = dd_package {
            target_image_id: cstring(h.target.identity.image_id.to_string()),
            base_image_id: h.base.as_ref().map(|b| cstring(b.image_id.to_string())),
            created_by: cstring(h.created_by.as_str()),
            layers: h
                .target
                .layers
                .iter()
                .map(|l| (cstring(l.diff_id.to_string()), cstring(l.source.method())))
                .collect(),
            verified: AtomicBool::new(false),
            package,
        };
        *out = Box::into_raw(Box::new(handle));
        Ok(())
    })
}

/// Frees a package. NULL is ignored.
///
/// # Safety
///
/// `package` must be NULL or a package from `dd_package_open`, not freed before.
#[no_mangle]
pub unsafe extern "C" fn dd_package_free(package: *mut dd_package) {
    if package.is_null() {
        return;
    }
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: made by `Box::into_raw` in `dd_package_open` (caller's contract).
        drop(unsafe { Box::from_raw(package) });
    }));
}

/// Reads the whole payload and checks its checksum and every blob's.
///
/// # Safety
///
/// `package` must be NULL or a live package; `err` must be NULL or point to writable
/// storage.
#[no_mangle]
pub unsafe extern "C" fn dd_package_verify(
    package: *const dd_package,
    err: *mut *mut dd_error,
) -> super::dd_status {
    guard(err, || {
        // SAFETY: caller's contract.
        let p = unsafe { handle_arg(package, "package") }?;
        p.package.verify_payload()?;
        p.verified.store(true, Ordering::Relaxed);
        Ok(())
    })
}

/// The package's metadata as JSON: the `package` document (docs/JSON.md,
/// docs/schema/package.schema.json), exactly as `docker-delta info --json` prints it:
///
/// ```json
/// {"schema_version": 1, "document": "package", "package_path": "...",
///  "package_size": 123, "format_version": 7, "created_by": "docker-delta 0.1.0",
///  "payload_stored_size": 100, "payload_uncompressed_size": 456,
///  "compression": {"algorithm": "xz", "level": 6},
///  "lanes": [{"compression": {...}, "stored_size": 90, "uncompressed_size": 400}, ...],
///  "base": {"image_id": "sha256:...", "manifest_digest": null, "reference": "...",
///           "repo_tags": [...], "platform": {...}, "diff_ids": [...]} | null,
///  "target": {same fields as base},
///  "target_uncompressed_size": 789, "target_stored_size": 700,
///  "methods": ["files", "reference"],
///  "savings_vs_stored_percent": 80.5, "savings_vs_uncompressed_percent": 84.4,
///  "payload_verified": false, "layers": [as in dd_package_layers_json]}
/// ```
///
/// `payload_verified` is true after a successful `dd_package_verify`. `*json` is owned:
/// release it with `dd_string_free`.
///
/// # Safety
///
/// `package` must be NULL or a live package; `json` must point to writable storage; `err`
/// must be NULL or point to writable storage.
#[no_mangle]
pub unsafe extern "C" fn dd_package_info_json(
    package: *const dd_package,
    json: *mut *mut c_char,
    err: *mut *mut dd_error,
) -> super::dd_status {
    guard(err, || {
        // SAFETY: caller's contract.
        let json = unsafe { out_arg(json, "json") }?;
        let p = unsafe { handle_arg(package, "package") }?;
        let text = to_json(&info::info(&p.package, p.verified.load(Ordering::Relaxed)))?;
        // SAFETY: checked out-parameter.
        unsafe { put_string(json, text) };
        Ok(())
    })
}

/// The new image's layers as JSON: the `package_layers` document (docs/JSON.md), exactly
/// as `docker-delta list --json` prints it, base first:
///
/// ```json
/// {"schema_version": 1, "document": "package_layers", "package_path": "...",
///  "payload_verified": false,
///  "layers": [{"index": 0, "diff_id": "sha256:...",
///              "method": "reference" | "xdelta3" | "zstd" | "files" | "full",
///              "old_layers": [{"index": 0, "diff_id": "sha256:..."}, ...],
///              "delta_size": 0, "uncompressed_size": 1024, "stored_size": 512,
///              "media_type": "..."}]}
/// ```
///
/// `*json` is owned: release it with `dd_string_free`.
///
/// # Safety
///
/// `package` must be NULL or a live package; `json` must point to writable storage; `err`
/// must be NULL or point to writable storage.
#[no_mangle]
pub unsafe extern "C" fn dd_package_layers_json(
    package: *const dd_package,
    json: *mut *mut c_char,
    err: *mut *mut dd_error,
) -> super::dd_status {
    guard(err, || {
        // SAFETY: caller's contract.
        let json = unsafe { out_arg(json, "json") }?;
        let p = unsafe { handle_arg(package, "package") }?;
        let text = to_json(&info::layers(
            &p.package,
            p.verified.load(Ordering::Relaxed),
        ))?;
        // SAFETY: checked out-parameter.
        unsafe { put_string(json, text) };
        Ok(())
    })
}

/// The package's format version (0 for NULL).
///
/// # Safety
///
/// `package` must be NULL or a live package.
#[no_mangle]
pub unsafe extern "C" fn dd_package_format_version(package: *const dd_package) -> u32 {
    // SAFETY: caller's contract.
    guard_value(0, || {
        unsafe { package.as_ref() }.map_or(0, |p| p.package.version)
    })
}

/// The package file's size in bytes (0 for NULL).
///
/// # Safety
///
/// `package` must be NULL or a live package.
#[no_mangle]
pub unsafe extern "C" fn dd_package_size(package: *const dd_package) -> u64 {
    // SAFETY: caller's contract.
    guard_value(0, || {
        unsafe { package.as_ref() }.map_or(0, |p| p.package.file_size)
    })
}

/// The program that wrote the package (`docker-delta 0.1.0`).
///
/// # Safety
///
/// `package` must be NULL or a live package.
#[no_mangle]
pub unsafe extern "C" fn dd_package_created_by(package: *const dd_package) -> *const c_char {
    // SAFETY: caller's contract.
    guard_value(std::ptr::null(), || {
        ptr_of(unsafe { package.as_ref() }.map(|p| &p.created_by))
    })
}

/// The image ID of the image the package rebuilds.
///
/// # Safety
///
/// `package` must be NULL or a live package.
#[no_mangle]
pub unsafe extern "C" fn dd_package_target_image_id(package: *const dd_package) -> *const c_char {
    // SAFETY: caller's contract.
    guard_value(std::ptr::null(), || {
        ptr_of(unsafe { package.as_ref() }.map(|p| &p.target_image_id))
    })
}

/// The image ID of the image the delta was made against, or NULL for a full package.
///
/// # Safety
///
/// `package` must be NULL or a live package.
#[no_mangle]
pub unsafe extern "C" fn dd_package_base_image_id(package: *const dd_package) -> *const c_char {
    // SAFETY: caller's contract.
    guard_value(std::ptr::null(), || {
        ptr_of(unsafe { package.as_ref() }.and_then(|p| p.base_image_id.as_ref()))
    })
}

/// Number of layers of the new image.
///
/// # Safety
///
/// `package` must be NULL or a live package.
#[no_mangle]
pub unsafe extern "C" fn dd_package_layer_count(package: *const dd_package) -> usize {
    // SAFETY: caller's contract.
    guard_value(0, || {
        unsafe { package.as_ref() }.map_or(0, |p| p.layers.len())
    })
}

/// Layer `index`'s diff_id, or NULL when out of range.
///
/// # Safety
///
/// `package` must be NULL or a live package.
#[no_mangle]
pub unsafe extern "C" fn dd_package_layer_diff_id(
    package: *const dd_package,
    index: usize,
) -> *const c_char {
    // SAFETY: caller's contract.
    guard_value(std::ptr::null(), || {
        ptr_of(
            unsafe { package.as_ref() }
                .and_then(|p| p.layers.get(index))
                .map(|l| &l.0),
        )
    })
}

/// How layer `index` is rebuilt (`reference`, `xdelta3`, `zstd`, `full`), or NULL when
/// out of range.
///
/// # Safety
///
/// `package` must be NULL or a live package.
#[no_mangle]
pub unsafe extern "C" fn dd_package_layer_method(
    package: *const dd_package,
    index: usize,
) -> *const c_char {
    // SAFETY: caller's contract.
    guard_value(std::ptr::null(), || {
        ptr_of(
            unsafe { package.as_ref() }
                .and_then(|p| p.layers.get(index))
                .map(|l| &l.1),
        )
    })
}

/// Layer `index`'s uncompressed size in bytes (0 when out of range).
///
/// # Safety
///
/// `package` must be NULL or a live package.
#[no_mangle]
pub unsafe extern "C" fn dd_package_layer_size(package: *const dd_package, index: usize) -> u64 {
    // SAFETY: caller's contract.
    guard_value(0, || {
        unsafe { package.as_ref() }
            .and_then(|p| p.package.header.target.layers.get(index))
            .map_or(0, |l| l.size)
    })
}

/// Bytes of (uncompressed) payload layer `index` takes: 0 for a reference to an old layer.
///
/// # Safety
///
/// `package` must be NULL or a live package.
#[no_mangle]
pub unsafe extern "C" fn dd_package_layer_delta_size(
    package: *const dd_package,
    index: usize,
) -> u64 {
    // SAFETY: caller's contract.
    guard_value(0, || {
        unsafe { package.as_ref() }.map_or(0, |p| info::delta_size(&p.package, index))
    })
}
