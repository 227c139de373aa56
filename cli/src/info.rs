//! `docker-delta info` and `docker-delta list`.

use std::path::PathBuf;

use docker_delta::delta::apply::describe;
use docker_delta::delta::format::{LayerSource, Package};
use docker_delta::delta::info;
use docker_delta::{ExitCode, Result};

use super::output::{human_size, print_json};

pub const INFO_EXAMPLES: &str = "\
Examples:
  docker-delta info app-1-to-2.ddelta
  docker-delta info app-1-to-2.ddelta --json | jq .target.image_id";

pub const LIST_EXAMPLES: &str = "\
Examples:
  docker-delta list app-1-to-2.ddelta
  docker-delta list app-1-to-2.ddelta --json";

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The delta package.
    package: PathBuf,
    /// Print JSON for scripts.
    #[arg(long)]
    json: bool,
    /// Also read the whole payload and check its checksum.
    #[arg(long)]
    verify: bool,
}

pub fn info(args: &Args) -> Result<ExitCode> {
    let p = Package::open(&args.package)?;
    if args.verify {
        p.verify_payload()?;
    }
    if args.json {
        print_json(&info::info_json(&p, args.verify))?;
        return Ok(ExitCode::Ok);
    }
    let h = &p.header;
    let target_size = info::target_layers_size(&p);
    let source_size = info::target_stored_size(&p);
    let methods = info::methods(&p);
    outln!("Package:        {}", p.path().display());
    outln!("Format version: {}", p.version);
    outln!("Created by:     {}", h.created_by);
    let lanes: Vec<String> = h
        .payload_lanes(p.payload_len)
        .iter()
        .map(|l| {
            format!(
                "{} level {} {}",
                l.compression.algorithm.name(),
                l.compression.level,
                human_size(l.length)
            )
        })
        .collect();
    outln!(
        "Size:           {} (payload {}: {}; {} uncompressed)",
        human_size(p.file_size),
        human_size(p.payload_len),
        lanes.join(" + "),
        human_size(h.payload_uncompressed_size())
    );
    match &h.base {
        Some(b) => outln!("Old image:      {} [{}]", describe(b), b.platform),
        None => outln!("Old image:      none (full package)"),
    }
    outln!(
        "New image:      {} [{}]",
        describe(&h.target.identity),
        h.target.identity.platform
    );
    outln!(
        "Layers:         {} ({} uncompressed, {} as stored in the source)",
        h.target.layers.len(),
        human_size(target_size),
        human_size(source_size)
    );
    outln!("Methods:        {}", methods.join(", "));
    outln!(
        "Savings:        {:.1}% vs the stored layers, {:.1}% vs uncompressed",
        info::savings(&p, source_size),
        info::savings(&p, target_size)
    );
    if args.verify {
        outln!("Payload:        checksum verified");
    }
    Ok(ExitCode::Ok)
}

pub fn list(args: &Args) -> Result<ExitCode> {
    let p = Package::open(&args.package)?;
    if args.verify {
        p.verify_payload()?;
    }
    if args.json {
        print_json(&info::layers_json(&p))?;
        return Ok(ExitCode::Ok);
    }
    let h = &p.header;
    outln!(
        "{:>3}  {:<12}  {:<26}  {:>10}  {:>10}",
        "#",
        "DIFF_ID",
        "REBUILT FROM",
        "DELTA",
        "SIZE"
    );
    for (i, l) in h.target.layers.iter().enumerate() {
        let from = match &l.source {
            LayerSource::Reference { old_layer } => format!("old layer {old_layer}"),
            LayerSource::Xdelta3 { old_layer, .. } => format!("xdelta3 + old layer {old_layer}"),
            LayerSource::Zstd { old_layer, .. } => format!("zstd + old layer {old_layer}"),
            LayerSource::Files { old_layers, .. } => match old_layers.len() {
                1 => "files + old layer 0".to_string(),
                n => format!("files + {n} old layers"),
            },
            LayerSource::Full { .. } => "full layer".to_string(),
        };
        let delta = info::delta_size(&p, i);
        outln!(
            "{:>3}  {:<12}  {:<26}  {:>10}  {:>10}",
            i,
            l.diff_id.short(),
            from,
            human_size(delta),
            human_size(l.size)
        );
    }
    Ok(ExitCode::Ok)
}
