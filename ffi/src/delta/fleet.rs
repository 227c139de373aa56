//! Fleets through a registry: `dd_push`, `dd_publish`, `dd_pull`, `dd_list_deltas`. They
//! take the create and apply option objects (progress, cancellation, logs, platform, the
//! daemon and tag of a pull) and print the same documents as the command's `--json`.

use std::ffi::c_char;
use std::path::Path;

use super::{
    client, create_options, dd_apply_options, dd_create_options, default_max_layer_memory,
};
use crate::error::{dd_error, Failure};
use crate::{dd_status, guard, opt_str_arg, put_string, str_arg, to_json};
use docker_delta::delta::create::CreateOptions;
use docker_delta::fleet::publish::{self, Bases, PublishOptions};
use docker_delta::fleet::pull::{self, PullDestination, PullOptions};
use docker_delta::reference::ImageReference;
use docker_delta::transport::OpenOptions;

/// How images and registries are read: the options' platform and registry settings
/// (credentials, TLS), for every registry the call touches.
fn open_options(
    platform: Option<docker_delta::Platform>,
    registry: &crate::registry::RegistrySettings,
) -> Result<OpenOptions, Failure> {
    Ok(OpenOptions {
        platform,
        registry: registry.options()?,
        ..OpenOptions::default()
    })
}

/// Clears an out-string argument before any work.
///
/// # Safety
///
/// `out` NULL or writable.
unsafe fn clear(out: *mut *mut c_char) {
    if !out.is_null() {
        // SAFETY: caller's contract.
        unsafe { *out = std::ptr::null_mut() };
    }
}

/// Stores the delta package at `package` in the registry next to the image it rebuilds,
/// `image_ref` (`docker://HOST/NAME[:TAG|@DIGEST]`; without tag or digest, the tag the
/// package records for its new image), as an OCI artifact whose `subject` is that image's
/// manifest for the package's platform. Refused (`DD_STATUS_INVALID_INPUT`, kind
/// `digest_mismatch`) unless that image's config digest is the package's new image ID. The
/// package is checked whole first. `options` may be NULL; of them, the log callback is
/// used.
///
/// `report_json` (owned; `dd_string_free`) receives the `push_report` document
/// (docs/JSON.md), as `docker-delta push --json` prints it.
///
/// # Safety
///
/// String arguments NULL or NUL-terminated; `options` NULL or live; `report_json` and
/// `err` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dd_push(
    package: *const c_char,
    image_ref: *const c_char,
    options: *const dd_create_options,
    report_json: *mut *mut c_char,
    err: *mut *mut dd_error,
) -> dd_status {
    guard(err, || {
        // SAFETY: caller's contract for every pointer argument.
        unsafe { clear(report_json) };
        let package = unsafe { str_arg(package, "package") }?;
        let image_ref = unsafe { str_arg(image_ref, "image_ref") }?;
        let defaults = dd_create_options::default();
        let o = match unsafe { options.as_ref() } {
            Some(o) => o,
            None => &defaults,
        };
        o.callbacks.with_logs(|| -> Result<(), Failure> {
            let mut dest = ImageReference::parse(image_ref)?;
            if let ImageReference::Docker { tag, digest, .. } = &mut dest {
                let last = image_ref.rsplit('/').next().unwrap_or(image_ref);
                if digest.is_none() && !last.contains(':') {
                    *tag = None;
                }
            }
            let progress = o.callbacks.progress();
            let options = PublishOptions {
                open: open_options(None, &o.registry)?,
                progress: &progress,
                ..Default::default()
            };
            let report = publish::push(Path::new(package), &dest, &[], &options)?;
            // SAFETY: caller's contract.
            unsafe { put_string(report_json, to_json(&report)?) };
            Ok(())
        })
    })
}

/// Makes a delta package from each old version to the new image `image_ref`
/// (`docker://HOST/NAME:TAG`), one per platform both have, and pushes it next to the new
/// image (as `dd_push`); a pair already published is skipped. The old versions are the
/// `n_bases` strings of `bases` (tags or digests of the same repository, or `docker://`
/// references), or, when `n_bases` is 0, the `last` newest other tags by their config's
/// `created`. `options` (may be NULL): how packages are made (method, compression,
/// memory bound), progress (ANALYZE, ENCODE, WRITE per package; returning false
/// cancels), logs.
///
/// `report_json` receives the `publish_report` document.
///
/// # Safety
///
/// `image_ref` NUL-terminated; `bases` NULL (with `n_bases` 0) or `n_bases` NUL-terminated
/// strings; `options` NULL or live; `report_json` and `err` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dd_publish(
    image_ref: *const c_char,
    bases: *const *const c_char,
    n_bases: usize,
    last: u32,
    options: *const dd_create_options,
    report_json: *mut *mut c_char,
    err: *mut *mut dd_error,
) -> dd_status {
    guard(err, || {
        // SAFETY: caller's contract for every pointer argument.
        unsafe { clear(report_json) };
        let image_ref = unsafe { str_arg(image_ref, "image_ref") }?;
        let mut given = Vec::with_capacity(n_bases);
        if n_bases > 0 {
            if bases.is_null() {
                return Err(Failure::InvalidArgument(
                    "bases is NULL but n_bases is not 0".into(),
                ));
            }
            for i in 0..n_bases {
                // SAFETY: caller's contract: `n_bases` pointers.
                let p = unsafe { *bases.add(i) };
                given.push(unsafe { str_arg(p, "bases[i]") }?.to_string());
            }
        } else if last == 0 {
            return Err(Failure::InvalidArgument(
                "give bases (n_bases > 0) or last > 0".into(),
            ));
        }
        let defaults = dd_create_options::default();
        let o = match unsafe { options.as_ref() } {
            Some(o) => o,
            None => &defaults,
        };
        o.callbacks.with_logs(|| -> Result<(), Failure> {
            let new = ImageReference::parse(image_ref)?;
            let progress = o.callbacks.progress();
            let options = PublishOptions {
                open: open_options(o.platform.clone(), &o.registry)?,
                create: CreateOptions {
                    force: false,
                    dry_run: false,
                    ..create_options(o, &progress)
                },
                progress: &progress,
                ..Default::default()
            };
            let bases = if given.is_empty() {
                Bases::Last(last as usize)
            } else {
                Bases::Given(given)
            };
            let report = publish::publish(&new, &bases, &options)?;
            // SAFETY: caller's contract.
            unsafe { put_string(report_json, to_json(&report)?) };
            Ok(())
        })
    })
}

/// Updates to the image `image_ref` (`docker://HOST/NAME[:TAG|@DIGEST]`) as `docker-delta
/// pull` does: lists the delta packages published for it (for the options' platform, else
/// the host's), takes the smallest whose base is at hand (`base_ref`, else the Docker
/// daemon's images), downloads it (DOWNLOAD), checks it, applies it (VERIFY, REBUILD) and
/// loads it into the daemon (LOAD; `dd_apply_options_set_docker_host`, else
/// `DOCKER_HOST`), tagged with the options' tag (default `HOST/NAME:TAG`); or writes it to
/// `output` when that is not NULL (a path or a reference with a transport, as `dd_apply`'s
/// `output`). With no delta that fits, pulls the image's layers (DOWNLOAD, verified);
/// `no_fallback` makes that `DD_STATUS_NO_DELTA` (kind `no_delta`) instead. The options'
/// dry run chooses and reports without downloading anything but manifests. Returning
/// false from the progress callback cancels (`DD_STATUS_CANCELLED`); nothing is loaded
/// then.
///
/// `report_json` receives the `pull_report` document (also when tagging failed:
/// `DD_STATUS_TAG_FAILED`).
///
/// # Safety
///
/// String arguments NULL (where optional) or NUL-terminated; `options` NULL or live;
/// `report_json` and `err` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dd_pull(
    image_ref: *const c_char,
    base_ref: *const c_char,
    output: *const c_char,
    no_fallback: bool,
    options: *const dd_apply_options,
    report_json: *mut *mut c_char,
    err: *mut *mut dd_error,
) -> dd_status {
    guard(err, || {
        // SAFETY: caller's contract for every pointer argument.
        unsafe { clear(report_json) };
        let image_ref = unsafe { str_arg(image_ref, "image_ref") }?;
        let base_ref = unsafe { opt_str_arg(base_ref, "base_ref") }?;
        let output = unsafe { opt_str_arg(output, "output") }?;
        let defaults = dd_apply_options::default();
        let o = match unsafe { options.as_ref() } {
            Some(o) => o,
            None => &defaults,
        };
        o.callbacks.with_logs(|| -> Result<(), Failure> {
            let reference = ImageReference::parse(image_ref)?;
            let progress = o.callbacks.progress();
            let options = PullOptions {
                open: open_options(o.platform.clone(), &o.registry)?,
                base: base_ref.map(ImageReference::parse).transpose()?,
                no_fallback,
                dry_run: o.dry_run,
                max_layer_memory: o.max_layer_memory.unwrap_or_else(default_max_layer_memory),
                progress: &progress,
            };
            let daemon;
            let dest = match output {
                Some(out) => PullDestination::Output {
                    reference: docker_delta::delta::deliver::output_reference(out)?,
                    force: o.force,
                    name: o.tag.clone(),
                },
                None => {
                    daemon = client(o)?;
                    PullDestination::Daemon {
                        client: &daemon,
                        name: o.tag.clone(),
                    }
                }
            };
            let report = pull::pull(&reference, dest, &options)?;
            // SAFETY: caller's contract.
            unsafe { put_string(report_json, to_json(&report)?) };
            Ok(())
        })
    })
}

/// Lists the delta packages published for the image `image_ref`
/// (`docker://HOST/NAME[:TAG|@DIGEST]`), for the options' platform (else the host's):
/// `report_json` receives the `delta_list` document. `options` may be NULL.
///
/// # Safety
///
/// `image_ref` NUL-terminated; `options` NULL or live; `report_json` and `err` NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn dd_list_deltas(
    image_ref: *const c_char,
    options: *const dd_apply_options,
    report_json: *mut *mut c_char,
    err: *mut *mut dd_error,
) -> dd_status {
    guard(err, || {
        // SAFETY: caller's contract for every pointer argument.
        unsafe { clear(report_json) };
        let image_ref = unsafe { str_arg(image_ref, "image_ref") }?;
        let defaults = dd_apply_options::default();
        let o = match unsafe { options.as_ref() } {
            Some(o) => o,
            None => &defaults,
        };
        o.callbacks.with_logs(|| -> Result<(), Failure> {
            let reference = ImageReference::parse(image_ref)?;
            let list =
                pull::list_deltas(&reference, &open_options(o.platform.clone(), &o.registry)?)?;
            // SAFETY: caller's contract.
            unsafe { put_string(report_json, to_json(&list)?) };
            Ok(())
        })
    })
}
