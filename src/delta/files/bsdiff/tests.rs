use super::grams::*;
use super::index::*;
use super::scan::*;
use super::*;
use proptest::prelude::*;
use suffix_array::SuffixArray;

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
    assert_eq!(estimate(&s), estimate(&prune(&old, &new, chosen, lit)));
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
    let pruned = prune(&old, &new, plain, lit);
    assert_eq!(s.controls, pruned.controls);
    assert_eq!(s.diff, pruned.diff);
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
    let pruned = prune(&old, &new, raw.clone(), lit);
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

#[test]
fn segments_scanned_apart_make_one_patch() {
    // Distant versions: pieces of the old bytes moved about, with fresh bytes between.
    let mut rnd = xorshift(23);
    let old: Vec<u8> = (0..300_000).map(|_| (rnd() % 11) as u8 * 23).collect();
    let mut new = Vec::new();
    while new.len() < 400_000 {
        let at = (rnd() as usize) % (old.len() - 3000);
        new.extend_from_slice(&old[at..at + 200 + (rnd() as usize) % 2000]);
        new.extend((0..(rnd() % 40)).map(|_| rnd() as u8));
    }
    let sa = Index::new(&old);
    let w = extension_for(&new);
    let whole = scan(&old, &new, &sa, 8, w);
    // Shorter than two segments: the plain scan.
    let one = segmented(&old, &new, &sa, (8, w), new.len() / 2 + 1, 4).unwrap();
    assert_eq!(one.controls, whole.controls);
    let alone = segmented(&old, &new, &sa, (8, w), 64 << 10, 1).unwrap();
    assert!(alone.controls.len() > whole.controls.len());
    assert_eq!(apply(&old, &alone, new.len()), new);
    // The same patch whatever the threads (6 segments on 1, 2 or 4).
    for threads in [2, 4] {
        let s = segmented(&old, &new, &sa, (8, w), 64 << 10, threads).unwrap();
        assert_eq!(s.controls, alone.controls);
        assert_eq!((s.diff == alone.diff, s.extra == alone.extra), (true, true));
    }
    // Cutting costs a few controls at each cut, not the matches.
    let (a, b) = (estimate(&whole), estimate(&alone));
    assert!(b <= a + a / 100, "segmented {b} bytes, whole {a}");
}

#[test]
fn joined_patches_seek_back_to_the_start_of_the_source() {
    // Each piece's patch starts at source position 0 and ends elsewhere.
    let old = b"0123456789abcdefghij".to_vec();
    let pieces: [&[u8]; 3] = [b"cdefgh", b"xx3456", b"ijklm0123"];
    let parts = pieces
        .iter()
        .map(|p| {
            let s = diff(&old, p).unwrap();
            assert_eq!(apply(&old, &s, p.len()), *p);
            s
        })
        .collect();
    let joined = join(parts);
    assert_eq!(apply(&old, &joined, 21), pieces.concat());
    assert_eq!(join(Vec::new()).controls, Vec::new());
}

/// What a search holds is what the chunks' budget counts for it: the segments' patches
/// are joined into streams no longer than they need (not grown by doubling), and a patch
/// `prune` keeps whole is the same allocation, not a copy beside it.
#[test]
fn a_search_holds_no_copies_or_slack() {
    let mut rnd = xorshift(5);
    let old: Vec<u8> = (0..200_000).map(|_| rnd() as u8).collect();
    let mut new = old.clone();
    for k in 0..40 {
        new[k * 4_999] ^= 0x5a;
        new.insert(k * 4_000 + 17, rnd() as u8);
    }
    let sa = Index::new(&old);
    let joined = segmented(&old, &new, &sa, (8, LOOSE), 32 << 10, 2).unwrap();
    assert_eq!(apply(&old, &joined, new.len()), new);
    assert_eq!(joined.controls.capacity(), joined.controls.len());
    assert_eq!(joined.diff.capacity(), joined.diff.len());
    assert_eq!(joined.extra.capacity(), joined.extra.len());
    // Every cover of this patch pays for itself: kept whole, in place.
    let at = joined.diff.as_ptr();
    let kept = prune(&old, &new, joined, literal_cost(&new));
    assert_eq!(kept.diff.as_ptr(), at);
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
    let s = diff(old, new).unwrap();
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
                prop_assert_eq!(searches.at(at), Some(idx.longest(pat)), "position {}", at);
            }
        }
    }

    #[test]
    fn a_filtered_scan_skips_only_what_cannot_match_eight_bytes(
        old in proptest::collection::vec(proptest::sample::select(vec![0u8, 1, 2, 255]), 8..2000),
        // The new bytes: pieces of the old ones (long matches) between fresh ones.
        pieces in proptest::collection::vec((0usize..2000, 0usize..40, proptest::collection::vec(proptest::sample::select(vec![0u8, 1, 2, 255]), 0..12)), 1..30),
        asks in proptest::collection::vec((0usize..600, 1usize..30), 1..20),
        together in proptest::sample::select(vec![1, SIDE_BY_SIDE]),
    ) {
        let mut new = Vec::new();
        for (at, len, fresh) in pieces {
            let at = at % old.len();
            new.extend_from_slice(&old[at..(at + len).min(old.len())]);
            new.extend_from_slice(&fresh);
        }
        prop_assume!(!new.is_empty());
        // A filter whatever the source's size.
        let mut idx = Index::new(&old);
        idx.grams = Some(Grams::new(&old));
        let mut searches = Searches::new(&idx, &new);
        searches.together = together;
        for (from, run) in asks {
            for at in (from..from + run).filter(|&a| a < new.len()) {
                let pat = &new[at..(at + MAX_MATCH).min(new.len())];
                let want = idx.longest(pat);
                match searches.at(at) {
                    Some(found) => prop_assert_eq!(found, want, "position {}", at),
                    // (That the filter does skip is `a_scan_skips_searches_the_filter_rules_out`.)
                    None => prop_assert!(want.1 < GRAM, "position {}: {:?} skipped", at, want),
                }
            }
        }
    }

    #[test]
    fn the_filter_holds_every_string_of_its_source(
        old in proptest::collection::vec(any::<u8>(), 0..5000),
        small in proptest::collection::vec(proptest::sample::select(vec![0u8, 7]), 0..300),
    ) {
        for src in [&old, &small] {
            let g = Grams::new(src);
            for w in src.windows(GRAM) {
                prop_assert!(g.may_hold(w));
            }
            // Too short to say: held.
            prop_assert!(g.may_hold(&[1, 2, 3]));
        }
    }
}

/// The filter says no to most strings its source lacks: at 4 bits a string, one in six
/// or so gets through (a Bloom filter of two bits in one word).
#[test]
fn the_filter_says_no_to_most_strings_its_source_lacks() {
    let mut rnd = xorshift(11);
    let old: Vec<u8> = (0..1_000_000).map(|_| rnd() as u8).collect();
    let g = Grams::new(&old);
    let tries = 200_000;
    let through = (0..tries)
        .filter(|_| {
            let q: Vec<u8> = (0..GRAM).map(|_| rnd() as u8).collect();
            g.may_hold(&q)
        })
        .count();
    let rate = through as f64 / tries as f64;
    assert!(
        rate < 0.20,
        "{through} of {tries} absent strings got through"
    );
    // And a source's own strings all get through, with a filter of the size it claims.
    assert!(old.windows(GRAM).all(|w| g.may_hold(w)));
    assert_eq!(Grams::memory(old.len() as u64), old.len() as u64 / 2);
}

/// A scan of a large source asks the filter, and skips most searches where the new bytes
/// share nothing with it; the patch still rebuilds the new bytes.
#[test]
fn a_scan_skips_searches_the_filter_rules_out() {
    let mut rnd = xorshift(5);
    let old: Vec<u8> = (0..300_000).map(|_| rnd() as u8).collect();
    let mut new = old[1000..101_000].to_vec();
    new.extend((0..50_000).map(|_| rnd() as u8));
    new.extend_from_slice(&old[200_000..250_000]);
    let idx = Index::new(&old);
    assert!(idx.grams.is_some(), "a source of 300 KB has a filter");
    let mut searches = Searches::new(&idx, &new);
    let fresh = 100_000..150_000;
    let skipped = fresh
        .clone()
        .filter(|&at| searches.at(at).is_none())
        .count();
    assert!(
        skipped * 10 > fresh.len() * 8,
        "{skipped} of {} skipped",
        fresh.len()
    );
    roundtrip(&old, &new);
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
        let mut s = diff(&stretch, &new).unwrap();
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
