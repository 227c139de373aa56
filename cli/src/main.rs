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
mod fleet;
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
  docker://[HOST/]NAME[:TAG|@DIGEST]   an image in a registry (a source; see --creds, --tls-verify)
  PATH                                 transport detected from the content
Write a colon that belongs to a path as \\:

Exit codes:
  0 ok, 1 error, 2 missing dependency (no daemon), 3 invalid input (arguments too),
  4 operation failed, 5 loaded but tagging failed (the docker tag command is printed)";

/// Ship container-image updates as small deltas, and rebuild the new image exactly.
#[derive(Parser, Debug)]
#[command(
    name = "docker-delta",
    about,
    after_help = AFTER_HELP,
    disable_version_flag = true,
    subcommand_required = false
)]
pub struct Cli {
    /// Print the version, the package format versions read and written, and the codec
    /// libraries' versions (with --json: as one JSON object).
    #[arg(short = 'V', long)]
    version: bool,
    /// With --version: print it as JSON.
    #[arg(long, requires = "version")]
    json: bool,
    /// More detailed logs on stderr (-v: each step, -vv: everything).
    #[arg(short, long, action = ArgAction::Count, global = true, display_order = 900)]
    verbose: u8,
    /// Only errors on stderr; no progress bars.
    #[arg(short, long, global = true, display_order = 901)]
    quiet: bool,
    /// Log filter, in tracing's syntax (e.g. `docker_delta=debug`); overrides -v and -q.
    #[arg(long, global = true, value_name = "FILTER", env = "DOCKER_DELTA_LOG",
          value_parser = setting("--log-filter", "DOCKER_DELTA_LOG", log_filter),
          help_heading = "Settings")]
    log_filter: Option<Checked<String>>,
    /// Threads for parallel work (default: the cores this process may run on).
    #[arg(long, global = true, value_name = "N", env = docker_delta::threads::ENV_THREADS,
          value_parser = setting("--threads", docker_delta::threads::ENV_THREADS, thread_count),
          help_heading = "Settings")]
    threads: Option<Checked<usize>>,
    /// Give up when the Docker daemon sends nothing (or takes nothing we send) for this
    /// long; a load or export that keeps moving is never cut [default: 600]
    #[arg(long, global = true, value_name = "SECONDS", value_parser = setting("--daemon-timeout", docker_delta::timeouts::ENV_IDLE_TIMEOUT, seconds),
          env = docker_delta::timeouts::ENV_IDLE_TIMEOUT, help_heading = "Settings")]
    daemon_timeout: Option<Checked<u64>>,
    /// Give up when a small daemon request (version, inspect, list, tag) is not over
    /// within this time [default: 120]
    #[arg(long, global = true, value_name = "SECONDS", value_parser = setting("--daemon-request-timeout", docker_delta::timeouts::ENV_REQUEST_TIMEOUT, seconds),
          env = docker_delta::timeouts::ENV_REQUEST_TIMEOUT, help_heading = "Settings")]
    daemon_request_timeout: Option<Checked<u64>>,
    /// Give up connecting to the Docker daemon after this long [default: 10]
    #[arg(long, global = true, value_name = "SECONDS", value_parser = setting("--daemon-connect-timeout", docker_delta::timeouts::ENV_CONNECT_TIMEOUT, seconds),
          env = docker_delta::timeouts::ENV_CONNECT_TIMEOUT, help_heading = "Settings")]
    daemon_connect_timeout: Option<Checked<u64>>,
    #[command(flatten)]
    registry: RegistryArgs,
    #[command(flatten)]
    limits: LimitArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

/// How registries (`docker://` images) are reached, as skopeo's flags: they apply to every
/// registry the command touches.
#[derive(clap::Args, Debug)]
#[command(next_help_heading = "Registries (docker://)")]
struct RegistryArgs {
    /// Credentials for the registries, USER:PASSWORD (else they are looked up in
    /// --authfile, or $XDG_RUNTIME_DIR/containers/auth.json,
    /// ~/.config/containers/auth.json and $DOCKER_CONFIG/config.json, with their
    /// credential helpers)
    #[arg(long, global = true, value_name = "USER:PASSWORD")]
    creds: Option<String>,
    /// The only auth file to read credentials from [env: REGISTRY_AUTH_FILE]
    #[arg(long, global = true, value_name = "FILE")]
    authfile: Option<std::path::PathBuf>,
    /// Verify the registries' TLS certificates; false also allows plain HTTP (which
    /// a registry on 127.0.0.1 usually speaks)
    #[arg(long, global = true, value_name = "BOOL", default_value_t = true,
          action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    tls_verify: bool,
    /// A directory of CA certificates (*.crt) trusted besides the system's
    #[arg(long, global = true, value_name = "DIR")]
    cert_dir: Option<std::path::PathBuf>,
    /// Give up connecting to a registry (or its token service, or blob storage it
    /// redirects to) after this long [default: 30]
    #[arg(long, global = true, value_name = "SECONDS",
          value_parser = setting("--registry-connect-timeout", docker_delta::timeouts::ENV_REGISTRY_CONNECT_TIMEOUT, seconds),
          env = docker_delta::timeouts::ENV_REGISTRY_CONNECT_TIMEOUT, help_heading = "Settings")]
    registry_connect_timeout: Option<Checked<u64>>,
    /// Give up when a registry sends nothing (or takes nothing we send) for this long; a
    /// download or upload that keeps moving is never cut [default: 300]
    #[arg(long, global = true, value_name = "SECONDS",
          value_parser = setting("--registry-timeout", docker_delta::timeouts::ENV_REGISTRY_TIMEOUT, seconds),
          env = docker_delta::timeouts::ENV_REGISTRY_TIMEOUT, help_heading = "Settings")]
    registry_timeout: Option<Checked<u64>>,
}

/// The safety limits and the memory bound (see README, Limits). Sizes are whole bytes or
/// take a unit K, M, G, T (or Ki, Mi, Gi, Ti): all powers of 1024, as for `docker run
/// --memory`.
#[derive(clap::Args, Debug)]
#[command(next_help_heading = "Limits (sizes: 4096, 64K, 512M, 4G, 1T; K = 1024, as Ki)")]
struct LimitArgs {
    /// The memory bound of a run: layers are diffed whole (xdelta3, zstd) only when the
    /// codec's need fits [default: 512M]
    #[arg(long, global = true, value_name = "SIZE", env = limits::ENV_MAX_MEMORY,
          value_parser = setting("--max-memory", limits::ENV_MAX_MEMORY, limits::parse_size))]
    max_memory: Option<Checked<u64>>,
    /// Largest JSON document (manifest, index, config) read [default: 64M]
    #[arg(long, global = true, value_name = "SIZE", env = limits::ENV_MAX_JSON_SIZE,
          value_parser = setting("--max-json-size", limits::ENV_MAX_JSON_SIZE, limits::parse_size))]
    max_json_size: Option<Checked<u64>>,
    /// Most values in one JSON document [default: 1048576]
    #[arg(long, global = true, value_name = "N", env = limits::ENV_MAX_JSON_VALUES,
          value_parser = setting("--max-json-values", limits::ENV_MAX_JSON_VALUES, limits::parse_count))]
    max_json_values: Option<Checked<u64>>,
    /// Most memory the index of one archive's members may take [default: 64M]
    #[arg(long, global = true, value_name = "SIZE", env = limits::ENV_MAX_ARCHIVE_INDEX,
          value_parser = setting("--max-archive-index", limits::ENV_MAX_ARCHIVE_INDEX, limits::parse_size))]
    max_archive_index: Option<Checked<u64>>,
    /// Most layers in one image [default: 1024]
    #[arg(long, global = true, value_name = "N", env = limits::ENV_MAX_LAYERS,
          value_parser = setting("--max-layers", limits::ENV_MAX_LAYERS, limits::parse_count))]
    max_layers: Option<Checked<u64>>,
    /// Deepest nesting of image indexes [default: 8]
    #[arg(long, global = true, value_name = "N", env = limits::ENV_MAX_INDEX_DEPTH,
          value_parser = setting("--max-index-depth", limits::ENV_MAX_INDEX_DEPTH, limits::parse_count))]
    max_index_depth: Option<Checked<u64>>,
    /// Largest archive member, uncompressed layer, decompressed archive or package blob
    /// [default: 64G]
    #[arg(long, global = true, value_name = "SIZE", env = limits::ENV_MAX_ENTRY_SIZE,
          value_parser = setting("--max-entry-size", limits::ENV_MAX_ENTRY_SIZE, limits::parse_size))]
    max_entry_size: Option<Checked<u64>>,
    /// Largest ratio of decompressed to compressed bytes, checked past 1 GiB
    /// [default: 2000]
    #[arg(long, global = true, value_name = "N", env = limits::ENV_MAX_EXPANSION_RATIO,
          value_parser = setting("--max-expansion-ratio", limits::ENV_MAX_EXPANSION_RATIO, limits::parse_count))]
    max_expansion_ratio: Option<Checked<u64>>,
}

use docker_delta::transport as limits;

#[derive(Subcommand, Debug)]
enum Command {
    /// Make a delta package that turns OLD into NEW (or a full package of NEW).
    #[command(after_help = create::EXAMPLES, override_usage = create::USAGE)]
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
    /// Store a package in a registry next to the image it rebuilds (an OCI artifact).
    #[command(after_help = fleet::PUSH_EXAMPLES)]
    Push(fleet::PushArgs),
    /// Make and push the packages from old versions to a new image in a registry.
    #[command(after_help = fleet::PUBLISH_EXAMPLES)]
    Publish(fleet::PublishArgs),
    /// Pull an image through the smallest delta from what is at hand (full pull otherwise).
    #[command(after_help = fleet::PULL_EXAMPLES)]
    Pull(fleet::PullArgs),
    /// List the delta packages published for an image.
    #[command(after_help = fleet::LIST_EXAMPLES)]
    ListDeltas(fleet::ListArgs),
    /// Print a shell completion script.
    #[command(after_help = COMPLETION_EXAMPLES)]
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write the man pages (docker-delta.1, docker-delta-create.1, ...) into DIR.
    #[command(hide = true)]
    Man {
        /// The directory to write them to (created if missing).
        dir: std::path::PathBuf,
    },
}

const COMPLETION_EXAMPLES: &str = "\
Examples:
  # For this bash session
  source <(docker-delta completion bash)
  # Installed (scripts/install-cli.sh does this)
  docker-delta completion bash > ~/.local/share/bash-completion/completions/docker-delta
  docker-delta completion zsh > \"${fpath[1]}/_docker-delta\"
  docker-delta completion fish > ~/.config/fish/completions/docker-delta.fish";

/// A setting's value as parsed, or why it does not parse (the option and the reason).
///
/// Parsing never fails inside clap: clap reads a global option's environment variable
/// even where the option is given after the subcommand, and would refuse a bad variable
/// that the option overrides. The value that wins is checked once parsing is over
/// ([`Checked::get`]).
#[derive(Debug, Clone)]
pub struct Checked<T>(Result<T, (String, String)>);

impl<T: Clone> Checked<T> {
    fn new(r: docker_delta::Result<T>) -> Self {
        Checked(r.map_err(|e| match e {
            Error::InvalidOption { option, reason } => (option, reason),
            other => (String::new(), other.to_string()),
        }))
    }

    /// The value, or [`Error::InvalidOption`] naming the option, its variable and the
    /// value.
    fn get(this: &Option<Checked<T>>) -> docker_delta::Result<Option<T>> {
        match this {
            None => Ok(None),
            Some(Checked(Ok(v))) => Ok(Some(v.clone())),
            Some(Checked(Err((option, reason)))) => Err(Error::InvalidOption {
                option: option.clone(),
                reason: reason.clone(),
            }),
        }
    }
}

/// A value parser for a setting: `parse(name, value)`, where `name` says
/// "--option or VARIABLE".
fn setting<T: Clone + Send + Sync + 'static>(
    option: &'static str,
    env: &'static str,
    parse: fn(&str, &str) -> docker_delta::Result<T>,
) -> impl Fn(&str) -> Result<Checked<T>, String> + Clone + Send + Sync + 'static {
    move |v| Ok(Checked::new(parse(&format!("{option} or {env}"), v)))
}

fn seconds(option: &str, v: &str) -> docker_delta::Result<u64> {
    docker_delta::timeouts::parse_seconds(option, v).map(|d| d.as_secs())
}

fn thread_count(option: &str, v: &str) -> docker_delta::Result<usize> {
    docker_delta::threads::parse(option, v)
}

fn log_filter(option: &str, v: &str) -> docker_delta::Result<String> {
    tracing_subscriber::EnvFilter::try_new(v)
        .map(|_| v.to_string())
        .map_err(|e| Error::InvalidOption {
            option: option.into(),
            reason: format!("{:?}: {e}", v.trim()),
        })
}

impl Cli {
    /// The daemon timeouts: the options' (or their environment variables'), the defaults
    /// for the rest.
    fn timeouts(&self) -> docker_delta::Result<docker_delta::Timeouts> {
        use docker_delta::timeouts::TimeoutKind;
        let mut t = docker_delta::Timeouts::DEFAULT;
        for (kind, value) in [
            (TimeoutKind::Idle, &self.daemon_timeout),
            (TimeoutKind::Request, &self.daemon_request_timeout),
            (TimeoutKind::Connect, &self.daemon_connect_timeout),
        ] {
            if let Some(s) = Checked::get(value)? {
                t.set(kind, std::time::Duration::from_secs(s));
            }
        }
        Ok(t)
    }

    /// The limits: the options' (or their environment variables'), the built-in ones for
    /// the rest.
    fn limits(&self) -> docker_delta::Result<limits::Limits> {
        let a = &self.limits;
        let mut l = limits::Limits::DEFAULT;
        let usize_of = |option: &str, v: u64| {
            usize::try_from(v).map_err(|_| Error::InvalidOption {
                option: option.into(),
                reason: format!("{v}: too large for this machine"),
            })
        };
        for (value, field) in [
            (&a.max_memory, &mut l.max_memory),
            (&a.max_json_size, &mut l.max_json_size),
            (&a.max_json_values, &mut l.max_json_values),
            (&a.max_archive_index, &mut l.max_archive_index),
            (&a.max_entry_size, &mut l.max_entry_size),
            (&a.max_expansion_ratio, &mut l.max_expansion_ratio),
        ] {
            if let Some(v) = Checked::get(value)? {
                *field = v;
            }
        }
        if let Some(v) = Checked::get(&a.max_layers)? {
            l.max_layers = usize_of("--max-layers", v)?;
        }
        if let Some(v) = Checked::get(&a.max_index_depth)? {
            l.max_index_depth = usize_of("--max-index-depth", v)?;
        }
        Ok(l)
    }
}

/// What every command gets from the global options.
pub struct Context {
    /// `-q`.
    pub quiet: bool,
    /// The daemon timeouts.
    pub timeouts: docker_delta::Timeouts,
    /// The limits, also made the process's default.
    pub limits: limits::Limits,
    /// How registries are reached.
    pub registry: docker_delta::transport::registry::RegistryOptions,
}

impl Context {
    /// Options to open an image with.
    pub fn open_options(
        &self,
        platform: Option<docker_delta::Platform>,
    ) -> docker_delta::OpenOptions {
        docker_delta::OpenOptions {
            platform,
            limits: self.limits.clone(),
            timeouts: Some(self.timeouts),
            registry: self.registry.clone(),
        }
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
    // daemon: a script must not read a typo as that. Bad arguments are invalid input; so
    // are bad values of the environment variables behind the options.
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
                0 // --help
            };
        }
    };
    if cli.version {
        return match print_version(cli.json) {
            Ok(()) => 0,
            Err(e) => report(&e, cli.json),
        };
    }
    let Some(command) = &cli.command else {
        let mut cmd = <Cli as clap::CommandFactory>::command();
        eprintln!("{}", cmd.render_help());
        eprintln!("docker-delta: error: a command is required (see above)");
        return ExitCode::InvalidInput as i32;
    };
    let cx = match settings(&cli) {
        Ok(cx) => cx,
        Err(e) => return report(&e, command.json()),
    };
    let result = match command {
        Command::Create(args) => create::run(args, &cx),
        Command::Apply(args) => apply::run(args, &cx),
        Command::Info(args) => info::info(args),
        Command::List(args) => info::list(args),
        Command::Inspect(args) => inspect::run(args, &cx),
        Command::Push(args) => fleet::push(args, &cx),
        Command::Publish(args) => fleet::publish(args, &cx),
        Command::Pull(args) => fleet::pull(args, &cx),
        Command::ListDeltas(args) => fleet::list(args, &cx),
        Command::Completion { shell } => completion(*shell),
        Command::Man { dir } => man_pages(dir),
    };
    match result {
        Ok(code) => code as i32,
        Err(e) => report(&e, command.json()),
    }
}

/// Checks the settings (options, or their environment variables), starts logging and
/// gives the library its limits and thread count.
fn settings(cli: &Cli) -> docker_delta::Result<Context> {
    let filter = Checked::get(&cli.log_filter)?;
    let threads = Checked::get(&cli.threads)?;
    let timeouts = cli.timeouts()?;
    let limits = cli.limits()?;
    init_logging(cli.verbose, cli.quiet, filter.as_deref());
    // For the reads that take no limits of their own (a package's check after it is
    // written, a layout's index), and the parallel work.
    limits::Limits::set_process_default(limits.clone());
    if let Some(n) = threads {
        docker_delta::threads::set(n);
    }
    let r = &cli.registry;
    let mut registry = docker_delta::transport::registry::RegistryOptions {
        auth: docker_delta::transport::registry::auth::AuthSources::from_env(
            r.creds.as_deref(),
            r.authfile.as_deref(),
        )?,
        tls_verify: r.tls_verify,
        cert_dir: r.cert_dir.clone(),
        ..Default::default()
    };
    if let Some(s) = Checked::get(&r.registry_connect_timeout)? {
        registry.connect_timeout = std::time::Duration::from_secs(s);
    }
    if let Some(s) = Checked::get(&r.registry_timeout)? {
        registry.idle_timeout = std::time::Duration::from_secs(s);
    }
    Ok(Context {
        quiet: cli.quiet,
        timeouts,
        limits,
        registry,
    })
}

/// `--version`: the first line as clap would print it, then [`docker_delta::build_info`].
fn print_version(json: bool) -> docker_delta::Result<()> {
    let info = docker_delta::build_info();
    if json {
        output::print_json(&info)?;
    } else {
        outln!("docker-delta {}", env!("CARGO_PKG_VERSION"));
        outln!("{info}");
    }
    Ok(())
}

/// `completion SHELL`: the script clap_complete generates from the definitions above.
fn completion(shell: clap_complete::Shell) -> docker_delta::Result<ExitCode> {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, "docker-delta", &mut buf);
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(&buf)
        .and_then(|()| out.flush())
        .map_err(|e| Error::io("standard output", e))?;
    Ok(ExitCode::Ok)
}

/// `man DIR`: one page for the command and one per visible subcommand
/// (`docker-delta-create.1`, ...), each written to a temporary file and renamed.
fn man_pages(dir: &std::path::Path) -> docker_delta::Result<ExitCode> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut cmd = <Cli as clap::CommandFactory>::command();
    let mut pages = vec![("docker-delta".to_string(), cmd.clone())];
    // Built, the subcommands carry the global options (settings, limits) too.
    cmd.build();
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        let name = format!("docker-delta-{}", sub.get_name());
        // The page's title and synopsis name the whole command line.
        let sub = sub
            .clone()
            .name(name.clone())
            .display_name(name.clone())
            .bin_name(format!("docker-delta {}", sub.get_name()));
        pages.push((name, sub));
    }
    for (name, page) in pages {
        let mut buf = Vec::new();
        clap_mangen::Man::new(page)
            .render(&mut buf)
            .map_err(|e| Error::io(dir, e))?;
        let path = dir.join(format!("{name}.1"));
        let tmp = dir.join(format!(".{name}.1.tmp"));
        std::fs::write(&tmp, &buf).map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
    }
    Ok(ExitCode::Ok)
}

impl Command {
    /// Whether the command was asked for JSON output (`--json`).
    fn json(&self) -> bool {
        match self {
            Command::Create(a) => a.json,
            Command::Apply(a) => a.json,
            Command::Info(a) | Command::List(a) => a.json,
            Command::Inspect(a) => a.json,
            Command::Push(a) => a.json,
            Command::Publish(a) => a.json,
            Command::Pull(a) => a.json,
            Command::ListDeltas(a) => a.json,
            Command::Completion { .. } | Command::Man { .. } => false,
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

fn init_logging(verbose: u8, quiet: bool, filter: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "docker_delta=debug,info",
        // Everything, but ureq's own request and response logs, which print whole URLs: a
        // redirect's signed query (object storage's credential for one blob) would show.
        // Our own logs name every request without its query; `--log-filter ureq=debug`
        // still turns ureq's on for whoever wants them.
        (false, _) => "trace,ureq=info,ureq_proto=info",
    };
    // The filter was checked when the options were parsed.
    let filter = EnvFilter::new(filter.unwrap_or(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

fn main() {
    forget_empty_settings();
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

/// Removes this program's environment variables that are set but empty, before anything
/// reads them (and before any other thread exists): `DOCKER_DELTA_THREADS= docker-delta
/// ...` means "not set", as for most Unix tools, rather than a bad value.
fn forget_empty_settings() {
    let empty: Vec<std::ffi::OsString> = std::env::vars_os()
        .filter(|(k, v)| {
            k.to_str().is_some_and(|k| k.starts_with("DOCKER_DELTA_"))
                && v.to_str().is_some_and(|v| v.trim().is_empty())
        })
        .map(|(k, _)| k)
        .collect();
    for k in empty {
        std::env::remove_var(k);
    }
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
            docker_delta::temp::remove_all_before_exit();
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
