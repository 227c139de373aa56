//! Making a patch: bsdiff's pass over the new bytes, the covers that do not pay dropped,
//! and the cheap checks that say whether a pass is worth it.

use super::index::{common_prefix, Index, Searches};
use super::{Control, Streams};
use crate::delta::files::schedule::each_on_every_core;
use crate::delta::files::stream::zigzag;
use crate::error::Result;

/// A match at least this long at the current alignment is taken without a search.
pub(super) const FAST_RUN: usize = 8;

/// Computes a patch from `old` to `new`. Fails only if a thread scanning a segment of
/// `new` panicked.
pub fn diff(old: &[u8], new: &[u8]) -> Result<Streams> {
    // Nothing to find (no source, or compressed or unrelated data, where a suffix array
    // and a search at every byte would cost seconds per MiB): the new bytes as they are.
    if old.is_empty() || new.is_empty() || !shares_stretches(old, new) {
        let mut out = Streams::default();
        if !new.is_empty() {
            out.controls.push(Control {
                add: 0,
                copy: new.len() as u64,
                seek: 0,
            });
            out.extra.extend_from_slice(new);
        }
        return Ok(out);
    }
    // What a new byte costs, from a compression of `new` made before the suffix array
    // takes its memory.
    let lit = literal_cost(new);
    let sa = Index::new(old);
    // bsdiff extends a match over stretches where half the bytes agree; for fixed-width
    // instructions whose immediates all moved (arm64), and for text, a stricter extension
    // leaves fewer difference bytes; for x86-64 code the looser one wins (see
    // `extension_for`). The covers that do not pay for themselves are then dropped (see
    // `prune`).
    //
    // bsdiff also takes a new match once it beats the current alignment by 8 bytes. For
    // two builds of the same source (kernel modules) that is right; between distant
    // versions (bookworm -> trixie) it takes many short matches far apart, whose control
    // triples cost more than the bytes they match. A patch dense in controls is therefore
    // made again with a higher bar too.
    let extension = extension_for(new);
    let first = scan_in_segments(old, new, &sa, 8, extension)?;
    // Only a dense patch that left a tenth of the bytes unmatched has a rival (see
    // `DENSE_CONTROLS`), and only then is `estimate` (which compresses every stream) run.
    let dense = (first.controls.len() as u64) * DENSE_CONTROLS > new.len() as u64;
    let second = (dense && first.extra.len() * 10 >= new.len())
        .then(|| scan_in_segments(old, new, &sa, 20, extension))
        .transpose()?;
    // The suffix array (four bytes a source byte, the most a search holds) is freed before
    // the estimates' compressors and `prune`'s patch take theirs: what the chunks' budget
    // counts for a search (`Region::search_memory`) is then its peak.
    drop(sa);
    let best = match second {
        // The first of the smallest.
        Some(second) if estimate(&second) < estimate(&first) => second,
        _ => first,
    };
    Ok(prune(old, new, best, lit))
}

/// The extension for `new`: [`STRICT`] for arm64 code and for text, else [`LOOSE`].
pub(super) fn extension_for(new: &[u8]) -> Extension {
    const EM_AARCH64: u16 = 183;
    let elf_machine = (new.len() >= 20 && new.starts_with(b"\x7fELF"))
        .then(|| u16::from_le_bytes([new[18], new[19]]));
    if elf_machine == Some(EM_AARCH64) || (elf_machine.is_none() && looks_like_text(new)) {
        STRICT
    } else {
        LOOSE
    }
}

/// Bytes of a file's start that say whether it is text (see [`looks_like_text`]).
pub(in crate::delta::files) const TEXT_PROBE: usize = 4096;

/// Whether bytes are text, by their first [`TEXT_PROBE`] bytes: no NUL among them.
pub(in crate::delta::files) fn looks_like_text(head: &[u8]) -> bool {
    !head[..head.len().min(TEXT_PROBE)].contains(&0)
}

/// How many agreeing bytes a match's extension needs: it is extended over the stretch
/// where `agree * weight - len * (weight - 1)` is largest, i.e. where more than
/// `(weight - 1) / weight` of the bytes agree.
pub(super) type Extension = isize;
/// bsdiff's own: half the bytes.
pub(super) const LOOSE: Extension = 2;
/// Two thirds. Used for every file, the arm64 pair's package (Debian's tools across a
/// release) is 6 % smaller than with [`LOOSE`], the node pair's 1 % smaller, and the
/// debian pair's (mostly x86-64 code) 2 % larger.
pub(super) const STRICT: Extension = 3;

/// Bytes a varint of `v` takes.
pub(super) fn varint_len(v: u64) -> usize {
    ((64 - v.leading_zeros()).max(1) as usize).div_ceil(7)
}

/// A patch's covers: (new position, old position, length) of each stretch made as source
/// plus differences.
pub(super) fn covers(s: &Streams) -> Vec<(usize, usize, usize)> {
    let (mut np, mut op) = (0usize, 0i64);
    let mut out = Vec::with_capacity(s.controls.len());
    for c in &s.controls {
        if c.add > 0 {
            out.push((np, op as usize, c.add as usize));
        }
        np += (c.add + c.copy) as usize;
        op += c.add as i64 + c.seek;
    }
    out
}

/// The streams of a patch of `new` made of `covers` (in order, not overlapping).
pub(super) fn from_covers(old: &[u8], new: &[u8], covers: &[(usize, usize, usize)]) -> Streams {
    let mut s = Streams::default();
    let (mut np, mut op) = (0usize, 0usize);
    // A first control that only copies, if the first cover starts later.
    let first_at = covers.first().map_or(new.len(), |c| c.0);
    if first_at > 0 || covers.first().is_none_or(|c| c.1 != 0) {
        s.extra.extend_from_slice(&new[..first_at]);
        s.controls.push(Control {
            add: 0,
            copy: first_at as u64,
            seek: covers.first().map_or(0, |c| c.1 as i64),
        });
        np = first_at;
        op = covers.first().map_or(0, |c| c.1);
    }
    for (k, &(n, o, len)) in covers.iter().enumerate() {
        debug_assert_eq!(n, np);
        debug_assert_eq!(o, op);
        s.diff.extend(
            new[n..n + len]
                .iter()
                .zip(&old[o..o + len])
                .map(|(a, b)| a.wrapping_sub(*b)),
        );
        let next = covers.get(k + 1).copied();
        let gap_end = next.map_or(new.len(), |c| c.0);
        s.extra.extend_from_slice(&new[n + len..gap_end]);
        let next_old = next.map_or(o + len, |c| c.1);
        s.controls.push(Control {
            add: len as u64,
            copy: (gap_end - (n + len)) as u64,
            seek: next_old as i64 - (o + len) as i64,
        });
        np = gap_end;
        op = next_old;
    }
    s
}

/// What a new byte costs in the package, about: the ratio zstd's level 3 achieves on all of
/// `new` (the package compresses new bytes much harder, but also bytes of every kind that
/// cheap compression leaves alone).
pub(super) fn literal_cost(new: &[u8]) -> f64 {
    let packed = zstd::bulk::compress(new, 3).map_or(new.len(), |z| z.len());
    (packed as f64 / new.len().max(1) as f64).clamp(0.05, 1.0)
}

/// A cover is kept when it saves at least this many bytes (see [`prune`]).
pub(super) const MIN_SAVING: f64 = 2.0;
/// What a difference byte that is not zero costs, and a control triple's varint byte, in
/// bytes after compression (about: they compress in lanes of their own).
pub(super) const DIFFERENCE_COST: f64 = 0.5;
pub(super) const CONTROL_COST: f64 = 0.7;

/// Drops the covers of a patch (the stretches made as source plus differences) that cost
/// more than the bytes they make would as new bytes: short matches of common phrases in
/// text, far from the stretches around them, whose control triples, and the new bytes
/// they cut in pieces, cost more than they save. A cover's saving is its length at
/// `lit`, the cost of a new byte (see [`literal_cost`]), less its differences that are not
/// zero and its control triple (its varints, the seek from the last cover kept); it is kept
/// if that is at least [`MIN_SAVING`]. Measured on the changed files of the node pair
/// (1 719 JavaScript files and their old versions): 1.34 -> 1.23 MB.
pub(super) fn prune(old: &[u8], new: &[u8], s: Streams, lit: f64) -> Streams {
    let all = covers(&s);
    let mut kept: Vec<(usize, usize, usize)> = Vec::with_capacity(all.len());
    let (mut last_old, mut last_new) = (0usize, 0usize);
    for &(n, o, len) in &all {
        let differences = new[n..n + len]
            .iter()
            .zip(&old[o..o + len])
            .filter(|(a, b)| a != b)
            .count();
        let seek = o as i64 - last_old as i64;
        let varints =
            varint_len(len as u64) + varint_len((n - last_new) as u64) + varint_len(zigzag(seek));
        let saving =
            len as f64 * lit - differences as f64 * DIFFERENCE_COST - varints as f64 * CONTROL_COST;
        if saving >= MIN_SAVING {
            kept.push((n, o, len));
            (last_old, last_new) = (o + len, n + len);
        }
    }
    if kept.len() == all.len() {
        return s;
    }
    // The patch is made again from what was kept, the old one freed first.
    drop((s, all));
    from_covers(old, new, &kept)
}

/// Inputs shorter than this are always diffed (the estimate below needs anchors).
pub(super) const MIN_ESTIMATED: usize = 64 << 10;

/// A new input shares too little with its source to diff when fewer than one in this many
/// of its anchors occurs in the source.
pub(super) const MIN_SHARED: usize = 32;

/// A content-defined sample of 13-byte windows: a gear hash with a 5-bit shift covers the
/// last 13 bytes in its 64 bits (short, so that tables whose entries all changed a little,
/// like symbol tables, still count as shared); a window is an anchor when the hash's top byte is zero
/// (one position in 256), and the hash itself names the window.
pub(super) fn anchors(data: &[u8], mut f: impl FnMut(u64)) {
    let mut h = 0u64;
    for &b in data {
        h = (h << 5).wrapping_add(GEAR[b as usize]);
        if h >> 56 == 0 {
            f(h);
        }
    }
}

/// 256 fixed pseudo-random words (splitmix64) for [`anchors`] (and the big-file anchors of
/// [`crate::delta::files::align`]).
pub(in crate::delta::files) const GEAR: [u64; 256] = {
    let mut t = [0u64; 256];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut i = 0;
    while i < 256 {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        t[i] = z ^ (z >> 31);
        i += 1;
    }
    t
};

/// Whether `new` has enough exact 13-byte stretches in common with `old` for a bsdiff pass
/// to pay: estimated from content-defined anchors in one cheap pass over each. Two builds
/// of the same code share most anchors (a pointer change every few dozen bytes still leaves
/// identical windows); compressed or unrelated bytes share next to none.
pub fn shares_stretches(old: &[u8], new: &[u8]) -> bool {
    if new.len() < MIN_ESTIMATED {
        return true;
    }
    let mut seen = std::collections::HashSet::with_capacity(old.len() / 128);
    anchors(old, |h| {
        seen.insert(h);
    });
    let (mut total, mut shared) = (0usize, 0usize);
    anchors(new, |h| {
        total += 1;
        shared += usize::from(seen.contains(&h));
    });
    shared * MIN_SHARED >= total
}

/// A patch with a control triple per this many new bytes or fewer is tried with a higher
/// bar for new matches too (see [`diff`]), if at least a tenth of its bytes found no match.
/// Measured on the five benchmark pairs: below one control per 256 bytes the higher bar won
/// 82 times in 2247 tries, for 15 KB in all, while the second pass cost 3.5 s of the kernel
/// pair's create. Among dense patches, the higher bar wins between distant versions (the
/// tools pair, bookworm -> trixie: 5.5 % of its package) and not between builds of nearly
/// the same source, where bsdiff's first pass matches nearly everything (debian: one
/// 6.8 MB program with 7 % unmatched, second pass 4.6 % larger, 1.3 s of a 6.5 s create;
/// kernel: 161 modules with 3-11 % unmatched, none smaller). Of the tools pair's dense
/// patches those with under a tenth unmatched hold 14 % of the higher bar's estimated gain.
pub(super) const DENSE_CONTROLS: u64 = 256;

/// A stand-in for a patch's size in the package: zstd level 9 of each stream (level 1
/// misjudges: it compresses new bytes far worse than the package's level 19 does).
pub(super) fn estimate(s: &Streams) -> usize {
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

/// New bytes a pass scans as one segment: a longer input is cut into segments about this
/// long (at least two), each scanned on its own from where it starts, side by side on the
/// threads parallel work uses (see [`crate::threads`]).
///
/// A big file is diffed piece by piece against a window of up to 16 MiB of its source (see
/// `align.rs`), and such a search takes most of the chunks' memory budget
/// ([`CHUNK_MEMORY`](crate::delta::files::CHUNK_MEMORY)): two never run at once, and the
/// scan of one piece (a byte-by-byte search between distant versions of a program, about
/// 1 MB/s) held create on one core for seconds at a time: 15 s of the ml pair's create with
/// the other core idle. The segments share the source's suffix array, so scanning them side
/// by side takes no more memory than one scan. Where the segments start depends only on the
/// input, never on the number of threads, so the package is the same on any machine; a
/// segment starts without the alignment the scan had before it, which costs a control
/// triple or two per segment.
pub(super) const SEGMENT: usize = 4 << 20;

/// [`scan`] over `new` cut into segments of about [`SEGMENT`] bytes (not cut if shorter
/// than two segments), the segments scanned on up to [`crate::threads::threads`] threads
/// and their patches joined ([`join`]).
pub(super) fn scan_in_segments(
    old: &[u8],
    new: &[u8],
    sa: &Index<'_>,
    bar: isize,
    w: Extension,
) -> Result<Streams> {
    segmented(old, new, sa, (bar, w), SEGMENT, crate::threads::threads())
}

/// [`scan_in_segments`] with segments of about `size` bytes, on up to `threads` threads.
pub(super) fn segmented(
    old: &[u8],
    new: &[u8],
    sa: &Index<'_>,
    (bar, w): (isize, Extension),
    size: usize,
    threads: usize,
) -> Result<Streams> {
    let count = new.len() / size.max(1);
    if count < 2 {
        return Ok(scan(old, new, sa, bar, w));
    }
    let segment = |k: usize| {
        let (from, to) = (k * new.len() / count, (k + 1) * new.len() / count);
        scan(old, &new[from..to], sa, bar, w)
    };
    // Each thread takes the next segment not yet taken.
    let parts = each_on_every_core(threads, count, segment)?;
    Ok(join(parts))
}

/// The patch of consecutive pieces of a new input, from the patches of each: a patch reads
/// its source from position 0, so the last control of each piece's patch seeks back to 0
/// from wherever that patch leaves the source position.
pub(super) fn join(parts: Vec<Streams>) -> Streams {
    // Room for all the parts at once: growing by doubling would leave up to as much again
    // unused.
    let rest = |f: fn(&Streams) -> usize| parts.iter().skip(1).map(f).sum::<usize>();
    let more = (
        rest(|p| p.controls.len()),
        rest(|p| p.diff.len()),
        rest(|p| p.extra.len()),
    );
    let mut parts = parts.into_iter();
    let Some(mut out) = parts.next() else {
        return Streams::default();
    };
    out.controls.reserve_exact(more.0);
    out.diff.reserve_exact(more.1);
    out.extra.reserve_exact(more.2);
    for mut part in parts {
        let at: i64 = out.controls.iter().map(|c| c.add as i64 + c.seek).sum();
        if let Some(last) = out.controls.last_mut() {
            last.seek -= at;
        }
        out.controls.append(&mut part.controls);
        out.diff.extend_from_slice(&part.diff);
        out.extra.extend_from_slice(&part.extra);
    }
    out
}

/// One bsdiff pass over `new` with the suffix array of `old`: a match found elsewhere is
/// taken when it beats the current alignment by more than `bar` bytes, and extended as
/// far as `w` says (see [`Extension`]).
pub(super) fn scan(old: &[u8], new: &[u8], sa: &Index<'_>, bar: isize, w: Extension) -> Streams {
    let mut out = Streams::default();
    // Matches are looked up at most MAX_MATCH bytes at a time: a long identical stretch
    // would otherwise be compared in full by the search at each byte before it. A longer
    // match is found again from where the first piece ends, at the same alignment.
    let mut searches = Searches::new(sa, new);
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
                // No match elsewhere as long as GRAM bytes: the alignment's own, if any.
                searches
                    .at(scan)
                    .unwrap_or(if run > 0 { (j as usize, run) } else { (0, 0) })
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
                if s * w - (w - 1) * i as isize > sf * w - (w - 1) * lenf as isize {
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
                    if s * w - (w - 1) * i as isize > sb * w - (w - 1) * lenb as isize {
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
