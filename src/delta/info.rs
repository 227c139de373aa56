//! Descriptions of a package as JSON documents (`docs/JSON.md`): the `package` document
//! `docker-delta info --json` prints and `dd_package_info_json` returns, and the
//! `package_layers` document of `list --json` and `dd_package_layers_json`. Typed, so that
//! every consumer serializes the same structs.

use std::path::PathBuf;

use serde::Serialize;

use crate::delta::format::{CompressionSpec, Package};
use crate::digest::Digest;
pub use crate::report::delta_size;
use crate::report::{package_layers, ImageSummary, PackageLayer, SCHEMA_VERSION};

/// The `package` document: a package's metadata, with every layer.
#[derive(Debug, Clone, Serialize)]
pub struct PackageInfo {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Always `package`.
    pub document: &'static str,
    /// The package file.
    pub package_path: PathBuf,
    /// Its size in bytes.
    pub package_size: u64,
    /// The package format version.
    pub format_version: u32,
    /// The tool that wrote it (`docker-delta 0.1.0`).
    pub created_by: String,
    /// The payload's size in the file (compressed).
    pub payload_stored_size: u64,
    /// The payload's size uncompressed.
    pub payload_uncompressed_size: u64,
    /// The main lane's compression.
    pub compression: CompressionSpec,
    /// The payload's lanes, in file order.
    pub lanes: Vec<Lane>,
    /// The old image (null for a full package).
    pub base: Option<ImageSummary>,
    /// The new image (`manifest_digest`: of the manifest it was read with, if any).
    pub target: ImageSummary,
    /// Sum of the new image's uncompressed layer sizes.
    pub target_uncompressed_size: u64,
    /// Sum of the new image's layer sizes as stored in its source.
    pub target_stored_size: u64,
    /// The distinct methods its layers use, sorted.
    pub methods: Vec<&'static str>,
    /// How much smaller the package is than the new image's stored layers, in percent.
    pub savings_vs_stored_percent: f64,
    /// How much smaller the package is than the new image's uncompressed layers.
    pub savings_vs_uncompressed_percent: f64,
    /// Whether the whole payload was read and its checksum checked (`info --verify`,
    /// `dd_package_verify`).
    pub payload_verified: bool,
    /// The new image's layers, base first.
    pub layers: Vec<PackageLayer>,
}

/// One lane of the payload.
#[derive(Debug, Clone, Serialize)]
pub struct Lane {
    /// Its compression.
    pub compression: CompressionSpec,
    /// Its size in the file (compressed).
    pub stored_size: u64,
    /// Its size uncompressed.
    pub uncompressed_size: u64,
}

/// The `package_layers` document: how each layer of the new image is rebuilt.
#[derive(Debug, Clone, Serialize)]
pub struct PackageLayers {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Always `package_layers`.
    pub document: &'static str,
    /// The package file.
    pub package_path: PathBuf,
    /// Whether the whole payload was read and its checksum checked.
    pub payload_verified: bool,
    /// The new image's layers, base first.
    pub layers: Vec<PackageLayer>,
}

/// The `package` document of `p`; `payload_verified` says whether the caller checked the
/// payload checksum.
pub fn info(p: &Package, payload_verified: bool) -> PackageInfo {
    let h = &p.header;
    let target_size = target_layers_size(p);
    let source_size = target_stored_size(p);
    PackageInfo {
        schema_version: SCHEMA_VERSION,
        document: "package",
        package_path: p.path().to_path_buf(),
        package_size: p.file_size,
        format_version: p.version,
        created_by: h.created_by.clone(),
        payload_stored_size: p.payload_len,
        payload_uncompressed_size: h.payload_uncompressed_size(),
        compression: h.compression,
        lanes: lanes(p),
        base: h.base.as_ref().map(|b| ImageSummary::of(b, None)),
        target: ImageSummary::of(
            &h.target.identity,
            h.target
                .source_manifest
                .as_ref()
                .map(|m| Digest::of(m.as_bytes())),
        ),
        target_uncompressed_size: target_size,
        target_stored_size: source_size,
        methods: methods(p),
        savings_vs_stored_percent: savings(p, source_size),
        savings_vs_uncompressed_percent: savings(p, target_size),
        payload_verified,
        layers: package_layers(p),
    }
}

/// The `package_layers` document of `p`.
pub fn layers(p: &Package, payload_verified: bool) -> PackageLayers {
    PackageLayers {
        schema_version: SCHEMA_VERSION,
        document: "package_layers",
        package_path: p.path().to_path_buf(),
        payload_verified,
        layers: package_layers(p),
    }
}

/// The payload's lanes: each one's compression, stored size and uncompressed size.
pub fn lanes(p: &Package) -> Vec<Lane> {
    let h = &p.header;
    h.payload_lanes(p.payload_len)
        .iter()
        .enumerate()
        .map(|(n, l)| Lane {
            compression: l.compression,
            stored_size: l.length,
            uncompressed_size: h.blobs.iter().filter(|b| b.lane == n).map(|b| b.size).sum(),
        })
        .collect()
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
