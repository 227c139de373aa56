//! How many threads docker-delta's parallel work uses.

use std::sync::OnceLock;

use crate::error::{Error, Result};

/// Environment variable for [`threads`].
pub const ENV_THREADS: &str = "DOCKER_DELTA_THREADS";

static THREADS: OnceLock<usize> = OnceLock::new();

/// The threads parallel work uses (encoding and decoding `files` chunks, re-deflating gzip
/// members, learning a BTF map, a multi-threaded zstd payload): what [`set`] set, else
/// `DOCKER_DELTA_THREADS` when it is a positive number, else the cores this process may run
/// on (`std::thread::available_parallelism`, which honours CPU affinity and cgroup
/// quotas). Decided once per process; a variable that does not parse is logged and
/// ignored (call [`from_env`] first to have it refused instead).
pub fn threads() -> usize {
    *THREADS.get_or_init(|| match from_env() {
        Ok(Some(n)) => n,
        Ok(None) => available(),
        Err(e) => {
            tracing::warn!("{e}; using one thread per core");
            available()
        }
    })
}

/// The cores this process may run on.
fn available() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `DOCKER_DELTA_THREADS`, if set; anything but a positive whole number is refused with
/// [`Error::InvalidOption`] naming the variable and the value.
pub fn from_env() -> Result<Option<usize>> {
    crate::transport::env_value(ENV_THREADS)?
        .map(|v| parse(ENV_THREADS, &v))
        .transpose()
}

/// Parses a thread count (a positive whole number); `option` names where it came from.
pub fn parse(option: &str, value: &str) -> Result<usize> {
    let v = value.trim();
    match v.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(Error::InvalidOption {
            option: option.into(),
            reason: format!("{v:?}: expected a positive whole number of threads"),
        }),
    }
}

/// Sets the thread count for the rest of the process, before any parallel work; returns
/// `false` (and changes nothing) when [`threads`] was already decided.
pub fn set(n: usize) -> bool {
    THREADS.set(n.max(1)).is_ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    #[test]
    fn parse() {
        assert_eq!(super::parse("X", " 3 ").unwrap(), 3);
        for bad in ["0", "abc", "-1", "", "2.0"] {
            let e = super::parse("DOCKER_DELTA_THREADS", bad).unwrap_err();
            assert!(e.to_string().contains("DOCKER_DELTA_THREADS"), "{e}");
        }
    }
}
