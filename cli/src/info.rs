//! `docker-delta info` and `docker-delta list`.

use std::path::PathBuf;

use docker_delta::delta::apply::describe;
use docker_delta::delta::format::Package;
use docker_delta::delta::info;
use docker_delta::report;
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
    pub json: bool,
    /// Also read the whole payload and check its checksum (default: off; the header's
    /// checksum is always checked). The output says whether the payload was verified.
    #[arg(long, overrides_with = "no_verify")]
    verify: bool,
    /// Do not read the payload (the default).
    #[arg(long, overrides_with = "verify")]
    no_verify: bool,
}

pub fn info(args: &Args) -> Result<ExitCode> {
    let p = Package::open(&args.package)?;
    if args.verify {
        p.verify_payload()?;
    }
    if args.json {
        print_json(&info::info(&p, args.verify))?;
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
    } else {
        outln!("Payload:        not verified (--verify reads it all)");
    }
    Ok(ExitCode::Ok)
}

pub fn list(args: &Args) -> Result<ExitCode> {
    let p = Package::open(&args.package)?;
    if args.verify {
        p.verify_payload()?;
    }
    if args.json {
        print_json(&info::layers(&p, args.verify))?;
        return Ok(ExitCode::Ok);
    }
    outln!(
        "{:>3}  {:<12}  {:<34}  {:>10}  {:>10}",
        "#",
        "DIFF_ID",
        "REBUILT FROM",
        "DELTA",
        "SIZE"
    );
    for l in report::package_layers(&p) {
        outln!(
            "{:>3}  {:<12}  {:<34}  {:>10}  {:>10}",
            l.index,
            l.diff_id.short(),
            l.describe(),
            human_size(l.delta_size.unwrap_or(0)),
            human_size(l.uncompressed_size)
        );
    }
    if args.verify {
        outln!("(payload checksum verified)");
    }
    Ok(ExitCode::Ok)
}
