use super::*;
use crate::delta::files::refs::sample::linked;
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
    assert_eq!(tables.len(), 2, "{tables:?}");
    assert_eq!(tables[0].kind, RELA64);
    assert_eq!(tables[0].len, 99 * 24, "all relocations but the first");
    assert_eq!(tables[1].kind, EH_FRAME_HDR);
    assert_eq!(tables[1].len, 49 * 8, "all functions but the first");
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
    assert_eq!(tables.to_differences(&mut rewritten), 799 * 2 + 399 * 2);
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
    let mut back = rewritten;
    tables.to_values(&mut back);
    assert_eq!(back, file);
}

#[test]
fn this_test_program_compresses_smaller_with_its_tables_as_differences() {
    // A real linked program: the test binary itself, as the toolchain here links it.
    let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
    let found = tables_of(&exe);
    assert!(found.iter().any(|t| t.kind == RELA64), "{found:?}");
    assert!(found.iter().any(|t| t.kind == EH_FRAME_HDR), "{found:?}");
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
    tables.to_values(&mut rewritten);
    assert!(rewritten == exe);
}

#[test]
fn tables_clear_of_code_and_of_each_other_only() {
    let file = linked(20, 3);
    let all = tables_of(&file);
    // Code over the index's first entry: the index is dropped, the relocations kept.
    let first = all[1].start - 8;
    let code = [(64, 10), (first + 4, 2)];
    let kept = elf_tables(file.len() as u64, &code, read_all(&file));
    assert_eq!(kept, all[..1].to_vec());
    // Not an ELF program or library: nothing.
    let mut object = file.clone();
    object[16] = 1; // ET_REL
    assert!(elf_tables(object.len() as u64, &[], read_all(&object)).is_empty());
    // An index of another encoding: only the relocations.
    let mut other = file.clone();
    other[(all[1].start - 8 - 12) as usize + 3] = 0x1B;
    assert_eq!(tables_of(&other), all[..1].to_vec());
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
                kind: EH_FRAME_HDR,
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
    assert!(bad(&[1, 24, 48, 3], 100).contains("unknown kind of table 3"));
    assert!(bad(&[1, 16, 48, RELA64], 100).contains("not whole entries after one"));
    assert!(bad(&[1, 24, 40, RELA64], 100).contains("not whole entries after one"));
    assert!(bad(&[1, 24, 48, RELA64], 71).contains("beyond the output"));
    assert!(bad(&[1, u64::MAX, 8, EH_FRAME_HDR], u64::MAX).contains("beyond the output"));
    assert!(bad(&[MAX_TABLES + 1], 100).contains("tables in a TABLES operation"));
}

/// Tables placed in `len` bytes from cuts: sorted, not overlapping, each at least an
/// entry in, whole entries.
fn tables_in(len: u64, cuts: &[(u64, u64, bool)]) -> Tables {
    let mut tables = Vec::new();
    let mut end = 0;
    for &(gap, entries, rela) in cuts {
        let (kind, entry) = if rela {
            (RELA64, 24)
        } else {
            (EH_FRAME_HDR, 8)
        };
        let start = end + gap.max(entry);
        let n = entries.min(len.saturating_sub(start) / entry);
        if n == 0 {
            break;
        }
        tables.push(Table {
            start,
            len: n * entry,
            kind,
        });
        end = start + n * entry;
    }
    Tables { tables }
}

proptest! {
    #[test]
    fn whole_outputs_come_back(
        bytes in prop::collection::vec(any::<u8>(), 0..3000),
        cuts in prop::collection::vec((0u64..200, 0u64..40, any::<bool>()), 0..6),
    ) {
        let tables = tables_in(bytes.len() as u64, &cuts);
        let mut out = bytes.clone();
        tables.to_differences(&mut out);
        tables.to_values(&mut out);
        prop_assert_eq!(out, bytes);
    }

    #[test]
    fn a_patchs_new_bytes_come_back_wherever_its_runs_fall(
        bytes in prop::collection::vec(any::<u8>(), 1..3000),
        cuts in prop::collection::vec((0u64..200, 0u64..40, any::<bool>()), 0..6),
        runs in prop::collection::vec((0u64..100, 0u64..100), 1..40),
    ) {
        let len = bytes.len() as u64;
        let tables = tables_in(len, &cuts);
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
        tables.to_values_in_output(&controls, &mut out);
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
                t.to_values(&mut out);
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
            let entry = if t.kind == RELA64 { 24 } else { 8 };
            prop_assert!(t.start >= end + entry && t.len % entry == 0);
            prop_assert!(t.start + t.len <= file.len() as u64);
            end = t.start + t.len;
        }
        if let Some(t) = Tables::of_piece(&found, 0, file.len() as u64) {
            let mut out = file.clone();
            t.to_differences(&mut out);
            t.to_values(&mut out);
            prop_assert_eq!(out, file);
        }
    }
}
