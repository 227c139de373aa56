//! What this build reads, writes and carries: package format versions and the versions of
//! the codec libraries linked in, which decide whether a host can apply a package.

use std::collections::BTreeMap;
use std::ffi::CStr;
use std::os::raw::c_char;

use crate::delta::format::FORMAT_VERSION;

/// The package format versions a build reads and writes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PackageFormat {
    /// Every version read, oldest first.
    pub reads: Vec<u32>,
    /// The version written.
    pub writes: u32,
}

/// Facts about this build, as `docker-delta --version --json` prints them (see
/// `docs/schema/version.schema.json`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BuildInfo {
    /// The version of this document's layout (1).
    pub schema_version: u32,
    /// The document's name: `version`.
    pub document: &'static str,
    /// The library's version.
    pub version: String,
    /// The package format versions read and written.
    pub package_format: PackageFormat,
    /// Each codec and the version of its implementation, asked of the linked library at
    /// run time where it tells: `zstd` (libzstd), `xz` (liblzma), `zlib` (the zlib that
    /// re-deflates gzip layers); `vcdiff` (the `xdelta3` method) and `bsdiff` (the
    /// `files` method's binary diff) are this crate's own code.
    pub codecs: BTreeMap<String, String>,
}

/// The version of [`BuildInfo`]'s layout: the JSON vocabulary's.
pub const BUILD_INFO_SCHEMA_VERSION: u32 = crate::report::SCHEMA_VERSION;

/// This build's facts: see [`BuildInfo`].
pub fn build_info() -> BuildInfo {
    let own = format!("docker-delta {}", crate::VERSION);
    let codecs = [
        ("zstd", zstd::zstd_safe::version_string().to_string()),
        // SAFETY: lzma_version_string takes nothing and returns a static NUL-terminated
        // string.
        (
            "xz",
            c_string(unsafe { liblzma_sys::lzma_version_string() }),
        ),
        // SAFETY: zlibVersion takes nothing and returns a static NUL-terminated string.
        ("zlib", c_string(unsafe { libz_sys::zlibVersion() })),
        ("vcdiff", format!("{own} (xdelta3-compatible)")),
        ("bsdiff", own),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    BuildInfo {
        schema_version: BUILD_INFO_SCHEMA_VERSION,
        document: "version",
        version: crate::VERSION.to_string(),
        package_format: PackageFormat {
            reads: (1..=FORMAT_VERSION).collect(),
            writes: FORMAT_VERSION,
        },
        codecs,
    }
}

/// A static C string as text ("unknown" for a null pointer).
fn c_string(p: *const c_char) -> String {
    if p.is_null() {
        return "unknown".into();
    }
    // SAFETY: the callers pass a library's static, NUL-terminated version string.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

impl std::fmt::Display for BuildInfo {
    /// The lines `docker-delta --version` prints after its first.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let reads = &self.package_format.reads;
        match (reads.first(), reads.last()) {
            (Some(a), Some(b)) if a != b => write!(f, "package format: reads {a} to {b}")?,
            (Some(a), _) => write!(f, "package format: reads {a}")?,
            _ => write!(f, "package format: reads none")?,
        }
        writeln!(f, ", writes {}", self.package_format.writes)?;
        write!(f, "codecs:")?;
        for (name, version) in &self.codecs {
            write!(f, "\n  {name:<7} {version}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_come_from_the_linked_libraries() {
        let b = build_info();
        assert_eq!(b.package_format.writes, FORMAT_VERSION);
        assert_eq!(b.package_format.reads.last(), Some(&FORMAT_VERSION));
        // Real version strings, as each library reports itself: digits and dots.
        for name in ["zstd", "xz", "zlib"] {
            let v = &b.codecs[name];
            assert!(
                v.split('.').count() >= 3 && v.starts_with(|c: char| c.is_ascii_digit()),
                "{name}: {v}"
            );
        }
        // The bundled xz is 5.8 (see Cargo.toml), not the system's.
        assert!(b.codecs["xz"].starts_with("5.8"), "{}", b.codecs["xz"]);
    }
}
