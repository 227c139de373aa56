//! The daemon's Unix socket as a ureq transport: [`UnixConnector`] connects to the socket
//! path (whatever the request URI names) and [`UnixTransport`] moves bytes over it, the way
//! ureq's own TCP transport does over TCP, with the same per-phase, per-read and per-write
//! timeouts.
//!
//! Built on `ureq::unversioned::transport`, which ureq may change in a minor release: the
//! dependency is pinned to `~3.5`.

use std::io;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{
    time, Buffers, ConnectionDetails, Connector, LazyBuffers, NextTimeout, Transport,
};

/// Connects to the Unix socket at a fixed path, within the connect timeout.
#[derive(Debug)]
pub(super) struct UnixConnector {
    path: PathBuf,
}

impl UnixConnector {
    pub(super) fn new(path: &Path) -> UnixConnector {
        UnixConnector {
            path: path.to_path_buf(),
        }
    }
}

impl Connector<()> for UnixConnector {
    type Out = UnixTransport;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<()>,
    ) -> Result<Option<UnixTransport>, ureq::Error> {
        let _ = chained;
        let timeout = details.timeout;
        if is_zero(timeout.after) {
            return Err(ureq::Error::Timeout(timeout.reason));
        }
        let wait = timeout.not_zero().map(|d| *d);
        let stream = connect_unix(&self.path, wait).map_err(|e| {
            if is_timeout(&e) {
                ureq::Error::Timeout(timeout.reason)
            } else {
                ureq::Error::Io(e)
            }
        })?;
        let config = details.config;
        Ok(Some(UnixTransport {
            stream,
            buffers: LazyBuffers::new(config.input_buffer_size(), config.output_buffer_size()),
            read_timeout: None,
            // What `connect_unix` left on the socket.
            write_timeout: wait,
        }))
    }
}

/// A resolver that resolves nothing: a Unix socket has no address to look up (the
/// request URI's host only fills the `Host` header).
#[derive(Debug)]
pub(super) struct NoResolver;

impl Resolver for NoResolver {
    fn resolve(
        &self,
        _uri: &ureq::http::Uri,
        _config: &ureq::config::Config,
        _timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        Ok(self.empty())
    }
}

/// A connection to the daemon's Unix socket.
#[derive(Debug)]
pub(super) struct UnixTransport {
    stream: UnixStream,
    buffers: LazyBuffers,
    /// The timeouts last set on the socket.
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
}

fn is_zero(d: time::Duration) -> bool {
    matches!(d, time::Duration::Exact(d) if d.is_zero())
}

/// The socket timeout for `timeout` (none if it never happens), or the timeout error if
/// it has run out.
fn socket_timeout(timeout: NextTimeout) -> Result<Option<Duration>, ureq::Error> {
    if is_zero(timeout.after) {
        return Err(ureq::Error::Timeout(timeout.reason));
    }
    Ok(timeout.not_zero().map(|d| *d))
}

impl Transport for UnixTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        let timeout = timeout.for_write();
        let wait = socket_timeout(timeout)?;
        if self.write_timeout != wait {
            self.stream.set_write_timeout(wait)?;
            self.write_timeout = wait;
        }
        let mut output = &self.buffers.output()[..amount];
        while !output.is_empty() {
            match send_no_sigpipe(&self.stream, output) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero).into()),
                Ok(n) => output = &output[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if is_timeout(&e) => return Err(ureq::Error::Timeout(timeout.reason)),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        let timeout = timeout.for_read();
        let wait = socket_timeout(timeout)?;
        if self.read_timeout != wait {
            self.stream.set_read_timeout(wait)?;
            self.read_timeout = wait;
        }
        let input = self.buffers.input_append_buf();
        let n = loop {
            match io::Read::read(&mut &self.stream, input) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if is_timeout(&e) => return Err(ureq::Error::Timeout(timeout.reason)),
                Err(e) => return Err(e.into()),
            }
        };
        self.buffers.input_appended(n);
        Ok(n > 0)
    }

    fn is_open(&mut self) -> bool {
        use std::os::fd::AsRawFd;
        let mut probe = [0u8; 1];
        // SAFETY: the descriptor is owned by `self.stream` and open for this call; the
        // pointer and length describe the live buffer `probe`.
        let n = unsafe {
            libc::recv(
                self.stream.as_raw_fd(),
                probe.as_mut_ptr().cast::<libc::c_void>(),
                probe.len(),
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        // Open only if nothing is pending and the peer has not hung up.
        n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock
    }
}

/// True for the error a socket operation gives when its timeout ran out.
pub(super) fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Connects to the Unix socket at `path`, waiting at most `timeout`. A daemon that does not
/// accept connections fills its listen queue, and a plain `connect` then blocks until a
/// slot frees; the socket's send timeout bounds that wait (Linux returns `EAGAIN`).
pub(super) fn connect_unix(path: &Path, timeout: Option<Duration>) -> io::Result<UnixStream> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain old data; all zeroes is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "the socket path is longer than {} bytes or holds a NUL byte",
                addr.sun_path.len() - 1
            ),
        ));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: a plain socket(2) call; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let stream = UnixStream::from(unsafe { OwnedFd::from_raw_fd(fd) });
    stream.set_write_timeout(timeout)?;
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    // SAFETY: `addr` is a valid sockaddr_un of at least `len` bytes, alive for the call.
    let r = unsafe {
        libc::connect(
            stream.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast::<libc::sockaddr>(),
            len as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stream)
}

/// Writes to a Unix socket without raising SIGPIPE if the daemon has closed it: std's
/// `UnixStream::write` uses `write(2)`, which would kill a host process (e.g. one using
/// the C ABI) that has not ignored SIGPIPE. (Over TCP, std sends with `MSG_NOSIGNAL`.)
fn send_no_sigpipe(s: &UnixStream, buf: &[u8]) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor is owned by `s` and open for this call; the pointer and
    // length describe the live slice `buf`.
    let n = unsafe {
        libc::send(
            s.as_raw_fd(),
            buf.as_ptr().cast::<libc::c_void>(),
            buf.len(),
            libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n.unsigned_abs())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Writing to a daemon that hung up raises no SIGPIPE: a host process that keeps the
    /// default action (a C program using the C ABI) would be killed by one. Rust programs
    /// ignore SIGPIPE, so the write is tried in a child (this test binary again, running
    /// only this test) that restores the default action; a plain `write(2)` there is
    /// killed, which shows the check works. (std's own `UnixStream::write` passes
    /// `MSG_NOSIGNAL` today too; ours does not depend on it.)
    #[test]
    fn writing_to_a_closed_socket_raises_no_sigpipe() {
        const CHILD: &str = "DOCKER_DELTA_TEST_SIGPIPE_CHILD";
        if let Ok(mode) = std::env::var(CHILD) {
            // SAFETY: sets the default action of SIGPIPE in this child process, which
            // runs this one test alone.
            unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
            let (ours, theirs) = UnixStream::pair().unwrap();
            drop(theirs);
            if mode == "plain" {
                use std::os::fd::AsRawFd;
                // SAFETY: a write(2) of a live one-byte buffer on an open descriptor.
                let _ = unsafe { libc::write(ours.as_raw_fd(), b"x".as_ptr().cast(), 1) };
                return;
            }
            let mut t = UnixTransport {
                stream: ours,
                buffers: LazyBuffers::new(1024, 1024),
                read_timeout: None,
                write_timeout: None,
            };
            t.buffers().output()[..5].copy_from_slice(b"hello");
            let e = t.transmit_output(5, NextTimeout::default()).unwrap_err();
            assert!(
                matches!(&e, ureq::Error::Io(e) if e.kind() == io::ErrorKind::BrokenPipe),
                "{e:?}"
            );
            return;
        }
        let run = |mode: &str| {
            std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "daemon::unix::tests::writing_to_a_closed_socket_raises_no_sigpipe",
                    "--test-threads=1",
                ])
                .env(CHILD, mode)
                .output()
                .unwrap()
        };
        use std::os::unix::process::ExitStatusExt;
        let plain = run("plain");
        assert_eq!(plain.status.signal(), Some(libc::SIGPIPE), "{plain:?}");
        let ours = run("transport");
        assert!(ours.status.success(), "{ours:?}");
        assert!(
            String::from_utf8_lossy(&ours.stdout).contains("1 passed"),
            "{ours:?}"
        );
    }
}
