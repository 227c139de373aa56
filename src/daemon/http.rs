//! A minimal blocking HTTP/1.1 client side: request writing with streamed bodies, response
//! head parsing and body decoding (`Content-Length`, `chunked`, read-to-EOF).
//!
//! Only what the Docker Engine API needs. One request per connection: every request is
//! sent with `Connection: close`, so there is no keep-alive bookkeeping.

use std::io::{self, BufRead, Read, Write};

/// Largest response head (status line + headers) we accept.
pub(crate) const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Largest number of response headers we accept.
const MAX_HEADERS: usize = 256;
/// Largest chunk-size line or trailer line we accept.
const MAX_CHUNK_LINE: usize = 8 * 1024;
/// Largest trailer section we accept.
const MAX_TRAILER_BYTES: usize = 64 * 1024;
/// Most interim (`1xx`) responses accepted before the final one: a server needs one or
/// two (`100 Continue`, `103 Early Hints`); one that sends them forever is refused.
pub(crate) const MAX_INTERIM_RESPONSES: usize = 16;
/// Buffer size for streaming bodies.
pub(crate) const COPY_BUF: usize = 64 * 1024;

/// A request body.
pub(crate) enum RequestBody<'a> {
    /// No body.
    Empty,
    /// A body of exactly this many bytes, sent with `Content-Length`.
    Sized(&'a mut dyn Read, u64),
    /// A body of unknown length, sent with `Transfer-Encoding: chunked`.
    Chunked(&'a mut dyn Read),
}

/// Why sending a request failed: the caller's body source, or the connection.
#[derive(Debug)]
pub(crate) enum SendError {
    /// Reading the body source failed (or it had the wrong length).
    Source(io::Error),
    /// Writing to the connection failed.
    Connection(io::Error),
}

/// Writes a request line, headers and body to `w`, then flushes.
///
/// `target` is the already-encoded path and query. `headers` must not contain
/// `Content-Length`, `Transfer-Encoding` or `Connection`: they are derived from `body`.
pub(crate) fn write_request(
    w: &mut dyn Write,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: RequestBody<'_>,
) -> Result<(), SendError> {
    let mut head = format!("{method} {target} HTTP/1.1\r\n");
    for (name, value) in headers {
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    match &body {
        RequestBody::Empty => {
            if method != "GET" && method != "HEAD" {
                head.push_str("Content-Length: 0\r\n");
            }
        }
        RequestBody::Sized(_, len) => head.push_str(&format!("Content-Length: {len}\r\n")),
        RequestBody::Chunked(_) => head.push_str("Transfer-Encoding: chunked\r\n"),
    }
    head.push_str("Connection: close\r\n\r\n");
    w.write_all(head.as_bytes())
        .map_err(SendError::Connection)?;

    match body {
        RequestBody::Empty => {}
        RequestBody::Sized(src, len) => copy_sized(src, w, len)?,
        RequestBody::Chunked(src) => copy_chunked(src, w)?,
    }
    w.flush().map_err(SendError::Connection)
}

/// True for a plain `EINTR`, which is retried. An `Interrupted` error that carries a
/// payload (e.g. a cancellation packed by `Error::into_io`) is a real error.
pub(crate) fn is_eintr(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Interrupted && e.get_ref().is_none()
}

/// Reads into `buf`, retrying on `EINTR`.
fn read_retry(src: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match src.read(buf) {
            Err(e) if is_eintr(&e) => continue,
            other => return other,
        }
    }
}

fn copy_sized(src: &mut dyn Read, w: &mut dyn Write, len: u64) -> Result<(), SendError> {
    let mut buf = vec![0u8; COPY_BUF];
    let mut left = len;
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = read_retry(src, &mut buf[..want]).map_err(SendError::Source)?;
        if n == 0 {
            return Err(SendError::Source(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "the input ended after {} of the {len} bytes announced",
                    len - left
                ),
            )));
        }
        w.write_all(&buf[..n]).map_err(SendError::Connection)?;
        left -= n as u64;
    }
    // The declared length must be the whole input: a longer input would be silently cut.
    let mut probe = [0u8; 1];
    if read_retry(src, &mut probe).map_err(SendError::Source)? != 0 {
        return Err(SendError::Source(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the input is longer than the {len} bytes announced"),
        )));
    }
    Ok(())
}

fn copy_chunked(src: &mut dyn Read, w: &mut dyn Write) -> Result<(), SendError> {
    let mut buf = vec![0u8; COPY_BUF];
    loop {
        let n = read_retry(src, &mut buf).map_err(SendError::Source)?;
        if n == 0 {
            return w.write_all(b"0\r\n\r\n").map_err(SendError::Connection);
        }
        let frame = format!("{n:x}\r\n");
        w.write_all(frame.as_bytes())
            .and_then(|()| w.write_all(&buf[..n]))
            .and_then(|()| w.write_all(b"\r\n"))
            .map_err(SendError::Connection)?;
    }
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn unexpected_eof(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, msg.to_string())
}

/// Reads one line terminated by `\n` (the `\r\n` or `\n` is stripped), at most `limit`
/// bytes. Returns `None` at a clean end of stream before any byte.
fn read_line(r: &mut dyn BufRead, limit: usize) -> io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    loop {
        let available = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if is_eintr(&e) => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            if line.is_empty() {
                return Ok(None);
            }
            return Err(unexpected_eof("connection closed in the middle of a line"));
        }
        let (taken, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        if line.len() + taken > limit {
            return Err(invalid(format!("line longer than {limit} bytes")));
        }
        line.extend_from_slice(&available[..taken]);
        r.consume(taken);
        if done {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(Some(line));
        }
    }
}

/// A parsed status line and headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResponseHead {
    /// HTTP status code.
    pub status: u16,
    /// Reason phrase (may be empty).
    pub reason: String,
    /// Headers in order, names as received.
    pub headers: Vec<(String, String)>,
}

impl ResponseHead {
    /// The first header named `name` (case-insensitive).
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// All values of the headers named `name`, joined by commas as RFC 9110 allows.
    fn header_list(&self, name: &str) -> Option<String> {
        let values: Vec<&str> = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect();
        if values.is_empty() {
            None
        } else {
            Some(values.join(","))
        }
    }
}

/// Parses a status line such as `HTTP/1.1 404 Not Found`.
pub(crate) fn parse_status_line(line: &[u8]) -> io::Result<(u16, String)> {
    let text = std::str::from_utf8(line).map_err(|_| invalid("the status line is not UTF-8"))?;
    let shown = || text.chars().take(80).collect::<String>();
    let rest = text
        .strip_prefix("HTTP/1.")
        .ok_or_else(|| invalid(format!("not an HTTP/1.x status line: {:?}", shown())))?;
    let mut chars = rest.chars();
    if !matches!(chars.next(), Some('0' | '1')) || chars.next() != Some(' ') {
        return Err(invalid(format!(
            "unsupported HTTP version in status line {:?}",
            shown()
        )));
    }
    let rest = &rest[2..];
    let (code, reason) = match rest.split_once(' ') {
        Some((c, r)) => (c, r),
        None => (rest, ""),
    };
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(format!(
            "invalid status code in status line {:?}",
            shown()
        )));
    }
    let status: u16 = code
        .parse()
        .map_err(|_| invalid(format!("invalid status code {code:?}")))?;
    if status < 100 {
        return Err(invalid(format!("invalid status code {status}")));
    }
    Ok((status, reason.trim().to_string()))
}

/// Reads a response head, skipping interim `1xx` responses (at most
/// [`MAX_INTERIM_RESPONSES`] of them).
pub(crate) fn read_head(r: &mut dyn BufRead) -> io::Result<ResponseHead> {
    let mut interim = 0;
    loop {
        let head = read_one_head(r)?;
        if (100..200).contains(&head.status) && head.status != 101 {
            interim += 1;
            if interim > MAX_INTERIM_RESPONSES {
                return Err(invalid(format!(
                    "more than {MAX_INTERIM_RESPONSES} interim responses ({} {}) and no final one",
                    head.status, head.reason
                )));
            }
            continue;
        }
        return Ok(head);
    }
}

fn read_one_head(r: &mut dyn BufRead) -> io::Result<ResponseHead> {
    let mut budget = MAX_HEAD_BYTES;
    let line = read_line(r, budget)?.ok_or_else(|| {
        unexpected_eof("the daemon closed the connection without sending a response")
    })?;
    budget -= line.len();
    let (status, reason) = parse_status_line(&line)?;
    let mut headers: Vec<(String, String)> = Vec::new();
    loop {
        let line = read_line(r, budget.max(1))?
            .ok_or_else(|| unexpected_eof("connection closed inside the response headers"))?;
        budget = budget.saturating_sub(line.len() + 2);
        if budget == 0 {
            return Err(invalid(format!(
                "response head larger than {MAX_HEAD_BYTES} bytes"
            )));
        }
        if line.is_empty() {
            break;
        }
        let text = String::from_utf8_lossy(&line);
        if text.starts_with([' ', '\t']) {
            // Obsolete line folding: a continuation of the previous header's value.
            match headers.last_mut() {
                Some((_, value)) => {
                    value.push(' ');
                    value.push_str(text.trim());
                }
                None => return Err(invalid("header continuation line before any header")),
            }
            continue;
        }
        let (name, value) = text
            .split_once(':')
            .ok_or_else(|| invalid(format!("malformed header line {text:?}")))?;
        if name.is_empty() || name.contains([' ', '\t']) {
            return Err(invalid(format!("malformed header name {name:?}")));
        }
        if headers.len() == MAX_HEADERS {
            return Err(invalid(format!("more than {MAX_HEADERS} response headers")));
        }
        headers.push((name.to_string(), value.trim().to_string()));
    }
    Ok(ResponseHead {
        status,
        reason,
        headers,
    })
}

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body (HEAD, 1xx, 204, 304).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the server closes the connection.
    UntilEof,
}

/// How the body of a response to `method` with `head` is delimited (RFC 9112 §6.3).
pub(crate) fn framing(method: &str, head: &ResponseHead) -> io::Result<Framing> {
    if method == "HEAD" || head.status < 200 || head.status == 204 || head.status == 304 {
        return Ok(Framing::Empty);
    }
    if let Some(te) = head.header_list("Transfer-Encoding") {
        let last = te.rsplit(',').next().unwrap_or("").trim();
        return Ok(if last.eq_ignore_ascii_case("chunked") {
            Framing::Chunked
        } else {
            Framing::UntilEof
        });
    }
    if let Some(cl) = head.header_list("Content-Length") {
        // Repeated identical values are allowed; differing ones are an error.
        let mut value: Option<u64> = None;
        for part in cl.split(',') {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid(format!("invalid Content-Length {cl:?}")));
            }
            let n: u64 = part
                .parse()
                .map_err(|_| invalid(format!("invalid Content-Length {cl:?}")))?;
            if value.is_some_and(|v| v != n) {
                return Err(invalid(format!("conflicting Content-Length {cl:?}")));
            }
            value = Some(n);
        }
        return Ok(match value {
            Some(n) => Framing::Length(n),
            None => Framing::UntilEof,
        });
    }
    Ok(Framing::UntilEof)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data, with this many bytes left.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// The last chunk and trailers have been read.
    Done,
}

/// A response body reader that decodes the framing and reports truncation as
/// `UnexpectedEof`.
pub(crate) struct BodyReader<R> {
    inner: R,
    kind: BodyKind,
}

enum BodyKind {
    Empty,
    Length(u64),
    Chunked(ChunkState),
    UntilEof(bool),
}

impl<R: BufRead> BodyReader<R> {
    /// A reader for a body with `framing` read from `inner`.
    pub fn new(inner: R, framing: Framing) -> Self {
        let kind = match framing {
            Framing::Empty => BodyKind::Empty,
            Framing::Length(n) => BodyKind::Length(n),
            Framing::Chunked => BodyKind::Chunked(ChunkState::Size),
            Framing::UntilEof => BodyKind::UntilEof(false),
        };
        BodyReader { inner, kind }
    }

    /// True once the whole body has been read.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn is_done(&self) -> bool {
        matches!(
            self.kind,
            BodyKind::Empty
                | BodyKind::Length(0)
                | BodyKind::Chunked(ChunkState::Done)
                | BodyKind::UntilEof(true)
        )
    }

    fn read_chunked(&mut self, state: ChunkState, buf: &mut [u8]) -> io::Result<usize> {
        let mut state = state;
        loop {
            match state {
                ChunkState::Done => {
                    self.kind = BodyKind::Chunked(ChunkState::Done);
                    return Ok(0);
                }
                ChunkState::Size => {
                    let line = read_line(&mut self.inner, MAX_CHUNK_LINE)?
                        .ok_or_else(|| unexpected_eof("response body truncated (chunked)"))?;
                    let size = parse_chunk_size(&line)?;
                    if size == 0 {
                        self.read_trailers()?;
                        state = ChunkState::Done;
                    } else {
                        state = ChunkState::Data(size);
                    }
                }
                ChunkState::Data(left) => {
                    if buf.is_empty() {
                        self.kind = BodyKind::Chunked(state);
                        return Ok(0);
                    }
                    let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    let n = self.inner.read(&mut buf[..want])?;
                    if n == 0 {
                        return Err(unexpected_eof("response body truncated inside a chunk"));
                    }
                    let left = left - n as u64;
                    self.kind = BodyKind::Chunked(if left == 0 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left)
                    });
                    return Ok(n);
                }
                ChunkState::DataEnd => {
                    let line = read_line(&mut self.inner, MAX_CHUNK_LINE)?
                        .ok_or_else(|| unexpected_eof("response body truncated after a chunk"))?;
                    if !line.is_empty() {
                        return Err(invalid("chunk data longer than its announced size"));
                    }
                    state = ChunkState::Size;
                }
            }
            self.kind = BodyKind::Chunked(state);
        }
    }

    fn read_trailers(&mut self) -> io::Result<()> {
        let mut total = 0usize;
        loop {
            let line = read_line(&mut self.inner, MAX_CHUNK_LINE)?
                .ok_or_else(|| unexpected_eof("response truncated in the chunked trailer"))?;
            if line.is_empty() {
                return Ok(());
            }
            total += line.len();
            if total > MAX_TRAILER_BYTES {
                return Err(invalid("chunked trailer section too large"));
            }
        }
    }
}

/// Parses a chunk-size line: hex digits, optional whitespace, optional `;extensions`.
pub(crate) fn parse_chunk_size(line: &[u8]) -> io::Result<u64> {
    let text = std::str::from_utf8(line).map_err(|_| invalid("chunk size line is not UTF-8"))?;
    let size = text
        .split(';')
        .next()
        .unwrap_or("")
        .trim_matches([' ', '\t']);
    if size.is_empty() || size.len() > 16 || !size.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid(format!("invalid chunk size line {text:?}")));
    }
    u64::from_str_radix(size, 16).map_err(|_| invalid(format!("invalid chunk size {size:?}")))
}

impl<R: BufRead> Read for BodyReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.kind {
            BodyKind::Empty => Ok(0),
            BodyKind::Length(0) => Ok(0),
            BodyKind::Length(left) => {
                if buf.is_empty() {
                    return Ok(0);
                }
                let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                let n = self.inner.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(unexpected_eof(&format!(
                        "response body truncated: {left} bytes missing"
                    )));
                }
                self.kind = BodyKind::Length(left - n as u64);
                Ok(n)
            }
            BodyKind::Chunked(state) => self.read_chunked(state, buf),
            BodyKind::UntilEof(true) => Ok(0),
            BodyKind::UntilEof(false) => {
                let n = self.inner.read(buf)?;
                if n == 0 && !buf.is_empty() {
                    self.kind = BodyKind::UntilEof(true);
                }
                Ok(n)
            }
        }
    }
}

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
    use std::io::{BufReader, Cursor};

    fn response(raw: &[u8]) -> (ResponseHead, Vec<u8>) {
        let mut r = BufReader::new(Cursor::new(raw.to_vec()));
        let head = read_head(&mut r).unwrap();
        let f = framing("GET", &head).unwrap();
        let mut body = Vec::new();
        BodyReader::new(r, f).read_to_end(&mut body).unwrap();
        (head, body)
    }

    fn body_err(raw: &[u8]) -> io::Error {
        let mut r = BufReader::new(Cursor::new(raw.to_vec()));
        let head = read_head(&mut r).unwrap();
        let f = framing("GET", &head).unwrap();
        let mut body = Vec::new();
        BodyReader::new(r, f).read_to_end(&mut body).unwrap_err()
    }

    #[test]
    fn status_lines() {
        assert_eq!(
            parse_status_line(b"HTTP/1.1 200 OK").unwrap(),
            (200, "OK".to_string())
        );
        assert_eq!(
            parse_status_line(b"HTTP/1.0 404 Not Found").unwrap(),
            (404, "Not Found".to_string())
        );
        assert_eq!(
            parse_status_line(b"HTTP/1.1 204").unwrap(),
            (204, String::new())
        );
        assert_eq!(
            parse_status_line(b"HTTP/1.1 500 ").unwrap(),
            (500, String::new())
        );
        for bad in [
            &b"HTTP/2 200 OK"[..],
            b"HTTP/1.1 20 OK",
            b"HTTP/1.1 2000 OK",
            b"HTTP/1.1 abc OK",
            b"ICY 200 OK",
            b"",
            b"HTTP/1.1 099 x",
        ] {
            assert!(parse_status_line(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn content_length_body() {
        let (head, body) = response(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5\r\n\r\nhelloEXTRA",
        );
        assert_eq!(head.status, 200);
        assert_eq!(head.header("content-type"), Some("application/json"));
        assert_eq!(body, b"hello");
    }

    #[test]
    fn truncated_content_length_is_an_error() {
        let e = body_err(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello");
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert!(e.to_string().contains("5 bytes missing"), "{e}");
    }

    #[test]
    fn conflicting_content_lengths_are_rejected() {
        let mut r = BufReader::new(Cursor::new(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n".to_vec(),
        ));
        let head = read_head(&mut r).unwrap();
        assert!(framing("GET", &head).is_err());
        let mut r = BufReader::new(Cursor::new(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n".to_vec(),
        ));
        let head = read_head(&mut r).unwrap();
        assert_eq!(framing("GET", &head).unwrap(), Framing::Length(5));
    }

    #[test]
    fn chunked_body_with_extensions_and_trailers() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
            5;name=value\r\nhello\r\n\
            1 ; ext=\"quoted;semi\"\r\n \r\n\
            A\r\n0123456789\r\n\
            0;last\r\nX-Trailer: yes\r\nOther: 1\r\n\r\nAFTER";
        let (_, body) = response(raw);
        assert_eq!(body, b"hello 0123456789");
    }

    #[test]
    fn chunked_wins_over_content_length() {
        let (_, body) = response(
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        );
        assert_eq!(body, b"abc");
    }

    #[test]
    fn chunked_with_bare_lf_and_uppercase_hex() {
        let (_, body) =
            response(b"HTTP/1.1 200 OK\nTransfer-Encoding: Chunked\n\nB\nhello world\n0\n\n");
        assert_eq!(body, b"hello world");
    }

    #[test]
    fn chunked_errors() {
        // Truncated inside a chunk.
        let e = body_err(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nabc");
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        // Missing last chunk.
        let e = body_err(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n");
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        // Missing end of trailers.
        let e = body_err(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: y\r\n");
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        // Bad size.
        let e = body_err(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        // Data longer than announced.
        let e =
            body_err(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        // Absurd size.
        assert!(parse_chunk_size(b"11111111111111111").is_err());
        assert!(parse_chunk_size(b";ext").is_err());
        assert_eq!(parse_chunk_size(b"ffffffff").unwrap(), 0xffff_ffff);
    }

    #[test]
    fn chunked_body_read_byte_by_byte() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\n";
        let mut r = BufReader::with_capacity(1, Cursor::new(raw.to_vec()));
        let head = read_head(&mut r).unwrap();
        let mut body = BodyReader::new(r, framing("GET", &head).unwrap());
        let mut out = Vec::new();
        let mut b = [0u8; 1];
        loop {
            let n = body.read(&mut b).unwrap();
            if n == 0 {
                break;
            }
            out.push(b[0]);
        }
        assert_eq!(out, b"Wikipedia");
        assert!(body.is_done());
    }

    #[test]
    fn read_until_eof_and_empty_bodies() {
        let (_, body) = response(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it");
        assert_eq!(body, b"all of it");
        let (head, body) = response(b"HTTP/1.1 204 No Content\r\n\r\n");
        assert_eq!(head.status, 204);
        assert!(body.is_empty());
        let mut r = BufReader::new(Cursor::new(
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n".to_vec(),
        ));
        let head = read_head(&mut r).unwrap();
        assert_eq!(framing("HEAD", &head).unwrap(), Framing::Empty);
    }

    #[test]
    fn interim_responses_are_skipped_and_headers_folded() {
        let (head, body) = response(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nX-Long: a\r\n  b\r\nContent-Length: 0\r\n\r\n",
        );
        assert_eq!(head.status, 201);
        assert_eq!(head.header("x-long"), Some("a b"));
        assert!(body.is_empty());
    }

    #[test]
    fn endless_interim_responses_are_refused() {
        let mut raw = Vec::new();
        for _ in 0..MAX_INTERIM_RESPONSES {
            raw.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        let mut ok = raw.clone();
        ok.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        let head = read_head(&mut BufReader::new(Cursor::new(ok))).unwrap();
        assert_eq!(head.status, 200);
        raw.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n");
        let e = read_head(&mut BufReader::new(Cursor::new(raw))).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("interim responses"), "{e}");
    }

    #[test]
    fn malformed_heads() {
        for raw in [
            &b""[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 3",
            b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n continuation first\r\n\r\n",
            b"garbage\r\n\r\n",
        ] {
            let mut r = BufReader::new(Cursor::new(raw.to_vec()));
            assert!(
                read_head(&mut r).is_err(),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
        let mut huge = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..5000 {
            huge.extend_from_slice(format!("X-H{i}: {}\r\n", "v".repeat(20)).as_bytes());
        }
        huge.extend_from_slice(b"\r\n");
        let mut r = BufReader::new(Cursor::new(huge));
        assert!(read_head(&mut r).is_err());
    }

    #[test]
    fn request_with_sized_body() {
        let mut out = Vec::new();
        let mut src = Cursor::new(b"tarbytes".to_vec());
        write_request(
            &mut out,
            "POST",
            "/v1.41/images/load?quiet=1",
            &[("Host", "docker"), ("Content-Type", "application/x-tar")],
            RequestBody::Sized(&mut src, 8),
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /v1.41/images/load?quiet=1 HTTP/1.1\r\nHost: docker\r\nContent-Type: application/x-tar\r\n\
             Content-Length: 8\r\nConnection: close\r\n\r\ntarbytes"
        );
    }

    #[test]
    fn sized_body_of_the_wrong_length_is_a_source_error() {
        let mut out = Vec::new();
        let mut src = Cursor::new(b"short".to_vec());
        let e = write_request(&mut out, "POST", "/", &[], RequestBody::Sized(&mut src, 8));
        assert!(
            matches!(e, Err(SendError::Source(ref e)) if e.kind() == io::ErrorKind::UnexpectedEof)
        );
        let mut src = Cursor::new(b"too long!".to_vec());
        let e = write_request(&mut out, "POST", "/", &[], RequestBody::Sized(&mut src, 8));
        assert!(matches!(e, Err(SendError::Source(_))));
    }

    #[test]
    fn chunked_request_round_trips_through_our_decoder() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut out = Vec::new();
        let mut src = Cursor::new(data.clone());
        write_request(
            &mut out,
            "POST",
            "/x",
            &[("Host", "docker")],
            RequestBody::Chunked(&mut src),
        )
        .unwrap();
        let text = String::from_utf8_lossy(&out[..120]).to_string();
        assert!(text.contains("Transfer-Encoding: chunked\r\n"), "{text}");
        // Reuse the response decoder on the request body.
        let start = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let mut body = BodyReader::new(Cursor::new(out[start..].to_vec()), Framing::Chunked);
        let mut back = Vec::new();
        body.read_to_end(&mut back).unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn empty_post_has_zero_length() {
        let mut out = Vec::new();
        write_request(&mut out, "POST", "/images/x/tag", &[], RequestBody::Empty).unwrap();
        assert!(String::from_utf8(out)
            .unwrap()
            .contains("Content-Length: 0\r\n"));
    }

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
