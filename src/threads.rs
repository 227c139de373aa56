//! How many threads docker-delta's parallel work uses.

use std::sync::OnceLock;

/// The threads parallel work uses (encoding and decoding `files` chunks, re-deflating gzip
/// members, learning a BTF map, a multi-threaded zstd payload): `DOCKER_DELTA_THREADS` when
/// it is a positive number, else the cores this process may run on
/// (`std::thread::available_parallelism`, which honours CPU affinity and cgroup quotas).
/// Decided once per process.
pub fn threads() -> usize {
    static THREADS: OnceLock<usize> = OnceLock::new();
    *THREADS.get_or_init(|| {
        std::env::var("DOCKER_DELTA_THREADS")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|&n| n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    })
}
