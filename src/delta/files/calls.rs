//! New bytes of machine code shipped with their calls made absolute (in the manner of the
//! BCJ filters of xz and 7-Zip).
//!
//! A call holds the distance from its end to the function it calls, so the calls of one
//! function from a thousand places are a thousand different byte strings. Written as the
//! target's own offset instead (counted from the start of the file), they are one string,
//! which the package's compressor then finds again and again. Only the bytes a package
//! ships as they are (a file or piece shipped whole, a patch's new bytes) are rewritten,
//! and only inside the file's code ([`refs::elf_code`]); the decoder rewrites them back
//! after it has placed them.
//!
//! - x86-64: `call rel32` (E8), and `lea`, loads and stores of 64-bit registers whose
//!   operand is RIP-relative (REX.W 48 or 4C, then 8D, 8B or 89, then a ModRM of mod 00
//!   and r/m 101, then the 32-bit distance): the address of one global from many places.
//!   A call is rewritten when its distance is within ±16 MiB (its top byte 00 or FF): the
//!   new value is the target modulo 2^25, sign-extended, so it again has a top byte of 00
//!   or FF and the decoder finds the same calls. After an E8 that is not rewritten, the
//!   next three bytes are not taken for instructions: the field whose top byte said no
//!   cannot then be rewritten by a later one, and the decoder, scanning the rewritten
//!   bytes, reads the same top byte. A RIP-relative distance becomes the target modulo
//!   2^32, whatever it is: the bytes that say it is one are not in any field. Jumps and
//!   conditional jumps are left as they are: mostly local, their distances repeat more
//!   than their targets (measured on git and docker's CLI: rewriting them too lost
//!   0.2-2 %).
//! - AArch64, at offsets that are multiples of four from the start of the file: `bl`
//!   (100101 imm26), whose immediate counts instructions and becomes the target's
//!   instruction number modulo 2^26, and `adrp` (1 immlo 10000 immhi Rd), whose immediate
//!   counts 4 KiB pages and becomes the target's page modulo 2^21. Their opcode bits do not
//!   change, so the decoder finds the same.
//!
//! Measured on whole programs, `zstd -18 --long=28`, sizes before, with calls only and
//! with the rest: git (x86-64) 1.724, 1.588, 1.528 MB (-11.4 %); docker 26's CLI (Go,
//! x86-64) 8.086, 7.601, 7.307 MB (-9.6 %); git (AArch64) 1.700, 1.591, 1.557 MB (-8.4 %).
//! File offsets stand for addresses: within a segment they differ by a constant, and
//! pages line up.
//!
//! Encoding, an operation before the LIT, DIFF or XDIFF whose new bytes it rewrites (see
//! the module doc of [`super`]):
//!
//! ```text
//! calls = varint(origin) code
//! ```
//!
//! `origin` is where the operation's output starts in its file (a big file's pieces each
//! name theirs, so that a call into another piece is written as the same target); `code`
//! is [`refs::write_code`]'s, its ranges offsets into the operation's output.

use super::bsdiff::Control;
use super::refs::{self, Code, AARCH64};
use super::stream::{bad, get, put};
use crate::error::Result;

/// Machine code among an operation's new bytes: where its file's code is, and where the
/// operation's output starts in that file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Calls {
    /// The offset in its file of the operation's first byte.
    pub origin: u64,
    /// The file's code, as offsets into the operation's output.
    pub code: Code,
}

impl Calls {
    /// The calls of a file's `len` bytes from `start`, for a file whose code is `code`
    /// (offsets into the file); `None` where none of its code is in them.
    pub fn of_piece(code: &Code, start: u64, len: u64) -> Option<Calls> {
        let code = refs::clip(code, start, len);
        (!code.ranges.is_empty()).then_some(Calls {
            origin: start,
            code,
        })
    }

    /// Writes the operation's fields.
    pub fn write(&self, out: &mut Vec<u8>) {
        put(out, self.origin);
        refs::write_code(out, &self.code);
    }

    /// Reads the operation's fields, its ranges within `limit` bytes (the most an
    /// operation's output may be; the operation it applies to checks its own length).
    pub fn read(ops: &mut &[u8], limit: u64) -> Result<Calls> {
        let origin = get(ops)?;
        let code = refs::read_code(ops, limit, "the output of the operation a CALLS rewrites")?;
        Ok(Calls { origin, code })
    }

    /// Refuses ranges past an output of `len` bytes.
    pub fn check(&self, len: u64) -> Result<()> {
        match self.code.ranges.last() {
            Some(&(start, n)) if start + n > len => Err(bad(format!(
                "code ranges end at {}, past the {len} bytes of the operation they rewrite",
                start + n
            ))),
            _ => Ok(()),
        }
    }

    /// Rewrites the calls of `bytes`, placed at `at` in the operation's output, to
    /// absolute targets (the encoder's side); how many it rewrote.
    pub fn to_absolute(&self, bytes: &mut [u8], at: u64) -> usize {
        self.rewrite(bytes, at, true)
    }

    /// Undoes [`Calls::to_absolute`] (the decoder's side).
    pub fn to_relative(&self, bytes: &mut [u8], at: u64) {
        self.rewrite(bytes, at, false);
    }

    /// Rewrites the calls of a patch's new bytes (`extra`, as the patch's `controls` place
    /// them in its output) to absolute targets, one run at a time; how many it rewrote.
    pub fn extra_to_absolute(&self, controls: &[Control], extra: &mut [u8]) -> usize {
        let (mut at, mut taken, mut rewritten) = (0u64, 0usize, 0);
        for c in controls {
            at += c.add;
            let n = c.copy as usize;
            if let Some(run) = extra.get_mut(taken..taken + n) {
                rewritten += self.rewrite(run, at, true);
            }
            taken += n;
            at += c.copy;
        }
        rewritten
    }

    /// Undoes [`Calls::extra_to_absolute`] where the patch has written its output (`out`, the
    /// operation's output): the runs of new bytes are where the controls put them.
    pub fn to_relative_in_output(&self, controls: &[Control], out: &mut [u8]) {
        let mut at = 0u64;
        for c in controls {
            at += c.add;
            let (from, to) = (at as usize, (at + c.copy) as usize);
            if let Some(run) = out.get_mut(from..to) {
                self.rewrite(run, at, false);
            }
            at += c.copy;
        }
    }

    /// The rewrite of `bytes`, at `at` in the output: calls wholly inside both `bytes`
    /// and a code range.
    fn rewrite(&self, bytes: &mut [u8], at: u64, absolute: bool) -> usize {
        let end = at + bytes.len() as u64;
        let mut rewritten = 0;
        for &(start, len) in &self.code.ranges {
            let (from, to) = (start.max(at), (start + len).min(end));
            if from >= to {
                continue;
            }
            let part = &mut bytes[(from - at) as usize..(to - at) as usize];
            let origin = self.origin.wrapping_add(from);
            rewritten += if self.code.arch == AARCH64 {
                aarch64(part, origin, absolute)
            } else {
                x86_64(part, origin, absolute)
            };
        }
        rewritten
    }
}

/// x86-64 `call rel32` and 64-bit `lea`/`mov` with RIP-relative operands (see the module
/// doc); `origin` is the file offset of `b[0]`.
fn x86_64(b: &mut [u8], origin: u64, absolute: bool) -> usize {
    // Where an instruction may start: four bytes before the end at most. The offsets
    // that may start one are found 64 at a time ([`starts`]): a search for E8, 48 or 4C
    // (`memchr3`) stopped at one byte in ten of code, and was most of this function's
    // time. A block's mask stays true while it is rewritten: a rewrite changes only
    // bytes before the next offset it lets the scan look at.
    let end = b.len().saturating_sub(4);
    let (mut i, mut rewritten) = (0, 0);
    for base in (0..end).step_by(64) {
        let mut m = starts(b, base, end);
        loop {
            if i > base {
                m &= !refs::low_bits(i - base);
            }
            if m == 0 {
                break;
            }
            let at = base + m.trailing_zeros() as usize;
            let (next, done) = x86_64_at(b, at, origin, absolute);
            i = next;
            rewritten += done as usize;
        }
    }
    rewritten
}

/// The instruction at `at` (E8, 48 or 4C, four bytes before `b`'s end at most), rewritten
/// if it is one [`x86_64`] rewrites: where the scan goes on, and whether it was.
fn x86_64_at(b: &mut [u8], at: usize, origin: u64, absolute: bool) -> (usize, bool) {
    if b[at] != 0xE8 {
        // REX.W (48, or 4C for r8-r15), then lea, a load or a store, with a ModRM of mod
        // 00 and r/m 101 (RIP-relative): none of these three bytes is a field a later
        // rewrite changes (a call's field starts after its E8; this one's after its
        // ModRM), so the decoder reads the same.
        let rip = at + 7 <= b.len()
            && matches!(b[at + 1], 0x8D | 0x8B | 0x89)
            && b[at + 2] & 0xC7 == 0x05;
        if !rip {
            return (at + 1, false);
        }
        let field = &mut b[at + 3..at + 7];
        let v = u32::from_le_bytes([field[0], field[1], field[2], field[3]]);
        let w = shift(v, origin.wrapping_add(at as u64 + 7) as u32, absolute);
        field.copy_from_slice(&w.to_le_bytes());
        return (at + 7, true);
    }
    let field = &mut b[at + 1..at + 5];
    if field[3] != 0 && field[3] != 0xFF {
        // Not a near call, or one this does not rewrite: its field's top byte decides for
        // the decoder too, so nothing rewritten may start inside that field.
        return (at + 4, false);
    }
    let v = u32::from_le_bytes([field[0], field[1], field[2], field[3]]);
    let w = shift(v, origin.wrapping_add(at as u64 + 5) as u32, absolute);
    // 25 bits, sign-extended: the top byte is again 00 or FF.
    let w = ((w << 7) as i32 >> 7) as u32;
    field.copy_from_slice(&w.to_le_bytes());
    (at + 5, true)
}

/// Bit `k` for each offset `base + k` (`k` < 64) before `end` where [`x86_64_at`] may
/// rewrite an instruction: an E8, or a REX.W whose opcode and ModRM say RIP-relative (a
/// 48 or 4C that is not is only passed over: one byte in ten of code is one).
fn starts(b: &[u8], base: usize, end: usize) -> u64 {
    let within = refs::low_bits(end - base);
    #[cfg(target_arch = "x86_64")]
    if let Some(block) = b.get(base..).and_then(|s| s.first_chunk::<66>()) {
        return starts_64(block) & within;
    }
    let at = |p: usize| b.get(p).copied();
    let m = (base..end.min(base + 64)).fold(0u64, |m, p| {
        let call = at(p) == Some(0xE8);
        let rip = at(p).is_some_and(|x| x & 0xFB == 0x48)
            && at(p + 1).is_some_and(|x| matches!(x, 0x8D | 0x8B | 0x89))
            && at(p + 2).is_some_and(|x| x & 0xC7 == 0x05);
        m | u64::from(call || rip) << (p - base)
    });
    m & within
}

/// [`starts`] of the 64 offsets of a block (and the two bytes after them), 16 at a time
/// (SSE2, which every x86-64 CPU has).
#[cfg(target_arch = "x86_64")]
fn starts_64(block: &[u8; 66]) -> u64 {
    use std::arch::x86_64::{
        _mm_and_si128, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };
    let mut m = 0u64;
    for k in 0..4 {
        let at = 16 * k;
        // SAFETY: each load reads 16 bytes from `at`, `at + 1` or `at + 2` (at most 48),
        // inside the 66 of `block`, and needs no alignment; SSE2 is part of x86-64, so
        // every intrinsic here is available. (Newer compilers call the ones without
        // pointers safe.)
        #[allow(unused_unsafe)]
        let bits = unsafe {
            let load = |d: usize| _mm_loadu_si128(block.as_ptr().add(at + d).cast());
            let byte = |x: u8| _mm_set1_epi8(x as i8);
            let (v, next, modrm) = (load(0), load(1), load(2));
            let call = _mm_cmpeq_epi8(v, byte(0xE8));
            let rex = _mm_cmpeq_epi8(_mm_and_si128(v, byte(0xFB)), byte(0x48));
            let op = _mm_or_si128(
                _mm_or_si128(
                    _mm_cmpeq_epi8(next, byte(0x8D)),
                    _mm_cmpeq_epi8(next, byte(0x8B)),
                ),
                _mm_cmpeq_epi8(next, byte(0x89)),
            );
            let rip = _mm_cmpeq_epi8(_mm_and_si128(modrm, byte(0xC7)), byte(0x05));
            let lea = _mm_and_si128(_mm_and_si128(rex, op), rip);
            _mm_movemask_epi8(_mm_or_si128(call, lea))
        };
        m |= u64::from(bits as u32 as u16) << at;
    }
    m
}

/// `v` plus `by` (to absolute), or minus (back), wrapping.
fn shift(v: u32, by: u32, absolute: bool) -> u32 {
    if absolute {
        v.wrapping_add(by)
    } else {
        v.wrapping_sub(by)
    }
}

/// AArch64 `bl` and `adrp` (see the module doc); `origin` is the file offset of `b[0]`.
fn aarch64(b: &mut [u8], origin: u64, absolute: bool) -> usize {
    const BL: u32 = 0x9400_0000;
    const BL_OPCODE: u32 = 0xFC00_0000;
    const ADRP: u32 = 0x9000_0000;
    const ADRP_OPCODE: u32 = 0x9F00_0000;
    let mut i = ((4 - origin % 4) % 4) as usize;
    let mut rewritten = 0;
    while i + 4 <= b.len() {
        let at = origin.wrapping_add(i as u64);
        let word = u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let new = if word & BL_OPCODE == BL {
            // imm26: instructions from this one.
            Some(BL | shift(word, (at / 4) as u32, absolute) & !BL_OPCODE)
        } else if word & ADRP_OPCODE == ADRP {
            // immhi (bits 5-23) and immlo (29-30): 4 KiB pages from this one's.
            let imm = (word >> 29) & 3 | ((word >> 5) & 0x7_FFFF) << 2;
            let imm = shift(imm, (at >> 12) as u32, absolute) & 0x1F_FFFF;
            Some(word & (ADRP_OPCODE | 0x1F) | (imm & 3) << 29 | (imm >> 2) << 5)
        } else {
            None
        };
        if let Some(new) = new {
            b[i..i + 4].copy_from_slice(&new.to_le_bytes());
            rewritten += 1;
        }
        i += 4;
    }
    rewritten
}

#[cfg(test)]
mod tests;
