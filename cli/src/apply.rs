//! `docker-delta apply`.

use std::path::PathBuf;

use docker_delta::compression::Compression;
use docker_delta::daemon::DockerClient;
use docker_delta::delta::apply::{self, ApplyOptions};
use docker_delta::delta::deliver;
use docker_delta::delta::format::Package;
use docker_delta::transport::docker_daemon::sink::DaemonSink;
use docker_delta::transport::registry::auth::AuthSources;
use docker_delta::transport::registry::RegistryOptions;
use docker_delta::transport::{ImageName, ImageSink, SinkOptions};
use docker_delta::{ExitCode, ImageReference, Platform, Result};

use super::output::print_json;
use super::progress::Bars;

pub const EXAMPLES: &str = "\
Examples:
  # Rebuild into a file that `docker load` accepts (base image looked up in the daemon)
  docker-delta apply app-1-to-2.ddelta -o app-2.tar
  # Base image from a file, output as an OCI layout
  docker-delta apply app-1-to-2.ddelta --base docker-archive:app-1.tar -o oci:./layout:2
  # Straight into Docker, under another name (--load --tag registry.local/app:2 too)
  docker-delta apply app-1-to-2.ddelta -o docker-daemon:registry.local/app:2
  # Stream the archive into `docker load` (or ssh, or a file); with pipefail, a failure
  # midway fails the pipeline and nothing is loaded
  set -o pipefail; docker-delta apply app-1-to-2.ddelta --base app-1.tar -o - | docker load
  # Base image from a registry, new image pushed next to it (base layers mounted, not
  # uploaded again; --tls-verify=false for a plain-HTTP registry)
  docker-delta apply app-1-to-2.ddelta --base docker://registry.local/app:1 \\
      -o docker://registry.local/app:2
  # Read the base from one registry, push to another with its own credentials, zstd layers
  docker-delta apply app-1-to-2.ddelta --base docker://mirror.local/app:1 --src-tls-verify=false \\
      --dest-creds ci:secret --dest-compress-format zstd -o docker://registry.local/app:2
  # Check the package and the base image without writing anything
  docker-delta apply app-1-to-2.ddelta --base app-1.tar -o out.tar --dry-run";

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The delta package.
    package: PathBuf,
    /// The old image the delta was made against (default: its image ID in the Docker daemon).
    #[arg(long, value_name = "OLD")]
    base: Option<String>,
    /// Where to write the image: PATH (docker-archive), docker-archive:PATH[:name:tag],
    /// oci:DIR[:ref], oci-archive:PATH[:ref], docker-daemon:NAME:TAG (load into the
    /// daemon and tag) or docker://HOST/NAME[:TAG] (push to a registry: the image ID is
    /// the new image's, the manifest digest a new one); `-` streams a docker-archive to
    /// standard output (not a terminal), its index and manifest last, so that a stream cut
    /// by a failure never loads.
    #[arg(short, long, value_name = "OUT", required_unless_present = "load")]
    output: Option<String>,
    /// Load the image into the Docker daemon (DOCKER_HOST) and tag it with its own tag
    /// (or --tag): `-o docker-daemon:NAME:TAG` without naming it.
    #[arg(long, conflicts_with = "output")]
    load: bool,
    /// Name the image NAME:TAG instead of the new image's own tag.
    #[arg(long, value_name = "NAME:TAG")]
    tag: Option<String>,
    /// Platform to choose if the base is a multi-platform index (default: the platform
    /// the package was made from).
    #[arg(long)]
    platform: Option<Platform>,
    /// Overwrite OUT if it exists.
    #[arg(long)]
    force: bool,
    /// Check, writing nothing, what can be checked without rebuilding: the package's
    /// checksums, that the base image has every layer it needs, and that OUT can be
    /// written. Layers are not rebuilt, so a damaged base layer is found only by a real
    /// run (which then writes nothing either).
    #[arg(long)]
    dry_run: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    src: SrcRegistry,
    #[command(flatten)]
    dest: DestRegistry,
}

/// How the base image's registry is reached, when it differs from the global options.
#[derive(clap::Args, Debug)]
#[command(next_help_heading = "Registries: the base (--base docker://...)")]
struct SrcRegistry {
    /// Credentials for the base's registry, USER:PASSWORD (instead of --creds)
    #[arg(long, value_name = "USER:PASSWORD")]
    src_creds: Option<String>,
    /// The only auth file for the base's registry (instead of --authfile)
    #[arg(long, value_name = "FILE")]
    src_authfile: Option<PathBuf>,
    /// Verify the base registry's TLS certificate (instead of --tls-verify)
    #[arg(long, value_name = "BOOL", action = clap::ArgAction::Set, num_args = 0..=1,
          default_missing_value = "true")]
    src_tls_verify: Option<bool>,
    /// CA certificates (*.crt) for the base's registry (instead of --cert-dir)
    #[arg(long, value_name = "DIR")]
    src_cert_dir: Option<PathBuf>,
}

/// How the output's registry is reached, when it differs from the global options.
#[derive(clap::Args, Debug)]
#[command(next_help_heading = "Registries: the output (-o docker://...)")]
struct DestRegistry {
    /// Credentials for the output's registry, USER:PASSWORD (instead of --creds)
    #[arg(long, value_name = "USER:PASSWORD")]
    dest_creds: Option<String>,
    /// The only auth file for the output's registry (instead of --authfile)
    #[arg(long, value_name = "FILE")]
    dest_authfile: Option<PathBuf>,
    /// Verify the output registry's TLS certificate (instead of --tls-verify)
    #[arg(long, value_name = "BOOL", action = clap::ArgAction::Set, num_args = 0..=1,
          default_missing_value = "true")]
    dest_tls_verify: Option<bool>,
    /// CA certificates (*.crt) for the output's registry (instead of --cert-dir)
    #[arg(long, value_name = "DIR")]
    dest_cert_dir: Option<PathBuf>,
    /// How the layers pushed are compressed: gzip (every Docker pulls it) or zstd
    /// (smaller and faster; Docker 23 and later, containerd 1.5 and later)
    #[arg(long, value_name = "FORMAT", default_value = "gzip", value_parser = ["gzip", "zstd"])]
    dest_compress_format: String,
    /// The size of each part of a chunked blob upload (e.g. 8M; K = 1024) [default: 16M]
    #[arg(long, value_name = "SIZE")]
    dest_chunk_size: Option<String>,
}

/// The global registry options with a command's overrides (`--src-*`, `--dest-*`):
/// credentials given there replace where the global ones are looked up.
fn overridden(
    global: &RegistryOptions,
    creds: Option<&str>,
    authfile: Option<&std::path::Path>,
    tls_verify: Option<bool>,
    cert_dir: Option<&std::path::Path>,
) -> Result<RegistryOptions> {
    let mut o = global.clone();
    if creds.is_some() || authfile.is_some() {
        o.auth = AuthSources::from_env(creds, authfile)?;
    }
    if let Some(v) = tls_verify {
        o.tls_verify = v;
    }
    if let Some(d) = cert_dir {
        o.cert_dir = Some(d.to_path_buf());
    }
    Ok(o)
}

pub fn run(args: &Args, cx: &super::Context) -> Result<ExitCode> {
    let (quiet, timeouts) = (cx.quiet, cx.timeouts);
    let package = Package::open_with(&args.package, &cx.limits)?;
    let s = &args.src;
    let mut open = cx.open_options(args.platform.clone());
    open.registry = overridden(
        &cx.registry,
        s.src_creds.as_deref(),
        s.src_authfile.as_deref(),
        s.src_tls_verify,
        s.src_cert_dir.as_deref(),
    )?;
    let d = &args.dest;
    let dest_registry = overridden(
        &cx.registry,
        d.dest_creds.as_deref(),
        d.dest_authfile.as_deref(),
        d.dest_tls_verify,
        d.dest_cert_dir.as_deref(),
    )?;
    let mut dest_registry = dest_registry;
    if let Some(v) = &d.dest_chunk_size {
        let n = docker_delta::transport::parse_size("--dest-chunk-size", v)?;
        if n == 0 {
            return Err(docker_delta::Error::InvalidOption {
                option: "--dest-chunk-size".into(),
                reason: "must be at least 1 byte".into(),
            });
        }
        dest_registry.upload_chunk_size = n;
    }
    let layer_compression = match d.dest_compress_format.as_str() {
        "zstd" => Compression::Zstd,
        _ => Compression::Gzip,
    };
    let base = deliver::open_base(&package, args.base.as_deref(), &open)?;
    let name = args.tag.as_deref().map(ImageName::parse).transpose()?;
    let bars = Bars::new(quiet || args.json);
    let options = ApplyOptions {
        name,
        force: args.force,
        dry_run: args.dry_run,
        max_layer_memory: cx.limits.max_memory,
        progress: &bars,
        registry: dest_registry,
        layer_compression,
    };
    let result = if args.load {
        DockerClient::from_env_with(timeouts)
            .and_then(|client| DaemonSink::new(client, None, &bars))
            .and_then(|sink| apply::apply_into(&package, base.as_deref(), Box::new(sink), &options))
    } else if args.output.as_deref() == Some("-") {
        stream_to_stdout(args, &package, base.as_deref(), &options)
    } else {
        let output = args.output.as_deref().unwrap_or_default();
        let dest = deliver::output_reference(output)?;
        if matches!(dest, ImageReference::Docker { .. }) && args.tag.is_some() {
            return Err(docker_delta::Error::InvalidOption {
                option: "--tag".into(),
                reason: format!(
                    "{dest} names the tag pushed; give it there (-o docker://HOST/NAME:TAG)"
                ),
            });
        }
        if let Some(out) = dest.path() {
            let base = args
                .base
                .as_deref()
                .map(ImageReference::parse)
                .transpose()?;
            let mut inputs = vec![args.package.as_path()];
            inputs.extend(base.as_ref().and_then(|b| b.path()));
            super::refuse_output_among_inputs(out, &inputs)?;
        }
        let sink_options = SinkOptions {
            force: args.force,
            timeouts: Some(timeouts),
            progress: &bars,
            registry: Some(&options.registry),
            layer_compression: options.layer_compression,
        };
        docker_delta::transport::create_sink(&dest, &sink_options).and_then(
            |sink: Box<dyn ImageSink + '_>| {
                apply::apply_into(&package, base.as_deref(), sink, &options)
            },
        )
    };
    bars.finish();
    let (report, tag_error) = result?;
    if args.json {
        print_json(&report)?;
    } else if !quiet {
        if args.dry_run {
            outln!("dry run: the package, the base image's layers and the output check out (no layer rebuilt); nothing written");
        } else if let Some(p) = &report.output {
            outln!("wrote {} (image {})", p.display(), report.image_id);
        } else if let (Some(to), Some(m)) = (&report.pushed_to, &report.manifest_digest) {
            outln!("pushed {to} (image {}, manifest {m})", report.image_id);
        } else if args.output.as_deref() == Some("-") {
            // Standard output holds the archive.
            eprintln!(
                "wrote the image to standard output (image {})",
                report.image_id
            );
        }
        if report.loaded_into.is_some() && tag_error.is_none() {
            match &report.name {
                Some(n) => outln!("loaded {} as {n}", report.image_id),
                None => outln!(
                    "loaded {} (untagged: pass --tag to name it)",
                    report.image_id
                ),
            }
        }
    }
    match tag_error {
        Some(e) => Err(e),
        None => Ok(ExitCode::Ok),
    }
}

/// `-o -`: the archive goes to standard output, which must not be a terminal; the report
/// cannot go there too.
fn stream_to_stdout(
    args: &Args,
    package: &Package,
    base: Option<&dyn docker_delta::transport::ImageSource>,
    options: &ApplyOptions<'_>,
) -> Result<(apply::ApplyReport, Option<docker_delta::Error>)> {
    use std::io::IsTerminal;
    use std::os::fd::AsFd;
    let refuse = |reason: &str| docker_delta::Error::InvalidOption {
        option: "-o -".into(),
        reason: reason.into(),
    };
    if args.json {
        return Err(refuse(
            "--json prints the report to standard output, which -o - fills with the archive",
        ));
    }
    let stdout = std::io::stdout();
    if !options.dry_run && stdout.is_terminal() {
        return Err(refuse(
            "standard output is a terminal; pipe it (| docker load) or redirect it to a file",
        ));
    }
    // The descriptor itself, unbuffered: the writer buffers, and the standard library's
    // stdout would look for line ends in every block of the archive.
    let out = stdout
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| docker_delta::Error::io("standard output", e))?;
    apply::apply_to_stream(
        package,
        base,
        Box::new(std::fs::File::from(out)),
        "standard output",
        options,
    )
    .map(|r| (r, None))
}
