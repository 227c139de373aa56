//! `docker-delta info` and `docker-delta list`.

use std::path::PathBuf;

use docker_delta::delta::apply::describe;
use docker_delta::delta::format::{LayerSource, Package};
use docker_delta::{ExitCode, Result};
use serde_json::json;

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
    let h = &p.header;
    let target_size: u64 = h.target.layers.iter().map(|l| l.size).sum();
    let source_size: u64 = h.target.layers.iter().map(|l| l.source_size).sum();
    let saving = |whole: u64| {
        if whole > 0 {
            100.0 * (1.0 - p.file_size as f64 / whole as f64)
        } else {
            0.0
        }
    };
    let mut methods: Vec<&str> = h.target.layers.iter().map(|l| l.source.method()).collect();
    methods.sort();
    methods.dedup();
    if args.json {
        print_json(&json!({
            "path": p.path(),
            "format_version": p.version,
            "created_by": h.created_by,
            "package_size": p.file_size,
            "payload_size": p.payload_len,
            "payload_uncompressed_size": h.payload_uncompressed_size(),
            "compression": h.compression,
            "base": h.base,
            "target": h.target.identity,
            "source_manifest_digest": h.target.source_manifest.as_ref().map(|m| docker_delta::Digest::of(m.as_bytes())),
            "target_layers_size": target_size,
            "target_stored_size": source_size,
            "methods": methods,
            "savings_vs_stored_percent": saving(source_size),
            "savings_vs_uncompressed_percent": saving(target_size),
            "payload_verified": args.verify,
        }))?;
        return Ok(ExitCode::Ok);
    }
    println!("Package:        {}", p.path().display());
    println!("Format version: {}", p.version);
    println!("Created by:     {}", h.created_by);
    println!(
        "Size:           {} (payload {} {} level {}, {} uncompressed)",
        human_size(p.file_size),
        human_size(p.payload_len),
        h.compression.algorithm.name(),
        h.compression.level,
        human_size(h.payload_uncompressed_size())
    );
    match &h.base {
        Some(b) => println!("Old image:      {} [{}]", describe(b), b.platform),
        None => println!("Old image:      none (full package)"),
    }
    println!(
        "New image:      {} [{}]",
        describe(&h.target.identity),
        h.target.identity.platform
    );
    println!(
        "Layers:         {} ({} uncompressed, {} as stored in the source)",
        h.target.layers.len(),
        human_size(target_size),
        human_size(source_size)
    );
    println!("Methods:        {}", methods.join(", "));
    println!(
        "Savings:        {:.1}% vs the stored layers, {:.1}% vs uncompressed",
        saving(source_size),
        saving(target_size)
    );
    if args.verify {
        println!("Payload:        checksum verified");
    }
    Ok(ExitCode::Ok)
}

pub fn list(args: &Args) -> Result<ExitCode> {
    let p = Package::open(&args.package)?;
    if args.verify {
        p.verify_payload()?;
    }
    let h = &p.header;
    let rows: Vec<_> = h
        .target
        .layers
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let delta = l.source.blob().map_or(0, |b| h.blobs[b].size);
            json!({
                "index": i,
                "diff_id": l.diff_id,
                "method": l.source.method(),
                "old_layer": l.source.old_layer(),
                "old_diff_id": l.source.old_layer().and_then(|o| h.base.as_ref().map(|b| b.diff_ids[o].clone())),
                "delta_size": delta,
                "target_size": l.size,
                "source_size": l.source_size,
                "media_type": l.media_type,
            })
        })
        .collect();
    if args.json {
        print_json(&rows)?;
        return Ok(ExitCode::Ok);
    }
    println!(
        "{:>3}  {:<12}  {:<26}  {:>10}  {:>10}",
        "#", "DIFF_ID", "REBUILT FROM", "DELTA", "SIZE"
    );
    for (i, l) in h.target.layers.iter().enumerate() {
        let from = match &l.source {
            LayerSource::Reference { old_layer } => format!("old layer {old_layer}"),
            LayerSource::Xdelta3 { old_layer, .. } => format!("xdelta3 + old layer {old_layer}"),
            LayerSource::Zstd { old_layer, .. } => format!("zstd + old layer {old_layer}"),
            LayerSource::Full { .. } => "full layer".to_string(),
        };
        let delta = l.source.blob().map_or(0, |b| h.blobs[b].size);
        println!(
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
