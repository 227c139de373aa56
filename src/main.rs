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
    remove_temporary_files_on_signals();
    std::process::exit(cli::run());
}

/// On SIGINT, SIGTERM or SIGHUP, removes the temporary files being written (outputs not yet
/// renamed into place, spools; see [`docker_delta::temp`]) and then dies of the signal, as
/// it would have without this (the shell sees 130 for Ctrl-C). Destructors do not run when
/// a signal ends a process, so without this an interrupted create or apply left hidden
/// files of up to an image's size next to its output.
///
/// The signals are blocked in every thread (they inherit the mask set here, before any
/// exists) and taken by one thread with `sigwait`, so the cleaning runs as ordinary code,
/// not in a signal handler.
fn remove_temporary_files_on_signals() {
    const SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];
    // SAFETY: plain calls on a local signal set; the mask is changed before any other
    // thread exists.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in SIGNALS {
            libc::sigaddset(&mut set, s);
        }
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return;
        }
        set
    };
    let spawned = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || loop {
            let mut signal: libc::c_int = 0;
            // SAFETY: `set` and `signal` are valid for the call.
            if unsafe { libc::sigwait(&set, &mut signal) } != 0 {
                continue;
            }
            docker_delta::temp::remove_all();
            // SAFETY: restoring the default action and unblocking the signal in this thread
            // so that raising it ends the process with it.
            unsafe {
                libc::signal(signal, libc::SIG_DFL);
                let mut one: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut one);
                libc::sigaddset(&mut one, signal);
                libc::pthread_sigmask(libc::SIG_UNBLOCK, &one, std::ptr::null_mut());
                libc::raise(signal);
            }
            std::process::exit(128 + signal);
        });
    if spawned.is_err() {
        // No thread to take them: let the signals act as before.
        // SAFETY: as above.
        unsafe {
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        }
    }
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
