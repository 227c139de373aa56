//! The pieces of the stream format (the grammar is in the module doc of [`super`]):
//! operation and chunk tags, the sections kept apart, patches and their control triples,
//! varints, the zero runs of difference bytes, and the codec's error.

use super::bsdiff::{Control, DiffSource, Piece};
use super::WINDOW;
use crate::error::{Error, Result};

/// Headers longer than this are stored literally instead of patched.
pub(super) const MAX_META_PATCH: u64 = 64 << 10;

pub(super) const OP_META: u8 = 0;
pub(super) const OP_LIT: u8 = 1;
pub(super) const OP_COPY: u8 = 2;
pub(super) const OP_DIFF: u8 = 3;
pub(super) const OP_HDIFF: u8 = 4;
pub(super) const OP_GZIP: u8 = 5;
pub(super) const OP_WDIFF: u8 = 6;
pub(super) const OP_BDIFF: u8 = 7;
pub(super) const OP_ZIP: u8 = 8;
pub(super) const OP_XDIFF: u8 = 9;
/// Not an operation of its own: the next one's new bytes of machine code have their calls
/// made absolute (see [`calls`](super::calls)).
pub(super) const OP_CALLS: u8 = 10;
/// Not an operation of its own: the next one's new bytes of sorted tables have their
/// fields as differences from the entry before (see [`tables`](super::tables)).
pub(super) const OP_TABLES: u8 = 11;
/// Not an operation of its own: the next patch's source has these tables rewritten before
/// it is patched, and the TABLES before it puts back every field of the output's tables
/// (see [`tables`](super::tables)).
pub(super) const OP_SOURCE_TABLES: u8 = 12;

/// The most bytes of source a patch may read.
pub(super) const MAX_PATCH_SOURCE: u64 = 2 * WINDOW + MAX_META_PATCH;
/// OP_GZIP: the text follows in extra.
pub(super) const GZ_TEXT: u64 = 0;
/// OP_GZIP: the text is a patch against an old gzip member's text.
pub(super) const GZ_PATCH: u64 = 1;

/// OP_ZIP: the expanded bytes follow in extra.
pub(super) const ZIP_TEXT: u64 = 0;
/// OP_ZIP: the expanded bytes are a patch against an old archive, expanded.
pub(super) const ZIP_PATCH: u64 = 1;

/// The index of the `lits` section (the difference literals) among a chunk's sections.
const LITS: usize = 3;
/// The index of the `extra` section (the new bytes) among a chunk's sections.
const EXTRA: usize = 4;
/// The sections a stream may keep in streams of their own, so that the package compresses
/// each among its like and apply decodes them side by side: the new bytes, then the
/// difference literals.
pub const APART: [usize; 2] = [EXTRA, LITS];
/// What [`APART`]'s streams hold, for messages.
pub(super) const APART_NAMES: [&str; 2] = ["new bytes", "difference literals"];

/// A chunk whose patches keep their control triples in `ops` (five sections).
pub(super) const CHUNK_INLINE: u8 = 1;
/// A chunk whose patches' control triples are in three sections of their own, one per
/// field, after the five: each field's numbers then compress among their like (on the
/// kernel pair the operations and controls come out 6 % smaller; every bench package
/// 0.2-0.4 %).
pub(super) const CHUNK_SPLIT: u8 = 2;
/// Not a chunk: the stream's BTF map (see [`btf`](super::btf)), at most once; encoders write it before
/// the first chunk.
pub(super) const CHUNK_BTF_MAP: u8 = 3;

/// The control sections of a [`CHUNK_SPLIT`] chunk: each triple's `add`, `copy` and
/// zigzag `seek` as varints.
#[derive(Default)]
pub(super) struct ControlSections {
    pub(super) add: Vec<u8>,
    pub(super) copy: Vec<u8>,
    pub(super) seek: Vec<u8>,
}

/// A patch's fields, as [`put_patch`] writes them.
pub(super) struct Patch {
    pub(super) src: u64,
    pub(super) off: u64,
    pub(super) src_len: u64,
    pub(super) len: u64,
    pub(super) controls: Vec<Control>,
}

/// Reads a patch's fields, refusing sizes beyond the codec's limits before allocating; the
/// control triples come from `ctl` (add, copy, seek sections) when the chunk has them,
/// else from `ops`.
pub(super) fn get_patch(ops: &mut &[u8], ctl: &mut Option<[&[u8]; 3]>) -> Result<Patch> {
    let (src, off, src_len, len, n) = (get(ops)?, get(ops)?, get(ops)?, get(ops)?, get(ops)?);
    if src_len > MAX_PATCH_SOURCE {
        return Err(bad(format!("patch source of {src_len} bytes is too large")));
    }
    // Saturating: `len` is a claim (the gzip path checks it only after this).
    if n > len.saturating_add(1) {
        return Err(bad("more patch steps than bytes"));
    }
    let mut controls = Vec::with_capacity(n.min(1 << 16) as usize);
    for _ in 0..n {
        let (add, copy, z) = match ctl {
            Some([a, c, s]) => (get(a)?, get(c)?, get(s)?),
            None => (get(ops)?, get(ops)?, get(ops)?),
        };
        let seek = unzigzag(z);
        controls.push(Control { add, copy, seek });
    }
    Ok(Patch {
        src,
        off,
        src_len,
        len,
        controls,
    })
}

/// Writes a patch: its fields to `ops`, its control triples to `ctl` (a
/// [`CHUNK_SPLIT`] chunk) or, without, to `ops` too (a [`CHUNK_INLINE`] chunk).
pub(super) fn put_patch(
    ops: &mut Vec<u8>,
    ctl: Option<&mut ControlSections>,
    src: usize,
    off: u64,
    src_len: u64,
    len: u64,
    c: &[Control],
) {
    put(ops, src as u64);
    put(ops, off);
    put(ops, src_len);
    put(ops, len);
    put(ops, c.len() as u64);
    match ctl {
        Some(ctl) => {
            for c in c {
                put(&mut ctl.add, c.add);
                put(&mut ctl.copy, c.copy);
                put(&mut ctl.seek, zigzag(c.seek));
            }
        }
        None => {
            for c in c {
                put(ops, c.add);
                put(ops, c.copy);
                put(ops, zigzag(c.seek));
            }
        }
    }
}

/// A signed number as an unsigned one whose varint is short when the number is near 0
/// either way: 0, -1, 1, -2, ... become 0, 1, 2, 3, ...
pub(super) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// The signed number [`zigzag`] made `z` from.
pub(super) fn unzigzag(z: u64) -> i64 {
    ((z >> 1) as i64) ^ -((z & 1) as i64)
}

pub(super) fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Zero runs shorter than this inside non-zero bytes stay in the literals.
pub(super) const MIN_ZERO_RUN: usize = 4;

/// Splits difference bytes (mostly zeros) into `runs` (pairs of varints: zeros, then
/// literal length) and `lits` (the non-zero stretches), so that the package compressor
/// works on a few MiB instead of the whole patched size.
pub(super) fn squeeze_zeros(diff: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let (mut runs, mut lits) = (Vec::new(), Vec::new());
    let mut i = 0;
    while i < diff.len() {
        let zeros = diff[i..].iter().take_while(|&&b| b == 0).count();
        let start = i + zeros;
        let mut end = start;
        while end < diff.len() {
            if diff[end] != 0 {
                end += 1;
                continue;
            }
            let z = diff[end..]
                .iter()
                .take(MIN_ZERO_RUN)
                .take_while(|&&b| b == 0)
                .count();
            if z >= MIN_ZERO_RUN || end + z == diff.len() {
                break;
            }
            end += z;
        }
        put(&mut runs, zeros as u64);
        put(&mut runs, (end - start) as u64);
        lits.extend_from_slice(&diff[start..end]);
        i = end;
    }
    (runs, lits)
}

/// Difference bytes as [`squeeze_zeros`] split them, read a piece at a time: a patch takes
/// a run of zeros as its source's bytes, and a chunk's differences are never expanded
/// into a buffer of their own (8 MiB a chunk, written, faulted in and read again).
pub(super) struct Zeros<'a> {
    runs: &'a [u8],
    lits: &'a [u8],
    /// Zeros left of the run being read, then its literal bytes left.
    zeros: u64,
    literal: u64,
}

impl<'a> Zeros<'a> {
    pub(super) fn new(runs: &'a [u8], lits: &'a [u8]) -> Zeros<'a> {
        Zeros {
            runs,
            lits,
            zeros: 0,
            literal: 0,
        }
    }

    /// Reads the next run, whose literal bytes must be there.
    fn next_run(&mut self) -> Result<()> {
        let (zeros, n) = (get(&mut self.runs)?, get(&mut self.runs)?);
        if n > self.lits.len() as u64 {
            return Err(bad("difference literals end early"));
        }
        (self.zeros, self.literal) = (zeros, n);
        Ok(())
    }

    /// Whether every difference byte was read (empty runs may be left).
    pub(super) fn is_done(&mut self) -> Result<bool> {
        while self.zeros == 0 && self.literal == 0 {
            if self.runs.is_empty() {
                return Ok(self.lits.is_empty());
            }
            self.next_run()?;
        }
        Ok(false)
    }
}

impl DiffSource for Zeros<'_> {
    fn next(&mut self, mut n: usize, mut f: impl FnMut(Piece<'_>)) -> Result<()> {
        while n > 0 {
            if self.zeros > 0 {
                let k = self.zeros.min(n as u64) as usize;
                self.zeros -= k as u64;
                n -= k;
                f(Piece::Zeros(k));
            } else if self.literal > 0 {
                // `literal` never exceeds what is left of `lits` (see `next_run`).
                let k = self.literal.min(n as u64) as usize;
                let (bytes, rest) = self.lits.split_at(k);
                (self.lits, self.literal) = (rest, self.literal - k as u64);
                n -= k;
                f(Piece::Bytes(bytes));
            } else if self.runs.is_empty() {
                return Err(bad("difference stream ends early"));
            } else {
                self.next_run()?;
            }
        }
        Ok(())
    }
}

pub(super) fn bad(reason: impl Into<String>) -> Error {
    Error::Codec {
        codec: "files".into(),
        reason: reason.into(),
    }
}

pub(super) fn get(s: &mut &[u8]) -> Result<u64> {
    let mut v = 0u64;
    for (i, &b) in s.iter().enumerate().take(10) {
        v |= ((b & 0x7f) as u64) << (7 * i);
        if b & 0x80 == 0 {
            *s = &s[i + 1..];
            return Ok(v);
        }
    }
    Err(bad("truncated or overlong varint in operations"))
}
