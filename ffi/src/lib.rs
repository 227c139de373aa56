//! The docker-delta C ABI (`libdocker_delta`): `include/docker_delta.h`, generated from
//! this crate by cbindgen, over the `docker_delta` library.
//!
//! Conventions (modelled on rustls-ffi):
//!
//! - Every operation returns a [`dd_status`]. Details come through an optional
//!   `dd_error **err` out-parameter: pass NULL to ignore them, or the address of a
//!   `dd_error *` that is set to NULL on success and to a new error object on failure
//!   (free it with `dd_error_free`). There is no thread-local "last error": a Go goroutine
//!   may move between OS threads between two calls, and a Python callback may run other
//!   calls in between.
//! - Objects are opaque handles (`dd_image`, `dd_package`, `dd_create_options`,
//!   `dd_apply_options`, `dd_error`) made by a `*_new`/`*_open` function and released by
//!   the matching `*_free`, which accepts NULL.
//! - Strings passed in are NUL-terminated UTF-8; invalid UTF-8 or a NULL where a value is
//!   required gives `DD_STATUS_INVALID_ARGUMENT`. Strings returned as `const char *` are
//!   borrowed from the handle they come from and live until it is freed. Strings returned
//!   through a `char **` out-parameter are owned by the caller and must be released with
//!   `dd_string_free` (not `free`).
//! - Every exported function catches Rust panics: a panic becomes `DD_STATUS_PANIC` with
//!   the panic message, never an abort across the C boundary.
//! - Callbacks run on the calling thread, before the call returns.
//! - Results that would be awkward as C structs (reports, package info, image
//!   descriptions) are returned as JSON documents, documented at each function.

#![allow(non_camel_case_types)]
#![warn(missing_docs)]
#![deny(clippy::unwrap_used)]

use std::any::Any;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

pub mod callbacks;
pub mod delta;
pub mod error;
pub mod image;
pub mod package;
pub mod registry;

use error::{dd_error, Failure};

/// What a call did. The values 0-5 are the `docker-delta` command's exit codes, so a
/// status can be passed on as one.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum dd_status {
    /// Success.
    Ok = 0,
    /// An unexpected or internal error: I/O failure, a bug.
    Error = 1,
    /// A dependency is missing: no Docker daemon reachable.
    MissingDependency = 2,
    /// The input is invalid: bad reference, malformed image, corrupted package, wrong base
    /// image, output exists.
    InvalidInput = 3,
    /// The operation was valid but failed: the daemon refused a load, a codec failed.
    OperationFailed = 4,
    /// A warning: the image was loaded into the daemon, but tagging it failed. The report
    /// is still returned; the error holds the image ID and the tag
    /// (`dd_error_json`: `fields.image_id`, `fields.tag`).
    TagFailed = 5,
    /// The progress callback returned false; nothing was left behind.
    Cancelled = 6,
    /// A required argument was NULL, a string was not UTF-8, or a value was out of range.
    InvalidArgument = 7,
    /// A Rust panic was caught (a bug in docker-delta; please report it with the message).
    Panic = 8,
    /// A pull without fallback found no published delta whose base is at hand (the
    /// command's exit code 9).
    NoDelta = 9,
}

impl dd_status {
    /// A short stable name: `ok`, `error`, `missing_dependency`, `invalid_input`,
    /// `operation_failed`, `tag_failed`, `cancelled`, `invalid_argument`, `panic`,
    /// `no_delta`.
    pub fn name(self) -> &'static str {
        match self {
            dd_status::Ok => "ok",
            dd_status::Error => "error",
            dd_status::MissingDependency => "missing_dependency",
            dd_status::InvalidInput => "invalid_input",
            dd_status::OperationFailed => "operation_failed",
            dd_status::TagFailed => "tag_failed",
            dd_status::Cancelled => "cancelled",
            dd_status::InvalidArgument => "invalid_argument",
            dd_status::Panic => "panic",
            dd_status::NoDelta => "no_delta",
        }
    }

    fn name_cstr(self) -> &'static CStr {
        match self {
            dd_status::Ok => c"ok",
            dd_status::Error => c"error",
            dd_status::MissingDependency => c"missing_dependency",
            dd_status::InvalidInput => c"invalid_input",
            dd_status::OperationFailed => c"operation_failed",
            dd_status::TagFailed => c"tag_failed",
            dd_status::Cancelled => c"cancelled",
            dd_status::InvalidArgument => c"invalid_argument",
            dd_status::Panic => c"panic",
            dd_status::NoDelta => c"no_delta",
        }
    }
}

/// The name of a status (`"invalid_input"`...), a static string; `"unknown"` for a value
/// that is not a `dd_status`.
#[no_mangle]
pub extern "C" fn dd_status_name(status: u32) -> *const c_char {
    let s = [
        dd_status::Ok,
        dd_status::Error,
        dd_status::MissingDependency,
        dd_status::InvalidInput,
        dd_status::OperationFailed,
        dd_status::TagFailed,
        dd_status::Cancelled,
        dd_status::InvalidArgument,
        dd_status::Panic,
    ]
    .into_iter()
    .find(|s| *s as u32 == status);
    match s {
        Some(s) => s.name_cstr().as_ptr(),
        None => c"unknown".as_ptr(),
    }
}

/// The library version, e.g. `"0.1.0"` (a static string). Compare with the header's
/// `DOCKER_DELTA_VERSION` to detect a header/library mismatch.
#[no_mangle]
pub extern "C" fn dd_version() -> *const c_char {
    const V: &CStr =
        match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
            Ok(v) => v,
            Err(_) => c"unknown",
        };
    V.as_ptr()
}

/// Removes the temporary files and directories the library is writing in this process
/// (outputs not yet renamed into place, spools of layers, payloads and daemon exports) and
/// returns how many it removed. A program that handles its own signals calls this before
/// it exits on one: a signal that ends the process runs no cleanup, and interrupted work
/// would leave hidden files of up to an image's size beside its outputs. Operations still
/// running on other threads then fail. Callable from any thread, not from a signal
/// handler.
#[no_mangle]
pub extern "C" fn dd_remove_temporary_files() -> u32 {
    std::panic::catch_unwind(docker_delta::temp::remove_all).map_or(0, |n| n as u32)
}

/// The highest delta package format version this library reads and the one it writes.
#[no_mangle]
pub extern "C" fn dd_package_format_version_supported() -> u32 {
    docker_delta::delta::format::FORMAT_VERSION
}

/// What this library reads, writes and carries, as one JSON object, exactly as
/// `docker-delta --version --json` prints it:
///
/// ```json
/// {"schema_version": 1, "version": "0.1.0",
///  "package_format": {"reads": [1, 2, 3, 4, 5, 6], "writes": 6},
///  "codecs": {"zstd": "1.5.7", "xz": "5.8.4", "zlib": "1.3.2", "vcdiff": "...", "bsdiff": "..."}}
/// ```
///
/// The codec versions are asked of the linked libraries. `*json` is owned: release it with
/// `dd_string_free`.
///
/// # Safety
///
/// `json` must point to writable storage; `err` must be NULL or point to writable storage.
#[no_mangle]
pub unsafe extern "C" fn dd_build_info_json(
    json: *mut *mut c_char,
    err: *mut *mut dd_error,
) -> dd_status {
    guard(err, || {
        // SAFETY: caller's contract.
        let json = unsafe { out_arg(json, "json") }?;
        let text = to_json(&docker_delta::build_info())?;
        // SAFETY: checked out-parameter.
        unsafe { put_string(json, text) };
        Ok(())
    })
}

/// Frees a string returned through a `char **` out-parameter. NULL is ignored.
///
/// # Safety
///
/// `s` must be NULL or a string this library returned as owned, not freed before.
#[no_mangle]
pub unsafe extern "C" fn dd_string_free(s: *mut c_char) {
    if s.is_null() {
        return;
    }
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the caller passes a pointer made by `CString::into_raw` in this library.
        drop(unsafe { CString::from_raw(s) });
    }));
}

/// Runs the body of an exported function: catches panics, turns failures into a status,
/// and stores the error object in `err` (when not NULL). `*err` is set to NULL first.
pub(crate) fn guard(
    err: *mut *mut dd_error,
    body: impl FnOnce() -> Result<(), Failure>,
) -> dd_status {
    if !err.is_null() {
        // SAFETY: a non-NULL `err` points to a writable `dd_error *` (documented contract).
        unsafe { *err = std::ptr::null_mut() };
    }
    let failure = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => return dd_status::Ok,
        Ok(Err(f)) => f,
        Err(payload) => Failure::Panic(panic_message(payload.as_ref())),
    };
    let e = dd_error::new(failure);
    let status = e.status();
    if !err.is_null() {
        // SAFETY: as above.
        unsafe { *err = Box::into_raw(Box::new(e)) };
    }
    status
}

/// Like [`guard`] for functions without an error out-parameter.
pub(crate) fn guard_status(body: impl FnOnce() -> Result<(), Failure>) -> dd_status {
    guard(std::ptr::null_mut(), body)
}

/// Runs an accessor that returns a value directly; a panic (a bug) gives `default`.
pub(crate) fn guard_value<T>(default: T, body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(default)
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}

/// A required string argument: not NULL, valid UTF-8.
///
/// # Safety
///
/// `p` must be NULL or point to a NUL-terminated string that outlives `'a`.
pub(crate) unsafe fn str_arg<'a>(p: *const c_char, name: &str) -> Result<&'a str, Failure> {
    // SAFETY: forwarded from the caller.
    unsafe { opt_str_arg(p, name) }?
        .ok_or_else(|| Failure::InvalidArgument(format!("{name} is NULL")))
}

/// An optional string argument: NULL means `None`; otherwise it must be valid UTF-8.
///
/// # Safety
///
/// `p` must be NULL or point to a NUL-terminated string that outlives `'a`.
pub(crate) unsafe fn opt_str_arg<'a>(
    p: *const c_char,
    name: &str,
) -> Result<Option<&'a str>, Failure> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: `p` is non-NULL and NUL-terminated (caller's contract).
    let c = unsafe { CStr::from_ptr(p) };
    c.to_str()
        .map(Some)
        .map_err(|e| Failure::InvalidArgument(format!("{name} is not valid UTF-8: {e}")))
}

/// A required handle argument.
///
/// # Safety
///
/// `p` must be NULL or point to a live `T` made by this library.
pub(crate) unsafe fn handle_arg<'a, T>(p: *const T, name: &str) -> Result<&'a T, Failure> {
    // SAFETY: forwarded from the caller.
    unsafe { p.as_ref() }.ok_or_else(|| Failure::InvalidArgument(format!("{name} is NULL")))
}

/// A required mutable handle argument.
///
/// # Safety
///
/// `p` must be NULL or point to a live `T` made by this library, not used elsewhere
/// during the call.
pub(crate) unsafe fn handle_mut<'a, T>(p: *mut T, name: &str) -> Result<&'a mut T, Failure> {
    // SAFETY: forwarded from the caller.
    unsafe { p.as_mut() }.ok_or_else(|| Failure::InvalidArgument(format!("{name} is NULL")))
}

/// A required out-parameter; it is set to NULL before anything else happens.
///
/// # Safety
///
/// `p` must be NULL or point to writable storage for a pointer.
pub(crate) unsafe fn out_arg<'a, T>(p: *mut *mut T, name: &str) -> Result<&'a mut *mut T, Failure> {
    // SAFETY: forwarded from the caller.
    let out =
        unsafe { p.as_mut() }.ok_or_else(|| Failure::InvalidArgument(format!("{name} is NULL")))?;
    *out = std::ptr::null_mut();
    Ok(out)
}

/// A C string from Rust text; NUL bytes (which C strings cannot hold) become `\0`.
pub(crate) fn cstring(s: impl Into<String>) -> CString {
    let s = s.into();
    match CString::new(s) {
        Ok(c) => c,
        Err(e) => {
            let fixed = String::from_utf8_lossy(&e.into_vec()).replace('\0', "\\0");
            CString::new(fixed).unwrap_or_default()
        }
    }
}

/// Stores an owned string in an optional `char **` out-parameter.
///
/// # Safety
///
/// `out` must be NULL or point to writable storage for a pointer.
pub(crate) unsafe fn put_string(out: *mut *mut c_char, s: impl Into<String>) {
    if !out.is_null() {
        // SAFETY: caller's contract.
        unsafe { *out = cstring(s).into_raw() };
    }
}

/// Serialises a value for a JSON out-parameter.
pub(crate) fn to_json(value: &impl serde::Serialize) -> Result<String, Failure> {
    serde_json::to_string(value).map_err(|e| {
        Failure::Lib(docker_delta::Error::Other(format!(
            "cannot encode JSON: {e}"
        )))
    })
}

/// A borrowed C string from a handle, or NULL.
pub(crate) fn ptr_of(s: Option<&CString>) -> *const c_char {
    s.map_or(std::ptr::null(), |s| s.as_ptr())
}

#[cfg(test)]
mod tests;
