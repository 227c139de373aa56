//! Creating and applying deltas: option builders, `dd_create`, `dd_apply`, `dd_apply_load`;
//! and, in [`fleet`], the registry side: `dd_push`, `dd_publish`, `dd_pull`, `dd_list_deltas`.

use std::ffi::{c_char, c_void};
use std::path::Path;

pub mod fleet;

use super::callbacks::{dd_log_cb, dd_log_level, dd_progress_cb, Callbacks};
use super::error::{dd_error, Failure};
use super::registry::RegistrySettings;
use super::{
    dd_status, guard, guard_status, handle_mut, opt_str_arg, out_arg, put_string, str_arg, to_json,
};
use docker_delta::daemon::{DockerClient, ImageName};
use docker_delta::delta::apply::{self, ApplyOptions};
use docker_delta::delta::create::{self, default_max_layer_memory, CreateOptions};
use docker_delta::delta::deliver;
use docker_delta::delta::format::{CompressionSpec, Package, PayloadCompression};
use docker_delta::delta::plan::Method;
use docker_delta::platform::Platform;
use docker_delta::reference::ImageReference;
use docker_delta::transport::docker_daemon::sink::DaemonSink;
use docker_delta::transport::{ImageSink, OpenOptions, SinkOptions};

/// Pass as `level` to use the compression's default level (xz 6, zstd 19, gzip 9).
pub const DD_LEVEL_DEFAULT: i32 = -1;

/// How `dd_create` encodes changed layers (`--method`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum dd_method {
    /// The file-aware codec for layers that are tars, else the smaller of xdelta3 and zstd
    /// (the default).
    Auto = 0,
    /// VCDIFF (xdelta3) against the most similar old layer.
    Xdelta3 = 1,
    /// zstd with the most similar old layer as prefix.
    Zstd = 2,
    /// Ship changed layers whole, no delta.
    Layer = 3,
    /// File-aware: each file patched against the best file of any old layer.
    Files = 4,
}

/// Compression of the package payload (`--compression`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum dd_compression {
    /// xz (LZMA2, a dictionary of at least 16 MiB; the default), levels 0-9. Zero, so that
    /// a zeroed options struct in a binding means the default.
    Xz = 0,
    /// gzip, levels 1-9.
    Gzip = 1,
    /// Zstandard with long-distance matching, levels 1-22.
    Zstd = 2,
    /// No compression.
    None = 3,
}

/// Options for `dd_create`: made by `dd_create_options_new` with the command-line tool's
/// defaults, changed by the setters, freed by `dd_create_options_free`. One options object
/// may serve several calls, but must not be changed while a call uses it.
pub struct dd_create_options {
    method: Method,
    compression: PayloadCompression,
    level: Option<i32>,
    new_bytes_compression: Option<(PayloadCompression, Option<i32>)>,
    platform: Option<Platform>,
    force: bool,
    dry_run: bool,
    max_layer_memory: Option<u64>,
    callbacks: Callbacks,
    pub(crate) registry: RegistrySettings,
}

impl Default for dd_create_options {
    fn default() -> Self {
        dd_create_options {
            method: Method::Auto,
            compression: PayloadCompression::default(),
            level: None,
            new_bytes_compression: None,
            platform: None,
            force: false,
            dry_run: false,
            max_layer_memory: None,
            callbacks: Callbacks::default(),
            registry: RegistrySettings::default(),
        }
    }
}

/// Options for `dd_apply` and `dd_apply_load`, like `dd_create_options`.
#[derive(Default)]
pub struct dd_apply_options {
    tag: Option<ImageName>,
    platform: Option<Platform>,
    force: bool,
    dry_run: bool,
    max_layer_memory: Option<u64>,
    docker_host: Option<String>,
    callbacks: Callbacks,
    pub(crate) registry: RegistrySettings,
}

/// Runs a setter on a live options object.
///
/// # Safety
///
/// `options` must be NULL or a live options object not used elsewhere during the call.
unsafe fn set<T>(
    options: *mut T,
    err: *mut *mut dd_error,
    f: impl FnOnce(&mut T) -> Result<(), Failure>,
) -> dd_status {
    guard(err, || {
        // SAFETY: caller's contract.
        let o = unsafe { handle_mut(options, "options") }?;
        f(o)
    })
}

/// Makes a new options object.
///
/// # Safety
///
/// `out` must be NULL or point to writable storage.
unsafe fn new_options<T: Default>(out: *mut *mut T) -> dd_status {
    guard_status(|| {
        // SAFETY: caller's contract.
        let out = unsafe { out_arg(out, "out") }?;
        *out = Box::into_raw(Box::<T>::default());
        Ok(())
    })
}

/// Frees an options object.
///
/// # Safety
///
/// `options` must be NULL or made by `new_options::<T>`, not freed before.
unsafe fn free_options<T>(options: *mut T) {
    if options.is_null() {
        return;
    }
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: made by `Box::into_raw` in `new_options` (caller's contract).
        drop(unsafe { Box::from_raw(options) });
    }));
}

fn parse_platform(p: Option<&str>) -> Result<Option<Platform>, Failure> {
    Ok(p.map(Platform::parse).transpose()?)
}

fn log_level(max_level: u32) -> Result<dd_log_level, Failure> {
    dd_log_level::from_u32(max_level).ok_or_else(|| {
        Failure::InvalidArgument(format!("max_level {max_level} is not a dd_log_level"))
    })
}

/// Makes options for `dd_create` with the command-line tool's defaults; `*out` is set to
/// them (NULL on failure). Free them with `dd_create_options_free`.
///
/// # Safety
///
/// `out` must point to writable storage.
#[no_mangle]
pub unsafe extern "C" fn dd_create_options_new(out: *mut *mut dd_create_options) -> dd_status {
    // SAFETY: caller's contract.
    unsafe { new_options(out) }
}

/// Frees options. NULL is ignored.
///
/// # Safety
///
/// `options` must be NULL or made by `dd_create_options_new`, not freed before and not in use by a
/// running call.
#[no_mangle]
pub unsafe extern "C" fn dd_create_options_free(options: *mut dd_create_options) {
    // SAFETY: caller's contract.
    unsafe { free_options(options) }
}

/// Platform to choose from multi-platform indexes, `os/arch[/variant]`; NULL for the
/// host's. An invalid platform gives `DD_STATUS_INVALID_INPUT` (kind `invalid_platform`).
///
/// # Safety
///
/// `options` must be NULL or live options; `platform` NULL or a NUL-terminated string;
/// `err` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dd_create_options_set_platform(
    options: *mut dd_create_options,
    platform: *const c_char,
    err: *mut *mut dd_error,
) -> dd_status {
    // SAFETY: caller's contract.
    unsafe {
        set(options, err, |o| {
            o.platform = parse_platform(opt_str_arg(platform, "platform")?)?;
            Ok(())
        })
    }
}

/// Overwrite an existing output (default false).
///
/// # Safety
///
/// `options` must be NULL or live options.
#[no_mangle]
pub unsafe extern "C" fn dd_create_options_set_force(
    options: *mut dd_create_options,
    force: bool,
) -> dd_status {
    // SAFETY: caller's contract.
    unsafe {
        set(options, std::ptr::null_mut(), |o| {
            o.force = force;
            Ok(())
        })
    }
}

/// Check everything, write nothing (default false); the report says what would be done.
///
/// # Safety
///
/// `options` must be NULL or live options.
#[no_mangle]
pub unsafe extern "C" fn dd_create_options_set_dry_run(
    options: *mut dd_create_options,
    dry_run: bool,
) -> dd_status {
    // SAFETY: caller's contract.
    unsafe {
        set(options, std::ptr::null_mut(), |o| {
            o.dry_run = dry_run;
            Ok(())
        })
    }
}

/// The run's memory bound in bytes, which decides whether a whole-layer (xdelta3, zstd)
/// delta, holding both layers in memory, may be encoded or decoded (default:
/// `DOCKER_DELTA_MAX_MEMORY` or 512 MiB); 0 restores the default.
///
/// # Safety
///
/// `options` must be NULL or live options.
#[no_mangle]
pub unsafe extern "C" fn dd_create_options_set_max_layer_memory(
    options: *mut dd_create_options,
    bytes: u64,
) -> dd_status {
    // SAFETY: caller's contract.
    unsafe {
        set(options, std::ptr::null_mut(), |o| {
            o.max_layer_memory = (bytes > 0).then_some(bytes);
            Ok(())
        })
    }
}

/// Sets the progress callback (NULL removes it); `userdata` is passed back as it is.
///
/// # Safety
///
/// `options` must be NULL or live options; `callback` must be safe to call with
/// `userdata` during every call that uses these options.
#[no_mangle]
pub unsafe extern "C" fn dd_create_options_set_progress(
    options: *mut dd_create_options,
    callback: dd_progress_cb,
    userdata: *mut c_void,
) -> dd_status {
    // SAFETY: caller's contract.
    unsafe {
        set(options, std::ptr::null_mut(), |o| {
            o.callbacks.progress = callback.map(|f| (f, userdata));
            Ok(())
        })
    }
}

/// Sets the log callback (NULL removes it): while a call using these options runs, it
/// receives the library's log messages up to `max_level` (a `dd_log_level`, 1 error to
/// 5 trace).
///
/// # Safety
///
/// `options` must be NULL or live options; `callback` must be safe to call with
/// `userdata` during every call that uses these options.
#[no_mangle]
pub unsafe extern "C" fn dd_create_options_set_log(
    options: *mut dd_create_options,
    callback: dd_log_cb,
    userdata: *mut c_void,
    max_level: u32,
) -> dd_status {
    // SAFETY: caller's contract.
    unsafe {
        set(options, std::ptr::null_mut(), |o| {
            let level = log_level(max_level)?;
            o.callbacks.log = callback.map(|f| (f, userdata, level));
            Ok(())
        })
    }
}

/// Makes options for `dd_apply and dd_apply_load` with the command-line tool's defaults; `*out` is set to
/// them (NULL on failure). Free them with `dd_apply_options_free`.
///
/// # Safety
///
/// `out` must point to writable storage.
#[no_mangle]
pub unsafe extern "C" fn dd_apply_options_new(out: *mut *mut dd_apply_options) -> dd_status {
    // SAFETY: caller's contract.
    unsafe { new_options(out) }
}

/// Frees options. NULL is ignored.
///
/// # Safety
///
/// `options` must be NULL or made by `dd_apply_options_new`, not freed before and not in use by a
/// running call.
#[no_mangle]
pub unsafe extern "C" fn dd_apply_options_free(options: *mut dd_apply_options) {
    // SAFETY: caller's contract.
    unsafe { free_options(options) }
}

/// Platform to choose from multi-platform indexes, `os/arch[/variant]`; NULL for the
/// host's. An invalid platform gives `DD_STATUS_INVALID_INPUT` (kind `invalid_platform`).
///
/// # Safety
///
/// `options` must be NULL or live options; `platform` NULL or a NUL-terminated string;
/// `err` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dd_apply_options_set_platform(
    options: *mut dd_apply_options,
    platform: *const c_char,
    err: *mut *mut dd_error,
) -> dd_status {
    // SAFETY: caller's contract.
    unsafe {
        set(options, err, |o| {
            o.platform = parse_platform(opt_str_arg(platform, "platform")?)?;
            Ok(())
        })
    }
}

/// Overwrite an existing output (default false).
///
/// # Safety
///
/// `options` must be NULL or live options.
#[no_mangle]
pub unsafe extern "C" fn dd_apply_options_set_force(
    options: *mut dd_apply_options,
    force: bool,
) -> dd_status {
    // SAFETY: caller's contract.
    unsafe {
        set(options, std::ptr::null_mut(), |o| {
            o.force = force;
            Ok(())
        })
    }
}

/// Check everything, write nothing (default false); the report says what would be done.
///
/// # Safety
///
/// `options` must be NULL or live options.
#[no_mangle]
pub unsafe extern "C" fn dd_apply_options_set_dry_run(
    options: *mut dd_apply_options,
    dry_run: bool,
) -> dd_status {
    // SAFETY: caller's contract.
    unsafe {
        set(options, std::ptr::null_mut(), |o| {
            o.dry_run = dry_run;
            Ok(())
        })
    }
}

/// The run's memory bound in bytes, which decides whether a whole-layer (xdelta3, zstd)
/// delta, holding both layers in memory, may be encoded or decoded (default:
/// `DOCKER_DELTA_MAX_MEMORY` or 512 MiB); 0 restores the default.
///
/// # Safety
///
/// `options` must be NULL or live options.
#[no_mangle]
pub unsafe extern "C" fn dd_apply_options_set_max_layer_memory(
    options: *mut dd_apply_options,
    bytes: u64,
) -> dd_status {
    // SAFETY: caller's contract.
    unsafe {
        set(options, std::ptr::null_mut(), |o| {
            o.max_layer_memory = (bytes > 0).then_some(bytes);
            Ok(())
        })
    }
}

/// Sets the progress callback (NULL removes it); `userdata` is passed back as it is.
///
/// # Safety
///
/// `options` must be NULL or live options; `callback` must be safe to call with
/// `userdata` during every call that uses these options.
#[no_mangle]
pub unsafe extern "C" fn dd_apply_options_set_progress(
    options: *mut dd_apply_options,
    callback: dd_progress_cb,
    userdata: *mut c_void,
) -> dd_status {
    // SAFETY: caller's contract.
    unsafe {
        set(options, std::ptr::null_mut(), |o| {
            o.callbacks.progress = callback.map(|f| (f, userdata));
            Ok(())
        })
    }
}

/// Sets the log callback (NULL removes it): while a call using these options runs, it
/// receives the library's log messages up to `max_level` (a `dd_log_level`, 1 error to
/// 5 trace).
///
/// # Safety
///
/// `options` must be NULL or live options; `callback` must be safe to call with
/// `userdata` during every call that uses these options.
#[no_mangle]
pub unsafe extern "C" fn dd_apply_options_set_log(
    options: *mut dd_apply_options,
    callback: dd_log_cb,
    userdata: *mut c_void,
    max_level: u32,
) -> dd_status {
    // SAFETY: caller's contract.
    unsafe {
        set(options, std::ptr::null_mut(), |o| {
            let level = log_level(max_level)?;
            o.callbacks.log = callback.map(|f| (f, userdata, level));
            Ok(())
        })
    }
}

/// How changed layers are encoded: a `dd_method` value (default `DD_METHOD_AUTO`).
///
/// # Safety
///
/// `options` must be NULL or a live options object.
#[no_mangle]
pub unsafe extern "C" fn dd_create_options_set_method(
    options: *mut dd_create_options,
    method: u32,
) -> dd_status {
    guard_status(|| {
        // SAFETY: caller's contract.
        let o = unsafe { handle_mut(options, "options") }?;
        o.method = match method {
            m if m == dd_method::Auto as u32 => Method::Auto,
            m if m == dd_method::Xdelta3 as u32 => Method::Xdelta3,
            m if m == dd_method::Files as u32 => Method::Files,
            m if m == dd_method::Zstd as u32 => Method::Zstd,
            m if m == dd_method::Layer as u32 => Method::Layer,
            m => {
                return Err(Failure::InvalidArgument(format!(
                    "method {m} is not a dd_method"
                )))
            }
        };
        Ok(())
    })
}

/// Payload compression: a `dd_compression` value and a level in its range, or
/// `DD_LEVEL_DEFAULT` (default: xz level 6).
///
/// # Safety
///
/// `options` must be NULL or a live options object.
#[no_mangle]
pub unsafe extern "C" fn dd_create_options_set_compression(
    options: *mut dd_create_options,
    compression: u32,
    level: i32,
) -> dd_status {
    guard_status(|| {
        // SAFETY: caller's contract.
        let o = unsafe { handle_mut(options, "options") }?;
        let (algorithm, level) = compression_arg(compression, level)?;
        o.compression = algorithm;
        o.level = level;
        Ok(())
    })
}

/// Compression of the new bytes of file-aware layers, which the payload keeps in a lane of
/// their own (`--new-bytes-compression`): a `dd_compression` value and a level in its range,
/// or `DD_LEVEL_DEFAULT` (default: zstd level 18 when the payload compression is xz, else
/// the payload compression).
///
/// # Safety
///
/// `options` must be NULL or a live options object.
#[no_mangle]
pub unsafe extern "C" fn dd_create_options_set_new_bytes_compression(
    options: *mut dd_create_options,
    compression: u32,
    level: i32,
) -> dd_status {
    guard_status(|| {
        // SAFETY: caller's contract.
        let o = unsafe { handle_mut(options, "options") }?;
        o.new_bytes_compression = Some(compression_arg(compression, level)?);
        Ok(())
    })
}

/// A `dd_compression` value and a level in its range (`None` for `DD_LEVEL_DEFAULT`).
fn compression_arg(
    compression: u32,
    level: i32,
) -> Result<(PayloadCompression, Option<i32>), Failure> {
    let algorithm = match compression {
        c if c == dd_compression::Zstd as u32 => PayloadCompression::Zstd,
        c if c == dd_compression::Gzip as u32 => PayloadCompression::Gzip,
        c if c == dd_compression::Xz as u32 => PayloadCompression::Xz,
        c if c == dd_compression::None as u32 => PayloadCompression::None,
        c => {
            return Err(Failure::InvalidArgument(format!(
                "compression {c} is not a dd_compression"
            )))
        }
    };
    let level = if level == DD_LEVEL_DEFAULT {
        None
    } else {
        let (lo, hi) = algorithm.level_range();
        if level < lo || level > hi {
            return Err(Failure::InvalidArgument(format!(
                "level {level} is out of range for {} ({lo}..={hi})",
                algorithm.name()
            )));
        }
        Some(level)
    };
    Ok((algorithm, level))
}

/// Name the rebuilt image `NAME[:TAG]` (NULL: the tag in the output reference, else the
/// new image's own tag recorded in the package). An invalid name gives
/// `DD_STATUS_INVALID_INPUT`.
///
/// # Safety
///
/// `options` must be NULL or a live options object; `tag` NULL or a NUL-terminated
/// string; `err` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dd_apply_options_set_tag(
    options: *mut dd_apply_options,
    tag: *const c_char,
    err: *mut *mut dd_error,
) -> dd_status {
    guard(err, || {
        // SAFETY: caller's contract.
        let o = unsafe { handle_mut(options, "options") }?;
        let t = unsafe { opt_str_arg(tag, "tag") }?;
        o.tag = t.map(ImageName::parse).transpose()?;
        Ok(())
    })
}

/// The Docker daemon `dd_apply_load`, and `dd_apply` to `docker-daemon:NAME:TAG`, load
/// into: `unix:///path/docker.sock` or `tcp://host:port` (NULL: `DOCKER_HOST`, else
/// `unix:///var/run/docker.sock`). `docker-daemon:` base references still use `DOCKER_HOST`.
///
/// # Safety
///
/// `options` must be NULL or a live options object; `endpoint` NULL or a NUL-terminated
/// string; `err` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dd_apply_options_set_docker_host(
    options: *mut dd_apply_options,
    endpoint: *const c_char,
    err: *mut *mut dd_error,
) -> dd_status {
    guard(err, || {
        // SAFETY: caller's contract.
        let o = unsafe { handle_mut(options, "options") }?;
        let e = unsafe { opt_str_arg(endpoint, "endpoint") }?;
        if let Some(e) = e {
            // Validate now, so that a typo is reported where it was made.
            DockerClient::new(e)?;
        }
        o.docker_host = e.map(str::to_string);
        Ok(())
    })
}

/// Creates a delta package at `output` that rebuilds `new_ref` from `old_ref`, or a full
/// package of `new_ref` when `old_ref` is NULL. References are in skopeo syntax (see
/// `dd_image_open`). `options` may be NULL for the defaults.
///
/// `report_json`, if not NULL, receives the report as JSON (an owned string, free it
/// with `dd_string_free`), as `docker-delta create --json` prints it:
///
/// ```json
/// {"schema_version": 1, "document": "create_report", "dry_run": false,
///  "package_path": "/out/app.ddelta" | null, "package_size": 1234 | null,
///  "base": {"image_id": "sha256:...", "manifest_digest": "sha256:..." | null,
///           "reference": "...", "repo_tags": [...], "platform": {...},
///           "diff_ids": [...]} | null,
///  "target": {same fields}, "target_stored_size": 5678,
///  "target_uncompressed_size": 6789,
///  "layers": [as in dd_package_layers_json]}
/// ```
///
/// Progress phases: ANALYZE (with an old image and a delta method), ENCODE, WRITE.
/// Returns `DD_STATUS_CANCELLED` when the progress callback returns false; no output
/// is left behind then.
///
/// # Safety
///
/// String arguments must be NULL or NUL-terminated; `options` NULL or a live options
/// object; `report_json` and `err` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dd_create(
    old_ref: *const c_char,
    new_ref: *const c_char,
    output: *const c_char,
    options: *const dd_create_options,
    report_json: *mut *mut c_char,
    err: *mut *mut dd_error,
) -> dd_status {
    guard(err, || {
        if !report_json.is_null() {
            // SAFETY: caller's contract.
            unsafe { *report_json = std::ptr::null_mut() };
        }
        // SAFETY: caller's contract for every pointer argument.
        let old_ref = unsafe { opt_str_arg(old_ref, "old_ref") }?;
        let new_ref = unsafe { str_arg(new_ref, "new_ref") }?;
        let output = unsafe { str_arg(output, "output") }?;
        let defaults = dd_create_options::default();
        let o = match unsafe { options.as_ref() } {
            Some(o) => o,
            None => &defaults,
        };
        o.callbacks.with_logs(|| -> Result<(), Failure> {
            let open = OpenOptions {
                platform: o.platform.clone(),
                registry: o.registry.options()?,
                ..OpenOptions::default()
            };
            let old = old_ref
                .map(|r| docker_delta::transport::open(&ImageReference::parse(r)?, &open))
                .transpose()?;
            let new = docker_delta::transport::open(&ImageReference::parse(new_ref)?, &open)?;
            let progress = o.callbacks.progress();
            let options = create_options(o, &progress);
            let report = create::create(old.as_deref(), new.as_ref(), Path::new(output), &options)?;
            let text = to_json(&report)?;
            // SAFETY: caller's contract.
            unsafe { put_string(report_json, text) };
            Ok(())
        })
    })
}

/// How packages are made, per the options.
fn create_options<'a>(
    o: &dd_create_options,
    progress: &'a dyn docker_delta::progress::Progress,
) -> CreateOptions<'a> {
    CreateOptions {
        method: o.method,
        compression: CompressionSpec {
            algorithm: o.compression,
            level: o.level.unwrap_or(o.compression.default_level()),
        },
        new_bytes_compression: o
            .new_bytes_compression
            .map(|(algorithm, level)| CompressionSpec {
                algorithm,
                level: level.unwrap_or(algorithm.default_level()),
            }),
        max_layer_memory: o.max_layer_memory.unwrap_or_else(default_max_layer_memory),
        force: o.force,
        dry_run: o.dry_run,
        progress,
    }
}

/// The Docker daemon of the options (`dd_apply_options_set_docker_host`, else
/// `DOCKER_HOST`).
fn client(o: &dd_apply_options) -> Result<DockerClient, Failure> {
    Ok(match &o.docker_host {
        // The environment's timeouts apply to an endpoint given here too.
        Some(h) => DockerClient::new(h)?.with_timeouts(docker_delta::Timeouts::from_env()?),
        None => DockerClient::from_env()?,
    })
}

/// What apply needs, prepared from the arguments.
struct Prepared {
    package: Package,
    base: Option<Box<dyn docker_delta::transport::ImageSource>>,
}

fn prepare(
    package: &str,
    base_ref: Option<&str>,
    o: &dd_apply_options,
) -> Result<Prepared, Failure> {
    let package = Package::open(Path::new(package))?;
    let open = OpenOptions {
        platform: o.platform.clone(),
        registry: o.registry.options()?,
        ..OpenOptions::default()
    };
    let base = deliver::open_base(&package, base_ref, &open)?;
    Ok(Prepared { package, base })
}

fn apply_options<'a>(
    o: &dd_apply_options,
    progress: &'a dyn docker_delta::progress::Progress,
) -> Result<ApplyOptions<'a>, Failure> {
    Ok(ApplyOptions {
        name: o.tag.clone(),
        force: o.force,
        dry_run: o.dry_run,
        max_layer_memory: o.max_layer_memory.unwrap_or_else(default_max_layer_memory),
        progress,
        registry: o.registry.options()?,
        ..Default::default()
    })
}

/// Applies the delta package at `package` to the base image `base_ref` and writes the
/// rebuilt image to `output`: a reference with a transport (`docker-archive:PATH[:NAME:TAG]`,
/// `oci:DIR[:REF]`, `oci-archive:PATH[:REF]`, or `docker-daemon:NAME:TAG`, which loads it
/// into the Docker daemon and tags it as `dd_apply_load` does) or a plain path (a
/// docker-archive that `docker load` accepts).
///
/// `base_ref` NULL: a full package needs none; a delta looks for its base in the Docker
/// daemon (`DOCKER_HOST`) by the image ID it records (with the containerd image store, by
/// its layers, then by the config its export holds). A base that lacks a layer the
/// package needs gives `DD_STATUS_INVALID_INPUT` with kind `wrong_base_image` (expected:
/// the recorded base and the layer it needs; found: the offered image) before anything is
/// written.
///
/// `report_json`, if not NULL, receives the report (owned; `dd_string_free`), as
/// `docker-delta apply --json` prints it:
///
/// ```json
/// {"schema_version": 1, "document": "apply_report", "dry_run": false,
///  "output": "/out/app-2.tar" | null, "loaded_into": null,
///  "image_id": "sha256:...", "manifest_digest": "sha256:..." | null,
///  "name": "app:2" | null, "base": {as in dd_create's report} | null,
///  "layers": [as in dd_package_layers_json]}
/// ```
///
/// Progress phases: VERIFY, REBUILD (and LOAD to `docker-daemon:`, where, as with
/// `dd_apply_load`, an image loaded but not tagged returns `DD_STATUS_TAG_FAILED` with both
/// the report and the error set).
///
/// # Safety
///
/// String arguments must be NULL or NUL-terminated; `options` NULL or a live options
/// object; `report_json` and `err` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dd_apply(
    package: *const c_char,
    base_ref: *const c_char,
    output: *const c_char,
    options: *const dd_apply_options,
    report_json: *mut *mut c_char,
    err: *mut *mut dd_error,
) -> dd_status {
    guard(err, || {
        if !report_json.is_null() {
            // SAFETY: caller's contract.
            unsafe { *report_json = std::ptr::null_mut() };
        }
        // SAFETY: caller's contract for every pointer argument.
        let package = unsafe { str_arg(package, "package") }?;
        let base_ref = unsafe { opt_str_arg(base_ref, "base_ref") }?;
        let output = unsafe { str_arg(output, "output") }?;
        let defaults = dd_apply_options::default();
        let o = match unsafe { options.as_ref() } {
            Some(o) => o,
            None => &defaults,
        };
        o.callbacks.with_logs(|| -> Result<(), Failure> {
            let dest = deliver::output_reference(output)?;
            let p = prepare(package, base_ref, o)?;
            let progress = o.callbacks.progress();
            let options = apply_options(o, &progress)?;
            let sink: Box<dyn ImageSink + '_> = match &dest {
                // The daemon of the options, as dd_apply_load's.
                ImageReference::DockerDaemon { name } => {
                    Box::new(DaemonSink::new(client(o)?, Some(name), &progress)?)
                }
                dest => docker_delta::transport::create_sink(
                    dest,
                    &SinkOptions {
                        force: o.force,
                        timeouts: None,
                        progress: &progress,
                        registry: Some(&options.registry),
                        ..Default::default()
                    },
                )?,
            };
            let (report, tag_error) =
                apply::apply_into(&p.package, p.base.as_deref(), sink, &options)?;
            let text = to_json(&report)?;
            // SAFETY: caller's contract.
            unsafe { put_string(report_json, text) };
            match tag_error {
                Some(e) => Err(Failure::Lib(e)),
                None => Ok(()),
            }
        })
    })
}

/// Like `dd_apply`, but loads the rebuilt image into the Docker daemon
/// (`dd_apply_options_set_docker_host`, else `DOCKER_HOST`) and tags it
/// (`dd_apply_options_set_tag`, else the new image's own tag), then checks that the tag
/// resolves to the rebuilt image ID.
///
/// The report is `dd_apply`'s with `"output": null` (the archive loaded was temporary)
/// and `"loaded_into"`: the daemon's endpoint.
///
/// Progress phases: VERIFY, REBUILD, LOAD. If the image was loaded but tagging failed,
/// returns `DD_STATUS_TAG_FAILED` with both the report and the error (kind `tag_failed`,
/// fields `image_id`, `tag`, `reason`) set. No reachable daemon gives
/// `DD_STATUS_MISSING_DEPENDENCY`.
///
/// # Safety
///
/// As `dd_apply`.
#[no_mangle]
pub unsafe extern "C" fn dd_apply_load(
    package: *const c_char,
    base_ref: *const c_char,
    options: *const dd_apply_options,
    report_json: *mut *mut c_char,
    err: *mut *mut dd_error,
) -> dd_status {
    guard(err, || {
        if !report_json.is_null() {
            // SAFETY: caller's contract.
            unsafe { *report_json = std::ptr::null_mut() };
        }
        // SAFETY: caller's contract for every pointer argument.
        let package = unsafe { str_arg(package, "package") }?;
        let base_ref = unsafe { opt_str_arg(base_ref, "base_ref") }?;
        let defaults = dd_apply_options::default();
        let o = match unsafe { options.as_ref() } {
            Some(o) => o,
            None => &defaults,
        };
        o.callbacks.with_logs(|| -> Result<(), Failure> {
            let client = client(o)?;
            let p = prepare(package, base_ref, o)?;
            let progress = o.callbacks.progress();
            let sink = DaemonSink::new(client, None, &progress)?;
            let (report, tag_error) = apply::apply_into(
                &p.package,
                p.base.as_deref(),
                Box::new(sink),
                &apply_options(o, &progress)?,
            )?;
            let text = to_json(&report)?;
            // SAFETY: caller's contract.
            unsafe { put_string(report_json, text) };
            match tag_error {
                Some(e) => Err(Failure::Lib(e)),
                None => Ok(()),
            }
        })
    })
}
