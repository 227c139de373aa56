//! A bsdiff-class binary diff (Colin Percival's algorithm: suffix-array matches extended
//! into approximate matches, with bytewise differences), written for this crate so that its
//! three outputs can go to separate streams of the package: control triples, difference
//! bytes (mostly zeros for recompiled code, whose pointers shift) and new bytes. Those
//! streams compress far better together, across all files of a layer, than one patch per
//! file would.
//!
//! The suffix array comes from libsais (the `libsais-sys` crate; see [`sort_suffixes`]);
//! the searches in it are this module's (see `Index`).

use suffix_array::SuffixArray;

use crate::error::{Error, Result};

/// The longest match looked up at once (see [`diff`]). Short: a suffix-array search can
/// compare up to this many bytes with each suffix it visits, and bsdiff searches at every
/// byte where the current alignment stops matching. A longer match is
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

/// The suffix array of `old` (entry 0 the empty suffix, then the suffixes' positions in
/// sorted order), built by libsais (Ilya Grebnov's induced sorting) on this thread. It is the
/// array libdivsufsort builds (the `suffix_array` crate's, which this codec used before),
/// in half the time: node's `typescript.js` (9.0 MB) 407 -> 209 ms, `tsc.js` (5.8 MB) 227
/// -> 127 ms, 20 MB of a kernel layer 652 -> 423 ms, the same arrays. Sorting was a fifth
/// to a quarter of create's CPU.
fn sort_suffixes(old: &[u8]) -> Vec<u32> {
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
struct Index<'a> {
    old: &'a [u8],
    /// Suffix start positions in sorted order; entry 0 is the empty suffix.
    sa: Vec<u32>,
    /// `ranges[k]`: the suffixes whose first two bytes are `k` (big-endian), as a range of
    /// `sa`; none for a source shorter than [`TABLE_MIN`] (found by binary search).
    ranges: Option<Vec<(u32, u32)>>,
    /// A position of each byte value in `old`, if it occurs.
    first: [Option<u32>; 256],
}

/// Sources shorter than this find the suffixes that start with two given bytes by binary
/// search instead of a table of all 65 536 two-byte prefixes: the table is 768 KiB to fill,
/// far more than sorting and searching a tar header or a small file costs, and a layer of
/// small files has them by the hundred thousand (`bench/manyfiles.sh`, 400 000 files:
/// create 96 -> 80 s, the same package).
const TABLE_MIN: usize = 16 << 10;

impl<'a> Index<'a> {
    /// Sorts the suffixes of `old` (at most 4 GiB: the codec's windows are far smaller).
    fn new(old: &'a [u8]) -> Index<'a> {
        Index::build(old, old.len() >= TABLE_MIN)
    }

    fn build(old: &'a [u8], table: bool) -> Index<'a> {
        let sa = sort_suffixes(old);
        let mut first = [None; 256];
        for (i, &b) in old.iter().enumerate().rev() {
            first[b as usize] = Some(i as u32);
        }
        let ranges = table.then(|| Index::table(old));
        Index {
            old,
            sa,
            ranges,
            first,
        }
    }

    /// For each two-byte prefix, the range of the suffix array starting with it.
    fn table(old: &[u8]) -> Vec<(u32, u32)> {
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
    fn range(&self, k: usize) -> (usize, usize) {
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
    fn longest(&self, pat: &[u8]) -> (usize, usize) {
        let mut found = [(0, 0)];
        self.longest_each(&[pat], &mut found);
        found[0]
    }

    /// [`Index::longest`] of each of `pats`, into `found`: up to [`SIDE_BY_SIDE`] searches
    /// at a time, stepped in turn.
    ///
    /// Each search is a binary search that remembers how much of its pattern its two bounds
    /// share: every suffix between them shares at least the smaller of the two, so each step
    /// compares only from there (instead of from the first byte, as a plain search does at
    /// each of its ~log2(n) steps). A step reads an entry of the suffix array and then the
    /// source where it points, both far from the last step's in a large source: two cache
    /// misses, where two thirds of [`scan`]'s time went (ml pair, `perf annotate`). Side by
    /// side, each search asks for what its next steps read as soon as it knows where (see
    /// [`Index::ahead`]) and the other searches' steps come before it reads it: their
    /// misses overlap. ml pair: create 137 -> 123 s of CPU, the same package.
    fn longest_each(&self, pats: &[&[u8]], found: &mut [(usize, usize)]) {
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
    fn start(&self, pat: &[u8]) -> Probe {
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
    fn shared(&self, pat: &[u8], i: usize, from: usize) -> usize {
        from + common_prefix(&pat[from..], &self.old[self.sa[i] as usize + from..])
    }

    /// Measures how much of `pat` the bounds of a started search share.
    fn bound(&self, pat: &[u8], p: &mut Probe) {
        p.ll = self.shared(pat, p.l, 2);
        p.rl = self.shared(pat, p.r, 2);
        self.settle(pat, p);
    }

    /// Prefetches what the next steps of a search under way read: the source at its next
    /// entry (read a step ago, or asked for then) and the entries of the step after,
    /// whichever way the next one goes.
    fn ahead(&self, p: &Probe) {
        if p.found.is_some() {
            return;
        }
        let m = p.mid();
        prefetch_at(self.old, self.sa[m] as usize + p.ll.min(p.rl));
        prefetch(&self.sa[p.l + (m - p.l) / 2]);
        prefetch(&self.sa[m + (p.r - m) / 2]);
    }

    /// One step of a search: halves its range.
    fn step(&self, pat: &[u8], p: &mut Probe) {
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
    fn settle(&self, pat: &[u8], p: &mut Probe) {
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
const SIDE_BY_SIDE: usize = 8;

/// Sources shorter than this are searched one position at a time: their suffix array
/// (four bytes a byte) and bytes stay in the cache, and searches made ahead for positions
/// the scan then skips would be work for nothing.
const SIDE_BY_SIDE_MIN: usize = 4 << 20;

/// A search of [`Index::longest_each`] under way: the bounds of its binary search in the
/// suffix array and how much of the pattern the suffix at each shares, or the match.
#[derive(Debug, Clone, Copy, Default)]
struct Probe {
    l: usize,
    r: usize,
    ll: usize,
    rl: usize,
    found: Option<(usize, usize)>,
}

impl Probe {
    /// The entry the next step reads.
    fn mid(&self) -> usize {
        self.l + (self.r - self.l) / 2
    }
}

/// Asks the CPU to start loading the cache line of `x` (on x86-64; elsewhere nothing), so
/// that it is there when read a little later.
#[inline(always)]
fn prefetch<T>(x: &T) {
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
fn prefetch_at(bytes: &[u8], i: usize) {
    if let Some(b) = bytes.get(i) {
        prefetch(b);
    }
}

/// The searches of one [`scan`]: where it searches byte after byte, those of the next
/// [`SIDE_BY_SIDE`] positions are made together, side by side, and kept until asked for.
struct Searches<'s> {
    index: &'s Index<'s>,
    new: &'s [u8],
    /// `found[i]`: the match of position `base + i`, for `i` below `ready`.
    found: [(usize, usize); SIDE_BY_SIDE],
    base: usize,
    ready: usize,
    /// The position asked for last.
    last: Option<usize>,
    /// How many positions are searched at once from one that follows the last:
    /// [`SIDE_BY_SIDE`], or 1 in a source under [`SIDE_BY_SIDE_MIN`].
    together: usize,
}

impl<'s> Searches<'s> {
    fn new(index: &'s Index<'s>, new: &'s [u8]) -> Searches<'s> {
        Searches {
            index,
            new,
            found: [(0, 0); SIDE_BY_SIDE],
            base: 0,
            ready: 0,
            last: None,
            together: if index.old.len() >= SIDE_BY_SIDE_MIN {
                SIDE_BY_SIDE
            } else {
                1
            },
        }
    }

    /// The longest match of `new[at..]`, up to [`MAX_MATCH`] bytes of it (`at` within
    /// `new`): a position of the source and the length.
    fn at(&mut self, at: usize) -> (usize, usize) {
        let follows = self.last.map(|l| l + 1) == Some(at);
        self.last = Some(at);
        if let Some(&f) = at
            .checked_sub(self.base)
            .filter(|&i| i < self.ready)
            .and_then(|i| self.found.get(i))
        {
            return f;
        }
        let count = if follows {
            self.together.min(self.new.len().saturating_sub(at)).max(1)
        } else {
            1
        };
        let mut pats: [&[u8]; SIDE_BY_SIDE] = [&[]; SIDE_BY_SIDE];
        for (i, pat) in pats.iter_mut().enumerate().take(count) {
            let from = (at + i).min(self.new.len());
            *pat = &self.new[from..(from + MAX_MATCH).min(self.new.len())];
        }
        self.index
            .longest_each(&pats[..count], &mut self.found[..count]);
        self.base = at;
        self.ready = count;
        self.found[0]
    }
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
    for (x, y) in ca.zip(cb) {
        out.extend_from_slice(&f(word(x), word(y)).to_le_bytes());
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

/// Computes a patch from `old` to `new`, appending to `out`.
pub fn diff(old: &[u8], new: &[u8], out: &mut Streams) {
    // Nothing to find (no source, or compressed or unrelated data, where a suffix array
    // and a search at every byte would cost seconds per MiB): the new bytes as they are.
    if old.is_empty() || new.is_empty() || !shares_stretches(old, new) {
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
    let lit = literal_cost(new);
    let extension = extension_for(new);
    let first = scan(old, new, &sa, 8, extension);
    // Only a dense patch that left a tenth of the bytes unmatched has a rival (see
    // `DENSE_CONTROLS`), and only then is `estimate` (which compresses every stream) run.
    let dense = (first.controls.len() as u64) * DENSE_CONTROLS > new.len() as u64;
    let best = if dense && first.extra.len() * 10 >= new.len() {
        let second = scan(old, new, &sa, 20, extension);
        // The first of the smallest.
        if estimate(&second) < estimate(&first) {
            second
        } else {
            first
        }
    } else {
        first
    };
    let best = prune(old, new, &best, lit);
    out.controls.extend_from_slice(&best.controls);
    out.diff.extend_from_slice(&best.diff);
    out.extra.extend_from_slice(&best.extra);
}

/// The extension for `new`: [`STRICT`] for arm64 code and for text, else [`LOOSE`].
fn extension_for(new: &[u8]) -> Extension {
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
pub(super) const TEXT_PROBE: usize = 4096;

/// Whether bytes are text, by their first [`TEXT_PROBE`] bytes: no NUL among them.
pub(super) fn looks_like_text(head: &[u8]) -> bool {
    !head[..head.len().min(TEXT_PROBE)].contains(&0)
}

/// How many agreeing bytes a match's extension needs: it is extended over the stretch
/// where `agree * weight - len * (weight - 1)` is largest, i.e. where more than
/// `(weight - 1) / weight` of the bytes agree.
type Extension = isize;
/// bsdiff's own: half the bytes.
const LOOSE: Extension = 2;
/// Two thirds. Used for every file, the arm64 pair's package (Debian's tools across a
/// release) is 6 % smaller than with [`LOOSE`], the node pair's 1 % smaller, and the
/// debian pair's (mostly x86-64 code) 2 % larger.
const STRICT: Extension = 3;

/// Bytes a varint of `v` takes.
fn varint_len(v: u64) -> usize {
    ((64 - v.leading_zeros()).max(1) as usize).div_ceil(7)
}

/// A patch's covers: (new position, old position, length) of each stretch made as source
/// plus differences.
fn covers(s: &Streams) -> Vec<(usize, usize, usize)> {
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
fn from_covers(old: &[u8], new: &[u8], covers: &[(usize, usize, usize)]) -> Streams {
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
fn literal_cost(new: &[u8]) -> f64 {
    let packed = zstd::bulk::compress(new, 3).map_or(new.len(), |z| z.len());
    (packed as f64 / new.len().max(1) as f64).clamp(0.05, 1.0)
}

/// A cover is kept when it saves at least this many bytes (see [`prune`]).
const MIN_SAVING: f64 = 2.0;
/// What a difference byte that is not zero costs, and a control triple's varint byte, in
/// bytes after compression (about: they compress in lanes of their own).
const DIFFERENCE_COST: f64 = 0.5;
const CONTROL_COST: f64 = 0.7;

/// Drops the covers of a patch (the stretches made as source plus differences) that cost
/// more than the bytes they make would as new bytes: short matches of common phrases in
/// text, far from the stretches around them, whose control triples, and the new bytes
/// they cut in pieces, cost more than they save. A cover's saving is its length at
/// `lit`, the cost of a new byte (see [`literal_cost`]), less its differences that are not
/// zero and its control triple (its varints, the seek from the last cover kept); it is kept
/// if that is at least [`MIN_SAVING`]. Measured on the changed files of the node pair
/// (1 719 JavaScript files and their old versions): 1.34 -> 1.23 MB.
fn prune(old: &[u8], new: &[u8], s: &Streams, lit: f64) -> Streams {
    let all = covers(s);
    let mut kept: Vec<(usize, usize, usize)> = Vec::with_capacity(all.len());
    let (mut last_old, mut last_new) = (0usize, 0usize);
    for &(n, o, len) in &all {
        let differences = new[n..n + len]
            .iter()
            .zip(&old[o..o + len])
            .filter(|(a, b)| a != b)
            .count();
        let seek = o as i64 - last_old as i64;
        let varints = varint_len(len as u64)
            + varint_len((n - last_new) as u64)
            + varint_len(((seek << 1) ^ (seek >> 63)) as u64);
        let saving =
            len as f64 * lit - differences as f64 * DIFFERENCE_COST - varints as f64 * CONTROL_COST;
        if saving >= MIN_SAVING {
            kept.push((n, o, len));
            (last_old, last_new) = (o + len, n + len);
        }
    }
    if kept.len() == all.len() {
        return Streams {
            controls: s.controls.clone(),
            diff: s.diff.clone(),
            extra: s.extra.clone(),
        };
    }
    from_covers(old, new, &kept)
}

/// Inputs shorter than this are always diffed (the estimate below needs anchors).
const MIN_ESTIMATED: usize = 64 << 10;

/// A new input shares too little with its source to diff when fewer than one in this many
/// of its anchors occurs in the source.
const MIN_SHARED: usize = 32;

/// A content-defined sample of 13-byte windows: a gear hash with a 5-bit shift covers the
/// last 13 bytes in its 64 bits (short, so that tables whose entries all changed a little,
/// like symbol tables, still count as shared); a window is an anchor when the hash's top byte is zero
/// (one position in 256), and the hash itself names the window.
fn anchors(data: &[u8], mut f: impl FnMut(u64)) {
    let mut h = 0u64;
    for &b in data {
        h = (h << 5).wrapping_add(GEAR[b as usize]);
        if h >> 56 == 0 {
            f(h);
        }
    }
}

/// 256 fixed pseudo-random words (splitmix64) for [`anchors`] (and the big-file anchors of
/// [`super::align`]).
pub(super) const GEAR: [u64; 256] = {
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
const DENSE_CONTROLS: u64 = 256;

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
/// taken when it beats the current alignment by more than `bar` bytes, and extended as
/// far as `w` says (see [`Extension`]).
fn scan(old: &[u8], new: &[u8], sa: &Index<'_>, bar: isize, w: Extension) -> Streams {
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
                searches.at(scan)
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

/// Applies a patch to `old`, appending `new_len` bytes to `out`. `diff` and `extra` are
/// advanced past the bytes used. Fails, without panicking, on any inconsistency.
pub fn patch(
    old: &[u8],
    controls: &[Control],
    differences: Differences,
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
        let (source, step) = (&old[from..from + add], &diff[..add]);
        match differences {
            Differences::Bytes => {
                out.extend(source.iter().zip(step).map(|(o, d)| o.wrapping_add(*d)));
            }
            Differences::Words => {
                let phase = (out.len() - start) % 4;
                by_words(source, step, phase, out, u32::wrapping_add);
            }
        }
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

    /// A xorshift32 sequence from `seed`, so that failures reproduce.
    fn xorshift(mut x: u32) -> impl FnMut() -> u32 {
        move || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        }
    }

    #[test]
    fn a_dense_patch_keeps_the_cheaper_bar() {
        // A distant version: pieces of the old file, reshuffled, with fresh bytes between
        // them every few dozen bytes, so bsdiff finds many short matches.
        let mut rnd = xorshift(7);
        let old: Vec<u8> = (0..200_000).map(|_| (rnd() % 7) as u8 * 37).collect();
        let mut new = Vec::new();
        while new.len() < 200_000 {
            let at = (rnd() as usize) % (old.len() - 64);
            new.extend_from_slice(&old[at..at + 10 + (rnd() as usize) % 40]);
            new.extend((0..(rnd() % 12)).map(|_| rnd() as u8));
        }
        let s = roundtrip(&old, &new);
        let sa = Index::new(&old);
        let w = extension_for(&new);
        let plain = scan(&old, &new, &sa, 8, w);
        assert!(plain.controls.len() as u64 * DENSE_CONTROLS > new.len() as u64);
        assert!(
            plain.extra.len() * 10 >= new.len(),
            "a tenth unmatched: both passes run"
        );
        let higher = scan(&old, &new, &sa, 20, w);
        let lit = literal_cost(&new);
        let chosen = if estimate(&higher) < estimate(&plain) {
            higher
        } else {
            plain
        };
        assert_eq!(estimate(&s), estimate(&prune(&old, &new, &chosen, lit)));
    }

    #[test]
    fn a_dense_patch_that_matched_nearly_everything_has_one_pass() {
        // Pieces of 100 bytes from all over the old file, nothing inserted: a control per
        // piece (dense), every byte matched; the patch is the first pass's, pruned.
        let mut rnd = xorshift(11);
        let old: Vec<u8> = (0..100_000).map(|_| rnd() as u8).collect();
        let mut new = Vec::new();
        while new.len() < 100_000 {
            let at = (rnd() as usize) % (old.len() - 100);
            new.extend_from_slice(&old[at..at + 100]);
        }
        let s = roundtrip(&old, &new);
        let sa = Index::new(&old);
        let plain = scan(&old, &new, &sa, 8, extension_for(&new));
        assert!(plain.controls.len() as u64 * DENSE_CONTROLS > new.len() as u64);
        assert!(plain.extra.len() * 10 < new.len());
        let lit = literal_cost(&new);
        assert_eq!(s.controls, prune(&old, &new, &plain, lit).controls);
        assert_eq!(s.diff, prune(&old, &new, &plain, lit).diff);
    }

    /// Text edited here and there, whose common phrases bsdiff matches all over the old
    /// version.
    fn edited_text() -> (Vec<u8>, Vec<u8>) {
        let words = [
            "return ",
            "this.",
            "props",
            "function ",
            "(",
            ") {",
            "}",
            ";\n",
            "const ",
            "value",
            " = ",
            "undefined",
            "if (",
            "else ",
            "state",
            ".length",
            "=> ",
        ];
        let mut rnd = {
            let mut r = xorshift(11);
            move || r() as usize
        };
        fn text(words: &[&str], rnd: &mut impl FnMut() -> usize, n: usize) -> Vec<u8> {
            let mut t = Vec::new();
            while t.len() < n {
                t.extend_from_slice(words[rnd() % words.len()].as_bytes());
                if rnd() % 3 == 0 {
                    t.extend(format!("x{}", rnd() % 1000).bytes());
                }
            }
            t
        }
        let old = text(&words, &mut rnd, 60_000);
        let mut new = Vec::new();
        let mut at = 0;
        while at < old.len() {
            let keep = 300 + rnd() % 700;
            new.extend_from_slice(&old[at..(at + keep).min(old.len())]);
            let n = 40 + rnd() % 200;
            new.extend(text(&words, &mut rnd, n));
            at += keep + rnd() % 50;
        }
        (old, new)
    }

    #[test]
    fn covers_that_cost_more_than_they_save_are_dropped() {
        let (old, new) = edited_text();
        let sa = Index::new(&old);
        let raw = scan(&old, &new, &sa, 8, STRICT);
        let lit = literal_cost(&new);
        let pruned = prune(&old, &new, &raw, lit);
        // Round trip of the pruned patch.
        assert_eq!(apply(&old, &pruned, new.len()), new);
        // Far fewer controls, and a smaller package.
        assert!(
            pruned.controls.len() * 2 < raw.controls.len(),
            "{} -> {} controls",
            raw.controls.len(),
            pruned.controls.len()
        );
        assert!(
            estimate(&pruned) < estimate(&raw),
            "{} -> {}",
            estimate(&raw),
            estimate(&pruned)
        );
        // The kept covers are the long ones: every edit's surroundings are still matched.
        assert!(
            pruned.diff.len() > new.len() / 2,
            "{} of {}",
            pruned.diff.len(),
            new.len()
        );
        roundtrip(&old, &new);
    }

    #[test]
    fn the_extension_follows_the_content() {
        let elf = |machine: u16| {
            let mut h = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x03\0".to_vec();
            h.extend_from_slice(&machine.to_le_bytes());
            h.extend_from_slice(&[0; 100]);
            h
        };
        assert_eq!(extension_for(&elf(183)), STRICT);
        assert_eq!(extension_for(&elf(62)), LOOSE);
        assert_eq!(extension_for(b"function f() { return 1; }"), STRICT);
        assert_eq!(extension_for(&[0, 1, 2, 3]), LOOSE);
        assert_eq!(extension_for(b""), STRICT);
    }

    #[test]
    fn covers_make_the_patch_they_came_from() {
        let (old, new) = edited_text();
        let sa = Index::new(&old);
        for w in [LOOSE, STRICT] {
            let raw = scan(&old, &new, &sa, 8, w);
            let again = from_covers(&old, &new, &covers(&raw));
            assert_eq!(apply(&old, &again, new.len()), new);
            assert_eq!(again.diff, raw.diff);
            assert_eq!(again.extra, raw.extra);
        }
        // A patch with no cover, and one whose first cover starts at 0 but not in the old
        // bytes' first byte.
        let s = from_covers(b"abcdef", b"xyz", &[]);
        assert_eq!(s.extra, b"xyz");
        let s = from_covers(b"abcdef", b"defxy", &[(0, 3, 3)]);
        assert_eq!(apply(b"abcdef", &s, 5), b"defxy");
    }

    /// `s` applied to `old` (differences by bytes), `len` bytes long; every stream is used up.
    fn apply(old: &[u8], s: &Streams, len: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let (mut d, mut e) = (&s.diff[..], &s.extra[..]);
        patch(
            old,
            &s.controls,
            Differences::Bytes,
            &mut d,
            &mut e,
            len as u64,
            &mut out,
        )
        .unwrap();
        assert!(d.is_empty() && e.is_empty());
        out
    }

    fn roundtrip(old: &[u8], new: &[u8]) -> Streams {
        let mut s = Streams::default();
        diff(old, new, &mut s);
        let n = new.len() as u64;
        assert_eq!(apply(old, &s, new.len()), new);
        // The same patch by words, appended after other output (words align to the patch).
        let words = word_differences(old, new, &s.controls).unwrap();
        assert_eq!(words.len(), s.diff.len());
        let mut out = b"xyz".to_vec();
        let (mut d, mut e) = (&words[..], &s.extra[..]);
        patch(
            old,
            &s.controls,
            Differences::Words,
            &mut d,
            &mut e,
            n,
            &mut out,
        )
        .unwrap();
        assert_eq!(&out[3..], new);
        assert!(d.is_empty() && e.is_empty());
        s
    }

    #[test]
    fn word_differences_of_shifted_fields_are_constant() {
        // A table of 32-bit ids, each moved by 200: bytewise the carries make the
        // differences vary, by words they are all the same.
        let ids = |shift: u32| -> Vec<u8> {
            (0..20_000u32)
                .flat_map(|i| (i * 37 + 1000 + shift).to_le_bytes())
                .collect()
        };
        let (old, new) = (ids(0), ids(200));
        let c = [Control {
            add: old.len() as u64,
            copy: 0,
            seek: 0,
        }];
        let words = word_differences(&old, &new, &c).unwrap();
        assert!(words.chunks(4).all(|w| w == [200, 0, 0, 0]));
        let bytes: std::collections::HashSet<_> = new
            .chunks(4)
            .zip(old.chunks(4))
            .map(|(n, o)| [n[0].wrapping_sub(o[0]), n[1].wrapping_sub(o[1])])
            .collect();
        assert!(bytes.len() > 1);
        let mut out = Vec::new();
        let (mut d, mut e) = (&words[..], &[][..]);
        let n = new.len() as u64;
        patch(&old, &c, Differences::Words, &mut d, &mut e, n, &mut out).unwrap();
        assert_eq!(out, new);
        // Controls that do not fit the inputs give no differences, and no panic.
        let long = [Control {
            add: old.len() as u64 + 1,
            copy: 0,
            seek: 0,
        }];
        assert!(word_differences(&old, &new, &long).is_none());
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
    fn unrelated_inputs_are_not_searched() {
        let mut x = 99u64;
        let mut bytes = |n: usize| -> Vec<u8> {
            (0..n)
                .map(|_| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (x >> 56) as u8
                })
                .collect()
        };
        let (old, new) = (bytes(300_000), bytes(200_000));
        assert!(!shares_stretches(&old, &new));
        let s = roundtrip(&old, &new);
        assert_eq!(s.controls.len(), 1);
        assert_eq!(s.extra, new);
        // A rebuilt file whose every 24-byte record changed in one field still shares.
        let mut table = old.clone();
        for rec in table.chunks_mut(24) {
            rec[0] = rec[0].wrapping_add(16);
        }
        assert!(shares_stretches(&old, &table));
        assert!(roundtrip(&old, &table).extra.len() < 1000);
        // Small inputs are always diffed.
        assert!(shares_stretches(&old, &new[..1000]));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn libsais_sorts_the_suffixes_as_libdivsufsort_does(
            // Runs of few symbols (the hard cases of induced sorting) and any bytes.
            few in proptest::collection::vec(proptest::sample::select(vec![0u8, 1, 255]), 0..4000),
            any in proptest::collection::vec(any::<u8>(), 0..4000),
            reps in 1usize..40,
        ) {
            let periodic: Vec<u8> = few.iter().take(7).cycle().take(few.len() * reps).copied().collect();
            for old in [&few, &any, &periodic] {
                let (_, want) = SuffixArray::new(old).into_parts();
                prop_assert_eq!(sort_suffixes(old), want);
            }
        }

        #[test]
        fn the_index_finds_the_longest_match(
            old in proptest::collection::vec(proptest::sample::select(vec![0u8, 1, 2, 255]), 1..3000),
            pat in proptest::collection::vec(proptest::sample::select(vec![0u8, 1, 2, 255]), 0..40),
        ) {
            let best = (0..old.len()).map(|i| common_prefix(&pat, &old[i..])).max().unwrap_or(0);
            let mut found = Vec::new();
            for table in [true, false] {
                let idx = Index::build(&old, table);
                // Each two-byte range holds exactly the suffixes that start with those
                // bytes, whether from the table or by binary search.
                let mut total = 0;
                for k in 0..1 << 16 {
                    let (lo, hi) = idx.range(k);
                    for &p in &idx.sa[lo..hi] {
                        let p = p as usize;
                        prop_assert!(p + 2 <= old.len());
                        prop_assert_eq!((old[p] as usize) << 8 | old[p + 1] as usize, k);
                    }
                    total += hi - lo;
                }
                prop_assert_eq!(total + 1, old.len());
                let (pos, len) = idx.longest(&pat);
                prop_assert_eq!(len, best);
                prop_assert_eq!(common_prefix(&pat, &old[pos..]), len);
                found.push((pos, len));
            }
            // The same match either way: patches do not depend on the source's size.
            prop_assert_eq!(found[0], found[1]);
        }

        #[test]
        fn side_by_side_searches_find_what_one_alone_finds(
            old in proptest::collection::vec(proptest::sample::select(vec![0u8, 1, 2, 255]), 1..3000),
            pats in proptest::collection::vec(
                proptest::collection::vec(proptest::sample::select(vec![0u8, 1, 2, 255]), 0..40),
                0..3 * SIDE_BY_SIDE,
            ),
            table in any::<bool>(),
        ) {
            let idx = Index::build(&old, table);
            let refs: Vec<&[u8]> = pats.iter().map(|p| &p[..]).collect();
            let mut found = vec![(usize::MAX, usize::MAX); pats.len()];
            idx.longest_each(&refs, &mut found);
            for (pat, &(pos, len)) in pats.iter().zip(&found) {
                let best = (0..old.len()).map(|i| common_prefix(pat, &old[i..])).max().unwrap_or(0);
                prop_assert_eq!(len, best);
                prop_assert_eq!(common_prefix(pat, &old[pos..]), len);
                prop_assert_eq!((pos, len), idx.longest(pat));
            }
        }

        #[test]
        fn a_scan_gets_each_position_s_own_match(
            old in proptest::collection::vec(proptest::sample::select(vec![0u8, 1, 2, 255]), 1..2000),
            new in proptest::collection::vec(proptest::sample::select(vec![0u8, 1, 2, 255]), 1..600),
            // Where a scan asks: runs of consecutive positions, jumps forward and back.
            asks in proptest::collection::vec((0usize..600, 1usize..30), 1..20),
        ) {
            let idx = Index::new(&old);
            let mut searches = Searches::new(&idx, &new);
            // Side by side whatever the source's size.
            searches.together = SIDE_BY_SIDE;
            for (from, run) in asks {
                for at in (from..from + run).filter(|&a| a < new.len()) {
                    let pat = &new[at..(at + MAX_MATCH).min(new.len())];
                    prop_assert_eq!(searches.at(at), idx.longest(pat), "position {}", at);
                }
            }
        }
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
        assert!(patch(b"abc", &c, Differences::Bytes, &mut d, &mut e, 10, &mut out).is_err());
        let c = [Control {
            add: 0,
            copy: u64::MAX,
            seek: i64::MIN,
        }];
        let (mut d, mut e) = (&[][..], &[][..]);
        assert!(patch(b"abc", &c, Differences::Bytes, &mut d, &mut e, 10, &mut out).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn any_pair_round_trips(old in proptest::collection::vec(0u8..4, 0..2000),
                                new in proptest::collection::vec(0u8..4, 0..2000)) {
            roundtrip(&old, &new);
        }

        #[test]
        fn a_narrowed_patch_rebuilds_from_its_part(
            before in proptest::collection::vec(b'a'..b'e', 0..3000),
            old in proptest::collection::vec(b'a'..b'e', 1..2000),
            after in proptest::collection::vec(b'a'..b'e', 0..3000),
            edits in proptest::collection::vec((any::<u16>(), b'a'..b'f'), 0..20),
            tail in proptest::collection::vec(b'a'..b'e', 0..500),
        ) {
            // A source inside a longer stretch, and new bytes made of it, edited, and of
            // other bytes (which the stretch may have elsewhere).
            let stretch = [&before[..], &old[..], &after[..]].concat();
            let mut new = old.clone();
            for (at, b) in edits {
                let i = at as usize % new.len();
                new[i] = b;
            }
            new.extend_from_slice(&tail);
            let mut s = Streams::default();
            diff(&stretch, &new, &mut s);
            let (lo, hi) = narrow(&mut s.controls, stretch.len() as u64);
            prop_assert!(lo <= hi && hi <= stretch.len() as u64);
            prop_assert_eq!(apply(&stretch[lo as usize..hi as usize], &s, new.len()), new);
        }

        #[test]
        fn any_text_pair_round_trips(old in proptest::collection::vec(b'a'..b'e', 0..3000),
                                     new in proptest::collection::vec(b'a'..b'e', 0..3000)) {
            roundtrip(&old, &new);
        }

        #[test]
        fn any_elf_like_pair_round_trips(body in proptest::collection::vec(any::<u8>(), 0..3000),
                                         edits in proptest::collection::vec((any::<u16>(), any::<u8>()), 0..40),
                                         machine in prop_oneof![Just(62u16), Just(183u16)]) {
            // An ELF header of either machine, then bytes, edited in places.
            let mut old = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x03\0".to_vec();
            old.extend_from_slice(&machine.to_le_bytes());
            old.extend_from_slice(&body);
            let mut new = old.clone();
            for (at, b) in edits {
                let i = at as usize % new.len();
                new[i] = b;
            }
            roundtrip(&old, &new);
        }

        #[test]
        fn words_of_any_phase_round_trip(old in proptest::collection::vec(any::<u8>(), 0..64),
                                         diff in proptest::collection::vec(any::<u8>(), 0..64),
                                         phase in 0usize..4) {
            let n = old.len().min(diff.len());
            let mut new = Vec::new();
            by_words(&old[..n], &diff[..n], phase, &mut new, u32::wrapping_add);
            let mut back = Vec::new();
            by_words(&new, &old[..n], phase, &mut back, u32::wrapping_sub);
            prop_assert_eq!(back, &diff[..n]);
        }
    }
}
