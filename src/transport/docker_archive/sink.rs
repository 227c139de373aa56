//! Writing `docker-archive:` tars that `docker load` accepts (Docker 20.10 through the
//! containerd image store), to a file or streamed to a writer.
//!
//! A docker-archive written here carries both views Docker reads: `manifest.json`
//! (`Config`, `RepoTags`, `Layers` under `blobs/sha256/`) for the classic store, and
//! `oci-layout` + `index.json` whose manifest is annotated with `io.containerd.image.name`
//! and `org.opencontainers.image.ref.name` for the containerd store, which ignores
//! `RepoTags` when `oci-layout` is present.
//!
//! A file is written to a temporary file beside its name and renamed once the whole image
//! verified. A stream (`apply -o -`, for `| docker load`) cannot be renamed into place:
//! there every layer is still verified as it passes, and `index.json` and `manifest.json`,
//! the files `docker load` starts from, come last, so that a stream cut short by a failure
//! holds no image a loader would take.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::daemon::ImageName;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::{ANNOTATION_CONTAINERD_NAME, ANNOTATION_REF_NAME};
use crate::reference::{ArchiveSelector, ImageReference};
use crate::transport::oci::blob_path;
use crate::transport::oci::sink::{descriptor, index, OCI_LAYOUT};
use crate::transport::output::{
    check_archive, parent_dir, to_json, BlobStore, Layers, TarOut, Verify,
};
use crate::transport::{ImageSink, WrittenImage};

/// Checks, writing nothing, a docker-archive file destination: its directory exists, and
/// it is not a directory, nor existing unless `force`.
pub fn check(path: &Path, force: bool) -> Result<()> {
    check_archive(path, force).map(|_| ())
}

/// Writes one image to a docker-archive file, or streams one to a writer.
pub struct DockerArchiveSink {
    /// The archive's path, or what names the stream in errors.
    dest: PathBuf,
    /// The name in `docker-archive:PATH:NAME:TAG`.
    name: Option<String>,
    out: Option<TarOut>,
    streamed: bool,
    layers: Layers,
    /// Whether an existing archive may be replaced.
    force: bool,
}

impl DockerArchiveSink {
    /// A sink for `dest` (a `docker-archive:` reference); nothing is checked or written
    /// yet.
    pub fn create(dest: &ImageReference, force: bool) -> Result<DockerArchiveSink> {
        let ImageReference::DockerArchive { path, selector } = dest else {
            return Err(Error::Other(format!(
                "internal: {dest} is not a docker-archive: destination"
            )));
        };
        Ok(DockerArchiveSink {
            dest: path.clone(),
            name: match selector {
                Some(ArchiveSelector::Name(n)) => Some(n.clone()),
                _ => None,
            },
            out: None,
            streamed: false,
            layers: Layers::default(),
            force,
        })
    }

    /// A sink for a docker-archive file at `path` (a temporary archive, say).
    pub fn to_path(path: &Path, force: bool) -> DockerArchiveSink {
        DockerArchiveSink {
            dest: path.to_path_buf(),
            name: None,
            out: None,
            streamed: false,
            layers: Layers::default(),
            force,
        }
    }

    /// Streams a docker-archive to `out` (standard output for `| docker load`). Layers are
    /// verified as they pass; a failure leaves the stream without `index.json` and
    /// `manifest.json`, which are written last, so that no loader takes it for an image.
    /// `describe` names the stream in errors.
    pub fn stream(out: Box<dyn Write + Send>, describe: &str) -> DockerArchiveSink {
        DockerArchiveSink {
            dest: PathBuf::from(describe),
            name: None,
            out: Some(TarOut::stream(out)),
            streamed: true,
            layers: Layers::default(),
            force: false,
        }
    }

    /// Starts writing (once): checks the destination again and opens it.
    fn out(&mut self) -> Result<&mut TarOut> {
        if self.out.is_none() {
            check(&self.dest, self.force)?;
            self.out = Some(TarOut::create(&self.dest)?);
        }
        self.out
            .as_mut()
            .ok_or_else(|| Error::Other("internal: the archive did not open".into()))
    }
}

impl BlobStore for DockerArchiveSink {
    fn layers_mut(&mut self) -> &mut Layers {
        &mut self.layers
    }

    fn dest(&self) -> PathBuf {
        self.dest.clone()
    }

    fn put_blob(
        &mut self,
        digest: &Digest,
        size: u64,
        data: &mut dyn Read,
        what: &str,
    ) -> Result<()> {
        let dest = self.dest.clone();
        let mut verify = Verify::new(data, size, digest, what);
        self.out()?
            .append(&blob_path(digest), size, &mut verify, &dest)?;
        verify.check()
    }
}

impl ImageSink for DockerArchiveSink {
    /// The name in `docker-archive:PATH:NAME:TAG`, which must be a valid image name (as
    /// `--tag` must): refused, not dropped for another name.
    fn name(&self) -> Result<Option<ImageName>> {
        self.name.as_deref().map(ImageName::parse).transpose()
    }

    fn check(&self, _image_id: &Digest) -> Result<()> {
        if self.streamed {
            return Ok(());
        }
        check(&self.dest, self.force)
    }

    fn spool_dir(&self) -> PathBuf {
        if self.streamed {
            std::env::temp_dir()
        } else {
            parent_dir(&self.dest)
        }
    }

    fn add_layer(&mut self, diff_id: &Digest, size: u64, data: &mut dyn Read) -> Result<()> {
        self.add_layer_blob(diff_id, size, data)
    }

    fn finish(
        mut self: Box<Self>,
        config: &[u8],
        name: Option<&ImageName>,
    ) -> Result<WrittenImage> {
        let (config_digest, manifest_raw, manifest_digest) =
            self.put_config_and_manifest(config)?;
        let mut annotations = BTreeMap::new();
        if let Some(n) = name {
            annotations.insert(ANNOTATION_CONTAINERD_NAME, n.qualified());
            annotations.insert(ANNOTATION_REF_NAME, n.tag().to_string());
        }
        let descriptor = descriptor(&manifest_digest, &manifest_raw, annotations);
        // `index.json` and `manifest.json`, what loaders start from, last of all.
        let mut files: Vec<(&str, Vec<u8>)> = vec![("oci-layout", OCI_LAYOUT.to_vec())];
        if let Some(n) = name {
            let repositories =
                json!({ n.repo().to_string(): { n.tag().to_string(): config_digest.hex() } });
            files.push(("repositories", to_json(&repositories)?));
        }
        files.push(("index.json", index(&descriptor)?));
        let tags: Vec<String> = name.iter().map(|n| n.to_string()).collect();
        let manifest_json = json!([{
            "Config": blob_path(&config_digest),
            "RepoTags": if tags.is_empty() { serde_json::Value::Null } else { json!(tags) },
            "Layers": self.layers.list().iter().map(|(d, _)| blob_path(d)).collect::<Vec<_>>(),
        }]);
        files.push(("manifest.json", to_json(&manifest_json)?));
        let dest = self.dest.clone();
        let mut out = self
            .out
            .take()
            .ok_or_else(|| Error::Other("internal: the archive did not open".into()))?;
        out.append_files(files, &dest)?;
        out.commit(&dest, self.force)?;
        Ok(WrittenImage {
            pushed_to: None,
            destination: dest.display().to_string(),
            path: (!self.streamed).then_some(dest),
            loaded_into: None,
            manifest_digest,
            tag_error: None,
        })
    }
}
