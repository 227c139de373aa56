//! Request targets: path and query, percent-encoded.

/// Percent-encodes `s` for a query parameter name or value: everything but the RFC 3986
/// unreserved characters is encoded.
pub(crate) fn encode_query_component(s: &str) -> String {
    encode(s, |b| {
        b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
    })
}

/// Percent-encodes `s` for use inside a path, keeping `/`, `:` and `@` (which image
/// references contain and the daemon's router expects literally).
pub(crate) fn encode_path(s: &str) -> String {
    encode(s, |b| {
        b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/' | b':' | b'@')
    })
}

fn encode(s: &str, keep: impl Fn(u8) -> bool) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if keep(b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Builds `path?k=v&...` with every name and value percent-encoded.
pub(crate) fn with_query(path: &str, query: &[(&str, &str)]) -> String {
    let mut out = path.to_string();
    for (i, (k, v)) in query.iter().enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        out.push_str(&encode_query_component(k));
        out.push('=');
        out.push_str(&encode_query_component(v));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoding() {
        assert_eq!(
            with_query(
                "/images/x/tag",
                &[("repo", "localhost:5000/a/b"), ("tag", "v1.0")]
            ),
            "/images/x/tag?repo=localhost%3A5000%2Fa%2Fb&tag=v1.0"
        );
        assert_eq!(
            encode_query_component("a b&c=d+é"),
            "a%20b%26c%3Dd%2B%C3%A9"
        );
        assert_eq!(
            encode_path("localhost:5000/a/b:t@sha256:ab cd?#"),
            "localhost:5000/a/b:t@sha256:ab%20cd%3F%23"
        );
    }
}
