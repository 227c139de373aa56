//! `docker-daemon`: images in a Docker Engine, through its API.
//!
//! The image is exported (`GET /images/get`) into a temporary file, streamed, never held in
//! memory, and read as a docker-archive; the daemon's own view of the image (its ID) is
//! checked against what the export contains: the config digest with the classic image
//! store, the manifest or index digest with the containerd image store.
//!
//! The writer, [`sink::DaemonSink`], which loads an image into the daemon and tags it, is in
//! [`sink`].

pub mod sink;

use std::io::{BufWriter, Read, Write};

use crate::daemon::{DockerClient, ImageInspect, ImageSummary};
use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::image::Image;
use crate::platform::Platform;
use crate::reference::{ImageReference, Transport};
use crate::transport::docker_archive::DockerArchive;
use crate::transport::oci::OciLayout;
use crate::transport::store::{Store, TarStore};
use crate::transport::{ImageSource, OpenOptions};

/// A client for the daemon at `DOCKER_HOST`, with the timeouts of `options` if it has any.
pub(crate) fn client_for(options: &OpenOptions) -> Result<DockerClient> {
    match options.timeouts {
        Some(t) => DockerClient::from_env_with(t),
        None => DockerClient::from_env(),
    }
}

/// Refuses to write more than `max` bytes: the spool of an export, which a daemon could
/// make endless.
struct LimitedWriter<W> {
    inner: W,
    written: u64,
    max: u64,
    what: String,
}

impl<W: Write> Write for LimitedWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let after = self.written.saturating_add(buf.len() as u64);
        if after > self.max {
            return Err(Error::LimitExceeded {
                what: self.what.clone(),
                limit: "max entry size".into(),
                max: self.max,
                found: after,
                option: crate::transport::ENV_MAX_ENTRY_SIZE.into(),
            }
            .into_io());
        }
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// An image exported from a Docker daemon.
pub struct DockerDaemon {
    /// The export, read through its `manifest.json` or, for another platform of a
    /// multi-platform image, through its OCI index.
    source: Box<dyn ImageSource>,
    image: Image,
}

impl DockerDaemon {
    /// Exports the image a `docker-daemon:` reference names, using `DOCKER_HOST`.
    /// The timeouts are those of `options`, else those of the environment.
    pub fn open(reference: &ImageReference, options: &OpenOptions) -> Result<DockerDaemon> {
        let client = client_for(options)?;
        Self::open_with(&client, reference, options)
    }

    /// Exports the image through `client`.
    pub fn open_with(
        client: &DockerClient,
        reference: &ImageReference,
        options: &OpenOptions,
    ) -> Result<DockerDaemon> {
        let ImageReference::DockerDaemon { name } = reference else {
            return Err(Error::Other(format!(
                "{reference} is not a docker-daemon reference"
            )));
        };
        let inspect = client
            .inspect_image(name)?
            .ok_or_else(|| Error::ImageNotFound {
                path: client.endpoint().into(),
                wanted: name.clone(),
                available: vec![],
            })?;
        Self::export(client, reference, inspect, options)
    }

    /// Finds the image whose ID (config digest) is `image_id` and whose layers are
    /// `diff_ids`, and exports it.
    ///
    /// With the classic image store the daemon knows the image by that ID. The containerd
    /// image store knows it by its manifest digest instead, so there every image whose
    /// layers are `diff_ids` is a candidate (those tagged with one of `tags` first), and the
    /// first whose export holds the config `image_id` is the one. That store reports a
    /// multi-platform image's layers for the host's platform only, so an image tagged with
    /// one of `tags` is a candidate whatever its layers, and is exported for `platform` (the
    /// base's, unless `options` names one). `ImageNotFound` if none.
    pub fn find(
        client: &DockerClient,
        image_id: &Digest,
        diff_ids: &[Digest],
        tags: &[String],
        platform: &Platform,
        options: &OpenOptions,
    ) -> Result<DockerDaemon> {
        let reference = ImageReference::DockerDaemon {
            name: image_id.to_string(),
        };
        if let Some(inspect) = client.inspect_image(&image_id.to_string())? {
            return Self::export(client, &reference, inspect, options);
        }
        tracing::debug!(image = %image_id, "not known by its config digest: looking for it by its layers (containerd image store)");
        let mut candidates = client.list_images()?;
        let tagged = |c: &ImageSummary| c.repo_tags.iter().any(|t| tags.contains(t));
        // Tagged as recorded first, then the rest in the daemon's order.
        candidates.sort_by_key(|c| !tagged(c));
        let for_platform = OpenOptions {
            platform: Some(options.platform.clone().unwrap_or_else(|| platform.clone())),
            ..options.clone()
        };
        for candidate in candidates {
            let Some(inspect) = client.inspect_image(&candidate.id.to_string())? else {
                continue;
            };
            let daemon = if inspect.rootfs_layers == diff_ids {
                tracing::debug!(candidate = %candidate.id, tags = ?candidate.repo_tags, "same layers: exporting to compare configs");
                Self::export(client, &reference, inspect, options)?
            } else if tagged(&candidate) {
                // Other layers, but tagged as the base was: perhaps a multi-platform image
                // whose other platform is the base. An image without it is no candidate.
                tracing::debug!(candidate = %candidate.id, tags = ?candidate.repo_tags, %platform, "tagged as the base: exporting its platform to compare configs");
                match Self::export(client, &reference, inspect, &for_platform) {
                    Ok(daemon) => daemon,
                    Err(Error::ImageNotFound { .. }) => continue,
                    Err(e) => return Err(e),
                }
            } else {
                continue;
            };
            if daemon.image.config_digest == *image_id {
                return Ok(daemon);
            }
        }
        Err(Error::ImageNotFound {
            path: client.endpoint().into(),
            wanted: image_id.to_string(),
            available: vec![],
        })
    }

    /// Exports the image `inspect` describes (by its `Id`), checks that the export is that
    /// image, and gives it the daemon's tags.
    fn export(
        client: &DockerClient,
        reference: &ImageReference,
        inspect: ImageInspect,
        options: &OpenOptions,
    ) -> Result<DockerDaemon> {
        let id = &inspect.id;
        tracing::debug!(image = %reference, id = %id, "exporting from the daemon");
        // The spool has no name, so nothing of it is left whatever ends the run.
        let spool = crate::temp::spool_in(&std::env::temp_dir())?;
        let name = std::path::PathBuf::from(format!("{reference} (export)"));
        {
            // The export is one archive: it may not exceed the largest entry allowed (an
            // endless export would fill the disk).
            let mut w = BufWriter::with_capacity(
                1 << 20,
                LimitedWriter {
                    inner: &spool,
                    written: 0,
                    max: options.limits.max_entry_size,
                    what: format!("{reference} export"),
                },
            );
            // Export by ID: a tag could move between the inspect and the export.
            let n = client.export_image(&id.to_string(), &mut w)?;
            w.flush().at(&name)?;
            tracing::debug!(bytes = n, "exported");
        }
        let store = TarStore::open_spooled(spool, name)?;
        let archive = DockerArchive::from_store(store, reference.clone(), None, options)?;
        let image = archive.image().clone();
        // The classic image store calls an image by its config digest; the containerd
        // store by the digest of its manifest (or index), which the export then holds.
        if image.config_digest != *id && !archive.describes(id)? {
            return Err(Error::DigestMismatch {
                what: format!("{reference} export"),
                expected: id.to_string(),
                found: image.config_digest.to_string(),
            });
        }
        let (source, mut image): (Box<dyn ImageSource>, Image) = match &options.platform {
            Some(wanted) if !wanted.matches(&image.platform) => {
                let host = image.platform.to_string();
                match Self::other_platform(reference, id, archive, options)? {
                    Some(oci) if wanted.matches(&oci.image().platform) => {
                        let image = oci.image().clone();
                        (Box::new(oci), image)
                    }
                    _ => {
                        return Err(Error::ImageNotFound {
                            path: client.endpoint().into(),
                            wanted: format!("{reference} for platform {wanted}"),
                            available: vec![host],
                        })
                    }
                }
            }
            _ => (Box::new(archive), image),
        };
        image.transport = Transport::DockerDaemon;
        image.repo_tags = inspect.repo_tags;
        Ok(DockerDaemon { source, image })
    }

    /// The wanted platform of a multi-platform image, from the export's OCI index: Docker's
    /// containerd image store exports every platform it has, but its `manifest.json` names
    /// only the host's. The index.json entry must be the image the daemon calls `id`.
    /// `None` when the export has no OCI index (Docker < 25: one platform only).
    fn other_platform(
        reference: &ImageReference,
        id: &Digest,
        archive: DockerArchive,
        options: &OpenOptions,
    ) -> Result<Option<OciLayout>> {
        let store = archive.into_store();
        if !store.exists("index.json")? {
            return Ok(None);
        }
        let oci = OciLayout::from_store(Box::new(store), reference.clone(), None, options)?;
        if oci.top_digest() != id && oci.image().config_digest != *id {
            return Err(Error::DigestMismatch {
                what: format!("{reference} export (index.json)"),
                expected: id.to_string(),
                found: oci.top_digest().to_string(),
            });
        }
        Ok(Some(oci))
    }
}

impl ImageSource for DockerDaemon {
    fn image(&self) -> &Image {
        &self.image
    }

    fn open_blob(&self, index: usize) -> Result<Box<dyn Read + Send + '_>> {
        self.source.open_blob(index)
    }

    fn layer_section(&self, index: usize) -> Result<Option<super::store::FileSection>> {
        self.source.layer_section(index)
    }
}
