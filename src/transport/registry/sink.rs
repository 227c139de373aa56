//! Writing an image to a registry (`-o docker://HOST/NAME:TAG`): each layer is verified
//! against its diff_id while it is compressed (gzip or zstd) into a nameless spool file,
//! then uploaded in chunks unless the registry has it already; a base layer that lives in
//! the same registry is mounted (or found) rather than uploaded. The config follows, and
//! the manifest goes last, so the tag names the image only once every blob is there.
//!
//! The config digest (the image ID) is the new image's, exactly; the manifest digest is a
//! new one, since it records the compressed blobs.

use std::collections::HashMap;
use std::io::{self, BufWriter, Read, Write};

use super::client::Registry;
use super::RegistryOptions;
use crate::compression::Compression;
use crate::daemon::ImageName;
use crate::digest::{Digest, HashingWriter};
use crate::error::{Error, Result};
use crate::reference::ImageReference;
use crate::transport::output::Verify;
use crate::transport::{ImageSink, RegistryBlob, WrittenImage};

/// A layer as pushed: its blob and how it is compressed.
#[derive(Debug, Clone)]
struct Pushed {
    digest: Digest,
    size: u64,
    compression: Compression,
}

/// Pushes one image to a repository of a registry.
pub struct RegistrySink {
    registry: Registry,
    repository: String,
    tag: String,
    compression: Compression,
    layers: Vec<Pushed>,
    by_diff_id: HashMap<Digest, Pushed>,
}

impl RegistrySink {
    /// A sink pushing to `dest` (a `docker://` reference with a tag, `latest` when it has
    /// none), compressing layers with `compression` (gzip or zstd). The registry must
    /// answer now.
    pub fn create(
        dest: &ImageReference,
        options: &RegistryOptions,
        compression: Compression,
    ) -> Result<RegistrySink> {
        let ImageReference::Docker {
            registry,
            repository,
            tag,
            digest,
        } = dest
        else {
            return Err(Error::Other(format!("{dest}: not a registry reference")));
        };
        if digest.is_some() {
            return Err(Error::InvalidReference {
                input: dest.to_string(),
                reason: "an image is pushed under a tag (its manifest digest is known only \
                         once it is written); give docker://HOST/NAME:TAG"
                    .into(),
            });
        }
        if !matches!(compression, Compression::Gzip | Compression::Zstd) {
            return Err(Error::InvalidOption {
                option: "--dest-compress-format".into(),
                reason: format!(
                    "{} is not a layer compression a registry output writes; use gzip or zstd",
                    compression.name()
                ),
            });
        }
        Ok(RegistrySink {
            registry: Registry::connect(registry, options)?,
            repository: repository.clone(),
            tag: tag.clone().unwrap_or_else(|| "latest".into()),
            compression,
            layers: Vec::new(),
            by_diff_id: HashMap::new(),
        })
    }

    fn destination(&self) -> String {
        format!(
            "docker://{}/{}:{}",
            self.registry.name(),
            self.repository,
            self.tag
        )
    }

    /// Reads `data` to its end, checking it is `size` bytes hashing to `diff_id`.
    fn verify_only(&self, diff_id: &Digest, size: u64, data: &mut dyn Read) -> Result<()> {
        let what = format!("layer {}", self.layers.len());
        let mut verify = Verify::new(data, size, diff_id, &what);
        io::copy(&mut verify, &mut io::sink()).map_err(|e| Error::io(self.destination(), e))?;
        verify.check()
    }

    /// Compresses `data` (verified against `diff_id`) into a spool, and uploads it unless
    /// the registry has it.
    fn push(&mut self, diff_id: &Digest, size: u64, data: &mut dyn Read) -> Result<Pushed> {
        let what = format!("layer {}", self.layers.len());
        let dest = self.destination();
        let spool = crate::temp::spool_in(&std::env::temp_dir())?;
        let out = HashingWriter::new(BufWriter::with_capacity(1 << 20, spool));
        let mut verify = Verify::new(data, size, diff_id, &what);
        let io_err = |e| Error::io(dest.clone(), e);
        let out = match self.compression {
            Compression::Zstd => {
                let mut enc = zstd::Encoder::new(out, 3).map_err(io_err)?;
                let workers = u32::try_from(crate::threads::threads()).unwrap_or(1);
                if workers > 1 {
                    enc.multithread(workers).map_err(io_err)?;
                }
                io::copy(&mut verify, &mut enc).map_err(io_err)?;
                enc.finish().map_err(io_err)?
            }
            _ => {
                let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::default());
                io::copy(&mut verify, &mut enc).map_err(io_err)?;
                enc.finish().map_err(io_err)?
            }
        };
        verify.check()?;
        let (digest, blob_size, mut buffered) = out.finish();
        buffered.flush().map_err(io_err)?;
        let file = buffered
            .into_inner()
            .map_err(|e| Error::io(dest.clone(), e.into_error()))?;
        if self
            .registry
            .has_blob(&self.repository, &digest, blob_size)?
        {
            tracing::debug!(layer = %what, blob = %digest, "the registry has it already");
        } else {
            tracing::debug!(layer = %what, blob = %digest, size = blob_size, "uploading");
            self.registry
                .upload_blob(&self.repository, &digest, &file, blob_size)?;
        }
        Ok(Pushed {
            digest,
            size: blob_size,
            compression: self.compression,
        })
    }

    /// Whether the blob of a base layer at `origin` can stand for the layer here: a blob
    /// the repository has already, or mounts from another repository of this registry.
    /// Only gzip blobs (which every Docker pulls) and blobs in the chosen compression are
    /// taken.
    fn reuse(&self, origin: &RegistryBlob) -> Result<bool> {
        if !matches!(origin.compression, Compression::Gzip)
            && origin.compression != self.compression
        {
            return Ok(false);
        }
        if self
            .registry
            .has_blob(&self.repository, &origin.digest, origin.size)?
        {
            return Ok(true);
        }
        if origin.registry == self.registry.name() && origin.repository != self.repository {
            return self
                .registry
                .mount_blob(&self.repository, &origin.digest, &origin.repository);
        }
        Ok(false)
    }
}

impl ImageSink for RegistrySink {
    /// `HOST/NAME:TAG` of the destination.
    fn name(&self) -> Result<Option<ImageName>> {
        ImageName::parse(&format!(
            "{}/{}:{}",
            self.registry.name(),
            self.repository,
            self.tag
        ))
        .map(Some)
    }

    /// Checks that the credentials found may push here (an upload started and cancelled).
    fn check(&self, _image_id: &Digest) -> Result<()> {
        self.registry.check_push(&self.repository)
    }

    fn add_layer(&mut self, diff_id: &Digest, size: u64, data: &mut dyn Read) -> Result<()> {
        self.add_base_layer(diff_id, size, data, None)
    }

    /// A base layer found in a registry is mounted or found rather than uploaded; it is
    /// still read to its end and verified against its diff_id, so that the image pushed is
    /// exactly the one rebuilt.
    fn add_base_layer(
        &mut self,
        diff_id: &Digest,
        size: u64,
        data: &mut dyn Read,
        origin: Option<&RegistryBlob>,
    ) -> Result<()> {
        if let Some(done) = self.by_diff_id.get(diff_id).cloned() {
            self.verify_only(diff_id, size, data)?;
            self.layers.push(done);
            return Ok(());
        }
        let reused = match origin {
            Some(o) if self.reuse(o)? => {
                tracing::debug!(layer = self.layers.len(), blob = %o.digest, from = %o.repository, "base layer mounted, not uploaded");
                self.verify_only(diff_id, size, data)?;
                Some(Pushed {
                    digest: o.digest.clone(),
                    size: o.size,
                    compression: o.compression,
                })
            }
            _ => None,
        };
        let pushed = match reused {
            Some(p) => p,
            None => self.push(diff_id, size, data)?,
        };
        self.by_diff_id.insert(diff_id.clone(), pushed.clone());
        self.layers.push(pushed);
        Ok(())
    }

    /// Uploads the config and puts the manifest under the tag: a Docker schema2 manifest
    /// when every layer is gzip (what every Docker and registry takes), else an OCI one.
    fn finish(self: Box<Self>, config: &[u8], _name: Option<&ImageName>) -> Result<WrittenImage> {
        let config_digest = Digest::of(config);
        self.registry
            .put_small_blob(&self.repository, &config_digest, config)?;
        let docker = self
            .layers
            .iter()
            .all(|l| l.compression == Compression::Gzip);
        let (media_type, config_type) = if docker {
            (
                "application/vnd.docker.distribution.manifest.v2+json",
                "application/vnd.docker.container.image.v1+json",
            )
        } else {
            (
                "application/vnd.oci.image.manifest.v1+json",
                "application/vnd.oci.image.config.v1+json",
            )
        };
        let manifest = Manifest {
            schema_version: 2,
            media_type,
            config: Blob {
                media_type: config_type,
                digest: config_digest.to_string(),
                size: config.len() as u64,
            },
            layers: self
                .layers
                .iter()
                .map(|l| Blob {
                    media_type: if docker {
                        l.compression.docker_layer_media_type()
                    } else {
                        l.compression.oci_layer_media_type()
                    },
                    digest: l.digest.to_string(),
                    size: l.size,
                })
                .collect(),
        };
        let bytes = serde_json::to_vec(&manifest)
            .map_err(|e| Error::Other(format!("internal: the manifest did not serialize: {e}")))?;
        let manifest_digest =
            self.registry
                .put_manifest(&self.repository, &self.tag, media_type, &bytes)?;
        let destination = self.destination();
        tracing::info!(destination = %destination, manifest = %manifest_digest, image_id = %config_digest, "image pushed");
        Ok(WrittenImage {
            path: None,
            destination: destination.clone(),
            loaded_into: None,
            pushed_to: Some(destination.clone()),
            manifest_digest,
            tag_error: None,
        })
    }
}

/// An image manifest as pushed (fields in the order registries and tools write them).
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    schema_version: u32,
    media_type: &'static str,
    config: Blob,
    layers: Vec<Blob>,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Blob {
    media_type: &'static str,
    digest: String,
    size: u64,
}
