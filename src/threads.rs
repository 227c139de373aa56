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

/// How much lower than the payload lanes' threads the codec's search workers run while
/// they encode (see [`yield_to_lanes`]). Create, binary against binary in turns on 2
/// cores (the packages byte for byte the same): tools 24.4 s at 0, 23.0 at 3, 21.7 at 6,
/// 20.3 at 10, 21.1 at 19 (where the searches weigh no more than a small lane's
/// speculative xz); with 10, arm64 25.6 -> 22.1 s, kernel 28.8 -> 26.7, jvm 30.3 -> 28.6,
/// node, ml and go unchanged (their lanes wait for memory or bytes, not for a core).
pub(crate) const SEARCH_NICE: i32 = 10;

/// Lowers the calling thread's priority by [`SEARCH_NICE`] (on Linux, where a thread has
/// its own; elsewhere nothing). Each of the codec's search workers calls it once, as it
/// starts, so that the payload lanes' encoders, which each compress on one thread, get a
/// whole core whenever they have bytes: they are what create ends on (tools pair: zstd 18
/// alone for its last 10 s), while the searches run on every core and are over sooner or
/// later whoever waits. The scheduler stays work-conserving: a lane with nothing to
/// compress takes nothing from the searches. Beside other work on the machine, the
/// searches yield to it too.
pub(crate) fn yield_to_lanes() {
    lower_this_thread("a search worker's", |now| now + SEARCH_NICE);
}

/// Lowers the calling thread's priority by [`SEARCH_NICE`], as [`yield_to_lanes`] does:
/// each of the threads that decode a layer's chunks on apply calls it once, as it starts,
/// so that the thread that hashes and writes the layer in order gets a core whenever it
/// has bytes. With three threads at one priority on 2 cores it got two thirds of one and
/// fell behind, then hashed the last 30 MB alone once the decoding was over. apply, 20 runs
/// each (hyperfine): debian 214 -> 209 ms, multilayer 382 -> 370 ms, kernel and tools the
/// same.
pub(crate) fn yield_to_writer() {
    lower_this_thread("a decoding worker's", |now| now + SEARCH_NICE);
}

/// Gives the calling thread the lowest priority there is (nice 19; on Linux, elsewhere
/// nothing): for work done in case it is needed (a small lane's speculative xz), which
/// must take a core from nothing else.
pub(crate) fn lowest_priority() {
    lower_this_thread("a speculative encoder's", |_| 19);
}

/// Sets the calling thread's nice value to `to(now)`, at most 19. A process cannot raise a
/// thread's priority back without privilege: only threads that end with their work call
/// it. Failing to is logged, not an error: the work is the same.
#[cfg_attr(not(target_os = "linux"), allow(unused_variables))]
fn lower_this_thread(whose: &str, to: impl FnOnce(i32) -> i32) {
    #[cfg(target_os = "linux")]
    {
        // On Linux, `setpriority` with no pid sets the calling thread's.
        let now = rustix::process::getpriority_process(None).unwrap_or(0);
        if let Err(e) = rustix::process::setpriority_process(None, to(now).min(19)) {
            tracing::debug!(error = %e, "could not lower {whose} priority");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    #[cfg(target_os = "linux")]
    #[test]
    fn workers_yield_to_the_lanes_or_the_writer_and_a_speculative_one_to_all() {
        let here = rustix::process::getpriority_process(None).unwrap();
        // On threads of their own: the test's threads are shared.
        let workers: [fn(); 2] = [super::yield_to_lanes, super::yield_to_writer];
        for worker in workers {
            std::thread::spawn(move || {
                let before = rustix::process::getpriority_process(None).unwrap();
                worker();
                let after = rustix::process::getpriority_process(None).unwrap();
                assert_eq!(after, (before + super::SEARCH_NICE).min(19));
            })
            .join()
            .unwrap();
        }
        std::thread::spawn(|| {
            super::lowest_priority();
            assert_eq!(rustix::process::getpriority_process(None).unwrap(), 19);
        })
        .join()
        .unwrap();
        // Only those threads: this one (and so the process) keeps its priority.
        assert_eq!(rustix::process::getpriority_process(None).unwrap(), here);
    }

    #[test]
    fn parse() {
        assert_eq!(super::parse("X", " 3 ").unwrap(), 3);
        for bad in ["0", "abc", "-1", "", "2.0"] {
            let e = super::parse("DOCKER_DELTA_THREADS", bad).unwrap_err();
            assert!(e.to_string().contains("DOCKER_DELTA_THREADS"), "{e}");
        }
    }
}
