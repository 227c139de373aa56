//! Which 8-byte strings a source holds, as a Bloom filter: a search whose first eight
//! bytes the source lacks cannot find a match of eight bytes or more, so a scan asks the
//! filter before it searches the suffix array.
//!
//! A scan takes a match found elsewhere only when it is longer than what its current
//! alignment matches by more than its bar (8 bytes, or 20): a shorter one changes nothing
//! but where the scan looks next. Between distant versions of a program most searches find
//! no more than that: of the tools pair's 59.5 million searches, 83 % found under 8 bytes,
//! each after a binary search of the suffix array (two cache misses a step). The filter
//! answers most of those with one read; the scan then goes on with its own alignment's
//! match. Create, in turns with the binary before: tools 21.8 -> 17.6 s (user CPU 32.6 ->
//! 24.2 s), arm64 22.6 -> 17.0 s, ml 55.7 -> 45.5 s; packages within 0.05 % (up on some
//! pairs, down on others).

/// Bytes of the strings the filter holds.
pub(super) const GRAM: usize = 8;

/// Bits of filter per string of the source. With two bits set per string in one 64-bit
/// word (one read per question), 4 bits a string answer "present" for about one string in
/// six that is absent. On the tools pair's create: 2 bits 26.6 s of user CPU, 4 bits 23.7,
/// 8 bits 23.3 (for a filter as large as the source: a piece's search holds 24 MiB more
/// than with 4).
pub(super) const BITS_PER_GRAM: usize = 4;

/// A blocked Bloom filter of the [`GRAM`]-byte strings of a source: each sets two bits of
/// one word.
pub(super) struct Grams {
    words: Vec<u64>,
}

impl Grams {
    /// The filter of every [`GRAM`]-byte string of `old`.
    pub(super) fn new(old: &[u8]) -> Grams {
        let count = old.len().saturating_sub(GRAM - 1);
        let words = (count * BITS_PER_GRAM).div_ceil(64).max(1);
        let mut g = Grams {
            words: vec![0u64; words],
        };
        for w in old.windows(GRAM) {
            let (i, mask) = g.slot(gram(w).unwrap_or_default());
            if let Some(word) = g.words.get_mut(i) {
                *word |= mask;
            }
        }
        g
    }

    /// Memory the filter of a source of `len` bytes takes.
    pub(super) fn memory(len: u64) -> u64 {
        len * BITS_PER_GRAM as u64 / 8
    }

    /// The word and the two bits of a string.
    #[inline(always)]
    fn slot(&self, x: u64) -> (usize, u64) {
        // A 64-bit mix (splitmix64's finaliser): the word from the top half, the bits from
        // the bottom.
        let mut h = x;
        h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^= h >> 31;
        let i = (((h >> 32) * self.words.len() as u64) >> 32) as usize;
        (i, 1u64 << (h & 63) | 1u64 << ((h >> 6) & 63))
    }

    /// Whether `old` may hold the string at the start of `pat`: false only if it does not
    /// (true for a `pat` shorter than [`GRAM`]).
    #[inline(always)]
    pub(super) fn may_hold(&self, pat: &[u8]) -> bool {
        let Some(x) = gram(pat) else {
            return true;
        };
        let (i, mask) = self.slot(x);
        self.words.get(i).is_none_or(|w| w & mask == mask)
    }

    /// Asks the CPU to load the word [`Grams::may_hold`] reads for `pat`.
    #[inline(always)]
    pub(super) fn ahead(&self, pat: &[u8]) {
        if let Some(w) = gram(pat).and_then(|x| self.words.get(self.slot(x).0)) {
            super::index::prefetch(w);
        }
    }
}

/// The first [`GRAM`] bytes of `b` as a number, if it has as many.
#[inline(always)]
fn gram(b: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(..GRAM)?.try_into().ok()?))
}
