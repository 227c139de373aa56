//! The crate's single error type.
//!
//! Every failure is one variant of [`Error`], with the structured fields a caller needs
//! (the file, the field, the digests involved) rather than a pre-formatted string. Each
//! variant maps to a documented process exit code through [`Error::exit_code`].

use std::io;
use std::path::PathBuf;

/// Result type used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Process exit codes of the `docker-delta` command. They are part of the public contract
/// and documented in the README.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum ExitCode {
    /// Success.
    Ok = 0,
    /// Unexpected or internal error (I/O failure, bug).
    Error = 1,
    /// A dependency is missing: no Docker daemon reachable, a required tool absent.
    MissingDependency = 2,
    /// The input is invalid: bad reference, malformed image, corrupted package, wrong base image.
    InvalidInput = 3,
    /// The operation was valid but failed: the daemon refused a load, a rebuilt layer did not verify.
    OperationFailed = 4,
    /// The image was loaded, but tagging it failed; the image ID and the `docker tag` command
    /// were printed.
    TagWarning = 5,
    /// `pull --no-fallback`: no published delta fits what the device has, and a full pull
    /// was not allowed.
    NoDelta = 9,
}

impl ExitCode {
    /// A short stable name, as the `error` document's `status_name` gives it: `ok`,
    /// `error`, `missing_dependency`, `invalid_input`, `operation_failed`, `tag_failed`
    /// (the C ABI's `dd_status` names for the same numbers).
    pub fn name(self) -> &'static str {
        match self {
            ExitCode::Ok => "ok",
            ExitCode::Error => "error",
            ExitCode::MissingDependency => "missing_dependency",
            ExitCode::InvalidInput => "invalid_input",
            ExitCode::OperationFailed => "operation_failed",
            ExitCode::TagWarning => "tag_failed",
            ExitCode::NoDelta => "no_delta",
        }
    }
}

/// Every error the library can report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An image reference string could not be parsed.
    #[error("invalid image reference {input:?}: {reason}")]
    InvalidReference {
        /// The reference as given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A platform string (`os/arch[/variant]`) could not be parsed.
    #[error(
        "invalid platform {input:?}: expected os/arch[/variant], e.g. linux/amd64 or linux/arm/v7"
    )]
    InvalidPlatform {
        /// The platform as given.
        input: String,
    },

    /// A digest string is malformed or uses an unsupported algorithm.
    #[error("invalid digest {input:?}{}: {reason}", context_suffix(.context))]
    InvalidDigest {
        /// The digest as found.
        input: String,
        /// Where it was found (file and field), if known.
        context: Option<String>,
        /// What is wrong with it.
        reason: String,
    },

    /// A JSON document is not valid JSON (or does not have the expected types).
    #[error("{file}: invalid JSON at line {line}, column {column}: {message}")]
    InvalidJson {
        /// The file (or archive member) holding the document.
        file: String,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// serde_json's description.
        message: String,
    },

    /// A JSON document lacks a required field or has a field with an invalid value.
    #[error("{file}: {field}: {reason}")]
    InvalidField {
        /// The file (or archive member) holding the document.
        file: String,
        /// The JSON path of the field, e.g. `layers[2].digest`.
        field: String,
        /// What is wrong.
        reason: String,
    },

    /// A manifest document of a kind we do not support.
    #[error("{file}: unsupported document: {found}")]
    UnsupportedManifest {
        /// The file (or archive member) holding the document.
        file: String,
        /// What was seen (schemaVersion, mediaType, top-level shape).
        found: String,
    },

    /// A docker-archive that only has a pre-1.10 `repositories` file.
    #[error("{path}: unsupported legacy archive: it has a `repositories` file but no `manifest.json` (written by Docker < 1.10); re-save the image with a current Docker")]
    UnsupportedLegacyArchive {
        /// The archive.
        path: PathBuf,
    },

    /// Something about the image layout is wrong (missing file, wrong transport...).
    #[error("{path}: {reason}")]
    InvalidLayout {
        /// The archive or directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// A file the image needs is not present.
    #[error("{container}: missing {what} {name:?}")]
    MissingFile {
        /// The archive or directory that should contain it.
        container: PathBuf,
        /// What kind of file (config, layer, blob, manifest).
        what: String,
        /// Its path inside the container.
        name: String,
    },

    /// A path inside an archive or layout escapes its root.
    #[error("{container}: path {name:?} points outside the archive")]
    PathOutsideArchive {
        /// The archive or directory.
        container: PathBuf,
        /// The offending path.
        name: String,
    },

    /// Several images match and the reference did not choose one.
    #[error("{path}: {reason}; choose one of: {}", .choices.join(", "))]
    AmbiguousImage {
        /// The archive or layout.
        path: PathBuf,
        /// Why a choice is needed.
        reason: String,
        /// The accepted selectors, as they would be written in a reference.
        choices: Vec<String>,
    },

    /// The requested image (tag, index, platform) is not present.
    #[error("{path}: no image matches {wanted}; available: {}", if .available.is_empty() { "none".to_string() } else { .available.join(", ") })]
    ImageNotFound {
        /// The archive, layout or daemon.
        path: PathBuf,
        /// What was asked for.
        wanted: String,
        /// What is there.
        available: Vec<String>,
    },

    /// Content did not hash to the digest it was expected to have.
    #[error("{what}: digest mismatch: expected {expected}, found {found}")]
    DigestMismatch {
        /// What was being verified (e.g. "layer 2 (blobs/sha256/ab..) diff_id").
        what: String,
        /// The digest recorded in the manifest, config or package.
        expected: String,
        /// The digest of the bytes actually read.
        found: String,
    },

    /// Content did not have the size it was expected to have.
    #[error("{what}: size mismatch: expected {expected} bytes, found {found}")]
    SizeMismatch {
        /// What was being verified.
        what: String,
        /// The recorded size.
        expected: u64,
        /// The size actually read.
        found: u64,
    },

    /// The number of layers in a manifest does not match the config's `rootfs.diff_ids`.
    #[error("{file}: the manifest lists {manifest_layers} layers but the config's rootfs.diff_ids has {diff_ids}")]
    LayerCountMismatch {
        /// The manifest.
        file: String,
        /// Layers in the manifest.
        manifest_layers: usize,
        /// Entries in `rootfs.diff_ids`.
        diff_ids: usize,
    },

    /// A delta package is malformed, truncated or corrupted.
    #[error("{path}: invalid delta package: {reason}")]
    InvalidPackage {
        /// The package file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// A delta package uses a format version this build cannot read.
    #[error("{path}: delta package format version {found} is newer than this docker-delta supports ({supported}); upgrade docker-delta")]
    UnsupportedPackageVersion {
        /// The package file.
        path: PathBuf,
        /// The version in the package.
        found: u32,
        /// The highest version this build reads.
        supported: u32,
    },

    /// The base image given to `apply` is not the image the delta was made from.
    #[error("wrong base image: the delta was made against {expected} but {reference} is {found}")]
    WrongBaseImage {
        /// The base image the package records (config digest and tags).
        expected: String,
        /// The base image offered.
        found: String,
        /// The reference that was offered.
        reference: String,
    },

    /// A configured safety limit was exceeded.
    #[error("{what}: {limit} limit of {max} exceeded ({found}); raise it with {option}")]
    LimitExceeded {
        /// What exceeded it.
        what: String,
        /// The limit's name.
        limit: String,
        /// The limit's value.
        max: u64,
        /// The value seen.
        found: u64,
        /// How to raise it (CLI option or environment variable).
        option: String,
    },

    /// A delta codec failed to encode or decode.
    #[error("{codec}: {reason}")]
    Codec {
        /// The codec (xdelta3, zstd, ...).
        codec: String,
        /// What failed.
        reason: String,
    },

    /// The package needs gzip members re-made, and this build's deflater does not make stock
    /// zlib's bytes (see `docker_delta::delta::files::gz::remake_supported`).
    #[error("{what}: the package ships gzip members to be re-deflated, but this build's zlib (e.g. zlib-ng) does not re-make stock zlib's deflate streams byte for byte; rebuild docker-delta without the libz-sys/zlib-ng or flate2/zlib-ng feature")]
    DeflaterMismatch {
        /// What needed it (the layer).
        what: String,
    },

    /// An option's value is outside what it accepts (a compression level out of range).
    #[error("{option}: {reason}")]
    InvalidOption {
        /// The option, as the command line names it.
        option: String,
        /// What is wrong, and what is accepted.
        reason: String,
    },

    /// The output path exists and `--force` was not given.
    #[error("{path}: output exists; use --force to overwrite")]
    OutputExists {
        /// The output.
        path: PathBuf,
    },

    /// A path is not the kind of file it must be (a FIFO, socket or device where a regular
    /// file or directory is expected, or a symbolic link inside an image layout).
    #[error("{}: {found} where {expected} is expected", .path.display())]
    UnsupportedFileType {
        /// The path.
        path: PathBuf,
        /// What it is (`FIFO`, `socket`, `character device`, `block device`, `symbolic link`,
        /// `directory`, `regular file`).
        found: String,
        /// What it must be.
        expected: String,
    },

    /// A conversation with the Docker daemon or a registry took longer than its timeout.
    #[error("{endpoint}: {operation}: no answer within {seconds} s; raise it with {option}")]
    Timeout {
        /// The socket or URL.
        endpoint: String,
        /// What was under way (`connect`, `GET /version`, `reading the load reply`, ...).
        operation: String,
        /// The timeout that ran out, in seconds.
        seconds: u64,
        /// How to raise it (CLI option or environment variable).
        option: String,
    },

    /// A `docker-credential-*` helper could not be run or failed (its own message, never
    /// a secret).
    #[error("credential helper {helper} for {registry}: {reason}")]
    CredentialHelper {
        /// The helper program.
        helper: String,
        /// The registry whose credential was asked for.
        registry: String,
        /// Why it failed.
        reason: String,
    },

    /// A registry cannot be reached (no connection, TLS refused, not a registry).
    #[error("cannot reach registry {registry}: {reason}")]
    RegistryUnavailable {
        /// The registry (`host[:port]`).
        registry: String,
        /// Why, for each address tried.
        reason: String,
    },

    /// A registry refused access: wrong or missing credentials.
    #[error("registry {registry} refused {scope} (HTTP {status}) with credentials from {credentials}; looked in: {}", .searched.join(", "))]
    Unauthorized {
        /// The registry.
        registry: String,
        /// The access asked for (`repository:NAME:pull`).
        scope: String,
        /// 401 or 403.
        status: u16,
        /// Where the credentials sent came from (`none` when there were none).
        credentials: String,
        /// Every place credentials were looked for, in order.
        searched: Vec<String>,
    },

    /// A registry answered with an error.
    #[error("registry {registry}: {operation} failed (HTTP {status}): {message}")]
    Registry {
        /// The registry.
        registry: String,
        /// What was asked.
        operation: String,
        /// HTTP status code (0 when the connection failed midway).
        status: u16,
        /// The registry's message.
        message: String,
    },

    /// The Docker daemon cannot be reached.
    #[error("cannot reach the Docker daemon at {endpoint}: {reason}")]
    DaemonUnavailable {
        /// The socket or URL.
        endpoint: String,
        /// Why.
        reason: String,
    },

    /// The Docker daemon answered with an error.
    #[error("Docker daemon: {operation} failed (HTTP {status}): {message}")]
    Daemon {
        /// The API operation.
        operation: String,
        /// HTTP status code (0 if the error came inside a stream).
        status: u16,
        /// The daemon's message.
        message: String,
    },

    /// The image was loaded but tagging it failed.
    #[error("loaded image {image_id} but tagging it as {tag} failed: {reason}\n  tag it by hand with: docker tag {image_id} {tag}")]
    TagFailed {
        /// The loaded image's ID.
        image_id: String,
        /// The tag that was wanted.
        tag: String,
        /// Why tagging failed.
        reason: String,
    },

    /// `pull --no-fallback` found no published delta whose base is at hand.
    #[error("no delta fits for {image}: {reason} (a full pull was not allowed: --no-fallback)")]
    NoDelta {
        /// The image asked for.
        image: String,
        /// Why none fits: none published, no base at hand, or the ones tried were refused.
        reason: String,
    },

    /// An operation was cancelled by the caller.
    #[error("operation cancelled")]
    Cancelled,

    /// An I/O error, with the path it concerns.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// Anything else worth a sentence.
    #[error("{0}")]
    Other(String),
}

fn context_suffix(context: &Option<String>) -> String {
    match context {
        Some(c) => format!(" in {c}"),
        None => String::new(),
    }
}

impl Error {
    /// The exit code the command-line tool uses for this error.
    pub fn exit_code(&self) -> ExitCode {
        use Error::*;
        match self {
            InvalidReference { .. }
            | InvalidPlatform { .. }
            | InvalidDigest { .. }
            | InvalidJson { .. }
            | InvalidField { .. }
            | UnsupportedManifest { .. }
            | UnsupportedLegacyArchive { .. }
            | InvalidLayout { .. }
            | MissingFile { .. }
            | PathOutsideArchive { .. }
            | AmbiguousImage { .. }
            | ImageNotFound { .. }
            | DigestMismatch { .. }
            | SizeMismatch { .. }
            | LayerCountMismatch { .. }
            | InvalidPackage { .. }
            | UnsupportedPackageVersion { .. }
            | WrongBaseImage { .. }
            | LimitExceeded { .. }
            | InvalidOption { .. }
            | OutputExists { .. }
            | UnsupportedFileType { .. }
            | Unauthorized { .. } => ExitCode::InvalidInput,
            DaemonUnavailable { .. }
            | DeflaterMismatch { .. }
            | Timeout { .. }
            | CredentialHelper { .. }
            | RegistryUnavailable { .. } => ExitCode::MissingDependency,
            Daemon { .. } | Registry { .. } | Codec { .. } | Cancelled => ExitCode::OperationFailed,
            TagFailed { .. } => ExitCode::TagWarning,
            NoDelta { .. } => ExitCode::NoDelta,
            Io { source, .. } => {
                if let Some(inner) = source.get_ref().and_then(|e| e.downcast_ref::<Error>()) {
                    inner.exit_code()
                } else {
                    ExitCode::Error
                }
            }
            Other(_) => ExitCode::Error,
        }
    }

    /// A short stable name for the variant, used by `--json` output and the C ABI.
    pub fn kind(&self) -> &'static str {
        use Error::*;
        match self {
            InvalidReference { .. } => "invalid_reference",
            InvalidPlatform { .. } => "invalid_platform",
            InvalidDigest { .. } => "invalid_digest",
            InvalidJson { .. } => "invalid_json",
            InvalidField { .. } => "invalid_field",
            UnsupportedManifest { .. } => "unsupported_manifest",
            UnsupportedLegacyArchive { .. } => "unsupported_legacy_archive",
            InvalidLayout { .. } => "invalid_layout",
            MissingFile { .. } => "missing_file",
            PathOutsideArchive { .. } => "path_outside_archive",
            AmbiguousImage { .. } => "ambiguous_image",
            ImageNotFound { .. } => "image_not_found",
            DigestMismatch { .. } => "digest_mismatch",
            SizeMismatch { .. } => "size_mismatch",
            LayerCountMismatch { .. } => "layer_count_mismatch",
            InvalidPackage { .. } => "invalid_package",
            UnsupportedPackageVersion { .. } => "unsupported_package_version",
            WrongBaseImage { .. } => "wrong_base_image",
            LimitExceeded { .. } => "limit_exceeded",
            Codec { .. } => "codec",
            DeflaterMismatch { .. } => "deflater_mismatch",
            InvalidOption { .. } => "invalid_option",
            OutputExists { .. } => "output_exists",
            UnsupportedFileType { .. } => "unsupported_file_type",
            Timeout { .. } => "timeout",
            CredentialHelper { .. } => "credential_helper",
            RegistryUnavailable { .. } => "registry_unavailable",
            Unauthorized { .. } => "unauthorized",
            Registry { .. } => "registry",
            DaemonUnavailable { .. } => "daemon_unavailable",
            Daemon { .. } => "daemon",
            TagFailed { .. } => "tag_failed",
            NoDelta { .. } => "no_delta",
            Cancelled => "cancelled",
            Io { .. } => "io",
            Other(_) => "other",
        }
    }

    /// The variant's structured fields as a JSON object, named as in the variant (paths as
    /// strings, lists as arrays). For an I/O error: `path`, `io_kind` and `os_error`. Used
    /// by the C ABI's `dd_error_json`.
    pub fn fields(&self) -> serde_json::Map<String, serde_json::Value> {
        use serde_json::json;
        use Error::*;
        let v = match self {
            InvalidReference { input, reason } => json!({"input": input, "reason": reason}),
            InvalidPlatform { input } => json!({ "input": input }),
            InvalidDigest {
                input,
                context,
                reason,
            } => json!({"input": input, "context": context, "reason": reason}),
            InvalidJson {
                file,
                line,
                column,
                message,
            } => json!({"file": file, "line": line, "column": column, "message": message}),
            InvalidField {
                file,
                field,
                reason,
            } => json!({"file": file, "field": field, "reason": reason}),
            UnsupportedManifest { file, found } => json!({"file": file, "found": found}),
            UnsupportedLegacyArchive { path } => json!({ "path": path }),
            InvalidLayout { path, reason } => json!({"path": path, "reason": reason}),
            MissingFile {
                container,
                what,
                name,
            } => json!({"container": container, "what": what, "name": name}),
            PathOutsideArchive { container, name } => {
                json!({"container": container, "name": name})
            }
            AmbiguousImage {
                path,
                reason,
                choices,
            } => json!({"path": path, "reason": reason, "choices": choices}),
            ImageNotFound {
                path,
                wanted,
                available,
            } => json!({"path": path, "wanted": wanted, "available": available}),
            DigestMismatch {
                what,
                expected,
                found,
            } => json!({"what": what, "expected": expected, "found": found}),
            SizeMismatch {
                what,
                expected,
                found,
            } => json!({"what": what, "expected": expected, "found": found}),
            LayerCountMismatch {
                file,
                manifest_layers,
                diff_ids,
            } => json!({"file": file, "manifest_layers": manifest_layers, "diff_ids": diff_ids}),
            InvalidPackage { path, reason } => json!({"path": path, "reason": reason}),
            InvalidOption { option, reason } => json!({"option": option, "reason": reason}),
            UnsupportedPackageVersion {
                path,
                found,
                supported,
            } => json!({"path": path, "found": found, "supported": supported}),
            WrongBaseImage {
                expected,
                found,
                reference,
            } => json!({"expected": expected, "found": found, "reference": reference}),
            LimitExceeded {
                what,
                limit,
                max,
                found,
                option,
            } => {
                json!({"what": what, "limit": limit, "max": max, "found": found, "option": option})
            }
            Codec { codec, reason } => json!({"codec": codec, "reason": reason}),
            DeflaterMismatch { what } => json!({ "what": what }),
            OutputExists { path } => json!({ "path": path }),
            UnsupportedFileType {
                path,
                found,
                expected,
            } => json!({"path": path, "found": found, "expected": expected}),
            Timeout {
                endpoint,
                operation,
                seconds,
                option,
            } => {
                json!({"endpoint": endpoint, "operation": operation, "seconds": seconds, "option": option})
            }
            DaemonUnavailable { endpoint, reason } => {
                json!({"endpoint": endpoint, "reason": reason})
            }
            CredentialHelper {
                helper,
                registry,
                reason,
            } => json!({"helper": helper, "registry": registry, "reason": reason}),
            RegistryUnavailable { registry, reason } => {
                json!({"registry": registry, "reason": reason})
            }
            Unauthorized {
                registry,
                scope,
                status,
                credentials,
                searched,
            } => json!({"registry": registry, "scope": scope, "status": status,
                "credentials": credentials, "searched": searched}),
            Registry {
                registry,
                operation,
                status,
                message,
            } => {
                json!({"registry": registry, "operation": operation, "status": status, "message": message})
            }
            Daemon {
                operation,
                status,
                message,
            } => json!({"operation": operation, "status": status, "message": message}),
            TagFailed {
                image_id,
                tag,
                reason,
            } => json!({"image_id": image_id, "tag": tag, "reason": reason}),
            NoDelta { image, reason } => json!({"image": image, "reason": reason}),
            Cancelled => json!({}),
            Io { path, source } => json!({
                "path": path,
                "io_kind": format!("{:?}", source.kind()),
                "os_error": source.raw_os_error(),
                "message": source.to_string(),
            }),
            Other(message) => json!({ "message": message }),
        };
        match v {
            serde_json::Value::Object(m) => m,
            _ => serde_json::Map::new(),
        }
    }

    /// The file, archive or directory the error concerns, if it names one (`path`, `file`
    /// or `container` in [`Error::fields`]).
    pub fn path(&self) -> Option<String> {
        use Error::*;
        match self {
            UnsupportedLegacyArchive { path }
            | InvalidLayout { path, .. }
            | AmbiguousImage { path, .. }
            | ImageNotFound { path, .. }
            | InvalidPackage { path, .. }
            | UnsupportedPackageVersion { path, .. }
            | OutputExists { path }
            | UnsupportedFileType { path, .. }
            | Io { path, .. } => Some(path.display().to_string()),
            MissingFile { container, .. } | PathOutsideArchive { container, .. } => {
                Some(container.display().to_string())
            }
            InvalidJson { file, .. }
            | InvalidField { file, .. }
            | UnsupportedManifest { file, .. }
            | LayerCountMismatch { file, .. } => Some(file.clone()),
            _ => None,
        }
    }

    /// What was expected, for errors that compare two values: the digest or size recorded
    /// (digest and size mismatches), the base image the package was made against (wrong
    /// base image), the highest supported version (package version), the limit (limits),
    /// the layer count in the config (layer count mismatch).
    pub fn expected(&self) -> Option<String> {
        use Error::*;
        match self {
            DigestMismatch { expected, .. } | WrongBaseImage { expected, .. } => {
                Some(expected.clone())
            }
            SizeMismatch { expected, .. } => Some(expected.to_string()),
            UnsupportedPackageVersion { supported, .. } => Some(supported.to_string()),
            LimitExceeded { max, .. } => Some(max.to_string()),
            LayerCountMismatch { diff_ids, .. } => Some(diff_ids.to_string()),
            _ => None,
        }
    }

    /// What was found instead (see [`Error::expected`]); also what was seen for an
    /// unsupported manifest.
    pub fn found(&self) -> Option<String> {
        use Error::*;
        match self {
            DigestMismatch { found, .. }
            | WrongBaseImage { found, .. }
            | UnsupportedManifest { found, .. } => Some(found.clone()),
            SizeMismatch { found, .. } | LimitExceeded { found, .. } => Some(found.to_string()),
            UnsupportedPackageVersion { found, .. } => Some(found.to_string()),
            LayerCountMismatch {
                manifest_layers, ..
            } => Some(manifest_layers.to_string()),
            _ => None,
        }
    }

    /// Wraps an I/O error with the path it concerns. If the I/O error carries one of our
    /// own errors (as verifying readers do), that error is returned unwrapped.
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> Error {
        match Error::unwrap_io(source) {
            Ok(e) => e,
            Err(source) => Error::Io {
                path: path.into(),
                source,
            },
        }
    }

    /// Packs this error into an [`io::Error`] so it can travel through `Read`/`Write`
    /// implementations; [`Error::io`] unpacks it again.
    pub fn into_io(self) -> io::Error {
        let kind = match &self {
            Error::Io { source, .. } => source.kind(),
            // Not `Interrupted`: io::copy and write_all retry that kind forever.
            Error::Cancelled => io::ErrorKind::Other,
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, self)
    }

    /// Returns our error if `e` wraps one, the I/O error otherwise.
    fn unwrap_io(e: io::Error) -> std::result::Result<Error, io::Error> {
        if e.get_ref().is_some_and(|inner| inner.is::<Error>()) {
            // `into_inner` cannot fail here: `get_ref` returned Some.
            match e.into_inner() {
                Some(inner) => match inner.downcast::<Error>() {
                    Ok(ours) => Ok(*ours),
                    Err(other) => Err(io::Error::other(other)),
                },
                None => Err(io::Error::other("unknown I/O error")),
            }
        } else {
            Err(e)
        }
    }
}

/// Adds the path an I/O error concerns.
pub(crate) trait IoContext<T> {
    /// Maps an I/O error to [`Error::Io`] with `path`.
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::result::Result<T, io::Error> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_error_survives_a_trip_through_io_error() {
        let e = Error::DigestMismatch {
            what: "layer 0".into(),
            expected: "sha256:aa".into(),
            found: "sha256:bb".into(),
        };
        let back = Error::io("/x", e.into_io());
        assert!(matches!(back, Error::DigestMismatch { .. }), "{back:?}");
        assert_eq!(back.exit_code(), ExitCode::InvalidInput);
    }

    #[test]
    fn plain_io_error_gets_the_path() {
        let back = Error::io(
            "/some/file",
            io::Error::new(io::ErrorKind::NotFound, "gone"),
        );
        assert_eq!(back.to_string(), "/some/file: gone");
        assert_eq!(back.exit_code(), ExitCode::Error);
    }
}
