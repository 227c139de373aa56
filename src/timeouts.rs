//! How long a conversation with a daemon (today the Docker daemon; later registries too) may
//! take: one small, transport-agnostic set of durations that any client can apply.
//!
//! - `connect`: to open the connection.
//! - `idle`: the longest wait for the next byte (or for the peer to take the next bytes we
//!   send). It is the only bound on long streams (`docker load`, `docker save`): a stream
//!   that keeps moving is never cut, whatever its length.
//! - `request`: the whole of a small request (version, inspect, list, tag, ping), from the
//!   connection to the last byte of the response, response head and any interim `1xx`
//!   heads included.
//!
//! Each can be set in the environment ([`ENV_CONNECT_TIMEOUT`], [`ENV_IDLE_TIMEOUT`],
//! [`ENV_REQUEST_TIMEOUT`], whole seconds) and through the API; the command line has
//! `--daemon-connect-timeout`, `--daemon-timeout` and `--daemon-request-timeout`.

use std::time::Duration;

use crate::error::{Error, Result};

/// Environment variable for [`Timeouts::connect`] (seconds).
pub const ENV_CONNECT_TIMEOUT: &str = "DOCKER_DELTA_DAEMON_CONNECT_TIMEOUT";
/// Environment variable for [`Timeouts::idle`] (seconds).
pub const ENV_IDLE_TIMEOUT: &str = "DOCKER_DELTA_DAEMON_TIMEOUT";
/// Environment variable for [`Timeouts::request`] (seconds).
pub const ENV_REQUEST_TIMEOUT: &str = "DOCKER_DELTA_DAEMON_REQUEST_TIMEOUT";
/// Environment variable for a registry's connect timeout (seconds), the command's
/// `--registry-connect-timeout`: `RegistryOptions::connect_timeout`.
pub const ENV_REGISTRY_CONNECT_TIMEOUT: &str = "DOCKER_DELTA_REGISTRY_CONNECT_TIMEOUT";
/// Environment variable for a registry's idle timeout (seconds), the command's
/// `--registry-timeout`: `RegistryOptions::idle_timeout`.
pub const ENV_REGISTRY_TIMEOUT: &str = "DOCKER_DELTA_REGISTRY_TIMEOUT";

/// The largest timeout accepted, in seconds (one week): enough to mean "wait", small
/// enough that no deadline computed from it overflows.
pub const MAX_TIMEOUT_SECONDS: u64 = 7 * 24 * 3600;

/// Timeouts of a conversation with a daemon. See the [module documentation](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// To open the connection (default 10 s: a local socket connects at once, a reachable
    /// host within a second).
    pub connect: Duration,
    /// The longest silence while a response is awaited or read, or while the peer does not
    /// take what we send (default 600 s). Docker is silent for long stretches on real
    /// work: `docker save` with the classic image store writes the whole image to a
    /// temporary directory before it sends the first byte, and a `docker load` into the
    /// containerd image store unpacks every layer before it answers. This bounds a daemon
    /// that hangs without cutting those.
    pub idle: Duration,
    /// The whole of a small request (default 120 s, as the kubelet's runtime request
    /// timeout): a healthy daemon answers one in milliseconds, and a daemon that sends
    /// interim `100 Continue` heads, or a byte now and then, without ever finishing cannot
    /// hold it longer.
    pub request: Duration,
}

/// Which of the [`Timeouts`] ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutKind {
    /// [`Timeouts::connect`].
    Connect,
    /// [`Timeouts::idle`].
    Idle,
    /// [`Timeouts::request`].
    Request,
}

impl TimeoutKind {
    /// How to raise this timeout: the command-line option and the environment variable.
    pub fn option(self) -> &'static str {
        match self {
            TimeoutKind::Connect => {
                "--daemon-connect-timeout or DOCKER_DELTA_DAEMON_CONNECT_TIMEOUT (seconds)"
            }
            TimeoutKind::Idle => "--daemon-timeout or DOCKER_DELTA_DAEMON_TIMEOUT (seconds)",
            TimeoutKind::Request => {
                "--daemon-request-timeout or DOCKER_DELTA_DAEMON_REQUEST_TIMEOUT (seconds)"
            }
        }
    }

    /// The environment variable that sets this timeout.
    pub fn env(self) -> &'static str {
        match self {
            TimeoutKind::Connect => ENV_CONNECT_TIMEOUT,
            TimeoutKind::Idle => ENV_IDLE_TIMEOUT,
            TimeoutKind::Request => ENV_REQUEST_TIMEOUT,
        }
    }
}

impl Timeouts {
    /// The built-in defaults: connect 10 s, idle 600 s, request 120 s.
    pub const DEFAULT: Timeouts = Timeouts {
        connect: Duration::from_secs(10),
        idle: Duration::from_secs(600),
        request: Duration::from_secs(120),
    };

    /// The defaults, each replaced by its environment variable when that is set.
    ///
    /// A value that is not a whole number of seconds from 1 to [`MAX_TIMEOUT_SECONDS`] is
    /// refused with [`Error::InvalidOption`] naming the variable.
    pub fn from_env() -> Result<Timeouts> {
        let mut t = Timeouts::DEFAULT;
        for kind in [
            TimeoutKind::Connect,
            TimeoutKind::Idle,
            TimeoutKind::Request,
        ] {
            let name = kind.env();
            match std::env::var(name) {
                Ok(v) if !v.trim().is_empty() => t.set(kind, parse_seconds(name, &v)?),
                Ok(_) => {}
                Err(std::env::VarError::NotPresent) => {}
                Err(std::env::VarError::NotUnicode(_)) => {
                    return Err(Error::InvalidOption {
                        option: name.into(),
                        reason: "not valid UTF-8".into(),
                    })
                }
            }
        }
        Ok(t)
    }

    /// The timeout of `kind`.
    pub fn get(&self, kind: TimeoutKind) -> Duration {
        match kind {
            TimeoutKind::Connect => self.connect,
            TimeoutKind::Idle => self.idle,
            TimeoutKind::Request => self.request,
        }
    }

    /// Sets the timeout of `kind`.
    pub fn set(&mut self, kind: TimeoutKind, value: Duration) {
        match kind {
            TimeoutKind::Connect => self.connect = value,
            TimeoutKind::Idle => self.idle = value,
            TimeoutKind::Request => self.request = value,
        }
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts::DEFAULT
    }
}

/// Parses a timeout given as whole seconds (1 to [`MAX_TIMEOUT_SECONDS`]); `option` names
/// where it came from in the error.
pub fn parse_seconds(option: &str, value: &str) -> Result<Duration> {
    let v = value.trim();
    let bad = |why: &str| Error::InvalidOption {
        option: option.into(),
        reason: format!("{v:?}: {why}"),
    };
    let n: u64 = v
        .parse()
        .map_err(|_| bad("expected a whole number of seconds"))?;
    if n == 0 {
        return Err(bad("a timeout of 0 s cannot be met; give at least 1"));
    }
    if n > MAX_TIMEOUT_SECONDS {
        return Err(bad(&format!("more than {MAX_TIMEOUT_SECONDS} s (a week)")));
    }
    Ok(Duration::from_secs(n))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn seconds() {
        assert_eq!(parse_seconds("X", " 5 ").unwrap(), Duration::from_secs(5));
        for bad in ["0", "-1", "1.5", "", "ten", "604801"] {
            let e = parse_seconds("X", bad).unwrap_err();
            assert!(matches!(e, Error::InvalidOption { .. }), "{bad}: {e:?}");
            assert!(e.to_string().contains('X'), "{e}");
        }
        assert_eq!(Timeouts::default(), Timeouts::DEFAULT);
    }
}
