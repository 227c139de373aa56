//! How many new bytes (the stream's `extra` section, [`APART`](super::APART)`[0]`) a layer's
//! stream will hold, estimated before its chunks are all encoded: the package writer keeps
//! few new bytes in xz and many in zstd, and the sooner it knows which, the less it
//! compresses twice (see `format::SMALL_NEW_BYTES`).
//!
//! Some regions are shipped whole whatever a search finds (files with no source, gzip
//! members and archives with none): the plan says how many bytes. So, all but surely, are
//! files whose source shares next to nothing with them (by the likeness votes, see
//! `Verdict::shares_little`): they count with those. Of the regions searched
//! against a source, the share left unmatched is only known as their chunks are encoded;
//! the estimate takes the lower median share of the chunks encoded so far, once there are
//! [`MIN_CHUNKS`] of them, for the searched bytes of the chunks still to encode. The
//! median, not the mean: one chunk of unlike bytes (a compressed kernel image, 8.2 MB
//! unmatched of 8.5 at the start of the bench's kernel layer, whose other 400 MB leave 1 %
//! unmatched) would otherwise say 200 MB at first where the layer holds 14 MB. The lower
//! one of an even count, so that two chunks, one of them unlike, say the other's share.
//!
//! Chunks count as they are encoded, in any order, not as they are written: the writer
//! takes the chunks in order, and a slow chunk (a big program's patch) holds back the
//! ones encoded after it.

use super::plan::Region;

/// Chunks that must have been encoded (each with at least [`MIN_SEARCHED`] searched bytes)
/// before their share of unmatched bytes is taken for the rest of the layer. Two, not
/// three: a lane whose first two chunks both leave much unmatched leaves xz a chunk
/// sooner (create in turns, every package of the bench byte-identical: arm64 20.3 ->
/// 19.3 s, tools 19.2 -> 18.8 s; on tools the second chunk back is often a like one, and
/// the lower share keeps the lane in xz until the third).
const MIN_CHUNKS: usize = 2;

/// Searched bytes a chunk must hold for its share of unmatched bytes to count.
const MIN_SEARCHED: u64 = 1 << 20;

/// What regions bring to the new bytes: those shipped whole whatever is found, and those
/// searched against a source (of which some share ends up shipped).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Shares {
    /// New bytes shipped whole (or patched against a source that shares next to nothing
    /// with them).
    pub(super) sure: u64,
    /// Bytes searched against a source (a gzip member's or an archive's text).
    pub(super) searched: u64,
}

impl Shares {
    /// The shares of `regions`.
    pub(super) fn of(regions: &[Region]) -> Shares {
        let mut s = Shares::default();
        for r in regions {
            match *r {
                Region::Lit { len, .. } => s.sure += len,
                Region::Gzip {
                    text, src: None, ..
                }
                | Region::Zip {
                    text, src: None, ..
                } => s.sure += text,
                Region::Gzip { text, .. } | Region::Zip { text, .. } => s.searched += text,
                Region::Diff {
                    len, unlike: true, ..
                } => s.sure += len,
                Region::Diff { len, .. } => s.searched += len,
                Region::Meta { .. } | Region::Copy { .. } => {}
            }
        }
        s
    }
}

/// The running estimate over one layer.
#[derive(Debug)]
pub(super) struct NewBytes {
    /// The whole layer's shares.
    layer: Shares,
    /// The shares of the chunks encoded so far.
    done: Shares,
    /// The new bytes those chunks hold.
    extra: u64,
    /// The share of its searched bytes each encoded chunk left unmatched (for chunks that
    /// searched at least [`MIN_SEARCHED`] bytes), kept sorted.
    unmatched: Vec<f64>,
}

impl NewBytes {
    /// An estimate for a layer of these shares, no chunk encoded yet.
    pub(super) fn new(layer: Shares) -> NewBytes {
        NewBytes {
            layer,
            done: Shares::default(),
            extra: 0,
            unmatched: Vec::new(),
        }
    }

    /// A chunk of these shares was encoded, holding `extra` new bytes.
    pub(super) fn encoded(&mut self, chunk: Shares, extra: u64) {
        self.done.sure += chunk.sure;
        self.done.searched += chunk.searched;
        self.extra += extra;
        if chunk.searched >= MIN_SEARCHED {
            let unmatched = extra.saturating_sub(chunk.sure);
            let share = (unmatched as f64 / chunk.searched as f64).min(1.0);
            let at = self.unmatched.partition_point(|&s| s < share);
            self.unmatched.insert(at, share);
        }
    }

    /// The new bytes the layer's stream is expected to hold: what the encoded chunks hold,
    /// the bytes of the others that are shipped whole, and the lower median share of the
    /// encoded chunks' searched bytes for the others' (none before [`MIN_CHUNKS`] chunks:
    /// until then this is the least the layer holds).
    pub(super) fn expected(&self) -> u64 {
        let sure = self.layer.sure.saturating_sub(self.done.sure);
        let searched = self.layer.searched.saturating_sub(self.done.searched);
        let shares = &self.unmatched;
        let share = match shares.len() {
            n if n >= MIN_CHUNKS => shares[(n - 1) / 2],
            _ => 0.0,
        };
        self.extra + sure + (share * searched as f64) as u64
    }

    /// The new bytes the layer's stream holds all but surely: what the encoded chunks hold
    /// and the bytes of the others that are shipped whole (the least [`NewBytes::expected`]
    /// says).
    pub(super) fn sure(&self) -> u64 {
        self.extra + self.layer.sure.saturating_sub(self.done.sure)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::patch;
    use super::*;

    const MB: u64 = 1_000_000;

    fn searched(n: u64) -> Shares {
        Shares {
            sure: 0,
            searched: n,
        }
    }

    #[test]
    fn regions_are_shipped_whole_or_searched() {
        let regions = [
            Region::Lit {
                off: 0,
                len: 10,
                calls: None,
                tables: None,
            },
            Region::Copy {
                src: 0,
                off: 0,
                len: 1000,
            },
            Region::Meta {
                off: 0,
                len: 512,
                src: None,
            },
            Region::Gzip {
                off: 0,
                len: 30,
                text: 100,
                src: None,
            },
            Region::Gzip {
                off: 0,
                len: 30,
                text: 200,
                src: Some((0, 0, 30)),
            },
            Region::Zip {
                off: 0,
                len: 40,
                text: 400,
                src: None,
                src_text: 0,
            },
            Region::Zip {
                off: 0,
                len: 40,
                text: 800,
                src: Some((0, 0, 40)),
                src_text: 700,
            },
            patch(0, 3000, 2000),
            {
                let mut p = patch(0, 5000, 4000);
                if let Region::Diff { unlike, .. } = &mut p {
                    *unlike = true;
                }
                p
            },
        ];
        let s = Shares::of(&regions);
        // A patch against a source that shares next to nothing with it: shipped, surely.
        assert_eq!(s.sure, 10 + 100 + 400 + 5000);
        assert_eq!(s.searched, 200 + 800 + 3000);
    }

    #[test]
    fn before_enough_chunks_only_what_is_certain_counts() {
        let layer = Shares {
            sure: 5 * MB,
            searched: 100 * MB,
        };
        let mut e = NewBytes::new(layer);
        assert_eq!(e.expected(), 5 * MB);
        assert_eq!(e.sure(), 5 * MB);
        e.encoded(searched(10 * MB), 6 * MB);
        // One chunk: what it holds, and the bytes shipped whole still to come.
        assert_eq!(e.expected(), 6 * MB + 5 * MB);
        e.encoded(searched(10 * MB), 6 * MB);
        // Two: 60 % of the 80 MB still to search besides, which is not sure.
        assert_eq!(e.expected(), 12 * MB + 5 * MB + 48 * MB);
        assert_eq!(e.sure(), 12 * MB + 5 * MB);
    }

    #[test]
    fn of_an_even_count_the_lower_median_share_counts() {
        let mut e = NewBytes::new(searched(100 * MB));
        // The kernel layer's compressed image first, then a chunk of like bytes: the
        // second's share (1 %), not their mean (50 %).
        e.encoded(searched(10 * MB), 10 * MB);
        e.encoded(searched(10 * MB), MB / 10);
        assert_eq!(e.expected(), 10 * MB + MB / 10 + 80 * MB / 100);
        // Four chunks, shares 0.5 %, 1 %, 40 % and 100 %: 1 %.
        e.encoded(searched(10 * MB), 4 * MB);
        e.encoded(searched(10 * MB), MB / 20);
        assert_eq!(
            e.expected(),
            10 * MB + MB / 10 + 4 * MB + MB / 20 + 60 * MB / 100
        );
    }

    #[test]
    fn one_unlike_chunk_does_not_set_the_share() {
        // A kernel layer's first chunk is its compressed image: nearly all unmatched.
        let mut e = NewBytes::new(searched(400 * MB));
        e.encoded(searched(8 * MB), 8 * MB);
        for _ in 0..3 {
            e.encoded(searched(8 * MB), MB / 10);
        }
        // 8.3 MB encoded, and about 1.25 % of the 368 MB still to come.
        let expected = e.expected();
        assert!(
            (12 * MB..14 * MB).contains(&expected),
            "{expected} bytes expected"
        );
    }

    #[test]
    fn chunks_that_searched_little_do_not_set_the_share() {
        let mut e = NewBytes::new(searched(100 * MB));
        for _ in 0..5 {
            // A chunk of literals and copies, and a small patch left all unmatched.
            e.encoded(
                Shares {
                    sure: 2 * MB,
                    searched: 1000,
                },
                2 * MB + 1000,
            );
        }
        assert_eq!(e.expected(), 5 * (2 * MB + 1000));
    }

    #[test]
    fn new_bytes_of_sure_regions_are_not_counted_as_unmatched() {
        let mut e = NewBytes::new(Shares {
            sure: 30 * MB,
            searched: 40 * MB,
        });
        for _ in 0..4 {
            // Each chunk: 5 MB of literals, 5 MB searched of which 1 MB left unmatched.
            e.encoded(
                Shares {
                    sure: 5 * MB,
                    searched: 5 * MB,
                },
                6 * MB,
            );
        }
        // 24 MB encoded, 10 MB of literals and 20 MB searched to come (a fifth of it).
        assert_eq!(e.expected(), 24 * MB + 10 * MB + 4 * MB);
    }
}
