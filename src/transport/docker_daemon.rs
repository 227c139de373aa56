//! `docker-daemon`: images in a Docker Engine, through its API.
//!
//! The image is exported (`GET /images/get`) into a temporary file, streamed, never held in
//! memory, and read as a docker-archive; the daemon's own view of the image (its ID) is
//! checked against what the export contains.

use std::io::{BufWriter, Read, Write};

use crate::daemon::DockerClient;
use crate::error::{Error, IoContext, Result};
use crate::image::Image;
use crate::reference::{ImageReference, Transport};
use crate::transport::docker_archive::DockerArchive;
use crate::transport::store::TarStore;
use crate::transport::{ImageSource, OpenOptions};

/// An image exported from a Docker daemon.
pub struct DockerDaemon {
    archive: DockerArchive,
    image: Image,
}

impl DockerDaemon {
    /// Exports the image a `docker-daemon:` reference names, using `DOCKER_HOST`.
    pub fn open(reference: &ImageReference, options: &OpenOptions) -> Result<DockerDaemon> {
        let client = DockerClient::from_env()?;
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
        tracing::debug!(image = %name, id = %inspect.id, "found image in the daemon; exporting");
        let spool = tempfile::Builder::new()
            .prefix("docker-delta-export-")
            .suffix(".tar")
            .tempfile()
            .at(std::env::temp_dir())?;
        {
            let mut w = BufWriter::with_capacity(1 << 20, spool.as_file());
            // Export by ID: a tag could move between the inspect and the export.
            let n = client.export_image(&inspect.id.to_string(), &mut w)?;
            w.flush().at(spool.path())?;
            tracing::debug!(bytes = n, spool = %spool.path().display(), "exported");
        }
        let store = TarStore::open_spooled(spool)?;
        let archive = DockerArchive::from_store(store, reference.clone(), None, options)?;
        let mut image = archive.image().clone();
        if image.config_digest != inspect.id {
            return Err(Error::DigestMismatch {
                what: format!("docker-daemon:{name} export"),
                expected: inspect.id.to_string(),
                found: image.config_digest.to_string(),
            });
        }
        image.transport = Transport::DockerDaemon;
        image.repo_tags = inspect.repo_tags.clone();
        Ok(DockerDaemon { archive, image })
    }
}

impl ImageSource for DockerDaemon {
    fn image(&self) -> &Image {
        &self.image
    }

    fn open_blob(&self, index: usize) -> Result<Box<dyn Read + Send + '_>> {
        self.archive.open_blob(index)
    }

    fn layer_section(&self, index: usize) -> Result<Option<super::store::FileSection>> {
        self.archive.layer_section(index)
    }
}
