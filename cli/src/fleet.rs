//! `docker-delta push`, `publish`, `pull` and `list-deltas`: delta packages kept in a
//! registry next to their images, for fleets.

use std::path::PathBuf;

use docker_delta::daemon::{DockerClient, ImageName};
use docker_delta::delta::create::CreateOptions;
use docker_delta::fleet::publish::{self, Bases, PublishOptions};
use docker_delta::fleet::pull::{self, PullDestination, PullOptions};
use docker_delta::{ExitCode, ImageReference, Platform, Result};

use super::output::{human_size, print_json};
use super::progress::Bars;

pub const PUSH_EXAMPLES: &str = "\
Examples:
  # Store a package next to the image it rebuilds (the tag defaults to the package's)
  docker-delta push app-1-to-2.ddelta docker://registry.local/app:2
  # Then: oras discover registry.local/app:2 lists it; devices find it with `pull`";

pub const PUBLISH_EXAMPLES: &str = "\
Examples:
  # CI, after pushing app:3: deltas from the versions the fleet runs
  docker-delta publish docker://registry.local/app:3 --base 1 --base 2
  # ... or from the 3 newest other tags (by the images' creation time)
  docker-delta publish docker://registry.local/app:3 --last 3 --json";

pub const PULL_EXAMPLES: &str = "\
Examples:
  # On a device: like docker pull, through the smallest delta from what the daemon has
  docker-delta pull docker://registry.local/app:3
  # What it would take, and the bytes, without downloading
  docker-delta pull docker://registry.local/app:3 --dry-run
  # Fail (exit 9) rather than fall back to a full pull
  docker-delta pull docker://registry.local/app:3 --no-fallback
  # Base from a file, result to a file
  docker-delta pull docker://registry.local/app:3 --base app-2.tar -o app-3.tar";

pub const LIST_EXAMPLES: &str = "\
Examples:
  docker-delta list-deltas docker://registry.local/app:3
  docker-delta list-deltas docker://registry.local/app:3 --platform linux/arm64 --json";

#[derive(clap::Args, Debug)]
pub struct PushArgs {
    /// The delta package.
    package: PathBuf,
    /// The new image it rebuilds, in a registry: docker://HOST/NAME[:TAG|@DIGEST] (the tag
    /// defaults to the package's new image's).
    image: String,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct PublishArgs {
    /// The new image: docker://HOST/NAME:TAG.
    image: String,
    /// An old version to publish a delta from: a tag or digest of the same repository, or
    /// a docker:// reference (repeat for several).
    #[arg(
        long = "base",
        value_name = "TAG|DIGEST",
        required_unless_present = "last"
    )]
    bases: Vec<String>,
    /// Publish from the N newest other tags (by the config's `created`).
    #[arg(long, value_name = "N", conflicts_with = "bases")]
    last: Option<usize>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct PullArgs {
    /// The image: docker://HOST/NAME[:TAG|@DIGEST].
    image: String,
    /// Tag the image NAME:TAG (default: HOST/NAME:TAG of the image pulled).
    #[arg(long, value_name = "NAME:TAG")]
    tag: Option<String>,
    /// Write the image here instead of loading it (as apply -o).
    #[arg(short, long, value_name = "OUT")]
    output: Option<String>,
    /// The old image to apply a delta to (default: what the Docker daemon has).
    #[arg(long, value_name = "OLD")]
    base: Option<String>,
    /// The platform (default: this host's).
    #[arg(long)]
    platform: Option<Platform>,
    /// Fail (exit 9) when no delta fits, rather than pull the whole image.
    #[arg(long)]
    no_fallback: bool,
    /// Say which delta (or the fallback) it would take and the bytes; download nothing
    /// but manifests.
    #[arg(long)]
    dry_run: bool,
    /// Overwrite OUT if it exists.
    #[arg(long)]
    force: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// The image: docker://HOST/NAME[:TAG|@DIGEST].
    image: String,
    /// The platform (default: this host's).
    #[arg(long)]
    platform: Option<Platform>,
    /// Print the list as JSON.
    #[arg(long)]
    pub json: bool,
}

fn options<'a>(
    cx: &super::Context,
    platform: Option<Platform>,
    bars: &'a Bars,
) -> PublishOptions<'a> {
    PublishOptions {
        open: cx.open_options(platform),
        create: CreateOptions {
            max_layer_memory: cx.limits.max_memory,
            progress: bars,
            ..Default::default()
        },
        progress: bars,
        ..Default::default()
    }
}

/// `docker://HOST/NAME` without a tag or digest: the parser gives it `latest`, but `push`
/// takes the package's own tag then.
fn without_tag(input: &str, reference: ImageReference) -> ImageReference {
    let last = input.rsplit('/').next().unwrap_or(input);
    match reference {
        ImageReference::Docker {
            registry,
            repository,
            digest: None,
            ..
        } if !last.contains(':') && !last.contains('@') => ImageReference::Docker {
            registry,
            repository,
            tag: None,
            digest: None,
        },
        other => other,
    }
}

pub fn push(args: &PushArgs, cx: &super::Context) -> Result<ExitCode> {
    let dest = without_tag(&args.image, ImageReference::parse(&args.image)?);
    let bars = Bars::new(cx.quiet || args.json);
    let report = publish::push(&args.package, &dest, &[], &options(cx, None, &bars));
    bars.finish();
    let report = report?;
    if args.json {
        print_json(&report)?;
    } else if !cx.quiet {
        let verb = if report.already_published {
            "already published"
        } else {
            "pushed"
        };
        outln!(
            "{verb} {} ({}, from base {}) as {}",
            args.package.display(),
            human_size(report.delta.package_size),
            report.delta.base_image_id.short(),
            report.artifact
        );
        outln!(
            "  referrer of {} ({}) via the {}",
            report.image,
            report.subject,
            if report.referrers == "api" {
                "referrers API"
            } else {
                "fallback tag sha256-<hex>"
            }
        );
    }
    Ok(ExitCode::Ok)
}

pub fn publish(args: &PublishArgs, cx: &super::Context) -> Result<ExitCode> {
    let new = ImageReference::parse(&args.image)?;
    let bases = match args.last {
        Some(n) => Bases::Last(n),
        None => Bases::Given(args.bases.clone()),
    };
    let bars = Bars::new(cx.quiet || args.json);
    let report = publish::publish(&new, &bases, &options(cx, None, &bars));
    bars.finish();
    let report = report?;
    if args.json {
        print_json(&report)?;
        return Ok(ExitCode::Ok);
    }
    if cx.quiet {
        return Ok(ExitCode::Ok);
    }
    outln!(
        "{:<24} {:<14} {:>10} {:>10}  STATUS",
        "BASE",
        "PLATFORM",
        "PACKAGE",
        "SAVES"
    );
    for p in &report.packages {
        outln!(
            "{:<24} {:<14} {:>10} {:>10}  {}",
            p.base,
            p.platform.to_string(),
            p.package_size.map_or("-".into(), human_size),
            p.saves.map_or("-".into(), human_size),
            p.status.replace('_', " ")
        );
    }
    Ok(ExitCode::Ok)
}

pub fn pull(args: &PullArgs, cx: &super::Context) -> Result<ExitCode> {
    let reference = ImageReference::parse(&args.image)?;
    let name = args.tag.as_deref().map(ImageName::parse).transpose()?;
    let bars = Bars::new(cx.quiet || args.json);
    let options = PullOptions {
        open: cx.open_options(args.platform.clone()),
        base: args
            .base
            .as_deref()
            .map(ImageReference::parse)
            .transpose()?,
        no_fallback: args.no_fallback,
        dry_run: args.dry_run,
        max_layer_memory: cx.limits.max_memory,
        progress: &bars,
    };
    let client;
    let dest = match &args.output {
        Some(out) => PullDestination::Output {
            reference: docker_delta::delta::deliver::output_reference(out)?,
            force: args.force,
            name,
        },
        None => {
            client = DockerClient::from_env_with(cx.timeouts)?;
            PullDestination::Daemon {
                client: &client,
                name,
            }
        }
    };
    let report = pull::pull(&reference, dest, &options);
    bars.finish();
    let report = report?;
    if args.json {
        print_json(&report)?;
        return Ok(ExitCode::Ok);
    }
    if cx.quiet {
        return Ok(ExitCode::Ok);
    }
    let t = &report.transferred;
    let moved = t.blobs + t.configs;
    match (&report.delta, report.dry_run) {
        (Some(d), true) => outln!(
            "would take the delta from {} ({}, against {} for a full pull)",
            d.base_image_id.short(),
            human_size(d.package_size),
            human_size(report.full_pull_size)
        ),
        (None, true) => outln!(
            "would pull the whole image ({}): {}",
            human_size(report.full_pull_size),
            report.fallback_reason.as_deref().unwrap_or("")
        ),
        (Some(d), false) => outln!(
            "pulled {} through the delta from {}: {} downloaded (+{} of manifests), against {} for a full pull",
            report.image_id,
            d.base_image_id.short(),
            human_size(moved),
            human_size(t.manifests),
            human_size(report.full_pull_size)
        ),
        (None, false) => outln!(
            "pulled {} in full ({} downloaded, +{} of manifests): {}",
            report.image_id,
            human_size(moved),
            human_size(t.manifests),
            report.fallback_reason.as_deref().unwrap_or("")
        ),
    }
    if let (Some(daemon), Some(name)) = (&report.loaded_into, &report.name) {
        outln!("loaded into {daemon} as {name}");
    } else if let Some(p) = &report.output {
        outln!("wrote {}", p.display());
    }
    Ok(ExitCode::Ok)
}

pub fn list(args: &ListArgs, cx: &super::Context) -> Result<ExitCode> {
    let reference = ImageReference::parse(&args.image)?;
    let list = pull::list_deltas(&reference, &cx.open_options(args.platform.clone()))?;
    if args.json {
        print_json(&list)?;
        return Ok(ExitCode::Ok);
    }
    outln!(
        "{} ({}, image {}): {} deltas (full pull {})",
        list.image,
        list.platform,
        list.image_id.short(),
        list.deltas.len(),
        human_size(list.full_pull_size)
    );
    if !list.deltas.is_empty() {
        outln!(
            "{:<14} {:>10} {:>10}  {:<22} ARTIFACT",
            "BASE IMAGE",
            "PACKAGE",
            "SAVES",
            "CREATED"
        );
    }
    for d in &list.deltas {
        outln!(
            "{:<14} {:>10} {:>10}  {:<22} {}",
            d.base_image_id.short(),
            human_size(d.package_size),
            d.saves.map_or("-".into(), human_size),
            d.created.as_deref().unwrap_or("-"),
            d.digest
        );
    }
    for s in &list.skipped {
        outln!("skipped {}: {}", s.digest, s.reason);
    }
    Ok(ExitCode::Ok)
}
