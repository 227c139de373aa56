//! Whole-blob binary delta codecs: encode a changed layer (an uncompressed tar) against an
//! old layer's bytes, and decode it on the far side.
//!
//! Two codecs are available ([`Codec`]):
//!
//! * `xdelta3` ([`vcdiff`]): VCDIFF (RFC 3284), encoded and decoded in memory by our own
//!   code. The output decodes with the stock `xdelta3 -d -s SOURCE` tool; limited to
//!   1 GiB sources and 2 GiB targets.
//! * [`zstd`](mod@zstd): zstd with the source as a reference prefix (`--patch-from`).
//!   Usually smaller (matches and literals are entropy-coded), streams the target, and
//!   handles sources and targets of any size (matches reach back at most 2 GiB).
//!
//! [`encode_best`] tries the applicable codecs and keeps the smallest output. Whatever
//! codec decoded a layer, the caller verifies the result against the recorded digest
//! ([`decode_verified`] does both).

pub mod vcdiff;
pub mod zstd;

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;
use crate::error::{Error, Result};

/// A delta codec. Serialised in lowercase (`"xdelta3"`, `"zstd"`), as package manifests
/// record it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// VCDIFF, as the xdelta3 tool reads and writes it ([`vcdiff`]).
    Xdelta3,
    /// zstd with the source as reference prefix ([`zstd`](mod@zstd)).
    Zstd,
}

impl Codec {
    /// Every codec, in the order [`encode_best`] tries them.
    pub const ALL: [Codec; 2] = [Codec::Zstd, Codec::Xdelta3];

    /// The codec's name, as serialised and accepted by [`FromStr`].
    pub fn name(self) -> &'static str {
        match self {
            Codec::Xdelta3 => "xdelta3",
            Codec::Zstd => "zstd",
        }
    }

    /// Whether the codec can encode a target of `target_len` bytes against a source of
    /// `source_len` bytes.
    pub fn applicable(self, source_len: u64, target_len: u64) -> bool {
        match self {
            Codec::Xdelta3 => vcdiff::sizes_fit(source_len, target_len),
            Codec::Zstd => true,
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Codec {
    type Err = Error;

    /// Parses a codec name, ignoring ASCII case.
    fn from_str(s: &str) -> Result<Codec> {
        Codec::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| Error::Codec {
                codec: s.to_string(),
                reason: format!(
                    "unknown delta codec; expected one of: {}",
                    Codec::ALL.map(Codec::name).join(", ")
                ),
            })
    }
}

/// The process's memory bound unless configured (`DOCKER_DELTA_MAX_MEMORY`): 512 MiB.
pub const DEFAULT_MAX_MEMORY: u64 = 512 << 20;

/// What a `create` or `apply` run holds beside a whole-layer delta, at most: the package
/// payload's coders (xz at level 6 with a 16 MiB dictionary is the largest, about 180 MiB
/// to encode), I/O buffers, the program itself.
pub const RESERVED_MEMORY: u64 = 224 << 20;

/// zstd's fixed tables at the default level 19 with long distance matching, plus the
/// program, rounded up from measurements (zstd 1.5.7, see [`whole_layer_memory`]).
const ZSTD_FIXED: u64 = 96 << 20;

/// The VCDIFF matcher's fixed tables (the hash chains of an 8 MiB target window and their
/// heads) plus the program, rounded up from measurements.
const VCDIFF_FIXED: u64 = 48 << 20;

/// Peak memory of a whole-layer delta between a `source_len`-byte old layer and a
/// `target_len`-byte new one, beyond [`RESERVED_MEMORY`]: twice both layers (the layers
/// themselves, the delta, a decoded copy for the round-trip check, and the codec's tables
/// that grow with the window: zstd's match state over source + target, the VCDIFF index of
/// the source) plus the codec's fixed tables. Measured peaks of `create --method zstd` on
/// two 64 MiB and two 128 MiB layers were 344 and 600 MiB (this model: 352 and 608 with
/// the fixed part), of `--method xdelta3` 232 and 424 MiB (304 and 560). Decoding holds
/// less (source, delta and target: 271 MiB for both codecs at 128 MiB), so a layer that
/// `create` encoded within a bound also decodes within it.
pub fn whole_layer_memory(codec: Codec, source_len: u64, target_len: u64) -> u64 {
    let fixed = match codec {
        Codec::Zstd => ZSTD_FIXED,
        Codec::Xdelta3 => VCDIFF_FIXED,
    };
    source_len
        .saturating_add(target_len)
        .saturating_mul(2)
        .saturating_add(fixed)
}

/// The largest old layer that `codec` can diff a `target_len`-byte layer against within a
/// process bound of `max_memory` bytes (`None`: not even an empty one).
pub fn max_source_len(codec: Codec, target_len: u64, max_memory: u64) -> Option<u64> {
    let room = max_memory.checked_sub(RESERVED_MEMORY)?;
    let room = room.checked_sub(whole_layer_memory(codec, 0, target_len))?;
    Some(room / 2)
}

/// Settings for [`encode_best`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodeOptions {
    /// The codecs to try.
    pub codecs: Vec<Codec>,
    /// xdelta3 level, 0–9 (default [`vcdiff::DEFAULT_LEVEL`]).
    pub xdelta3_level: u32,
    /// zstd level, 1–22 (default [`zstd::DEFAULT_LEVEL`]).
    pub zstd_level: i32,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        EncodeOptions {
            codecs: Codec::ALL.to_vec(),
            xdelta3_level: vcdiff::DEFAULT_LEVEL,
            zstd_level: zstd::DEFAULT_LEVEL,
        }
    }
}

/// A delta and the codec that produced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// The codec that decodes `data`.
    pub codec: Codec,
    /// The encoded delta.
    pub data: Vec<u8>,
}

/// Encodes `target` against `source` with each applicable codec of `options` and returns
/// the smallest delta, or `None` when no codec produced one smaller than `target` itself
/// (the caller then stores the target as it is).
///
/// Sizes are compared as produced. xdelta3 output has no entropy coding, so a package
/// compressed as a whole shrinks it further, while zstd output is already compressed; on
/// a tie the earlier codec in `options.codecs` wins. xdelta3 is skipped, not an error,
/// when the sizes exceed its limits. Each later codec is capped at the best size so far
/// where the codec allows it (xdelta3 gives up after the first window that exceeds it).
pub fn encode_best(
    source: &[u8],
    target: &[u8],
    options: &EncodeOptions,
) -> Result<Option<Encoded>> {
    let (source_len, target_len) = (source.len() as u64, target.len() as u64);
    let mut best: Option<Encoded> = None;
    for &codec in &options.codecs {
        if !codec.applicable(source_len, target_len) {
            continue;
        }
        // Only strictly smaller than the best so far (or than the target) is worth keeping.
        let budget = best
            .as_ref()
            .map_or(target.len(), |b| b.data.len())
            .saturating_sub(1);
        let data = match codec {
            Codec::Xdelta3 => vcdiff::encode_within(source, target, options.xdelta3_level, budget)?,
            Codec::Zstd => zstd::encode_within(source, target, options.zstd_level, budget)?,
        };
        if let Some(data) = data {
            best = Some(Encoded { codec, data });
        }
    }
    Ok(best)
}

/// Decodes a delta held in memory into a buffer of `target_len` bytes, without verifying
/// its content. A delta that decodes to another size fails with [`Error::SizeMismatch`]
/// (fewer bytes) or [`Error::Codec`] (more).
pub fn decode(codec: Codec, source: &[u8], patch: &[u8], target_len: u64) -> Result<Vec<u8>> {
    match codec {
        Codec::Xdelta3 => vcdiff::decode(source, patch, target_len),
        Codec::Zstd => {
            let capacity = usize::try_from(target_len).map_err(|_| Error::LimitExceeded {
                what: "decoded delta target".into(),
                limit: "addressable memory".into(),
                max: usize::MAX as u64,
                found: target_len,
                option: "a 64-bit host".into(),
            })?;
            // The callers bounded `target_len` by the memory bound; the buffer's pages are
            // only touched as the frame fills them.
            zstd::decode_to_vec(source, patch, capacity)
        }
    }
}

/// Decodes a delta held in memory and checks the result against the recorded size and
/// digest: [`Error::SizeMismatch`] or [`Error::DigestMismatch`], naming `what` (e.g.
/// `"layer 3 (sha256:ab..)"`), when it differs.
pub fn decode_verified(
    codec: Codec,
    source: &[u8],
    patch: &[u8],
    expected_len: u64,
    expected: &Digest,
    what: &str,
) -> Result<Vec<u8>> {
    verify_decoded(decode(codec, source, patch, expected_len), expected, what)
}

#[cfg(test)]
pub(crate) mod tests;

/// Names a decoded target's size mismatch after `what` and checks its digest.
pub(crate) fn verify_decoded(
    decoded: Result<Vec<u8>>,
    expected: &Digest,
    what: &str,
) -> Result<Vec<u8>> {
    let out = decoded.map_err(|e| match e {
        Error::SizeMismatch {
            expected, found, ..
        } => Error::SizeMismatch {
            what: what.to_string(),
            expected,
            found,
        },
        other => other,
    })?;
    let found = Digest::of(&out);
    if &found != expected {
        return Err(Error::DigestMismatch {
            what: what.to_string(),
            expected: expected.to_string(),
            found: found.to_string(),
        });
    }
    Ok(out)
}
