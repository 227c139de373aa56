//! `dd_error`: the error object every call can return through its `dd_error **err`
//! out-parameter.

use std::ffi::{c_char, CString};

use serde_json::json;

use super::{cstring, dd_status, guard_value, ptr_of};
use docker_delta::error::{Error, ExitCode};

/// Why an exported function failed, before it becomes a [`dd_error`].
#[derive(Debug)]
pub enum Failure {
    /// A library error.
    Lib(Error),
    /// A NULL, non-UTF-8 or out-of-range argument.
    InvalidArgument(String),
    /// A caught panic, with its message.
    Panic(String),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Lib(e)
    }
}

/// The status a library error maps to: its exit code, except that a cancellation has a
/// status of its own.
pub fn status_of(e: &Error) -> dd_status {
    if matches!(e, Error::Cancelled) {
        return dd_status::Cancelled;
    }
    match e.exit_code() {
        ExitCode::Ok | ExitCode::Error => dd_status::Error,
        ExitCode::MissingDependency => dd_status::MissingDependency,
        ExitCode::InvalidInput => dd_status::InvalidInput,
        ExitCode::OperationFailed => dd_status::OperationFailed,
        ExitCode::TagWarning => dd_status::TagFailed,
        ExitCode::NoDelta => dd_status::NoDelta,
    }
}

/// An error: status, kind, message and the structured fields of the library's error.
///
/// Strings returned by its accessors are borrowed and live until `dd_error_free`.
pub struct dd_error {
    status: dd_status,
    kind: CString,
    message: CString,
    path: Option<CString>,
    expected: Option<CString>,
    found: Option<CString>,
    json: CString,
}

impl dd_error {
    /// Builds the error object for a failure.
    pub fn new(f: Failure) -> dd_error {
        let (status, kind, message, path, expected, found, fields) = match &f {
            Failure::Lib(e) => (
                status_of(e),
                e.kind(),
                e.to_string(),
                e.path(),
                e.expected(),
                e.found(),
                serde_json::Value::Object(e.fields()),
            ),
            Failure::InvalidArgument(m) => (
                dd_status::InvalidArgument,
                "invalid_argument",
                m.clone(),
                None,
                None,
                None,
                json!({}),
            ),
            Failure::Panic(m) => (
                dd_status::Panic,
                "panic",
                format!("docker-delta panicked (a bug; please report it): {m}"),
                None,
                None,
                None,
                json!({ "panic": m }),
            ),
        };
        // The `error` document, as `docker-delta --json` prints it on stderr, with the
        // status instead of the exit code (the same numbers, and three of its own).
        let doc = docker_delta::report::ErrorDocument {
            schema_version: docker_delta::report::SCHEMA_VERSION,
            document: "error",
            status: status as u32,
            status_name: status.name(),
            kind,
            message: message.clone(),
            path: path.clone(),
            expected: expected.clone(),
            found: found.clone(),
            fields: match fields {
                serde_json::Value::Object(m) => m,
                _ => serde_json::Map::new(),
            },
        };
        let text = serde_json::to_string(&doc).unwrap_or_else(|_| "{}".into());
        dd_error {
            status,
            kind: cstring(kind),
            message: cstring(message),
            path: path.map(cstring),
            expected: expected.map(cstring),
            found: found.map(cstring),
            json: cstring(text),
        }
    }

    /// The status.
    pub fn status(&self) -> dd_status {
        self.status
    }
}

/// The error's status (`DD_STATUS_ERROR` for NULL).
///
/// # Safety
///
/// `err` must be NULL or a live error from this library.
#[no_mangle]
pub unsafe extern "C" fn dd_error_code(err: *const dd_error) -> dd_status {
    // SAFETY: caller's contract.
    guard_value(dd_status::Error, || match unsafe { err.as_ref() } {
        Some(e) => e.status,
        None => dd_status::Error,
    })
}

/// The error's kind: a short stable name for what went wrong. One of the library's error
/// kinds (`wrong_base_image`, `digest_mismatch`, `size_mismatch`, `invalid_package`,
/// `unsupported_package_version`, `output_exists`, `invalid_option`, `invalid_reference`,
/// `invalid_platform`,
/// `invalid_digest`, `invalid_json`, `invalid_field`, `unsupported_manifest`,
/// `unsupported_legacy_archive`, `invalid_layout`, `missing_file`, `path_outside_archive`,
/// `ambiguous_image`, `image_not_found`, `layer_count_mismatch`, `limit_exceeded`, `codec`,
/// `deflater_mismatch`, `unsupported_file_type`, `timeout`, `credential_helper`, `registry_unavailable`, `unauthorized`, `registry`, `daemon_unavailable`, `daemon`, `tag_failed`, `no_delta`, `cancelled`, `io`,
/// `other`), or
/// `invalid_argument`, or `panic`. NULL for a NULL error.
///
/// # Safety
///
/// `err` must be NULL or a live error from this library.
#[no_mangle]
pub unsafe extern "C" fn dd_error_kind(err: *const dd_error) -> *const c_char {
    // SAFETY: caller's contract.
    guard_value(std::ptr::null(), || {
        ptr_of(unsafe { err.as_ref() }.map(|e| &e.kind))
    })
}

/// The error's message, one or more lines of UTF-8, as the command-line tool prints it.
/// NULL for a NULL error.
///
/// # Safety
///
/// `err` must be NULL or a live error from this library.
#[no_mangle]
pub unsafe extern "C" fn dd_error_message(err: *const dd_error) -> *const c_char {
    // SAFETY: caller's contract.
    guard_value(std::ptr::null(), || {
        ptr_of(unsafe { err.as_ref() }.map(|e| &e.message))
    })
}

/// The file, archive or directory the error concerns, or NULL if it names none.
///
/// # Safety
///
/// `err` must be NULL or a live error from this library.
#[no_mangle]
pub unsafe extern "C" fn dd_error_path(err: *const dd_error) -> *const c_char {
    // SAFETY: caller's contract.
    guard_value(std::ptr::null(), || {
        ptr_of(unsafe { err.as_ref() }.and_then(|e| e.path.as_ref()))
    })
}

/// What was expected, for errors that compare two values, or NULL: the recorded digest
/// or size (`digest_mismatch`, `size_mismatch`), the base image the package was made
/// against (`wrong_base_image`), the highest supported format version
/// (`unsupported_package_version`), the limit (`limit_exceeded`), the config's layer count
/// (`layer_count_mismatch`).
///
/// # Safety
///
/// `err` must be NULL or a live error from this library.
#[no_mangle]
pub unsafe extern "C" fn dd_error_expected(err: *const dd_error) -> *const c_char {
    // SAFETY: caller's contract.
    guard_value(std::ptr::null(), || {
        ptr_of(unsafe { err.as_ref() }.and_then(|e| e.expected.as_ref()))
    })
}

/// What was found instead of `dd_error_expected`, or NULL.
///
/// # Safety
///
/// `err` must be NULL or a live error from this library.
#[no_mangle]
pub unsafe extern "C" fn dd_error_found(err: *const dd_error) -> *const c_char {
    // SAFETY: caller's contract.
    guard_value(std::ptr::null(), || {
        ptr_of(unsafe { err.as_ref() }.and_then(|e| e.found.as_ref()))
    })
}

/// Everything about the error as one JSON object, the `error` document (docs/JSON.md),
/// as `docker-delta --json` prints it on stderr (where `status` is the exit code):
///
/// ```json
/// {"schema_version": 1, "document": "error", "status": 3, "status_name": "invalid_input", "kind": "wrong_base_image",
///  "message": "...", "path": null, "expected": "...", "found": "...",
///  "fields": {"expected": "...", "found": "...", "reference": "..."}}
/// ```
///
/// `fields` holds every field of the library's error variant under its own name (for
/// example `what`, `expected`, `found` for `digest_mismatch`; `path`, `io_kind`,
/// `os_error` for `io`; `image_id`, `tag`, `reason` for `tag_failed`). NULL for a NULL
/// error.
///
/// # Safety
///
/// `err` must be NULL or a live error from this library.
#[no_mangle]
pub unsafe extern "C" fn dd_error_json(err: *const dd_error) -> *const c_char {
    // SAFETY: caller's contract.
    guard_value(std::ptr::null(), || {
        ptr_of(unsafe { err.as_ref() }.map(|e| &e.json))
    })
}

/// Frees an error. NULL is ignored.
///
/// # Safety
///
/// `err` must be NULL or an error from this library, not freed before.
#[no_mangle]
pub unsafe extern "C" fn dd_error_free(err: *mut dd_error) {
    if err.is_null() {
        return;
    }
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: `err` was made by `Box::into_raw` in `guard` (caller's contract).
        drop(unsafe { Box::from_raw(err) });
    }));
}
