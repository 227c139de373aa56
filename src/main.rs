//! The `docker-delta` command: a thin layer over the library.

mod cli;

fn main() {
    // Rust ignores SIGPIPE, so `docker-delta inspect --json | head` would panic on the
    // closed stdout. Behave like other Unix tools instead: end quietly. (The daemon client
    // writes to its socket with MSG_NOSIGNAL, so this only concerns stdout and stderr.)
    // SAFETY: setting a signal disposition to its default at start-up, before any thread
    // exists, has no preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    keep_large_blocks_out_of_arenas();
    std::process::exit(cli::run());
}

/// glibc serves a block of 128 KiB or more with its own mapping, given back when freed, but
/// raises that threshold to the size of each such block freed (up to 32 MiB). The
/// multi-MiB buffers that create's and apply's worker threads allocate and free by the
/// hundred then come from per-thread arenas, which keep what is freed: on the kernel pair
/// with a changed 256 MiB file and 8 worker threads, create peaked at 850 MiB, 537 MiB with
/// the threshold fixed. Fixing it (which stops the raising) keeps those buffers in
/// mappings of their own; smaller blocks still come from the arenas.
///
/// The raising also set the trim threshold (free memory an arena keeps at its top) to twice
/// the mmap threshold; fixed, it stays at 128 KiB, and the blocks of a few hundred KiB that
/// every small diff allocates and frees (the suffix sorter's buckets) were given back to
/// the kernel and faulted in again each time: on a layer of 400 000 small files create took
/// 80 s, 55 of them in the kernel, instead of 37 s with the trim threshold at twice the
/// mmap threshold, as glibc would have set it.
fn keep_large_blocks_out_of_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it is called before any thread
    // exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 2 * MMAP_THRESHOLD);
    }
}

/// Blocks of this size and larger get mappings of their own (see
/// [`keep_large_blocks_out_of_arenas`]).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 1 << 20;
