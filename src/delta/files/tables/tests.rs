use super::*;
use crate::delta::files::refs::sample::{go_like, linked, pc_tables};
use proptest::prelude::*;

fn read_all(file: &[u8]) -> impl Fn(u64, u64) -> Option<Vec<u8>> + '_ {
    |o, n| file.get(o as usize..(o + n) as usize).map(<[u8]>::to_vec)
}

fn tables_of(file: &[u8]) -> Vec<Table> {
    let code = crate::delta::files::refs::elf_code(file.len() as u64, read_all(file))
        .map(|c| c.ranges)
        .unwrap_or_default();
    elf_tables(file.len() as u64, &code, read_all(file))
}

#[test]
fn a_linked_program_has_its_relocations_and_unwind_index_found() {
    let file = linked(50, 1);
    let tables = tables_of(&file);
    assert_eq!(tables.len(), 3, "{tables:?}");
    assert_eq!(tables[0].kind, RELA64);
    assert_eq!(tables[0].len, 99 * 24, "all relocations but the first");
    assert_eq!(tables[1].kind, PAIRS32);
    assert_eq!(tables[1].len, 49 * 8, "all functions but the first");
    // The unwind records: all of them, but the terminator.
    assert_eq!(tables[2].kind, EH_FRAME);
    assert_eq!(tables[2].start, tables[1].start + tables[1].len);
    let records = &file[tables[2].start as usize..][..tables[2].len as usize + 4];
    assert_eq!(&records[records.len() - 4..], &[0; 4]);
    // The index's first entry (the one before the table's first) is the first function.
    let first = tables[1].start as usize - 8;
    let hdr = first - 12;
    let start = i32::from_le_bytes(file[first..first + 4].try_into().unwrap());
    assert_eq!(hdr as i64 + start as i64, 64);
}

#[test]
fn relocations_and_the_unwind_index_become_few_strings() {
    let file = linked(400, 2);
    let tables = Tables::of_piece(&tables_of(&file), 0, file.len() as u64).unwrap();
    let mut rewritten = file.clone();
    assert_eq!(
        tables.to_differences(&mut rewritten),
        799 * 2 + 399 * 2 + 400 * 2
    );
    let distinct = |b: &[u8], t: &Table, width: usize| {
        let mut seen: Vec<&[u8]> = b[t.start as usize..(t.start + t.len) as usize]
            .chunks(width)
            .collect();
        seen.sort();
        seen.dedup();
        seen.len()
    };
    let (rela, index) = (&tables.tables[0], &tables.tables[1]);
    // r_offset's steps (8) and r_info (the same) are two values; the addends stay.
    assert!(distinct(&file, rela, 8) > 400);
    assert!(distinct(&rewritten, rela, 8) <= 2 + 400);
    let offsets_and_infos = |b: &[u8]| {
        let mut seen: Vec<&[u8]> = b[rela.start as usize..(rela.start + rela.len) as usize]
            .chunks(24)
            .map(|e| &e[..16])
            .collect();
        seen.sort();
        seen.dedup();
        seen.len()
    };
    assert!(offsets_and_infos(&file) > 700);
    assert_eq!(offsets_and_infos(&rewritten), 1);
    // The index: function sizes (300 kinds at most) and four FDE sizes.
    assert!(distinct(&file, index, 4) > 700);
    assert!(distinct(&rewritten, index, 4) <= 300 + 4);
    // The unwind records: every FDE's CIE pointer the same (the CIE is at the table's
    // start: 0 + 1), and each pc_begin the function before's size (300 at most).
    let frame = &tables.tables[2];
    let fde_fields = |b: &[u8]| {
        let (mut ids, mut pcs) = (Vec::new(), Vec::new());
        let mut at = frame.start as usize + 24;
        while at < (frame.start + frame.len) as usize {
            let len = u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize;
            ids.push(b[at + 4..at + 8].to_vec());
            pcs.push(b[at + 8..at + 12].to_vec());
            at += 4 + len;
        }
        ids.sort();
        ids.dedup();
        pcs.sort();
        pcs.dedup();
        (ids.len(), pcs.len())
    };
    let (ids, pcs) = fde_fields(&file);
    assert!(ids == 400 && pcs > 350, "{ids} {pcs}");
    let (ids, pcs) = fde_fields(&rewritten);
    assert_eq!(ids, 1);
    assert!(pcs <= 300 + 1, "{pcs}");
    assert_eq!(
        &rewritten[frame.start as usize + 28..][..4],
        &1u32.to_le_bytes()
    );
    let mut back = rewritten;
    tables.to_values(&mut back).unwrap();
    assert_eq!(back, file);
}

#[test]
fn unwind_records_of_other_encodings_are_left_as_they_are() {
    let file = linked(30, 4);
    let frame = tables_of(&file)[2];
    // The CIE's R augmentation: absolute 8-byte pointers.
    let r = frame.start as usize + 16;
    assert_eq!(file[r], 0x1B);
    let mut other = file.clone();
    other[r] = 0x00;
    assert!(tables_of(&other).iter().all(|t| t.kind != EH_FRAME));
    // CIEs with personality and LSDA encodings before R, and without R.
    let cie = |aug: &[u8], data: &[u8]| {
        let mut c = vec![0u8; 8];
        c.push(1);
        c.extend_from_slice(aug);
        c.extend_from_slice(&[0, 1, 0x78, 16, data.len() as u8]);
        c.extend_from_slice(data);
        c
    };
    let personality = [0x9B, 1, 2, 3, 4];
    let with = |r: u8| [&[0x9Bu8, 1, 2, 3, 4][..], &[0x1B, r]].concat();
    assert_eq!(cie_encoding(&cie(b"zPLR", &with(0x1B))), Some(0x1B));
    assert_eq!(cie_encoding(&cie(b"zPLR", &with(0x03))), Some(0x03));
    assert_eq!(cie_encoding(&cie(b"zP", &personality)), None);
    assert_eq!(cie_encoding(&cie(b"R", &[0x1B])), None, "no z");
    assert_eq!(
        cie_encoding(&cie(b"zQR", &[0, 0x1B])),
        None,
        "unknown letter"
    );
    assert_eq!(cie_encoding(&cie(b"zR", &[])[..12]), None, "cut short");
}

#[test]
fn a_big_sections_records_come_in_tables_a_piece_can_hold() {
    let file = linked(6000, 5);
    let frames: Vec<Table> = tables_of(&file)
        .into_iter()
        .filter(|t| t.kind == EH_FRAME)
        .collect();
    assert!(frames.len() >= 3, "{frames:?}");
    for w in frames.windows(2) {
        assert_eq!(w[0].start + w[0].len, w[1].start);
        assert!(w[0].len >= RECORDS_PIECE);
    }
    // A piece from the middle of the second table holds the third whole, if it reaches.
    let (second, third) = (frames[1], frames[2]);
    let p = Tables::of_piece(
        &frames,
        second.start + 8,
        third.start + third.len - second.start,
    );
    assert_eq!(
        p.unwrap().tables,
        vec![Table {
            start: third.start - second.start - 8,
            ..third
        }]
    );
    assert!(Tables::of_piece(&frames, second.start + 8, third.len).is_none());
}

#[test]
fn flip_is_its_own_inverse_and_keeps_zero_apart() {
    for q in [0u32, 4, 100, u32::MAX - 1, u32::MAX] {
        for v in [1u32, 2, q, q.wrapping_add(1), q.wrapping_add(2), u32::MAX] {
            if v == 0 {
                continue;
            }
            assert_ne!(flip(v, q), 0, "{v} at {q}");
            assert_eq!(flip(flip(v, q), q), v, "{v} at {q}");
        }
    }
    // Pointers to one CIE from anywhere: one value.
    assert_eq!(flip(40 - 8, 40), 9);
    assert_eq!(flip(4000 - 8, 4000), 9);
}

#[test]
fn this_test_program_compresses_smaller_with_its_tables_as_differences() {
    // A real linked program: the test binary itself, as the toolchain here links it.
    let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
    let found = tables_of(&exe);
    assert!(found.iter().any(|t| t.kind == RELA64), "{found:?}");
    assert!(found.iter().any(|t| t.kind == PAIRS32), "{found:?}");
    let tables = Tables::of_piece(&found, 0, exe.len() as u64).unwrap();
    let span = |b: &[u8]| -> Vec<u8> {
        tables
            .tables
            .iter()
            .flat_map(|t| b[t.start as usize..(t.start + t.len) as usize].to_vec())
            .collect()
    };
    let mut rewritten = exe.clone();
    tables.to_differences(&mut rewritten);
    let size = |b: &[u8]| zstd::bulk::compress(b, 19).unwrap().len();
    let (before, after) = (size(&span(&exe)), size(&span(&rewritten)));
    assert!(
        (after as f64) < before as f64 * 0.8,
        "tables of {} bytes: {before} -> {after} compressed",
        span(&exe).len()
    );
    tables.to_values(&mut rewritten).unwrap();
    assert!(rewritten == exe);
}

#[test]
fn tables_clear_of_code_and_of_each_other_only() {
    let file = linked(20, 3);
    let all = tables_of(&file);
    // Code over the index's first entry: the index is dropped, the others kept.
    let first = all[1].start - 8;
    let code = [(64, 10), (first + 4, 2)];
    let kept = elf_tables(file.len() as u64, &code, read_all(&file));
    assert_eq!(kept, vec![all[0], all[2]]);
    // Not an ELF program or library: nothing.
    let mut object = file.clone();
    object[16] = 1; // ET_REL
    assert!(elf_tables(object.len() as u64, &[], read_all(&object)).is_empty());
    // An index of another encoding: the others.
    let mut other = file.clone();
    other[(all[1].start - 8 - 12) as usize + 3] = 0x1B;
    assert_eq!(tables_of(&other), vec![all[0], all[2]]);
}

#[test]
fn pieces_name_the_entries_they_hold_after_their_first() {
    let t = [Table {
        start: 100,
        len: 240,
        kind: RELA64,
    }];
    // The whole file: as it is.
    assert_eq!(Tables::of_piece(&t, 0, 1000).unwrap().tables, t.to_vec());
    // A piece from inside the table: from the second whole entry in it.
    let p = Tables::of_piece(&t, 130, 1000).unwrap();
    assert_eq!(
        p.tables,
        vec![Table {
            start: 172 - 130,
            len: 340 - 172,
            kind: RELA64
        }]
    );
    // A piece ending inside an entry: up to the last whole one.
    let p = Tables::of_piece(&t, 0, 200).unwrap();
    assert_eq!(p.tables[0].len, 196 - 100);
    // A piece holding the first entry and the one after: that one.
    assert_eq!(Tables::of_piece(&t, 76, 48).unwrap().tables[0].len, 24);
    // A piece holding one whole entry: none to rewrite.
    assert!(Tables::of_piece(&t, 80, 48).is_none());
    assert!(Tables::of_piece(&t, 400, 100).is_none());
}

#[test]
fn operations_fields_round_trip_and_bad_ones_are_refused() {
    let t = Tables {
        tables: vec![
            Table {
                start: 24,
                len: 48,
                kind: RELA64,
            },
            Table {
                start: 100,
                len: 16,
                kind: PAIRS32,
            },
        ],
    };
    let mut ops = Vec::new();
    t.write(&mut ops);
    let mut r = &ops[..];
    assert_eq!(Tables::read(&mut r, 116).unwrap(), t);
    assert!(r.is_empty());
    assert!(t.check(116).is_ok());
    assert!(t
        .check(115)
        .unwrap_err()
        .to_string()
        .contains("past the 115 bytes"));
    let bad = |fields: &[u64], limit: u64| {
        let mut ops = Vec::new();
        for &f in fields {
            put(&mut ops, f);
        }
        Tables::read(&mut &ops[..], limit).unwrap_err().to_string()
    };
    assert!(bad(&[1, 24, 48, 6], 100).contains("unknown kind of table 6"));
    // Records and pc-value tables of any length; but tables still in order.
    let mut ops = Vec::new();
    for f in [3, 0, 10, EH_FRAME, 0, 7, EH_FRAME, 1, 5, GO_PCTAB] {
        put(&mut ops, f);
    }
    let t = Tables::read(&mut &ops[..], 100).unwrap();
    assert_eq!((t.tables[1].start, t.tables[1].len), (10, 7));
    assert_eq!((t.tables[2].start, t.tables[2].len), (18, 5));
    assert!(bad(&[1, 16, 48, RELA64], 100).contains("not whole entries after one"));
    assert!(bad(&[1, 24, 40, RELA64], 100).contains("not whole entries after one"));
    assert!(bad(&[1, 24, 48, RELA64], 71).contains("beyond the output"));
    assert!(bad(&[1, u64::MAX, 8, PAIRS32], u64::MAX).contains("beyond the output"));
    assert!(bad(&[MAX_TABLES + 1], 100).contains("tables in a TABLES operation"));
}

/// Tables placed in `bytes` from cuts (gap, entries, kind 1-5): sorted, not overlapping,
/// each at least an entry after the one before, whole entries; records are whatever the
/// bytes say (a table of `_func` records starts at a multiple of 8); pc-value tables end
/// where the last table that ends in them does (none if none does).
fn tables_in(bytes: &[u8], cuts: &[(u64, u64, u64)]) -> Tables {
    let len = bytes.len() as u64;
    let mut tables = Vec::new();
    let mut end = 0;
    for &(gap, entries, kind) in cuts {
        let entry = entry_size(kind).unwrap();
        let mut start = end + gap.max(entry);
        if kind == GO_FUNCS {
            start = start.next_multiple_of(8);
        }
        let n = entries.min(len.saturating_sub(start) / entry.max(1));
        if n == 0 {
            break;
        }
        let table_len = match kind {
            EH_FRAME => n * 9,
            GO_FUNCS => n * 60,
            GO_PCTAB => n * 20,
            _ => n * entry,
        };
        let mut table_len = table_len.min(len - start);
        if kind == GO_PCTAB {
            let b = &bytes[start as usize..(start + table_len) as usize];
            let mut at = 0;
            while let Some(end) = pc_table_end(b, at) {
                at = end;
            }
            if at == 0 {
                continue;
            }
            table_len = at as u64;
        }
        tables.push(Table {
            start,
            len: table_len,
            kind,
        });
        end = start + table_len;
    }
    Tables { tables }
}

/// `_func` records through `bytes` from its start, at multiples of 8: their counts of
/// `pcdata` (0-5) and `funcdata` (0-7) set, some `pcdata` 0 or equal to the record's
/// `pcsp`, the other bytes as they are.
fn go_records_like(bytes: &mut [u8]) {
    let mut at = 0;
    while at + 44 <= bytes.len() {
        let (pcdata, funcdata) = (bytes[at] as u32 % 6, bytes[at + 1] % 8);
        bytes[at + 28..at + 32].copy_from_slice(&pcdata.to_le_bytes());
        bytes[at + 43] = funcdata;
        let pcsp: [u8; 4] = bytes[at + 16..at + 20].try_into().unwrap();
        for i in 0..pcdata as usize {
            let p = at + 44 + 4 * i;
            match (bytes.get(p), bytes.len() >= p + 4) {
                (Some(&b), true) if b % 3 == 0 => bytes[p..p + 4].copy_from_slice(&[0; 4]),
                (Some(&b), true) if b % 3 == 1 => bytes[p..p + 4].copy_from_slice(&pcsp),
                _ => {}
            }
        }
        at = (at + 44 + 4 * (pcdata + funcdata as u32) as usize).next_multiple_of(8);
    }
}

/// Record lengths through `bytes` as `.eh_frame` has them, small ones more often than not,
/// a CIE (pointer 0) now and then.
fn records_like(bytes: &mut [u8]) {
    let mut at = 0;
    let mut i = 0u32;
    while at + 4 <= bytes.len() {
        let len = 8 + (bytes[at] as u32 % 24) * (i % 5 + 1) / 2;
        bytes[at..at + 4].copy_from_slice(&len.to_le_bytes());
        if i % 7 == 0 && at + 8 <= bytes.len() {
            bytes[at + 4..at + 8].copy_from_slice(&[0; 4]);
        }
        at += 4 + len as usize;
        i += 1;
    }
}

/// Go's pc-value tables through `bytes` from its start, as its bytes say: pairs of varints
/// of one or two bytes (a change of value, 0 now and then as a table's first, then a step
/// of pc), ended by a 0 after one to eight pairs.
fn pc_tables_like(bytes: &mut [u8]) {
    let (mut at, mut pairs) = (0, 0);
    while at < bytes.len() {
        let seed = bytes[at];
        let end = if pairs > 0 && seed % 9 < 2 {
            bytes[at] = 0;
            pairs = 0;
            at + 1
        } else {
            // The change (not 0 after the first pair), then the step.
            if pairs > 0 && bytes[at] & 0x7F == 0 {
                bytes[at] |= 1;
            }
            let mut at = at;
            for two in [seed % 3 == 0, seed % 5 == 0] {
                if two && at + 1 < bytes.len() {
                    bytes[at] |= 0x80;
                    bytes[at + 1] &= 0x7F;
                    at += 2;
                } else if at < bytes.len() {
                    bytes[at] &= 0x7F;
                    at += 1;
                }
            }
            pairs += 1;
            at
        };
        at = end;
    }
}

#[test]
fn pc_value_tables_are_rewritten_each_on_its_own_and_come_back() {
    let b = pc_tables(400, 7);
    let tables = &b[1..];
    let split = pctab_split(tables);
    assert_eq!(split.len(), tables.len());
    assert_ne!(split, tables);
    assert_eq!(pctab_join(&split).as_deref(), Some(tables));
    // Each table rewritten where it is: the first table's changes of value first.
    let first = pc_table_end(tables, 0).unwrap();
    assert_eq!(pctab_split(&tables[..first])[..], split[..first]);
    let mut changes = Vec::new();
    let (mut walk, mut at) = (PcWalk::START, 0);
    while at < first {
        let end = varint_end(tables, at);
        if walk != PcWalk::Step {
            changes.extend_from_slice(&tables[at..end]);
        }
        walk = walk.after(&tables[at..end]);
        at = end;
    }
    assert_eq!(split[..changes.len()], changes[..]);
    // Bytes after the last table that ends stay as they are, and a reader refuses a
    // rewritten piece cut short.
    let cut = &tables[..tables.len() - 3];
    let last = {
        let mut at = 0;
        while let Some(end) = pc_table_end(cut, at) {
            at = end;
        }
        at
    };
    assert_eq!(pctab_split(cut)[last..], cut[last..]);
    assert_eq!(pctab_join(&split[..split.len() - 1]), None);
    assert_eq!(pctab_join(&[0x80]), None);
    assert_eq!(pctab_join(&[]).as_deref(), Some(&[][..]));
    // A reader names what it refuses.
    let t = Tables {
        tables: vec![Table {
            start: 1,
            len: 3,
            kind: GO_PCTAB,
        }],
    };
    let err = t
        .to_values(&mut [7, 5, 0x81, 0x81])
        .unwrap_err()
        .to_string();
    assert!(err.contains("pc-value tables at 1 (3 bytes)"), "{err}");
}

proptest! {
    #[test]
    fn pc_value_tables_come_back_and_any_bytes_are_no_trouble(
        bytes in prop::collection::vec(any::<u8>(), 0..2000),
        like in any::<bool>(),
    ) {
        let mut bytes = bytes;
        if like {
            pc_tables_like(&mut bytes);
        }
        let mut end = 0;
        while let Some(e) = pc_table_end(&bytes, end) {
            end = e;
        }
        let split = pctab_split(&bytes[..end]);
        let joined = pctab_join(&split);
        prop_assert_eq!(joined.as_deref(), Some(&bytes[..end]));
        // Whatever a hostile package holds: an answer, never a panic.
        let _ = pctab_join(&bytes);
    }

    #[test]
    fn whole_outputs_come_back(
        bytes in prop::collection::vec(any::<u8>(), 0..3000),
        cuts in prop::collection::vec((0u64..200, 0u64..40, 1u64..6), 0..6),
        walkable in 0u8..4,
    ) {
        let mut bytes = bytes;
        match walkable {
            1 => records_like(&mut bytes),
            2 => go_records_like(&mut bytes),
            3 => pc_tables_like(&mut bytes),
            _ => {}
        }
        let tables = tables_in(&bytes, &cuts);
        let mut out = bytes.clone();
        tables.to_differences(&mut out);
        tables.to_values(&mut out).unwrap();
        prop_assert_eq!(out, bytes);
    }

    #[test]
    fn a_patchs_new_bytes_come_back_wherever_its_runs_fall(
        bytes in prop::collection::vec(any::<u8>(), 1..3000),
        cuts in prop::collection::vec((0u64..200, 0u64..40, 1u64..6), 0..6),
        runs in prop::collection::vec((0u64..100, 0u64..100), 1..40),
        walkable in 0u8..4,
    ) {
        let mut bytes = bytes;
        match walkable {
            1 => records_like(&mut bytes),
            2 => go_records_like(&mut bytes),
            3 => pc_tables_like(&mut bytes),
            _ => {}
        }
        let len = bytes.len() as u64;
        let tables = tables_in(&bytes, &cuts);
        // Controls over the output: `add` bytes the patch makes from its source (here
        // already as the new file has them), then `copy` new bytes from extra.
        let mut controls = Vec::new();
        let mut at = 0;
        for &(add, copy) in &runs {
            let add = add.min(len - at);
            let copy = copy.min(len - at - add);
            controls.push(Control { add, copy, seek: 0 });
            at += add + copy;
        }
        let mut extra: Vec<u8> = Vec::new();
        let mut at = 0;
        for c in &controls {
            at += c.add;
            extra.extend_from_slice(&bytes[at as usize..(at + c.copy) as usize]);
            at += c.copy;
        }
        tables.extra_to_differences(&controls, &mut extra, &bytes);
        // The decoder's output: the patch's bytes, and the new bytes as shipped.
        let mut out = bytes.clone();
        let (mut at, mut taken) = (0usize, 0usize);
        for c in &controls {
            at += c.add as usize;
            let n = c.copy as usize;
            out[at..at + n].copy_from_slice(&extra[taken..taken + n]);
            at += n;
            taken += n;
        }
        tables.to_values_in_output(&controls, &mut out).unwrap();
        prop_assert_eq!(out, bytes);
    }

    #[test]
    fn a_files_pieces_come_back_on_their_own(
        seed in any::<u64>(),
        functions in 2usize..120,
        cuts in prop::collection::vec(1u64..4000, 1..8),
    ) {
        let file = linked(functions, seed);
        let found = tables_of(&file);
        let mut start = 0u64;
        let mut pieces = cuts.iter().copied().chain(std::iter::once(u64::MAX));
        while start < file.len() as u64 {
            let len = pieces.next().unwrap_or(u64::MAX).min(file.len() as u64 - start);
            let piece = &file[start as usize..(start + len) as usize];
            if let Some(t) = Tables::of_piece(&found, start, len) {
                prop_assert!(t.check(len).is_ok());
                let mut out = piece.to_vec();
                t.to_differences(&mut out);
                t.to_values(&mut out).unwrap();
                prop_assert_eq!(&out[..], piece);
            }
            start += len;
        }
    }

    #[test]
    fn any_bytes_after_an_elf_header_are_no_trouble(
        mut file in prop::collection::vec(any::<u8>(), 64..2000),
        shoff in 0u64..2000,
        shnum in 0u16..40,
        shstrndx in 0u16..40,
    ) {
        file[..7].copy_from_slice(b"\x7fELF\x02\x01\x01");
        file[16..18].copy_from_slice(&3u16.to_le_bytes());
        file[0x28..0x30].copy_from_slice(&shoff.to_le_bytes());
        file[0x3A..0x3C].copy_from_slice(&64u16.to_le_bytes());
        file[0x3C..0x3E].copy_from_slice(&shnum.to_le_bytes());
        file[0x3E..0x40].copy_from_slice(&shstrndx.to_le_bytes());
        let found = elf_tables(file.len() as u64, &[], read_all(&file));
        let mut end = 0;
        for t in &found {
            let entry = entry_size(t.kind).unwrap();
            prop_assert!(t.start >= end + entry && t.len % entry.max(1) == 0);
            prop_assert!(t.start + t.len <= file.len() as u64);
            end = t.start + t.len;
        }
        if let Some(t) = Tables::of_piece(&found, 0, file.len() as u64) {
            let mut out = file.clone();
            t.to_differences(&mut out);
            t.to_values(&mut out).unwrap();
            prop_assert_eq!(out, file);
        }
    }
}

#[test]
fn go_programs_have_their_function_table_found() {
    for pie in [false, true] {
        let (file, ftab) = go_like(pie, true, 700);
        let tables = tables_of(&file);
        // The pc-value tables, from the byte after the header's 72 and the zero byte the
        // linker writes first, to the end of the last, in pieces of at least 16 KiB.
        let k = tables.iter().position(|t| t.kind != GO_PCTAB).unwrap();
        let (pctab, rest) = tables.split_at(k);
        assert!(pctab.len() >= 2, "{pctab:?}");
        let pctab_at = pctab[0].start - 73;
        assert_eq!(&file[pctab_at as usize..][..4], &[0xF1, 0xFF, 0xFF, 0xFF]);
        for w in pctab.windows(2) {
            assert_eq!(w[0].start + w[0].len, w[1].start);
            assert!(w[0].len >= PCTAB_PIECE);
        }
        let pctab_end = pctab.last().map(|t| t.start + t.len).unwrap() as usize;
        assert_eq!(file[pctab_end - 1], 0);
        assert!(file[pctab_end..ftab as usize].iter().all(|&b| b == 0));
        assert_eq!(
            rest[0],
            Table {
                start: ftab + 8,
                len: 700 * 8,
                kind: PAIRS32
            },
            "pie: {pie}"
        );
        // The `_func` records from the first, after the table, to the end of the last.
        let records = &rest[1..];
        assert!(records.iter().all(|t| t.kind == GO_FUNCS), "{tables:?}");
        assert_eq!(records[0].start, ftab + 701 * 8);
        let last = u32::from_le_bytes(
            file[(ftab + 700 * 8 - 4) as usize..][..4]
                .try_into()
                .unwrap(),
        );
        let r = (ftab + last as u64) as usize;
        let size = 44
            + 4 * (u32::from_le_bytes(file[r + 28..r + 32].try_into().unwrap())
                + file[r + 43] as u32);
        let end = records.last().map(|t| t.start + t.len).unwrap();
        assert_eq!(end, r as u64 + size as u64);
        let t = Tables::of_piece(&tables, 0, file.len() as u64).unwrap();
        let mut rewritten = file.clone();
        t.to_differences(&mut rewritten);
        let table = |b: &[u8]| {
            let mut e: Vec<&[u8]> = b[ftab as usize + 8..][..700 * 8].chunks(8).collect();
            e.sort();
            e.dedup();
            e.len()
        };
        assert_eq!(table(&file), 700);
        // One operation names the pc-value tables that meet as one, rewritten.
        assert_eq!(t.tables.iter().filter(|t| t.kind == GO_PCTAB).count(), 1);
        let pcs = pctab[0].start as usize..pctab_end;
        assert_ne!(rewritten[pcs.clone()], file[pcs.clone()]);
        assert_eq!(rewritten[pcs.clone()], pctab_split(&file[pcs])[..]);
        assert!(table(&rewritten) <= 500 * 6, "{}", table(&rewritten));
        // The records' fields as differences: far fewer distinct words.
        let words = |b: &[u8]| {
            let t = &records[0];
            let mut w: Vec<&[u8]> = b[t.start as usize..(t.start + t.len) as usize]
                .chunks(4)
                .collect();
            w.sort();
            w.dedup();
            w.len()
        };
        assert!(
            words(&rewritten) * 2 < words(&file),
            "{} {}",
            words(&rewritten),
            words(&file)
        );
        t.to_values(&mut rewritten).unwrap();
        assert!(rewritten == file);
    }
    // Not a Go program: its data is not searched.
    let (file, _) = go_like(true, false, 700);
    assert!(tables_of(&file).is_empty());
}
