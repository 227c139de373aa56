//! What the daemon client keeps around ureq, for the guarantees ureq does not give by
//! itself. A [`Guard`] wraps the connection (Unix socket or ureq's TCP transport):
//!
//! - It bounds interim (`1xx`) responses: ureq skips them without a limit, so a daemon that
//!   sends `100 Continue` heads fast and forever would hold a long request (load, export)
//!   that only the idle timeout bounds. The guard counts the complete heads that arrive
//!   before the final one and refuses more than [`MAX_INTERIM_RESPONSES`].
//! - It lets the daemon's early answer win over a broken pipe: a daemon may refuse a
//!   `docker load` body at once, answer and close. ureq then stops with the write error;
//!   the guard instead records the error, drops the rest of the body (and [`BodySource`]
//!   stops reading its source), so that ureq reads the answer that is already there.
//! - It records where the conversation was ([`CallState`]), so that errors say whether
//!   the daemon was unreachable, or the request failed while sending or waiting.
//!
//! [`BodySource`] is the request body: it checks that a body sent with `Content-Length`
//! has exactly that length (ureq stops reading at the length and would cut a longer
//! input silently), and keeps the source's own error apart from the connection's.

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use ureq::unversioned::transport::{Buffers, ConnectionDetails, Connector, NextTimeout, Transport};

/// Most interim (`1xx`) responses accepted before the final one: a server needs one or
/// two (`100 Continue`, `103 Early Hints`); one that sends them forever is refused.
pub(super) const MAX_INTERIM_RESPONSES: usize = 16;

/// Where one request's conversation got to; shared by the client and its transport.
#[derive(Debug, Default)]
pub(super) struct CallState {
    /// The connection is open.
    connected: AtomicBool,
    /// The last thing the transport did was to send (else: to wait for input).
    sending: AtomicBool,
    /// The write error after which the rest of the request was dropped.
    send_failed: OnceLock<io::Error>,
}

impl CallState {
    /// True once the connection is open.
    pub(super) fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// True if the transport was last sending (not waiting for the response).
    pub(super) fn sending(&self) -> bool {
        self.sending.load(Ordering::Relaxed)
    }

    /// The write error that ended sending, if one did.
    pub(super) fn send_failed(&self) -> Option<&io::Error> {
        self.send_failed.get()
    }
}

/// Wraps the connection its chain made in a [`Guard`].
#[derive(Debug)]
pub(super) struct GuardConnector(pub(super) Arc<CallState>);

impl<In: Transport> Connector<In> for GuardConnector {
    type Out = Guard<In>;

    fn connect(
        &self,
        _details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Guard<In>>, ureq::Error> {
        Ok(chained.map(|inner| {
            self.0.connected.store(true, Ordering::Relaxed);
            Guard {
                inner,
                state: self.0.clone(),
                interim: 0,
                final_head_seen: false,
            }
        }))
    }
}

/// A connection with the checks described in the [module documentation](self).
#[derive(Debug)]
pub(super) struct Guard<T> {
    inner: T,
    state: Arc<CallState>,
    /// Interim heads received so far.
    interim: usize,
    /// The final response head has arrived: the rest is body.
    final_head_seen: bool,
}

impl<T: Transport> Guard<T> {
    /// Counts the interim heads at the start of the unconsumed input. ureq asks for more
    /// input only when it cannot parse a whole head from what it has, so every complete
    /// head seen here is new: the ones seen before were consumed.
    fn count_interim_heads(&mut self) -> Result<(), ureq::Error> {
        let mut rest = self.inner.buffers().input();
        while let Some(end) = head_end(rest) {
            let head = &rest[..end];
            if !is_interim(head) {
                self.final_head_seen = true;
                return Ok(());
            }
            self.interim += 1;
            if self.interim > MAX_INTERIM_RESPONSES {
                let line = head.split(|&b| b == b'\r' || b == b'\n').next();
                let line = String::from_utf8_lossy(line.unwrap_or_default());
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "more than {MAX_INTERIM_RESPONSES} interim responses ({}) and no final one",
                        line.chars().take(80).collect::<String>()
                    ),
                )
                .into());
            }
            rest = &rest[end..];
        }
        Ok(())
    }
}

/// The length of the response head at the start of `input` (through the empty line that
/// ends it, `\r\n` or bare `\n` line ends), if it is complete.
fn head_end(input: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = input[from..].iter().position(|&b| b == b'\n') {
        let i = from + i;
        match input.get(i + 1..) {
            Some([b'\n', ..]) => return Some(i + 2),
            Some([b'\r', b'\n', ..]) => return Some(i + 3),
            _ => from = i + 1,
        }
    }
    None
}

/// True for an interim head: status `1xx` but not `101 Switching Protocols` (which ends
/// the exchange, as a final head does).
fn is_interim(head: &[u8]) -> bool {
    match head {
        [b'H', b'T', b'T', b'P', b'/', b'1', b'.', _, b' ', b'1', a, b, ..] => {
            a.is_ascii_digit() && b.is_ascii_digit() && (*a, *b) != (b'0', b'1')
        }
        _ => false,
    }
}

impl<T: Transport> Transport for Guard<T> {
    fn buffers(&mut self) -> &mut dyn Buffers {
        self.inner.buffers()
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        self.state.sending.store(true, Ordering::Relaxed);
        if self.state.send_failed.get().is_some() {
            // The daemon stopped reading: the rest of the request goes nowhere.
            return Ok(());
        }
        match self.inner.transmit_output(amount, timeout) {
            // A daemon that stopped reading without closing is not waited for twice: a
            // timeout ends the request.
            Err(ureq::Error::Io(e)) => {
                let _ = self.state.send_failed.set(e);
                Ok(())
            }
            other => other,
        }
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.state.sending.store(false, Ordering::Relaxed);
        let more = self.inner.await_input(timeout)?;
        if !self.final_head_seen {
            self.count_interim_heads()?;
        }
        Ok(more)
    }

    fn is_open(&mut self) -> bool {
        self.inner.is_open()
    }

    fn is_tls(&self) -> bool {
        self.inner.is_tls()
    }
}

/// The request body: `src`, of exactly `len` bytes if given (sent with `Content-Length`),
/// else of any length (sent chunked).
pub(super) struct BodySource<'a> {
    src: &'a mut dyn Read,
    len: Option<u64>,
    /// Bytes still to send of a sized body.
    left: u64,
    state: Arc<CallState>,
    /// The source's own error (or wrong length), kept apart from the connection's.
    error: Option<io::Error>,
}

impl<'a> BodySource<'a> {
    pub(super) fn new(src: &'a mut dyn Read, len: Option<u64>, state: Arc<CallState>) -> Self {
        BodySource {
            src,
            len,
            left: len.unwrap_or(0),
            state,
            error: None,
        }
    }

    /// The source's error, if reading it failed.
    pub(super) fn take_error(&mut self) -> Option<io::Error> {
        self.error.take()
    }

    fn fail(&mut self, e: io::Error) -> io::Error {
        let shown = io::Error::new(e.kind(), format!("reading the request body failed: {e}"));
        self.error = Some(e);
        shown
    }
}

/// True for a plain `EINTR`, which is retried. An `Interrupted` error that carries a
/// payload (e.g. a cancellation packed by `Error::into_io`) is a real error.
pub(super) fn is_eintr(e: &io::Error) -> bool {
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

impl Read for BodySource<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(e) = &self.error {
            return Err(io::Error::new(e.kind(), "the request body failed"));
        }
        let Some(len) = self.len else {
            if self.state.send_failed().is_some() {
                // The daemon stopped reading: end the body without reading on.
                return Ok(0);
            }
            return read_retry(self.src, buf).map_err(|e| self.fail(e));
        };
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        if self.state.send_failed().is_some() {
            // The daemon stopped reading: the announced length is made up without
            // reading the source (the bytes are dropped, not sent).
            buf[..want].fill(0);
            self.left -= want as u64;
            return Ok(want);
        }
        let n = read_retry(self.src, &mut buf[..want]).map_err(|e| self.fail(e))?;
        if n == 0 {
            let e = io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "the input ended after {} of the {len} bytes announced",
                    len - self.left
                ),
            );
            return Err(self.fail(e));
        }
        self.left -= n as u64;
        if self.left == 0 {
            // The declared length must be the whole input: ureq stops reading at the
            // length, and a longer input would be silently cut.
            let mut probe = [0u8; 1];
            if read_retry(self.src, &mut probe).map_err(|e| self.fail(e))? != 0 {
                let e = io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("the input is longer than the {len} bytes announced"),
                );
                return Err(self.fail(e));
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn heads_and_interim_statuses() {
        assert_eq!(head_end(b"HTTP/1.1 100 Continue\r\n\r\nrest"), Some(25));
        assert_eq!(head_end(b"HTTP/1.1 200 OK\nA: b\n\nbody"), Some(22));
        assert_eq!(head_end(b"HTTP/1.1 200 OK\r\nA: b\r\n"), None);
        assert_eq!(head_end(b""), None);
        assert!(is_interim(b"HTTP/1.1 100 Continue\r\n\r\n"));
        assert!(is_interim(b"HTTP/1.0 103 Early Hints\r\n\r\n"));
        assert!(!is_interim(b"HTTP/1.1 101 Switching Protocols\r\n\r\n"));
        assert!(!is_interim(b"HTTP/1.1 200 OK\r\n\r\n"));
        assert!(!is_interim(b"garbage"));
    }

    #[test]
    fn a_sized_body_must_have_its_length() {
        let state = Arc::new(CallState::default());
        let mut out = Vec::new();
        for (input, len, ok) in [
            (&b"12345678"[..], 8, true),
            (b"short", 8, false),
            (b"too long!", 8, false),
        ] {
            let mut src = input;
            let mut body = BodySource::new(&mut src, Some(len), state.clone());
            out.clear();
            let r = body.read_to_end(&mut out);
            assert_eq!(r.is_ok(), ok, "{input:?}");
            assert_eq!(body.take_error().is_none(), ok, "{input:?}");
        }
    }
}
