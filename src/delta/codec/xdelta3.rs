//! VCDIFF (RFC 3284) deltas through the xdelta3 C library.
//!
//! The `xdelta3` crate compiles and links the C library, but its Rust wrappers are not
//! usable for layers: they cast lengths to `u32` without checking, size the output buffer
//! as `2 × (input + source)` (overflowing `u32` long before 4 GiB) and make `decode`
//! fail whenever the target is larger than that estimate. So this module declares the two
//! in-memory entry points of the C library itself and calls them with buffers it sizes:
//!
//! * encoding writes into a buffer no larger than the target: a delta at least as big as
//!   the target is useless (the caller stores the target instead), so running out of room
//!   means "not beneficial" and [`encode`] returns `None`;
//! * decoding writes into a buffer of exactly the target size the package recorded.
//!
//! # Window behaviour
//!
//! `xd3_encode_memory` hands the whole source to the library as one block and sets the
//! source's `max_winsize` to the source size (rounded up to a power of two). The encoder
//! then indexes the entire source before the first target window
//! (`xd3_srcwin_move_point`: while the input position is below `max_winsize / 2` it
//! checksums up to `max_winsize`), and `xd3_match_setup` only rejects copies farther back
//! than `max_winsize`, so **copies are found anywhere in the source**, unlike the command
//! line tool whose `-B` source window defaults to 64 MiB. Two limits remain:
//!
//! * the source checksum table has at most 2^28 slots (`xd3_size_log2`), one checksum
//!   every `large_step` bytes (2 at level 9, 3 at level 6, 8 at level 3), so for sources
//!   above roughly 512 MiB–2 GiB later checksums overwrite earlier ones: still whole-source
//!   matching, but a sparser index. That table costs up to 1 GiB of memory.
//! * the target is encoded in windows of 8 MiB (`XD3_DEFAULT_WINSIZE`): copies *within
//!   the target* (not from the source) reach back only one window.
//!
//! # Size limits
//!
//! The library's `usize_t` is `uint32_t` (xdelta3.h, independent of the platform), so no
//! buffer can reach 4 GiB. Moreover the whole source becomes one block whose size is
//! rounded up to a power of two in a `usize_t` and whose mask is computed in an `int`, so a
//! source above 2^30 bytes would overflow (2^32 truncates to 0; `1 << 31` is undefined in
//! C). Hence [`MAX_SOURCE_LEN`] = 1 GiB and [`MAX_TARGET_LEN`] = 2 GiB (which keeps the
//! library's `output_size + avail_out` sum inside `u32`); [`check_sizes`] enforces both
//! before any C call and reports [`Error::LimitExceeded`].
//!
//! Secondary compression (DJW/FGK Huffman) is left off: packages are zstd-compressed as a
//! whole, which does better on the literal bytes than xdelta3's secondary coders. Each
//! window carries an Adler-32 checksum of its target bytes (`XD3_ADLER32`, as the
//! command-line tool does by default), so a wrong source is usually caught while decoding.

use std::os::raw::{c_int, c_uint};

use crate::digest::Digest;
use crate::error::{Error, Result};

// The `xdelta3` crate builds and links the C library (its build.rs compiles xdelta3.c).
// Naming the crate keeps it, and so the library, in the link even though none of its Rust
// items are used.
use ::xdelta3 as _;

/// Largest source, in bytes, the xdelta3 codec accepts (1 GiB; see the module docs).
pub const MAX_SOURCE_LEN: u64 = 1 << 30;

/// Largest target, in bytes, the xdelta3 codec accepts (2 GiB; see the module docs).
pub const MAX_TARGET_LEN: u64 = 1 << 31;

/// The default compression level, 1 (fastest) to 9 (smallest deltas), as `xdelta3 -9`.
pub const DEFAULT_LEVEL: u32 = 9;

const CODEC: &str = "xdelta3";

/// `usize_t` in xdelta3.h: always `uint32_t`.
type UsizeT = u32;

// Flags from `xd3_flags` in xdelta3.h.
const XD3_ADLER32: c_int = 1 << 10;
const XD3_NOCOMPRESS: c_int = 1 << 13;
const XD3_COMPLEVEL_SHIFT: c_int = 20;

// Return codes from `xd3_rvalues` in xdelta3.h.
const XD3_INPUT: c_int = -17703;
const XD3_OUTPUT: c_int = -17704;
const XD3_GETSRCBLK: c_int = -17705;
const XD3_TOOFARBACK: c_int = -17709;
const XD3_INTERNAL: c_int = -17710;
const XD3_INVALID: c_int = -17711;
const XD3_INVALID_INPUT: c_int = -17712;
const XD3_NOSECOND: c_int = -17713;
const XD3_UNIMPLEMENTED: c_int = -17714;

extern "C" {
    // int xd3_encode_memory (const uint8_t *input, usize_t input_size,
    //                        const uint8_t *source, usize_t source_size,
    //                        uint8_t *output_buffer, usize_t *output_size,
    //                        usize_t avail_output, int flags);
    fn xd3_encode_memory(
        input: *const u8,
        input_size: UsizeT,
        source: *const u8,
        source_size: UsizeT,
        output_buffer: *mut u8,
        output_size: *mut UsizeT,
        avail_output: UsizeT,
        flags: c_int,
    ) -> c_int;

    // int xd3_decode_memory (const uint8_t *input, usize_t input_size,
    //                        const uint8_t *source, usize_t source_size,
    //                        uint8_t *output_buf, usize_t *output_size,
    //                        usize_t avail_output, int flags);
    fn xd3_decode_memory(
        input: *const u8,
        input_size: UsizeT,
        source: *const u8,
        source_size: UsizeT,
        output_buf: *mut u8,
        output_size: *mut UsizeT,
        avail_output: UsizeT,
        flags: c_int,
    ) -> c_int;
}

// `usize_t` must be what we think it is, or every length we pass is garbage.
const _: () = assert!(std::mem::size_of::<UsizeT>() == std::mem::size_of::<c_uint>());

/// Checks that a (source, target) pair fits the codec's limits, before anything is
/// allocated or handed to C.
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

/// Encodes `target` against `source` at `level` (1–9; 0 turns off matching within the
/// target). Returns `None` when the delta would not be smaller than `target` itself.
pub fn encode(source: &[u8], target: &[u8], level: u32) -> Result<Option<Vec<u8>>> {
    encode_within(source, target, level, target.len().saturating_sub(1))
}

/// Like [`encode`], but returns `None` when the delta would exceed `max_patch_len` bytes.
///
/// Use it to stop early when another codec already produced something smaller. Memory for
/// `max_patch_len` bytes is reserved up front.
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
    let flags = if level == 0 {
        XD3_ADLER32 | XD3_NOCOMPRESS
    } else {
        // Levels 1-9 are `XD3_COMPLEVEL_1` .. `XD3_COMPLEVEL_9`.
        XD3_ADLER32 | ((level as c_int) << XD3_COMPLEVEL_SHIFT)
    };
    // The capacity is a `usize_t` too; a cap above it would be meaningless anyway.
    let cap = max_patch_len.min(MAX_TARGET_LEN as usize);
    let mut out = vec![0u8; cap];
    let mut written: UsizeT = 0;
    let (src_ptr, src_len) = source_arg(source);
    // SAFETY: every pointer is valid for the length passed with it: the lengths fit in
    // `usize_t` (checked above: source <= 2^30, target <= 2^31, cap <= 2^31); `out` has
    // room for `cap` bytes and the library never writes past `avail_output` (it returns
    // ENOSPC instead); `written` is a valid `usize_t`. The library keeps no pointer after
    // returning (all its state is on its stack and freed before it returns).
    let ret = unsafe {
        xd3_encode_memory(
            target.as_ptr(),
            target.len() as UsizeT,
            src_ptr,
            src_len,
            out.as_mut_ptr(),
            &mut written,
            cap as UsizeT,
            flags,
        )
    };
    match ret {
        0 => {
            let n = written as usize;
            if n > cap {
                return Err(internal(format!(
                    "the encoder reported {n} bytes written into a {cap}-byte buffer"
                )));
            }
            out.truncate(n);
            Ok(Some(out))
        }
        libc::ENOSPC => Ok(None),
        code => Err(Error::Codec {
            codec: CODEC.into(),
            reason: format!("encoding failed: {}", describe(code)),
        }),
    }
}

/// Decodes `patch` against `source` into a buffer of exactly `target_len` bytes.
///
/// A patch that decodes to fewer bytes is reported as [`Error::SizeMismatch`], one that
/// would decode to more as [`Error::Codec`]. The content is not verified: use
/// [`decode_verified`] when the digest is known.
pub fn decode(source: &[u8], patch: &[u8], target_len: u64) -> Result<Vec<u8>> {
    check_sizes(source.len() as u64, target_len)?;
    if patch.len() as u64 > u64::from(UsizeT::MAX) {
        return Err(limit(
            "patch",
            "xdelta3 patch size",
            u64::from(UsizeT::MAX),
            patch.len() as u64,
        ));
    }
    check_secondary(patch)?;
    // Both fit in usize: target_len <= 2^31 (checked above).
    let cap = target_len as usize;
    // `vec![0; n]` is a calloc: untouched pages cost nothing until the decoder writes them.
    let mut out = vec![0u8; cap];
    let mut written: UsizeT = 0;
    let (src_ptr, src_len) = source_arg(source);
    // SAFETY: as in `encode_within`: every length fits in `usize_t` and matches its
    // buffer, the library writes at most `cap` bytes into `out`, and keeps no pointers.
    let ret = unsafe {
        xd3_decode_memory(
            patch.as_ptr(),
            patch.len() as UsizeT,
            src_ptr,
            src_len,
            out.as_mut_ptr(),
            &mut written,
            cap as UsizeT,
            0,
        )
    };
    match ret {
        0 => {
            let n = written as usize;
            if n > cap {
                return Err(internal(format!(
                    "the decoder reported {n} bytes written into a {cap}-byte buffer"
                )));
            }
            if n != cap {
                return Err(Error::SizeMismatch {
                    what: format!("{CODEC} decoded target"),
                    expected: target_len,
                    found: n as u64,
                });
            }
            Ok(out)
        }
        libc::ENOSPC => Err(Error::Codec {
            codec: CODEC.into(),
            reason: format!(
                "the patch decodes to more than the recorded target size of {target_len} bytes"
            ),
        }),
        code => Err(Error::Codec {
            codec: CODEC.into(),
            reason: format!("decoding failed: {}", describe(code)),
        }),
    }
}

/// Decodes like [`decode`] and checks the result against the expected size and digest,
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

/// Refuses, with a clear message, a patch whose VCDIFF header asks for a secondary
/// compressor this build of the library lacks. The `xdelta3` crate compiles DJW and FGK but
/// not LZMA, which Debian's `xdelta3` command uses by default; the library itself would
/// only report an internal error.
fn check_secondary(patch: &[u8]) -> Result<()> {
    // RFC 3284 header: 0xD6 0xC3 0xC4, version, indicator; VCD_DECOMPRESS (0x01) in the
    // indicator means the next byte names the secondary compressor (xdelta3: DJW = 1,
    // LZMA = 2, FGK = 16).
    const VCD_DECOMPRESS: u8 = 0x01;
    match patch {
        [0xD6, 0xC3, 0xC4, _, indicator, id, ..] if indicator & VCD_DECOMPRESS != 0 => {
            let name = match id {
                1 | 16 => return Ok(()),
                2 => "LZMA".to_string(),
                other => format!("number {other}"),
            };
            Err(Error::Codec {
                codec: CODEC.into(),
                reason: format!(
                    "the patch uses {name} secondary compression, which this build does not \
                     support; re-encode it with `xdelta3 -S djw` or `-S none`"
                ),
            })
        }
        _ => Ok(()),
    }
}

/// The source arguments for C: no source at all when it is empty (the library cannot
/// index a zero-byte block, and a patch made without a source needs none).
fn source_arg(source: &[u8]) -> (*const u8, UsizeT) {
    if source.is_empty() {
        (std::ptr::null(), 0)
    } else {
        (source.as_ptr(), source.len() as UsizeT)
    }
}

fn internal(reason: String) -> Error {
    Error::Codec {
        codec: CODEC.into(),
        reason,
    }
}

/// A readable description of an xdelta3 return code (`xd3_strerror` plus errno values).
fn describe(code: c_int) -> String {
    let text = match code {
        XD3_INVALID_INPUT => "invalid or corrupted VCDIFF data (or the wrong source)",
        XD3_INVALID => "invalid configuration",
        XD3_INTERNAL => {
            "internal error in the xdelta3 library (also reported for patches that need an \
             unavailable secondary compressor)"
        }
        XD3_UNIMPLEMENTED => {
            "the patch uses a VCDIFF feature xdelta3 does not implement (VCD_TARGET or a custom code table)"
        }
        XD3_TOOFARBACK => "a copy reaches too far back in the source",
        XD3_NOSECOND => "secondary compression was not beneficial",
        XD3_INPUT | XD3_OUTPUT | XD3_GETSRCBLK => "the library stopped in the middle of the stream",
        libc::ENOMEM => "out of memory",
        libc::EINVAL => "invalid argument",
        _ => "unknown error",
    };
    format!("{text} (code {code})")
}
