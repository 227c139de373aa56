//! Command-line parsing and dispatch.

use clap::{ArgAction, Parser, Subcommand};

use docker_delta::{Error, ExitCode};

/// `println!` that returns the error (with `?`) where `println!` would panic: stdout on a
/// full disk or a closed file.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::output::write_line(format_args!($($arg)*))?
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
        Command::Create(args) => create::run(args, cli.quiet),
        Command::Apply(args) => apply::run(args, cli.quiet),
        Command::Info(args) => info::info(args),
        Command::List(args) => info::list(args),
        Command::Inspect(args) => inspect::run(args),
    };
    match result {
        Ok(code) => code as i32,
        Err(e) => report(&e),
    }
}

/// Prints an error the way every command does, and returns its exit code.
pub fn report(e: &Error) -> i32 {
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
