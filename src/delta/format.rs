//! The delta package file format, version 4 (documented in `docs/FORMAT.md`).
//!
//! ```text
//! offset  size  field
//! 0       8     magic  89 44 44 45 4C 54 41 0A  ("\x89DDELTA\n")
//! 8       4     format version, u32 little-endian (4; 1 to 3 are still read)
//! 12      4     flags, u32 LE (0; a reader refuses unknown flags)
//! 16      8     header length H, u64 LE
//! 24      32    SHA-256 of the header bytes
//! 56      8     payload length P, u64 LE
//! 64      32    SHA-256 of the payload bytes
//! 96      H     header: UTF-8 JSON (see [`Header`])
//! 96+H    P     payload: one compressed stream (header.compression) holding the blobs
//!               listed in header.blobs, back to back, in that order
//! ```
//!
//! The file ends exactly after the payload. Every blob is also checksummed on its own
//! (uncompressed), so a damaged package is refused before any output is written, and a
//! damaged blob is named.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::{Digest, HashingReader};
use crate::error::{Error, IoContext, Result};
use crate::platform::Platform;
use crate::transport::Limits;
use zstd::zstd_safe::CParameter;

/// The 8 bytes every package starts with.
pub const MAGIC: [u8; 8] = *b"\x89DDELTA\n";
/// The format version this build writes, and the highest it reads. Version 2 added the
/// `files` layer method; version 3 its word differences (WDIFF) and chunks with control
/// sections of their own, which a version 2 reader would refuse only deep in the payload;
/// version 4 the BTF map and its BDIFF patches for kernel modules. Packages of versions 1
/// to 3 are read as they are.
pub const FORMAT_VERSION: u32 = 4;
/// Size of the fixed binary prefix before the header.
pub const PREFIX_LEN: u64 = 96;
/// Largest header accepted (the header holds metadata only; blobs live in the payload).
pub const MAX_HEADER_LEN: u64 = 64 << 20;

/// Compression of the payload stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PayloadCompression {
    /// xz (LZMA2, a dictionary of at least 16 MiB; the default).
    Xz,
    /// Zstandard with long-distance matching.
    Zstd,
    /// gzip.
    Gzip,
    /// No compression.
    None,
}

impl Default for PayloadCompression {
    /// xz: on every bench pair its package is smaller than zstd -19's with long-distance
    /// matching (1.2-6.7 %; see docs/BENCHMARKS.md), and it needs less memory to create.
    fn default() -> Self {
        PayloadCompression::Xz
    }
}

impl PayloadCompression {
    /// The default level for this algorithm.
    pub fn default_level(self) -> i32 {
        match self {
            PayloadCompression::Zstd => 19,
            PayloadCompression::Gzip => 9,
            PayloadCompression::Xz => 6,
            PayloadCompression::None => 0,
        }
    }

    /// The accepted level range.
    pub fn level_range(self) -> (i32, i32) {
        match self {
            PayloadCompression::Zstd => (1, 22),
            PayloadCompression::Gzip => (1, 9),
            PayloadCompression::Xz => (0, 9),
            PayloadCompression::None => (0, 0),
        }
    }

    /// The name, as in `--compression`.
    pub fn name(self) -> &'static str {
        match self {
            PayloadCompression::Zstd => "zstd",
            PayloadCompression::Gzip => "gzip",
            PayloadCompression::Xz => "xz",
            PayloadCompression::None => "none",
        }
    }
}

/// The payload's compression settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompressionSpec {
    /// The algorithm.
    pub algorithm: PayloadCompression,
    /// The level.
    pub level: i32,
}

/// How one layer of the new image is rebuilt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "lowercase")]
pub enum LayerSource {
    /// The old image has this exact layer (same diff_id): copy it from there.
    Reference {
        /// Index of the layer in the old image.
        old_layer: usize,
    },
    /// VCDIFF (xdelta3) against an old layer.
    Xdelta3 {
        /// Index of the source layer in the old image.
        old_layer: usize,
        /// The blob holding the patch.
        blob: usize,
    },
    /// zstd with the old layer as reference prefix ("patch-from").
    Zstd {
        /// Index of the source layer in the old image.
        old_layer: usize,
        /// The blob holding the patch.
        blob: usize,
    },
    /// The file-aware codec ([`crate::delta::files`]): the layer's files are copied or patched
    /// from files of the listed old layers.
    Files {
        /// Indexes in the old image of the layers the stream reads (its `src` numbers index
        /// this list).
        old_layers: Vec<usize>,
        /// The blob holding the stream.
        blob: usize,
    },
    /// The whole layer is in the payload.
    Full {
        /// The blob holding the uncompressed layer tar.
        blob: usize,
    },
}

impl LayerSource {
    /// The method name as in `--method` and `list`.
    pub fn method(&self) -> &'static str {
        match self {
            LayerSource::Reference { .. } => "reference",
            LayerSource::Xdelta3 { .. } => "xdelta3",
            LayerSource::Zstd { .. } => "zstd",
            LayerSource::Files { .. } => "files",
            LayerSource::Full { .. } => "full",
        }
    }

    /// The payload blob this layer needs, if any.
    pub fn blob(&self) -> Option<usize> {
        match self {
            LayerSource::Reference { .. } => None,
            LayerSource::Xdelta3 { blob, .. }
            | LayerSource::Zstd { blob, .. }
            | LayerSource::Files { blob, .. }
            | LayerSource::Full { blob } => Some(*blob),
        }
    }

    /// The old layer this layer needs (the first, for `files`), if any.
    pub fn old_layer(&self) -> Option<usize> {
        self.old_layers().first().copied()
    }

    /// Every old layer this layer needs.
    pub fn old_layers(&self) -> Vec<usize> {
        match self {
            LayerSource::Reference { old_layer }
            | LayerSource::Xdelta3 { old_layer, .. }
            | LayerSource::Zstd { old_layer, .. } => vec![*old_layer],
            LayerSource::Files { old_layers, .. } => old_layers.clone(),
            LayerSource::Full { .. } => Vec::new(),
        }
    }
}

/// One layer of the new image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerEntry {
    /// sha256 of the uncompressed layer tar: what the rebuilt layer must hash to.
    pub diff_id: Digest,
    /// Size of the uncompressed layer tar.
    pub size: u64,
    /// The media type the layer had in the new image's source.
    pub media_type: String,
    /// The size the layer had in the new image's source (compressed or not).
    pub source_size: u64,
    /// How to rebuild it.
    #[serde(flatten)]
    pub source: LayerSource,
}

/// A blob in the payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobEntry {
    /// Uncompressed size inside the payload stream.
    pub size: u64,
    /// sha256 of those bytes.
    pub digest: Digest,
}

/// Identity of an image, as the package records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageIdentity {
    /// The image ID (config digest).
    pub image_id: Digest,
    /// Its layers' diff_ids, base first.
    pub diff_ids: Vec<Digest>,
    /// Its tags where it was read.
    #[serde(default)]
    pub repo_tags: Vec<String>,
    /// The reference it was read from.
    #[serde(default)]
    pub reference: String,
    /// Its platform.
    pub platform: Platform,
}

/// The new image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewImage {
    /// Identity of the new image.
    #[serde(flatten)]
    pub identity: ImageIdentity,
    /// The blob holding the config, byte for byte.
    pub config_blob: usize,
    /// The manifest the new image had in its source (OCI or Docker schema2), byte for byte,
    /// for provenance: rebuilt layers are stored uncompressed, so the rebuilt image gets a
    /// manifest of its own. Absent for docker-archive and daemon sources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_manifest: Option<String>,
    /// The layers, base first.
    pub layers: Vec<LayerEntry>,
}

/// The package header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// The program that wrote the package.
    pub created_by: String,
    /// The payload compression.
    pub compression: CompressionSpec,
    /// The image the delta was made against (`None` for a full package).
    pub base: Option<ImageIdentity>,
    /// The image the delta rebuilds.
    pub target: NewImage,
    /// The payload's blobs, in stream order.
    pub blobs: Vec<BlobEntry>,
}

impl Header {
    /// Total uncompressed size of the payload.
    pub fn payload_uncompressed_size(&self) -> u64 {
        // Saturating: the sizes come from an untrusted header (checked by `check_limits`).
        self.blobs
            .iter()
            .fold(0u64, |t, b| t.saturating_add(b.size))
    }

    /// Checks the sizes the header claims against `limits` before anything is read or
    /// allocated: every blob and layer within [`Limits::max_entry_size`], and the payload's
    /// claimed expansion within [`Limits::max_expansion_ratio`].
    pub fn check_limits(&self, path: &Path, payload_len: u64, limits: &Limits) -> Result<()> {
        let at = |what: String| format!("{}: {what}", path.display());
        for (i, b) in self.blobs.iter().enumerate() {
            limits.check_entry_size(&at(format!("blob {i}")), b.size)?;
        }
        for (i, l) in self.target.layers.iter().enumerate() {
            limits.check_entry_size(&at(format!("layer {i}")), l.size)?;
        }
        let total = self
            .blobs
            .iter()
            .try_fold(0u64, |t, b| t.checked_add(b.size))
            .ok_or_else(|| Error::InvalidPackage {
                path: path.to_path_buf(),
                reason: "the blob sizes add up to more than 2^64 bytes".into(),
            })?;
        if self.compression.algorithm != PayloadCompression::None {
            limits.check_expansion(&at("payload".into()), payload_len, total)?;
        }
        Ok(())
    }

    /// Checks the header's internal consistency (indexes in range, blobs used in stream
    /// order exactly once), so that apply can trust it structurally.
    pub fn validate(&self, path: &Path) -> Result<()> {
        let bad = |reason: String| Error::InvalidPackage {
            path: path.to_path_buf(),
            reason,
        };
        let base_layers = self.base.as_ref().map_or(0, |b| b.diff_ids.len());
        if self.target.layers.len() != self.target.identity.diff_ids.len() {
            return Err(bad(format!(
                "target has {} layer entries but {} diff_ids",
                self.target.layers.len(),
                self.target.identity.diff_ids.len()
            )));
        }
        let mut next_blob = 0usize;
        let mut expect_blob = |b: usize, what: &str| -> Result<()> {
            if b != next_blob || b >= self.blobs.len() {
                return Err(bad(format!(
                    "{what} uses blob {b}, expected blob {next_blob} of {}",
                    self.blobs.len()
                )));
            }
            next_blob += 1;
            Ok(())
        };
        expect_blob(self.target.config_blob, "the config")?;
        for (i, l) in self.target.layers.iter().enumerate() {
            if l.diff_id != self.target.identity.diff_ids[i] {
                return Err(bad(format!(
                    "layer {i} diff_id differs from the target's diff_ids"
                )));
            }
            for o in l.source.old_layers() {
                if o >= base_layers {
                    return Err(bad(format!(
                        "layer {i} needs old layer {o}, but the base image has {base_layers} layers"
                    )));
                }
            }
            if let Some(b) = l.source.blob() {
                expect_blob(b, &format!("layer {i}"))?;
            }
        }
        if next_blob != self.blobs.len() {
            return Err(bad(format!(
                "{} blobs listed but {next_blob} used",
                self.blobs.len()
            )));
        }
        Ok(())
    }
}

/// An opened, structurally checked package. The payload is verified separately
/// ([`Package::verify_payload`]) because that reads the whole file.
#[derive(Debug)]
pub struct Package {
    path: PathBuf,
    /// The format version read.
    pub version: u32,
    /// The header.
    pub header: Header,
    /// The header's raw bytes.
    pub header_raw: Vec<u8>,
    /// Payload offset in the file.
    pub payload_offset: u64,
    /// Payload length (compressed).
    pub payload_len: u64,
    payload_digest: Digest,
    /// Total file size.
    pub file_size: u64,
}

impl Package {
    /// Opens a package, checking magic, version, lengths and the header checksum, with the
    /// default [`Limits`].
    pub fn open(path: &Path) -> Result<Package> {
        Self::open_with(path, &Limits::default())
    }

    /// Opens a package, checking magic, version, lengths, the header checksum and the sizes
    /// it claims against `limits`.
    pub fn open_with(path: &Path, limits: &Limits) -> Result<Package> {
        let bad = |reason: String| Error::InvalidPackage {
            path: path.to_path_buf(),
            reason,
        };
        let mut f = File::open(path).at(path)?;
        let file_size = f.metadata().at(path)?.len();
        let mut prefix = [0u8; PREFIX_LEN as usize];
        if file_size < PREFIX_LEN {
            if file_size >= 8 {
                f.read_exact(&mut prefix[..8]).at(path)?;
                if prefix[..8] != MAGIC {
                    return Err(bad("not a docker-delta package (wrong magic bytes)".into()));
                }
            }
            return Err(bad(format!(
                "truncated: {file_size} bytes, shorter than the {PREFIX_LEN}-byte prefix"
            )));
        }
        f.read_exact(&mut prefix).at(path)?;
        if prefix[..8] != MAGIC {
            return Err(bad("not a docker-delta package (wrong magic bytes)".into()));
        }
        let u32_at =
            |o: usize| u32::from_le_bytes([prefix[o], prefix[o + 1], prefix[o + 2], prefix[o + 3]]);
        let u64_at = |o: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&prefix[o..o + 8]);
            u64::from_le_bytes(b)
        };
        let version = u32_at(8);
        if version > FORMAT_VERSION {
            return Err(Error::UnsupportedPackageVersion {
                path: path.to_path_buf(),
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        if version == 0 {
            return Err(bad("format version 0 is invalid".into()));
        }
        let flags = u32_at(12);
        if flags != 0 {
            return Err(bad(format!("unknown flags {flags:#x}")));
        }
        let header_len = u64_at(16);
        let header_digest = Digest::from_sha256(sha(&prefix[24..56]));
        let payload_len = u64_at(56);
        let payload_digest = Digest::from_sha256(sha(&prefix[64..96]));
        if header_len > MAX_HEADER_LEN {
            return Err(bad(format!(
                "header length {header_len} exceeds the {MAX_HEADER_LEN}-byte limit"
            )));
        }
        let expected = PREFIX_LEN
            .checked_add(header_len)
            .and_then(|v| v.checked_add(payload_len))
            .ok_or_else(|| bad("header and payload lengths overflow".into()))?;
        if file_size < expected {
            return Err(bad(format!(
                "truncated: the package should be {expected} bytes, the file has {file_size}"
            )));
        }
        if file_size > expected {
            return Err(bad(format!(
                "{} unexpected bytes after the payload (the package should be {expected} bytes)",
                file_size - expected
            )));
        }
        let mut header_raw = vec![0u8; header_len as usize];
        f.read_exact(&mut header_raw).at(path)?;
        let found = Digest::of(&header_raw);
        if found != header_digest {
            return Err(Error::DigestMismatch {
                what: format!("{}: package header", path.display()),
                expected: header_digest.to_string(),
                found: found.to_string(),
            });
        }
        let header: Header = crate::manifest::parse_json(
            &header_raw,
            &format!("{} (package header)", path.display()),
        )?;
        header.validate(path)?;
        header.check_limits(path, payload_len, limits)?;
        Ok(Package {
            path: path.to_path_buf(),
            version,
            header,
            header_raw,
            payload_offset: PREFIX_LEN + header_len,
            payload_len,
            payload_digest,
            file_size,
        })
    }

    /// The package file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the whole payload and checks its SHA-256.
    pub fn verify_payload(&self) -> Result<()> {
        let (found, n) = {
            let mut f = File::open(&self.path).at(&self.path)?;
            f.seek(SeekFrom::Start(self.payload_offset))
                .at(&self.path)?;
            crate::digest::digest_reader(f.take(self.payload_len)).at(&self.path)?
        };
        if n != self.payload_len {
            return Err(Error::InvalidPackage {
                path: self.path.clone(),
                reason: format!("truncated payload: {n} of {} bytes", self.payload_len),
            });
        }
        if found != self.payload_digest {
            return Err(Error::DigestMismatch {
                what: format!("{}: package payload", self.path.display()),
                expected: self.payload_digest.to_string(),
                found: found.to_string(),
            });
        }
        Ok(())
    }

    /// Opens the payload as a sequence of blobs.
    pub fn blobs(&self) -> Result<BlobReader> {
        let mut f = File::open(&self.path).at(&self.path)?;
        f.seek(SeekFrom::Start(self.payload_offset))
            .at(&self.path)?;
        let raw = BufReader::with_capacity(1 << 20, f.take(self.payload_len));
        let stream: Box<dyn Read + Send> = match self.header.compression.algorithm {
            PayloadCompression::None => Box::new(raw),
            PayloadCompression::Zstd => {
                let mut d = zstd::stream::read::Decoder::with_buffer(raw).at(&self.path)?;
                d.window_log_max(31).at(&self.path)?;
                Box::new(d)
            }
            PayloadCompression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(raw)),
            PayloadCompression::Xz => {
                let stream = xz2::stream::Stream::new_stream_decoder(MAX_XZ_DECODER_MEMORY, 0)
                    .map_err(io::Error::from)
                    .at(&self.path)?;
                Box::new(XzPayload {
                    inner: xz2::bufread::XzDecoder::new_stream(raw, stream),
                    path: self.path.clone(),
                })
            }
        };
        // Decompression runs on its own thread, a few MiB ahead of the reader: rebuilding a
        // layer and decompressing the payload then share the cores instead of taking turns
        // (xz decodes at 60-100 MB/s here, which alone would hold apply near that rate).
        let stream: Box<dyn Read + Send> = match self.header.compression.algorithm {
            PayloadCompression::None => stream,
            _ => Box::new(ReadAhead::new(stream)),
        };
        Ok(BlobReader {
            path: self.path.clone(),
            stream,
            blobs: self.header.blobs.clone(),
            next: 0,
        })
    }
}

/// An xz payload's decoder, whose errors name the package and say what is wrong with it
/// (liblzma's own say only "memory limit reached" or "corrupt data").
struct XzPayload<R> {
    inner: xz2::bufread::XzDecoder<R>,
    path: PathBuf,
}

impl<R: io::BufRead> Read for XzPayload<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).map_err(|e| {
            let reason = match e
                .get_ref()
                .and_then(|i| i.downcast_ref::<xz2::stream::Error>())
            {
                Some(xz2::stream::Error::MemLimit) => format!(
                    "its xz payload needs more than {} MiB of memory to decode (a larger \
                     dictionary than docker-delta writes)",
                    MAX_XZ_DECODER_MEMORY >> 20
                ),
                Some(x) => format!("its xz payload is damaged: {x}"),
                None => return e,
            };
            Error::InvalidPackage {
                path: self.path.clone(),
                reason,
            }
            .into_io()
        })
    }
}

/// A reader that reads its source on another thread, up to [`READ_AHEAD`] blocks ahead.
struct ReadAhead {
    blocks: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    block: Vec<u8>,
    at: usize,
    ended: bool,
}

/// Blocks a [`ReadAhead`] may hold ready (of 1 MiB each).
const READ_AHEAD: usize = 4;

impl ReadAhead {
    fn new(mut source: Box<dyn Read + Send>) -> ReadAhead {
        let (tx, rx) = std::sync::mpsc::sync_channel(READ_AHEAD);
        std::thread::spawn(move || loop {
            let mut block = vec![0u8; 1 << 20];
            let mut filled = 0;
            let result = loop {
                match source.read(&mut block[filled..]) {
                    Ok(0) => break Ok(()),
                    Ok(n) => {
                        filled += n;
                        if filled == block.len() {
                            break Ok(());
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(e),
                }
            };
            block.truncate(filled);
            // An empty block is the end; a failed send means the reader is gone.
            let last = filled == 0 || result.is_err();
            let sent = match result {
                Ok(()) => tx.send(Ok(block)),
                Err(e) if filled > 0 => tx.send(Ok(block)).and_then(|_| tx.send(Err(e))),
                Err(e) => tx.send(Err(e)),
            };
            if last || sent.is_err() {
                return;
            }
        });
        ReadAhead {
            blocks: rx,
            block: Vec::new(),
            at: 0,
            ended: false,
        }
    }
}

impl Read for ReadAhead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.block.len() {
            if self.ended {
                return Ok(0);
            }
            match self.blocks.recv() {
                Ok(Ok(block)) => {
                    self.ended = block.is_empty();
                    (self.block, self.at) = (block, 0);
                }
                Ok(Err(e)) => {
                    self.ended = true;
                    return Err(e);
                }
                Err(_) => {
                    self.ended = true;
                    return Err(io::Error::other("the payload reader thread stopped"));
                }
            }
        }
        let n = buf.len().min(self.block.len() - self.at);
        buf[..n].copy_from_slice(&self.block[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

fn sha(b: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(b);
    out
}

/// Reads blobs from the payload, in order.
pub struct BlobReader {
    path: PathBuf,
    stream: Box<dyn Read + Send>,
    blobs: Vec<BlobEntry>,
    next: usize,
}

impl BlobReader {
    /// Opens blob `index` as a stream; it must be the next one. The stream fails at its end
    /// if the blob's bytes do not hash to the recorded digest.
    pub fn open(&mut self, index: usize) -> Result<BlobStream<'_>> {
        if index != self.next {
            return Err(Error::InvalidPackage {
                path: self.path.clone(),
                reason: format!(
                    "blob {index} requested out of order (next is {})",
                    self.next
                ),
            });
        }
        let entry = self
            .blobs
            .get(index)
            .cloned()
            .ok_or_else(|| Error::InvalidPackage {
                path: self.path.clone(),
                reason: format!("no blob {index}"),
            })?;
        self.next += 1;
        Ok(BlobStream {
            what: format!("{}: blob {index}", self.path.display()),
            inner: HashingReader::new((&mut self.stream).take(entry.size)),
            entry,
            done: false,
        })
    }

    /// Reads blob `index` into memory, refusing blobs larger than `max`.
    pub fn read(&mut self, index: usize, max: u64) -> Result<Vec<u8>> {
        let path = self.path.clone();
        let mut s = self.open(index)?;
        if s.entry.size > max {
            return Err(Error::LimitExceeded {
                what: s.what.clone(),
                limit: "max in-memory blob size".into(),
                max,
                found: s.entry.size,
                option: "DOCKER_DELTA_MAX_MEMORY".into(),
            });
        }
        // The size is a claim until the blob verified: grow as the bytes arrive.
        let mut buf = Vec::with_capacity(s.entry.size.min(1 << 20) as usize);
        s.read_to_end(&mut buf).map_err(|e| Error::io(&path, e))?;
        Ok(buf)
    }
}

/// One blob's bytes, verified at the end.
pub struct BlobStream<'a> {
    what: String,
    inner: HashingReader<io::Take<&'a mut Box<dyn Read + Send>>>,
    entry: BlobEntry,
    done: bool,
}

impl Read for BlobStream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.done = true;
            if self.inner.count() != self.entry.size {
                return Err(Error::InvalidPackage {
                    path: PathBuf::from(&self.what),
                    reason: format!(
                        "payload ends inside the blob ({} of {} bytes)",
                        self.inner.count(),
                        self.entry.size
                    ),
                }
                .into_io());
            }
            let found = self.inner.digest_so_far();
            if found != self.entry.digest {
                return Err(Error::DigestMismatch {
                    what: self.what.clone(),
                    expected: self.entry.digest.to_string(),
                    found: found.to_string(),
                }
                .into_io());
            }
        }
        Ok(n)
    }
}

/// Writes a package: blobs are streamed into a compressed payload in a temporary file, then
/// the prefix, header and payload are written to the destination.
pub struct PackageWriter {
    compression: CompressionSpec,
    payload: Option<PayloadEncoder>,
    spool_path: tempfile::TempPath,
    blobs: Vec<BlobEntry>,
}

enum PayloadEncoder {
    None(File),
    Zstd(zstd::stream::write::Encoder<'static, File>),
    Gzip(flate2::write::GzEncoder<File>),
    Xz(xz2::write::XzEncoder<File>),
}

impl Write for PayloadEncoder {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            PayloadEncoder::None(w) => w.write(buf),
            PayloadEncoder::Zstd(w) => w.write(buf),
            PayloadEncoder::Gzip(w) => w.write(buf),
            PayloadEncoder::Xz(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            PayloadEncoder::None(w) => w.flush(),
            PayloadEncoder::Zstd(w) => w.flush(),
            PayloadEncoder::Gzip(w) => w.flush(),
            PayloadEncoder::Xz(w) => w.flush(),
        }
    }
}

impl PayloadEncoder {
    fn finish(self) -> io::Result<File> {
        match self {
            PayloadEncoder::None(w) => Ok(w),
            PayloadEncoder::Zstd(w) => w.finish(),
            PayloadEncoder::Gzip(w) => w.finish(),
            PayloadEncoder::Xz(w) => w.finish(),
        }
    }
}

/// The most memory the xz decoder may use: a 64 MiB dictionary (level 9) and its state.
/// A payload that claims a larger dictionary is refused instead of allocated.
const MAX_XZ_DECODER_MEMORY: u64 = 96 << 20;

/// An xz encoder at `level`: the preset, with a dictionary of at least 16 MiB and no
/// position bits in the match and literal contexts (`pb=0`). Measured on the payloads of
/// the bench pairs, against preset 6 alone: the 16 MiB dictionary reaches the far copies of
/// a layer of upgraded tools (13.19 -> 12.17 MB, where zstd's 128 MiB window gets 12.27),
/// `pb=0` saves 0.2-0.5 % on every pair (the payload's sections are bytes and varints,
/// not aligned words). The encoder then needs about 190 MiB.
fn xz_encoder(level: u32) -> io::Result<xz2::stream::Stream> {
    let mut options = xz2::stream::LzmaOptions::new_preset(level)?;
    // Presets 0-7 have dictionaries of 256 KiB to 16 MiB; 8 and 9 have 32 and 64 MiB.
    if level <= 7 {
        options.dict_size(16 << 20);
    }
    options.position_bits(0);
    let mut filters = xz2::stream::Filters::new();
    filters.lzma2(&options);
    Ok(xz2::stream::Stream::new_stream_encoder(
        &filters,
        xz2::stream::Check::Crc64,
    )?)
}

impl PackageWriter {
    /// Starts a package whose payload spools in `spool_dir`.
    pub fn new(compression: CompressionSpec, spool_dir: &Path) -> Result<PackageWriter> {
        let (lo, hi) = compression.algorithm.level_range();
        if compression.level < lo || compression.level > hi {
            return Err(Error::Other(format!(
                "compression level {} is out of range for {} ({lo}..={hi})",
                compression.level,
                compression.algorithm.name()
            )));
        }
        let spool = tempfile::Builder::new()
            .prefix(".docker-delta-payload-")
            .tempfile_in(spool_dir)
            .at(spool_dir)?;
        let (file, spool_path) = spool.into_parts();
        let payload = match compression.algorithm {
            PayloadCompression::None => PayloadEncoder::None(file),
            PayloadCompression::Zstd => {
                let mut e =
                    zstd::stream::write::Encoder::new(file, compression.level).at(&spool_path)?;
                let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
                e.multithread(threads).at(&spool_path)?;
                e.long_distance_matching(true).at(&spool_path)?;
                e.window_log(27).at(&spool_path)?;
                // Jobs of 16 MiB, each seeing the last 32 MiB before it (overlap log 7 of
                // the 128 MiB window): compression runs on every core while blobs are still
                // being encoded, instead of in one job at the end (zstd's default job is
                // four windows). Kernel pair: create 45 -> 31 s, package 0.06 % larger.
                e.set_parameter(CParameter::JobSize(16 << 20))
                    .at(&spool_path)?;
                e.set_parameter(CParameter::OverlapSizeLog(7))
                    .at(&spool_path)?;
                e.include_checksum(true).at(&spool_path)?;
                PayloadEncoder::Zstd(e)
            }
            PayloadCompression::Gzip => PayloadEncoder::Gzip(flate2::write::GzEncoder::new(
                file,
                flate2::Compression::new(compression.level as u32),
            )),
            PayloadCompression::Xz => PayloadEncoder::Xz(xz2::write::XzEncoder::new_stream(
                file,
                xz_encoder(compression.level as u32).at(&spool_path)?,
            )),
        };
        Ok(PackageWriter {
            compression,
            payload: Some(payload),
            spool_path,
            blobs: Vec::new(),
        })
    }

    /// Appends a blob from a reader; returns its index.
    pub fn add_blob(&mut self, mut r: impl Read) -> Result<usize> {
        let path = self.spool_path.to_path_buf();
        let enc = self
            .payload
            .as_mut()
            .ok_or_else(|| Error::Other("package writer already finished".into()))?;
        let mut h = HashingReader::new(&mut r);
        io::copy(&mut h, enc).map_err(|e| Error::io(&path, e))?;
        let (digest, size, _) = h.finish();
        self.blobs.push(BlobEntry { size, digest });
        Ok(self.blobs.len() - 1)
    }

    /// Appends a blob written by `f` into the given writer; returns its index and what `f`
    /// returned.
    pub fn add_blob_with<T>(
        &mut self,
        f: impl FnOnce(&mut dyn Write) -> Result<T>,
    ) -> Result<(usize, T)> {
        let enc = self
            .payload
            .as_mut()
            .ok_or_else(|| Error::Other("package writer already finished".into()))?;
        let mut h = crate::digest::HashingWriter::new(io::BufWriter::with_capacity(1 << 20, enc));
        let value = f(&mut h)?;
        let (digest, size, mut inner) = h.finish();
        inner
            .flush()
            .map_err(|e| Error::io(self.spool_path.to_path_buf(), e))?;
        self.blobs.push(BlobEntry { size, digest });
        Ok((self.blobs.len() - 1, value))
    }

    /// Appends a blob from memory; returns its index.
    pub fn add_bytes(&mut self, b: &[u8]) -> Result<usize> {
        self.add_blob(b)
    }

    /// Total uncompressed bytes of the blobs written so far.
    pub fn payload_uncompressed_size(&self) -> u64 {
        self.blobs.iter().map(|b| b.size).sum()
    }

    /// The blobs written so far.
    pub fn blobs(&self) -> &[BlobEntry] {
        &self.blobs
    }

    /// Finishes the payload and writes the whole package to `out`. The header's `blobs` and
    /// `compression` are filled in here.
    pub fn finish(mut self, mut header: Header, out: &mut impl Write) -> Result<u64> {
        header.blobs = std::mem::take(&mut self.blobs);
        header.compression = self.compression;
        let enc = self
            .payload
            .take()
            .ok_or_else(|| Error::Other("package writer already finished".into()))?;
        let mut file = enc.finish().at(&self.spool_path)?;
        file.flush().at(&self.spool_path)?;
        let payload_len = file.seek(SeekFrom::End(0)).at(&self.spool_path)?;
        file.seek(SeekFrom::Start(0)).at(&self.spool_path)?;
        let (payload_digest, _) = crate::digest::digest_reader(&mut file).at(&self.spool_path)?;
        file.seek(SeekFrom::Start(0)).at(&self.spool_path)?;
        let header_raw = serde_json::to_vec_pretty(&header)
            .map_err(|e| Error::Other(format!("cannot encode package header: {e}")))?;
        let header_digest = Digest::of(&header_raw);
        let mut prefix = Vec::with_capacity(PREFIX_LEN as usize);
        prefix.extend_from_slice(&MAGIC);
        prefix.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        prefix.extend_from_slice(&0u32.to_le_bytes());
        prefix.extend_from_slice(&(header_raw.len() as u64).to_le_bytes());
        prefix.extend_from_slice(&hex_bytes(&header_digest));
        prefix.extend_from_slice(&payload_len.to_le_bytes());
        prefix.extend_from_slice(&hex_bytes(&payload_digest));
        let out_err = |e: io::Error| Error::io("package output", e);
        out.write_all(&prefix).map_err(out_err)?;
        out.write_all(&header_raw).map_err(out_err)?;
        io::copy(&mut file, out).map_err(out_err)?;
        out.flush().map_err(out_err)?;
        Ok(PREFIX_LEN + header_raw.len() as u64 + payload_len)
    }
}

fn hex_bytes(d: &Digest) -> [u8; 32] {
    let mut out = [0u8; 32];
    // A Digest always holds 64 valid hex characters.
    if hex::decode_to_slice(d.hex(), &mut out).is_err() {
        out = [0u8; 32];
    }
    out
}
