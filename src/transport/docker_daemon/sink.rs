//! Writing an image into a Docker daemon: the image is written to a temporary
//! docker-archive (every layer verified as it is written), loaded (`POST /images/load`,
//! reported as [`Phase::Load`] progress) and tagged, and the tag is checked to name the
//! new image.

use std::io::Read;
use std::path::PathBuf;

use crate::daemon::{DockerClient, ImageName};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::fs_safe::LockedTempDir;
use crate::progress::{Phase, Progress, Tracker};
use crate::transport::docker_archive::sink::DockerArchiveSink;
use crate::transport::output::open_output_dir;
use crate::transport::{ImageSink, WrittenImage};

/// The daemon a sink loads into: its own client, or the caller's.
enum Client<'a> {
    Owned(DockerClient),
    Borrowed(&'a DockerClient),
}

impl std::ops::Deref for Client<'_> {
    type Target = DockerClient;

    fn deref(&self) -> &DockerClient {
        match self {
            Client::Owned(c) => c,
            Client::Borrowed(c) => c,
        }
    }
}

/// Loads one image into a Docker daemon and tags it (`apply --load`,
/// `apply -o docker-daemon:NAME:TAG`).
pub struct DaemonSink<'a> {
    client: Client<'a>,
    /// `NAME:TAG` of `docker-daemon:NAME:TAG`.
    name: Option<String>,
    progress: &'a dyn Progress,
    /// The locked temporary directory holding the archive: removed when the sink is
    /// dropped, and by the next run should a SIGKILL end this one first.
    dir: LockedTempDir,
    archive: PathBuf,
    writer: Box<DockerArchiveSink>,
}

impl<'a> DaemonSink<'a> {
    /// A sink loading into the daemon `client` talks to, which must answer now
    /// ([`DockerClient::ping`]); `name` is the `NAME:TAG` a `docker-daemon:` reference
    /// gives, `progress` where the load reports.
    pub fn new(
        client: DockerClient,
        name: Option<&str>,
        progress: &'a dyn Progress,
    ) -> Result<DaemonSink<'a>> {
        DaemonSink::start(Client::Owned(client), name, progress)
    }

    /// [`DaemonSink::new`] with a client the caller keeps.
    pub fn with_client(
        client: &'a DockerClient,
        name: Option<&str>,
        progress: &'a dyn Progress,
    ) -> Result<DaemonSink<'a>> {
        DaemonSink::start(Client::Borrowed(client), name, progress)
    }

    fn start(
        client: Client<'a>,
        name: Option<&str>,
        progress: &'a dyn Progress,
    ) -> Result<DaemonSink<'a>> {
        client.ping()?;
        let dir = open_output_dir(&std::env::temp_dir())?.temp_dir()?;
        let archive = dir.dir().path().join("image.tar");
        let writer = Box::new(DockerArchiveSink::to_path(&archive, false));
        Ok(DaemonSink {
            client,
            name: name.map(str::to_string),
            progress,
            dir,
            archive,
            writer,
        })
    }
}

impl ImageSink for DaemonSink<'_> {
    /// The `NAME:TAG` of `docker-daemon:NAME:TAG`, which must be a name to tag with (not
    /// an image ID nor a digest).
    fn name(&self) -> Result<Option<ImageName>> {
        let Some(name) = &self.name else {
            return Ok(None);
        };
        if Digest::parse(name).is_ok() {
            return Err(Error::InvalidReference {
                input: format!("docker-daemon:{name}"),
                reason: "an image ID cannot name the image written; give NAME:TAG".into(),
            });
        }
        ImageName::parse(name).map(Some)
    }

    fn check(&self, image_id: &Digest) -> Result<()> {
        self.writer.check(image_id)
    }

    fn spool_dir(&self) -> PathBuf {
        self.writer.spool_dir()
    }

    fn add_layer(&mut self, diff_id: &Digest, size: u64, data: &mut dyn Read) -> Result<()> {
        self.writer.add_layer(diff_id, size, data)
    }

    /// Writes the archive, loads it and tags it `name`. A tagging failure
    /// ([`Error::TagFailed`]) is returned in [`WrittenImage::tag_error`]: the image is
    /// loaded all the same.
    fn finish(self: Box<Self>, config: &[u8], name: Option<&ImageName>) -> Result<WrittenImage> {
        let DaemonSink {
            client,
            progress,
            dir,
            archive,
            writer,
            ..
        } = *self;
        let written = writer.finish(config, name)?;
        let file = std::fs::File::open(&archive).map_err(|e| Error::io(&archive, e))?;
        let len = file.metadata().map_err(|e| Error::io(&archive, e))?.len();
        let mut tracker = Tracker::start(progress, Phase::Load, len)?;
        client.load_image(tracker.reader(file), Some(len))?;
        tracker.finish()?;
        let image_id = Digest::of(config);
        tracing::info!(image_id = %image_id, endpoint = client.endpoint(), "image loaded");
        let tag_error = match name {
            Some(name) => client
                .tag_and_verify(
                    &image_id,
                    std::slice::from_ref(&written.manifest_digest),
                    &name.to_string(),
                )
                .err(),
            None => None,
        };
        let written = Ok(WrittenImage {
            pushed_to: None,
            path: None,
            destination: client.endpoint().to_string(),
            loaded_into: Some(client.endpoint().to_string()),
            manifest_digest: written.manifest_digest,
            tag_error,
        });
        drop(dir);
        written
    }
}
