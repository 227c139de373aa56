//! The `docker-delta` command: command-line parsing and dispatch, a thin layer over the
//! `docker_delta` library.

use clap::{ArgAction, Parser, Subcommand};

use docker_delta::{Error, ExitCode};

/// `println!` that returns the error (with `?`) where `println!` would panic: stdout on a
/// full disk or a closed file.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::write_line(format_args!($($arg)*))?
    };
}

mod apply;
mod create;
mod info;
mod inspect;
mod output;
mod progress;

const AFTER_HELP: &str = "\
Image references (skopeo syntax):
  docker-archive:PATH[:NAME:TAG|:@N]   a `docker save` tar (Docker <= 24, >= 25, skopeo, crane)
  oci:PATH[:REF]                       an OCI image-layout directory
  oci-archive:PATH[:REF]               a tar of an OCI image layout
  docker-daemon:NAME:TAG               an image in the Docker daemon (DOCKER_HOST)
  PATH                                 transport detected from the content
Write a colon that belongs to a path as \\:

Exit codes:
  0 ok, 1 error, 2 missing dependency (no daemon), 3 invalid input (arguments too),
  4 operation failed, 5 loaded but tagging failed (the docker tag command is printed)";

/// Ship container-image updates as small deltas, and rebuild the new image exactly.
#[derive(Parser, Debug)]
#[command(name = "docker-delta", version, about, after_help = AFTER_HELP)]
pub struct Cli {
    /// More detailed logs on stderr (-v: each step, -vv: everything).
    #[arg(short, long, action = ArgAction::Count, global = true)]
    verbose: u8,
    /// Only errors on stderr; no progress bars.
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Give up when the Docker daemon sends nothing (or takes nothing we send) for this
    /// long; a load or export that keeps moving is never cut [env:
    /// DOCKER_DELTA_DAEMON_TIMEOUT; default: 600]
    #[arg(long, global = true, value_name = "SECONDS", value_parser = seconds())]
    daemon_timeout: Option<u64>,
    /// Give up when a small daemon request (version, inspect, list, tag) is not over
    /// within this time [env: DOCKER_DELTA_DAEMON_REQUEST_TIMEOUT; default: 120]
    #[arg(long, global = true, value_name = "SECONDS", value_parser = seconds())]
    daemon_request_timeout: Option<u64>,
    /// Give up connecting to the Docker daemon after this long [env:
    /// DOCKER_DELTA_DAEMON_CONNECT_TIMEOUT; default: 10]
    #[arg(long, global = true, value_name = "SECONDS", value_parser = seconds())]
    daemon_connect_timeout: Option<u64>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Make a delta package that turns OLD into NEW (or a full package of NEW).
    #[command(after_help = create::EXAMPLES)]
    Create(create::Args),
    /// Rebuild the new image from a package and the old image; write it or load it.
    #[command(after_help = apply::EXAMPLES)]
    Apply(apply::Args),
    /// Show a package's metadata: format, old and new images, sizes, savings.
    #[command(after_help = info::INFO_EXAMPLES)]
    Info(info::Args),
    /// List how each layer of the new image is rebuilt.
    #[command(after_help = info::LIST_EXAMPLES)]
    List(info::Args),
    /// Show what an image is made of: transport, manifest format, image ID, tags, layers.
    #[command(after_help = inspect::EXAMPLES)]
    Inspect(inspect::Args),
}

/// Whole seconds, from 1 to a week, for the timeout options.
fn seconds() -> clap::builder::RangedU64ValueParser {
    clap::value_parser!(u64).range(1..=docker_delta::timeouts::MAX_TIMEOUT_SECONDS)
}

impl Cli {
    /// The daemon timeouts: the environment's (or the defaults), then the options'.
    fn timeouts(&self) -> docker_delta::Result<docker_delta::Timeouts> {
        use docker_delta::timeouts::TimeoutKind;
        let mut t = docker_delta::Timeouts::from_env()?;
        for (kind, value) in [
            (TimeoutKind::Idle, self.daemon_timeout),
            (TimeoutKind::Request, self.daemon_request_timeout),
            (TimeoutKind::Connect, self.daemon_connect_timeout),
        ] {
            if let Some(s) = value {
                t.set(kind, std::time::Duration::from_secs(s));
            }
        }
        Ok(t)
    }
}

/// Opens an image for a command.
pub fn open_image(
    reference: &docker_delta::ImageReference,
    options: &docker_delta::OpenOptions,
) -> docker_delta::Result<Box<dyn docker_delta::ImageSource>> {
    docker_delta::open(reference, options)
}

/// Refuses an output that is one of the command's inputs (`--force` would replace the
/// image or package being read with what is made from it).
pub fn refuse_output_among_inputs(
    output: &std::path::Path,
    inputs: &[&std::path::Path],
) -> docker_delta::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let Ok(out) = std::fs::metadata(output) else {
        return Ok(());
    };
    for input in inputs {
        if let Ok(m) = std::fs::metadata(input) {
            if (m.dev(), m.ino()) == (out.dev(), out.ino()) {
                return Err(Error::InvalidLayout {
                    path: output.to_path_buf(),
                    reason: format!(
                        "is also an input ({}); write the output elsewhere",
                        input.display()
                    ),
                });
            }
        }
    }
    Ok(())
}

/// Refuses `-o -`: outputs are written beside their final name and renamed once verified,
/// which standard output cannot do (it made a file named `-`).
pub fn refuse_stdout_output(output: &std::path::Path) -> docker_delta::Result<()> {
    if output.as_os_str() == "-" {
        return Err(Error::InvalidOption {
            option: "-o".into(),
            reason: "writing to standard output is not supported (outputs are verified \
                     before they take their name); give a file path"
                .into(),
        });
    }
    Ok(())
}

/// Parses arguments, runs the command, prints errors, and returns the exit code.
pub fn run() -> i32 {
    // clap exits with 2 on a usage error, the code this command gives a missing Docker
    // daemon: a script must not read a typo as that. Bad arguments are invalid input.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            if e.use_stderr() && output::json_requested_in_args() {
                return report(&output::usage_error(&e), true);
            }
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::InvalidInput as i32
            } else {
                0 // --help, --version
            };
        }
    };
    init_logging(cli.verbose, cli.quiet);
    let result = match &cli.command {
        Command::Create(args) => cli.timeouts().and_then(|t| create::run(args, cli.quiet, t)),
        Command::Apply(args) => cli.timeouts().and_then(|t| apply::run(args, cli.quiet, t)),
        Command::Info(args) => info::info(args),
        Command::List(args) => info::list(args),
        Command::Inspect(args) => cli.timeouts().and_then(|t| inspect::run(args, t)),
    };
    match result {
        Ok(code) => code as i32,
        Err(e) => report(&e, cli.command.json()),
    }
}

impl Command {
    /// Whether the command was asked for JSON output (`--json`).
    fn json(&self) -> bool {
        match self {
            Command::Create(a) => a.json,
            Command::Apply(a) => a.json,
            Command::Info(a) | Command::List(a) => a.json,
            Command::Inspect(a) => a.json,
        }
    }
}

/// Prints an error the way every command does (with `json`, as one `error` document on
/// stderr; see docs/JSON.md), and returns its exit code.
pub fn report(e: &Error, json: bool) -> i32 {
    if json {
        output::print_error_json(e);
        return e.exit_code() as i32;
    }
    eprintln!("docker-delta: error: {e}");
    let code = e.exit_code();
    if code == ExitCode::TagWarning {
        eprintln!("docker-delta: warning: the image is loaded but not tagged");
    }
    code as i32
}

fn init_logging(verbose: u8, quiet: bool) {
    use tracing_subscriber::EnvFilter;
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "docker_delta=debug,info",
        (false, _) => "trace",
    };
    let filter =
        EnvFilter::try_from_env("DOCKER_DELTA_LOG").unwrap_or_else(|_| EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

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
    std::process::exit(run());
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
