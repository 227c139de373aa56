use proptest::prelude::*;

pub(crate) use super::sample::*;
use super::*;

/// A section with a record of every kind, the type fields of some referring to the
/// kernel and of others to the module's own types.
fn every_kind(build: Build) -> Vec<u8> {
    use Ref::*;
    let mut s = Section::new(build);
    let int = s.record(Name("int"), 1, 0, 4, &[0x0100_0020]);
    let t = |s: &Section, r| s.ty(r);
    let ptr = t(&s, Kernel(640));
    s.record(Zero, 2, 0, ptr, &[]);
    let (elem, index) = (t(&s, Own(int)), t(&s, Kernel(3)));
    s.record(Zero, 3, 0, 0, &[elem, index, 16]);
    // A struct with a kernel-named member of a kernel type and an own-named one of ours.
    let (m1n, m1t) = (s.name(Kernel(12_345)), t(&s, Kernel(250)));
    let (m2n, m2t) = (s.name(Name("count")), t(&s, Own(int)));
    s.record(Name("mod_state"), 4, 2, 24, &[m1n, m1t, 0, m2n, m2t, 64]);
    let (u1n, u1t) = (s.name(Kernel(40_000)), t(&s, Kernel(999)));
    s.record(Kernel(31_000), 5, 1, 8, &[u1n, u1t, 0]);
    let (e1, e2) = (s.name(Name("MOD_A")), s.name(Kernel(4_000)));
    s.record(Name("mod_enum"), 6, 2, 4, &[e1, 7, e2, 0xffff_ffff]);
    s.record(Name("fwd"), 7, 0, 0, &[]);
    for (kind, target) in [
        (8, Kernel(700)),
        (9, Own(int)),
        (10, Kernel(501)),
        (11, Own(2)),
    ] {
        let target = t(&s, target);
        s.record(Name("q"), kind, 0, target, &[]);
    }
    let (ret, p1n, p1t) = (t(&s, Kernel(100)), s.name(Name("arg")), t(&s, Kernel(99)));
    let proto = s.record(Zero, 13, 1, ret, &[p1n, p1t]);
    let proto = t(&s, Own(proto));
    s.record(Name("mod_init"), 12, 1, proto, &[]);
    let var_t = t(&s, Kernel(1000));
    let var = s.record(Name("mod_var"), 14, 0, var_t, &[1]);
    let var = t(&s, Own(var));
    s.record(Name(".data"), 15, 1, 8, &[var, 0, 8]);
    s.record(Name("float"), 16, 0, 8, &[]);
    let tagged = t(&s, Kernel(1));
    s.record(Name("tag"), 17, 0, tagged, &[0xffff_ffff]);
    let tagged = t(&s, Own(int));
    s.record(Name("user"), 18, 0, tagged, &[]);
    let v = s.name(Kernel(29_999));
    s.record(Name("mod_enum64"), 19, 1, 8, &[v, 1, 2]);
    s.finish()
}

#[test]
fn every_kind_is_parsed_and_only_references_are_rewritten() {
    let (old, new) = (every_kind(OLD), every_kind(NEW));
    assert_eq!(old.len(), new.len());
    let p = Parsed::new(&old).expect("parses");
    assert_eq!(p.records.len(), 19);
    // 17 type fields; 19 record names and 7 of members, a parameter and enum values.
    assert_eq!((p.types.len(), p.names.len()), (17, 26));
    let map = BtfMap {
        types: Shifts::fit([(100, 103), (500, 511), (701, 713), (1001, 1013)]),
        names: Shifts::fit([(5_000, 5_120), (30_001, 30_378), (50_000, 50_377)]),
    };
    let (mut o, n) = (module(&old, b"code"), module(&new, b"code"));
    rewrite(&mut o, &map);
    assert!(o == n, "the rewritten old section is the new one");
}

#[test]
fn what_is_not_a_well_formed_btf_section_is_left_as_it_is() {
    let map = BtfMap {
        types: Shifts::fit([(1, 5)]),
        names: Shifts::fit([(1, 5)]),
    };
    let good = every_kind(OLD);
    let unchanged = |f: Vec<u8>| {
        let mut g = f.clone();
        rewrite(&mut g, &map);
        assert!(g == f);
    };
    // Another section name, not ELF, a big-endian ELF, a truncated file.
    unchanged(module_with(&good, b"x", ".BTX"));
    unchanged(good.clone());
    let mut be = module(&good, b"x");
    be[5] = 2;
    unchanged(be);
    let m = module(&good, b"x");
    unchanged(m[..m.len() - 10].to_vec());
    // Sections that do not parse: bad magic, an unknown kind, a record past the type
    // area, a string area past the section.
    let mut bad_magic = good.clone();
    bad_magic[0] = 0;
    unchanged(module(&bad_magic, b""));
    let mut unknown = good.clone();
    unknown[24 + 7] = 20;
    unchanged(module(&unknown, b""));
    let mut long = good.clone();
    long[24 + 4] = 200; // the first record (an INT) claims 200 members it does not have
    long[24 + 7] = 4;
    unchanged(module(&long, b""));
    let mut strings = good.clone();
    strings[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
    unchanged(module(&strings, b""));
    // And a good one does change.
    let mut m = module(&good, b"x");
    rewrite(&mut m, &map);
    assert!(m != module(&good, b"x"));
}

#[test]
fn a_renumbering_is_learnt_from_modules_and_undone_exactly() {
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..40)
        .map(|i| (generated(i, OLD), generated(i, NEW)))
        .collect();
    let surveys: Vec<Survey> = pairs
        .iter()
        .map(|(o, n)| Survey::new(o, n).expect("both parse"))
        .collect();
    let kernel = Kernel::settle(surveys.iter()).expect("a kernel");
    assert_eq!(
        (kernel.old_names, kernel.new_names),
        (OLD.name_base, NEW.name_base)
    );
    // The type bases are as the modules show them: at most the kernel's.
    assert!(kernel.old_types <= OLD.type_base && kernel.old_types > OLD.type_base - 5);
    assert_eq!(
        kernel.new_types - kernel.old_types,
        NEW.type_base - OLD.type_base
    );
    let mut votes = Votes::default();
    for (o, n) in &pairs[..20] {
        votes.align(&kernel, o, n);
    }
    let mut more = Votes::default();
    for (o, n) in &pairs[20..] {
        more.align(&kernel, o, n);
    }
    votes.merge(more);
    let map = votes.finish(&kernel);
    for (o, n) in &pairs {
        let (mut o, n) = (module(o, b"text"), module(n, b"text"));
        rewrite(&mut o, &map);
        assert!(o == n, "an old module rewritten is its new build");
    }
    // The map is small: a piece where the shift changes, plus the own ends.
    assert!(map.types.len() <= 6 && map.names.len() <= 6, "{map:?}");
}

#[test]
fn records_added_in_a_rebuild_are_aligned_around() {
    // The new build of each module has one more record in the middle: alignment still
    // pairs the rest, and the map is learnt as well as without.
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..30)
        .map(|i| {
            let (old, mut new) = (generated(i, OLD), generated(i, NEW));
            let mut rec = Vec::new();
            for w in [0u32, 2 << 24, (NEW.types)(77)] {
                rec.extend_from_slice(&w.to_le_bytes());
            }
            let p = Parsed::new(&new).expect("parses");
            let at = p.names[p.records[40].names.start] as usize;
            new = splice(&new, at, &rec);
            (old, new)
        })
        .collect();
    let surveys: Vec<Survey> = pairs
        .iter()
        .filter_map(|(o, n)| Survey::new(o, n))
        .collect();
    assert_eq!(surveys.len(), 30);
    let kernel = Kernel::settle(surveys.iter()).expect("a kernel");
    let mut votes = Votes::default();
    for (o, n) in &pairs {
        votes.align(&kernel, o, n);
    }
    let map = votes.finish(&kernel);
    for v in 1..=1000 {
        // Every kernel type the modules refer to maps where the new build put it.
        if pairs.iter().any(|(o, _)| refers_to(o, v)) {
            assert_eq!(map.types.map(v), (NEW.types)(v), "type {v}");
        }
    }
}

/// `section` with `bytes` inserted at `at` and the header's lengths fixed.
fn splice(section: &[u8], at: usize, bytes: &[u8]) -> Vec<u8> {
    let mut s = section[..at].to_vec();
    s.extend_from_slice(bytes);
    s.extend_from_slice(&section[at..]);
    let grow = |s: &mut Vec<u8>, o: usize| {
        let v = u32_at(s, o) + bytes.len() as u32;
        s[o..o + 4].copy_from_slice(&v.to_le_bytes());
    };
    grow(&mut s, 12);
    grow(&mut s, 16);
    s
}

fn refers_to(section: &[u8], v: u32) -> bool {
    let p = Parsed::new(section).expect("parses");
    p.types.iter().any(|&q| p.value(q) == v)
}

#[test]
fn modules_of_another_kernel_are_left_out() {
    let mut other = OLD;
    other.name_base = 70_000;
    let mut surveys: Vec<Survey> = (0..5)
        .map(|i| Survey::new(&generated(i, OLD), &generated(i, NEW)).expect("parses"))
        .collect();
    let stranger = Survey::new(&generated(9, other), &generated(9, NEW)).expect("parses");
    surveys.push(stranger);
    let kernel = Kernel::settle(surveys.iter()).expect("a kernel");
    assert!(surveys[..5].iter().all(|s| kernel.owns(s)));
    assert!(!kernel.owns(&stranger));
    assert_eq!(Kernel::settle([].iter()), None);
}

#[test]
fn hostile_maps_are_refused() {
    let read = |words: &[u64]| {
        let mut it = words.iter().copied();
        BtfMap::read(&mut || it.next().ok_or_else(|| bad("end")))
    };
    let err = |words: &[u64]| read(words).unwrap_err().to_string();
    assert!(err(&[MAX_PIECES + 1]).contains("limit"));
    // A second piece that does not start past the first; a start past u32; a shift step
    // past u32.
    assert!(err(&[2, 5, 0, 0, 0, 0]).contains("not past"));
    assert!(err(&[1, 1 << 32, 0, 0]).contains("starts at"));
    assert!(err(&[1, 1, 1 << 32, 0]).contains("shift"));
    // A piece at 0 would map "no type": refused too.
    assert!(err(&[1, 0, 2, 0]).contains("not past"));
    assert_eq!(read(&[0, 0]).unwrap(), BtfMap::default());
}

proptest! {
    #[test]
    fn shifts_round_trip_and_map_as_pieces(
        raw in proptest::collection::vec(
            (prop_oneof![1u32..50_000, 1u32..=u32::MAX], any::<u32>()),
            0..60,
        ),
        probes in proptest::collection::vec(prop_oneof![any::<u32>(), 0u32..60_000], 40),
    ) {
        let mut pairs = raw.clone();
        pairs.sort_unstable();
        let map = BtfMap { types: Shifts::fit(pairs.clone()), names: Shifts::default() };
        let mut bytes = Vec::new();
        map.write(&mut bytes, crate::delta::files::stream::put);
        let mut rest = &bytes[..];
        let back = BtfMap::read(&mut || crate::delta::files::stream::get(&mut rest)).unwrap();
        prop_assert!(rest.is_empty());
        prop_assert_eq!(&back, &map);
        // Each pair maps exactly where the first of its old value said; anything else as
        // the nearest pair below did.
        pairs.dedup_by_key(|p| p.0);
        // Probed at and beside each start too: the lookup table's buckets end there.
        let beside = pairs.iter().flat_map(|p| [p.0 - 1, p.0, p.0.saturating_add(1)]);
        for v in probes.iter().copied().chain(beside).chain([0, u32::MAX]) {
            let expected = match pairs.iter().rev().find(|p| p.0 <= v) {
                Some(&(o, n)) => v.wrapping_add(n.wrapping_sub(o)),
                None => v,
            };
            prop_assert_eq!(back.types.map(v), expected);
        }
    }

    #[test]
    fn rewriting_damaged_modules_never_panics(
        cuts in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let map = BtfMap { types: Shifts::fit([(1, 9)]), names: Shifts::fit([(1, 3)]) };
        let mut m = module(&every_kind(OLD), b"text");
        for (at, byte) in cuts {
            let i = at.index(m.len());
            m[i] = byte;
        }
        rewrite(&mut m, &map);
    }
}
