//! Reading an image from a registry: the manifest (through an index for the wanted
//! platform) and the config at open, layers only when they are read.

use std::io::Read;

use super::client::Registry;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::image::Image;
use crate::manifest::{ConfigView, Descriptor, Document};
use crate::reference::ImageReference;
use crate::transport::{oci, ImageSource, Limits, OpenOptions};

/// An image in a registry.
#[derive(Debug)]
pub struct RegistryImage {
    registry: Registry,
    repository: String,
    image: Image,
    limits: Limits,
    /// The digest of what the reference named (an index for a multi-platform image).
    top: Digest,
}

impl RegistryImage {
    /// Opens `reference` (a `docker://` reference): reads its manifest, choosing the
    /// platform from an index, and its config. No layer is downloaded.
    pub fn open(reference: &ImageReference, options: &OpenOptions) -> Result<RegistryImage> {
        let ImageReference::Docker {
            registry,
            repository,
            tag,
            digest,
        } = reference
        else {
            return Err(Error::Other(format!(
                "{reference}: not a registry reference"
            )));
        };
        let limits = &options.limits;
        let client = Registry::connect(registry, &options.registry)?;
        let wanted = match (digest, tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        };
        let (mut raw, _, top) = client.manifest(repository, &wanted, limits.max_json_size)?;
        let mut name = format!("{reference}");
        let mut kinds = Vec::new();
        let manifest = loop {
            match Document::parse(&raw, &name)? {
                Document::Manifest(m) => break m,
                Document::Index(i) => {
                    kinds.push(i.kind);
                    if kinds.len() > limits.max_index_depth {
                        return Err(Error::LimitExceeded {
                            what: name,
                            limit: "max index nesting depth".into(),
                            max: limits.max_index_depth as u64,
                            found: kinds.len() as u64,
                            option: crate::transport::ENV_MAX_INDEX_DEPTH.into(),
                        });
                    }
                    let entries: Vec<&Descriptor> = i.manifests.iter().collect();
                    let entry = match entries.as_slice() {
                        [one] if one.platform.is_none() => *one,
                        many => oci::choose_platform(many, options.platform.as_ref(), &name)?,
                    };
                    tracing::debug!(image = %reference, manifest = %entry.digest, "chose from the index");
                    let (next, _, _) = client.manifest(
                        repository,
                        &entry.digest.to_string(),
                        limits.max_json_size,
                    )?;
                    raw = next;
                    name = format!("{reference} ({})", entry.digest);
                }
                Document::Archive(_) => {
                    return Err(Error::UnsupportedManifest {
                        file: name,
                        found: "a docker-archive manifest.json".into(),
                    })
                }
            }
        };
        let config = client.small_blob(
            repository,
            &manifest.config.digest,
            manifest.config.size,
            limits.max_json_size,
        )?;
        let config_digest = manifest.config.digest.clone();
        let view = ConfigView::parse(&config, &format!("{reference} config {config_digest}"))?;
        limits.check_layers(&name, manifest.layers.len(), view.diff_ids.len())?;
        let layers = manifest
            .layers
            .iter()
            .zip(&view.diff_ids)
            .enumerate()
            .map(|(index, (desc, diff_id))| {
                oci::layer_of(index, desc, diff_id, format!("blob {}", desc.digest))
            })
            .collect();
        let repo_tags = tag
            .iter()
            .map(|t| format!("{registry}/{repository}:{t}"))
            .collect();
        let image = Image {
            reference: reference.clone(),
            transport: reference.transport(),
            manifest_kind: manifest.kind,
            index_kinds: kinds,
            manifest: Some(raw),
            config,
            config_digest,
            repo_tags,
            platform: view.platform,
            layers,
        };
        Ok(RegistryImage {
            registry: client,
            repository: repository.clone(),
            image,
            limits: limits.clone(),
            top,
        })
    }

    /// The digest of what the reference named: the manifest, or the index of a
    /// multi-platform image.
    pub fn top_digest(&self) -> &Digest {
        &self.top
    }

    /// The image manifest read (for the platform chosen): its media type, digest and
    /// size, as a `subject` names it.
    pub fn manifest_descriptor(&self) -> (&'static str, Digest, u64) {
        let raw = self.image.manifest.as_deref().unwrap_or_default();
        let media_type = match self.image.manifest_kind {
            crate::manifest::ManifestKind::DockerSchema2 => {
                "application/vnd.docker.distribution.manifest.v2+json"
            }
            _ => "application/vnd.oci.image.manifest.v1+json",
        };
        (media_type, Digest::of(raw), raw.len() as u64)
    }

    /// The client of the registry the image is in.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The repository the image is in.
    pub fn repository(&self) -> &str {
        &self.repository
    }
}

impl ImageSource for RegistryImage {
    fn image(&self) -> &Image {
        &self.image
    }

    fn limits(&self) -> Limits {
        self.limits.clone()
    }

    fn registry_blob(&self, index: usize) -> Option<crate::transport::RegistryBlob> {
        let layer = self.image.layers.get(index)?;
        Some(crate::transport::RegistryBlob {
            registry: self.registry.name().to_string(),
            repository: self.repository.clone(),
            digest: layer.digest.clone()?,
            size: layer.size,
            compression: layer.compression,
        })
    }

    fn open_blob(&self, index: usize) -> Result<Box<dyn Read + Send + '_>> {
        let layer = self.layer(index)?;
        let digest = layer.digest.clone().ok_or_else(|| {
            Error::Other(format!(
                "{}: layer {index} has no digest",
                self.image.reference
            ))
        })?;
        Ok(Box::new(self.registry.blob(
            &self.repository,
            &digest,
            layer.size,
        )?))
    }
}
