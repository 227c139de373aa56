//! `docker-delta create`.

use std::path::PathBuf;

use docker_delta::delta::create::{self, CreateOptions};
use docker_delta::delta::format::{CompressionSpec, PayloadCompression};
use docker_delta::delta::plan::Method;
use docker_delta::{Error, ExitCode, ImageReference, Platform, Result};

use super::output::{human_size, print_json};
use super::progress::Bars;

pub const USAGE: &str = "\
docker-delta create [OPTIONS] --output <OUTPUT> <NEW> [--base <OLD>]
       docker-delta create [OPTIONS] --output <OUTPUT> <OLD> <NEW>";

pub const EXAMPLES: &str = "\
Arguments:
  NEW alone (or with --base OLD) names the image to ship; OLD NEW names the old image (what
  the far side has) first. Without an old image the package is a full one: every layer
  compressed, nothing referenced.

Examples:
  # Delta between two saved images
  docker-delta create docker-archive:app-2.tar --base docker-archive:app-1.tar -o app-1-to-2.ddelta
  # The same, old image first
  docker-delta create docker-archive:app-1.tar docker-archive:app-2.tar -o app-1-to-2.ddelta
  # Straight from the daemon, mixing transports
  docker-delta create oci:./build:2 --base docker-daemon:myapp:1 -o update.ddelta
  # No old image: a full, compressed package
  docker-delta create docker-daemon:myapp:2 -o myapp-2-full.ddelta
  # The smallest package, for a slower apply: the new bytes in xz too
  docker-delta create new.tar --base old.tar -o x.ddelta --new-bytes-compression xz
  # See what would happen
  docker-delta create new.tar --base old.tar -o x.ddelta --dry-run";

#[derive(clap::Args, Debug)]
pub struct Args {
    /// NEW, the image to ship; or OLD, the old image, when NEW follows.
    #[arg(value_name = "IMAGE")]
    image: String,
    /// The new image, when the first is OLD (`create OLD NEW`).
    #[arg(value_name = "NEW")]
    new: Option<String>,
    /// The old image the far side has, which the delta is made against (same as OLD in
    /// `create OLD NEW`); without it, and without OLD, a full package of NEW.
    #[arg(long, value_name = "OLD")]
    base: Option<String>,
    /// The package file to write.
    #[arg(short, long)]
    output: PathBuf,
    /// How changed layers are encoded.
    #[arg(long, value_enum, default_value_t = Method::Auto)]
    method: Method,
    /// Compression of the package payload.
    #[arg(long, value_enum, default_value_t = PayloadCompression::default())]
    compression: PayloadCompression,
    /// Compression level (xz 0-9, zstd 1-22, gzip 1-9; default 6, 19, 9).
    #[arg(long)]
    level: Option<i32>,
    /// Compression of the new bytes of file-aware layers, which the payload keeps apart
    /// (default beside --compression xz: xz while they come to at most 24 MiB, else zstd,
    /// as it decodes them 7x faster; else the same as --compression).
    #[arg(long, value_enum, value_name = "COMPRESSION")]
    new_bytes_compression: Option<PayloadCompression>,
    /// Compression level of the new bytes (default: the algorithm's; zstd 18 beside xz).
    /// Alone, it sets the level of the default new-bytes compression.
    #[arg(long, value_name = "LEVEL")]
    new_bytes_level: Option<i32>,
    /// Platform to choose from multi-platform indexes (os/arch[/variant]).
    #[arg(long)]
    platform: Option<Platform>,
    /// Overwrite OUTPUT if it exists.
    #[arg(long)]
    force: bool,
    /// Show what would be done; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The old image (if any) and the new one, from `create NEW [--base OLD]` or
/// `create OLD NEW`; both forms at once is an error.
fn images(args: &Args) -> Result<(Option<&str>, &str)> {
    match (args.new.as_deref(), args.base.as_deref()) {
        (None, base) => Ok((base, &args.image)),
        (Some(new), None) => Ok((Some(&args.image), new)),
        (Some(_), Some(base)) => Err(Error::InvalidOption {
            option: "--base".into(),
            reason: format!(
                "the old image is given twice: as --base {base} and as the first of two \
                 images ({}); give `create NEW --base OLD` or `create OLD NEW`, not both",
                args.image
            ),
        }),
    }
}

pub fn run(args: &Args, cx: &super::Context) -> Result<ExitCode> {
    let quiet = cx.quiet;
    let open = cx.open_options(args.platform.clone());
    let (old, new) = images(args)?;
    let old_ref = old.map(ImageReference::parse).transpose()?;
    let new_ref = ImageReference::parse(new)?;
    let inputs: Vec<&std::path::Path> = old_ref
        .iter()
        .chain([&new_ref])
        .filter_map(|r| r.path())
        .collect();
    super::refuse_stdout_output(&args.output)?;
    super::refuse_output_among_inputs(&args.output, &inputs)?;
    let old = old_ref
        .as_ref()
        .map(|r| super::open_image(r, &open))
        .transpose()?;
    let new = super::open_image(&new_ref, &open)?;
    let bars = Bars::new(quiet || args.json);
    let options = CreateOptions {
        method: args.method,
        compression: CompressionSpec {
            algorithm: args.compression,
            level: args.level.unwrap_or(args.compression.default_level()),
        },
        new_bytes_compression: match (args.new_bytes_compression, args.new_bytes_level) {
            (Some(algorithm), level) => Some(CompressionSpec {
                algorithm,
                level: level.unwrap_or(algorithm.default_level()),
            }),
            (None, Some(level)) => Some(CompressionSpec {
                level,
                ..CompressionSpec {
                    algorithm: args.compression,
                    level: 0,
                }
                .new_bytes_default()
            }),
            (None, None) => None,
        },
        force: args.force,
        dry_run: args.dry_run,
        max_layer_memory: cx.limits.max_memory,
        progress: &bars,
    };
    let report = create::create(old.as_deref(), new.as_ref(), &args.output, &options);
    bars.finish();
    let report = report?;
    if args.json {
        print_json(&report)?;
        return Ok(ExitCode::Ok);
    }
    if quiet {
        return Ok(ExitCode::Ok);
    }
    for l in &report.layers {
        outln!(
            "layer {:>2}  {}  {:>10}  {}",
            l.index,
            l.diff_id.short(),
            human_size(l.uncompressed_size),
            l.describe()
        );
    }
    match (&report.package_path, report.package_size) {
        (Some(p), Some(package_size)) => {
            let saving = if report.target_stored_size > 0 {
                100.0 * (1.0 - package_size as f64 / report.target_stored_size as f64)
            } else {
                0.0
            };
            outln!(
                "wrote {} ({}): {:.1}% smaller than the new image's {} of stored layers ({} uncompressed)",
                p.display(),
                human_size(package_size),
                saving,
                human_size(report.target_stored_size),
                human_size(report.target_uncompressed_size)
            );
        }
        _ => outln!("dry run: nothing written"),
    }
    Ok(ExitCode::Ok)
}
