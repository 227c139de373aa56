//! The transport-independent model of an image.

use crate::compression::Compression;
use crate::digest::Digest;
use crate::manifest::ManifestKind;
use crate::platform::Platform;
use crate::reference::{ImageReference, Transport};

/// An image as read from any source: its identity, config bytes and layer descriptions.
#[derive(Debug, Clone)]
pub struct Image {
    /// The reference it was opened from.
    pub reference: ImageReference,
    /// The transport it was read through.
    pub transport: Transport,
    /// The kind of manifest the image was described by.
    pub manifest_kind: ManifestKind,
    /// The kinds of index documents walked to reach the manifest, outermost first.
    pub index_kinds: Vec<ManifestKind>,
    /// The manifest's raw bytes, for OCI/Docker schema2 manifests (not for docker-archive).
    pub manifest: Option<Vec<u8>>,
    /// The image config, byte for byte.
    pub config: Vec<u8>,
    /// sha256 of the config bytes: the Docker image ID.
    pub config_digest: Digest,
    /// Tags the source gives the image (`RepoTags`, `ref.name`, daemon tags).
    pub repo_tags: Vec<String>,
    /// The platform from the config.
    pub platform: Platform,
    /// The layers, base first.
    pub layers: Vec<Layer>,
}

impl Image {
    /// The diff_ids of all layers, base first.
    pub fn diff_ids(&self) -> Vec<Digest> {
        self.layers.iter().map(|l| l.diff_id.clone()).collect()
    }

    /// The Docker image ID (`sha256:` of the config).
    pub fn id(&self) -> &Digest {
        &self.config_digest
    }
}

/// One layer of an image.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Layer {
    /// Position in the image, base = 0.
    pub index: usize,
    /// sha256 of the uncompressed layer tar (from the config's `rootfs.diff_ids`).
    pub diff_id: Digest,
    /// sha256 of the stored blob, when known before reading it (always, except for
    /// compressed layers in docker-archives that do not name blobs by digest).
    pub digest: Option<Digest>,
    /// Media type of the stored blob (as recorded, or derived from its compression).
    pub media_type: String,
    /// Size of the stored blob in bytes.
    pub size: u64,
    /// Compression of the stored blob, detected from its content.
    pub compression: Compression,
    /// Size of the uncompressed tar, when known without reading it.
    pub uncompressed_size: Option<u64>,
    /// Where the blob lives in the source (archive member or path), for messages.
    pub location: String,
}

/// What reading a whole layer established.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LayerCheck {
    /// sha256 of the stored blob.
    pub digest: Digest,
    /// Size of the stored blob.
    pub size: u64,
    /// Size of the uncompressed tar.
    pub uncompressed_size: u64,
}

/// The `image` document: a description of an image, as `docker-delta inspect --json`
/// prints it and `dd_image_json` returns it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImageReport {
    /// [`SCHEMA_VERSION`](crate::report::SCHEMA_VERSION).
    pub schema_version: u32,
    /// Always `image`.
    pub document: &'static str,
    /// The reference, in canonical form.
    pub reference: String,
    /// The transport.
    pub transport: Transport,
    /// The manifest kind.
    pub manifest_format: ManifestKind,
    /// The index kinds walked to reach the manifest, outermost first.
    pub index_formats: Vec<ManifestKind>,
    /// The Docker image ID (= config digest).
    pub image_id: Digest,
    /// The digest of the manifest the image was read with (null for docker-archives,
    /// which have none).
    pub manifest_digest: Option<Digest>,
    /// The config digest.
    pub config_digest: Digest,
    /// Size of the config in bytes.
    pub config_size: u64,
    /// Tags.
    pub repo_tags: Vec<String>,
    /// Platform from the config.
    pub platform: Platform,
    /// Whether every layer was read and checked against its diff_id (and digest, when
    /// known) for this report.
    pub layers_verified: bool,
    /// Layers, base first.
    pub layers: Vec<LayerReport>,
}

/// One layer in an [`ImageReport`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct LayerReport {
    /// Position, base = 0.
    pub index: usize,
    /// sha256 of the uncompressed tar.
    pub diff_id: Digest,
    /// sha256 of the stored blob (null if unknown and not verified).
    pub digest: Option<Digest>,
    /// Media type.
    pub media_type: String,
    /// Compression of the stored blob.
    pub compression: Compression,
    /// Size of the blob as stored in the source.
    pub stored_size: u64,
    /// Uncompressed size (null if unknown and not verified).
    pub uncompressed_size: Option<u64>,
}

impl Image {
    /// Describes the image; `checks` (from a verification pass) fills in digests and sizes
    /// that are only known after reading the layers.
    pub fn report(&self, checks: Option<&[LayerCheck]>) -> ImageReport {
        ImageReport {
            schema_version: crate::report::SCHEMA_VERSION,
            document: "image",
            reference: self.reference.to_string(),
            transport: self.transport,
            manifest_format: self.manifest_kind,
            index_formats: self.index_kinds.clone(),
            image_id: self.config_digest.clone(),
            manifest_digest: self.manifest.as_deref().map(Digest::of),
            config_digest: self.config_digest.clone(),
            config_size: self.config.len() as u64,
            repo_tags: self.repo_tags.clone(),
            platform: self.platform.clone(),
            layers_verified: checks.is_some(),
            layers: self
                .layers
                .iter()
                .map(|l| {
                    let check = checks.and_then(|c| c.get(l.index));
                    LayerReport {
                        index: l.index,
                        diff_id: l.diff_id.clone(),
                        digest: check.map(|c| c.digest.clone()).or_else(|| l.digest.clone()),
                        media_type: l.media_type.clone(),
                        compression: l.compression,
                        stored_size: l.size,
                        uncompressed_size: check
                            .map(|c| c.uncompressed_size)
                            .or(l.uncompressed_size),
                    }
                })
                .collect(),
        }
    }
}
