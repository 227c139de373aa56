//! Platforms (`os/arch[/variant]`), as used to choose an image from a multi-platform index.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// An image platform.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Platform {
    /// Operating system, e.g. `linux`.
    pub os: String,
    /// CPU architecture in Go's naming, e.g. `amd64`, `arm64`.
    pub architecture: String,
    /// Architecture variant, e.g. `v7` for `arm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// Parses `os/arch[/variant]`.
    pub fn parse(s: &str) -> Result<Platform> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok = |p: &str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
        };
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: None,
            }),
            [os, arch, v] if ok(os) && ok(arch) && ok(v) => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: Some(v.to_string()),
            }),
            _ => Err(Error::InvalidPlatform {
                input: s.to_string(),
            }),
        }
    }

    /// The platform this program runs on, in Go's (and the OCI image spec's) naming: the
    /// compiler's architecture and byte order, mapped by [`oci_architecture`].
    pub fn host() -> Platform {
        let endian = if cfg!(target_endian = "big") {
            Endian::Big
        } else {
            Endian::Little
        };
        let arm_version = if cfg!(target_feature = "v7") {
            Some(7)
        } else if cfg!(target_feature = "v6") {
            Some(6)
        } else {
            None
        };
        let (architecture, variant) = oci_architecture(std::env::consts::ARCH, endian, arm_version);
        Platform {
            os: std::env::consts::OS.to_string(),
            architecture,
            variant,
        }
    }

    /// Whether an image of platform `candidate` satisfies this wanted platform. A wanted
    /// platform without variant accepts any variant; `arm64` accepts `v8` or none.
    pub fn matches(&self, candidate: &Platform) -> bool {
        if self.os != candidate.os || self.architecture != candidate.architecture {
            return false;
        }
        match (&self.variant, &candidate.variant) {
            (None, _) => true,
            (Some(w), Some(c)) => w == c,
            (Some(w), None) => self.architecture == "arm64" && w == "v8",
        }
    }
}

/// A CPU's byte order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endian {
    /// Least significant byte first (x86, most ARM, ppc64le, riscv).
    Little,
    /// Most significant byte first (s390x, ppc64, mips).
    Big,
}

/// The OCI architecture (Go's `GOARCH`) and variant of a CPU, from Rust's architecture name
/// (`std::env::consts::ARCH`), its byte order and, for 32-bit ARM, its architecture version.
///
/// Rust names an architecture without its byte order (`powerpc64` is both `ppc64` and
/// `ppc64le`; `mips64` both `mips64` and `mips64le`), so the order decides. 32-bit ARM gets
/// the variant `v7`, `v6` or `v5` from its version (Rust's `arm` targets without `v6`
/// or `v7` are ARMv5); arm64 gets none, which [`Platform::matches`] reads as any.
pub fn oci_architecture(
    arch: &str,
    endian: Endian,
    arm_version: Option<u8>,
) -> (String, Option<String>) {
    use Endian::{Big, Little};
    let name = match (arch, endian) {
        ("x86_64", _) => "amd64",
        ("x86", _) => "386",
        ("aarch64", Little) => "arm64",
        ("aarch64", Big) => "arm64be",
        ("arm", Little) => {
            let v = arm_version.map_or(5, |v| v.min(7));
            return ("arm".into(), Some(format!("v{v}")));
        }
        ("arm", Big) => "armbe",
        ("powerpc64", Little) => "ppc64le",
        ("powerpc64", Big) => "ppc64",
        ("powerpc", _) => "ppc",
        ("mips", Little) => "mipsle",
        ("mips", Big) => "mips",
        ("mips64", Little) => "mips64le",
        ("mips64", Big) => "mips64",
        ("loongarch64", _) => "loong64",
        ("wasm32", _) => "wasm",
        // riscv64, s390x, sparc64: the same name in both.
        (other, _) => other,
    };
    (name.to_string(), None)
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl FromStr for Platform {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Platform::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn architecture_and_byte_order_give_the_oci_platform() {
        use Endian::{Big, Little};
        // (Rust's name, byte order, ARM version) -> (architecture, variant)
        type Case<'a> = (&'a str, Endian, Option<u8>, &'a str, Option<&'a str>);
        let cases: &[Case] = &[
            ("x86_64", Little, None, "amd64", None),
            ("x86", Little, None, "386", None),
            ("aarch64", Little, None, "arm64", None),
            ("arm", Little, Some(7), "arm", Some("v7")),
            ("arm", Little, Some(6), "arm", Some("v6")),
            ("arm", Little, None, "arm", Some("v5")),
            ("powerpc64", Little, None, "ppc64le", None),
            ("powerpc64", Big, None, "ppc64", None),
            ("s390x", Big, None, "s390x", None),
            ("riscv64", Little, None, "riscv64", None),
            ("mips64", Little, None, "mips64le", None),
            ("mips64", Big, None, "mips64", None),
            ("mips", Little, None, "mipsle", None),
            ("loongarch64", Little, None, "loong64", None),
        ];
        for &(arch, endian, v, want, variant) in cases {
            let got = oci_architecture(arch, endian, v);
            assert_eq!(
                (got.0.as_str(), got.1.as_deref()),
                (want, variant),
                "{arch} {endian:?} {v:?}"
            );
        }
        // This host: a name the image spec knows, never Rust's own.
        let host = Platform::host();
        assert!(
            !["x86_64", "aarch64", "powerpc64", "x86"].contains(&host.architecture.as_str()),
            "{host}"
        );
    }

    #[test]
    fn parse_print_match() {
        let p = Platform::parse("linux/arm/v7").unwrap();
        assert_eq!(p.to_string(), "linux/arm/v7");
        assert!(Platform::parse("linux/arm").unwrap().matches(&p));
        assert!(!Platform::parse("linux/arm/v6").unwrap().matches(&p));
        assert!(!Platform::parse("linux/amd64").unwrap().matches(&p));
        for bad in ["linux", "linux/", "/amd64", "a/b/c/d", "linux amd64"] {
            assert!(
                matches!(Platform::parse(bad), Err(Error::InvalidPlatform { .. })),
                "{bad}"
            );
        }
    }
}
