use super::sample::*;
use super::*;
use crate::delta::files::bsdiff::{self, Streams};
use proptest::prelude::*;

fn read_all(file: &[u8]) -> impl Fn(u64, u64) -> Option<Vec<u8>> + '_ {
    |o, n| file.get(o as usize..(o + n) as usize).map(<[u8]>::to_vec)
}

fn nonzero(d: &[u8]) -> usize {
    d.iter().filter(|&&b| b != 0).count()
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
    let old = program(&old_fs, 50, 7);
    let new = program(&new_fs, 50, 7);
    let mut s = Streams::default();
    bsdiff::diff(&old, &new, &mut s);
    let code = x86_64_code(old.len() as u64, read_all(&old)).unwrap();
    assert_eq!(code.len(), 1);
    let mut moved = old.clone();
    let p = Projection::from_controls(&s.controls, &code);
    assert!(p.apply(&mut moved) > 300, "too few references projected");
    let projected = bsdiff::byte_differences(&moved, &new, &s.controls).unwrap();
    let (before, after) = (nonzero(&s.diff), nonzero(&projected));
    assert!(
        after * 20 < before,
        "differences: {before} before, {after} projected"
    );
}

#[test]
fn code_ranges_come_from_executable_sections_of_x86_64_programs() {
    let elf = program(&functions(2, 20, 5), 5, 1);
    let code = x86_64_code(elf.len() as u64, read_all(&elf)).unwrap();
    assert_eq!(code[0].0, 64);
    // Not a program or library of x86-64: none.
    for (at, value) in [(16, 1u8), (18, 183), (4, 1), (5, 2), (0, 0)] {
        let mut other = elf.clone();
        other[at] = value;
        assert_eq!(
            x86_64_code(other.len() as u64, read_all(&other)),
            None,
            "byte {at}"
        );
    }
    // Section headers beyond the file: none.
    assert_eq!(x86_64_code(elf.len() as u64 - 1, read_all(&elf)), None);
    // Clipped to a window: offsets into it.
    assert_eq!(
        clip(&[(100, 50), (400, 10)], 120, 300),
        vec![(0, 30), (280, 10)]
    );
}

#[test]
fn code_ranges_are_checked_when_read() {
    let mut ops = Vec::new();
    write_code(&mut ops, X86_64, &[(10, 20), (40, 5)]);
    assert_eq!(
        read_code(&mut &ops[..], 45).unwrap(),
        (X86_64, vec![(10, 20), (40, 5)])
    );
    let err = read_code(&mut &ops[..], 44).unwrap_err().to_string();
    assert!(err.contains("beyond the patch's source"), "{err}");
    let mut arm = Vec::new();
    write_code(&mut arm, 2, &[]);
    let err = read_code(&mut &arm[..], 10).unwrap_err().to_string();
    assert!(err.contains("unknown instruction set 2"), "{err}");
}

fn code_like() -> impl Strategy<Value = Vec<u8>> {
    // Bytes dense in opcodes and ModRM bytes the search stops at.
    let byte = prop_oneof![
        4 => any::<u8>(),
        1 => prop::sample::select(vec![0xE8u8, 0xE9, 0x0F, 0x48, 0x4C, 0x8B, 0x8D, 0x05, 0x0D, 0x15, 0x35, 0xC4, 0xC5, 0x80, 0x00, 0xFF]),
    ];
    prop::collection::vec(byte, 0..3000)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever the controls (a hostile stream's too) and the bytes, projecting never
    /// panics, touches only the code ranges, and makes the same bytes every time.
    #[test]
    fn projection_is_total_and_deterministic(
        source in code_like(),
        controls in prop::collection::vec((0u64..4000, 0u64..100, -4000i64..4000), 0..40),
        code in prop::collection::vec((0u64..3000, 0u64..3000), 0..4),
    ) {
        let controls: Vec<Control> = controls
            .into_iter()
            .map(|(add, copy, seek)| Control { add, copy, seek })
            .collect();
        let mut code: Vec<(u64, u64)> = code;
        code.sort_unstable();
        let p = Projection::from_controls(&controls, &code);
        let (mut a, mut b) = (source.clone(), source.clone());
        p.apply(&mut a);
        p.apply(&mut b);
        prop_assert_eq!(&a, &b);
        for (i, (x, y)) in a.iter().zip(&source).enumerate() {
            if x != y {
                prop_assert!(code.iter().any(|&(s, l)| (i as u64) >= s && (i as u64) < s + l));
            }
        }
    }

    /// Any bytes as an ELF file: the ranges found are inside it, in order, apart.
    #[test]
    fn code_ranges_of_any_bytes_fit_the_file(
        mut elf in prop::collection::vec(any::<u8>(), 0..600),
        sections in 0u16..6,
    ) {
        if elf.len() >= 64 {
            elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
            elf[16..20].copy_from_slice(&[2, 0, 62, 0]);
            elf[0x3A..0x3C].copy_from_slice(&64u16.to_le_bytes());
            elf[0x3C..0x3E].copy_from_slice(&sections.to_le_bytes());
            let shoff = (elf[0x28] as u64) % (elf.len() as u64);
            elf[0x28..0x30].copy_from_slice(&shoff.to_le_bytes());
        }
        if let Some(code) = x86_64_code(elf.len() as u64, read_all(&elf)) {
            let mut end = 0;
            for (s, l) in code {
                prop_assert!(s >= end && l > 0 && s + l <= elf.len() as u64);
                end = s + l;
            }
        }
    }
}
