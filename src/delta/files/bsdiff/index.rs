//! The suffix array of a patch's source, and the longest-match searches in it.

use suffix_array::SuffixArray;

use super::grams::Grams;

/// The longest match looked up at once (see [`super::diff`]). Short: a suffix-array search can
/// compare up to this many bytes with each suffix it visits, and bsdiff searches at every
/// byte where the current alignment stops matching. A longer match is
/// continued at the same alignment without a search (see `scan::FAST_RUN`). 256 bytes against
/// 1 MiB: create 22 % faster on the kernel pair, 17 % on debian, packages 0.01-0.04 %
/// larger.
pub(super) const MAX_MATCH: usize = 1 << 8;

/// The length of the common prefix of `a` and `b`.
pub(super) fn common_prefix(a: &[u8], b: &[u8]) -> usize {
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

/// The suffix array of `old` (entry 0 the empty suffix, then the suffixes' positions in
/// sorted order), built by libsais (Ilya Grebnov's induced sorting) on this thread. It is the
/// array libdivsufsort builds (the `suffix_array` crate's, which this codec used before),
/// in half the time: node's `typescript.js` (9.0 MB) 407 -> 209 ms, `tsc.js` (5.8 MB) 227
/// -> 127 ms, 20 MB of a kernel layer 652 -> 423 ms, the same arrays. Sorting was a fifth
/// to a quarter of create's CPU.
pub(super) fn sort_suffixes(old: &[u8]) -> Vec<u32> {
    let mut sa = vec![0u32; old.len() + 1];
    sa[0] = old.len() as u32;
    let n = match i32::try_from(old.len()) {
        Ok(0) => return sa,
        Ok(n) => n,
        // libsais' 32-bit API takes up to 2 GiB; the codec's sources are far smaller.
        Err(_) => return SuffixArray::new(old).into_parts().1,
    };
    // SAFETY: libsais reads the `n` bytes of `old` and writes `n` suffix positions (32-bit
    // signed integers, which `u32` is laid out as, all in 0..n) to `sa[1..]`, which holds
    // `n`; there is no extra space at its end (fs = 0) and no frequency table (NULL).
    let rc = unsafe {
        libsais_sys::libsais::libsais(
            old.as_ptr(),
            sa[1..].as_mut_ptr().cast::<i32>(),
            n,
            0,
            std::ptr::null_mut(),
        )
    };
    if rc != 0 {
        // Only when libsais cannot allocate its own few KiB of state.
        tracing::warn!(
            code = rc,
            len = old.len(),
            "libsais failed; sorting with libdivsufsort"
        );
        return SuffixArray::new(old).into_parts().1;
    }
    sa
}

/// The suffix array of a source, with the range of suffixes for each first two bytes.
pub(super) struct Index<'a> {
    pub(super) old: &'a [u8],
    /// Suffix start positions in sorted order; entry 0 is the empty suffix.
    pub(super) sa: Vec<u32>,
    /// `ranges[k]`: the suffixes whose first two bytes are `k` (big-endian), as a range of
    /// `sa`; none for a source shorter than [`TABLE_MIN`] (found by binary search).
    pub(super) ranges: Option<Vec<(u32, u32)>>,
    /// A position of each byte value in `old`, if it occurs.
    pub(super) first: [Option<u32>; 256],
    /// Which 8-byte strings `old` holds; none for a source shorter than [`GRAMS_MIN`].
    pub(super) grams: Option<Grams>,
}

/// Sources shorter than this are searched without asking a [`Grams`] filter first.
pub(super) const GRAMS_MIN: usize = 64 << 10;

/// Sources shorter than this find the suffixes that start with two given bytes by binary
/// search instead of a table of all 65 536 two-byte prefixes: the table is 768 KiB to fill,
/// far more than sorting and searching a tar header or a small file costs, and a layer of
/// small files has them by the hundred thousand (`bench/manyfiles.sh`, 400 000 files:
/// create 96 -> 80 s, the same package).
pub(super) const TABLE_MIN: usize = 16 << 10;

impl<'a> Index<'a> {
    /// Sorts the suffixes of `old` (at most 4 GiB: the codec's windows are far smaller).
    pub(super) fn new(old: &'a [u8]) -> Index<'a> {
        Index::build(old, old.len() >= TABLE_MIN)
    }

    pub(super) fn build(old: &'a [u8], table: bool) -> Index<'a> {
        let sa = sort_suffixes(old);
        let mut first = [None; 256];
        for (i, &b) in old.iter().enumerate().rev() {
            first[b as usize] = Some(i as u32);
        }
        let ranges = table.then(|| Index::table(old));
        let grams = (old.len() >= GRAMS_MIN).then(|| Grams::new(old));
        Index {
            old,
            sa,
            ranges,
            first,
            grams,
        }
    }

    /// For each two-byte prefix, the range of the suffix array starting with it.
    pub(super) fn table(old: &[u8]) -> Vec<(u32, u32)> {
        let mut count = vec![0u32; 1 << 16];
        for w in old.windows(2) {
            count[(w[0] as usize) << 8 | w[1] as usize] += 1;
        }
        // After the empty suffix: for each first byte, the one-byte suffix (the last byte
        // of `old`) sorts before every two-byte prefix starting with it.
        let mut ranges = Vec::with_capacity(1 << 16);
        let mut at = 1u32;
        for c0 in 0..256usize {
            if old.last() == Some(&(c0 as u8)) {
                at += 1;
            }
            for c1 in 0..256usize {
                let n = count[c0 << 8 | c1];
                ranges.push((at, at + n));
                at += n;
            }
        }
        ranges
    }

    /// The range of the suffix array whose suffixes start with the two bytes `k`
    /// (big-endian).
    pub(super) fn range(&self, k: usize) -> (usize, usize) {
        if let Some(r) = &self.ranges {
            return (r[k].0 as usize, r[k].1 as usize);
        }
        // Suffixes in sorted order rank as: the empty one, then for each first byte b the
        // one-byte suffix `b` (2 * (b << 8)) before every two-byte prefix (b, c)
        // (2 * (b << 8 | c) + 1).
        let old = self.old;
        let rank = |&p: &u32| -> i64 {
            match &old[p as usize..] {
                [] => -1,
                [b] => 2 * ((*b as i64) << 8),
                [b, c, ..] => 2 * ((*b as i64) << 8 | *c as i64) + 1,
            }
        };
        let want = 2 * k as i64 + 1;
        let lo = self.sa.partition_point(|p| rank(p) < want);
        let hi = lo + self.sa[lo..].partition_point(|p| rank(p) == want);
        (lo, hi)
    }

    /// A position of `old` where the longest prefix of `pat` occurs, and that prefix's
    /// length: one search of [`Index::longest_each`].
    #[cfg(test)]
    pub(super) fn longest(&self, pat: &[u8]) -> (usize, usize) {
        let mut found = [(0, 0)];
        self.longest_each(&[pat], &mut found);
        found[0]
    }

    /// The longest match of each of `pats` (as `longest` finds one), into `found`: up to
    /// [`SIDE_BY_SIDE`] searches at a time, stepped in turn.
    ///
    /// Each search is a binary search that remembers how much of its pattern its two bounds
    /// share: every suffix between them shares at least the smaller of the two, so each step
    /// compares only from there (instead of from the first byte, as a plain search does at
    /// each of its ~log2(n) steps). A step reads an entry of the suffix array and then the
    /// source where it points, both far from the last step's in a large source: two cache
    /// misses, where two thirds of `scan::scan`'s time went (ml pair, `perf annotate`). Side by
    /// side, each search asks for what its next steps read as soon as it knows where (see
    /// [`Index::ahead`]) and the other searches' steps come before it reads it: their
    /// misses overlap. ml pair: create 137 -> 123 s of CPU, the same package.
    pub(super) fn longest_each(&self, pats: &[&[u8]], found: &mut [(usize, usize)]) {
        let (old, sa) = (self.old, &self.sa);
        for (pats, found) in pats
            .chunks(SIDE_BY_SIDE)
            .zip(found.chunks_mut(SIDE_BY_SIDE))
        {
            let mut all = [Probe::default(); SIDE_BY_SIDE];
            let probes = &mut all[..pats.len()];
            for (p, pat) in probes.iter_mut().zip(pats) {
                *p = self.start(pat);
                if p.found.is_none() {
                    prefetch(&sa[p.l]);
                    prefetch(&sa[p.r]);
                    prefetch(&sa[p.mid()]);
                }
            }
            for p in probes.iter().filter(|p| p.found.is_none()) {
                prefetch_at(old, sa[p.l] as usize + 2);
                prefetch_at(old, sa[p.r] as usize + 2);
            }
            // Each search asks for the source bytes of its next step, and for the
            // suffix-array entries of both steps that may follow, as soon as it knows
            // which: the other searches' work comes between each ask and the read.
            for (p, pat) in probes.iter_mut().zip(pats) {
                if p.found.is_none() {
                    self.bound(pat, p);
                    self.ahead(p);
                }
            }
            while probes.iter().any(|p| p.found.is_none()) {
                for (p, pat) in probes.iter_mut().zip(pats) {
                    if p.found.is_none() {
                        self.step(pat, p);
                        self.ahead(p);
                    }
                }
            }
            for (f, p) in found.iter_mut().zip(probes.iter()) {
                *f = p.found.unwrap_or_default();
            }
        }
    }

    /// A search for `pat`, over already if no suffix starts with its first two bytes, else
    /// with the bounds of that range (their shared lengths still to be measured, by
    /// [`Index::bound`]).
    pub(super) fn start(&self, pat: &[u8]) -> Probe {
        let one_byte = || match pat.first().and_then(|&b| self.first[b as usize]) {
            Some(p) => (p as usize, 1),
            None => (0, 0),
        };
        let over = |found| Probe {
            found: Some(found),
            ..Probe::default()
        };
        if pat.len() < 2 {
            return over(one_byte());
        }
        let (lo, hi) = self.range((pat[0] as usize) << 8 | pat[1] as usize);
        if lo == hi {
            // No suffix starts with these two bytes; one starting with the first will do.
            return over(one_byte());
        }
        Probe {
            l: lo,
            r: hi - 1,
            ..Probe::default()
        }
    }

    /// How much of `pat`, from byte `from` on, the suffix at `sa[i]` shares, plus `from`.
    pub(super) fn shared(&self, pat: &[u8], i: usize, from: usize) -> usize {
        from + common_prefix(&pat[from..], &self.old[self.sa[i] as usize + from..])
    }

    /// Measures how much of `pat` the bounds of a started search share.
    pub(super) fn bound(&self, pat: &[u8], p: &mut Probe) {
        p.ll = self.shared(pat, p.l, 2);
        p.rl = self.shared(pat, p.r, 2);
        self.settle(pat, p);
    }

    /// Prefetches what the next steps of a search under way read: the source at its next
    /// entry (read a step ago, or asked for then) and the entries of the step after,
    /// whichever way the next one goes.
    pub(super) fn ahead(&self, p: &Probe) {
        if p.found.is_some() {
            return;
        }
        let m = p.mid();
        prefetch_at(self.old, self.sa[m] as usize + p.ll.min(p.rl));
        prefetch(&self.sa[p.l + (m - p.l) / 2]);
        prefetch(&self.sa[m + (p.r - m) / 2]);
    }

    /// One step of a search: halves its range.
    pub(super) fn step(&self, pat: &[u8], p: &mut Probe) {
        let m = p.mid();
        let at = self.sa[m] as usize;
        let n = self.shared(pat, m, p.ll.min(p.rl));
        if n == pat.len() {
            p.found = Some((at, n));
            return;
        }
        // The suffix sorts before `pat` if it ends first or differs with a smaller byte.
        if at + n == self.old.len() || self.old[at + n] < pat[n] {
            (p.l, p.ll) = (m, n);
        } else {
            (p.r, p.rl) = (m, n);
        }
        self.settle(pat, p);
    }

    /// Ends a search whose bounds are neighbours or one of which holds all of `pat`: the
    /// bound that shares more (the lower one if they share as much).
    pub(super) fn settle(&self, pat: &[u8], p: &mut Probe) {
        if p.r - p.l > 1 && p.ll < pat.len() && p.rl < pat.len() {
            return;
        }
        p.found = Some(if p.ll >= p.rl {
            (self.sa[p.l] as usize, p.ll)
        } else {
            (self.sa[p.r] as usize, p.rl)
        });
    }
}

/// Searches [`Index::longest_each`] steps side by side. A scan through new bytes that
/// match nothing well searches at every byte, for about 17 bytes in a row on average (ml
/// pair: 94 % of its 130 million searches follow one at the byte before); 16 at a time
/// were no faster than 8.
pub(super) const SIDE_BY_SIDE: usize = 8;

/// Sources shorter than this are searched one position at a time: their suffix array
/// (four bytes a byte) and bytes stay in the cache, and searches made ahead for positions
/// the scan then skips would be work for nothing.
pub(super) const SIDE_BY_SIDE_MIN: usize = 4 << 20;

/// A search of [`Index::longest_each`] under way: the bounds of its binary search in the
/// suffix array and how much of the pattern the suffix at each shares, or the match.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Probe {
    pub(super) l: usize,
    pub(super) r: usize,
    pub(super) ll: usize,
    pub(super) rl: usize,
    pub(super) found: Option<(usize, usize)>,
}

impl Probe {
    /// The entry the next step reads.
    pub(super) fn mid(&self) -> usize {
        self.l + (self.r - self.l) / 2
    }
}

/// Asks the CPU to start loading the cache line of `x` (on x86-64; elsewhere nothing), so
/// that it is there when read a little later.
#[inline(always)]
pub(super) fn prefetch<T>(x: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint that reads nothing the program sees (and cannot fault);
    // `x` is a valid reference anyway. (Newer compilers call the intrinsic safe.)
    #[allow(unused_unsafe)]
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
            (x as *const T).cast::<i8>(),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = x;
}

/// [`prefetch`] of `bytes[i]`, if there is one.
#[inline(always)]
pub(super) fn prefetch_at(bytes: &[u8], i: usize) {
    if let Some(b) = bytes.get(i) {
        prefetch(b);
    }
}

/// The searches of one `scan::scan`: where it searches byte after byte, those of the next
/// [`SIDE_BY_SIDE`] positions whose first [`GRAM`](super::grams::GRAM) bytes the source may
/// hold are made together, side by side, and kept until asked for.
pub(super) struct Searches<'s> {
    pub(super) index: &'s Index<'s>,
    pub(super) new: &'s [u8],
    /// `found[i]`: the match of position `at[i]`, for `i` below `ready`.
    pub(super) found: [(usize, usize); SIDE_BY_SIDE],
    /// The positions searched last, in order.
    pub(super) at: [usize; SIDE_BY_SIDE],
    pub(super) ready: usize,
    /// The position asked for last.
    pub(super) last: Option<usize>,
    /// How many positions are searched at once from one that follows the last:
    /// [`SIDE_BY_SIDE`], or 1 in a source under [`SIDE_BY_SIDE_MIN`].
    pub(super) together: usize,
}

/// How far past a position [`Searches`] looks for the positions searched with it (those
/// the filter lets through): a scan that searches byte after byte does so about 17 times
/// in a row.
pub(super) const LOOK_AHEAD: usize = 3 * SIDE_BY_SIDE;

impl<'s> Searches<'s> {
    pub(super) fn new(index: &'s Index<'s>, new: &'s [u8]) -> Searches<'s> {
        Searches {
            index,
            new,
            found: [(0, 0); SIDE_BY_SIDE],
            at: [0; SIDE_BY_SIDE],
            ready: 0,
            last: None,
            together: if index.old.len() >= SIDE_BY_SIDE_MIN {
                SIDE_BY_SIDE
            } else {
                1
            },
        }
    }

    /// The pattern searched for at `at`: up to [`MAX_MATCH`] bytes of `new` from there.
    fn pattern(&self, at: usize) -> &'s [u8] {
        let from = at.min(self.new.len());
        &self.new[from..(from + MAX_MATCH).min(self.new.len())]
    }

    /// Whether the source may hold the [`GRAM`](super::grams::GRAM) bytes at `at` (always,
    /// if it has no filter).
    fn may_match(&self, at: usize) -> bool {
        self.index
            .grams
            .as_ref()
            .is_none_or(|g| g.may_hold(self.pattern(at)))
    }

    /// The longest match of `new[at..]`, up to [`MAX_MATCH`] bytes of it (`at` within
    /// `new`): a position of the source and the length; or none where the source's filter
    /// says that no match is [`GRAM`](super::grams::GRAM) bytes long, without a search. (A
    /// scan takes a match that short only where it continues its own alignment, which it
    /// measures itself.)
    pub(super) fn at(&mut self, at: usize) -> Option<(usize, usize)> {
        let follows = self.last.map(|l| l + 1) == Some(at);
        self.last = Some(at);
        if let Some(i) = self.at[..self.ready].iter().position(|&a| a == at) {
            return Some(self.found[i]);
        }
        if !self.may_match(at) {
            return None;
        }
        let mut pats: [&[u8]; SIDE_BY_SIDE] = [&[]; SIDE_BY_SIDE];
        pats[0] = self.pattern(at);
        self.at[0] = at;
        let mut count = 1;
        if follows && self.together > 1 {
            let end = self.new.len().min(at + LOOK_AHEAD);
            if let Some(g) = &self.index.grams {
                for q in at + 1..end {
                    g.ahead(self.pattern(q));
                }
            }
            for q in at + 1..end {
                if count == self.together {
                    break;
                }
                if self.may_match(q) {
                    pats[count] = self.pattern(q);
                    self.at[count] = q;
                    count += 1;
                }
            }
        }
        self.index
            .longest_each(&pats[..count], &mut self.found[..count]);
        self.ready = count;
        Some(self.found[0])
    }
}
