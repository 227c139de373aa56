//! The artifact that stores a delta package in a registry, and what its annotations say.

use std::collections::BTreeMap;

use crate::delta::format::Package;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::platform::Platform;
use crate::transport::registry::referrers::Referrer;

/// The `artifactType` of a docker-delta package artifact (and its layer's media type).
pub const ARTIFACT_TYPE: &str = "application/vnd.docker-delta.package.v1";

/// The OCI image manifest media type.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// The OCI empty descriptor's media type, and its content `{}`.
pub const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
/// The content of the empty config.
pub const EMPTY_CONFIG: &[u8] = b"{}";

/// Annotation keys (on the artifact manifest, and on its entry in a referrers list).
pub mod keys {
    /// The base image's ID (config digest).
    pub const BASE_IMAGE_ID: &str = "dev.docker-delta.base.image-id";
    /// The base image's ChainID (its layers' diff_ids chained, as the OCI image spec
    /// defines it): how a daemon whose image store names images by manifest digest is
    /// matched.
    pub const BASE_CHAIN_ID: &str = "dev.docker-delta.base.chain-id";
    /// The base image's manifest digests known in the registry, comma-separated.
    pub const BASE_MANIFESTS: &str = "dev.docker-delta.base.manifest-digests";
    /// Where the base image was read when the package was made.
    pub const BASE_REFERENCE: &str = "dev.docker-delta.base.reference";
    /// The new image's ID.
    pub const NEW_IMAGE_ID: &str = "dev.docker-delta.new.image-id";
    /// The platform (`os/arch[/variant]`).
    pub const PLATFORM: &str = "dev.docker-delta.platform";
    /// The package's size in bytes.
    pub const PACKAGE_SIZE: &str = "dev.docker-delta.package.size";
    /// Bytes a device saves by taking the package instead of a full pull of the layers.
    pub const SAVES: &str = "dev.docker-delta.package.saves";
    /// The package format version.
    pub const FORMAT_VERSION: &str = "dev.docker-delta.package.format-version";
    /// When the artifact was made (RFC 3339), the OCI annotation.
    pub const CREATED: &str = "org.opencontainers.image.created";
    /// The package's file name (on its layer), so `oras pull` saves it under that name.
    pub const TITLE: &str = "org.opencontainers.image.title";
}

/// The ChainID of a list of diff_ids (OCI image spec, "Layer ChainID").
pub fn chain_id(diff_ids: &[Digest]) -> Option<Digest> {
    let mut iter = diff_ids.iter();
    let mut chain = iter.next()?.clone();
    for d in iter {
        chain = Digest::of(format!("{chain} {d}").as_bytes());
    }
    Some(chain)
}

/// A delta package artifact as a referrer entry describes it: the hints a client chooses
/// by, all taken from annotations (never trusted over the package's own header).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeltaArtifact {
    /// The artifact manifest's digest.
    pub digest: Digest,
    /// The base image's ID.
    pub base_image_id: Digest,
    /// The base image's ChainID, if given.
    pub base_chain_id: Option<Digest>,
    /// The base image's manifest digests, if given.
    pub base_manifests: Vec<Digest>,
    /// Where the base was read, if given.
    pub base_reference: Option<String>,
    /// The new image's ID.
    pub new_image_id: Digest,
    /// The platform.
    pub platform: Option<Platform>,
    /// The package's size.
    pub package_size: u64,
    /// Bytes saved against a full pull of the layers, if given.
    pub saves: Option<u64>,
    /// The package format version, if given.
    pub format_version: Option<u32>,
    /// When it was made, if given.
    pub created: Option<String>,
}

impl DeltaArtifact {
    /// Reads a referrer's annotations; `Err` says which one is missing or bad (the entry
    /// is then skipped by whoever lists).
    pub fn from_referrer(r: &Referrer) -> Result<DeltaArtifact> {
        let a = &r.annotations;
        let what = format!("referrer {}", r.digest);
        let get = |k: &str| a.get(k).map(String::as_str).filter(|v| !v.is_empty());
        let need = |k: &str| {
            get(k).ok_or_else(|| Error::InvalidField {
                file: what.clone(),
                field: format!("annotations.{k}"),
                reason: "missing".into(),
            })
        };
        let digest_of =
            |k: &str, v: &str| Digest::parse_in(v, Some(&format!("{what} annotations.{k}")));
        let number = |k: &str, v: &str| {
            v.parse::<u64>().map_err(|_| Error::InvalidField {
                file: what.clone(),
                field: format!("annotations.{k}"),
                reason: format!("{v:?} is not a whole number"),
            })
        };
        Ok(DeltaArtifact {
            digest: r.digest.clone(),
            base_image_id: digest_of(keys::BASE_IMAGE_ID, need(keys::BASE_IMAGE_ID)?)?,
            base_chain_id: get(keys::BASE_CHAIN_ID)
                .map(|v| digest_of(keys::BASE_CHAIN_ID, v))
                .transpose()?,
            base_manifests: get(keys::BASE_MANIFESTS)
                .map(|v| {
                    v.split(',')
                        .filter(|d| !d.trim().is_empty())
                        .map(|d| digest_of(keys::BASE_MANIFESTS, d.trim()))
                        .collect::<Result<Vec<_>>>()
                })
                .transpose()?
                .unwrap_or_default(),
            base_reference: get(keys::BASE_REFERENCE).map(str::to_string),
            new_image_id: digest_of(keys::NEW_IMAGE_ID, need(keys::NEW_IMAGE_ID)?)?,
            platform: get(keys::PLATFORM).map(Platform::parse).transpose()?,
            package_size: number(keys::PACKAGE_SIZE, need(keys::PACKAGE_SIZE)?)?,
            saves: get(keys::SAVES)
                .map(|v| number(keys::SAVES, v))
                .transpose()?,
            format_version: get(keys::FORMAT_VERSION)
                .map(|v| number(keys::FORMAT_VERSION, v).map(|n| n as u32))
                .transpose()?,
            created: get(keys::CREATED).map(str::to_string),
        })
    }
}

/// What the artifact manifest of a package records of the images around it.
pub struct ArtifactFacts<'a> {
    /// The package.
    pub package: &'a Package,
    /// The package's blob digest (the file's sha256).
    pub package_digest: &'a Digest,
    /// The file name `oras pull` saves it under.
    pub title: &'a str,
    /// The subject: the new image's manifest for the package's platform.
    pub subject: (&'a str, &'a Digest, u64),
    /// The base's manifest digests known in the registry.
    pub base_manifests: &'a [Digest],
    /// What a full pull of the new image's layers moves, in bytes.
    pub full_pull: u64,
    /// When (RFC 3339).
    pub created: &'a str,
}

/// The annotations of a package artifact.
pub fn annotations(f: &ArtifactFacts<'_>) -> BTreeMap<String, String> {
    let h = &f.package.header;
    let mut a = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        a.insert(k.to_string(), v);
    };
    if let Some(base) = &h.base {
        put(keys::BASE_IMAGE_ID, base.image_id.to_string());
        if let Some(c) = chain_id(&base.diff_ids) {
            put(keys::BASE_CHAIN_ID, c.to_string());
        }
        if !base.reference.is_empty() {
            put(keys::BASE_REFERENCE, base.reference.clone());
        }
    }
    if !f.base_manifests.is_empty() {
        put(
            keys::BASE_MANIFESTS,
            f.base_manifests
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
        );
    }
    put(keys::NEW_IMAGE_ID, h.target.identity.image_id.to_string());
    put(keys::PLATFORM, h.target.identity.platform.to_string());
    put(keys::PACKAGE_SIZE, f.package.file_size.to_string());
    put(
        keys::SAVES,
        f.full_pull.saturating_sub(f.package.file_size).to_string(),
    );
    put(keys::FORMAT_VERSION, f.package.version.to_string());
    put(keys::CREATED, f.created.to_string());
    a
}

/// The artifact manifest's bytes, with `annotations`.
pub fn manifest(f: &ArtifactFacts<'_>, annotations: &BTreeMap<String, String>) -> Result<Vec<u8>> {
    let (subject_type, subject_digest, subject_size) = f.subject;
    let m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": ARTIFACT_TYPE,
        "config": {
            "mediaType": EMPTY_MEDIA_TYPE,
            "digest": Digest::of(EMPTY_CONFIG).to_string(),
            "size": EMPTY_CONFIG.len(),
            "data": "e30=",
        },
        "layers": [{
            "mediaType": ARTIFACT_TYPE,
            "digest": f.package_digest.to_string(),
            "size": f.package.file_size,
            "annotations": { keys::TITLE: f.title },
        }],
        "subject": {
            "mediaType": subject_type,
            "digest": subject_digest.to_string(),
            "size": subject_size,
        },
        "annotations": annotations,
    });
    serde_json::to_vec(&m).map_err(|e| {
        Error::Other(format!(
            "internal: the artifact manifest did not serialize: {e}"
        ))
    })
}
