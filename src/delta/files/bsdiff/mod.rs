//! A bsdiff-class binary diff (Colin Percival's algorithm: suffix-array matches extended
//! into approximate matches, with bytewise differences), written for this crate so that its
//! three outputs can go to separate streams of the package: control triples, difference
//! bytes (mostly zeros for recompiled code, whose pointers shift) and new bytes. Those
//! streams compress far better together, across all files of a layer, than one patch per
//! file would.
//!
//! The suffix array comes from libsais (the `libsais-sys` crate); the searches in it are
//! this module's. Its parts:
//!
//! - `index.rs`: the suffix array of a source and the searches in it;
//! - `grams.rs`: the filter that tells a search it cannot find 8 bytes, asked first;
//! - `scan.rs`: making a patch ([`diff`]): bsdiff's pass, and the covers that do not pay
//!   dropped;
//! - here: a patch's parts ([`Control`], [`Streams`], [`Differences`]) and applying one
//!   ([`patch`]);
//! - `tests.rs`.

use crate::error::{Error, Result};

mod grams;
mod index;
mod scan;
#[cfg(test)]
mod tests;

pub use scan::{diff, shares_stretches};
pub(super) use scan::{looks_like_text, GEAR, TEXT_PROBE};

/// Memory [`diff`] holds at its peak, about, for a source and new bytes this long: the
/// source's suffix array (4 bytes a byte), the filter of its 8-byte strings (half a byte a
/// byte; counted even for a source too short to have one) and the source itself, beside
/// the new bytes and the patches of both passes (three times the new bytes).
pub fn search_memory(source: u64, new: u64) -> u64 {
    5 * source + grams::Grams::memory(source) + 3 * new
}

/// One step of a patch: `add` bytes of source plus difference bytes, then `copy` new bytes
/// from the extra stream, then move the source position by `seek`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Control {
    /// Bytes made as source + difference.
    pub add: u64,
    /// Bytes copied from the extra stream.
    pub copy: u64,
    /// Source position change after both.
    pub seek: i64,
}

/// The output streams of a diff.
#[derive(Debug, Default, Clone)]
pub struct Streams {
    /// Control triples.
    pub controls: Vec<Control>,
    /// Difference bytes (new - source, wrapping).
    pub diff: Vec<u8>,
    /// New bytes.
    pub extra: Vec<u8>,
}

/// How a patch's difference bytes are computed from the bytes it adds to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Differences {
    /// Byte by byte: `new - old` for each byte, wrapping (bsdiff's own).
    Bytes,
    /// In 32-bit little-endian words aligned to the start of the patch's output: `new - old`
    /// for each word, wrapping (a word cut by the end of an added stretch is the shorter
    /// number its bytes make). A field whose value moved by a constant (a symbol index, a
    /// BTF type id, a relocation's offset) then differs by that constant whatever carries
    /// the change causes; byte differences vary with every carry. Relocatable ELF files
    /// (kernel modules) are mostly such tables (relocations, symbols, BTF): by words the
    /// kernel pair's package is 2 % smaller (21.39 -> 20.96 MB), while linked programs and
    /// text come out no smaller.
    Words,
}

/// Applies `f` to `a` and `b` (equally long) in little-endian 32-bit words, appending the
/// results to `out`. The first word starts `phase` bytes before `a[0]` (it holds the first
/// `4 - phase` bytes), and a word cut short by either end is the number its bytes make, so
/// `f` must be wrapping arithmetic, whose low bytes do not depend on the high ones.
fn by_words(a: &[u8], b: &[u8], phase: usize, out: &mut Vec<u8>, f: impl Fn(u32, u32) -> u32) {
    let n = a.len().min(b.len());
    out.reserve(n);
    let word = |x: &[u8]| {
        let mut w = [0u8; 4];
        w[..x.len()].copy_from_slice(x);
        u32::from_le_bytes(w)
    };
    let head = ((4 - phase % 4) % 4).min(n);
    if head > 0 {
        out.extend_from_slice(&f(word(&a[..head]), word(&b[..head])).to_le_bytes()[..head]);
    }
    let (a, b) = (&a[head..n], &b[head..n]);
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    // The whole words into room made first: a loop over three equally long slices of
    // fixed-size words, which the compiler vectorizes (pushing four bytes at a time
    // checks the vector's capacity each time, and does not).
    let at = out.len();
    out.resize(at + (a.len() - ra.len()), 0);
    let whole = |x: &[u8]| u32::from_le_bytes([x[0], x[1], x[2], x[3]]);
    for ((o, x), y) in out[at..].chunks_exact_mut(4).zip(ca).zip(cb) {
        o.copy_from_slice(&f(whole(x), whole(y)).to_le_bytes());
    }
    if !ra.is_empty() {
        out.extend_from_slice(&f(word(ra), word(rb)).to_le_bytes()[..ra.len()]);
    }
}

/// Calls `f` with each step of `controls`: where in `new` its added bytes start, those
/// bytes, and the source bytes they are made from (both empty for a step that adds none).
/// `None` if the controls do not fit the two inputs.
fn each_add(
    old: &[u8],
    new: &[u8],
    controls: &[Control],
    mut f: impl FnMut(usize, &[u8], &[u8]),
) -> Option<()> {
    let (mut np, mut op) = (0usize, 0i64);
    for c in controls {
        let add = usize::try_from(c.add).ok()?;
        let from = usize::try_from(op).ok()?;
        let to = new.get(np..np.checked_add(add)?)?;
        let source = old.get(from..from.checked_add(add)?)?;
        f(np, to, source);
        np = np
            .checked_add(add)?
            .checked_add(usize::try_from(c.copy).ok()?)?;
        op = op.checked_add(c.add as i64)?.checked_add(c.seek)?;
    }
    Some(())
}

/// The difference bytes of a patch from `old` to `new` made by [`diff`] (whose own are
/// [`Differences::Bytes`]), computed as [`Differences::Words`] instead; `None` if the
/// controls do not fit the two inputs.
pub fn word_differences(old: &[u8], new: &[u8], controls: &[Control]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    each_add(old, new, controls, |np, to, source| {
        by_words(to, source, np % 4, &mut out, u32::wrapping_sub)
    })?;
    Some(out)
}

/// The difference bytes ([`Differences::Bytes`]) of a patch from `old` to `new` with the
/// controls `controls`; `None` if they do not fit the two inputs. (For a patch whose
/// controls were found against other bytes than `old`.)
pub fn byte_differences(old: &[u8], new: &[u8], controls: &[Control]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(new.len());
    each_add(old, new, controls, |_, to, source| {
        out.extend(to.iter().zip(source).map(|(n, o)| n.wrapping_sub(*o)))
    })?;
    Some(out)
}

/// Narrows a patch against a source of `len` bytes to the part of it that its `controls`
/// use: returns that part as a range of the source, with the controls made relative to its
/// start. A patch searched against a long stretch of an old layer (see
/// `plan::widen_sources`) then makes its decoder read only the part it uses.
pub fn narrow(controls: &mut [Control], len: u64) -> (u64, u64) {
    // The part holds the bytes the steps read and the position every step after the first
    // starts at (the decoder checks each step's position, whether it reads or not).
    let (mut lo, mut hi, mut reads) = (len, 0u64, false);
    let mut at: i64 = 0;
    for (i, c) in controls.iter().enumerate() {
        let start = (at.max(0) as u64).min(len);
        if i > 0 {
            (lo, hi) = (lo.min(start), hi.max(start));
        }
        if c.add > 0 {
            reads = true;
            (lo, hi) = (lo.min(start), hi.max(start.saturating_add(c.add).min(len)));
        }
        at = at.saturating_add_unsigned(c.add).saturating_add(c.seek);
    }
    match controls.first_mut() {
        // The first step reads from the source's first byte unless it only moves.
        Some(c) if reads && lo > 0 && c.add == 0 => {
            c.seek -= lo as i64;
            (lo, hi)
        }
        _ => (0, hi),
    }
}

/// A piece of difference bytes, as a [`DiffSource`] gives them.
pub enum Piece<'a> {
    /// This many zeros: the source's bytes as they are.
    Zeros(usize),
    /// These bytes.
    Bytes(&'a [u8]),
}

/// Where a patch's difference bytes come from: the bytes themselves (`&[u8]`), or a form
/// that tells runs of zeros apart (the stream's zero runs, read as they are: a chunk's
/// differences need not be expanded into a buffer of their own first).
pub trait DiffSource {
    /// Calls `f` with the next `n` difference bytes, in order and in pieces, and moves past
    /// them; fails if fewer are left.
    fn next(&mut self, n: usize, f: impl FnMut(Piece<'_>)) -> Result<()>;
}

impl DiffSource for &[u8] {
    fn next(&mut self, n: usize, mut f: impl FnMut(Piece<'_>)) -> Result<()> {
        if n > self.len() {
            return Err(Error::Codec {
                codec: "files".into(),
                reason: "difference stream ends early".into(),
            });
        }
        let (step, rest) = self.split_at(n);
        f(Piece::Bytes(step));
        *self = rest;
        Ok(())
    }
}

/// Applies a patch to `old`, appending `new_len` bytes to `out`. `diff` and `extra` are
/// advanced past the bytes used. Fails, without panicking, on any inconsistency.
pub fn patch(
    old: &[u8],
    controls: &[Control],
    differences: Differences,
    diff: &mut impl DiffSource,
    extra: &mut &[u8],
    new_len: u64,
    out: &mut Vec<u8>,
) -> Result<()> {
    let bad = |reason: &str| Error::Codec {
        codec: "files".into(),
        reason: reason.to_string(),
    };
    let start = out.len();
    let mut oldpos: i64 = 0;
    let mut step = Vec::new();
    for c in controls {
        let add = usize::try_from(c.add).map_err(|_| bad("control length out of range"))?;
        let copy = usize::try_from(c.copy).map_err(|_| bad("control length out of range"))?;
        // The lengths come from the stream: checked, since claims near 2^64 would wrap.
        if ((out.len() - start) as u64)
            .checked_add(c.add)
            .and_then(|n| n.checked_add(c.copy))
            .is_none_or(|end| end > new_len)
        {
            return Err(bad("patch writes past the file's size"));
        }
        let from = usize::try_from(oldpos).map_err(|_| bad("source position out of range"))?;
        if from.checked_add(add).is_none_or(|e| e > old.len()) {
            return Err(bad("patch reads past the source"));
        }
        let source = &old[from..from + add];
        match differences {
            Differences::Bytes => {
                // The pieces add up to `add` bytes, or `next` fails.
                let mut at = 0;
                diff.next(add, |piece| match piece {
                    Piece::Zeros(n) => {
                        out.extend_from_slice(&source[at..at + n]);
                        at += n;
                    }
                    Piece::Bytes(d) => {
                        let s = &source[at..at + d.len()];
                        out.extend(s.iter().zip(d).map(|(o, d)| o.wrapping_add(*d)));
                        at += d.len();
                    }
                })?;
            }
            Differences::Words => {
                // A word's carries cross the pieces: the step's bytes together first.
                step.clear();
                diff.next(add, |piece| match piece {
                    Piece::Zeros(n) => step.resize(step.len() + n, 0),
                    Piece::Bytes(d) => step.extend_from_slice(d),
                })?;
                let phase = (out.len() - start) % 4;
                by_words(source, &step, phase, out, u32::wrapping_add);
            }
        }
        if copy > extra.len() {
            return Err(bad("extra stream ends early"));
        }
        out.extend_from_slice(&extra[..copy]);
        *extra = &extra[copy..];
        oldpos = oldpos
            .checked_add(add as i64)
            .and_then(|p| p.checked_add(c.seek))
            .ok_or_else(|| bad("source position out of range"))?;
    }
    if (out.len() - start) as u64 != new_len {
        return Err(bad("patch ends before the file's size"));
    }
    Ok(())
}
