//! Image sources: one trait, one implementation per transport.
//!
//! [`open`] turns an [`ImageReference`] into an [`ImageSource`]: the image's metadata is read
//! and checked up front (manifest detected from content, config hashed, layer count matched
//! against `rootfs.diff_ids`), and each layer is then streamed on demand, uncompressed, with
//! its stored digest and its diff_id verified as the stream reaches its end.

use std::io::{self, BufReader, Read};
use std::sync::{Arc, Mutex};

use sha2::{Digest as _, Sha256};

use crate::compression::Compression;
use crate::digest::{Digest, HashingReader};
use crate::error::{Error, Result};
use crate::image::{Image, Layer, LayerCheck};
use crate::platform::Platform;
use crate::reference::ImageReference;

pub mod dest;
pub mod docker_archive;
pub mod docker_daemon;
pub mod oci;
pub mod store;

/// Safety limits applied while reading untrusted images.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest JSON document (manifest, index, config) read into memory.
    pub max_json_size: u64,
    /// Most layers an image may have.
    pub max_layers: usize,
    /// Deepest nesting of image indexes.
    pub max_index_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_json_size: env_u64("DOCKER_DELTA_MAX_JSON_SIZE").unwrap_or(64 << 20),
            max_layers: env_u64("DOCKER_DELTA_MAX_LAYERS").map_or(1024, |v| v as usize),
            max_index_depth: 8,
        }
    }
}

impl Limits {
    /// Checks a manifest's layer list against the config's `rootfs.diff_ids` and the
    /// layer limit; `file` names the manifest in errors.
    pub fn check_layers(&self, file: &str, manifest_layers: usize, diff_ids: usize) -> Result<()> {
        if manifest_layers != diff_ids {
            return Err(Error::LayerCountMismatch {
                file: file.to_string(),
                manifest_layers,
                diff_ids,
            });
        }
        if manifest_layers > self.max_layers {
            return Err(Error::LimitExceeded {
                what: file.to_string(),
                limit: "max layers".into(),
                max: self.max_layers as u64,
                found: manifest_layers as u64,
                option: "DOCKER_DELTA_MAX_LAYERS".into(),
            });
        }
        Ok(())
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.parse().ok()
}

/// How to open an image.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// The platform to choose from a multi-platform index (default: the host's).
    pub platform: Option<Platform>,
    /// Safety limits.
    pub limits: Limits,
}

/// A readable image.
pub trait ImageSource: Send + Sync {
    /// The image's metadata, read and checked when the source was opened.
    fn image(&self) -> &Image;

    /// Opens the stored blob of layer `index` as it is (possibly compressed), unverified.
    fn open_blob(&self, index: usize) -> Result<Box<dyn Read + Send + '_>>;

    /// Where layer `index`'s stored blob lies in a file, for positioned reads, when the
    /// source keeps it in one (`None` otherwise). The bytes are unverified and may be
    /// compressed: see [`Layer::compression`](crate::image::Layer).
    fn layer_section(&self, index: usize) -> Result<Option<store::FileSection>> {
        let _ = index;
        Ok(None)
    }

    /// Opens layer `index` as a stream of its uncompressed tar. The stream verifies the
    /// stored blob's digest (when known) and the diff_id when it reaches its end, and fails
    /// with [`Error::DigestMismatch`] naming the layer if either is wrong.
    fn open_layer(&self, index: usize) -> Result<LayerReader<'_>> {
        let layer = self.layer(index)?;
        let blob = self.open_blob(index)?;
        LayerReader::new(blob, layer.clone(), self.describe_layer(layer))
    }

    /// A description of a layer for messages: reference, index and location.
    fn describe_layer(&self, layer: &Layer) -> String {
        format!(
            "{} layer {} ({})",
            self.image().reference,
            layer.index,
            layer.location
        )
    }

    /// The layer at `index`.
    fn layer(&self, index: usize) -> Result<&Layer> {
        self.image().layers.get(index).ok_or_else(|| {
            Error::Other(format!(
                "{}: no layer {index} (the image has {})",
                self.image().reference,
                self.image().layers.len()
            ))
        })
    }

    /// Reads a whole layer (uncompressed, verified) into memory, refusing layers larger than
    /// `max` bytes with [`Error::LimitExceeded`].
    fn read_layer(&self, index: usize, max: u64) -> Result<Vec<u8>> {
        let mut r = self.open_layer(index)?;
        let mut buf = Vec::new();
        let n = (&mut r)
            .take(max.saturating_add(1))
            .read_to_end(&mut buf)
            .map_err(|e| Error::io(r.description(), e))?;
        if n as u64 > max {
            return Err(Error::LimitExceeded {
                what: r.description().to_string(),
                limit: "max in-memory layer size".into(),
                max,
                found: n as u64,
                option: "DOCKER_DELTA_MAX_MEMORY".into(),
            });
        }
        // Read to the end so that the stream verifies its digests.
        io::copy(&mut r, &mut io::sink()).map_err(|e| Error::io(r.description(), e))?;
        Ok(buf)
    }

    /// Reads every layer to its end, verifying digests, and reports what was found.
    fn verify_layers(&self) -> Result<Vec<LayerCheck>> {
        (0..self.image().layers.len())
            .map(|i| {
                let mut r = self.open_layer(i)?;
                io::copy(&mut r, &mut io::sink()).map_err(|e| Error::io(r.description(), e))?;
                r.check()
            })
            .collect()
    }
}

/// Opens the image a reference names.
pub fn open(reference: &ImageReference, options: &OpenOptions) -> Result<Box<dyn ImageSource>> {
    tracing::debug!(reference = %reference, transport = %reference.transport(), "opening image");
    match reference {
        ImageReference::DockerArchive { .. } => Ok(Box::new(docker_archive::DockerArchive::open(
            reference, options,
        )?)),
        ImageReference::Oci { .. } | ImageReference::OciArchive { .. } => {
            Ok(Box::new(oci::OciLayout::open(reference, options)?))
        }
        ImageReference::DockerDaemon { .. } => Ok(Box::new(docker_daemon::DockerDaemon::open(
            reference, options,
        )?)),
    }
}

/// The uncompressed stream of one layer, verified at its end.
pub struct LayerReader<'a> {
    decoder: Box<dyn Read + Send + 'a>,
    blob: SharedHash,
    diff_hasher: Sha256,
    uncompressed: u64,
    layer: Layer,
    description: String,
    done: bool,
}

/// The blob side's digest and size, published by [`BlobHasher`] when the blob ends.
#[derive(Clone, Default)]
struct SharedHash(Arc<Mutex<Option<(Digest, u64)>>>);

/// Hashes the stored (compressed) blob and publishes the result when it ends.
struct BlobHasher<'a> {
    inner: HashingReader<Box<dyn Read + Send + 'a>>,
    out: SharedHash,
}

impl Read for BlobHasher<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            if let Ok(mut slot) = self.out.0.lock() {
                *slot = Some((self.inner.digest_so_far(), self.inner.count()));
            }
        }
        Ok(n)
    }
}

impl<'a> LayerReader<'a> {
    /// Wraps a stored blob: detects its compression and prepares verification.
    pub fn new(blob: Box<dyn Read + Send + 'a>, layer: Layer, description: String) -> Result<Self> {
        let shared = SharedHash::default();
        let hasher = BlobHasher {
            inner: HashingReader::new(blob),
            out: shared.clone(),
        };
        let mut buffered = BufReader::with_capacity(256 * 1024, hasher);
        let compression =
            Compression::sniff(&mut buffered).map_err(|e| Error::io(&description, e))?;
        if compression != layer.compression {
            tracing::debug!(layer = %description, found = compression.name(), "blob compression differs from what was recorded");
        }
        let decoder = compression
            .decoder(buffered)
            .map_err(|e| Error::Other(format!("{description}: {e}")))?;
        Ok(LayerReader {
            decoder,
            blob: shared,
            diff_hasher: Sha256::new(),
            uncompressed: 0,
            layer,
            description,
            done: false,
        })
    }

    /// The layer being read.
    pub fn layer(&self) -> &Layer {
        &self.layer
    }

    /// The description used in messages.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// After the stream was read to its end: the verified digests and sizes.
    pub fn check(&self) -> Result<LayerCheck> {
        let Some((digest, size)) = self.blob.0.lock().ok().and_then(|s| s.clone()) else {
            return Err(Error::Other(format!(
                "{}: layer was not read to its end",
                self.description
            )));
        };
        Ok(LayerCheck {
            digest,
            size,
            uncompressed_size: self.uncompressed,
        })
    }

    fn verify(&mut self) -> Result<()> {
        // Drain what the decompressor left of the blob (trailing bytes after the last
        // member), so that the blob digest covers the whole blob.
        let mut rest = [0u8; 8192];
        loop {
            let n = self
                .decoder
                .read(&mut rest)
                .map_err(|e| Error::io(&self.description, e))?;
            if n == 0 {
                break;
            }
            self.diff_hasher.update(&rest[..n]);
            self.uncompressed += n as u64;
        }
        let check = self.check()?;
        // For an uncompressed blob recorded under its diff_id, the diff_id check below
        // says the same thing in the user's terms.
        let blob_is_diff = self.layer.digest.as_ref() == Some(&self.layer.diff_id);
        if let Some(expected) = self.layer.digest.as_ref().filter(|_| !blob_is_diff) {
            if *expected != check.digest {
                return Err(Error::DigestMismatch {
                    what: format!("{} blob", self.description),
                    expected: expected.to_string(),
                    found: check.digest.to_string(),
                });
            }
        }
        if check.size != self.layer.size {
            return Err(Error::SizeMismatch {
                what: format!("{} blob", self.description),
                expected: self.layer.size,
                found: check.size,
            });
        }
        let diff_id = Digest::from_sha256(self.diff_hasher.clone().finalize().into());
        if diff_id != self.layer.diff_id {
            return Err(Error::DigestMismatch {
                what: format!("{} diff_id", self.description),
                expected: self.layer.diff_id.to_string(),
                found: diff_id.to_string(),
            });
        }
        Ok(())
    }
}

impl Read for LayerReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        let n = self
            .decoder
            .read(buf)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.description)))?;
        if n == 0 && !buf.is_empty() {
            self.done = true;
            self.verify().map_err(Error::into_io)?;
            return Ok(0);
        }
        self.diff_hasher.update(&buf[..n]);
        self.uncompressed += n as u64;
        Ok(n)
    }
}
