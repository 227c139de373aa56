//! Image references in skopeo's syntax.
//!
//! | form | meaning |
//! |---|---|
//! | `docker-archive:PATH` | the only image in a `docker save` tar |
//! | `docker-archive:PATH:name:tag` | the image tagged `name:tag` in it |
//! | `docker-archive:PATH:@N` | the N-th image (zero-based) in it |
//! | `oci:PATH[:ref]` | an OCI image-layout directory, optionally the manifest whose `org.opencontainers.image.ref.name` is `ref` |
//! | `oci-archive:PATH[:ref]` | a tar of an OCI image layout |
//! | `docker-daemon:name:tag`, `docker-daemon:sha256:<id>` | an image in the Docker daemon |
//!
//! **Colons in paths.** As in skopeo, the path ends at the first `:`. Write a colon that belongs
//! to the path as `\:` (and a backslash as `\\`). As a convenience, if the text after the
//! transport names an existing file or directory as a whole, it is taken as the path.
//!
//! **Bare references.** A reference without a transport prefix is accepted too: if it names an
//! existing path, the transport is detected from the content (a directory with `index.json` is
//! `oci`; a tar holding `manifest.json` is `docker-archive`; a tar holding only `index.json` or
//! `oci-layout` is `oci-archive`); otherwise a `name[:tag]` or `sha256:<id>` is a daemon image.

use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::compression::Compression;
use crate::error::{Error, Result};

/// Which image source a reference names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    /// A `docker save` tar archive.
    DockerArchive,
    /// An OCI image-layout directory.
    Oci,
    /// A tar of an OCI image layout.
    OciArchive,
    /// An image in a Docker daemon, through the Engine API.
    DockerDaemon,
    /// An image in a registry, through the OCI Distribution API.
    Docker,
}

impl Transport {
    /// The transport's prefix, as written in references (`docker-archive`, `oci`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Transport::DockerArchive => "docker-archive",
            Transport::Oci => "oci",
            Transport::OciArchive => "oci-archive",
            Transport::DockerDaemon => "docker-daemon",
            Transport::Docker => "docker",
        }
    }

    /// All transports, in the order they are documented.
    pub const ALL: [Transport; 5] = [
        Transport::DockerArchive,
        Transport::Oci,
        Transport::OciArchive,
        Transport::DockerDaemon,
        Transport::Docker,
    ];
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Chooses one image inside a docker-archive holding several.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ArchiveSelector {
    /// The image carrying this `name:tag` in `RepoTags`.
    Name(String),
    /// The image at this zero-based position in `manifest.json`.
    Index(usize),
}

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ImageReference {
    /// `docker-archive:PATH[:name:tag|:@N]`
    DockerArchive {
        /// The archive.
        path: PathBuf,
        /// Which image in it, if several.
        selector: Option<ArchiveSelector>,
    },
    /// `oci:PATH[:ref]`
    Oci {
        /// The layout directory.
        path: PathBuf,
        /// The `org.opencontainers.image.ref.name` to select.
        name: Option<String>,
    },
    /// `oci-archive:PATH[:ref]`
    OciArchive {
        /// The tar file.
        path: PathBuf,
        /// The `org.opencontainers.image.ref.name` to select.
        name: Option<String>,
    },
    /// `docker-daemon:NAME` where NAME is `name:tag`, `name@sha256:..` or `sha256:<id>`.
    DockerDaemon {
        /// The image name or ID.
        name: String,
    },
    /// `docker://[HOST[:PORT]/]NAME[:TAG][@DIGEST]`, with Docker's defaults
    /// (`docker://alpine` is `docker.io/library/alpine:latest`).
    Docker {
        /// The registry (`host[:port]`; `docker.io` for Docker Hub).
        registry: String,
        /// The repository in it (`library/alpine`).
        repository: String,
        /// The tag, if given (`latest` when neither a tag nor a digest is).
        tag: Option<String>,
        /// The manifest digest, if given (it wins over the tag).
        digest: Option<crate::digest::Digest>,
    },
}

impl ImageReference {
    /// Parses a reference. Bare paths are looked at on disk to detect their transport.
    pub fn parse(input: &str) -> Result<ImageReference> {
        let invalid = |reason: &str| Error::InvalidReference {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        if input.is_empty() {
            return Err(invalid("empty reference"));
        }
        if let Some((prefix, rest)) = input.split_once(':') {
            let transport = match prefix {
                "docker-archive" => Some(Transport::DockerArchive),
                "oci" => Some(Transport::Oci),
                "oci-archive" => Some(Transport::OciArchive),
                "docker-daemon" => Some(Transport::DockerDaemon),
                "docker" => {
                    let name = rest.strip_prefix("//").ok_or_else(|| {
                        invalid("a registry reference is docker://[HOST/]NAME[:TAG|@DIGEST]")
                    })?;
                    return parse_docker(input, name);
                }
                "dir" | "containers-storage" | "ostree" | "sif" | "tarball" => {
                    return Err(invalid(&format!(
                        "the {prefix:?} transport is not supported; use one of docker-archive:, oci:, oci-archive:, docker-daemon:"
                    )))
                }
                _ => {
                    // A mistyped transport would otherwise become a daemon image name
                    // (`docker-archiv:app.tar` is a valid name and tag) and fail as
                    // "cannot reach the Docker daemon".
                    if let Some(meant) = near_transport(prefix) {
                        return Err(invalid(&format!(
                            "unknown transport {prefix:?}; did you mean {meant}:?"
                        )));
                    }
                    None
                }
            };
            if transport == Some(Transport::DockerDaemon) {
                if rest.is_empty() {
                    return Err(invalid("docker-daemon: needs an image name or ID"));
                }
                return Ok(ImageReference::DockerDaemon {
                    name: rest.to_string(),
                });
            }
            if let Some(t) = transport {
                return Self::parse_path_transport(t, rest).map_err(|reason| invalid(&reason));
            }
        }
        // No transport prefix: a path on disk, or a daemon image name.
        let path = PathBuf::from(unescape(input));
        if path.exists() {
            return Self::detect_path(&path);
        }
        // `DIR:REF` or `ARCHIVE:NAME:TAG` without a transport: the path exists, the whole
        // does not; say which reference was meant instead of asking the daemon.
        if let Some((head, _)) = input.split_once(':') {
            let head = PathBuf::from(unescape(head));
            if head.exists() {
                if let Ok(found) = Self::detect_path(&head) {
                    return Err(invalid(&format!(
                        "{} exists but {input:?} does not; to pick an image in it write {}:{input}",
                        head.display(),
                        found.transport().name(),
                    )));
                }
            }
        }
        if ARCHIVE_SUFFIXES.iter().any(|x| input.ends_with(x)) {
            return Err(invalid(&format!(
                "no such file or directory (to name an image in the Docker daemon, write docker-daemon:{input})"
            )));
        }
        if looks_like_image_name(input) {
            tracing::debug!(
                reference = input,
                "no such path; taking it as a docker-daemon image name"
            );
            return Ok(ImageReference::DockerDaemon {
                name: input.to_string(),
            });
        }
        Err(invalid(
            "no such file or directory, and not an image name; prefix it with a transport (docker-archive:, oci:, oci-archive:, docker-daemon:)",
        ))
    }

    /// Parses the part after `docker-archive:`, `oci:` or `oci-archive:`.
    fn parse_path_transport(
        transport: Transport,
        rest: &str,
    ) -> std::result::Result<ImageReference, String> {
        let (path, tail) = split_path(rest);
        if path.as_os_str().is_empty() {
            return Err(format!("{transport}: needs a path"));
        }
        Ok(match transport {
            Transport::DockerArchive => {
                let selector = match tail {
                    None => None,
                    Some("") => return Err("empty image selector after the path".into()),
                    Some(t) => Some(if let Some(n) = t.strip_prefix('@') {
                        ArchiveSelector::Index(n.parse().map_err(|_| {
                            format!("invalid image index {t:?}: expected @N with N a number")
                        })?)
                    } else {
                        if t.contains('@') {
                            return Err(format!(
                                "docker-archive selects by name:tag or @N, not by digest ({t:?})"
                            ));
                        }
                        ArchiveSelector::Name(t.to_string())
                    }),
                };
                ImageReference::DockerArchive { path, selector }
            }
            Transport::Docker => return Err("docker: is written docker://[HOST/]NAME".into()),
            Transport::Oci | Transport::OciArchive | Transport::DockerDaemon => {
                let name = match tail {
                    None => None,
                    Some("") => return Err("empty ref name after the path".into()),
                    Some(t) => {
                        check_ref_name(t)?;
                        Some(t.to_string())
                    }
                };
                if transport == Transport::Oci {
                    ImageReference::Oci { path, name }
                } else {
                    ImageReference::OciArchive { path, name }
                }
            }
        })
    }

    /// Detects the transport of an existing path from its content.
    pub fn detect_path(path: &Path) -> Result<ImageReference> {
        if path.is_dir() {
            if path.join("index.json").is_file() {
                tracing::debug!(path = %path.display(), "directory with index.json: oci layout");
                return Ok(ImageReference::Oci {
                    path: path.to_path_buf(),
                    name: None,
                });
            }
            return Err(Error::InvalidLayout {
                path: path.to_path_buf(),
                reason: "directory has no index.json, so it is not an OCI image layout".into(),
            });
        }
        let kind = sniff_archive(path)?;
        tracing::debug!(path = %path.display(), transport = %kind, "detected transport from archive content");
        Ok(match kind {
            Transport::DockerArchive => ImageReference::DockerArchive {
                path: path.to_path_buf(),
                selector: None,
            },
            _ => ImageReference::OciArchive {
                path: path.to_path_buf(),
                name: None,
            },
        })
    }

    /// The transport this reference uses.
    pub fn transport(&self) -> Transport {
        match self {
            ImageReference::DockerArchive { .. } => Transport::DockerArchive,
            ImageReference::Oci { .. } => Transport::Oci,
            ImageReference::OciArchive { .. } => Transport::OciArchive,
            ImageReference::DockerDaemon { .. } => Transport::DockerDaemon,
            ImageReference::Docker { .. } => Transport::Docker,
        }
    }

    /// The file or directory this reference names, if any.
    pub fn path(&self) -> Option<&Path> {
        match self {
            ImageReference::DockerArchive { path, .. }
            | ImageReference::Oci { path, .. }
            | ImageReference::OciArchive { path, .. } => Some(path),
            ImageReference::DockerDaemon { .. } | ImageReference::Docker { .. } => None,
        }
    }
}

impl FromStr for ImageReference {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        ImageReference::parse(s)
    }
}

impl fmt::Display for ImageReference {
    /// Prints the canonical form, which [`ImageReference::parse`] reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageReference::DockerArchive { path, selector } => {
                write!(f, "docker-archive:{}", escape(path))?;
                match selector {
                    Some(ArchiveSelector::Name(n)) => write!(f, ":{n}"),
                    Some(ArchiveSelector::Index(i)) => write!(f, ":@{i}"),
                    None => Ok(()),
                }
            }
            ImageReference::Oci { path, name } | ImageReference::OciArchive { path, name } => {
                write!(f, "{}:{}", self.transport(), escape(path))?;
                match name {
                    Some(n) => write!(f, ":{n}"),
                    None => Ok(()),
                }
            }
            ImageReference::DockerDaemon { name } => write!(f, "docker-daemon:{name}"),
            ImageReference::Docker {
                registry,
                repository,
                tag,
                digest,
            } => {
                write!(f, "docker://{registry}/{repository}")?;
                if let Some(t) = tag {
                    write!(f, ":{t}")?;
                }
                if let Some(d) = digest {
                    write!(f, "@{d}")?;
                }
                Ok(())
            }
        }
    }
}

/// Parses the part after `docker://` with Docker's defaults: a first component with a
/// `.` or `:`, or `localhost`, names the registry, else Docker Hub (`docker.io`, where a
/// one-component name is in `library/`). Names and tags are checked as Docker checks them.
fn parse_docker(input: &str, name: &str) -> Result<ImageReference> {
    let invalid = |reason: String| Error::InvalidReference {
        input: input.to_string(),
        reason,
    };
    let (name, digest) = match name.split_once('@') {
        Some((n, d)) => (
            n,
            Some(
                crate::digest::Digest::parse(d)
                    .map_err(|e| invalid(format!("bad digest after @: {e}")))?,
            ),
        ),
        None => (name, None),
    };
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    let (repo, tag) = match name[last_slash..].rfind(':') {
        Some(i) => (&name[..last_slash + i], Some(&name[last_slash + i + 1..])),
        None => (name, None),
    };
    // Validated as Docker validates a name and tag.
    crate::daemon::ImageName::new(repo, tag.unwrap_or("latest"))?;
    let (registry, repository) = match repo.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first.to_string(), rest.to_string())
        }
        _ => ("docker.io".to_string(), repo.to_string()),
    };
    let registry = match registry.as_str() {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        _ => registry,
    };
    let repository = if registry == "docker.io" && !repository.contains('/') {
        format!("library/{repository}")
    } else {
        repository
    };
    if repository.is_empty() {
        return Err(invalid("no repository after the registry".into()));
    }
    Ok(ImageReference::Docker {
        registry,
        repository,
        tag: match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some("latest".to_string()),
        },
        digest,
    })
}

/// Splits `PATH[:rest]` at the first unescaped colon, unescaping the path.
fn split_path(rest: &str) -> (PathBuf, Option<&str>) {
    let bytes = rest.as_bytes();
    let mut i = 0;
    let mut escaped_any = false;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if i + 1 < bytes.len() => {
                escaped_any = true;
                i += 2;
            }
            b':' => {
                // Convenience: an existing path that contains colons, written without escapes.
                if !escaped_any && Path::new(rest).exists() {
                    return (PathBuf::from(rest), None);
                }
                return (PathBuf::from(unescape(&rest[..i])), Some(&rest[i + 1..]));
            }
            _ => i += 1,
        }
    }
    (PathBuf::from(unescape(rest)), None)
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(n @ (':' | '\\')) => out.push(n),
                Some(n) => {
                    out.push('\\');
                    out.push(n);
                }
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn escape(path: &Path) -> String {
    let s = path.to_string_lossy();
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == ':' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Whether `s` could be a Docker image name, `name:tag`, `name@digest` or `sha256:<id>`.
/// File names that say a reference was meant as a file, not a daemon image name.
const ARCHIVE_SUFFIXES: [&str; 7] = [
    ".tar", ".tar.gz", ".tgz", ".tar.zst", ".tar.xz", ".ddelta", ".oci",
];

/// The transport `prefix` is a near miss of, if any: the same name in other case (image
/// names are lowercase, so `OCI:` names no image), or a long transport name mistyped by
/// up to two letters (short ones would catch real image names such as `ocs:1`).
fn near_transport(prefix: &str) -> Option<&'static str> {
    const NAMES: [&str; 4] = ["docker-archive", "oci-archive", "docker-daemon", "oci"];
    let lower = prefix.to_ascii_lowercase();
    NAMES.into_iter().find(|&n| {
        lower == n || (n.len() >= 6 && prefix.len() >= 6 && edit_distance(&lower, n) <= 2)
    })
}

/// Levenshtein distance between two ASCII strings.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, &x) in a.iter().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, &y) in b.iter().enumerate() {
            let next = (diag + usize::from(x != y))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diag = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

fn looks_like_image_name(s: &str) -> bool {
    if let Some(hex) = s.strip_prefix("sha256:") {
        return hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit());
    }
    let name = s.split('@').next().unwrap_or(s);
    !name.is_empty()
        && !name.starts_with(['/', '.', '-', ':'])
        && !name.ends_with(['/', ':'])
        && name.bytes().all(|b| {
            b.is_ascii_lowercase()
                || b.is_ascii_digit()
                || b"._-/:".contains(&b)
                || b.is_ascii_uppercase()
        })
}

/// Looks inside a (possibly compressed) tar to tell docker-archive from oci-archive.
fn sniff_archive(path: &Path) -> Result<Transport> {
    let file = crate::fs_safe::open_input(path, "an archive file")?;
    let mut buf = BufReader::new(file);
    let magic = buf.fill_buf().map_err(|e| Error::io(path, e))?;
    let compression = Compression::detect(magic);
    let reader: Box<dyn Read> = compression
        .decoder(Box::new(buf))
        .map_err(|e| Error::io(path, e))?;
    let mut saw_oci = false;
    let mut saw_repositories = false;
    for member in crate::tar_headers::TarHeaders::new(reader) {
        let member = member.map_err(|e| e.into_error(path))?;
        let name = String::from_utf8_lossy(&member.path);
        match name.trim_start_matches("./") {
            "manifest.json" => return Ok(Transport::DockerArchive),
            "index.json" | "oci-layout" => saw_oci = true,
            "repositories" => saw_repositories = true,
            _ => {}
        }
    }
    if saw_oci {
        Ok(Transport::OciArchive)
    } else if saw_repositories {
        // The docker-archive reader explains that such archives are unsupported.
        Ok(Transport::DockerArchive)
    } else {
        Err(Error::InvalidLayout {
            path: path.to_path_buf(),
            reason: "tar archive holds neither manifest.json (docker-archive) nor index.json/oci-layout (oci-archive)".into(),
        })
    }
}

/// Checks an OCI layout ref name (`org.opencontainers.image.ref.name`) against the image
/// spec's grammar, as skopeo does: components of letters and digits joined by one of
/// `-._:@+` or `--`, separated by `/`.
fn check_ref_name(name: &str) -> std::result::Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "invalid ref name {name:?}: {why} (the OCI image spec allows letters and digits \
             joined by one of -._:@+ or --, in components separated by /)"
        ))
    };
    for component in name.split('/') {
        let bytes = component.as_bytes();
        if bytes.is_empty() {
            return bad("empty component");
        }
        let mut i = 0;
        let mut last_alnum = false;
        while i < bytes.len() {
            let c = bytes[i];
            if c.is_ascii_alphanumeric() {
                last_alnum = true;
                i += 1;
                continue;
            }
            if !last_alnum {
                return bad("a separator must follow a letter or digit");
            }
            match c {
                b'-' if bytes.get(i + 1) == Some(&b'-') => i += 2,
                b'-' | b'.' | b'_' | b':' | b'@' | b'+' => i += 1,
                _ => {
                    let ch = component[i..].chars().next().unwrap_or('?');
                    return bad(&format!("{ch:?} is not allowed"));
                }
            }
            last_alnum = false;
        }
        if !last_alnum {
            return bad("it must end in a letter or digit");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> ImageReference {
        ImageReference::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn skopeo_forms() {
        assert_eq!(
            p("docker-archive:/tmp/x.tar"),
            ImageReference::DockerArchive {
                path: "/tmp/x.tar".into(),
                selector: None
            }
        );
        assert_eq!(
            p("docker-archive:/tmp/x.tar:busybox:latest"),
            ImageReference::DockerArchive {
                path: "/tmp/x.tar".into(),
                selector: Some(ArchiveSelector::Name("busybox:latest".into()))
            }
        );
        assert_eq!(
            p("docker-archive:x.tar:@2"),
            ImageReference::DockerArchive {
                path: "x.tar".into(),
                selector: Some(ArchiveSelector::Index(2))
            }
        );
        assert_eq!(
            p("oci:/l:v1"),
            ImageReference::Oci {
                path: "/l".into(),
                name: Some("v1".into())
            }
        );
        assert_eq!(
            p("oci-archive:/a.tar"),
            ImageReference::OciArchive {
                path: "/a.tar".into(),
                name: None
            }
        );
        assert_eq!(
            p("docker-daemon:alpine:3"),
            ImageReference::DockerDaemon {
                name: "alpine:3".into()
            }
        );
        assert_eq!(
            p("nonexistent-image:1.0"),
            ImageReference::DockerDaemon {
                name: "nonexistent-image:1.0".into()
            }
        );
    }

    #[test]
    fn escaped_colons_round_trip() {
        let r = p(r"oci:/data/a\:b:tag");
        assert_eq!(
            r,
            ImageReference::Oci {
                path: "/data/a:b".into(),
                name: Some("tag".into())
            }
        );
        assert_eq!(r.to_string(), r"oci:/data/a\:b:tag");
        assert_eq!(p(&r.to_string()), r);
    }

    #[test]
    fn ref_names_follow_the_image_spec() {
        for ok in [
            "latest",
            "v1.0",
            "a--b",
            "x/y:1.0+build",
            "my_ref@1",
            "A9",
            "1",
        ] {
            assert_eq!(check_ref_name(ok), Ok(()), "{ok}");
        }
        for bad in ["", "a b", "a---b", "_a", "a_", "a//b", "/a", "é", "a\nb"] {
            assert!(check_ref_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn errors_say_why() {
        let cases = [
            ("", "empty reference"),
            ("docker:alpine", "docker://[HOST/]NAME"),
            ("docker://Alpine", "lowercase"),
            ("docker://alpine@sha256:00", "digest"),
            ("docker-archive:", "needs a path"),
            ("docker-archive:x.tar:@one", "invalid image index"),
            ("docker-archive:x.tar:a@sha256:00", "not by digest"),
            ("oci:/x:", "empty ref name"),
            ("oci:/x:bad name", "' ' is not allowed"),
            ("oci-archive:/x.tar:-a", "must follow a letter"),
            ("oci:/x:a/", "empty component"),
            ("oci:/x:a.", "must end in a letter"),
            ("docker-daemon:", "needs an image name"),
            ("/no/such/file.tar", "no such file"),
            ("nope.tar", "write docker-daemon:nope.tar"),
            ("docker-archiv:app.tar", "did you mean docker-archive:?"),
            ("OCI:layout", "did you mean oci:?"),
            ("oci-archiv:x.tar", "did you mean oci-archive:?"),
            ("dokcer-daemon:app:1", "did you mean docker-daemon:?"),
        ];
        for (input, want) in cases {
            let e = ImageReference::parse(input).expect_err(input);
            assert!(
                matches!(e, Error::InvalidReference { .. }),
                "{input}: {e:?}"
            );
            assert!(e.to_string().contains(want), "{input}: {e}");
        }
        // Short names close to a transport are image names all the same.
        for name in ["ocs:1", "oca:latest", "docker-arch:1"] {
            assert!(
                matches!(p(name), ImageReference::DockerDaemon { .. }),
                "{name}"
            );
        }
    }

    /// `LAYOUT:REF` and `ARCHIVE:NAME:TAG` without a transport name the reference meant.
    #[test]
    fn an_existing_path_before_a_colon_gets_its_transport_suggested() {
        let dir = tempfile::tempdir().unwrap();
        let layout = dir.path().join("layout");
        std::fs::create_dir(&layout).unwrap();
        std::fs::write(
            layout.join("index.json"),
            br#"{"schemaVersion":2,"manifests":[]}"#,
        )
        .unwrap();
        std::fs::write(
            layout.join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .unwrap();
        let input = format!("{}:v1", layout.display());
        let e = ImageReference::parse(&input).unwrap_err();
        assert!(e.to_string().contains(&format!("write oci:{input}")), "{e}");
        // A directory that holds no image is no reason to suggest one (relative, such a
        // name goes to the daemon: a project directory named like its image).
        let plain = dir.path().join("myapp");
        std::fs::create_dir(&plain).unwrap();
        let e = ImageReference::parse(&format!("{}:1", plain.display())).unwrap_err();
        assert!(!e.to_string().contains("to pick an image"), "{e}");
    }
}
