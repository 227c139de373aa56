//! Machine code's relative references, projected the way the new build moved their targets.
//!
//! Between two builds of a program, most functions are the same bytes at other offsets. A
//! call or a jump (x86-64 `call`/`jmp`/`jcc`, AArch64 `bl`/`b`), and an x86-64 instruction
//! that addresses data relative to itself (`lea rax, [rip + d]`), holds the distance to its
//! target; when the code between the two
//! moved by another amount than the code around the instruction, that distance changed, and
//! so do the four bytes holding it in every such instruction of an otherwise equal function.
//! A bsdiff-class patch then carries a difference for each, and where they are dense its
//! matches break off.
//!
//! A patch's matches say how the old file's content moved to the new one: a step function
//! of offsets ([`Projection`], see [`Projection::from_controls`]). [`Projection::apply`]
//! rewrites the old file's references to where their targets sit in the new file, seen from
//! where the reference itself sits there, so that an unchanged function's bytes in the old
//! file become its bytes in the new one; the patch's difference bytes are then taken
//! against the old file so rewritten (in the manner of Zucchini's reference projection,
//! without its shipped mapping: the decoder reads the same matches from the patch itself).
//! The references are found by their opcodes alone (on AArch64, at every instruction),
//! inside the code ranges the patch names (the old file's executable sections,
//! [`elf_code`]), and the rewrite looks only at
//! bytes it has not yet written, so the decoder, given the same old bytes, ranges and
//! matches, makes the same source.
//!
//! Encoding, before the patch in an `XDIFF` operation (see the module doc of [`super`]):
//!
//! ```text
//! code = varint(arch) varint(n) n*(varint(gap) varint(len))
//! ```
//!
//! The ranges are in order, offsets into the patch's source, each `gap` counted from the end
//! of the one before.
//!
//! Measured on two x86-64 libraries of the ml pair, patch cost (streams at zstd -19) without
//! and with: pyarrow's libparquet 15 -> 17, 1.247 -> 1.162 MB; scipy's `_sparsetools` 1.12 ->
//! 1.14, 82.5 -> 63.2 KB. Shipping the mapping instead (Zucchini's way) cost more than it
//! saved on libparquet (47 KB of segments), and searching the patch again against the
//! projected source gained 0.3 %. On the bench's pairs (packages): debian 2.19 -> 1.81 MB,
//! wheels 1.51 -> 1.15 MB, multilayer 3.69 -> 2.95 MB, ml 31.29 -> 29.56 MB, tools 11.84 ->
//! 11.59 MB; go unchanged (its programs' pieces mostly ship whole, and a piece's calls
//! leave its window). On AArch64 only `b` and `bl` are projected: arm64 12.43 -> 12.40 MB
//! (its code reaches data through `adrp` pairs, whose pages this does not project).

use super::bsdiff::Control;
use super::stream::{bad, get, put};
use crate::error::Result;

/// The x86-64 instruction set (`call`, `jmp`, `jcc` with 32-bit displacements and
/// RIP-relative operands).
pub const X86_64: u64 = 1;
/// The AArch64 instruction set (`b` and `bl`, whose 26-bit immediates count instructions).
pub const AARCH64: u64 = 2;

/// An old file's code: its instruction set and the ranges it is in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Code {
    /// [`X86_64`] or [`AARCH64`].
    pub arch: u64,
    /// (offset, length), in order, not overlapping; for [`AARCH64`], each starts at an
    /// instruction.
    pub ranges: Vec<(u64, u64)>,
}

/// Bytes of source per entry of the index that finds a target's segment.
const BUCKET: usize = 1 << 10;

/// Most code ranges a patch may name (a decoder's bound; ELF files have a few).
const MAX_RANGES: u64 = 1 << 10;

/// A stretch of the old file that moved as one to the new file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// First old offset.
    pub start: u64,
    /// Old bytes.
    pub len: u64,
    /// New offset minus old offset.
    pub shift: i64,
}

/// How an old file's content moved, and where its code is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Projection {
    /// The old file's code.
    pub code: Code,
    /// The moved stretches, in order, not overlapping.
    pub segments: Vec<Segment>,
}

impl Projection {
    /// The projection a patch's matches say (its controls, from `source` to the new bytes),
    /// for the code `code` of the source. Adjacent stretches that moved by the same
    /// amount are one segment, including the old bytes between them (bytes changed in
    /// place).
    pub fn from_controls(controls: &[Control], code: &Code) -> Projection {
        let mut raw = Vec::with_capacity(controls.len());
        let (mut np, mut op) = (0i64, 0i64);
        // (The controls may be a hostile stream's: positions that overflow end the walk;
        // the patch itself is refused later.)
        for c in controls {
            let (Ok(add), Ok(copy)) = (i64::try_from(c.add), i64::try_from(c.copy)) else {
                break;
            };
            if add > 0 && op >= 0 && op.checked_add(add).is_some() {
                raw.push(Segment {
                    start: op as u64,
                    len: c.add,
                    shift: np.wrapping_sub(op),
                });
            }
            let next = (np.checked_add(add), op.checked_add(add));
            let (Some(Some(n)), Some(Some(o))) = (
                next.0.map(|n| n.checked_add(copy)),
                next.1.map(|o| o.checked_add(c.seek)),
            ) else {
                break;
            };
            (np, op) = (n, o);
        }
        raw.sort_by_key(|s| s.start);
        let mut segments: Vec<Segment> = Vec::with_capacity(raw.len());
        for mut s in raw {
            if let Some(last) = segments.last_mut() {
                let end = last.start + last.len;
                if s.start < end {
                    // Old bytes used twice: the first use holds them.
                    let cut = (end - s.start).min(s.len);
                    s.start += cut;
                    s.len -= cut;
                    if s.len == 0 {
                        continue;
                    }
                }
                if s.shift == last.shift {
                    last.len = s.start + s.len - last.start;
                    continue;
                }
            }
            segments.push(s);
        }
        Projection {
            code: code.clone(),
            segments,
        }
    }

    /// For each [`BUCKET`] bytes of a source of `len` bytes, the first segment that does
    /// not end before them (what [`Projection::shift_at`] starts from).
    fn buckets(&self, len: usize) -> Vec<u32> {
        let mut first = Vec::with_capacity(len / BUCKET + 1);
        let mut i = 0;
        for k in 0..=len / BUCKET {
            let at = (k * BUCKET) as u64;
            while i < self.segments.len() && self.segments[i].start + self.segments[i].len <= at {
                i += 1;
            }
            first.push(i as u32);
        }
        first
    }

    /// The shift of old offset `at`, if a segment holds it (`buckets` from
    /// [`Projection::buckets`]).
    fn shift_at(&self, buckets: &[u32], at: u64) -> Option<i64> {
        let mut i = *buckets.get(at as usize / BUCKET)? as usize;
        while let Some(s) = self.segments.get(i) {
            if at < s.start {
                return None;
            }
            if at < s.start + s.len {
                return Some(s.shift);
            }
            i += 1;
        }
        None
    }

    /// Rewrites the references in `source`'s code ranges to their projected distances.
    /// Returns how many it rewrote.
    pub fn apply(&self, source: &mut [u8]) -> usize {
        let mut rewritten = 0;
        let buckets = self.buckets(source.len());
        for (start, from, to, shift) in self.covered(source.len()) {
            if self.code.arch == AARCH64 {
                // Instructions at every fourth byte from the range's start.
                let first = from + start.wrapping_sub(from) % 4;
                for at in (first..to.saturating_sub(3)).step_by(4) {
                    rewritten += self.project_branch(source, &buckets, at, shift) as usize;
                }
                continue;
            }
            // Instructions are tried at each offset from `from` in turn, and after
            // one is found, from the end of its distance on; [`start_mask`] tells, 64
            // offsets at a time, which offsets can start one (the others are skipped:
            // the same offsets found, in the same order, as trying all).
            let mut i = from;
            for base in (from..to).step_by(64) {
                let mut starts = start_mask(source, base) & low_bits(to - base);
                loop {
                    if i > base {
                        starts &= !low_bits(i - base);
                    }
                    if starts == 0 {
                        break;
                    }
                    let s = base + starts.trailing_zeros() as usize;
                    starts &= starts - 1;
                    if let Some(at) = x86_reference(&source[s..to]) {
                        if self.project(source, &buckets, s + at, shift) {
                            rewritten += 1;
                        }
                        i = s + at + 4;
                    }
                }
            }
        }
        rewritten
    }

    /// The stretches of a source of `len` bytes where code and segments overlap, in order:
    /// (the code range's start, from, to, the segment's shift). Only references inside the
    /// patch's matches can be projected: the code is scanned where the segments cover it.
    fn covered(&self, len: usize) -> impl Iterator<Item = (usize, usize, usize, i64)> + '_ {
        self.code.ranges.iter().flat_map(move |&(start, size)| {
            let end = start.saturating_add(size).min(len as u64);
            let first = self.segments.partition_point(|s| s.start + s.len <= start);
            self.segments[first..]
                .iter()
                .take_while(move |s| s.start < end)
                .map(move |seg| {
                    let from = seg.start.max(start) as usize;
                    let to = (seg.start + seg.len).min(end) as usize;
                    (start as usize, from, to, seg.shift)
                })
        })
    }

    /// Rewrites the AArch64 instruction at `at`, which moved by `here`, if it is a `b` or a
    /// `bl` whose target moved by another amount (a multiple of four, the result in reach).
    fn project_branch(&self, source: &mut [u8], buckets: &[u32], at: usize, here: i64) -> bool {
        let mut w = [0u8; 4];
        w.copy_from_slice(&source[at..at + 4]);
        let word = u32::from_le_bytes(w);
        // b: 000101 imm26; bl: 100101 imm26.
        if word & 0x7C00_0000 != 0x1400_0000 {
            return false;
        }
        let distance = (((word << 6) as i32) >> 6) as i64 * 4;
        let target = at as i64 + distance;
        if target < 0 || target >= source.len() as i64 {
            return false;
        }
        let Some(there) = self.shift_at(buckets, target as u64) else {
            return false;
        };
        let moved = there - here;
        if moved == 0 || moved % 4 != 0 {
            return false;
        }
        let Some(projected) = moved.checked_add(distance).map(|d| d / 4) else {
            return false;
        };
        if !(-(1 << 25)..1 << 25).contains(&projected) {
            return false;
        }
        let word = word & 0xFC00_0000 | (projected as u32 & 0x03FF_FFFF);
        source[at..at + 4].copy_from_slice(&word.to_le_bytes());
        true
    }

    /// Rewrites the 32-bit distance at `field` (counted from the field's end), which moved
    /// by `here`, if its target moved too, by another amount.
    fn project(&self, source: &mut [u8], buckets: &[u32], field: usize, here: i64) -> bool {
        let mut d = [0u8; 4];
        d.copy_from_slice(&source[field..field + 4]);
        let distance = i32::from_le_bytes(d) as i64;
        let from = field as i64 + 4;
        let target = from + distance;
        if target < 0 || target >= source.len() as i64 {
            return false;
        }
        let Some(there) = self.shift_at(buckets, target as u64) else {
            return false;
        };
        if here == there {
            return false;
        }
        let moved = there
            .checked_sub(here)
            .and_then(|m| m.checked_add(distance));
        let Some(projected) = moved.and_then(|d| i32::try_from(d).ok()) else {
            return false;
        };
        source[field..field + 4].copy_from_slice(&projected.to_le_bytes());
        true
    }
}

/// Writes an instruction set and code ranges (see the module doc).
pub fn write_code(out: &mut Vec<u8>, code: &Code) {
    put(out, code.arch);
    put(out, code.ranges.len() as u64);
    let mut end = 0;
    for &(start, len) in &code.ranges {
        put(out, start - end);
        put(out, len);
        end = start + len;
    }
}

/// Reads an instruction set and code ranges inside `len` bytes (of `what`, for messages:
/// a patch's source, or the output of the operation a CALLS rewrites), refusing an unknown
/// instruction set and ranges out of order or beyond the `len` bytes.
pub fn read_code(ops: &mut &[u8], len: u64, what: &str) -> Result<Code> {
    let arch = get(ops)?;
    if arch != X86_64 && arch != AARCH64 {
        return Err(bad(format!("unknown instruction set {arch} for {what}")));
    }
    let n = get(ops)?;
    if n > MAX_RANGES {
        return Err(bad(format!("{n} code ranges for {what}")));
    }
    let mut ranges = Vec::with_capacity(n as usize);
    let mut end = 0u64;
    for _ in 0..n {
        let (gap, len_here) = (get(ops)?, get(ops)?);
        let start = end
            .checked_add(gap)
            .filter(|s| s.checked_add(len_here).is_some_and(|e| e <= len))
            .ok_or_else(|| bad(format!("a code range beyond {what}")))?;
        end = start + len_here;
        ranges.push((start, len_here));
    }
    Ok(Code { arch, ranges })
}

/// Where the 32-bit distance of the x86-64 instruction starting at `b[0]` is, if it is one
/// with such a field that ends inside `b`: `call`/`jmp rel32` (E8, E9), `jcc rel32` (0F
/// 80-8F), and the common instructions whose ModRM byte says RIP-relative (mod 00, r/m
/// 101), with or without a REX prefix, and the two- and three-byte VEX forms.
fn x86_reference(b: &[u8]) -> Option<usize> {
    // (A fixed-size copy where five bytes are there: a call to `memcpy` per candidate
    // offset was a sixth of projecting's time.)
    let w = match b.first_chunk::<5>() {
        Some(w) => *w,
        None => {
            let mut w = [0u8; 5];
            w[..b.len()].copy_from_slice(b);
            w
        }
    };
    let rip = |modrm: u8| modrm & 0xC7 == 0x05;
    let one = |op: u8| KIND[op as usize] == K_ONE;
    let field = match KIND[w[0] as usize] {
        K_REL => 1,
        K_0F if matches!(w[1], 0x80..=0x8F) => 2,
        K_0F if TWO_BYTE[w[1] as usize] && rip(w[2]) => 3,
        K_REX if w[1] == 0x0F && TWO_BYTE[w[2] as usize] && rip(w[3]) => 4,
        K_REX if one(w[1]) && rip(w[2]) => 3,
        K_ONE if rip(w[1]) => 2,
        // VEX: C5 xx op modrm, C4 xx xx op modrm (64-bit mode: no LES/LDS).
        K_VEX2 if rip(w[3]) => 4,
        K_VEX3 if rip(w[4]) => 5,
        _ => return None,
    };
    (field + 4 <= b.len()).then_some(field)
}

const K_NONE: u8 = 0;
const K_REL: u8 = 1;
const K_0F: u8 = 2;
const K_REX: u8 = 3;
const K_VEX2: u8 = 4;
const K_VEX3: u8 = 5;
const K_ONE: u8 = 6;

/// What each byte may start, for [`x86_reference`].
static KIND: [u8; 256] = {
    let mut t = [K_NONE; 256];
    let mut b = 0;
    while b < 256 {
        let op = b as u8;
        t[b] = match op {
            0xE8 | 0xE9 => K_REL,
            0x0F => K_0F,
            0x40..=0x4F => K_REX,
            0xC5 => K_VEX2,
            0xC4 => K_VEX3,
            _ if one_byte_modrm(op) => K_ONE,
            _ => K_NONE,
        };
        b += 1;
    }
    t
};

/// The low `n` bits (all 64 from 64 on).
pub(super) fn low_bits(n: usize) -> u64 {
    if n >= 64 {
        u64::MAX
    } else {
        (1 << n) - 1
    }
}

/// Bit `k` for each offset `at + k` (`k` < 64) of `source` where an instruction
/// [`x86_reference`] finds can start, judged by the bytes there: a superset (it tells
/// where to try; `x86_reference` decides), computed from the classes of the 68 bytes from
/// `at` (past the end: none).
fn start_mask(source: &[u8], at: usize) -> u64 {
    let [rip, rel, of, jcc, rex, vex2, vex3] = classes(source, at);
    // By the first byte's kind (see `x86_reference`): E8/E9; 0F then 80-8F, or then a
    // two-byte opcode and a RIP-relative ModRM; REX then 0F, an opcode and the ModRM, or
    // then an opcode and the ModRM; a one-byte opcode and the ModRM; VEX2 and VEX3 with
    // the ModRM fourth and fifth. The opcodes' own tables are left to `x86_reference`.
    let starts = rel
        | of & (jcc >> 1 | rip >> 2)
        | rex & (rip >> 2 | rip >> 3)
        | rip >> 1
        | vex2 & rip >> 3
        | vex3 & rip >> 4;
    starts as u64
}

/// The classes [`start_mask`] reads, as bit masks of the bytes from `at` (bit `k` for
/// `source[at + k]`, at least 68 of them): RIP-relative ModRM (mod 00, r/m 101), E8 or
/// E9, 0F, 80-8F, a REX prefix (40-4F), C5, C4.
fn classes(source: &[u8], at: usize) -> [u128; 7] {
    #[cfg(target_arch = "x86_64")]
    if let Some(bytes) = source.get(at..).and_then(|s| s.first_chunk::<80>()) {
        return classes_80(bytes);
    }
    classes_each(source.get(at..).unwrap_or_default())
}

/// [`classes`] of the first 68 bytes of `bytes` (or all, if fewer), a byte at a time.
fn classes_each(bytes: &[u8]) -> [u128; 7] {
    let mut m = [0u128; 7];
    for (k, &b) in bytes.iter().take(68).enumerate() {
        for (bits, (mask, value)) in m.iter_mut().zip(CLASSES) {
            *bits |= u128::from(b & mask == value) << k;
        }
    }
    m
}

/// The classes of [`classes`], in its order: a byte is of one when it equals `value` under
/// `mask`.
const CLASSES: [(u8, u8); 7] = [
    (0xC7, 0x05),
    (0xFE, 0xE8),
    (0xFF, 0x0F),
    (0xF0, 0x80),
    (0xF0, 0x40),
    (0xFF, 0xC5),
    (0xFF, 0xC4),
];

/// [`classes`] of 80 bytes, 16 at a time (SSE2, which every x86-64 CPU has): a table
/// lookup per byte and per candidate offset was most of projecting's time.
#[cfg(target_arch = "x86_64")]
fn classes_80(bytes: &[u8; 80]) -> [u128; 7] {
    use std::arch::x86_64::{
        _mm_and_si128, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8,
    };
    let mut m = [0u128; 7];
    for (k, sixteen) in bytes.chunks_exact(16).enumerate() {
        // SAFETY: `sixteen` is 16 readable bytes and the load needs no alignment; SSE2 is
        // part of x86-64, so every intrinsic here is available. (Newer compilers call the
        // ones without pointers safe.)
        #[allow(unused_unsafe)]
        let bits = unsafe {
            let v = _mm_loadu_si128(sixteen.as_ptr().cast());
            let byte = |b: u8| _mm_set1_epi8(b as i8);
            CLASSES.map(|(mask, value)| {
                let masked = _mm_and_si128(v, byte(mask));
                _mm_movemask_epi8(_mm_cmpeq_epi8(masked, byte(value))) as u32 as u16
            })
        };
        for (mask, b) in m.iter_mut().zip(bits) {
            *mask |= u128::from(b) << (16 * k);
        }
    }
    m
}

/// [`two_byte_modrm`] as a table.
static TWO_BYTE: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = two_byte_modrm(b as u8);
        b += 1;
    }
    t
};

/// One-byte opcodes with a ModRM operand that compilers emit RIP-relative.
const fn one_byte_modrm(op: u8) -> bool {
    matches!(
        op,
        0x01 | 0x03
            | 0x09
            | 0x0B
            | 0x21
            | 0x23
            | 0x29
            | 0x2B
            | 0x31
            | 0x33
            | 0x39
            | 0x3B
            | 0x63
            | 0x80
            | 0x81
            | 0x83
            | 0x84
            | 0x85
            | 0x88
            | 0x89
            | 0x8A
            | 0x8B
            | 0x8D
            | 0xC6
            | 0xC7
            | 0xF6
            | 0xF7
            | 0xFF
    )
}

/// Two-byte opcodes (after 0F) with a ModRM operand that compilers emit RIP-relative.
const fn two_byte_modrm(op: u8) -> bool {
    matches!(
        op,
        0x10..=0x17 | 0x28..=0x2F | 0x40..=0x4F | 0x51..=0x7F | 0xAF | 0xB6 | 0xB7 | 0xBE
            | 0xBF | 0xC2 | 0xD4..=0xFE
    )
}

/// A 64-bit little-endian ELF program or shared library's section headers, as the file of
/// `len` bytes that `read(offset, length)` reads has them.
pub struct ElfSections {
    /// `e_machine`.
    pub machine: u16,
    /// `e_shstrndx`: which section holds the sections' names.
    pub names: u16,
    /// The headers, 64 bytes each.
    pub headers: Vec<u8>,
}

/// Reads a little-endian u16, u32 or u64 at `o` of `b`.
pub fn le<const N: usize>(b: &[u8], o: usize) -> Option<u64> {
    let bytes: [u8; N] = b.get(o..o.checked_add(N)?)?.try_into().ok()?;
    Some(bytes.iter().rev().fold(0, |v, &x| v << 8 | x as u64))
}

impl ElfSections {
    /// The section headers of the file, if it is a 64-bit little-endian ELF program or
    /// shared library (`ET_EXEC`, `ET_DYN`) whose header table fits in it (at most 4096
    /// sections of 64 bytes).
    pub fn read(len: u64, read: &impl Fn(u64, u64) -> Option<Vec<u8>>) -> Option<ElfSections> {
        const MAX_SECTIONS: u64 = 1 << 12;
        let head = read(0, len.min(64))?;
        let kind = le::<2>(&head, 16)?;
        if !head.starts_with(b"\x7fELF\x02\x01") || !(2..=3).contains(&kind) {
            return None;
        }
        let (shoff, shentsize, shnum) = (
            le::<8>(&head, 0x28)?,
            le::<2>(&head, 0x3A)?,
            le::<2>(&head, 0x3C)?,
        );
        let table_len = shnum * 64;
        if shentsize != 64 || shnum > MAX_SECTIONS || shoff.checked_add(table_len)? > len {
            return None;
        }
        Some(ElfSections {
            machine: le::<2>(&head, 18)? as u16,
            names: le::<2>(&head, 0x3E)? as u16,
            headers: read(shoff, table_len)?,
        })
    }
}

/// The code of an x86-64 or AArch64 ELF program or shared library: its executable
/// sections' file ranges (merged where they touch), if the file of `len` bytes that
/// `read(offset, length)` reads is one; `None` for any other file, or one whose headers do
/// not fit in it.
pub fn elf_code(len: u64, read: impl Fn(u64, u64) -> Option<Vec<u8>>) -> Option<Code> {
    const EM_X86_64: u16 = 62;
    const EM_AARCH64: u16 = 183;
    const SHF_EXECINSTR: u64 = 4;
    const SHT_NOBITS: u64 = 8;
    let elf = ElfSections::read(len, &read)?;
    let arch = match elf.machine {
        EM_X86_64 => X86_64,
        EM_AARCH64 => AARCH64,
        _ => return None,
    };
    let table = elf.headers;
    let u32_at = |b: &[u8], o| le::<4>(b, o);
    let u64_at = |b: &[u8], o| le::<8>(b, o);
    let mut code = Vec::new();
    for h in table.chunks_exact(64) {
        let (kind, flags) = (u32_at(h, 4)?, u64_at(h, 8)?);
        let (off, size) = (u64_at(h, 0x18)?, u64_at(h, 0x20)?);
        let fits = off.checked_add(size).is_some_and(|end| end <= len);
        if flags & SHF_EXECINSTR != 0 && kind != SHT_NOBITS && size > 0 && fits {
            code.push((off, size));
        }
    }
    code.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(code.len());
    for (off, size) in code {
        match out.last_mut() {
            Some(last) if off <= last.0 + last.1 => {
                last.1 = (off + size).max(last.0 + last.1) - last.0;
            }
            _ => out.push((off, size)),
        }
    }
    (!out.is_empty()).then_some(Code { arch, ranges: out })
}

/// The parts of `code` (of a file) inside the window of `len` bytes at `start`, as offsets
/// into the window; for [`AARCH64`], from the first whole instruction in it.
pub fn clip(code: &Code, start: u64, len: u64) -> Code {
    let step = if code.arch == AARCH64 { 4 } else { 1 };
    let ranges = code
        .ranges
        .iter()
        .filter_map(|&(off, size)| {
            let from = off + (off.max(start) - off).next_multiple_of(step);
            let to = (off + size).min(start + len);
            (from < to).then(|| (from - start, to - from))
        })
        .collect();
    Code {
        arch: code.arch,
        ranges,
    }
}

#[cfg(test)]
pub(super) mod sample;
#[cfg(test)]
mod tests;
