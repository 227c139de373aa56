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
    std::process::exit(cli::run());
}
