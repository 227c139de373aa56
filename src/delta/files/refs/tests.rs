use super::sample::*;
use super::*;
use crate::delta::files::bsdiff;
use proptest::prelude::*;

fn read_all(file: &[u8]) -> impl Fn(u64, u64) -> Option<Vec<u8>> + '_ {
    |o, n| file.get(o as usize..(o + n) as usize).map(<[u8]>::to_vec)
}

fn nonzero(d: &[u8]) -> usize {
    d.iter().filter(|&&b| b != 0).count()
}

/// Differences of `new` from `old` by bytes, and by bytes against `old` with its
/// references projected (how many non-zero each), and how many were projected.
fn differences(old: &[u8], new: &[u8]) -> (usize, usize, usize) {
    let s = bsdiff::diff(old, new).unwrap();
    let code = elf_code(old.len() as u64, read_all(old)).unwrap();
    assert_eq!(code.ranges.len(), 1);
    let mut moved = old.to_vec();
    let k = Projection::from_controls(&s.controls, &code).apply(&mut moved);
    let projected = bsdiff::byte_differences(&moved, new, &s.controls).unwrap();
    (nonzero(&s.diff), nonzero(&projected), k)
}

#[test]
fn moved_functions_differ_only_where_code_changed() {
    let old_fs = functions(1, 300, 50);
    let mut new_fs = old_fs.clone();
    // A function inserted early and one grown: everything after moves, and every
    // call across the two, and every data reference, changes its distance.
    new_fs.insert(10, (99, 300, vec![1, 2], vec![3]));
    new_fs[200].1 += 100;
    for f in &mut new_fs {
        for c in &mut f.2 {
            if *c >= 10 {
                *c += 1;
            }
        }
    }
    for machine in [EM_X86_64, EM_AARCH64] {
        let old = program(machine, &old_fs, 50, 7);
        let new = program(machine, &new_fs, 50, 7);
        let (before, after, k) = differences(&old, &new);
        assert!(k > 300, "{machine}: {k} references projected");
        assert!(
            after * 20 < before,
            "{machine}: differences: {before} before, {after} projected"
        );
    }
}

#[test]
fn code_ranges_come_from_executable_sections_of_programs() {
    let elf = program(EM_X86_64, &functions(2, 20, 5), 5, 1);
    let code = elf_code(elf.len() as u64, read_all(&elf)).unwrap();
    assert_eq!(code.arch, X86_64);
    assert_eq!(code.ranges[0].0, 64);
    let arm = program(EM_AARCH64, &functions(2, 20, 5), 5, 1);
    assert_eq!(
        elf_code(arm.len() as u64, read_all(&arm)).unwrap().arch,
        AARCH64
    );
    // Not a program or library of either: none (relocatable, 32-bit ARM, 32-bit,
    // big-endian, not ELF).
    for (at, value) in [(16, 1u8), (18, 40), (4, 1), (5, 2), (0, 0)] {
        let mut other = elf.clone();
        other[at] = value;
        assert_eq!(
            elf_code(other.len() as u64, read_all(&other)),
            None,
            "byte {at}"
        );
    }
    // Section headers beyond the file: none.
    assert_eq!(elf_code(elf.len() as u64 - 1, read_all(&elf)), None);
    // Clipped to a window: offsets into it; AArch64 code from its next instruction.
    let ranges = vec![(100, 50), (400, 10)];
    for (arch, first) in [(X86_64, (0, 32)), (AARCH64, (2, 30))] {
        let code = Code {
            arch,
            ranges: ranges.clone(),
        };
        let clipped = clip(&code, 118, 300);
        assert_eq!(clipped.ranges, vec![first, (282, 10)], "arch {arch}");
    }
}

#[test]
fn code_ranges_are_checked_when_read() {
    let code = Code {
        arch: X86_64,
        ranges: vec![(10, 20), (40, 5)],
    };
    let mut ops = Vec::new();
    write_code(&mut ops, &code);
    let source = "the patch's source";
    assert_eq!(read_code(&mut &ops[..], 45, source).unwrap(), code);
    let err = read_code(&mut &ops[..], 44, source)
        .unwrap_err()
        .to_string();
    assert!(err.contains("beyond the patch's source"), "{err}");
    let mut other = Vec::new();
    write_code(
        &mut other,
        &Code {
            arch: 3,
            ranges: vec![],
        },
    );
    let err = read_code(&mut &other[..], 10, source)
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown instruction set 3"), "{err}");
}

/// Bytes dense in opcodes and ModRM bytes the search stops at.
fn code_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        4 => any::<u8>(),
        1 => prop::sample::select(vec![0xE8u8, 0xE9, 0x0F, 0x48, 0x4C, 0x8B, 0x8D, 0x05, 0x0D, 0x15, 0x35, 0xC4, 0xC5, 0x80, 0x00, 0xFF, 0x94, 0x97, 0x14, 0x17]),
    ]
}

fn code_like() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(code_byte(), 0..3000)
}

/// What [`Projection::apply`] does to x86-64 code, trying every offset in turn: the
/// search its trigger bytes shorten, and must not change.
fn apply_trying_every_offset(p: &Projection, source: &mut [u8]) -> usize {
    let buckets = p.buckets(source.len());
    let mut rewritten = 0;
    for (_, from, to, shift) in p.covered(source.len()) {
        let mut i = from;
        while i < to {
            match x86_reference(&source[i..to]) {
                Some(at) => {
                    rewritten += p.project(source, &buckets, i + at, shift) as usize;
                    i += at + 4;
                }
                None => i += 1,
            }
        }
    }
    rewritten
}

/// The projection of controls given as (add, copy, seek) over code ranges (sorted here)
/// of `arch`, and that code.
fn projection(
    controls: Vec<(u64, u64, i64)>,
    mut ranges: Vec<(u64, u64)>,
    arch: u64,
) -> (Projection, Code) {
    let controls: Vec<Control> = controls
        .into_iter()
        .map(|(add, copy, seek)| Control { add, copy, seek })
        .collect();
    ranges.sort_unstable();
    let code = Code { arch, ranges };
    (Projection::from_controls(&controls, &code), code)
}

/// x86-64-like code: references with distances that land inside it (calls, jumps, jcc,
/// RIP-relative loads with and without REX) among bytes dense in opcodes and ModRM bytes.
fn x86_like() -> impl Strategy<Value = Vec<u8>> {
    let near = -1500i32..1500;
    let piece = prop_oneof![
        4 => prop::collection::vec(code_byte(), 0..12),
        1 => (prop::sample::select(vec![
                vec![0xE8u8], vec![0xE9], vec![0x0F, 0x84], vec![0x48, 0x8B, 0x05],
                vec![0x8D, 0x15], vec![0xC5, 0xF9, 0x6F, 0x05], vec![0x4C, 0x0F, 0x10, 0x0D],
            ]), near)
            .prop_map(|(op, d)| op.into_iter().chain(d.to_le_bytes()).collect()),
    ];
    prop::collection::vec(piece, 0..300).prop_map(|p| p.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The classes of 80 bytes, found 16 at a time, are those found a byte at a time.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn byte_classes_sixteen_at_a_time_are_those_a_byte_at_a_time(
        bytes in prop::collection::vec(code_byte(), 80),
    ) {
        let Some(bytes) = bytes.first_chunk::<80>() else { unreachable!() };
        let low = (1u128 << 68) - 1;
        let fast = classes_80(bytes).map(|m| m & low);
        prop_assert_eq!(fast, classes_each(bytes));
    }

    /// On x86-64 code, projecting finds and rewrites the references trying every offset
    /// would, byte for byte.
    #[test]
    fn projection_finds_what_trying_every_offset_finds(
        source in x86_like(),
        // Short matches that moved by different amounts, so that references cross them.
        controls in prop::collection::vec((1u64..300, 0u64..40, -300i64..300), 0..40),
        code in prop::collection::vec((0u64..3000, 0u64..3000), 1..4),
    ) {
        let (p, _) = projection(controls, code, X86_64);
        let (mut fast, mut every) = (source.clone(), source);
        let n = p.apply(&mut fast);
        prop_assert_eq!(n, apply_trying_every_offset(&p, &mut every));
        prop_assert_eq!(fast, every);
    }

    /// Whatever the controls (a hostile stream's too) and the bytes, projecting never
    /// panics, touches only the code ranges, and makes the same bytes every time.
    #[test]
    fn projection_is_total_and_deterministic(
        source in code_like(),
        controls in prop::collection::vec((0u64..4000, 0u64..100, -4000i64..4000), 0..40),
        code in prop::collection::vec((0u64..3000, 0u64..3000), 0..4),
        arm in any::<bool>(),
    ) {
        let (p, code) = projection(controls, code, if arm { AARCH64 } else { X86_64 });
        let (mut a, mut b) = (source.clone(), source.clone());
        p.apply(&mut a);
        p.apply(&mut b);
        prop_assert_eq!(&a, &b);
        for (i, (x, y)) in a.iter().zip(&source).enumerate() {
            if x != y {
                prop_assert!(code.ranges.iter().any(|&(s, l)| (i as u64) >= s && (i as u64) < s + l));
            }
        }
    }

    /// Any bytes as an ELF file: the ranges found are inside it, in order, apart.
    #[test]
    fn code_ranges_of_any_bytes_fit_the_file(
        mut elf in prop::collection::vec(any::<u8>(), 0..600),
        sections in 0u16..6,
        arm in any::<bool>(),
    ) {
        if elf.len() >= 64 {
            elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
            elf[16..20].copy_from_slice(&[2, 0, if arm { 183 } else { 62 }, 0]);
            elf[0x3A..0x3C].copy_from_slice(&64u16.to_le_bytes());
            elf[0x3C..0x3E].copy_from_slice(&sections.to_le_bytes());
            let shoff = (elf[0x28] as u64) % (elf.len() as u64);
            elf[0x28..0x30].copy_from_slice(&shoff.to_le_bytes());
        }
        if let Some(code) = elf_code(elf.len() as u64, read_all(&elf)) {
            let mut end = 0;
            for (s, l) in code.ranges {
                prop_assert!(s >= end && l > 0 && s + l <= elf.len() as u64);
                end = s + l;
            }
        }
    }
}
