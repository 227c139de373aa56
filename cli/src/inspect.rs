//! `docker-delta inspect`.

use docker_delta::{ExitCode, ImageReference, Platform, Result};

use super::output::{human_size, print_json};

pub const EXAMPLES: &str = "\
Examples:
  docker-delta inspect docker-archive:app-v2.tar
  docker-delta inspect oci:./layout:v2 --json
  docker-delta inspect oci-archive:multi.tar --platform linux/arm64
  docker-delta inspect ./saved.tar -v        # transport detected; -v shows each detection step";

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The image to inspect.
    reference: String,
    /// Print JSON for scripts.
    #[arg(long)]
    pub json: bool,
    /// Platform to choose from a multi-platform index (os/arch[/variant]); default: this host's.
    #[arg(long)]
    platform: Option<Platform>,
    /// Read every layer and check it against its diff_id and digest (the default for
    /// local sources: files, layouts, the daemon; for a registry, where it downloads every
    /// layer, only when asked). The output says whether layers were verified.
    #[arg(long, overrides_with = "no_verify")]
    verify: bool,
    /// Do not read the layers: faster, but compressed layers' uncompressed sizes (and some
    /// blob digests) stay unknown and nothing is verified.
    #[arg(long, overrides_with = "verify")]
    no_verify: bool,
}

pub fn run(args: &Args, cx: &super::Context) -> Result<ExitCode> {
    let reference = ImageReference::parse(&args.reference)?;
    let options = cx.open_options(args.platform.clone());
    let source = docker_delta::open(&reference, &options)?;
    let remote = matches!(reference, ImageReference::Docker { .. });
    let verify = args.verify || (!args.no_verify && !remote);
    let checks = if verify {
        Some(source.verify_layers()?)
    } else {
        None
    };
    let report = source.image().report(checks.as_deref());
    if args.json {
        print_json(&report)?;
        return Ok(ExitCode::Ok);
    }
    outln!("Reference:   {}", report.reference);
    outln!("Transport:   {}", report.transport);
    let mut format = report.manifest_format.to_string();
    if !report.index_formats.is_empty() {
        // Outermost first: "OCI image manifest (via OCI image index > OCI image index)".
        let path: Vec<String> = report.index_formats.iter().map(|k| k.to_string()).collect();
        format.push_str(&format!(" (via {})", path.join(" > ")));
    }
    outln!("Manifest:    {format}");
    outln!("Image ID:    {}", report.image_id);
    outln!(
        "Tags:        {}",
        if report.repo_tags.is_empty() {
            "<none>".to_string()
        } else {
            report.repo_tags.join(", ")
        }
    );
    outln!("Platform:    {}", report.platform);
    let total: u64 = report.layers.iter().map(|l| l.stored_size).sum();
    outln!(
        "Layers:      {} ({} stored){}",
        report.layers.len(),
        human_size(total),
        if report.layers_verified {
            ", all verified"
        } else {
            ", not verified (--no-verify)"
        }
    );
    for l in &report.layers {
        outln!("  [{}] diff_id {}", l.index, l.diff_id);
        outln!(
            "      digest  {}",
            l.digest
                .as_ref()
                .map_or("(unknown: not verified)".to_string(), ToString::to_string)
        );
        outln!(
            "      {}  {} stored, {} uncompressed",
            l.media_type,
            human_size(l.stored_size),
            l.uncompressed_size.map_or("?".to_string(), human_size)
        );
    }
    Ok(ExitCode::Ok)
}
