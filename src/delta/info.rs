//! Descriptions of a package as JSON: what `docker-delta info --json` and `list --json`
//! print, and what the C ABI returns (`dd_package_info_json`, `dd_package_layers_json`).
//! One implementation, so that every consumer sees the same fields.

use serde_json::{json, Value};

use crate::delta::format::Package;
use crate::digest::Digest;

/// The package's metadata: format, old and new images, sizes, methods, savings.
/// `payload_verified` says whether the caller checked the payload checksum.
pub fn info_json(p: &Package, payload_verified: bool) -> Value {
    let h = &p.header;
    let target_size = target_layers_size(p);
    let source_size = target_stored_size(p);
    json!({
        "path": p.path(),
        "format_version": p.version,
        "created_by": h.created_by,
        "package_size": p.file_size,
        "payload_size": p.payload_len,
        "payload_uncompressed_size": h.payload_uncompressed_size(),
        "compression": h.compression,
        "lanes": lanes_json(p),
        "base": h.base,
        "target": h.target.identity,
        "source_manifest_digest": h.target.source_manifest.as_ref().map(|m| Digest::of(m.as_bytes())),
        "target_layers_size": target_size,
        "target_stored_size": source_size,
        "methods": methods(p),
        "savings_vs_stored_percent": savings(p, source_size),
        "savings_vs_uncompressed_percent": savings(p, target_size),
        "payload_verified": payload_verified,
    })
}

/// The payload's lanes: each one's compression, compressed length and uncompressed size.
pub fn lanes_json(p: &Package) -> Value {
    let h = &p.header;
    let rows: Vec<Value> = h
        .payload_lanes(p.payload_len)
        .iter()
        .enumerate()
        .map(|(n, l)| {
            json!({
                "compression": l.compression,
                "length": l.length,
                "uncompressed_size": h.blobs.iter().filter(|b| b.lane == n).map(|b| b.size).sum::<u64>(),
            })
        })
        .collect();
    Value::Array(rows)
}

/// One object per layer of the new image: how it is rebuilt, from which old layer, sizes.
pub fn layers_json(p: &Package) -> Value {
    let h = &p.header;
    let rows: Vec<Value> = h
        .target
        .layers
        .iter()
        .enumerate()
        .map(|(i, l)| {
            json!({
                "index": i,
                "diff_id": l.diff_id,
                "method": l.source.method(),
                "old_layer": l.source.old_layer(),
                "old_layers": l.source.old_layers(),
                "old_diff_id": l.source.old_layer().and_then(|o| h.base.as_ref().and_then(|b| b.diff_ids.get(o).cloned())),
                "delta_size": delta_size(p, i),
                "target_size": l.size,
                "source_size": l.source_size,
                "media_type": l.media_type,
            })
        })
        .collect();
    Value::Array(rows)
}

/// Payload bytes (uncompressed) layer `index` of the new image takes; 0 for references.
pub fn delta_size(p: &Package, index: usize) -> u64 {
    p.header.target.layers.get(index).map_or(0, |l| {
        l.source
            .blobs()
            .iter()
            .filter_map(|&b| p.header.blobs.get(b))
            .map(|b| b.size)
            .sum()
    })
}

/// Sum of the new image's uncompressed layer sizes.
pub fn target_layers_size(p: &Package) -> u64 {
    p.header.target.layers.iter().map(|l| l.size).sum()
}

/// Sum of the new image's layer sizes as stored in its source (usually compressed).
pub fn target_stored_size(p: &Package) -> u64 {
    p.header.target.layers.iter().map(|l| l.source_size).sum()
}

/// The distinct methods the package uses, sorted.
pub fn methods(p: &Package) -> Vec<&'static str> {
    let mut m: Vec<&str> = p
        .header
        .target
        .layers
        .iter()
        .map(|l| l.source.method())
        .collect();
    m.sort();
    m.dedup();
    m
}

/// How much smaller the package file is than `whole` bytes, in percent.
pub fn savings(p: &Package, whole: u64) -> f64 {
    if whole > 0 {
        100.0 * (1.0 - p.file_size as f64 / whole as f64)
    } else {
        0.0
    }
}
