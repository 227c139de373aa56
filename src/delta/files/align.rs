//! Where the pieces of a big file find their source: content anchors the old and the new
//! file share.
//!
//! A file larger than [`WINDOW`](super::WINDOW) is diffed in pieces, each against a window of
//! its source. Placing that window by the piece's proportional position only finds content
//! that moved by less than half a window (a block inserted or deleted early in a database
//! file, or two halves swapped, move everything after by more). Instead both files are cut
//! at content-defined anchors (positions where a rolling hash of the 64 bytes before them
//! has its top bits clear, so the same bytes give the same anchors wherever they sit); an
//! anchor key found once in the old file and again in the new one says how far that content
//! moved. Each piece's window is centred on the shift most of the piece's anchors agree on.
//!
//! Memory: at most [`MAX_ANCHORS`] anchors per file (their spacing grows with the file),
//! 16 bytes each on either side plus the old side's hash map: under 40 MiB for any file,
//! about 17 MiB for a 1 GiB one. Time: both files are read once, side by side on two
//! threads, at about 1 GB/s each.

use std::collections::HashMap;

use super::bsdiff::GEAR;
use super::LayerData;
use crate::error::{Error, Result};

/// Fewest bytes between anchors on average.
const MIN_SPACING: u64 = 4 << 10;
/// Most anchors a file is cut at (the spacing doubles until the file fits).
pub const MAX_ANCHORS: u64 = 1 << 19;
/// Bytes a piece keeps before [`Alignment::piece_len`] may end it.
pub const MIN_PIECE: u64 = 1 << 20;
/// Anchors in a row that must agree on a new shift before a piece ends there.
pub const RUN: usize = 8;
/// Bytes read at a time.
const READ: u64 = 1 << 20;

/// A file within a layer.
#[derive(Clone, Copy)]
pub struct Span<'a> {
    /// The layer.
    pub data: &'a LayerData,
    /// Offset of the file's first byte in the layer.
    pub offset: u64,
    /// The file's size.
    pub len: u64,
}

/// How far content moved from an old file to a new one, at the anchors both share.
#[derive(Debug, Default)]
pub struct Alignment {
    /// (new position, old position minus new position), by new position.
    shifts: Vec<(u64, i64)>,
}

impl Alignment {
    /// Finds the anchors `old` and `new` share (reading both once, on two threads).
    pub fn find(old: Span<'_>, new: Span<'_>) -> Result<Alignment> {
        let bits = spacing_bits(old.len.max(new.len));
        let (old_anchors, new_anchors) = std::thread::scope(|s| {
            let o = s.spawn(|| anchors(old, bits));
            let n = anchors(new, bits);
            let o = o
                .join()
                .unwrap_or_else(|_| Err(Error::Other("anchor search panicked".into())));
            (o, n)
        });
        let (old_anchors, new_anchors) = (old_anchors?, new_anchors?);
        // A key seen twice in the old file says nothing about where its content went.
        const TWICE: u64 = u64::MAX;
        let mut at: HashMap<u64, u64> = HashMap::with_capacity(old_anchors.len());
        for (key, pos) in old_anchors {
            at.entry(key).and_modify(|p| *p = TWICE).or_insert(pos);
        }
        let shifts = new_anchors
            .into_iter()
            .filter_map(|(key, pos)| {
                let old = *at.get(&key).filter(|&&p| p != TWICE)?;
                Some((pos, old as i64 - pos as i64))
            })
            .collect();
        Ok(Alignment { shifts })
    }

    /// The number of anchors found in both files.
    pub fn len(&self) -> usize {
        self.shifts.len()
    }

    /// Whether the files share no anchor.
    pub fn is_empty(&self) -> bool {
        self.shifts.is_empty()
    }

    /// The shift (old position minus new position) that most anchors in the new file's
    /// `start..start + len` agree on to within `slack` either way (their median), if at
    /// least `min` anchors there were found in the old file.
    pub fn shift(&self, start: u64, len: u64, slack: u64, min: usize) -> Option<i64> {
        let from = self.shifts.partition_point(|&(p, _)| p < start);
        let to = self.shifts.partition_point(|&(p, _)| p < start + len);
        let mut d: Vec<i64> = self.shifts[from..to].iter().map(|&(_, d)| d).collect();
        if d.len() < min.max(1) {
            return None;
        }
        d.sort_unstable();
        // The widest run of shifts no more than 2 x slack apart.
        let (mut best, mut lo) = ((0, 0), 0);
        for hi in 0..d.len() {
            while d[hi] - d[lo] > 2 * slack as i64 {
                lo += 1;
            }
            if hi + 1 - lo > best.1 - best.0 {
                best = (lo, hi + 1);
            }
        }
        if best.1 - best.0 < min.max(1) {
            return None;
        }
        Some(d[(best.0 + best.1) / 2])
    }

    /// How long the piece of the new file that starts at `start` should be, at most `max`:
    /// up to where its content stops coming from the place its first [`MIN_PIECE`] bytes
    /// come from (a run of [`RUN`] anchors whose shifts all differ from that place's by
    /// more than `slack`), so that the piece after it is diffed against a window of its
    /// own. Ends at the last anchor that still agreed. A piece is never cut shorter than
    /// [`MIN_PIECE`], so a file whose content was shuffled in small blocks costs at most
    /// `max / MIN_PIECE` times the difference searches of one cut in whole pieces.
    pub fn piece_len(&self, start: u64, max: u64, slack: u64) -> u64 {
        let head = MIN_PIECE.min(max);
        let Some(first) = self.shift(start, head, slack, 2) else {
            return max;
        };
        let from = self.shifts.partition_point(|&(p, _)| p < start + head);
        let to = self.shifts.partition_point(|&(p, _)| p < start + max);
        let (mut run, mut agreed) = (0, start + head);
        for &(p, d) in &self.shifts[from..to] {
            if d.abs_diff(first) <= slack {
                (run, agreed) = (0, p);
            } else {
                run += 1;
                if run == RUN {
                    return agreed - start;
                }
            }
        }
        max
    }
}

/// log2 of the anchor spacing for a file of `len` bytes.
fn spacing_bits(len: u64) -> u32 {
    let mut bits = MIN_SPACING.trailing_zeros();
    while len >> bits > MAX_ANCHORS {
        bits += 1;
    }
    bits
}

/// The anchors of a file: (key, position after the anchor's bytes), by position. A position
/// is an anchor when the gear hash of the 64 bytes before it has its top `bits` bits clear
/// (one in 2^bits positions of varied bytes), and at least a quarter of the spacing follows
/// the previous anchor (a run of one byte repeated would otherwise anchor everywhere).
fn anchors(file: Span<'_>, bits: u32) -> Result<Vec<(u64, u64)>> {
    let shift = 64 - bits;
    let gap = (1u64 << bits) / 4;
    let mut out = Vec::with_capacity((file.len >> bits) as usize + 16);
    let mut buf = Vec::new();
    let (mut h, mut last, mut done) = (0u64, 0u64, 0u64);
    while done < file.len {
        let n = (file.len - done).min(READ);
        file.data.read_to(file.offset + done, n, &mut buf)?;
        for (i, &b) in buf.iter().enumerate() {
            h = (h << 1).wrapping_add(GEAR[b as usize]);
            let pos = done + i as u64 + 1;
            if h >> shift == 0 && pos >= 64 && pos - last >= gap {
                out.push((h, pos));
                last = pos;
            }
        }
        done += n;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::tests::noise;
    use std::io::Write;

    use super::*;

    fn layer(bytes: &[u8]) -> (tempfile::NamedTempFile, LayerData) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        let d = LayerData::from_file(f.path()).unwrap();
        (f, d)
    }

    #[test]
    fn moved_content_is_found_at_its_shift() {
        const M: usize = 1 << 20;
        let old = noise(1, 8 * M);
        // Two halves swapped, 100 bytes inserted before the second.
        let mut new = old[4 * M..].to_vec();
        new.extend_from_slice(&noise(2, 100));
        new.extend_from_slice(&old[..4 * M]);
        let (_o, od) = layer(&old);
        let (_n, nd) = layer(&[&b"header"[..], &new].concat());
        let a = Alignment::find(
            Span {
                data: &od,
                offset: 0,
                len: old.len() as u64,
            },
            Span {
                data: &nd,
                offset: 6,
                len: new.len() as u64,
            },
        )
        .unwrap();
        assert!(a.len() > 1500, "{} anchors shared", a.len());
        let m = M as u64;
        assert_eq!(a.shift(0, 4 * m, 1 << 16, 8), Some(4 * M as i64));
        assert_eq!(
            a.shift(4 * m + 100, 4 * m, 1 << 16, 8),
            Some(-(4 * M as i64) - 100)
        );
        assert_eq!(a.shift(8 * m + 100, 1 << 20, 1 << 16, 8), None);
        // A piece over the seam ends within a few anchors of it.
        let cut = a.piece_len(2 * m, 4 * m, 1 << 16);
        assert!((2 * m - 4 * 4096..=2 * m).contains(&cut), "{cut}");
        assert_eq!(a.piece_len(4 * m + 100, 2 * m, 1 << 16), 2 * m);
    }

    #[test]
    fn repeated_bytes_anchor_sparsely_and_say_nothing() {
        let zeros = vec![0u8; 4 << 20];
        let (_f, d) = layer(&zeros);
        let span = Span {
            data: &d,
            offset: 0,
            len: zeros.len() as u64,
        };
        let bits = spacing_bits(span.len);
        assert!(anchors(span, bits).unwrap().len() <= (4 << 20) / ((1 << bits) / 4) + 1);
        let a = Alignment::find(span, span).unwrap();
        assert!(a.is_empty(), "{} shared anchors in a run of zeros", a.len());
    }

    #[test]
    fn spacing_keeps_the_anchor_count_bounded() {
        assert_eq!(spacing_bits(1 << 30), 12);
        assert_eq!(spacing_bits(1 << 40), 21);
        assert!((1u64 << 40) >> spacing_bits(1 << 40) <= MAX_ANCHORS);
    }
}
