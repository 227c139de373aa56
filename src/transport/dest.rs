//! Writing images: `docker-archive` tars that `docker load` accepts (Docker 20.10 through
//! the containerd image store), `oci` directories and `oci-archive` tars.
//!
//! Every layer is written uncompressed, named by its diff_id, and verified (size and
//! SHA-256) while it is written. Nothing appears at the destination until the whole image
//! verified: archives are written to a temporary file next to the destination and renamed;
//! a new layout directory is built beside its final name and renamed; blobs added to an
//! existing layout are renamed into place one by one and `index.json` is replaced last.
//!
//! A docker-archive written here carries both views Docker reads:
//! `manifest.json` (`Config`, `RepoTags`, `Layers` under `blobs/sha256/`) for the classic
//! store, and `oci-layout` + `index.json` whose manifest is annotated with
//! `io.containerd.image.name` and `org.opencontainers.image.ref.name` for the containerd
//! store, which ignores `RepoTags` when `oci-layout` is present.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::PathBuf;

use serde_json::json;

pub use crate::daemon::ImageName;
use crate::digest::{Digest, HashingReader};
use crate::error::{Error, IoContext, Result};
use crate::manifest::{
    ANNOTATION_CONTAINERD_NAME, ANNOTATION_REF_NAME, MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_OCI_MANIFEST,
};
use crate::reference::{ArchiveSelector, ImageReference};
use crate::transport::oci::blob_path;

const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";

/// What the writer produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    /// A docker-archive tar.
    DockerArchive,
    /// An OCI layout directory.
    Oci,
    /// A tar of an OCI layout.
    OciArchive,
}

enum Sink {
    Tar {
        builder: tar::Builder<BufWriter<WriteBehind<File>>>,
        temp: tempfile::TempPath,
    },
    Dir {
        /// Where blobs are written (a staging directory for a new layout, the layout itself
        /// when adding to an existing one).
        root: PathBuf,
        staging: Option<tempfile::TempDir>,
    },
}

/// What [`ImageWriter::finish`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenImage {
    /// The destination path (archive file or layout directory).
    pub path: PathBuf,
    /// The digest of the OCI image manifest written for the image. It is what Docker's
    /// containerd image store reports as the image's `Id` after `docker load` (the classic
    /// store reports the config digest).
    pub manifest_digest: Digest,
}

/// Writes one image to a docker-archive, oci or oci-archive destination.
pub struct ImageWriter {
    kind: OutputKind,
    dest: PathBuf,
    sink: Sink,
    layers: Vec<(Digest, u64)>,
    written: std::collections::HashSet<Digest>,
    /// `ref` of an `oci:DIR:REF` / `oci-archive:PATH:REF` destination.
    oci_ref: Option<String>,
}

impl ImageWriter {
    /// Prepares to write to `dest` (a `docker-archive:`, `oci:` or `oci-archive:`
    /// reference). An existing archive is refused unless `force`; an existing OCI layout
    /// directory gets the image added (its `ref` replaced), anything else there is refused.
    pub fn create(dest: &ImageReference, force: bool) -> Result<ImageWriter> {
        let (kind, path) = match dest {
            ImageReference::DockerArchive { path, .. } => (OutputKind::DockerArchive, path),
            ImageReference::Oci { path, .. } => (OutputKind::Oci, path),
            ImageReference::OciArchive { path, .. } => (OutputKind::OciArchive, path),
            ImageReference::DockerDaemon { .. } => {
                return Err(Error::Other(format!(
                    "{dest}: write to a file (docker-archive:, oci:, oci-archive:) or use --load"
                )))
            }
        };
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !parent.is_dir() {
            return Err(Error::Io {
                path: parent,
                source: io::Error::new(io::ErrorKind::NotFound, "output directory does not exist"),
            });
        }
        let sink = match kind {
            OutputKind::DockerArchive | OutputKind::OciArchive => {
                if path.exists() && !force {
                    return Err(Error::OutputExists { path: path.clone() });
                }
                if path.is_dir() {
                    return Err(Error::InvalidLayout {
                        path: path.clone(),
                        reason: "is a directory; an archive output must be a file".into(),
                    });
                }
                let temp = tempfile::Builder::new()
                    .prefix(".docker-delta-")
                    .suffix(".tmp")
                    .tempfile_in(&parent)
                    .at(&parent)?;
                let (file, temp) = temp.into_parts();
                let mut builder =
                    tar::Builder::new(BufWriter::with_capacity(1 << 20, WriteBehind::new(file)));
                builder.mode(tar::HeaderMode::Deterministic);
                Sink::Tar { builder, temp }
            }
            OutputKind::Oci => {
                if path.exists() {
                    let is_layout =
                        path.join("oci-layout").is_file() && path.join("index.json").is_file();
                    if !is_layout {
                        return Err(Error::InvalidLayout {
                            path: path.clone(),
                            reason: "exists and is not an OCI image layout; choose a new directory"
                                .into(),
                        });
                    }
                    fs::create_dir_all(path.join("blobs/sha256")).at(path)?;
                    Sink::Dir {
                        root: path.clone(),
                        staging: None,
                    }
                } else {
                    let staging = tempfile::Builder::new()
                        .prefix(".docker-delta-")
                        .tempdir_in(&parent)
                        .at(&parent)?;
                    fs::create_dir_all(staging.path().join("blobs/sha256")).at(staging.path())?;
                    Sink::Dir {
                        root: staging.path().to_path_buf(),
                        staging: Some(staging),
                    }
                }
            }
        };
        Ok(ImageWriter {
            kind,
            dest: path.clone(),
            sink,
            layers: Vec::new(),
            written: Default::default(),
            oci_ref: match dest {
                ImageReference::Oci { name, .. } | ImageReference::OciArchive { name, .. } => {
                    name.clone()
                }
                _ => None,
            },
        })
    }

    /// A directory on the output's filesystem for temporary files.
    pub fn spool_dir(&self) -> PathBuf {
        match self.dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    /// Adds the next layer (base first): `size` bytes from `data` that must hash to
    /// `diff_id`. A layer seen before (same diff_id) is stored once.
    pub fn add_layer(&mut self, diff_id: &Digest, size: u64, data: impl Read) -> Result<()> {
        self.layers.push((diff_id.clone(), size));
        if self.written.contains(diff_id) {
            // Still consume the stream so its own verification runs.
            let mut data = data;
            io::copy(&mut data, &mut io::sink()).map_err(|e| Error::io(&self.dest, e))?;
            return Ok(());
        }
        self.put_blob(
            diff_id,
            size,
            data,
            &format!("layer {}", self.layers.len() - 1),
        )?;
        self.written.insert(diff_id.clone());
        Ok(())
    }

    fn put_blob(&mut self, digest: &Digest, size: u64, data: impl Read, what: &str) -> Result<()> {
        let name = blob_path(digest);

        let mut verify = Verify {
            inner: HashingReader::new(data),
            size,
            digest: digest.clone(),
            what: format!("{what} ({digest})"),
        };
        match &mut self.sink {
            Sink::Tar { builder, temp } => {
                let mut h = tar_header(size);
                builder
                    .append_data(&mut h, &name, &mut verify)
                    .map_err(|e| Error::io(&**temp, e))?;
            }
            Sink::Dir { root, .. } => {
                let final_path = root.join(&name);
                if final_path.is_file() {
                    // Content-addressed: an existing blob with this name is this blob,
                    // provided it is intact.
                    let (found, n) =
                        crate::digest::digest_reader(File::open(&final_path).at(&final_path)?)
                            .at(&final_path)?;
                    if found == *digest && n == size {
                        io::copy(&mut verify, &mut io::sink())
                            .map_err(|e| Error::io(&final_path, e))?;
                        return verify.check();
                    }
                }
                let dir = root.join("blobs/sha256");
                let mut tmp = tempfile::Builder::new()
                    .prefix(".tmp-")
                    .tempfile_in(&dir)
                    .at(&dir)?;
                {
                    let mut w =
                        BufWriter::with_capacity(1 << 20, WriteBehind::new(tmp.as_file_mut()));
                    io::copy(&mut verify, &mut w).map_err(|e| Error::io(&final_path, e))?;
                    w.flush().at(&final_path)?;
                }
                verify.check()?;
                tmp.as_file().sync_all().at(&final_path)?;
                tmp.persist(&final_path)
                    .map_err(|e| Error::io(&final_path, e.error))?;
                return Ok(());
            }
        }
        verify.check()
    }

    /// Writes the config, manifests and index, verifies, and moves the result into place.
    /// Returns where it went and the digest of the OCI manifest written.
    pub fn finish(mut self, config: &[u8], name: Option<&ImageName>) -> Result<WrittenImage> {
        let config_digest = Digest::of(config);
        self.put_blob(&config_digest, config.len() as u64, config, "config")?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_OCI_MANIFEST,
            "config": {
                "mediaType": MEDIA_TYPE_OCI_CONFIG,
                "digest": config_digest.to_string(),
                "size": config.len(),
            },
            "layers": self.layers.iter().map(|(d, s)| json!({
                "mediaType": LAYER_MEDIA_TYPE,
                "digest": d.to_string(),
                "size": s,
            })).collect::<Vec<_>>(),
        });
        let manifest_raw = to_json(&manifest)?;
        let manifest_digest = Digest::of(&manifest_raw);
        self.put_blob(
            &manifest_digest,
            manifest_raw.len() as u64,
            &manifest_raw[..],
            "manifest",
        )?;

        let mut annotations = BTreeMap::new();
        if let Some(n) = name {
            if self.kind == OutputKind::DockerArchive {
                annotations.insert(ANNOTATION_CONTAINERD_NAME, n.qualified());
            }
            annotations.insert(ANNOTATION_REF_NAME, n.tag().to_string());
        }
        if let Some(r) = &self.oci_ref {
            annotations.insert(ANNOTATION_REF_NAME, r.clone());
        }
        let mut descriptor = json!({
            "mediaType": MEDIA_TYPE_OCI_MANIFEST,
            "digest": manifest_digest.to_string(),
            "size": manifest_raw.len(),
        });
        if !annotations.is_empty() {
            descriptor["annotations"] = json!(annotations);
        }
        let kind = self.kind;
        match &mut self.sink {
            Sink::Tar { builder, temp } => {
                let index = json!({
                    "schemaVersion": 2,
                    "mediaType": MEDIA_TYPE_OCI_INDEX,
                    "manifests": [descriptor],
                });
                let mut files: Vec<(&str, Vec<u8>)> = vec![
                    ("oci-layout", OCI_LAYOUT.to_vec()),
                    ("index.json", to_json(&index)?),
                ];
                if kind == OutputKind::DockerArchive {
                    let tags: Vec<String> = name.iter().map(|n| n.to_string()).collect();
                    let manifest_json = json!([{
                        "Config": blob_path(&config_digest),
                        "RepoTags": if tags.is_empty() { serde_json::Value::Null } else { json!(tags) },
                        "Layers": self.layers.iter().map(|(d, _)| blob_path(d)).collect::<Vec<_>>(),
                    }]);
                    files.push(("manifest.json", to_json(&manifest_json)?));
                    if let Some(n) = name {
                        let repositories = json!({ n.repo().to_string(): { n.tag().to_string(): config_digest.hex() } });
                        files.push(("repositories", to_json(&repositories)?));
                    }
                }
                for (file, data) in files {
                    let mut h = tar_header(data.len() as u64);
                    builder
                        .append_data(&mut h, file, &data[..])
                        .map_err(|e| Error::io(&**temp, e))?;
                }
                builder.finish().map_err(|e| Error::io(&**temp, e))?;
            }
            Sink::Dir { root, .. } => {
                fs::write(root.join("oci-layout"), OCI_LAYOUT).at(root.join("oci-layout"))?;
            }
        }
        let path = self.commit(descriptor)?;
        Ok(WrittenImage {
            path,
            manifest_digest,
        })
    }

    fn commit(self, descriptor: serde_json::Value) -> Result<PathBuf> {
        let dest = self.dest;
        match self.sink {
            Sink::Tar { builder, temp } => {
                let writer = builder.into_inner().map_err(|e| Error::io(&*temp, e))?;
                let file = writer
                    .into_inner()
                    .map_err(|e| Error::io(&*temp, e.into_error()))?
                    .inner;
                file.sync_all().at(&*temp)?;
                temp.persist(&dest).map_err(|e| Error::io(&dest, e.error))?;
            }
            Sink::Dir { root, staging } => {
                let index_path = root.join("index.json");
                let mut index = if staging.is_none() {
                    let raw = fs::read(&index_path).at(&index_path)?;
                    serde_json::from_slice::<serde_json::Value>(&raw).map_err(|e| {
                        Error::InvalidJson {
                            file: index_path.display().to_string(),
                            line: e.line(),
                            column: e.column(),
                            message: e.to_string(),
                        }
                    })?
                } else {
                    json!({ "schemaVersion": 2, "mediaType": MEDIA_TYPE_OCI_INDEX, "manifests": [] })
                };
                let tag = descriptor
                    .pointer("/annotations/org.opencontainers.image.ref.name")
                    .and_then(|v| v.as_str())
                    .map(str::to_string);
                let manifests = index
                    .get_mut("manifests")
                    .and_then(|m| m.as_array_mut())
                    .ok_or_else(|| Error::InvalidField {
                        file: index_path.display().to_string(),
                        field: "manifests".into(),
                        reason: "missing or not an array".into(),
                    })?;
                if let Some(tag) = &tag {
                    manifests.retain(|m| {
                        m.pointer("/annotations/org.opencontainers.image.ref.name")
                            .and_then(|v| v.as_str())
                            != Some(tag.as_str())
                    });
                }
                manifests.push(descriptor);
                let raw = to_json(&index)?;
                let mut tmp = tempfile::Builder::new()
                    .prefix(".index-")
                    .tempfile_in(&root)
                    .at(&root)?;
                tmp.write_all(&raw).at(tmp.path().to_path_buf())?;
                tmp.as_file().sync_all().at(&index_path)?;
                tmp.persist(&index_path)
                    .map_err(|e| Error::io(&index_path, e.error))?;
                if let Some(staging) = staging {
                    let staged = staging.keep();
                    fs::rename(&staged, &dest).map_err(|e| {
                        let _ = fs::remove_dir_all(&staged);
                        Error::io(&dest, e)
                    })?;
                }
            }
        }
        Ok(dest)
    }
}

/// The tag an output reference carries (`docker-archive:out.tar:name:tag`, `oci:dir:tag`).
pub fn name_in_reference(dest: &ImageReference) -> Option<&str> {
    match dest {
        ImageReference::DockerArchive {
            selector: Some(ArchiveSelector::Name(n)),
            ..
        } => Some(n),
        ImageReference::Oci { name: Some(n), .. }
        | ImageReference::OciArchive { name: Some(n), .. } => Some(n),
        _ => None,
    }
}

fn tar_header(size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(tar::EntryType::Regular);
    h
}

fn to_json(v: &serde_json::Value) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| Error::Other(format!("cannot encode JSON: {e}")))
}

/// Checks size and digest of what passes through.
struct Verify<R> {
    inner: HashingReader<R>,
    size: u64,
    digest: Digest,
    what: String,
}

impl<R: Read> Read for Verify<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if self.inner.count() > self.size {
            return Err(Error::SizeMismatch {
                what: self.what.clone(),
                expected: self.size,
                found: self.inner.count(),
            }
            .into_io());
        }
        Ok(n)
    }
}

impl<R: Read> Verify<R> {
    fn check(mut self) -> Result<()> {
        // Anything left means the stream is longer than recorded.
        let mut extra = [0u8; 1];
        let n = self
            .inner
            .read(&mut extra)
            .map_err(|e| Error::io(&self.what, e))?;
        let count = self.inner.count();
        if n != 0 || count != self.size {
            return Err(Error::SizeMismatch {
                what: self.what,
                expected: self.size,
                found: count,
            });
        }
        let (found, _, _) = self.inner.finish();
        if found != self.digest {
            return Err(Error::DigestMismatch {
                what: self.what,
                expected: self.digest.to_string(),
                found: found.to_string(),
            });
        }
        Ok(())
    }
}

/// Bytes after which [`WriteBehind`] asks the kernel to start writing them out.
const WRITE_BEHIND: u64 = 8 << 20;

/// A file writer that has the kernel start writing each [`WRITE_BEHIND`] bytes to disk as
/// soon as they are written (Linux `sync_file_range`), so that the `fsync` that makes an
/// output durable before it takes its name finds little left to do. On the tools bench
/// pair, writing the 89 MB image and then syncing it took about 0.1 s of apply's 0.5 s.
struct WriteBehind<F> {
    inner: F,
    written: u64,
    started: u64,
}

impl<F> WriteBehind<F> {
    fn new(inner: F) -> WriteBehind<F> {
        WriteBehind {
            inner,
            written: 0,
            started: 0,
        }
    }
}

impl<F: Write + std::os::fd::AsFd> Write for WriteBehind<F> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        if self.written - self.started >= WRITE_BEHIND {
            self.inner.flush()?;
            #[cfg(target_os = "linux")]
            {
                use std::os::fd::AsRawFd;
                // SAFETY: the descriptor is open for as long as `inner` lives; the call
                // only reads its arguments. Its result is ignored: it is a hint, and the
                // fsync at the end reports any write error.
                unsafe {
                    libc::sync_file_range(
                        self.inner.as_fd().as_raw_fd(),
                        self.started as libc::off64_t,
                        (self.written - self.started) as libc::off64_t,
                        libc::SYNC_FILE_RANGE_WRITE,
                    );
                }
            }
            self.started = self.written;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
