//! The delta package file format, version 9 (documented in `docs/FORMAT.md`).
//!
//! ```text
//! offset  size  field
//! 0       8     magic  89 44 44 45 4C 54 41 0A  ("\x89DDELTA\n")
//! 8       4     format version, u32 little-endian (9; 1 to 8 are still read)
//! 12      4     flags, u32 LE (0; a reader refuses unknown flags)
//! 16      8     header length H, u64 LE
//! 24      32    SHA-256 of the header bytes
//! 56      8     payload length P, u64 LE
//! 64      32    SHA-256 of the payload bytes
//! 96      H     header: UTF-8 JSON (see [`Header`])
//! 96+H    P     payload: the lanes listed in header.lanes, back to back; each lane is one
//!               compressed stream holding its blobs (those of header.blobs whose `lane`
//!               names it), back to back, in header order
//! ```
//!
//! A package without `lanes` (versions 1 to 4) has one lane: the whole payload, compressed
//! with header.compression. Lanes let like bytes compress together and be decoded on
//! separate threads: a `files` layer writes its stream's structure to lane 0, its new
//! bytes to lane 1 ([`LANE_NEW_BYTES`]) and its difference literals to lane 2
//! ([`LANE_DIFFERENCES`]).
//!
//! The file ends exactly after the payload. Every blob is also checksummed on its own
//! (uncompressed), so a damaged package is refused before any output is written, and a
//! damaged blob is named.

use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::delta::blocks::BlockReader;
use crate::delta::codec::zstd as zstd_codec;
use crate::digest::{Digest, HashingReader};
use crate::error::{Error, IoContext, Result};
use crate::platform::Platform;
use crate::transport::Limits;

mod lanes;
mod memory;
use lanes::{LaneSettings, LaneWriter, PayloadEncoder, SmallLane};
pub use memory::LANE_MEMORY;
use memory::{zstd_window, Counted, Gate, LaneHold, LaneMemory, MAX_XZ_DICTIONARY};

/// The 8 bytes every package starts with.
pub const MAGIC: [u8; 8] = *b"\x89DDELTA\n";
/// The format version this build writes, and the highest it reads. Version 2 added the
/// `files` layer method; version 3 its word differences (WDIFF) and chunks with control
/// sections of their own, which a version 2 reader would refuse only deep in the payload;
/// version 4 the BTF map and its BDIFF patches for kernel modules; version 5 the payload's
/// lanes and a `files` layer's new bytes in a lane of their own; version 6 its difference
/// literals in another (`lits_blob`, which a version 5 reader would not know); version 7
/// zip archives shipped expanded (the `files` operation ZIP, which a version 6 reader
/// would refuse only deep in the payload); version 8 x86-64 code patched with its
/// references projected (the `files` operation XDIFF, likewise); version 9 zip members
/// whose deflate stream is copied from the old archive (a ZIP layout's `remade` of 0 or
/// past 9, which a version 8 reader would refuse only deep in the payload); version 10 new
/// bytes of machine code with their calls made absolute (the `files` operation CALLS,
/// likewise); version 11 new bytes of sorted tables with their fields as differences (the
/// `files` operation TABLES, likewise); version 12 Go's `_func` records among those tables
/// (TABLES kind 4, which a version 11 reader would refuse only deep in the payload);
/// version 13 Go's pc-value tables reordered (TABLES kind 5, likewise). Packages of versions
/// 1 to 12 are read as they are.
pub const FORMAT_VERSION: u32 = 13;
/// Size of the fixed binary prefix before the header.
pub const PREFIX_LEN: u64 = 96;
/// Largest header accepted (the header holds metadata only; blobs live in the payload).
pub const MAX_HEADER_LEN: u64 = 64 << 20;
/// The lane of the config, of whole layers, patches and `files` streams.
pub const LANE_MAIN: usize = 0;
/// The lane of the new bytes of `files` layers (their `extra_blob`).
pub const LANE_NEW_BYTES: usize = 1;
/// The lane of the difference literals of `files` layers (their `lits_blob`).
pub const LANE_DIFFERENCES: usize = 2;
/// Most lanes a package may have.
pub const MAX_LANES: usize = 8;

/// Compression of the payload stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
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

impl CompressionSpec {
    /// The compression of lane 1 (the new bytes of `files` layers) that goes with this one
    /// for lane 0, unless asked otherwise, once the lane is past [`SMALL_NEW_BYTES`]
    /// (`create` keeps it in xz up to there): with xz, zstd at level 18 (it decodes those bytes
    /// 7 times faster, for packages 0-1.5 % larger, see docs/BENCHMARKS.md; level 19 would
    /// save 0.1 % more for a third more memory and half more time); else the same.
    pub fn new_bytes_default(self) -> CompressionSpec {
        match self.algorithm {
            PayloadCompression::Xz => CompressionSpec {
                algorithm: PayloadCompression::Zstd,
                level: 18,
            },
            _ => self,
        }
    }
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
        /// The blob holding the stream's new bytes (its chunks' `extra` sections), in a lane
        /// of its own; `None` when they are in the stream (format 4 and older).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        extra_blob: Option<usize>,
        /// The blob holding the stream's difference literals (its chunks' `lits`
        /// sections), in a lane of its own; `None` when they are in the stream.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lits_blob: Option<usize>,
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

    /// The payload blob this layer needs, if any (a `files` layer may need a second one,
    /// see [`LayerSource::blobs`]).
    pub fn blob(&self) -> Option<usize> {
        match self {
            LayerSource::Reference { .. } => None,
            LayerSource::Xdelta3 { blob, .. }
            | LayerSource::Zstd { blob, .. }
            | LayerSource::Files { blob, .. }
            | LayerSource::Full { blob } => Some(*blob),
        }
    }

    /// Every payload blob this layer needs.
    pub fn blobs(&self) -> Vec<usize> {
        let apart = match self {
            LayerSource::Files {
                extra_blob,
                lits_blob,
                ..
            } => [*extra_blob, *lits_blob],
            _ => [None, None],
        };
        self.blob()
            .into_iter()
            .chain(apart.into_iter().flatten())
            .collect()
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
    /// The lane that holds it (format 5; 0 before).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lane: usize,
}

fn is_zero(v: &usize) -> bool {
    *v == 0
}

/// One compressed stream of the payload (format 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lane {
    /// Its compression.
    pub compression: CompressionSpec,
    /// Its compressed length in the payload.
    pub length: u64,
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
    /// The payload compression as asked for (`--compression`): lane 0's, and every lane's in
    /// a package without `lanes`.
    pub compression: CompressionSpec,
    /// The payload's lanes, in payload order (format 5; absent before: one lane).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lanes: Vec<Lane>,
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

    /// The payload's lanes: as listed, or for a package without `lanes` the one lane that
    /// is the whole payload of `payload_len` bytes.
    pub fn payload_lanes(&self, payload_len: u64) -> Vec<Lane> {
        if self.lanes.is_empty() {
            vec![Lane {
                compression: self.compression,
                length: payload_len,
            }]
        } else {
            self.lanes.clone()
        }
    }

    /// Checks the sizes the header claims against `limits` before anything is read or
    /// allocated: every blob and layer within [`Limits::max_entry_size`], and each lane's
    /// claimed expansion within [`Limits::max_expansion_ratio`].
    pub fn check_limits(&self, path: &Path, payload_len: u64, limits: &Limits) -> Result<()> {
        let at = |what: String| format!("{}: {what}", path.display());
        for (i, b) in self.blobs.iter().enumerate() {
            limits.check_entry_size(&at(format!("blob {i}")), b.size)?;
        }
        for (i, l) in self.target.layers.iter().enumerate() {
            limits.check_entry_size(&at(format!("layer {i}")), l.size)?;
        }
        let lanes = self.payload_lanes(payload_len);
        for (n, lane) in lanes.iter().enumerate() {
            let total = self
                .blobs
                .iter()
                .filter(|b| b.lane == n)
                .try_fold(0u64, |t, b| t.checked_add(b.size))
                .ok_or_else(|| Error::InvalidPackage {
                    path: path.to_path_buf(),
                    reason: "the blob sizes add up to more than 2^64 bytes".into(),
                })?;
            if lane.compression.algorithm != PayloadCompression::None {
                let what = match lanes.len() {
                    1 => "payload".to_string(),
                    _ => format!("payload lane {n}"),
                };
                limits.check_expansion(&at(what), lane.length, total)?;
            }
        }
        Ok(())
    }

    /// Checks the header's internal consistency (lanes that add up to the payload's
    /// `payload_len` bytes, indexes in range, each lane's blobs used in its order exactly
    /// once, a `files` layer's two blobs in two lanes), so that apply can trust it
    /// structurally.
    pub fn validate(&self, path: &Path, payload_len: u64) -> Result<()> {
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
        if self.lanes.len() > MAX_LANES {
            return Err(bad(format!(
                "{} payload lanes, more than the {MAX_LANES} allowed",
                self.lanes.len()
            )));
        }
        let lanes = self.payload_lanes(payload_len);
        let sum = lanes
            .iter()
            .try_fold(0u64, |t, l| t.checked_add(l.length))
            .ok_or_else(|| bad("the lane lengths overflow".into()))?;
        if sum != payload_len {
            return Err(bad(format!(
                "the lanes add up to {sum} bytes but the payload has {payload_len}"
            )));
        }
        if let Some((i, b)) = self
            .blobs
            .iter()
            .enumerate()
            .find(|(_, b)| b.lane >= lanes.len())
        {
            return Err(bad(format!(
                "blob {i} is in lane {}, but the payload has {} lanes",
                b.lane,
                lanes.len()
            )));
        }
        // Each lane is read front to back: its blobs must be used in their order.
        let mut order = LaneOrder::new(&self.blobs, lanes.len());
        let mut expect_blob = |b: usize, what: &str| -> Result<()> {
            order.take(b).map_err(|next| match next {
                Some(next) => bad(format!(
                    "{what} uses blob {b}, expected blob {next} of {}",
                    self.blobs.len()
                )),
                None => bad(format!(
                    "{what} uses blob {b}, expected no more blobs of {}",
                    self.blobs.len()
                )),
            })
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
            let blobs = l.source.blobs();
            for &b in &blobs {
                expect_blob(b, &format!("layer {i}"))?;
            }
            // The blobs of a `files` layer are read at once: each from a lane of its own.
            for (k, &a) in blobs.iter().enumerate() {
                if let Some(&b) = blobs[k + 1..]
                    .iter()
                    .find(|&&b| self.blobs[b].lane == self.blobs[a].lane)
                {
                    return Err(bad(format!(
                        "layer {i}'s blobs {a} and {b} are both in lane {}",
                        self.blobs[a].lane
                    )));
                }
            }
        }
        let used = order.used();
        if used != self.blobs.len() {
            return Err(bad(format!(
                "{} blobs listed but {used} used",
                self.blobs.len()
            )));
        }
        Ok(())
    }
}

/// The order in which each lane's blobs must be read: a lane's blobs in header order.
struct LaneOrder {
    /// Per lane, its blobs' indexes, in order.
    lanes: Vec<Vec<usize>>,
    /// Per lane, how many were taken.
    next: Vec<usize>,
    /// Each blob's lane.
    lane_of: Vec<usize>,
}

impl LaneOrder {
    fn new(blobs: &[BlobEntry], lanes: usize) -> LaneOrder {
        let mut per = vec![Vec::new(); lanes];
        for (i, b) in blobs.iter().enumerate() {
            if let Some(l) = per.get_mut(b.lane) {
                l.push(i);
            }
        }
        LaneOrder {
            lanes: per,
            next: vec![0; lanes],
            lane_of: blobs.iter().map(|b| b.lane).collect(),
        }
    }

    /// Takes blob `b` if it is the next of its lane; else returns the blob that is next
    /// (of the lane `b` claims, or of lane 0 for a `b` out of range), if any.
    fn take(&mut self, b: usize) -> std::result::Result<(), Option<usize>> {
        let lane = self.lane_of.get(b).copied().unwrap_or(0);
        let (Some(list), Some(next)) = (self.lanes.get(lane), self.next.get_mut(lane)) else {
            return Err(None);
        };
        match list.get(*next) {
            Some(&n) if n == b => {
                *next += 1;
                Ok(())
            }
            other => Err(other.copied()),
        }
    }

    /// How many blobs were taken.
    fn used(&self) -> usize {
        self.next.iter().sum()
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
        let mut f = crate::fs_safe::open_input(path, "a package file")?;
        let meta = f.metadata().at(path)?;
        if meta.is_dir() {
            return Err(bad("is a directory, not a package file".into()));
        }
        let file_size = meta.len();
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
        header.validate(path, payload_len)?;
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
            let mut f = crate::fs_safe::open_input(&self.path, "a package file")?;
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

    /// Opens the payload as blobs, each lane decoded on a thread of its own.
    pub fn blobs(&self) -> Result<BlobReader> {
        let lanes = self.header.payload_lanes(self.payload_len);
        let mut streams = Vec::with_capacity(lanes.len());
        let mut holds = Vec::with_capacity(lanes.len());
        let mut at = self.payload_offset;
        for lane in &lanes {
            let (stream, hold) = self.lane_stream(at, lane)?;
            streams.push(stream);
            holds.push(hold);
            at += lane.length;
        }
        let order = LaneOrder::new(&self.header.blobs, lanes.len());
        Ok(BlobReader {
            path: self.path.clone(),
            lanes: streams,
            holds: Arc::new(holds),
            blobs: self.header.blobs.clone(),
            order,
            check_digests: true,
        })
    }

    /// A lane's decompressed bytes: `lane.length` bytes of the file from `at`; and what its
    /// decoder holds as it goes.
    fn lane_stream(&self, at: u64, lane: &Lane) -> Result<(Box<dyn Read + Send>, Arc<LaneHold>)> {
        let mut f = crate::fs_safe::open_input(&self.path, "a package file")?;
        f.seek(SeekFrom::Start(at)).at(&self.path)?;
        let mut raw = BufReader::with_capacity(1 << 20, f.take(lane.length));
        // Each decoder, and the window it fills as it goes.
        let (stream, window): (Box<dyn Read + Send>, u64) = match lane.compression.algorithm {
            PayloadCompression::None => {
                return Ok((Box::new(raw), Arc::new(LaneHold::new(0))));
            }
            PayloadCompression::Zstd => {
                let window = zstd_window(raw.fill_buf().at(&self.path)?)
                    .unwrap_or(1 << zstd_codec::MAX_WINDOW_LOG);
                let mut d = zstd::stream::read::Decoder::with_buffer(raw).at(&self.path)?;
                d.window_log_max(zstd_codec::MAX_WINDOW_LOG)
                    .at(&self.path)?;
                let d = DamageNamed {
                    inner: d,
                    path: self.path.clone(),
                    what: "zstd",
                };
                (Box::new(d), window)
            }
            PayloadCompression::Gzip => {
                let d = DamageNamed {
                    inner: flate2::bufread::MultiGzDecoder::new(raw),
                    path: self.path.clone(),
                    what: "gzip",
                };
                (Box::new(d), 0)
            }
            PayloadCompression::Xz => {
                let stream = liblzma::stream::Stream::new_stream_decoder(MAX_XZ_DECODER_MEMORY, 0)
                    .map_err(io::Error::from)
                    .at(&self.path)?;
                let d = XzPayload {
                    inner: liblzma::bufread::XzDecoder::new_stream(raw, stream),
                    path: self.path.clone(),
                };
                (Box::new(d), MAX_XZ_DICTIONARY)
            }
        };
        let hold = Arc::new(LaneHold::new(window));
        let stream = Box::new(Counted::new(stream, Arc::clone(&hold)));
        // Decompression runs on its own thread, a few MiB ahead of the reader: rebuilding a
        // layer and decompressing the payload then share the cores instead of taking turns
        // (xz decodes at 60-100 MB/s here, which alone would hold apply near that rate).
        Ok((Box::new(read_ahead(stream)), hold))
    }
}

/// An xz payload's decoder, whose errors name the package and say what is wrong with it
/// (liblzma's own say only "memory limit reached" or "corrupt data").
struct XzPayload<R> {
    inner: liblzma::bufread::XzDecoder<R>,
    path: PathBuf,
}

impl<R: io::BufRead> Read for XzPayload<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).map_err(|e| {
            let reason = match e
                .get_ref()
                .and_then(|i| i.downcast_ref::<liblzma::stream::Error>())
            {
                Some(liblzma::stream::Error::MemLimit) => format!(
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

/// A zstd or gzip payload's decoder whose errors name the package: a lane damaged behind
/// a valid checksum said only "Data corruption detected" (exit 1). Errors of the file
/// itself (an OS error) and the library's own pass as they are.
struct DamageNamed<R> {
    inner: R,
    path: PathBuf,
    what: &'static str,
}

impl<R: Read> Read for DamageNamed<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).map_err(|e| {
            let ours = e.get_ref().is_some_and(|i| i.is::<Error>());
            if ours || e.raw_os_error().is_some() || e.kind() == io::ErrorKind::Interrupted {
                return e;
            }
            Error::InvalidPackage {
                path: self.path.clone(),
                reason: format!("its {} payload is damaged: {e}", self.what),
            }
            .into_io()
        })
    }
}

/// Blocks (of up to 1 MiB each) a payload lane's decompressing thread may hold ready.
const READ_AHEAD: usize = 4;

/// A reader of `source` that reads it on another thread, up to [`READ_AHEAD`] blocks ahead.
fn read_ahead(mut source: Box<dyn Read + Send>) -> BlockReader {
    let (tx, rx) = std::sync::mpsc::sync_channel(READ_AHEAD);
    // Read blocks come back to be filled again (fresh 1 MiB blocks cost page faults).
    let (spent, back) = std::sync::mpsc::sync_channel::<Vec<u8>>(READ_AHEAD + 2);
    // The first block is small, so that the first bytes (a package's config) come without
    // waiting for a whole MiB to be decompressed; the others are 1 MiB, so that a lane
    // runs up to 4 MiB ahead while the payload is verified and the first layers copied.
    let mut size = 64 << 10;
    std::thread::spawn(move || loop {
        let mut block = match back.try_recv() {
            Ok(mut b) => {
                b.resize(size, 0);
                b
            }
            Err(_) => vec![0u8; size],
        };
        size = 1 << 20;
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
        let last = filled == 0 || result.is_err();
        // A failed send means the reader is gone.
        let sent = match result {
            Ok(()) if filled == 0 => tx.send(Ok(None)),
            Ok(()) => tx.send(Ok(Some(block))),
            Err(e) if filled > 0 => tx.send(Ok(Some(block))).and_then(|_| tx.send(Err(e))),
            Err(e) => tx.send(Err(e)),
        };
        if last || sent.is_err() {
            return;
        }
    });
    BlockReader::new(rx, "the payload reader thread", move |b| {
        // Full (or the thread is gone): the block is just dropped.
        let _ = spent.try_send(b);
    })
}

fn sha(b: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(b);
    out
}

/// Reads blobs from the payload, each lane's in its order.
pub struct BlobReader {
    path: PathBuf,
    lanes: Vec<Box<dyn Read + Send>>,
    /// What the lanes' decoders hold.
    holds: Arc<Vec<Arc<LaneHold>>>,
    blobs: Vec<BlobEntry>,
    order: LaneOrder,
    check_digests: bool,
}

impl BlobReader {
    /// Whether the blobs opened from now on are hashed and checked against their recorded
    /// digests (the default). A reader that checks what every blob turns into, after
    /// [`Package::verify_payload`], may turn it off: apply does, as each of its blobs ends
    /// in a layer verified against its diff_id or in the config verified against the image
    /// ID, and the payload checksum already covers the bytes. The blobs' own digests would
    /// only repeat those checks (about 25 ms of CPU per 40 MB of blobs). Sizes are always
    /// checked.
    pub fn check_digests(&mut self, on: bool) {
        self.check_digests = on;
    }

    /// What the lanes' decoders hold now, in bytes, as they go (the new bytes' zstd window
    /// fills as it decodes, up to 256 MiB).
    pub fn decoders_held(&self) -> impl Fn() -> u64 + Send + Sync + 'static {
        let holds = Arc::clone(&self.holds);
        move || holds.iter().map(|h| h.held()).sum()
    }

    /// Opens blob `index` as a stream; it must be the next one of its lane. The stream fails
    /// at its end if the blob's bytes are not as many as recorded or (unless turned off
    /// with [`BlobReader::check_digests`]) do not hash to the recorded digest.
    pub fn open(&mut self, index: usize) -> Result<BlobStream<'_>> {
        let entry = self.take(index)?;
        let stream = self
            .lanes
            .get_mut(entry.lane)
            .ok_or_else(|| lane_error(&self.path, index, entry.lane))?;
        Ok(BlobStream::new(
            &self.path,
            index,
            entry,
            stream,
            self.check_digests,
        ))
    }

    /// Opens `blobs`, which must be in different lanes, to be read side by side.
    pub fn open_many(&mut self, blobs: &[usize]) -> Result<Vec<BlobStream<'_>>> {
        let entries = blobs
            .iter()
            .map(|&b| self.take(b))
            .collect::<Result<Vec<_>>>()?;
        let path = &self.path;
        let check = self.check_digests;
        let mut streams: Vec<Option<BlobStream<'_>>> = blobs.iter().map(|_| None).collect();
        for (lane, stream) in self.lanes.iter_mut().enumerate() {
            if let Some(k) = entries.iter().position(|e| e.lane == lane) {
                if entries[k + 1..].iter().any(|e| e.lane == lane) {
                    break;
                }
                streams[k] = Some(BlobStream::new(
                    path,
                    blobs[k],
                    entries[k].clone(),
                    stream,
                    check,
                ));
            }
        }
        streams
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| Error::InvalidPackage {
                path: path.clone(),
                reason: format!("blobs {blobs:?} must each be in a lane of their own"),
            })
    }

    /// Blob `index`'s entry, if it is the next one of its lane.
    fn take(&mut self, index: usize) -> Result<BlobEntry> {
        let entry = self
            .blobs
            .get(index)
            .cloned()
            .ok_or_else(|| Error::InvalidPackage {
                path: self.path.clone(),
                reason: format!("no blob {index}"),
            })?;
        self.order
            .take(index)
            .map_err(|next| Error::InvalidPackage {
                path: self.path.clone(),
                reason: match next {
                    Some(next) => format!(
                        "blob {index} requested out of order (next in lane {} is {next})",
                        entry.lane
                    ),
                    None => format!("blob {index} requested again"),
                },
            })?;
        Ok(entry)
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

fn lane_error(path: &Path, index: usize, lane: usize) -> Error {
    Error::InvalidPackage {
        path: path.to_path_buf(),
        reason: format!("blob {index} is in lane {lane}, which the payload does not have"),
    }
}

/// One blob's bytes, checked at the end: their count, and unless the reader was told
/// otherwise ([`BlobReader::check_digests`]) their digest.
pub struct BlobStream<'a> {
    what: String,
    inner: io::Take<&'a mut Box<dyn Read + Send>>,
    hasher: Option<Sha256>,
    entry: BlobEntry,
    done: bool,
}

impl<'a> BlobStream<'a> {
    fn new(
        path: &Path,
        index: usize,
        entry: BlobEntry,
        stream: &'a mut Box<dyn Read + Send>,
        check_digest: bool,
    ) -> BlobStream<'a> {
        BlobStream {
            what: format!("{}: blob {index}", path.display()),
            inner: stream.take(entry.size),
            hasher: check_digest.then(Sha256::new),
            entry,
            done: false,
        }
    }
}

impl Read for BlobStream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        if n == 0 && !buf.is_empty() {
            self.done = true;
            // What the blob's `take` did not reach.
            let count = self.entry.size - self.inner.limit();
            if count != self.entry.size {
                return Err(Error::InvalidPackage {
                    path: PathBuf::from(&self.what),
                    reason: format!(
                        "payload ends inside the blob ({count} of {} bytes)",
                        self.entry.size
                    ),
                }
                .into_io());
            }
            if let Some(h) = self.hasher.take() {
                let found = Digest::from_sha256(h.finalize().into());
                if found != self.entry.digest {
                    return Err(Error::DigestMismatch {
                        what: self.what.clone(),
                        expected: self.entry.digest.to_string(),
                        found: found.to_string(),
                    }
                    .into_io());
                }
            }
        }
        Ok(n)
    }
}

/// The most new bytes (uncompressed) that `create` keeps in xz rather than in lane 1's
/// own zstd ([`PackageWriter::small_new_bytes`]), when neither was asked for by name. On
/// the node pair (20.2 MB of new bytes: added JavaScript bundles and source maps, and what
/// the changed files left unmatched) xz at level 6 with the extreme flag and a 12 MiB
/// dictionary makes 1.27 MB where zstd 18 with its 256 MiB window makes 1.38 MB (level 6
/// alone: 1.31 MB; an 8 MiB dictionary: 1.31 MB; 4 MiB: 1.40 MB; 16 MiB: 1 KB less for
/// 35 MiB more memory), and decodes them in 0.07 s on one core, beside the other lanes.
/// The kernel pair's 14.4 MB: 59 KB smaller, apply the same. Above this the lane stays in
/// zstd: the tools pair's 33 MB (programs) came out 0.1 % smaller in xz, for apply 0.33
/// -> 0.44 s; xz compresses at a few MB/s and decodes at a fifth of zstd's speed, and the
/// big lanes (statically linked programs, 260 MB on the go pair) repeat themselves beyond
/// any dictionary xz may have within the memory bound.
///
/// The lane leaves xz as soon as the files codec's estimate of a layer's new bytes
/// ([`NewBytesHint`]) puts it more than a quarter past this, or puts the bytes it all but
/// surely holds past this, rather than once it holds this much: on the tools pair the lane
/// got there with 70 % of its layer encoded, and its 24 MiB went through zstd 18 again
/// once the codec's searches were over, alone. On that pair the files whose sources share
/// next to nothing with them and the files shipped whole (28.7 MB, of 33.3 MB in the end)
/// now take the lane out of xz before its first bytes.
pub const SMALL_NEW_BYTES: u64 = 24 << 20;

/// Writes a package: blobs are streamed into compressed lanes spooled in temporary files,
/// then the prefix, header and lanes are written to the destination.
pub struct PackageWriter {
    compression: CompressionSpec,
    spool_dir: PathBuf,
    /// Lane 0, and lane 1 once a blob went there.
    lanes: Vec<LaneWriter>,
    /// Lane 1's compression.
    new_bytes_compression: CompressionSpec,
    /// Lane 1's compression while it stays small, if it has one.
    small_new_bytes: Option<SmallLane>,
    blobs: Vec<BlobEntry>,
    /// What the lanes' encoders hold.
    memory: Arc<LaneMemory>,
    /// What was set aside for each lane not started yet.
    set_aside: [u64; 3],
    /// The bytes lane 1 is expected to hold in the end ([`NewBytesHint`]).
    new_bytes_expected: Arc<lanes::Expected>,
}

/// Where the writer of a package is told how many new bytes lane 1 is expected to hold in
/// the end, while a layer's blobs are being written (see
/// [`PackageWriter::new_bytes_hint`]): a lane kept in xz while it is small
/// ([`PackageWriter::small_new_bytes`]) leaves it as soon as it is expected to end well
/// past its limit, rather than once it gets there, and compresses fewer bytes twice.
#[derive(Debug, Clone)]
pub struct NewBytesHint {
    /// The lane's bytes before the layer.
    before: u64,
    expected: Arc<lanes::Expected>,
}

impl NewBytesHint {
    /// The layer being written is expected to bring `layer` new bytes in all, `sure` of
    /// them all but surely (no more than `layer`).
    pub fn expect(&self, layer: u64, sure: u64) {
        let (bytes, sure) = (
            self.before.saturating_add(layer),
            self.before.saturating_add(sure),
        );
        self.expected.sure.store(sure.min(bytes), Ordering::Relaxed);
        self.expected.bytes.store(bytes, Ordering::Relaxed);
    }
}

/// The most memory the xz decoder may use: a 64 MiB dictionary (level 9) and its state.
/// A payload that claims a larger dictionary is refused instead of allocated.
const MAX_XZ_DECODER_MEMORY: u64 = 96 << 20;

impl PackageWriter {
    /// Starts a package whose payload spools in `spool_dir`: lane 0 compressed with
    /// `compression`, lane 1 (new bytes, if any) with `new_bytes_compression`.
    pub fn new(
        compression: CompressionSpec,
        new_bytes_compression: CompressionSpec,
        spool_dir: &Path,
    ) -> Result<PackageWriter> {
        for (c, option) in [
            (compression, "--level"),
            (new_bytes_compression, "--new-bytes-level"),
        ] {
            let (lo, hi) = c.algorithm.level_range();
            if c.level < lo || c.level > hi {
                return Err(Error::InvalidOption {
                    option: option.into(),
                    reason: format!(
                        "compression level {} is out of range for {} ({lo}..={hi})",
                        c.level,
                        c.algorithm.name()
                    ),
                });
            }
        }
        let mut writer = PackageWriter {
            compression,
            spool_dir: spool_dir.to_path_buf(),
            lanes: Vec::new(),
            new_bytes_compression,
            small_new_bytes: None,
            blobs: Vec::new(),
            memory: LaneMemory::new(),
            set_aside: [0; 3],
            new_bytes_expected: Arc::default(),
        };
        // The structure and difference lanes' encoders take what their settings fix: it is
        // set aside now, so that the new bytes' lane (which grows) never takes it first.
        for n in [LANE_MAIN, LANE_DIFFERENCES] {
            let (c, settings, _) = writer.lane_setup(n)?;
            let most = memory::most_memory(c, &settings);
            writer.memory.set_aside(most);
            writer.set_aside[n] = most;
        }
        writer.lane(LANE_MAIN)?;
        Ok(writer)
    }

    /// Compresses lane 1 (the new bytes) with xz while it holds at most `limit` bytes, and
    /// with the lane's own compression only once it holds more: xz at level 6 with the
    /// extreme flag and a 12 MiB dictionary, on a thread of its own beside the encoder (see
    /// [`SMALL_NEW_BYTES`]). Called before the first blob.
    pub fn small_new_bytes(mut self, limit: u64) -> PackageWriter {
        self.small_new_bytes = Some(SmallLane {
            level: 6,
            settings: LaneSettings {
                zstd: (0, 0, 0),
                zstd_ldm: None,
                xz_dict: 12 << 20,
                xz_extreme: true,
            },
            limit,
        });
        self
    }

    /// A hint for the new bytes of the next layer written: the caller tells it how many it
    /// expects the layer to bring, as it learns (see [`NewBytesHint`]).
    pub fn new_bytes_hint(&self) -> NewBytesHint {
        let before = self
            .blobs
            .iter()
            .filter(|b| b.lane == LANE_NEW_BYTES)
            .map(|b| b.size)
            .sum();
        NewBytesHint {
            before,
            expected: Arc::clone(&self.new_bytes_expected),
        }
    }

    /// Lane `n`'s compression, encoder settings and small-lane compression.
    fn lane_setup(&self, n: usize) -> Result<(CompressionSpec, LaneSettings, Option<SmallLane>)> {
        Ok(match n {
            // Lane 0 holds the streams' structure (operations, tar headers, control
            // triples); new bytes are in lane 1 since format 5. An 8 MiB dictionary does as
            // well as 16 MiB there (the ml pair: +0.08 %) for about 95 MiB less of the
            // encoder's memory (see `xz_encoder`).
            LANE_MAIN => (
                self.compression,
                LaneSettings {
                    zstd: (crate::threads::threads() as u32, 27, 7),
                    zstd_ldm: None,
                    xz_dict: 8 << 20,
                    xz_extreme: false,
                },
                None,
            ),
            // zstd on the lane's own thread (no workers), with a 256 MiB window, long-distance
            // matching and level 18's own match finder tables. Statically linked
            // programs repeat the packages they link far apart: the new bytes of
            // docker 26's engine programs (dockerd, containerd, ctr, the shim, the
            // client, runc; 147 MB) take 47.8 MB in a 16 MiB window, 37.5 MB in a
            // 128 MiB one (zstd's CLI on their tar: 57.2 MB in 32 MiB, 52.8 in 64 MiB,
            // 48.7 in 128 MiB). The go pair ships all 260 MB of its new layer as new
            // bytes: 51.23 MB in 128 MiB with tables of 2^22 and 2^21 entries, 49.73 MB
            // in 256 MiB with the level's 2^23 and 2^22 (zstd's CLI on the layer:
            // 52.59 -> 51.13 MB, the window alone 51.67), under `zstd -19 --long=31
            // --patch-from`'s 50.09 MB. On the other pairs (new bytes under 128 MB) the
            // window changes nothing and the tables save 0.1-0.3 %. The window's memory
            // is only taken as bytes come, to create and to apply: on the go pair
            // create peaks at 461 MiB and apply at 359 MiB (were 295 and 236). The
            // tables (and long-distance matching's for the larger window) take about
            // 50 MiB more than the smaller ones did; lane 0's dictionary went down
            // from 16 to 8 MiB for it (see `PackageWriter::new`), so that create stays
            // under 512 MiB where the new bytes fill the window beside large patch
            // searches (the ml pair: 475 MiB).
            // From level 16 on, its long-distance matcher looks for shorter matches than
            // the level's own (see `lanes::new_bytes_long_matches`).
            LANE_NEW_BYTES => (
                self.new_bytes_compression,
                LaneSettings {
                    zstd: (0, 28, 9),
                    zstd_ldm: lanes::new_bytes_long_matches(self.new_bytes_compression.level),
                    xz_dict: 16 << 20,
                    xz_extreme: false,
                },
                self.small_new_bytes,
            ),
            // The difference literals: a 4 MiB dictionary does as well as 16 MiB on
            // every bench pair (kernel +0.1 %) for 120 MiB less memory.
            LANE_DIFFERENCES => (
                self.compression,
                LaneSettings {
                    zstd: (0, 24, 9),
                    zstd_ldm: None,
                    xz_dict: 4 << 20,
                    xz_extreme: false,
                },
                None,
            ),
            other => return Err(Error::Other(format!("internal: no payload lane {other}"))),
        })
    }

    /// Lane `n`'s encoder, starting lanes up to `n` on first use.
    fn lane(&mut self, n: usize) -> Result<&mut PayloadEncoder> {
        while self.lanes.len() <= n {
            let i = self.lanes.len();
            let (compression, settings, small) = self.lane_setup(i)?;
            // A lane whose memory was set aside holds it from the start; the new bytes'
            // lane takes its own as it grows.
            let held = std::mem::take(&mut self.set_aside[i]);
            let cost = move |fed| memory::lane_memory(compression, &settings, small.as_ref(), fed);
            let gate = Gate::new(Arc::clone(&self.memory), held, cost);
            let expected = &self.new_bytes_expected;
            let lane = LaneWriter::new(
                compression,
                &self.spool_dir,
                settings,
                small,
                expected,
                gate,
            )?;
            self.lanes.push(lane);
        }
        self.lanes
            .get_mut(n)
            .map(|l| &mut l.encoder)
            .ok_or_else(|| Error::Other(format!("internal: no payload lane {n}")))
    }

    /// Appends a blob from a reader to lane 0; returns its index.
    pub fn add_blob(&mut self, mut r: impl Read) -> Result<usize> {
        let path = self.lanes[LANE_MAIN].spool_path.to_path_buf();
        let enc = self.lane(LANE_MAIN)?;
        let mut h = HashingReader::new(&mut r);
        io::copy(&mut h, enc).map_err(|e| Error::io(&path, e))?;
        let (digest, size, _) = h.finish();
        Ok(self.push(size, digest, LANE_MAIN))
    }

    fn push(&mut self, size: u64, digest: Digest, lane: usize) -> usize {
        self.blobs.push(BlobEntry { size, digest, lane });
        self.blobs.len() - 1
    }

    /// Appends a blob written by `f` into the given writer to lane 0; returns its index and
    /// what `f` returned.
    pub fn add_blob_with<T>(
        &mut self,
        f: impl FnOnce(&mut dyn Write) -> Result<T>,
    ) -> Result<(usize, T)> {
        let path = self.lanes[LANE_MAIN].spool_path.to_path_buf();
        let enc = self.lane(LANE_MAIN)?;
        let mut h = crate::digest::HashingWriter::new(io::BufWriter::with_capacity(1 << 20, enc));
        let value = f(&mut h)?;
        let (digest, size) = finish_blob(h, &path)?;
        Ok((self.push(size, digest, LANE_MAIN), value))
    }

    /// Appends blobs written side by side by `f`, one to each of `lanes` (in that order,
    /// each lane at most once). Returns their indexes and what `f` returned.
    pub fn add_blobs_with<T>(
        &mut self,
        lanes: &[usize],
        f: impl FnOnce(&mut [&mut dyn Write]) -> Result<T>,
    ) -> Result<(Vec<usize>, T)> {
        for &n in lanes {
            self.lane(n)?;
        }
        let mut writers: Vec<Option<(PathBuf, &mut PayloadEncoder)>> =
            lanes.iter().map(|_| None).collect();
        for (n, lane) in self.lanes.iter_mut().enumerate() {
            if let Some(k) = lanes.iter().position(|&l| l == n) {
                writers[k] = Some((lane.spool_path.to_path_buf(), &mut lane.encoder));
            }
        }
        let writers = writers
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .filter(|w| w.len() == lanes.len())
            .ok_or_else(|| Error::Other(format!("internal: payload lanes {lanes:?}")))?;
        let mut hashing: Vec<_> = writers
            .into_iter()
            .map(|(path, enc)| {
                let w = io::BufWriter::with_capacity(1 << 20, enc);
                (path, crate::digest::HashingWriter::new(w))
            })
            .collect();
        let value = {
            let mut dyns: Vec<&mut dyn Write> = hashing
                .iter_mut()
                .map(|(_, h)| h as &mut dyn Write)
                .collect();
            f(&mut dyns)?
        };
        let mut done = Vec::with_capacity(lanes.len());
        for (path, h) in hashing {
            done.push(finish_blob(h, &path)?);
        }
        let indexes = done
            .into_iter()
            .zip(lanes)
            .map(|((digest, size), &lane)| self.push(size, digest, lane))
            .collect();
        Ok((indexes, value))
    }

    /// Appends a blob from memory to lane 0; returns its index.
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

    /// The new bytes the lanes have yet to compress, once every blob is written: the most
    /// that [`wait_for_lanes`](Self::wait_for_lanes) reports.
    pub fn lanes_backlog(&self) -> u64 {
        self.lane_threads()
            .map(|t| {
                let (sent, fed) = t.backlog();
                sent - fed
            })
            .sum()
    }

    /// Ends the lanes' streams and waits for their threads to compress what they still
    /// hold (on a layer of many new bytes, seconds after its last blob), calling
    /// `progress` with the bytes compressed since its last call, every 50 ms or so. An
    /// error from `progress` (a cancellation) is returned at once; the lanes' threads then
    /// stop when the writer is dropped.
    pub fn wait_for_lanes(&mut self, progress: &mut dyn FnMut(u64) -> Result<()>) -> Result<()> {
        self.close_lanes();
        let fed = |w: &PackageWriter| w.lane_threads().map(|t| t.backlog().1).sum::<u64>();
        let mut reported = fed(self);
        loop {
            let ended = self.lane_threads().all(|t| t.ended());
            let now = fed(self);
            progress(now - reported)?;
            reported = now;
            if ended {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Tells the lanes' threads that no more bytes come. No more searches come either: the
    /// lanes may take the searches' share of memory, and what was set aside for lanes that
    /// never started is given back.
    fn close_lanes(&mut self) {
        for lane in &mut self.lanes {
            if let PayloadEncoder::Thread(t) = &mut lane.encoder {
                t.close();
            }
        }
        self.memory.searches_over();
        self.memory.give(self.set_aside.iter().sum());
        self.set_aside = [0; 3];
    }

    fn lane_threads(&self) -> impl Iterator<Item = &lanes::LaneThread> {
        self.lanes.iter().filter_map(|l| match &l.encoder {
            PayloadEncoder::Thread(t) => Some(&**t),
            _ => None,
        })
    }

    /// Finishes the lanes and writes the whole package to `out`. The header's `blobs`,
    /// `lanes` and `compression` are filled in here.
    pub fn finish(mut self, mut header: Header, out: &mut impl Write) -> Result<u64> {
        header.blobs = std::mem::take(&mut self.blobs);
        header.compression = self.compression;
        header.lanes.clear();
        // Every lane is closed before any is waited for: a lane waiting for memory that
        // another holds goes on once that one ends.
        self.close_lanes();
        let mut files = Vec::with_capacity(self.lanes.len());
        let mut payload = Sha256::new();
        for lane in std::mem::take(&mut self.lanes) {
            let (mut file, compression) = lane.encoder.finish().at(&lane.spool_path)?;
            file.flush().at(&lane.spool_path)?;
            file.seek(SeekFrom::Start(0)).at(&lane.spool_path)?;
            let length = io::copy(&mut file, &mut ShaWriter(&mut payload)).at(&lane.spool_path)?;
            file.seek(SeekFrom::Start(0)).at(&lane.spool_path)?;
            header.lanes.push(Lane {
                compression: compression.unwrap_or(lane.compression),
                length,
            });
            // The spool file's name goes (with `lane`); the open file stays readable.
            files.push(file);
        }
        let payload_len: u64 = header.lanes.iter().map(|l| l.length).sum();
        let payload_digest = Digest::from_sha256(payload.finalize().into());
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
        for mut file in files {
            io::copy(&mut file, out).map_err(out_err)?;
        }
        out.flush().map_err(out_err)?;
        Ok(PREFIX_LEN + header_raw.len() as u64 + payload_len)
    }
}

/// Flushes a blob's writer into its lane; returns the blob's digest and size.
fn finish_blob(
    h: crate::digest::HashingWriter<io::BufWriter<&mut PayloadEncoder>>,
    spool: &Path,
) -> Result<(Digest, u64)> {
    let (digest, size, mut inner) = h.finish();
    inner.flush().map_err(|e| Error::io(spool, e))?;
    Ok((digest, size))
}

/// Feeds what is written to a SHA-256.
struct ShaWriter<'a>(&'a mut Sha256);

impl Write for ShaWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
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
