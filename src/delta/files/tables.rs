//! New bytes of a program's tables shipped with each entry's fields as differences from
//! the entry before.
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
//! - [`PAIRS32`]: entries of two 32-bit fields, both taken as differences: the binary
//!   search table of `.eh_frame_hdr` (the function's start and its frame description,
//!   relative to the section, as its `datarel | sdata4` encoding says), and Go's function
//!   table (the `ftab` of `runtime.pclntab`, Go 1.18 on: each function's offset from the
//!   start of the code and its `_func`'s from the table; on docker 26's dockerd, 89 000
//!   functions, 712 KB, under `zstd -18` 333 KB as it is and 68 KB as differences).
//! - [`RELA64`]: `SHT_RELA` sections (`.rela.dyn`, `.rela.plt`), entries of three 64-bit
//!   fields; `r_offset` and `r_info` taken as differences, `r_addend` left as it is (the
//!   addends of relative relocations are the addresses of functions and data, which repeat
//!   as they are and not as differences: on docker 26's engine, `.rela.dyn` of 8.2 MB
//!   under `zstd -18` was 1.28 MB as it is, 0.79 MB with all three fields as differences,
//!   0.59 MB with the first two).
//! - [`EH_FRAME`]: `.eh_frame`'s records, in pieces of about 64 KiB at record boundaries
//!   (so that a big file's pieces hold most of them). Not entries of one size but records
//!   that say their length: the reader walks them from the table's start. An FDE (a record
//!   whose second field, the CIE pointer, is not 0) has that pointer written as its CIE's
//!   offset from the table's start plus one (the same for every FDE of one CIE; see
//!   [`flip`]), and its `pc_begin` (PC-relative, as the CIEs' `R` augmentation 0x1B says)
//!   as the function's offset from the table's start minus the previous FDE's in the
//!   table (a function's distance from the one before).
//! - [`GO_FUNCS`]: Go's `_func` records (Go 1.20 on), which follow its function table, in
//!   pieces like `.eh_frame`'s. Each says how many `pcdata` and `funcdata` offsets follow
//!   its 44 bytes, and the next starts at a multiple of 8: the reader walks them. The
//!   function's offset, its name's, its `pcsp`, `pcfile` and `pcln` tables', its compile
//!   unit and its first line go up from one record to the next and are written as
//!   differences; each `pcdata` offset points just past the record's `pcsp` table and is
//!   written as its distance from it ([`to_pcsp`]). `funcdata` offsets stay as they are
//!   (as differences they compressed worse). On docker 26's dockerd, 89 000 records, 7.7
//!   MB: under `zstd -18` 1.82 MB as they are, 1.45 MB rewritten.
//! - [`GO_PCTAB`]: Go's pc-value tables (`runtime.pctab`, Go 1.18 on), in pieces of about
//!   16 KiB at table boundaries. Not fields but a reordering: each table is pairs of
//!   varints, a change of value (zigzag) then a step of pc, until a change of 0 after the
//!   first pair; each is written as its changes of value (the 0 last), then its steps,
//!   each varint as it is, so that like numbers sit together and a table is still one
//!   string wherever it is (Go programs share most of their packages' tables). The reader
//!   finds the steps' count from the changes'. On docker 26's dockerd alone (6.7 MB of
//!   tables) under `zstd -18`: 3.73 MB as they are, 3.37 MB rewritten; all the changes of
//!   a 256 KiB piece before all its steps made 3.32 MB, but on the go pair's new bytes
//!   (its programs share most of their packages' tables) 43.94 MB against 43.89 per table
//!   (44.39 as they are); the go pair's package is 1.1 % smaller.
//!
//! A patch of a file whose old build has tables too may go further (SOURCE TABLES): the
//! source's tables and the file's are both rewritten, every field, before the difference
//! bytes are taken, so that a table whose entries all moved by the same amount (a function
//! inserted before them) differs in next to no byte; the decoder rewrites the source the
//! same way, patches, and puts back every field of the output's tables. `encode` keeps it
//! where the difference bytes come out smaller. Measured with `zstd -19 --patch-from` on
//! the same sections of the files of the ml pair that have an old build, old against new:
//! 1.37 MB as they are, 0.62 MB both rewritten.
//!
//! Measured on the new layer of the bench's tools pair, every ELF file's sections
//! concatenated, `zstd -18`: the `.eh_frame_hdr` tables 726 KB, compressed 282 KB as they
//! are and 48 KB as differences; `.rela.dyn` 1.1 MB, 134 KB and 73 KB; `.eh_frame` 4.7 MB,
//! 653 KB and 311 KB (its `pc_begin` alone as differences: 533 KB).
//!
//! Encoding, an operation before the LIT, DIFF or XDIFF whose new bytes it rewrites (see
//! the module doc of [`super`]):
//!
//! ```text
//! tables = varint(n) n*(varint(gap) varint(len) varint(kind))
//! ```
//!
//! Each table is `len` bytes from the end of the one before plus `gap` (offsets into the
//! operation's output): for the kinds of entries of one size, whole entries from the first
//! taken as differences (the entry before it is in the output too, and in no other table);
//! for [`EH_FRAME`], records from the first.

use super::bsdiff::Control;
use super::refs::{le, ElfSections};
use super::stream::{bad, get, put};
use crate::error::Result;

/// Entries of two 32-bit fields, both taken as differences (`.eh_frame_hdr`'s table, Go's
/// function table).
pub const PAIRS32: u64 = 1;
/// ELF64 `Rela` entries: `r_offset` and `r_info` (64 bits each) taken as differences,
/// `r_addend` not.
pub const RELA64: u64 = 2;

/// `.eh_frame`'s records: each FDE's CIE pointer and `pc_begin` rewritten (see the module
/// doc).
pub const EH_FRAME: u64 = 3;
/// Go's `_func` records (Go 1.20 on): seven fields as differences from the record before's,
/// `pcdata` from the record's own `pcsp` (see the module doc).
pub const GO_FUNCS: u64 = 4;

/// Go's pc-value tables (Go 1.18 on): a piece's changes of value, then its steps of pc
/// (see the module doc).
pub const GO_PCTAB: u64 = 5;

/// Bytes of a `_func` record before its `pcdata` (Go 1.20 on): `entryOff`, `nameOff`,
/// `args`, `deferreturn`, `pcsp`, `pcfile`, `pcln`, `npcdata`, `cuOffset`, `startLine`,
/// then four bytes of which the last is `nfuncdata`.
const GO_FUNC_HEADER: u64 = 44;
/// The 32-bit fields of a `_func` record taken as differences from the same field of the
/// record before: `entryOff`, `nameOff`, `pcsp`, `pcfile`, `pcln`, `cuOffset`, `startLine`.
const GO_FUNC_FIELDS: [usize; 7] = [0, 4, 16, 20, 24, 32, 36];

/// Bytes of records per [`EH_FRAME`] or [`GO_FUNCS`] table, at least (the last one of a
/// section less): a big file's piece holds the tables wholly inside it.
const RECORDS_PIECE: u64 = 64 << 10;

/// Bytes of pc-value tables per [`GO_PCTAB`] table, at least (the last one less). Each
/// table is rewritten on its own, so the pieces' size changes nothing but what is lost
/// where a big file's pieces (of 8 MiB) cut one, which is shipped as it is: with pieces of
/// 256 KiB, the three that the go pair's cuts left as they were cost 0.3 MB, because the
/// same tables, rewritten, are in the other programs (a table rewritten and the same table
/// as it is have nothing in common). At 16 KiB an operation names at most 512 of them.
const PCTAB_PIECE: u64 = 16 << 10;

/// Most tables an operation may name (a decoder's bound; ELF files have a few).
const MAX_TABLES: u64 = 1 << 10;

/// A kind of table of entries of one size: the size, and the fields taken as differences
/// (offset in the entry, width 4 or 8).
struct Layout {
    entry: u64,
    fields: &'static [(u64, usize)],
}

fn layout(kind: u64) -> Option<Layout> {
    match kind {
        PAIRS32 => Some(Layout {
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

/// The fields of table `t` of entries of one size (`l`), in order: (position, width, the
/// entry size).
fn fields<'a>(
    t: &'a Table,
    l: &'a Layout,
) -> impl DoubleEndedIterator<Item = (usize, usize, usize)> + 'a {
    (0..t.len / l.entry).flat_map(move |k| {
        let at = t.start + k * l.entry;
        l.fields
            .iter()
            .map(move |&(off, width)| ((at + off) as usize, width, l.entry as usize))
    })
}

/// The size of a kind's entries (0 for records, which say their own size: [`EH_FRAME`],
/// [`GO_FUNCS`], and for [`GO_PCTAB`]), `None` for an unknown kind.
fn entry_size(kind: u64) -> Option<u64> {
    match kind {
        EH_FRAME | GO_FUNCS | GO_PCTAB => Some(0),
        _ => layout(kind).map(|l| l.entry),
    }
}

/// A table among an operation's bytes (or a file's, from [`elf_tables`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Table {
    /// Where its first entry taken as differences (its first record) starts.
    pub start: u64,
    /// Its length: whole entries (whole records).
    pub len: u64,
    /// [`PAIRS32`], [`RELA64`], [`EH_FRAME`], [`GO_FUNCS`] or [`GO_PCTAB`].
    pub kind: u64,
}

/// The tables among an operation's new bytes, as offsets into the operation's output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tables {
    /// In order, each with the entry before its first in the output and in no other table.
    pub tables: Vec<Table>,
}

/// The stretches of an operation's output that its new bytes fill: (from, to, where they
/// start among the new bytes), in order.
struct Runs(Vec<(u64, u64, u64)>);

impl Runs {
    /// A patch's `copy` stretches, where its `controls` put them.
    fn of(controls: &[Control]) -> Runs {
        let (mut at, mut taken) = (0u64, 0u64);
        let mut runs = Vec::with_capacity(controls.len());
        for c in controls {
            at += c.add;
            if c.copy > 0 {
                runs.push((at, at + c.copy, taken));
            }
            at += c.copy;
            taken += c.copy;
        }
        Runs(runs)
    }

    /// A whole output of `len` bytes, all new bytes.
    fn whole(len: u64) -> Runs {
        Runs(vec![(0, len, 0)])
    }

    /// Where the field of `width` bytes at `p` of the output is among the new bytes, if it
    /// is wholly inside one stretch.
    fn find(&self, p: u64, width: usize) -> Option<usize> {
        let k = self.0.partition_point(|r| r.1 <= p);
        let &(from, to, taken) = self.0.get(k)?;
        (from <= p && p + width as u64 <= to).then(|| (taken + p - from) as usize)
    }
}

impl Tables {
    /// The tables of a file's `len` bytes from `start`, for a file whose tables are
    /// `tables` (offsets into the file): the entries wholly inside, but the first (which
    /// the second needs), and the tables of records and pc-value tables wholly inside
    /// (pc-value tables that follow one another as one); `None` where there are none. At
    /// most as many as an operation may name, the first ones.
    pub fn of_piece(tables: &[Table], start: u64, len: u64) -> Option<Tables> {
        let end = start + len;
        let mut inside: Vec<Table> = Vec::new();
        let pieces = tables.iter().filter_map(|t| {
            if matches!(t.kind, EH_FRAME | GO_FUNCS | GO_PCTAB) {
                return (start <= t.start && t.start + t.len <= end).then(|| Table {
                    start: t.start - start,
                    ..*t
                });
            }
            let entry = layout(t.kind)?.entry;
            // The first entry from which the one before is inside the piece too.
            let from = start.saturating_add(entry).max(t.start);
            let first = t.start + (from - t.start).next_multiple_of(entry);
            let last = t.start + (end.min(t.start + t.len).saturating_sub(t.start)) / entry * entry;
            (first < last).then(|| Table {
                start: first - start,
                len: last - first,
                kind: t.kind,
            })
        });
        for t in pieces {
            match inside.last_mut() {
                // Each pc-value table is rewritten on its own: pieces that meet are one.
                Some(l)
                    if l.kind == GO_PCTAB && t.kind == GO_PCTAB && l.start + l.len == t.start =>
                {
                    l.len += t.len;
                }
                _ => inside.push(t),
            }
        }
        inside.truncate(MAX_TABLES as usize);
        (!inside.is_empty()).then_some(Tables { tables: inside })
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
            let entry =
                entry_size(kind).ok_or_else(|| bad(format!("unknown kind of table {kind}")))?;
            let start = end
                .checked_add(gap)
                .filter(|s| s.checked_add(len).is_some_and(|e| e <= limit))
                .ok_or_else(|| bad("a table beyond the output of the operation it rewrites"))?;
            // The entry before the first is the output's, and no other table's.
            if start < end + entry || entry > 0 && len % entry != 0 {
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

    /// Rewrites every field of the tables in `bytes` (a whole operation's output, or a
    /// patch's source), in place (the encoder's side, and the decoder's for a source); how
    /// many.
    pub fn to_differences(&self, bytes: &mut [u8]) -> usize {
        let mut rewritten = 0;
        for t in &self.tables {
            if t.kind == GO_PCTAB {
                if let Some(piece) = bytes.get_mut(t.start as usize..(t.start + t.len) as usize) {
                    let split = pctab_split(piece);
                    piece.copy_from_slice(&split);
                    rewritten += 1;
                }
                continue;
            }
            if matches!(t.kind, EH_FRAME | GO_FUNCS) {
                // Records are read from a copy of the table as it is, and rewritten in
                // place: a record's rewrite reads the one before as it was.
                let end = ((t.start + t.len) as usize).min(bytes.len());
                let from = (t.start as usize).min(end);
                let table = bytes[from..end].to_vec();
                let at_start = Table { start: 0, ..*t };
                walked_differences(&table, &at_start, |p, v| {
                    set_field(bytes, from + p, 4, v as u64);
                    rewritten += 1;
                });
                continue;
            }
            let Some(l) = layout(t.kind) else { continue };
            // From the last entry back: each takes the one before as it still is.
            for (p, width, entry) in fields(t, &l).rev() {
                let before = field(bytes, p.saturating_sub(entry), width);
                set_field(bytes, p, width, field(bytes, p, width).wrapping_sub(before));
                rewritten += 1;
            }
        }
        rewritten
    }

    /// Undoes [`Tables::to_differences`] (the decoder's side); refuses pc-value tables
    /// that do not walk as their table says.
    pub fn to_values(&self, output: &mut [u8]) -> Result<()> {
        self.decode(&Runs::whole(output.len() as u64), output)
    }

    /// Rewrites the fields in a patch's new bytes (`extra`, as the patch's `controls` place
    /// them in `output`, the operation's output as the new file has it); how many.
    pub fn extra_to_differences(
        &self,
        controls: &[Control],
        extra: &mut [u8],
        output: &[u8],
    ) -> usize {
        self.encode(&Runs::of(controls), output, extra)
    }

    /// Undoes [`Tables::extra_to_differences`] where the patch has written its output
    /// (`out`, the operation's output): the runs of new bytes are where the controls put
    /// them, and every byte before them is as the new file has it.
    pub fn to_values_in_output(&self, controls: &[Control], out: &mut [u8]) -> Result<()> {
        self.decode(&Runs::of(controls), out)
    }

    /// Writes the rewritten fields of `output` (as the new file has it) that are wholly
    /// among its new bytes into `news`, where `runs` say; how many.
    fn encode(&self, runs: &Runs, output: &[u8], news: &mut [u8]) -> usize {
        let mut rewritten = 0;
        // Pc-value tables wholly among the new bytes, reordered.
        for t in self.tables.iter().filter(|t| t.kind == GO_PCTAB) {
            let (from, to) = (t.start as usize, (t.start + t.len) as usize);
            let i = runs.find(t.start, t.len as usize);
            if let (Some(i), Some(piece)) = (i, output.get(from..to)) {
                let split = pctab_split(piece);
                if let Some(n) = news.get_mut(i..i + split.len()) {
                    n.copy_from_slice(&split);
                    rewritten += 1;
                }
            }
        }
        let mut write = |p: u64, width: usize, v: u64| {
            if let Some(i) = runs.find(p, width) {
                set_field(news, i, width, v);
                rewritten += 1;
            }
        };
        for t in &self.tables {
            if t.kind == GO_PCTAB {
                continue;
            }
            if matches!(t.kind, EH_FRAME | GO_FUNCS) {
                walked_differences(output, t, |p, v| write(p as u64, 4, v as u64));
                continue;
            }
            let Some(l) = layout(t.kind) else { continue };
            for (p, width, entry) in fields(t, &l) {
                let before = field(output, p.saturating_sub(entry), width);
                write(
                    p as u64,
                    width,
                    field(output, p, width).wrapping_sub(before),
                );
            }
        }
        rewritten
    }

    /// Puts back, in order, the fields of `out` that are wholly among its new bytes (where
    /// `runs` say): each field before them is then as the file has it. Pc-value tables are
    /// put back where they are wholly among them.
    fn decode(&self, runs: &Runs, out: &mut [u8]) -> Result<()> {
        for t in &self.tables {
            if t.kind == GO_PCTAB {
                let range = t.start as usize..(t.start + t.len) as usize;
                if let (Some(_), Some(piece)) =
                    (runs.find(t.start, t.len as usize), out.get_mut(range))
                {
                    let joined = pctab_join(piece).ok_or_else(|| {
                        bad(format!(
                            "the pc-value tables at {} ({} bytes) do not end with the last",
                            t.start, t.len
                        ))
                    })?;
                    piece.copy_from_slice(&joined);
                }
                continue;
            }
            if t.kind == EH_FRAME {
                let mut before = 0u32;
                let mut at = t.start;
                while let Some((next, fde)) = record(out, t, at) {
                    if let Some(q) = fde {
                        let (id_at, pc_at) = (at as usize + 4, at as usize + 8);
                        if runs.find(id_at as u64, 4).is_some() {
                            let id = flip(field(out, id_at, 4) as u32, q);
                            set_field(out, id_at, 4, id as u64);
                        }
                        let pc = field(out, pc_at, 4) as u32;
                        let function = if runs.find(pc_at as u64, 4).is_some() {
                            let function = pc.wrapping_add(before);
                            set_field(
                                out,
                                pc_at,
                                4,
                                function.wrapping_sub(q.wrapping_add(4)) as u64,
                            );
                            function
                        } else {
                            pc.wrapping_add(q.wrapping_add(4))
                        };
                        before = function;
                    }
                    at = next;
                }
                continue;
            }
            if t.kind == GO_FUNCS {
                let (mut before, mut at) = ([0u32; 7], t.start);
                while let Some((next, pcdata)) = go_func(out, t, at) {
                    let a = at as usize;
                    let new = |p: usize| runs.find(p as u64, 4).is_some();
                    // The fields in order, `pcsp` before the `pcdata` that need it.
                    for (j, &o) in GO_FUNC_FIELDS.iter().enumerate() {
                        let mut v = field(out, a + o, 4) as u32;
                        if new(a + o) {
                            v = v.wrapping_add(before[j]);
                            set_field(out, a + o, 4, v as u64);
                        }
                        before[j] = v;
                    }
                    // The record's fields as the file has them, all put back now.
                    let f = GoFunc {
                        at: a,
                        fields: before,
                        pcdata,
                    };
                    for p in f.pcdata().filter(|&p| new(p)) {
                        let v = from_pcsp(field(out, p, 4) as u32, f.pcsp());
                        set_field(out, p, 4, v as u64);
                    }
                    at = next;
                }
                continue;
            }
            let Some(l) = layout(t.kind) else { continue };
            for (p, width, entry) in fields(t, &l) {
                if runs.find(p as u64, width).is_some() {
                    let before = field(out, p.saturating_sub(entry), width);
                    set_field(out, p, width, field(out, p, width).wrapping_add(before));
                }
            }
        }
        Ok(())
    }
}

/// Calls `write` with each field that [`Tables::to_differences`] rewrites in table `t` of
/// `b` (an [`EH_FRAME`] or [`GO_FUNCS`] table, as the file has it): where it is, and its
/// value as written (4 bytes).
fn walked_differences(b: &[u8], t: &Table, mut write: impl FnMut(usize, u32)) {
    if t.kind == EH_FRAME {
        let mut before = 0u32;
        for (id_at, q) in fdes(b, t) {
            let fde = Fde::read(b, id_at as usize, q);
            write(id_at as usize, fde.cie_pointer());
            write(id_at as usize + 4, fde.pc_begin(before));
            before = fde.function;
        }
        return;
    }
    let (mut before, mut at) = ([0u32; 7], t.start);
    while let Some((next, pcdata)) = go_func(b, t, at) {
        let f = GoFunc::read(b, at as usize, pcdata);
        for (p, v) in f.differences(&before) {
            write(p, v);
        }
        for p in f.pcdata() {
            write(p, to_pcsp(field(b, p, 4) as u32, f.pcsp()));
        }
        before = f.fields;
        at = next;
    }
}

/// An FDE of an [`EH_FRAME`] table as the file has it, and the two fields
/// [`Tables::to_differences`] writes for it.
struct Fde {
    /// Its CIE pointer.
    id: u32,
    /// The CIE pointer's offset from the table's start.
    q: u32,
    /// Where its function starts, as an offset from the table's start (`pc_begin` is
    /// PC-relative, from 4 bytes past the CIE pointer).
    function: u32,
}

impl Fde {
    /// The FDE whose CIE pointer is at `id_at` of `b`, `q` bytes into its table.
    fn read(b: &[u8], id_at: usize, q: u32) -> Fde {
        let pc = field(b, id_at + 4, 4) as u32;
        Fde {
            id: field(b, id_at, 4) as u32,
            q,
            function: pc.wrapping_add(q.wrapping_add(4)),
        }
    }

    /// Its CIE pointer as written: the CIE's offset plus one ([`flip`]).
    fn cie_pointer(&self) -> u32 {
        flip(self.id, self.q)
    }

    /// Its `pc_begin` as written: the distance from `before`, the previous FDE's function.
    fn pc_begin(&self, before: u32) -> u32 {
        self.function.wrapping_sub(before)
    }
}

/// The record of [`EH_FRAME`] table `t` at `at` of `b`: where the next starts, and for an
/// FDE whose CIE pointer and `pc_begin` are inside it, the CIE pointer's offset from the
/// table's start. `None` past the table's end, at a terminator (length 0), a 64-bit length
/// or a record that ends past the table. Lengths are never rewritten, and the CIE
/// pointer's being 0 (a CIE) neither ([`flip`] keeps it so): the reader walks the records
/// as the writer did.
fn record(b: &[u8], t: &Table, at: u64) -> Option<(u64, Option<u32>)> {
    let end = t.start + t.len;
    if at + 8 > end {
        return None;
    }
    let len = field(b, at as usize, 4);
    let next = at + 4 + len;
    if len == 0 || len == 0xFFFF_FFFF || next > end {
        return None;
    }
    let fde = len >= 8 && field(b, at as usize + 4, 4) != 0;
    Some((next, fde.then_some((at + 4 - t.start) as u32)))
}

/// The FDEs of [`EH_FRAME`] table `t` of `b`, in order: (where the CIE pointer is, its
/// offset from the table's start).
fn fdes<'a>(b: &'a [u8], t: &'a Table) -> impl Iterator<Item = (u64, u32)> + 'a {
    let mut at = t.start;
    std::iter::from_fn(move || loop {
        let (next, fde) = record(b, t, at)?;
        let here = at;
        at = next;
        if let Some(q) = fde {
            return Some((here + 4, q));
        }
    })
}

/// The `_func` record of [`GO_FUNCS`] table `t` at `at` of `b`: where the next starts (the
/// next multiple of 8 from the table's start past it) and its number of `pcdata`. `None`
/// where fewer than [`GO_FUNC_HEADER`] bytes of the table are left, or for a record that
/// would end past the table. `npcdata` and `nfuncdata` are never rewritten: the reader
/// walks the records as the writer did.
fn go_func(b: &[u8], t: &Table, at: u64) -> Option<(u64, u32)> {
    let end = t.start + t.len;
    if at + GO_FUNC_HEADER > end {
        return None;
    }
    let (size, pcdata) = go_func_size(b.get(at as usize..)?)?;
    if at + size > end {
        return None;
    }
    Some((
        t.start + (at - t.start + size).next_multiple_of(8),
        pcdata as u32,
    ))
}

/// The size of the `_func` record `record` starts with (its header, `pcdata` and
/// `funcdata`) and its number of `pcdata`; `None` if its header is not all there.
fn go_func_size(record: &[u8]) -> Option<(u64, u64)> {
    let header = record.get(..GO_FUNC_HEADER as usize)?;
    let (pcdata, funcdata) = (field(header, 28, 4), header[43] as u64);
    Some((GO_FUNC_HEADER + 4 * (pcdata + funcdata), pcdata))
}

/// A `_func` record as the file has it: the fields of [`GO_FUNC_FIELDS`], and where its
/// `pcdata` are.
struct GoFunc {
    at: usize,
    fields: [u32; 7],
    pcdata: u32,
}

impl GoFunc {
    /// The record at `at` of `b`, with `pcdata` of them.
    fn read(b: &[u8], at: usize, pcdata: u32) -> GoFunc {
        GoFunc {
            at,
            fields: GO_FUNC_FIELDS.map(|o| field(b, at + o, 4) as u32),
            pcdata,
        }
    }

    /// Each field of [`GO_FUNC_FIELDS`] as written, where it goes: its difference from
    /// `before`, the same fields of the record before.
    fn differences<'a>(&'a self, before: &'a [u32; 7]) -> impl Iterator<Item = (usize, u32)> + 'a {
        GO_FUNC_FIELDS
            .iter()
            .zip(self.fields.iter().zip(before))
            .map(|(&o, (&v, &b))| (self.at + o, v.wrapping_sub(b)))
    }

    /// Its `pcsp`, as the file has it.
    fn pcsp(&self) -> u32 {
        self.fields[2]
    }

    /// Where its `pcdata` are, each written as [`to_pcsp`] of it.
    fn pcdata(&self) -> impl Iterator<Item = usize> {
        let first = self.at + GO_FUNC_HEADER as usize;
        (0..self.pcdata as usize).map(move |i| first + 4 * i)
    }
}

/// A `pcdata` offset `v` as the distance from its record's `pcsp` (both offsets into the
/// same table, written one after the other): `v - pcsp` modulo 2^32, but 0 (no such data)
/// stays 0 and `v = pcsp` becomes `-pcsp`, so that no two values meet; [`from_pcsp`] is
/// its inverse.
fn to_pcsp(v: u32, pcsp: u32) -> u32 {
    match v {
        0 => 0,
        v if v == pcsp => 0u32.wrapping_sub(pcsp),
        v => v.wrapping_sub(pcsp),
    }
}

/// The inverse of [`to_pcsp`].
fn from_pcsp(w: u32, pcsp: u32) -> u32 {
    match w {
        0 => 0,
        w if w == 0u32.wrapping_sub(pcsp) => pcsp,
        w => w.wrapping_add(pcsp),
    }
}

/// Where a walk of Go's pc-value tables is: before a change of value (the table's first,
/// or a later one), or before a step of pc.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PcWalk {
    Value { first: bool },
    Step,
}

impl PcWalk {
    /// Before a table's first pair.
    const START: PcWalk = PcWalk::Value { first: true };

    /// Where the walk is after `varint`, read here: a change of value of 0 after a
    /// table's first pair ends the table (as Go's runtime reads it), a change of value is
    /// followed by a step, a step by a change.
    fn after(self, varint: &[u8]) -> PcWalk {
        match self {
            PcWalk::Value { first: false } if varint.iter().all(|b| b & 0x7F == 0) => PcWalk::START,
            PcWalk::Value { .. } => PcWalk::Step,
            PcWalk::Step => PcWalk::Value { first: false },
        }
    }
}

/// The end of the varint at `at` of `b`: just past its first byte under 0x80, else `b`'s
/// end.
fn varint_end(b: &[u8], at: usize) -> usize {
    b[at..]
        .iter()
        .position(|&c| c < 0x80)
        .map_or(b.len(), |i| at + i + 1)
}

/// The end of the pc-value table at `at` of `b`, as the file has it (pairs of a change of
/// value and a step of pc, ended by a change of 0 after the first pair); `None` if it does
/// not end in `b`.
fn pc_table_end(b: &[u8], at: usize) -> Option<usize> {
    let (mut walk, mut at) = (PcWalk::START, at);
    while at < b.len() {
        let end = varint_end(b, at);
        if b[end - 1] >= 0x80 {
            return None;
        }
        walk = walk.after(&b[at..end]);
        at = end;
        if walk == PcWalk::START {
            return Some(at);
        }
    }
    None
}

/// `b`, Go's pc-value tables walked from the first, each written as its changes of value
/// (its terminator last) then its steps of pc, each varint as it is; the bytes after the
/// last table that ends in `b` stay as they are. [`pctab_join`] undoes it.
fn pctab_split(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut steps = Vec::new();
    let mut at = 0;
    while let Some(end) = pc_table_end(b, at) {
        let mut walk = PcWalk::START;
        while at < end {
            let next = varint_end(b, at);
            match walk {
                PcWalk::Step => steps.extend_from_slice(&b[at..next]),
                PcWalk::Value { .. } => out.extend_from_slice(&b[at..next]),
            }
            walk = walk.after(&b[at..next]);
            at = next;
        }
        out.append(&mut steps);
    }
    out.extend_from_slice(&b[at..]);
    out
}

/// The tables [`pctab_split`] made `b` of, wholly: `None` where one's changes of value or
/// its steps do not end in `b`. Byte by byte (varints are a byte or two, shorter than a
/// call to copy them).
fn pctab_join(b: &[u8]) -> Option<Vec<u8>> {
    let mut out = vec![0u8; b.len()];
    let (mut o, mut at) = (0, 0);
    // Appends the varint at `from` to `out`; where it ends (`None` if it does not).
    let mut take = |from: usize, o: &mut usize| -> Option<usize> {
        let mut at = from;
        loop {
            let c = *b.get(at)?;
            *out.get_mut(*o)? = c;
            (*o, at) = (*o + 1, at + 1);
            if c < 0x80 {
                return Some(at);
            }
        }
    };
    while at < b.len() {
        // The table's changes of value, to the 0 that ends them: as many steps follow as
        // there are changes before it.
        let (changes, mut first, mut pairs) = (at, true, 0);
        let terminator = loop {
            let here = at;
            if here >= b.len() {
                return None;
            }
            at = varint_end(b, here);
            if b[at - 1] >= 0x80 {
                return None;
            }
            let walk = PcWalk::Value { first };
            if walk.after(&b[here..at]) == PcWalk::START {
                break here;
            }
            (first, pairs) = (false, pairs + 1);
        };
        let (mut change, mut step) = (changes, at);
        for _ in 0..pairs {
            change = take(change, &mut o)?;
            step = take(step, &mut o)?;
        }
        take(terminator, &mut o)?;
        at = step;
    }
    Some(out)
}

/// An FDE's CIE pointer `v` (the distance back from the pointer, at offset `q` from the
/// table's start, to its CIE) as the CIE's offset from the table's start plus one: `q + 1 -
/// v` modulo 2^32, but `q + 1` stays as it is. Its own inverse, and never 0 for a pointer
/// that is not 0, so a reader tells a CIE from an FDE whichever it reads.
fn flip(v: u32, q: u32) -> u32 {
    let one_past = q.wrapping_add(1);
    if v == one_past {
        v
    } else {
        one_past.wrapping_sub(v)
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
    const SHT_RELA: u64 = 4;
    const MAX_NAMES: u64 = 1 << 16;
    const MAX_EH_FRAME: u64 = 64 << 20;
    let elf = ElfSections::read(len, read)?;
    let sections = elf.headers;
    let shstrndx = elf.names;
    let u32_at = |b: &[u8], o| le::<4>(b, o);
    let u64_at = |b: &[u8], o| le::<8>(b, o);
    let fits = |off: u64, size: u64| off.checked_add(size).is_some_and(|end| end <= len);
    let names = sections
        .chunks_exact(64)
        .nth(shstrndx as usize)
        .and_then(|h| {
            let (off, size) = (u64_at(h, 0x18)?, u64_at(h, 0x20)?.min(MAX_NAMES));
            fits(off, size).then(|| read(off, size)).flatten()
        });
    let name_is = |h: &[u8], want: &[u8]| {
        let name = u32_at(h, 0).unwrap_or(u64::MAX) as usize;
        names
            .as_ref()
            .and_then(|n| n.get(name..name.checked_add(want.len() + 1)?))
            .is_some_and(|n| n[..want.len()] == *want && n[want.len()] == 0)
    };
    let go = sections
        .chunks_exact(64)
        .any(|h| name_is(h, b".note.go.buildid") || name_is(h, b".gopclntab"));
    let mut found = Vec::new();
    for h in sections.chunks_exact(64) {
        let kind = u32_at(h, 4)?;
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
        let named = |want: &[u8]| name_is(h, want);
        // Go's runtime.pclntab: its own section in programs that are not
        // position-independent, inside .data.rel.ro in those that are.
        if go && (named(b".gopclntab") || named(b".data.rel.ro")) {
            found.extend(go_function_table(read, off, size));
            continue;
        }
        if (8..=MAX_EH_FRAME).contains(&size) && named(b".eh_frame") {
            found.extend(eh_frame_tables(off, &read(off, size)?));
            continue;
        }
        if size >= 28 && named(b".eh_frame_hdr") {
            // version 1, a 4-byte eh_frame_ptr, fde_count as udata4, the table as
            // datarel | sdata4.
            let hdr = read(off, 12)?;
            let ptr_of_4_bytes = matches!(hdr[1] & 0x0F, 0x03 | 0x0B);
            if hdr[0] != 1 || !ptr_of_4_bytes || hdr[2] != 0x03 || hdr[3] != 0x3B {
                continue;
            }
            let count = u32_at(&hdr, 8)?;
            let entries = count.min((size - 12) / 8);
            if entries >= 2 {
                found.push(Table {
                    start: off + 12 + 8,
                    len: (entries - 1) * 8,
                    kind: PAIRS32,
                });
            }
        }
    }
    Some(found)
}

/// Go's function table (the `ftab` of `runtime.pclntab`, Go 1.18 on) in the section of
/// `size` bytes at `off`, found by its header's magic, as a [`PAIRS32`] table from its second
/// entry, and (Go 1.20 on) the `_func` records after it ([`go_func_tables`]). The header
/// (`runtime.pcHeader`): magic 0xFFFFFFF0 (Go 1.18, 1.19) or 0xFFFFFFF1 (1.20 on), two zero
/// bytes, the instruction size quantum (1, 2 or 4), the pointer size (8), then `nfunc` and
/// seven more 8-byte words, the last `pclnOffset`: the table is at the header plus that,
/// `nfunc + 1` entries of (function's offset, `_func`'s offset from the table), and the
/// first `_func` follows it (which says it is the table).
fn go_function_table(
    read: &impl Fn(u64, u64) -> Option<Vec<u8>>,
    off: u64,
    size: u64,
) -> Vec<Table> {
    const WINDOW: u64 = 4 << 20;
    const HEADER: u64 = 72;
    let end = off + size;
    let table = |at: u64| -> Option<Vec<Table>> {
        let h = read(at, HEADER)?;
        let word = |o: usize| u64::from_le_bytes(h[o..o + 8].try_into().unwrap_or([0; 8]));
        let magic = u32::from_le_bytes(h[..4].try_into().ok()?);
        let header_ok = matches!(magic, 0xFFFF_FFF0 | 0xFFFF_FFF1)
            && h[4..6] == [0, 0]
            && matches!(h[6], 1 | 2 | 4)
            && h[7] == 8;
        let nfunc = word(8);
        if !header_ok || !(2..1 << 24).contains(&nfunc) {
            return None;
        }
        let ftab = at.checked_add(word(64))?;
        if ftab.checked_add((nfunc + 1) * 8)? > end {
            return None;
        }
        let first = read(ftab, 8)?;
        let funcs = u32::from_le_bytes(first[4..8].try_into().ok()?) as u64;
        if funcs != (nfunc + 1) * 8 {
            return None;
        }
        let mut found = go_pctab_tables(read, at, word(56), word(64));
        found.push(Table {
            start: ftab + 8,
            len: nfunc * 8,
            kind: PAIRS32,
        });
        if magic == 0xFFFF_FFF1 {
            found.extend(go_func_tables(read, ftab, nfunc, end));
        }
        Some(found)
    };
    let mut at = off;
    while at + HEADER <= end {
        let Some(window) = read(at, WINDOW.min(end - at)) else {
            break;
        };
        let pattern = [0xFF, 0xFF, 0xFF, 0, 0];
        for i in memchr::memmem::find_iter(&window, &pattern) {
            let Some(magic_at) = (at + i as u64).checked_sub(1) else {
                continue;
            };
            if magic_at >= off && matches!(window.get(i.wrapping_sub(1)), Some(0xF0 | 0xF1) | None)
            {
                if let Some(t) = table(magic_at) {
                    return t;
                }
            }
        }
        at += WINDOW - 8;
    }
    Vec::new()
}

/// Go's pc-value tables (`runtime.pctab`) of the `runtime.pcHeader` at `header`, from
/// `pctab` to `pcln` bytes past it (its offsets), as [`GO_PCTAB`] tables: from the second
/// byte (Go's linker writes a zero first, so that no table is at offset 0), cut at table
/// ends into tables of at least [`PCTAB_PIECE`] bytes, up to the last table that ends
/// (padding follows it). None if the offsets are not in order past the header.
fn go_pctab_tables(
    read: &impl Fn(u64, u64) -> Option<Vec<u8>>,
    header: u64,
    pctab: u64,
    pcln: u64,
) -> Vec<Table> {
    // What is read at once: dockerd's tables take 6.7 MB.
    const MAX_PCTAB: u64 = 32 << 20;
    const HEADER: u64 = 72;
    if pctab < HEADER || pcln <= pctab.saturating_add(1) {
        return Vec::new();
    }
    let Some(from) = header.checked_add(pctab + 1) else {
        return Vec::new();
    };
    let Some(b) = read(from, (pcln - pctab - 1).min(MAX_PCTAB)) else {
        return Vec::new();
    };
    let ends = std::iter::successors(pc_table_end(&b, 0), |&at| pc_table_end(&b, at));
    cut_into_pieces(from, ends.map(|end| end as u64), PCTAB_PIECE, GO_PCTAB)
}

/// The `_func` records (Go 1.20 on) after the function table of `nfunc` entries at `ftab`,
/// as [`GO_FUNCS`] tables: from the first, which follows the table, for as long as each
/// record is where the function table says and the walk ([`go_func`]) finds it, and before
/// `end`; cut at record boundaries into tables of at least [`RECORDS_PIECE`] bytes.
fn go_func_tables(
    read: &impl Fn(u64, u64) -> Option<Vec<u8>>,
    ftab: u64,
    nfunc: u64,
    end: u64,
) -> Vec<Table> {
    // What is read at once: docker 26's dockerd has 89 000 functions (a 0.7 MB table) and
    // 7.7 MB of records; a program with ten times as many passes.
    const MAX_TABLE: u64 = 16 << 20;
    const MAX_FUNCS: u64 = 96 << 20;
    let first = ftab + (nfunc + 1) * 8;
    if nfunc * 8 > MAX_TABLE {
        return Vec::new();
    }
    let Some(entries) = read(ftab, nfunc * 8) else {
        return Vec::new();
    };
    // Up to the end of the last record the table names (read no further).
    let last = ftab + le::<4>(&entries, 8 * nfunc as usize - 4).unwrap_or(0);
    let last_len = read(last, GO_FUNC_HEADER)
        .and_then(|h| go_func_size(&h))
        .map_or(0, |(size, _)| size);
    let len = (last + last_len)
        .min(end)
        .saturating_sub(first)
        .min(MAX_FUNCS);
    let Some(records) = read(first, len) else {
        return Vec::new();
    };
    let whole = Table {
        start: 0,
        len,
        kind: GO_FUNCS,
    };
    let (mut k, mut at) = (0, 0u64);
    let ends = std::iter::from_fn(|| {
        // The entry's `_func` offset, from the table's start.
        let said = le::<4>(&entries, 8 * k + 4).filter(|_| k < nfunc as usize);
        if said.and_then(|s| ftab.checked_add(s)) != Some(first + at) {
            return None;
        }
        let (next, _) = go_func(&records, &whole, at)?;
        (k, at) = (k + 1, next.min(len));
        Some(at)
    });
    cut_into_pieces(first, ends, RECORDS_PIECE, GO_FUNCS)
}

/// The [`EH_FRAME`] tables of an `.eh_frame` section at `off` in its file: its records up
/// to the first it cannot walk, in tables of at least [`RECORDS_PIECE`] bytes; none if a
/// CIE says its FDEs' `pc_begin` is anything but PC-relative and 4 bytes (`R` 0x1B, what
/// GCC and LLVM write on x86-64 and AArch64), or says nothing of it.
fn eh_frame_tables(off: u64, section: &[u8]) -> Vec<Table> {
    let whole = Table {
        start: 0,
        len: section.len() as u64,
        kind: EH_FRAME,
    };
    let (mut at, mut encodings_ok) = (0u64, true);
    let ends = std::iter::from_fn(|| {
        let (next, fde) = record(section, &whole, at)?;
        if fde.is_none() && cie_encoding(&section[at as usize..next as usize]) != Some(0x1B) {
            encodings_ok = false;
            return None;
        }
        at = next;
        Some(at)
    });
    let tables = cut_into_pieces(off, ends, RECORDS_PIECE, EH_FRAME);
    if encodings_ok {
        tables
    } else {
        Vec::new()
    }
}

/// Tables of `kind` from `base`, up to the last of `ends` (where a table may end, as
/// offsets from `base`, in order), each ending at the first of them at least `min` bytes
/// past where it starts (the last one shorter).
fn cut_into_pieces(
    base: u64,
    ends: impl IntoIterator<Item = u64>,
    min: u64,
    kind: u64,
) -> Vec<Table> {
    let (mut tables, mut from, mut at) = (Vec::new(), 0, 0);
    let mut piece = |from: u64, to: u64| {
        tables.push(Table {
            start: base + from,
            len: to - from,
            kind,
        })
    };
    for end in ends {
        at = end;
        if at - from >= min {
            piece(from, at);
            from = at;
        }
    }
    if at > from {
        piece(from, at);
    }
    tables
}

/// The `R` augmentation (the encoding of its FDEs' `pc_begin`) of a CIE record (its
/// length field first), if it has one and can be read.
fn cie_encoding(cie: &[u8]) -> Option<u8> {
    let mut b = cie.get(8..)?.iter().copied();
    let version = b.next()?;
    let augmentation: Vec<u8> = b.by_ref().take_while(|&c| c != 0).collect();
    fn leb(b: &mut impl Iterator<Item = u8>) -> Option<()> {
        while b.next()? & 0x80 != 0 {}
        Some(())
    }
    // Code and data alignment factors, the return address register (a byte in version 1).
    leb(&mut b)?;
    leb(&mut b)?;
    if version == 1 {
        b.next()?;
    } else {
        leb(&mut b)?;
    }
    let (&z, rest) = augmentation.split_first()?;
    if z != b'z' {
        return None;
    }
    leb(&mut b)?; // the augmentation data's length
    for c in rest {
        match c {
            b'R' => return b.next(),
            b'L' => {
                b.next()?;
            }
            b'P' => {
                let encoding = b.next()?;
                let size = match encoding & 0x0F {
                    0x00 | 0x04 | 0x0C => 8,
                    0x02 | 0x0A => 2,
                    0x03 | 0x0B => 4,
                    _ => return None,
                };
                for _ in 0..size {
                    b.next()?;
                }
            }
            b'S' | b'B' => {}
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests;
