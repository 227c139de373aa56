use super::*;
use crate::delta::files::bsdiff;
use crate::delta::files::refs::sample::{functions, program, xorshift, EM_AARCH64, EM_X86_64};
use crate::delta::files::refs::{elf_code, X86_64};
use proptest::prelude::*;

fn read_all(file: &[u8]) -> impl Fn(u64, u64) -> Option<Vec<u8>> + '_ {
    |o, n| file.get(o as usize..(o + n) as usize).map(<[u8]>::to_vec)
}

fn calls_of(file: &[u8]) -> Calls {
    let code = elf_code(file.len() as u64, read_all(file)).unwrap();
    Calls::of_piece(&code, 0, file.len() as u64).unwrap()
}

#[test]
fn calls_to_one_function_become_one_string() {
    // Every function calls function 3: the rewritten calls all read the same.
    let mut fs = functions(5, 200, 1);
    for f in &mut fs {
        (f.2, f.3) = (vec![3], vec![]);
    }
    for machine in [EM_X86_64, EM_AARCH64] {
        let file = program(machine, &fs, 0, 1);
        let calls = calls_of(&file);
        let mut rewritten = file.clone();
        calls.to_absolute(&mut rewritten, 0);
        let (op, len) = if machine == EM_AARCH64 {
            (None, 4)
        } else {
            (Some(0xE8u8), 5)
        };
        let strings = |b: &[u8]| {
            let mut seen: Vec<&[u8]> = b
                .windows(len)
                .enumerate()
                .filter(|(i, w)| match op {
                    Some(op) => w[0] == op,
                    None => {
                        i % 4 == 0 && u32::from_le_bytes(w[..4].try_into().unwrap()) >> 26 == 0x25
                    }
                })
                .map(|(_, w)| w)
                .collect();
            seen.sort();
            seen.dedup();
            seen.len()
        };
        assert!(strings(&file) >= 150, "{machine}: {}", strings(&file));
        assert_eq!(strings(&rewritten), 1, "{machine}");
        let mut back = rewritten;
        calls.to_relative(&mut back, 0);
        assert_eq!(back, file, "{machine}");
    }
}

#[test]
fn only_code_ranges_change() {
    let file = program(EM_X86_64, &functions(9, 100, 20), 40, 3);
    let calls = calls_of(&file);
    let mut rewritten = file.clone();
    calls.to_absolute(&mut rewritten, 0);
    let (start, len) = calls.code.ranges[0];
    let (start, end) = (start as usize, (start + len) as usize);
    assert_eq!(rewritten[..start], file[..start]);
    assert_eq!(rewritten[end..], file[end..]);
    assert_ne!(rewritten[start..end], file[start..end]);
}

#[test]
fn a_call_whose_top_byte_says_no_guards_its_field() {
    // E8 with a field whose top byte is neither 00 nor FF, then an E8 inside that field
    // whose own field would reach the first one's top byte: rewriting the second would
    // make the first one's top byte 00 or FF for the decoder.
    // The second call's field FF FF FE 00 becomes 09 00 FF 00 (0xFEFFFF + 10): the first
    // one's top byte would read FF.
    let mut b = vec![0x90u8; 32];
    b[4..10].copy_from_slice(&[0xE8, 0xE8, 0xFF, 0xFF, 0xFE, 0x00]);
    let calls = Calls {
        origin: 0,
        code: Code {
            arch: X86_64,
            ranges: vec![(0, 32)],
        },
    };
    let mut rewritten = b.clone();
    calls.to_absolute(&mut rewritten, 0);
    let mut back = rewritten.clone();
    calls.to_relative(&mut back, 0);
    assert_eq!(back, b);
}

#[test]
fn patch_runs_are_rewritten_where_the_decoder_finds_them() {
    let mut fs = functions(4, 300, 30);
    let old = program(EM_X86_64, &fs, 30, 2);
    fs.insert(7, (77, 400, vec![1, 2, 3], vec![]));
    fs[100].1 += 64;
    let new = program(EM_X86_64, &fs, 30, 2);
    let s = bsdiff::diff(&old, &new).unwrap();
    let calls = calls_of(&new);
    let mut extra = s.extra.clone();
    calls.extra_to_absolute(&s.controls, &mut extra);
    assert_ne!(extra, s.extra, "the new function's calls are rewritten");
    assert_eq!(patched_back(&old, &s, &extra, &calls), new);
}

/// `old` patched by `s` with `extra` for its new bytes (rewritten by `calls`), and the
/// output's calls rewritten back, as the decoder does.
fn patched_back(old: &[u8], s: &bsdiff::Streams, extra: &[u8], calls: &Calls) -> Vec<u8> {
    let len = s.diff.len() + extra.len();
    let mut out = Vec::new();
    bsdiff::patch(
        old,
        &s.controls,
        bsdiff::Differences::Bytes,
        &mut &s.diff[..],
        &mut &extra[..],
        len as u64,
        &mut out,
    )
    .unwrap();
    calls.to_relative_in_output(&s.controls, &mut out);
    out
}

#[test]
fn ranges_past_the_output_are_refused() {
    let calls = Calls {
        origin: 5,
        code: Code {
            arch: AARCH64,
            ranges: vec![(0, 8), (16, 8)],
        },
    };
    assert!(calls.check(24).is_ok());
    assert!(calls.check(23).is_err());
    let mut w = Vec::new();
    calls.write(&mut w);
    assert_eq!(Calls::read(&mut &w[..], 24).unwrap(), calls);
    assert!(Calls::read(&mut &w[..], 20).is_err());
}

/// Bytes dense in what the rewrites look for (E8, RIP-relative lea and mov, `bl` and
/// `adrp` words, some with fields a rewrite skips, some cut short) and filler.
fn call_heavy(seed: u64, len: usize) -> Vec<u8> {
    let mut next = xorshift(seed);
    let mut b = Vec::with_capacity(len + 8);
    while b.len() < len {
        let r = next();
        match r % 9 {
            0 => b.push(0xE8),
            1 => b.extend_from_slice(&(0x9400_0000 | r as u32 & 0x03FF_FFFF).to_le_bytes()),
            // adrp
            2 => b.extend_from_slice(&(0x9000_0000 | r as u32 & 0x60FF_FFFF).to_le_bytes()),
            3 => b.extend_from_slice(&[0x00, 0xFF, 0xE8][(r >> 8) as usize % 3..]),
            // REX.W, lea/mov, a RIP-relative ModRM (or not), cut anywhere.
            4 => {
                let rip = [
                    0x48,
                    0x8D,
                    0x05 | (r >> 8) as u8 & 0x38,
                    0xE8,
                    0x00,
                    0xFF,
                    0x4C,
                ];
                b.extend_from_slice(&rip[..1 + (r >> 16) as usize % 7]);
            }
            5 => b.extend_from_slice(&[0x4C, 0x8B, 0x15 | (r >> 8) as u8 & 0xC0]),
            _ => b.push(r as u8),
        }
    }
    b.truncate(len);
    b
}

/// The x86-64 rewrite as the module doc says it, a byte at a time.
fn x86_64_bytewise(b: &mut [u8], origin: u64) {
    let mut i = 0;
    while i + 5 <= b.len() {
        if b[i] == 0xE8 {
            if b[i + 4] != 0 && b[i + 4] != 0xFF {
                i += 4;
                continue;
            }
            let v = u32::from_le_bytes(b[i + 1..i + 5].try_into().unwrap());
            let w = v.wrapping_add(origin.wrapping_add(i as u64 + 5) as u32);
            let w = ((w << 7) as i32 >> 7) as u32;
            b[i + 1..i + 5].copy_from_slice(&w.to_le_bytes());
            i += 5;
        } else if matches!(b[i], 0x48 | 0x4C)
            && i + 7 <= b.len()
            && matches!(b[i + 1], 0x8D | 0x8B | 0x89)
            && b[i + 2] & 0xC7 == 0x05
        {
            let v = u32::from_le_bytes(b[i + 3..i + 7].try_into().unwrap());
            let w = v.wrapping_add(origin.wrapping_add(i as u64 + 7) as u32);
            b[i + 3..i + 7].copy_from_slice(&w.to_le_bytes());
            i += 7;
        } else {
            i += 1;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// The rewrite (which skips to the bytes that may start an instruction) is the
    /// rewrite a byte at a time.
    #[test]
    fn x86_64_scans_as_a_byte_at_a_time_does(seed in any::<u64>(), len in 0usize..700, origin in any::<u64>()) {
        let b = call_heavy(seed, len);
        let (mut fast, mut slow) = (b.clone(), b);
        super::x86_64(&mut fast, origin, true);
        x86_64_bytewise(&mut slow, origin);
        prop_assert_eq!(fast, slow);
    }

    /// Any bytes, any ranges, any runs, any origin: rewritten and back, byte for byte.
    #[test]
    fn any_bytes_come_back(
        seed in any::<u64>(),
        len in 0usize..3000,
        arm in any::<bool>(),
        origin in any::<u64>(),
        cuts in proptest::collection::vec(0usize..3000, 0..12),
        gaps in proptest::collection::vec((0u64..400, 1u64..900), 0..6),
    ) {
        let b = call_heavy(seed, len);
        let mut ranges = Vec::new();
        let mut end = 0;
        for (gap, n) in gaps {
            let start = end + gap;
            if start + n > len as u64 {
                break;
            }
            ranges.push((start, n));
            end = start + n;
        }
        let calls = Calls {
            origin,
            code: Code { arch: if arm { AARCH64 } else { X86_64 }, ranges },
        };
        // Runs: the bytes cut at `cuts`, each rewritten on its own.
        let mut cuts: Vec<usize> = cuts.into_iter().filter(|&c| c <= len).collect();
        cuts.extend([0, len]);
        cuts.sort_unstable();
        cuts.dedup();
        let mut rewritten = b.clone();
        for w in cuts.windows(2) {
            calls.to_absolute(&mut rewritten[w[0]..w[1]], w[0] as u64);
        }
        for w in cuts.windows(2) {
            calls.to_relative(&mut rewritten[w[0]..w[1]], w[0] as u64);
        }
        prop_assert_eq!(rewritten, b);
    }

    /// Programs made as a build would make them, patched against a build before: the
    /// patch's new bytes rewritten, and back in the patch's output.
    #[test]
    fn patches_of_programs_come_back(seed in any::<u64>(), arm in any::<bool>(), at in 0usize..40) {
        let machine = if arm { EM_AARCH64 } else { EM_X86_64 };
        let mut fs = functions(seed, 60, 10);
        let old = program(machine, &fs, 10, seed);
        fs.insert(at, (seed ^ 1, 200, vec![0, 5, 9], vec![1]));
        let new = program(machine, &fs, 10, seed);
        let s = bsdiff::diff(&old, &new).unwrap();
        let code = elf_code(new.len() as u64, read_all(&new)).unwrap();
        // A piece of the file from `at * 40`, as a big file's piece would be.
        let start = (at * 40).min(new.len());
        let piece = &new[start..];
        let calls = Calls::of_piece(&code, start as u64, piece.len() as u64);
        let Some(calls) = calls else { return Ok(()) };
        let s2 = bsdiff::diff(&old, piece).unwrap();
        let mut extra = s2.extra.clone();
        calls.extra_to_absolute(&s2.controls, &mut extra);
        prop_assert_eq!(&patched_back(&old, &s2, &extra, &calls)[..], piece);
        prop_assert!(!s.controls.is_empty());
    }
}
