//! A bsdiff-class binary diff (Colin Percival's algorithm: suffix-array matches extended
//! into approximate matches, with bytewise differences), written for this crate so that its
//! three outputs can go to separate streams of the package: control triples, difference
//! bytes (mostly zeros for recompiled code, whose pointers shift) and new bytes. Those
//! streams compress far better together, across all files of a layer, than one patch per
//! file would.
//!
//! The suffix array comes from the `suffix_array` crate (libdivsufsort underneath).

use suffix_array::SuffixArray;

use crate::error::{Error, Result};

/// The longest match looked up at once (see [`diff`]). Short: a suffix-array search costs
/// up to this many bytes of comparison at each of its ~log2(old) steps, and bsdiff
/// searches at every byte where the current alignment stops matching. A longer match is
/// continued at the same alignment without a search (see [`FAST_RUN`]). 256 bytes against
/// 1 MiB: create 22 % faster on the kernel pair, 17 % on debian, packages 0.01-0.04 %
/// larger.
const MAX_MATCH: usize = 1 << 8;

/// A match at least this long at the current alignment is taken without a search.
const FAST_RUN: usize = 8;

/// The length of the common prefix of `a` and `b`.
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len()).min(MAX_MATCH);
    let mut i = 0;
    while i + 8 <= n {
        let x = u64::from_le_bytes(a[i..i + 8].try_into().unwrap_or_default());
        let y = u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or_default());
        if x != y {
            return i + ((x ^ y).trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < n && a[i] == b[i] {
        i += 1;
    }
    i
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
#[derive(Debug, Default)]
pub struct Streams {
    /// Control triples.
    pub controls: Vec<Control>,
    /// Difference bytes (new - source, wrapping).
    pub diff: Vec<u8>,
    /// New bytes.
    pub extra: Vec<u8>,
}

/// Computes a patch from `old` to `new`, appending to `out`.
pub fn diff(old: &[u8], new: &[u8], out: &mut Streams) {
    if old.is_empty() || new.is_empty() {
        if !new.is_empty() {
            out.controls.push(Control {
                add: 0,
                copy: new.len() as u64,
                seek: 0,
            });
            out.extra.extend_from_slice(new);
        }
        return;
    }
    let mut sa = SuffixArray::new(old);
    sa.enable_buckets();
    // bsdiff takes a new match once it beats the current alignment by 8 bytes. For two
    // builds of the same source (kernel modules) that is right; between distant versions
    // (bookworm -> trixie) it takes many short matches far apart, whose control triples
    // cost more than the bytes they match. A patch dense in controls is therefore made
    // again with a higher bar, and the one that compresses smaller is kept.
    let first = scan(old, new, &sa, 8);
    let chosen = if (first.controls.len() as u64) * DENSE_CONTROLS > new.len() as u64 {
        let second = scan(old, new, &sa, 20);
        if estimate(&second) < estimate(&first) {
            second
        } else {
            first
        }
    } else {
        first
    };
    out.controls.extend_from_slice(&chosen.controls);
    out.diff.extend_from_slice(&chosen.diff);
    out.extra.extend_from_slice(&chosen.extra);
}

/// A patch with a control triple per this many new bytes or fewer is tried with a higher
/// bar for new matches too (see [`diff`]).
const DENSE_CONTROLS: u64 = 512;

/// A stand-in for a patch's size in the package: zstd level 9 of each stream (level 1
/// misjudges: it compresses new bytes far worse than the package's level 19 does).
fn estimate(s: &Streams) -> usize {
    let mut c = Vec::with_capacity(s.controls.len() * 12);
    for k in &s.controls {
        c.extend_from_slice(&(k.add as u32).to_le_bytes());
        c.extend_from_slice(&(k.copy as u32).to_le_bytes());
        c.extend_from_slice(&(k.seek as i32).to_le_bytes());
    }
    [&c[..], &s.diff, &s.extra]
        .iter()
        .map(|b| zstd::bulk::compress(b, 9).map_or(b.len(), |z| z.len()))
        .sum()
}

/// One bsdiff pass over `new` with the suffix array of `old`: a match found elsewhere is
/// taken when it beats the current alignment by more than `bar` bytes.
fn scan(old: &[u8], new: &[u8], sa: &SuffixArray<'_>, bar: isize) -> Streams {
    let mut out = Streams::default();
    // Matches are looked up at most MAX_MATCH bytes at a time: each binary-search step
    // compares up to the match length, so a long identical stretch would otherwise cost
    // its length at every step. A longer match is found again from where the first piece
    // ends, at the same alignment.
    let search = |pat: &[u8]| -> (usize, usize) {
        let r = sa.search_lcp(&pat[..pat.len().min(MAX_MATCH)]);
        (r.start, r.end - r.start)
    };
    let (n, o) = (new.len(), old.len());
    let matches_at = |ni: usize, offset: isize| -> bool {
        let j = ni as isize + offset;
        j >= 0 && (j as usize) < o && old[j as usize] == new[ni]
    };
    let (mut scan, mut len, mut pos) = (0usize, 0usize, 0usize);
    let (mut lastscan, mut lastpos, mut lastoffset) = (0usize, 0usize, 0isize);
    while scan < n {
        let mut oldscore: isize = 0;
        scan += len;
        let mut scsc = scan;
        while scan < n {
            // Where the current alignment goes on matching for FAST_RUN bytes or more
            // (recompiled code between two changed pointers), take that match without a
            // suffix-array search: the search would nearly always confirm it, at far
            // greater cost. On kernel modules this skips a third of the searches, and the
            // patches come out the same size.
            let j = scan as isize + lastoffset;
            let run = if j >= 0 && (j as usize) < o {
                common_prefix(&new[scan..], &old[j as usize..])
            } else {
                0
            };
            let (p, l) = if run >= FAST_RUN {
                (j as usize, run)
            } else {
                search(&new[scan..])
            };
            pos = p;
            len = l;
            while scsc < scan + len {
                if matches_at(scsc, lastoffset) {
                    oldscore += 1;
                }
                scsc += 1;
            }
            if (len as isize == oldscore && len != 0) || len as isize > oldscore + bar {
                break;
            }
            if matches_at(scan, lastoffset) {
                oldscore -= 1;
            }
            scan += 1;
        }
        if len as isize != oldscore || scan == n {
            // Extend the previous match forwards...
            let (mut s, mut sf, mut lenf) = (0isize, 0isize, 0usize);
            let mut i = 0usize;
            while lastscan + i < scan && lastpos + i < o {
                if old[lastpos + i] == new[lastscan + i] {
                    s += 1;
                }
                i += 1;
                if s * 2 - i as isize > sf * 2 - lenf as isize {
                    sf = s;
                    lenf = i;
                }
            }
            // ...and this one backwards.
            let mut lenb = 0usize;
            if scan < n {
                let (mut s, mut sb) = (0isize, 0isize);
                let mut i = 1usize;
                while scan >= lastscan + i && pos >= i {
                    if old[pos - i] == new[scan - i] {
                        s += 1;
                    }
                    if s * 2 - i as isize > sb * 2 - lenb as isize {
                        sb = s;
                        lenb = i;
                    }
                    i += 1;
                }
            }
            // Where the two extensions overlap, split at the best point.
            if lastscan + lenf > scan - lenb {
                let overlap = (lastscan + lenf) - (scan - lenb);
                let (mut s, mut ss, mut lens) = (0isize, 0isize, 0usize);
                for i in 0..overlap {
                    if new[lastscan + lenf - overlap + i] == old[lastpos + lenf - overlap + i] {
                        s += 1;
                    }
                    if new[scan - lenb + i] == old[pos - lenb + i] {
                        s -= 1;
                    }
                    if s > ss {
                        ss = s;
                        lens = i + 1;
                    }
                }
                lenf = lenf + lens - overlap;
                lenb -= lens;
            }
            out.diff.extend(
                new[lastscan..lastscan + lenf]
                    .iter()
                    .zip(&old[lastpos..lastpos + lenf])
                    .map(|(a, b)| a.wrapping_sub(*b)),
            );
            let extra_end = scan - lenb;
            out.extra
                .extend_from_slice(&new[lastscan + lenf..extra_end]);
            out.controls.push(Control {
                add: lenf as u64,
                copy: (extra_end - (lastscan + lenf)) as u64,
                seek: (pos - lenb) as i64 - (lastpos + lenf) as i64,
            });
            lastscan = scan - lenb;
            lastpos = pos - lenb;
            lastoffset = pos as isize - scan as isize;
        }
    }
    out
}

/// Applies a patch to `old`, appending `new_len` bytes to `out`. `diff` and `extra` are
/// advanced past the bytes used. Fails, without panicking, on any inconsistency.
pub fn patch(
    old: &[u8],
    controls: &[Control],
    diff: &mut &[u8],
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
        if add > diff.len() {
            return Err(bad("difference stream ends early"));
        }
        let from = usize::try_from(oldpos).map_err(|_| bad("source position out of range"))?;
        if from.checked_add(add).is_none_or(|e| e > old.len()) {
            return Err(bad("patch reads past the source"));
        }
        out.extend(
            old[from..from + add]
                .iter()
                .zip(&diff[..add])
                .map(|(o, d)| o.wrapping_add(*d)),
        );
        *diff = &diff[add..];
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_dense_patch_keeps_the_cheaper_bar() {
        // A distant version: pieces of the old file, reshuffled, with fresh bytes between
        // them every few dozen bytes, so bsdiff finds many short matches.
        let mut x = 7u32;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        let old: Vec<u8> = (0..200_000).map(|_| (rnd() % 7) as u8 * 37).collect();
        let mut new = Vec::new();
        while new.len() < 200_000 {
            let at = (rnd() as usize) % (old.len() - 64);
            new.extend_from_slice(&old[at..at + 10 + (rnd() as usize) % 40]);
            new.extend((0..(rnd() % 12)).map(|_| rnd() as u8));
        }
        let s = roundtrip(&old, &new);
        let sa = {
            let mut sa = SuffixArray::new(&old);
            sa.enable_buckets();
            sa
        };
        let plain = scan(&old, &new, &sa, 8);
        assert!(plain.controls.len() as u64 * DENSE_CONTROLS > new.len() as u64);
        let higher = scan(&old, &new, &sa, 20);
        assert_eq!(estimate(&s), estimate(&plain).min(estimate(&higher)));
    }

    fn roundtrip(old: &[u8], new: &[u8]) -> Streams {
        let mut s = Streams::default();
        diff(old, new, &mut s);
        let mut out = Vec::new();
        let (mut d, mut e) = (&s.diff[..], &s.extra[..]);
        patch(old, &s.controls, &mut d, &mut e, new.len() as u64, &mut out).unwrap();
        assert_eq!(out, new);
        assert!(d.is_empty() && e.is_empty());
        s
    }

    #[test]
    fn similar_inputs_give_mostly_zero_differences() {
        let old: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut new = old.clone();
        for i in (0..new.len()).step_by(997) {
            new[i] = new[i].wrapping_add(3);
        }
        new.splice(5000..5000, b"inserted text".iter().copied());
        let s = roundtrip(&old, &new);
        assert!(s.extra.len() < 100, "extra {}", s.extra.len());
        let nonzero = s.diff.iter().filter(|&&b| b != 0).count();
        assert!(nonzero < 400, "nonzero {nonzero}");
    }

    #[test]
    fn edge_cases() {
        roundtrip(b"", b"abc");
        roundtrip(b"abc", b"");
        roundtrip(b"abc", b"abc");
        roundtrip(b"a", b"bbbbbbbbbbbbbbbbbbbbbbbbbb");
        roundtrip(b"hello world", b"world hello");
    }

    #[test]
    fn hostile_controls_are_refused() {
        let c = [Control {
            add: 10,
            copy: 0,
            seek: 0,
        }];
        let mut out = Vec::new();
        let (mut d, mut e) = (&[0u8; 10][..], &[][..]);
        assert!(patch(b"abc", &c, &mut d, &mut e, 10, &mut out).is_err());
        let c = [Control {
            add: 0,
            copy: u64::MAX,
            seek: i64::MIN,
        }];
        let (mut d, mut e) = (&[][..], &[][..]);
        assert!(patch(b"abc", &c, &mut d, &mut e, 10, &mut out).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn any_pair_round_trips(old in proptest::collection::vec(0u8..4, 0..2000),
                                new in proptest::collection::vec(0u8..4, 0..2000)) {
            roundtrip(&old, &new);
        }
    }
}
