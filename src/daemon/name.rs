//! Docker image names `[registry[:port]/]path[:tag]`, as `docker tag` accepts them.
//!
//! The grammar follows `github.com/distribution/reference`: path components are lowercase
//! alphanumerics separated by `.`, `_`, `__` or runs of `-`; the first component is a
//! registry host when it contains `.` or `:` or is `localhost`; the tag is
//! `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}` and defaults to `latest`.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// Longest repository name Docker accepts.
const MAX_NAME_LEN: usize = 255;
/// Longest tag Docker accepts.
const MAX_TAG_LEN: usize = 128;

/// A validated, normalised `repository:tag` name, as used for tagging.
///
/// The repository is kept as written (no `docker.io/library/` expansion): the daemon
/// normalises it the same way the `docker` command does.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageName {
    repo: String,
    tag: String,
}

impl ImageName {
    /// Parses `name[:tag]`; the tag defaults to `latest`.
    ///
    /// The tag is the part after the last `:` that follows the last `/`, so registry ports
    /// are handled: `localhost:5000/a/b` has tag `latest`, `localhost:5000/a/b:t` has tag `t`.
    /// Digests (`@sha256:...`) are rejected: a tag target cannot carry one.
    pub fn parse(input: &str) -> Result<ImageName> {
        let err = |reason: &str| Error::InvalidReference {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        if input.is_empty() {
            return Err(err("the name is empty"));
        }
        if input.contains('@') {
            return Err(err(
                "a digest (@sha256:...) cannot be used here; give name:tag",
            ));
        }
        let last_slash = input.rfind('/').map_or(0, |i| i + 1);
        let (repo, tag) = match input[last_slash..].rfind(':') {
            Some(i) => {
                let at = last_slash + i;
                (&input[..at], &input[at + 1..])
            }
            None => (input, "latest"),
        };
        Self::from_parts_for(input, repo, tag)
    }

    /// Builds a name from a repository and a tag, validating both. An empty tag means
    /// `latest`.
    pub fn new(repo: &str, tag: &str) -> Result<ImageName> {
        let tag = if tag.is_empty() { "latest" } else { tag };
        Self::from_parts_for(&format!("{repo}:{tag}"), repo, tag)
    }

    fn from_parts_for(input: &str, repo: &str, tag: &str) -> Result<ImageName> {
        let err = |reason: String| Error::InvalidReference {
            input: input.to_string(),
            reason,
        };
        validate_tag(tag).map_err(err)?;
        validate_repo(repo).map_err(err)?;
        Ok(ImageName {
            repo: repo.to_string(),
            tag: tag.to_string(),
        })
    }

    /// The repository, e.g. `localhost:5000/a/b` or `ubuntu`.
    pub fn repo(&self) -> &str {
        &self.repo
    }

    /// The tag, e.g. `latest`.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// The fully qualified name containerd uses: `docker.io/library/x:t` for `x:t`,
    /// `docker.io/org/x:t` for `org/x:t`, unchanged when a registry is named.
    pub fn qualified(&self) -> String {
        if self.domain().is_some() {
            self.to_string()
        } else if self.repo.contains('/') {
            format!("docker.io/{}:{}", self.repo, self.tag)
        } else {
            format!("docker.io/library/{}:{}", self.repo, self.tag)
        }
    }

    /// The registry host (with port) if the name has one, e.g. `localhost:5000`.
    pub fn domain(&self) -> Option<&str> {
        let (first, _) = self.repo.split_once('/')?;
        is_domain(first).then_some(first)
    }
}

impl fmt::Display for ImageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.repo, self.tag)
    }
}

impl FromStr for ImageName {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        ImageName::parse(s)
    }
}

/// Whether the first component of a name is a registry host.
fn is_domain(first: &str) -> bool {
    first.contains('.') || first.contains(':') || first == "localhost"
}

fn validate_tag(tag: &str) -> std::result::Result<(), String> {
    if tag.is_empty() {
        return Err("the tag after ':' is empty".into());
    }
    if tag.len() > MAX_TAG_LEN {
        return Err(format!(
            "the tag is {} characters long; at most {MAX_TAG_LEN} are allowed",
            tag.len()
        ));
    }
    let mut bytes = tag.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !first_ok {
        return Err(format!(
            "the tag {tag:?} must start with a letter, digit or '_'"
        ));
    }
    if let Some(bad) = tag
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(format!(
            "the tag {tag:?} contains {bad:?}; allowed are letters, digits, '_', '.', '-'"
        ));
    }
    Ok(())
}

fn validate_repo(repo: &str) -> std::result::Result<(), String> {
    if repo.is_empty() {
        return Err("the repository name is empty".into());
    }
    if repo.len() > MAX_NAME_LEN {
        return Err(format!(
            "the repository name is {} characters long; at most {MAX_NAME_LEN} are allowed",
            repo.len()
        ));
    }
    let mut components: Vec<&str> = repo.split('/').collect();
    if components.len() > 1 && is_domain(components[0]) {
        validate_domain(components[0])?;
        components.remove(0);
    }
    for c in &components {
        validate_path_component(c)?;
    }
    if components.len() == 1
        && components[0].len() == 64
        && components[0].bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(
            "a repository name cannot be a 64-character hexadecimal string (it would look like an image ID)"
                .into(),
        );
    }
    Ok(())
}

fn validate_domain(domain: &str) -> std::result::Result<(), String> {
    let (host, port) = if domain.starts_with('[') {
        // `[ipv6]` or `[ipv6]:port`.
        match domain.find(']') {
            Some(end) => match &domain[end + 1..] {
                "" => (&domain[..=end], None),
                rest => match rest.strip_prefix(':') {
                    Some(p) => (&domain[..=end], Some(p)),
                    None => return Err(format!("invalid registry address {domain:?}")),
                },
            },
            None => return Err(format!("invalid registry address {domain:?}")),
        }
    } else {
        match domain.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (domain, None),
        }
    };
    if let Some(port) = port {
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("invalid registry port {port:?} in {domain:?}"));
        }
    }
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        // IPv6 literal.
        if inner.is_empty() || !inner.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return Err(format!("invalid IPv6 registry address {host:?}"));
        }
        return Ok(());
    }
    for label in host.split('.') {
        let ok = !label.is_empty()
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!("invalid registry host {host:?}"));
        }
    }
    Ok(())
}

fn validate_path_component(c: &str) -> std::result::Result<(), String> {
    if c.is_empty() {
        return Err(
            "the repository name has an empty path component ('//' or a leading or trailing '/')"
                .into(),
        );
    }
    if let Some(upper) = c.chars().find(|ch| ch.is_ascii_uppercase()) {
        return Err(format!(
            "repository names must be lowercase (found {upper:?} in {c:?})"
        ));
    }
    let bytes = c.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return Err(format!(
            "the path component {c:?} must start and end with a lowercase letter or digit"
        ));
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if alnum(b) {
            i += 1;
            continue;
        }
        // A separator: '.', '_', '__', or one or more '-'.
        let start = i;
        match b {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if bytes.get(i) == Some(&b'_') {
                    i += 1;
                }
            }
            b'-' => {
                while bytes.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            _ => {
                return Err(format!(
                    "the path component {c:?} contains {:?}; allowed are lowercase letters, digits and the separators '.', '_', '__', '-'",
                    char::from(b)
                ))
            }
        }
        if bytes.get(i).is_none_or(|&n| !alnum(n)) {
            return Err(format!(
                "the path component {c:?} has an invalid separator {:?}",
                &c[start..(i + 1).min(c.len())]
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn split(s: &str) -> (String, String) {
        let n = ImageName::parse(s).unwrap();
        (n.repo().to_string(), n.tag().to_string())
    }

    #[test]
    fn splits_repo_and_tag() {
        let cases = [
            ("ubuntu", "ubuntu", "latest"),
            ("ubuntu:22.04", "ubuntu", "22.04"),
            ("library/ubuntu:x", "library/ubuntu", "x"),
            ("localhost:5000/a/b:t", "localhost:5000/a/b", "t"),
            ("localhost:5000/a/b", "localhost:5000/a/b", "latest"),
            ("localhost/a", "localhost/a", "latest"),
            (
                "registry.example.com/team/app:v1.2_3-rc",
                "registry.example.com/team/app",
                "v1.2_3-rc",
            ),
            (
                "docker.io/library/alpine:3",
                "docker.io/library/alpine",
                "3",
            ),
            ("My-Registry.io:443/x", "My-Registry.io:443/x", "latest"),
            ("[::1]:5000/img:tag", "[::1]:5000/img", "tag"),
            ("a__b.c-d---e:_T", "a__b.c-d---e", "_T"),
        ];
        for (input, repo, tag) in cases {
            assert_eq!(split(input), (repo.to_string(), tag.to_string()), "{input}");
        }
        assert_eq!(
            ImageName::parse("localhost:5000/a/b").unwrap().to_string(),
            "localhost:5000/a/b:latest"
        );
        assert_eq!(
            ImageName::parse("localhost:5000/a/b").unwrap().domain(),
            Some("localhost:5000")
        );
        assert_eq!(ImageName::parse("a/b").unwrap().domain(), None);
    }

    #[test]
    fn rejects_invalid_names() {
        let cases = [
            ("", "empty"),
            ("Ubuntu", "lowercase"),
            ("team/App:v1", "lowercase"),
            ("ubuntu:", "tag after ':' is empty"),
            ("ubuntu:-x", "must start with"),
            ("ubuntu:a/b", "invalid registry port"), // ':' before the last '/' makes a domain
            ("ubu ntu", "contains ' '"),
            ("a//b", "empty path component"),
            ("/a", "empty path component"),
            ("a/", "empty path component"),
            ("a..b", "invalid separator"),
            ("a___b", "invalid separator"),
            ("-a", "start and end"),
            ("a-", "start and end"),
            ("ubuntu@sha256:abc", "digest"),
            ("ubuntu:t!", "contains '!'"),
            ("host:port/x", "invalid registry port"),
            ("bad_host.com/x", "invalid registry host"),
        ];
        for (input, want) in cases {
            let e = ImageName::parse(input).unwrap_err();
            let msg = e.to_string();
            assert!(
                matches!(e, Error::InvalidReference { .. }),
                "{input}: {e:?}"
            );
            assert!(msg.contains(want), "{input:?}: {msg}");
        }
        let long_tag = format!("a:{}", "t".repeat(129));
        assert!(ImageName::parse(&long_tag).is_err());
        assert!(ImageName::parse(&format!("a:{}", "t".repeat(128))).is_ok());
        let long_name = "a".repeat(256);
        assert!(ImageName::parse(&long_name).is_err());
        let hex = "0123456789abcdef".repeat(4);
        assert!(ImageName::parse(&hex)
            .unwrap_err()
            .to_string()
            .contains("image ID"));
    }

    #[test]
    fn new_validates_parts() {
        let n = ImageName::new("localhost:5000/a", "").unwrap();
        assert_eq!(n.to_string(), "localhost:5000/a:latest");
        assert!(ImageName::new("A", "x").is_err());
        assert!(ImageName::new("a", "x y").is_err());
    }
}
