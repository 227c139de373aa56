//! The JSON vocabulary every `--json` output, the C ABI and the bindings share
//! (`docs/JSON.md`, one JSON Schema per document in `docs/schema/`).
//!
//! Every document is an object that starts with `schema_version` ([`SCHEMA_VERSION`]) and
//! `document` (its name: `image`, `create_report`, `apply_report`, `package`,
//! `package_layers`, `error`, `version`). One name per fact, in every document:
//!
//! - an image is an [`ImageSummary`] (`image_id`, `manifest_digest`, `reference`,
//!   `repo_tags`, `platform`, `diff_ids`) wherever a report names one (`base`, `target`);
//! - every size is in bytes and ends in `_size`: `uncompressed_size` (a layer tar),
//!   `stored_size` (the bytes as stored where they live: a compressed blob in the image's
//!   source, a compressed lane in the package), `package_size` (the package file),
//!   `delta_size` (the uncompressed payload bytes a layer takes);
//! - a package file's path is `package_path`; an image written is `output`;
//! - which old layers feed a new layer is `old_layers`, computed by [`old_layers`] alone.

use serde::Serialize;

use crate::delta::format::{ImageIdentity, LayerEntry, LayerSource, Package};
use crate::digest::Digest;
use crate::error::Error;
use crate::platform::Platform;

/// The version of the JSON vocabulary. It grows when a field is removed or changes
/// meaning; adding a field keeps it (readers ignore fields they do not know; the schemas
/// in `docs/schema/` are strict so that the project's own tests notice every change).
pub const SCHEMA_VERSION: u32 = 1;

/// An image, as every report names one (`base`, `target`).
#[derive(Debug, Clone, Serialize)]
pub struct ImageSummary {
    /// The Docker image ID (`sha256:` of the config).
    pub image_id: Digest,
    /// The digest of the image's manifest where it was read, if it had one (not for
    /// docker-archives, nor for a package's base, which records none).
    pub manifest_digest: Option<Digest>,
    /// The reference it was read from, in canonical form.
    pub reference: String,
    /// Its tags where it was read.
    pub repo_tags: Vec<String>,
    /// Its platform.
    pub platform: Platform,
    /// Its layers' diff_ids, base first.
    pub diff_ids: Vec<Digest>,
}

impl ImageSummary {
    /// The summary of an identity recorded in a package (or made by `create`).
    pub fn of(identity: &ImageIdentity, manifest_digest: Option<Digest>) -> ImageSummary {
        ImageSummary {
            image_id: identity.image_id.clone(),
            manifest_digest,
            reference: identity.reference.clone(),
            repo_tags: identity.repo_tags.clone(),
            platform: identity.platform.clone(),
            diff_ids: identity.diff_ids.clone(),
        }
    }

    /// The summary of an opened image.
    pub fn of_image(image: &crate::image::Image) -> ImageSummary {
        ImageSummary::of(
            &crate::delta::create::identity(image),
            image.manifest.as_deref().map(Digest::of),
        )
    }
}

/// An old layer a new layer is rebuilt from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OldLayer {
    /// Its index in the old image, base = 0.
    pub index: usize,
    /// Its diff_id (null if the package's base records none at that index, which a valid
    /// package never does).
    pub diff_id: Option<Digest>,
}

/// The old layers a new layer is rebuilt from, in the order its encoding numbers them:
/// one for `reference`, `xdelta3` and `zstd`; none or several for `files`; none for
/// `full`. The one place that answers this for every output (create, list, info, the C
/// ABI).
pub fn old_layers(source: &LayerSource, base: Option<&ImageIdentity>) -> Vec<OldLayer> {
    name_old_layers(source.old_layers(), base)
}

/// Old layers by index, each named with its diff_id in `base`: [`old_layers`]'s naming,
/// for a plan that has no [`LayerSource`] yet (a dry run).
pub fn name_old_layers(indexes: Vec<usize>, base: Option<&ImageIdentity>) -> Vec<OldLayer> {
    indexes
        .into_iter()
        .map(|index| OldLayer {
            index,
            diff_id: base.and_then(|b| b.diff_ids.get(index).cloned()),
        })
        .collect()
}

/// How `old_layers` reads to people: `old layer 1`, `old layers 0, 2`, `no old layer`.
pub fn describe_old_layers(layers: &[OldLayer]) -> String {
    match layers {
        [] => "no old layer".to_string(),
        [one] => format!("old layer {}", one.index),
        many => format!(
            "old layers {}",
            many.iter()
                .map(|l| l.index.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// One layer of a package's new image: how it is rebuilt and its sizes.
#[derive(Debug, Clone, Serialize)]
pub struct PackageLayer {
    /// Position in the new image, base = 0.
    pub index: usize,
    /// sha256 of the uncompressed layer tar.
    pub diff_id: Digest,
    /// `reference`, `xdelta3`, `zstd`, `files` or `full`.
    pub method: &'static str,
    /// The old layers it is rebuilt from ([`old_layers`]); null only in a dry run, for a
    /// `files` layer (the encoder picks them while it encodes).
    pub old_layers: Option<Vec<OldLayer>>,
    /// Uncompressed payload bytes the layer takes (0 for references; null in a dry run).
    pub delta_size: Option<u64>,
    /// Size of the uncompressed layer tar.
    pub uncompressed_size: u64,
    /// Size of the layer as stored in the new image's source (usually compressed).
    pub stored_size: u64,
    /// Media type of the layer in the new image's source.
    pub media_type: String,
}

impl PackageLayer {
    /// Describes layer `index` of a package's new image.
    pub fn of(p: &Package, index: usize, entry: &LayerEntry) -> PackageLayer {
        PackageLayer {
            index,
            diff_id: entry.diff_id.clone(),
            method: entry.source.method(),
            old_layers: Some(old_layers(&entry.source, p.header.base.as_ref())),
            delta_size: Some(delta_size(p, index)),
            uncompressed_size: entry.size,
            stored_size: entry.source_size,
            media_type: entry.media_type.clone(),
        }
    }

    /// How the layer is rebuilt, for people: `reference to old layer 0`,
    /// `files from old layers 0, 2`, `full`.
    pub fn describe(&self) -> String {
        match (self.method, &self.old_layers) {
            ("full", _) => "full layer".to_string(),
            ("reference", Some(o)) => format!("reference to {}", describe_old_layers(o)),
            (m, Some(o)) if o.is_empty() => format!("{m} (no old layer)"),
            (m, Some(o)) => format!("{m} from {}", describe_old_layers(o)),
            (m, None) => format!("{m} (old layers chosen while encoding)"),
        }
    }
}

/// Every layer of a package's new image, base first.
pub fn package_layers(p: &Package) -> Vec<PackageLayer> {
    p.header
        .target
        .layers
        .iter()
        .enumerate()
        .map(|(i, l)| PackageLayer::of(p, i, l))
        .collect()
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

/// The `error` document: what `--json` commands print on stderr when they fail, and what
/// the C ABI's `dd_error_json` returns.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorDocument {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Always `error`.
    pub document: &'static str,
    /// The command's exit code (0-5), or, from the C ABI, the `dd_status` (the same
    /// numbers, plus 6 cancelled, 7 invalid argument, 8 panic).
    pub status: u32,
    /// The status's name: `error`, `missing_dependency`, `invalid_input`,
    /// `operation_failed`, `tag_failed` (and from the C ABI `cancelled`,
    /// `invalid_argument`, `panic`).
    pub status_name: &'static str,
    /// The error's kind ([`Error::kind`]).
    pub kind: &'static str,
    /// The message, as the command prints it.
    pub message: String,
    /// The file the error concerns, if any.
    pub path: Option<String>,
    /// What was expected, for errors that compare two values.
    pub expected: Option<String>,
    /// What was found instead.
    pub found: Option<String>,
    /// Every field of the error, under its own name ([`Error::fields`]).
    pub fields: serde_json::Map<String, serde_json::Value>,
}

impl ErrorDocument {
    /// The document of a library error, with the status it ends a command with.
    pub fn of(e: &Error) -> ErrorDocument {
        let code = e.exit_code();
        ErrorDocument {
            schema_version: SCHEMA_VERSION,
            document: "error",
            status: code as u32,
            status_name: code.name(),
            kind: e.kind(),
            message: e.to_string(),
            path: e.path(),
            expected: e.expected(),
            found: e.found(),
            fields: e.fields(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u8) -> Digest {
        Digest::of(&[n])
    }

    #[test]
    fn old_layers_name_each_source_with_its_diff_id() {
        let base = ImageIdentity {
            image_id: digest(9),
            diff_ids: vec![digest(0), digest(1), digest(2)],
            repo_tags: Vec::new(),
            reference: String::new(),
            platform: Platform {
                os: "linux".into(),
                architecture: "amd64".into(),
                variant: None,
            },
        };
        let files = LayerSource::Files {
            old_layers: vec![2, 0],
            blob: 0,
            extra_blob: None,
            lits_blob: None,
        };
        let got = old_layers(&files, Some(&base));
        assert_eq!(
            got,
            [
                OldLayer {
                    index: 2,
                    diff_id: Some(digest(2))
                },
                OldLayer {
                    index: 0,
                    diff_id: Some(digest(0))
                }
            ]
        );
        assert_eq!(describe_old_layers(&got), "old layers 2, 0");
        assert_eq!(describe_old_layers(&got[1..]), "old layer 0");
        assert_eq!(describe_old_layers(&[]), "no old layer");
        assert!(old_layers(&LayerSource::Full { blob: 0 }, Some(&base)).is_empty());
        // Without a recorded base (never in a valid package) the index alone is known.
        let reference = LayerSource::Reference { old_layer: 1 };
        assert_eq!(
            old_layers(&reference, None),
            [OldLayer {
                index: 1,
                diff_id: None
            }]
        );
    }

    #[test]
    fn error_documents_carry_the_exit_code_and_its_name() {
        let e = Error::OutputExists {
            path: "/x/p.ddelta".into(),
        };
        let doc = serde_json::to_value(ErrorDocument::of(&e)).unwrap_or_default();
        assert_eq!(doc["schema_version"], SCHEMA_VERSION);
        assert_eq!(doc["document"], "error");
        assert_eq!(doc["status"], 3);
        assert_eq!(doc["status_name"], "invalid_input");
        assert_eq!(doc["kind"], "output_exists");
        assert_eq!(doc["path"], "/x/p.ddelta");
        assert_eq!(doc["fields"]["path"], "/x/p.ddelta");
    }
}
