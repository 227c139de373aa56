//! New bytes of a program's sorted tables shipped with each entry's fields as differences
//! from the entry before.
//!
//! Linked programs and libraries hold tables whose entries go up in steps: the relocations
//! a dynamic loader applies (`r_offset` goes up by 8 from one pointer to the next, `r_info`
//! is the same for every relative relocation), and the unwinder's index of functions
//! (`.eh_frame_hdr`: each function's start and its frame description, in address order).
//! As they are, no two entries are alike, and a compressor finds little; written as the
//! difference from the entry before, they are the same few values over and over: function
//! and frame sizes, 8, 0. Only the bytes a package ships as they are (a file or piece
//! shipped whole, a patch's new bytes) are rewritten, and only fields wholly among them;
//! the decoder adds the entry before back, in order, once the operation's output is in
//! place (an entry before that a patch copied is already as it was).
//!
//! Kinds of table (little-endian, 64-bit ELF files; found by [`elf_tables`]):
//!
//! - [`EH_FRAME_HDR`]: the binary search table of `.eh_frame_hdr`, entries of two 32-bit
//!   fields (the function's start and its frame description, relative to the section, as
//!   its `datarel | sdata4` encoding says), both taken as differences.
//! - [`RELA64`]: `SHT_RELA` sections (`.rela.dyn`, `.rela.plt`), entries of three 64-bit
//!   fields; `r_offset` and `r_info` taken as differences, `r_addend` left as it is (the
//!   addends of relative relocations are the addresses of functions and data, which repeat
//!   as they are and not as differences: on docker 26's engine, `.rela.dyn` of 8.2 MB
//!   under `zstd -18` was 1.28 MB as it is, 0.79 MB with all three fields as differences,
//!   0.59 MB with the first two).
//!
//! Measured on the new layer of the bench's tools pair, every ELF file's sections
//! concatenated, `zstd -18`: the `.eh_frame_hdr` tables 726 KB, compressed 282 KB as they
//! are and 48 KB as differences; `.rela.dyn` 1.1 MB, 134 KB and 73 KB.
//!
//! Encoding, an operation before the LIT, DIFF or XDIFF whose new bytes it rewrites (see
//! the module doc of [`super`]):
//!
//! ```text
//! tables = varint(n) n*(varint(gap) varint(len) varint(kind))
//! ```
//!
//! Each table is `len` bytes of whole entries of its kind from the end of the one before
//! plus `gap` (offsets into the operation's output), starting at the first entry taken as
//! differences: the entry before it is in the output too.

use super::bsdiff::Control;
use super::stream::{bad, get, put};
use crate::error::Result;

/// `.eh_frame_hdr`'s table: entries of two 32-bit fields, both taken as differences.
pub const EH_FRAME_HDR: u64 = 1;
/// ELF64 `Rela` entries: `r_offset` and `r_info` (64 bits each) taken as differences,
/// `r_addend` not.
pub const RELA64: u64 = 2;

/// Most tables an operation may name (a decoder's bound; ELF files have a few).
const MAX_TABLES: u64 = 1 << 10;

/// A kind of table: its entries' size, and the fields taken as differences (offset in the
/// entry, width 4 or 8).
struct Layout {
    entry: u64,
    fields: &'static [(u64, usize)],
}

fn layout(kind: u64) -> Option<Layout> {
    match kind {
        EH_FRAME_HDR => Some(Layout {
            entry: 8,
            fields: &[(0, 4), (4, 4)],
        }),
        RELA64 => Some(Layout {
            entry: 24,
            fields: &[(0, 8), (8, 8)],
        }),
        _ => None,
    }
}

/// A table among an operation's bytes (or a file's, from [`elf_tables`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Table {
    /// Where its first entry taken as differences starts.
    pub start: u64,
    /// Its length, whole entries.
    pub len: u64,
    /// [`EH_FRAME_HDR`] or [`RELA64`].
    pub kind: u64,
}

/// The tables among an operation's new bytes, as offsets into the operation's output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tables {
    /// In order, each with the entry before its first in the output and in no other table.
    pub tables: Vec<Table>,
}

impl Tables {
    /// The tables of a file's `len` bytes from `start`, for a file whose tables are
    /// `tables` (offsets into the file): the entries wholly inside, but the first (which
    /// the second needs); `None` where there are none.
    pub fn of_piece(tables: &[Table], start: u64, len: u64) -> Option<Tables> {
        let end = start + len;
        let tables: Vec<Table> = tables
            .iter()
            .filter_map(|t| {
                let entry = layout(t.kind)?.entry;
                // The first entry from which the one before is inside the piece too.
                let from = start.saturating_add(entry).max(t.start);
                let first = t.start + (from - t.start).next_multiple_of(entry);
                let last =
                    t.start + (end.min(t.start + t.len).saturating_sub(t.start)) / entry * entry;
                (first < last).then(|| Table {
                    start: first - start,
                    len: last - first,
                    kind: t.kind,
                })
            })
            .collect();
        (!tables.is_empty()).then_some(Tables { tables })
    }

    /// Writes the operation's fields.
    pub fn write(&self, out: &mut Vec<u8>) {
        put(out, self.tables.len() as u64);
        let mut end = 0;
        for t in &self.tables {
            put(out, t.start - end);
            put(out, t.len);
            put(out, t.kind);
            end = t.start + t.len;
        }
    }

    /// Reads the operation's fields, its tables within `limit` bytes (the most an
    /// operation's output may be; [`Tables::check`] holds them to the operation's own
    /// length), refusing unknown kinds, tables out of order, of part entries, or without
    /// the entry before their first (which is in no other table).
    pub fn read(ops: &mut &[u8], limit: u64) -> Result<Tables> {
        let n = get(ops)?;
        if n > MAX_TABLES {
            return Err(bad(format!("{n} tables in a TABLES operation")));
        }
        let mut tables = Vec::with_capacity(n as usize);
        let mut end = 0u64;
        for _ in 0..n {
            let (gap, len, kind) = (get(ops)?, get(ops)?, get(ops)?);
            let entry = layout(kind)
                .ok_or_else(|| bad(format!("unknown kind of table {kind}")))?
                .entry;
            let start = end
                .checked_add(gap)
                .filter(|s| s.checked_add(len).is_some_and(|e| e <= limit))
                .ok_or_else(|| bad("a table beyond the output of the operation it rewrites"))?;
            // The entry before the first is the output's, and no other table's.
            if start < end + entry || len % entry != 0 {
                return Err(bad(format!(
                    "a table of kind {kind} at {start} of {len} bytes: not whole entries after one"
                )));
            }
            end = start + len;
            tables.push(Table { start, len, kind });
        }
        Ok(Tables { tables })
    }

    /// Refuses tables past an output of `len` bytes.
    pub fn check(&self, len: u64) -> Result<()> {
        match self.tables.last() {
            Some(t) if t.start + t.len > len => Err(bad(format!(
                "tables end at {}, past the {len} bytes of the operation they rewrite",
                t.start + t.len
            ))),
            _ => Ok(()),
        }
    }

    /// Takes the fields of a whole operation's output as differences (the encoder's side);
    /// how many.
    pub fn to_differences(&self, output: &mut [u8]) -> usize {
        let mut rewritten = 0;
        for t in &self.tables {
            let Some(l) = layout(t.kind) else { continue };
            // From the last entry back: each takes the one before as it still is.
            let mut at = t.start + t.len;
            while at > t.start {
                at -= l.entry;
                for &(off, width) in l.fields {
                    let p = (at + off) as usize;
                    let before = field(output, p.saturating_sub(l.entry as usize), width);
                    let v = field(output, p, width).wrapping_sub(before);
                    set_field(output, p, width, v);
                    rewritten += 1;
                }
            }
        }
        rewritten
    }

    /// Undoes [`Tables::to_differences`] (the decoder's side).
    pub fn to_values(&self, output: &mut [u8]) {
        let len = output.len() as u64;
        self.restore(output, 0, len);
    }

    /// Takes the fields in a patch's new bytes (`extra`, as the patch's `controls` place
    /// them in `output`, the operation's output as the new file has it) as differences;
    /// how many.
    pub fn extra_to_differences(
        &self,
        controls: &[Control],
        extra: &mut [u8],
        output: &[u8],
    ) -> usize {
        let (mut at, mut taken, mut rewritten) = (0u64, 0u64, 0);
        for c in controls {
            at += c.add;
            let run = (at, at + c.copy);
            self.each_field(run, |p, width, entry| {
                let v = field(output, p, width).wrapping_sub(field(output, p - entry, width));
                let i = (p as u64 - at + taken) as usize;
                if i + width <= extra.len() {
                    set_field(extra, i, width, v);
                    rewritten += 1;
                }
            });
            taken += c.copy;
            at += c.copy;
        }
        rewritten
    }

    /// Undoes [`Tables::extra_to_differences`] where the patch has written its output
    /// (`out`, the operation's output): the runs of new bytes are where the controls put
    /// them, and every byte before them is as the new file has it.
    pub fn to_values_in_output(&self, controls: &[Control], out: &mut [u8]) {
        let mut at = 0u64;
        for c in controls {
            at += c.add;
            self.restore(out, at, at + c.copy);
            at += c.copy;
        }
    }

    /// Adds the entry before back to the fields wholly inside `from..to` of `output`, in
    /// order (a field's entry before is then as it was).
    fn restore(&self, output: &mut [u8], from: u64, to: u64) {
        let to = to.min(output.len() as u64);
        self.each_field((from, to), |p, width, entry| {
            let v = field(output, p, width).wrapping_add(field(output, p - entry, width));
            set_field(output, p, width, v);
        });
    }

    /// Calls `f(position, width, entry size)` for each field taken as a difference wholly
    /// inside `run` (offsets into the output), in order.
    fn each_field(&self, run: (u64, u64), mut f: impl FnMut(usize, usize, usize)) {
        let (from, to) = run;
        for t in &self.tables {
            let Some(l) = layout(t.kind) else { continue };
            let (lo, hi) = (from.max(t.start), to.min(t.start + t.len));
            if lo >= hi {
                continue;
            }
            // Entries that may have a field inside: from the one holding `lo`.
            let mut at = t.start + (lo - t.start) / l.entry * l.entry;
            while at < hi {
                for &(off, width) in l.fields {
                    let p = at + off;
                    if p >= lo && p + width as u64 <= hi {
                        f(p as usize, width, l.entry as usize);
                    }
                }
                at += l.entry;
            }
        }
    }
}

/// The little-endian field of `width` (4 or 8) bytes at `p`.
fn field(b: &[u8], p: usize, width: usize) -> u64 {
    match width {
        4 => b
            .get(p..p + 4)
            .and_then(|s| s.try_into().ok())
            .map_or(0, |s| u32::from_le_bytes(s) as u64),
        _ => b
            .get(p..p + 8)
            .and_then(|s| s.try_into().ok())
            .map_or(0, u64::from_le_bytes),
    }
}

fn set_field(b: &mut [u8], p: usize, width: usize, v: u64) {
    if let Some(s) = b.get_mut(p..p + width) {
        s.copy_from_slice(&v.to_le_bytes()[..width]);
    }
}

/// The tables of a 64-bit little-endian ELF program or shared library of `len` bytes
/// (`read(offset, n)` gives its bytes), as offsets into the file, in order and not
/// overlapping each other or `code` (the file's code ranges, which [`super::calls`]
/// rewrites); empty for anything else.
pub fn elf_tables(
    len: u64,
    code: &[(u64, u64)],
    read: impl Fn(u64, u64) -> Option<Vec<u8>>,
) -> Vec<Table> {
    elf_tables_found(len, &read)
        .map(|mut t| {
            t.sort_unstable_by_key(|t| t.start);
            let mut out: Vec<Table> = Vec::with_capacity(t.len());
            for t in t {
                let entry = layout(t.kind).map_or(0, |l| l.entry);
                // With the entry before the first, which the decoder reads.
                let (from, to) = (t.start - entry, t.start + t.len);
                let after_last = out.last().map_or(0, |l| l.start + l.len);
                let clear_of_code = code.iter().all(|&(s, n)| s + n <= from || to <= s);
                if from >= after_last && clear_of_code {
                    out.push(t);
                }
            }
            out
        })
        .unwrap_or_default()
}

fn elf_tables_found(len: u64, read: &impl Fn(u64, u64) -> Option<Vec<u8>>) -> Option<Vec<Table>> {
    const SHT_RELA: u32 = 4;
    const MAX_SECTIONS: u64 = 1 << 12;
    const MAX_NAMES: u64 = 1 << 16;
    let u16_at = |b: &[u8], o: usize| Some(u16::from_le_bytes(b.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |b: &[u8], o: usize| Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |b: &[u8], o: usize| Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?));
    let head = read(0, len.min(64))?;
    let kind = u16_at(&head, 16)?;
    if !head.starts_with(b"\x7fELF\x02\x01") || !(2..=3).contains(&kind) {
        return None;
    }
    let (shoff, shentsize, shnum, shstrndx) = (
        u64_at(&head, 0x28)?,
        u16_at(&head, 0x3A)?,
        u16_at(&head, 0x3C)?,
        u16_at(&head, 0x3E)?,
    );
    let table_len = shnum as u64 * 64;
    if shentsize != 64 || shnum as u64 > MAX_SECTIONS || shoff.checked_add(table_len)? > len {
        return None;
    }
    let sections = read(shoff, table_len)?;
    let fits = |off: u64, size: u64| off.checked_add(size).is_some_and(|end| end <= len);
    let names = sections
        .chunks_exact(64)
        .nth(shstrndx as usize)
        .and_then(|h| {
            let (off, size) = (u64_at(h, 0x18)?, u64_at(h, 0x20)?.min(MAX_NAMES));
            fits(off, size).then(|| read(off, size)).flatten()
        });
    let mut found = Vec::new();
    for h in sections.chunks_exact(64) {
        let (name, kind) = (u32_at(h, 0)? as usize, u32_at(h, 4)?);
        let (off, size, entsize) = (u64_at(h, 0x18)?, u64_at(h, 0x20)?, u64_at(h, 0x38)?);
        if !fits(off, size) {
            continue;
        }
        if kind == SHT_RELA && entsize == 24 && size >= 48 && size % 24 == 0 {
            found.push(Table {
                start: off + 24,
                len: size - 24,
                kind: RELA64,
            });
            continue;
        }
        let named = |want: &[u8]| {
            names
                .as_ref()
                .and_then(|n| n.get(name..name + want.len() + 1))
                .is_some_and(|n| n[..want.len()] == *want && n[want.len()] == 0)
        };
        if size >= 28 && named(b".eh_frame_hdr") {
            // version 1, a 4-byte eh_frame_ptr, fde_count as udata4, the table as
            // datarel | sdata4.
            let hdr = read(off, 12)?;
            let ptr_of_4_bytes = matches!(hdr[1] & 0x0F, 0x03 | 0x0B);
            if hdr[0] != 1 || !ptr_of_4_bytes || hdr[2] != 0x03 || hdr[3] != 0x3B {
                continue;
            }
            let count = u32_at(&hdr, 8)? as u64;
            let entries = count.min((size - 12) / 8);
            if entries >= 2 {
                found.push(Table {
                    start: off + 12 + 8,
                    len: (entries - 1) * 8,
                    kind: EH_FRAME_HDR,
                });
            }
        }
    }
    Some(found)
}

#[cfg(test)]
mod tests;
