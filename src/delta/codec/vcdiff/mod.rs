//! VCDIFF (RFC 3284) deltas, encoded and decoded in memory by our own code.
//!
//! The codec is named `xdelta3` in packages (and on the command line) because its output
//! is what the xdelta3 tool reads and writes: `xdelta3 -d -s SOURCE PATCH OUT` decodes
//! it, and patches written by xdelta3 (or by the xdelta3 C library that earlier versions
//! of docker-delta used) decode here.
//!
//! # Format
//!
//! [`encode()`] writes the subset xdelta3 writes by default, minus secondary compression:
//!
//! * a header with no secondary compressor, no custom code table and no application
//!   header;
//! * target windows of 8 MiB, each with `VCD_SOURCE` and a source segment that is the
//!   *whole* source, so copies reach anywhere in it; copies may also address the window's
//!   own earlier bytes (addresses at or above the source length);
//! * xdelta3's Adler-32 extension: `Win_Indicator` bit `0x04` and the window target's
//!   checksum, 4 bytes big-endian, after the section lengths;
//! * the RFC's default code table and near/same address caches, unmodified.
//!
//! The xdelta3 command-line tool decodes such patches with sources of any size within
//! [`MAX_SOURCE_LEN`]; it reads the source in blocks as copies need them (its `-B`
//! option sizes that cache: a larger `-B` only makes decoding faster).
//!
//! [`decode()`] reads that and everything xdelta3 writes without secondary compression,
//! skipping its application header (file names). It refuses, naming the feature,
//! secondary compression (xdelta3 `-S djw`, `-S fgk` or `-S lzma`, the Debian tool's
//! default), compressed sections, application-defined code tables and `VCD_TARGET`
//! windows, none of which we write. Every length, address and instruction is checked
//! against the bounds known at that point, the target never grows past the length the
//! caller passes (the only large allocation), and the checksum, when present, is
//! verified, so a wrong source is usually caught while decoding.
//!
//! # Matching
//!
//! The encoder (`matcher.rs`) finds copies three ways, at every target position:
//!
//! * the *diagonal* of the last copy from the source: after a small edit the next copy
//!   usually continues where the last one would have, and costs a one-byte address;
//! * an index of the source: the position of an 8-byte block every `step` bytes
//!   (`step` = 4 at level 9, up to 32 at level 1), so copies of at least `7 + step`
//!   bytes are found anywhere in the source;
//! * hash chains of 4-byte prefixes over the target window (searched 48 deep at level 9,
//!   1 at level 1, not at all at level 0).
//!
//! Candidates are extended forward and backward over pending literals and priced by
//! their address cost in the cache; from level 4 a match is deferred when the next
//! position has a better one. Runs of 8 or more equal bytes become RUN instructions.
//!
//! # Memory and size limits
//!
//! Encoding holds the source index (one 4-byte slot per 4 to 32 source bytes, at most as
//! large as the source) and, from level 1, 4 bytes per target window byte (32 MiB) plus
//! a 1 MiB table for the chains. Decoding allocates the target, of the length the caller
//! passes. Positions in the index are `u32`, and both source and target are held in
//! memory: [`MAX_SOURCE_LEN`] = 1 GiB and [`MAX_TARGET_LEN`] = 2 GiB bound that memory,
//! and [`check_sizes`] enforces them (reporting [`Error::LimitExceeded`]) before
//! anything is allocated.

mod code_table;
mod decode;
mod encode;
mod matcher;
mod wire;

use crate::digest::Digest;
use crate::error::{Error, Result};

/// Largest source, in bytes, the codec accepts (1 GiB; see the module docs).
pub const MAX_SOURCE_LEN: u64 = 1 << 30;

/// Largest target, in bytes, the codec accepts (2 GiB; see the module docs).
pub const MAX_TARGET_LEN: u64 = 1 << 31;

/// The default level, 1 (fastest) to 9 (smallest deltas).
pub const DEFAULT_LEVEL: u32 = 9;

/// The codec's name in errors, as packages name it.
const CODEC: &str = "xdelta3";

/// Checks that a (source, target) pair fits the codec's limits, before anything is
/// allocated.
pub fn check_sizes(source_len: u64, target_len: u64) -> Result<()> {
    if source_len > MAX_SOURCE_LEN {
        return Err(limit(
            "source",
            "xdelta3 source size",
            MAX_SOURCE_LEN,
            source_len,
        ));
    }
    if target_len > MAX_TARGET_LEN {
        return Err(limit(
            "target",
            "xdelta3 target size",
            MAX_TARGET_LEN,
            target_len,
        ));
    }
    Ok(())
}

/// Whether [`check_sizes`] accepts the pair.
pub fn sizes_fit(source_len: u64, target_len: u64) -> bool {
    check_sizes(source_len, target_len).is_ok()
}

fn limit(what: &str, limit: &str, max: u64, found: u64) -> Error {
    Error::LimitExceeded {
        what: format!("{CODEC} {what}"),
        limit: limit.to_string(),
        max,
        found,
        option: "the zstd codec, which has no such limit".to_string(),
    }
}

/// Encodes `target` against `source` at `level` (1–9; 0 turns off copies within the
/// target). Returns `None` when the delta would not be smaller than `target` itself.
pub fn encode(source: &[u8], target: &[u8], level: u32) -> Result<Option<Vec<u8>>> {
    encode_within(source, target, level, target.len().saturating_sub(1))
}

/// Like [`encode()`], but returns `None` when the delta would exceed `max_patch_len` bytes.
///
/// Use it to stop early when another codec already produced something smaller: the
/// encoder gives up after the first window that crosses the budget.
pub fn encode_within(
    source: &[u8],
    target: &[u8],
    level: u32,
    max_patch_len: usize,
) -> Result<Option<Vec<u8>>> {
    check_sizes(source.len() as u64, target.len() as u64)?;
    if level > 9 {
        return Err(Error::Codec {
            codec: CODEC.into(),
            reason: format!("compression level {level} is out of range 0-9"),
        });
    }
    Ok(encode::encode(source, target, level, max_patch_len))
}

/// Decodes `patch` against `source` into a buffer of exactly `target_len` bytes.
///
/// A patch that decodes to fewer bytes is reported as [`Error::SizeMismatch`], one that
/// would decode to more as [`Error::Codec`], as is any malformed patch or checksum
/// mismatch. The content is not verified: use [`decode_verified`] when the digest is
/// known.
pub fn decode(source: &[u8], patch: &[u8], target_len: u64) -> Result<Vec<u8>> {
    check_sizes(source.len() as u64, target_len)?;
    // Fits: target_len <= 2^31 (checked above).
    let out = decode::decode(source, patch, target_len as usize)?;
    if out.len() as u64 != target_len {
        return Err(Error::SizeMismatch {
            what: format!("{CODEC} decoded target"),
            expected: target_len,
            found: out.len() as u64,
        });
    }
    Ok(out)
}

/// Decodes like [`decode()`] and checks the result against the expected size and digest,
/// returning [`Error::SizeMismatch`] or [`Error::DigestMismatch`] (naming `what`) when it
/// differs.
pub fn decode_verified(
    source: &[u8],
    patch: &[u8],
    expected_len: u64,
    expected: &Digest,
    what: &str,
) -> Result<Vec<u8>> {
    super::verify_decoded(decode(source, patch, expected_len), expected, what)
}
