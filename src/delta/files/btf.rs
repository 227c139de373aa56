//! Kernel modules' BTF, renumbered before diffing.
//!
//! A kernel module's `.BTF` section is *split* BTF: it describes the module's own types and
//! refers to the kernel's (vmlinux) types by id and to the kernel's strings by offset; the
//! module's own types are numbered after the kernel's, its own strings placed after the
//! kernel's. A new kernel build renumbers all of these unevenly (types and strings come and
//! go all over vmlinux), so a rebuilt module whose code did not change still differs in
//! thousands of scattered fields, and each run of them moved by a different amount: neither
//! byte nor word differences capture that.
//!
//! So the encoder learns, once per layer, how ids and offsets moved ([`Votes`]): it aligns
//! the type records of each old module with those of the module's new build (same kinds,
//! lengths and own names, in order) and takes, for each kernel id or string offset, the
//! value most aligned fields give it in the new build. The result, a [`BtfMap`] of two
//! piecewise shifts, is shipped in the stream; before such a module is diffed, encoder and
//! decoder both rewrite the old module's BTF through it ([`rewrite`]), and only what the
//! map does not predict is left to the differences. On the kernel bench pair (4022
//! modules) the map has a few thousand pieces and takes about 1.5 MB off the package.
//!
//! Everything here is total: bytes that are not a little-endian ELF64 file with a
//! well-formed `.BTF` section are left as they are, on both sides alike.

use std::collections::HashMap;

use super::stream::bad;
use crate::error::Result;

/// BTF's magic number (little endian in the section).
const BTF_MAGIC: u16 = 0xeb9f;
/// At most this many pieces per [`Shifts`] in a stream (a kernel's map has thousands).
pub const MAX_PIECES: u64 = 1 << 20;

/// A piecewise shift of `u32` values: `v` at or past `starts[i]` and before
/// `starts[i + 1]` becomes `v + shifts[i]` (wrapping); values before the first start stay
/// as they are (in particular 0, "no type" or "no name").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shifts {
    starts: Vec<u32>,
    shifts: Vec<u32>,
    /// Where to look in `starts` for a value, found without a search of them all (each
    /// value of a module's BTF is mapped, and a kernel's map has thousands of pieces):
    /// `lower[b]` counts the starts below `b << bits`. Made from `starts`.
    lower: Vec<u32>,
    bits: u32,
}

impl Shifts {
    /// The shift from `(start, shift)` pieces; starts must rise strictly from 1 up.
    pub fn from_pieces(pieces: Vec<(u32, u32)>) -> Result<Shifts> {
        let mut prev = 0u32;
        for &(s, _) in &pieces {
            if s <= prev {
                return Err(bad(format!("BTF map piece starts at {s}, not past {prev}")));
            }
            prev = s;
        }
        Ok(Shifts::indexed(
            pieces.iter().map(|p| p.0).collect(),
            pieces.iter().map(|p| p.1).collect(),
        ))
    }

    /// The shift of these pieces (starts rising), with its lookup table: buckets of
    /// `1 << bits` values, at most two per piece.
    fn indexed(starts: Vec<u32>, shifts: Vec<u32>) -> Shifts {
        if starts.is_empty() {
            // Every value stays: no table (and equal to the default).
            return Shifts::default();
        }
        let last = starts.last().copied().unwrap_or(0) as u64;
        let most = 2 * starts.len() as u64 + 1;
        let mut bits = 0;
        while (last >> bits) >= most {
            bits += 1;
        }
        let buckets = (last >> bits) + 1;
        let mut lower = Vec::with_capacity(buckets as usize + 1);
        let mut below = 0;
        for b in 0..=buckets {
            while below < starts.len() && (starts[below] as u64) < b << bits {
                below += 1;
            }
            lower.push(below as u32);
        }
        Shifts {
            starts,
            shifts,
            lower,
            bits,
        }
    }

    /// Where `v` goes.
    pub fn map(&self, v: u32) -> u32 {
        // The starts at or below `v` are those below its bucket and some of its bucket's.
        let b = (v >> self.bits) as usize;
        let i = match (self.lower.get(b), self.lower.get(b + 1)) {
            (Some(&lo), Some(&hi)) => {
                let (lo, hi) = (lo as usize, hi as usize);
                lo + self.starts[lo..hi].partition_point(|&s| s <= v)
            }
            // Past the last bucket, past every start.
            _ => self.starts.len(),
        };
        match i {
            0 => v,
            i => v.wrapping_add(self.shifts[i - 1]),
        }
    }

    /// The number of pieces.
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    /// Whether it maps every value to itself for lack of pieces.
    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// The shift taking each `(old, new)` pair exactly, values between two pairs moving as
    /// the lower one did; pairs whose `old` is 0 or does not rise are passed over.
    fn fit(pairs: impl IntoIterator<Item = (u32, u32)>) -> Shifts {
        let (mut starts, mut shifts) = (Vec::new(), Vec::new());
        let mut last = 0;
        for (old, new) in pairs {
            if old <= last {
                continue;
            }
            last = old;
            let shift = new.wrapping_sub(old);
            if shifts.last() != Some(&shift) {
                starts.push(old);
                shifts.push(shift);
            }
        }
        Shifts::indexed(starts, shifts)
    }

    /// Appends `varint(n)` and `n` pieces as (start minus the previous start, zigzag of the
    /// shift minus the previous shift, as `i32`).
    fn write(&self, out: &mut Vec<u8>, put: fn(&mut Vec<u8>, u64)) {
        put(out, self.starts.len() as u64);
        let (mut start, mut shift) = (0u32, 0u32);
        for (&s, &d) in self.starts.iter().zip(&self.shifts) {
            put(out, (s - start) as u64);
            let delta = d.wrapping_sub(shift) as i32;
            put(out, ((delta << 1) ^ (delta >> 31)) as u32 as u64);
            (start, shift) = (s, d);
        }
    }

    /// Reads what `Shifts::write` wrote, from a varint source.
    fn read(next: &mut dyn FnMut() -> Result<u64>) -> Result<Shifts> {
        let n = next()?;
        if n > MAX_PIECES {
            return Err(bad(format!(
                "BTF map of {n} pieces exceeds the {MAX_PIECES}-piece limit"
            )));
        }
        let mut pieces = Vec::with_capacity(n as usize);
        let (mut start, mut shift) = (0u64, 0u32);
        for _ in 0..n {
            start = start
                .checked_add(next()?)
                .ok_or_else(|| bad("BTF map piece start out of range"))?;
            let z = u32::try_from(next()?).map_err(|_| bad("BTF map shift out of range"))?;
            let delta = ((z >> 1) as i32) ^ -((z & 1) as i32);
            shift = shift.wrapping_add(delta as u32);
            let s = u32::try_from(start)
                .map_err(|_| bad(format!("BTF map piece starts at {start}")))?;
            pieces.push((s, shift));
        }
        Shifts::from_pieces(pieces)
    }
}

/// How a kernel build renumbered the ids of its types and the offsets of its strings, as
/// modules' BTF refers to them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BtfMap {
    /// Type ids.
    pub types: Shifts,
    /// String offsets.
    pub names: Shifts,
}

impl BtfMap {
    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.types.is_empty() && self.names.is_empty()
    }

    /// Appends the map: the type shift, then the name shift (see `Shifts::write`).
    pub fn write(&self, out: &mut Vec<u8>, put: fn(&mut Vec<u8>, u64)) {
        self.types.write(out, put);
        self.names.write(out, put);
    }

    /// Reads a map [`BtfMap::write`] wrote, from a varint source, refusing more than
    /// [`MAX_PIECES`] pieces per shift and starts that do not rise.
    pub fn read(next: &mut dyn FnMut() -> Result<u64>) -> Result<BtfMap> {
        Ok(BtfMap {
            types: Shifts::read(next)?,
            names: Shifts::read(next)?,
        })
    }
}

/// Where the `.BTF` section of a little-endian ELF64 file is (offset, length), reading the
/// file through `read(offset, len)`, which returns fewer bytes (or none) past its end.
/// `None` when the file is not such an ELF file or has no such section.
pub fn find_section(
    size: u64,
    read: &mut dyn FnMut(u64, u64) -> Result<Vec<u8>>,
) -> Result<Option<(u64, u64)>> {
    let head = read(0, 64)?;
    if head.len() < 64 || !head.starts_with(b"\x7fELF") || head[4] != 2 || head[5] != 1 {
        return Ok(None);
    }
    let shoff = u64_at(&head, 0x28);
    let (entsize, shnum, shstrndx) = (
        u16_at(&head, 0x3a) as u64,
        u16_at(&head, 0x3c) as u64,
        u16_at(&head, 0x3e) as u64,
    );
    if entsize != 64 || shnum == 0 || shstrndx >= shnum || shoff.saturating_add(shnum * 64) > size {
        return Ok(None);
    }
    let table = read(shoff, shnum * 64)?;
    if table.len() as u64 != shnum * 64 {
        return Ok(None);
    }
    let header = |i: u64| &table[(i * 64) as usize..(i * 64 + 64) as usize];
    let range = |h: &[u8]| {
        let (off, len) = (u64_at(h, 0x18), u64_at(h, 0x20));
        (off.checked_add(len)? <= size).then_some((off, len))
    };
    let Some((str_off, str_len)) = range(header(shstrndx)) else {
        return Ok(None);
    };
    // Section names are short: read no more of the name table than needed.
    let names = read(str_off, str_len.min(1 << 20))?;
    for i in 0..shnum {
        let h = header(i);
        let name = u32_at(h, 0) as usize;
        if names.get(name..name + 5) == Some(b".BTF\0") {
            return Ok(range(h));
        }
    }
    Ok(None)
}

/// Rewrites the type ids and string offsets of the `.BTF` section of `file` (an ELF64 file,
/// as [`find_section`] takes it) through `map`; any other bytes are left as they are.
pub fn rewrite(file: &mut [u8], map: &BtfMap) {
    let size = file.len() as u64;
    let mut read = |off: u64, len: u64| -> Result<Vec<u8>> {
        let start = (off.min(size)) as usize;
        let end = (off.saturating_add(len).min(size)) as usize;
        Ok(file[start..end].to_vec())
    };
    let Ok(Some((off, len))) = find_section(size, &mut read) else {
        return;
    };
    let section = &mut file[off as usize..(off + len) as usize];
    let Some(btf) = Parsed::new(section) else {
        return;
    };
    let (types, names) = (btf.types, btf.names);
    for (positions, shift) in [(types, &map.types), (names, &map.names)] {
        for p in positions {
            let p = p as usize;
            let v = shift.map(u32_at(section, p));
            section[p..p + 4].copy_from_slice(&v.to_le_bytes());
        }
    }
}

/// A type record: its kind, vlen and name, and which of the section's type-id and
/// name-offset fields are its own.
struct Record {
    kind: u8,
    vlen: u16,
    name: u32,
    types: std::ops::Range<usize>,
    names: std::ops::Range<usize>,
}

/// A parsed `.BTF` section.
struct Parsed<'a> {
    records: Vec<Record>,
    /// Where the type-id fields are in the section, record by record.
    types: Vec<u32>,
    /// Where the name-offset fields are, record by record.
    names: Vec<u32>,
    /// The section's own strings.
    strings: &'a [u8],
    section: &'a [u8],
}

impl<'a> Parsed<'a> {
    /// Parses a `.BTF` section; `None` unless every record is of a known kind and the
    /// records fill the type area exactly.
    fn new(section: &'a [u8]) -> Option<Parsed<'a>> {
        if section.len() < 24
            || section.len() > u32::MAX as usize
            || u16_at(section, 0) != BTF_MAGIC
            || section[2] != 1
        {
            return None;
        }
        let at = |o: usize| u32_at(section, o) as usize;
        let (hdr_len, type_off, type_len, str_off, str_len) =
            (at(4), at(8), at(12), at(16), at(20));
        let types_start = hdr_len.checked_add(type_off)?;
        let types_end = types_start.checked_add(type_len)?;
        let strings_start = hdr_len.checked_add(str_off)?;
        let strings = section.get(strings_start..strings_start.checked_add(str_len)?)?;
        if hdr_len < 24 || types_end > section.len() {
            return None;
        }
        let (mut records, mut types, mut names) = (Vec::new(), Vec::new(), Vec::new());
        let mut p = types_start;
        while p < types_end {
            if p + 12 > types_end {
                return None;
            }
            let (name, info) = (u32_at(section, p), u32_at(section, p + 4));
            let kind = ((info >> 24) & 0x1f) as u8;
            let vlen = (info & 0xffff) as u16;
            let (t0, n0) = (types.len(), names.len());
            names.push(p as u32);
            // PTR TYPEDEF VOLATILE CONST RESTRICT FUNC FUNC_PROTO VAR DECL_TAG TYPE_TAG
            // refer to a type in their third field; the others keep a size there.
            if matches!(kind, 2 | 8..=14 | 17 | 18) {
                types.push(p as u32 + 8);
            }
            let q = p + 12;
            let n = vlen as usize;
            // (bytes after the common part, per-member size, member's name/type positions)
            let (fixed, each, name_at, type_at): (usize, usize, Option<u32>, Option<u32>) =
                match kind {
                    1 | 14 | 17 => (4, 0, None, None), // INT, VAR, DECL_TAG
                    2 | 7..=12 | 16 | 18 => (0, 0, None, None),
                    3 => {
                        // ARRAY: element type, index type, count.
                        types.extend([q as u32, q as u32 + 4]);
                        (12, 0, None, None)
                    }
                    4 | 5 => (0, 12, Some(0), Some(4)), // STRUCT, UNION members
                    6 => (0, 8, Some(0), None),         // ENUM values
                    13 => (0, 8, Some(0), Some(4)),     // FUNC_PROTO parameters
                    15 => (0, 12, None, Some(0)),       // DATASEC variables
                    19 => (0, 12, Some(0), None),       // ENUM64 values
                    _ => return None,
                };
            let end = q.checked_add(fixed)?.checked_add(n.checked_mul(each)?)?;
            if end > types_end {
                return None;
            }
            if each > 0 {
                for i in 0..n {
                    let m = (q + fixed + i * each) as u32;
                    names.extend(name_at.map(|o| m + o));
                    types.extend(type_at.map(|o| m + o));
                }
            }
            records.push(Record {
                kind,
                vlen,
                name,
                types: t0..types.len(),
                names: n0..names.len(),
            });
            p = end;
        }
        Some(Parsed {
            records,
            types,
            names,
            strings,
            section,
        })
    }

    fn value(&self, p: u32) -> u32 {
        u32_at(self.section, p as usize)
    }

    /// Where the module's types would start past the kernel's, as far as the module shows:
    /// its largest type reference less its own type count (exact when it refers to its own
    /// last type, which most modules do).
    fn type_base(&self) -> u32 {
        let max = self.types.iter().map(|&p| self.value(p)).max().unwrap_or(0);
        max.saturating_sub(self.records.len() as u32)
    }

    /// Where the module's strings start past the kernel's, as far as the module shows: its
    /// largest name reference less where its own last string starts (exact when that
    /// reference is to its own last string, as in every module of the bench kernels).
    fn name_base(&self) -> Option<u32> {
        let body = self.strings.strip_suffix(b"\0")?;
        let last = body.iter().rposition(|&b| b == 0)? + 1;
        let max = self.names.iter().map(|&p| self.value(p)).max()?;
        max.checked_sub(last as u32)
    }

    /// The record's alignment key: kind, vlen and name, the name by its bytes when the
    /// module has it (`base` is where its strings start), empty for none, `None` for a
    /// kernel string (whose offset differs between builds).
    fn key(&self, r: &Record, base: u32) -> (u8, u16, Option<&'a [u8]>) {
        let name = match r.name {
            0 => Some(&[][..]),
            n if n >= base => {
                let s = self.strings.get((n - base) as usize..).unwrap_or_default();
                Some(&s[..s.iter().position(|&b| b == 0).unwrap_or(s.len())])
            }
            _ => None,
        };
        (r.kind, r.vlen, name)
    }
}

/// Where a pair of modules' split BTF starts, on either side, as their own fields show
/// it: the pair's part in [`Kernel::settle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Survey {
    old: (u32, Option<u32>),
    new: (u32, Option<u32>),
}

impl Survey {
    /// Surveys the `.BTF` sections of an old module and its new build; `None` unless both
    /// parse.
    pub fn new(old: &[u8], new: &[u8]) -> Option<Survey> {
        let bases = |s: &[u8]| Parsed::new(s).map(|p| (p.type_base(), p.name_base()));
        Some(Survey {
            old: bases(old)?,
            new: bases(new)?,
        })
    }

    fn names(&self) -> Option<(u32, u32)> {
        self.old.1.zip(self.new.1)
    }
}

/// Where the kernel's types and strings end in its old and new build, as modules see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kernel {
    old_types: u32,
    old_names: u32,
    new_types: u32,
    new_names: u32,
}

impl Kernel {
    /// Settles the kernel from the pairs' surveys: the most common pair of string bases
    /// (ties to the smaller, so that the choice is reproducible) and, among the pairs that
    /// have it, the largest type bases. `None` without any pair that shows its bases.
    pub fn settle<'a>(surveys: impl Iterator<Item = &'a Survey> + Clone) -> Option<Kernel> {
        let mut counts: HashMap<(u32, u32), usize> = HashMap::new();
        for n in surveys.clone().filter_map(Survey::names) {
            *counts.entry(n).or_default() += 1;
        }
        let (old_names, new_names) = counts
            .into_iter()
            .max_by_key(|&(k, c)| (c, std::cmp::Reverse(k)))?
            .0;
        let mut k = Kernel {
            old_types: 0,
            old_names,
            new_types: 0,
            new_names,
        };
        for s in surveys {
            if !k.owns(s) {
                continue;
            }
            k.old_types = k.old_types.max(s.old.0);
            k.new_types = k.new_types.max(s.new.0);
        }
        Some(k)
    }

    /// Whether a pair's modules were built for this kernel (its old and new builds).
    pub fn owns(&self, s: &Survey) -> bool {
        s.names() == Some((self.old_names, self.new_names))
    }
}

/// Counts of how the kernel's type ids and string offsets in old modules' fields read in
/// the aligned fields of their new builds; [`Votes::finish`] makes the [`BtfMap`].
#[derive(Debug, Default)]
pub struct Votes {
    types: HashMap<(u32, u32), u64>,
    names: HashMap<(u32, u32), u64>,
    /// How far aligned references to the modules' own types and strings moved.
    own_types: HashMap<u32, u64>,
    own_names: HashMap<u32, u64>,
}

impl Votes {
    /// Aligns the type records of an old module's `.BTF` section and its new build's (of
    /// `kernel`), by kind, vlen and own name, and counts each aligned pair of fields
    /// where both hold a kernel type id or string offset.
    pub fn align(&mut self, kernel: &Kernel, old: &[u8], new: &[u8]) {
        let (Some(a), Some(b)) = (Parsed::new(old), Parsed::new(new)) else {
            return;
        };
        let k = *kernel;
        let ka: Vec<_> = a.records.iter().map(|r| a.key(r, k.old_names)).collect();
        let kb: Vec<_> = b.records.iter().map(|r| b.key(r, k.new_names)).collect();
        let mut same = |i: usize, j: usize, len: usize| {
            for (x, y) in a.records[i..i + len].iter().zip(&b.records[j..j + len]) {
                let types = a.types[x.types.clone()]
                    .iter()
                    .zip(&b.types[y.types.clone()]);
                for (&p, &q) in types {
                    let (u, v) = (a.value(p), b.value(q));
                    if (1..=k.old_types).contains(&u) && (1..=k.new_types).contains(&v) {
                        *self.types.entry((u, v)).or_default() += 1;
                    } else if u > k.old_types && v > k.new_types {
                        *self.own_types.entry(v.wrapping_sub(u)).or_default() += 1;
                    }
                }
                let names = a.names[x.names.clone()]
                    .iter()
                    .zip(&b.names[y.names.clone()]);
                for (&p, &q) in names {
                    let (u, v) = (a.value(p), b.value(q));
                    if (1..k.old_names).contains(&u) && (1..k.new_names).contains(&v) {
                        *self.names.entry((u, v)).or_default() += 1;
                    } else if u >= k.old_names && v >= k.new_names {
                        *self.own_names.entry(v.wrapping_sub(u)).or_default() += 1;
                    }
                }
            }
        };
        if ka == kb {
            same(0, 0, ka.len());
            return;
        }
        for op in similar::capture_diff_slices(similar::Algorithm::Myers, &ka, &kb) {
            if let similar::DiffOp::Equal {
                old_index,
                new_index,
                len,
            } = op
            {
                same(old_index, new_index, len);
            }
        }
    }

    /// Adds another's counts.
    pub fn merge(&mut self, other: Votes) {
        fn add<K: std::hash::Hash + Eq>(mine: &mut HashMap<K, u64>, theirs: HashMap<K, u64>) {
            for (k, c) in theirs {
                *mine.entry(k).or_default() += c;
            }
        }
        add(&mut self.types, other.types);
        add(&mut self.names, other.names);
        add(&mut self.own_types, other.own_types);
        add(&mut self.own_names, other.own_names);
    }

    /// The map: each kernel id or offset goes where most of its aligned fields went (ties
    /// to the smaller), those between moving as the one below did, and those past the
    /// kernel's end (the modules' own) as most aligned own references moved (the kernel's
    /// end moved by as much, unless no module showed that).
    pub fn finish(self, kernel: &Kernel) -> BtfMap {
        let most = |votes: HashMap<u32, u64>| {
            let best = votes
                .into_iter()
                .max_by_key(|&(s, c)| (c, std::cmp::Reverse(s)));
            best.map(|(s, _)| s)
        };
        let k = kernel;
        let own_types = most(self.own_types).unwrap_or(k.new_types.wrapping_sub(k.old_types));
        let own_names = most(self.own_names).unwrap_or(k.new_names.wrapping_sub(k.old_names));
        let winners = |votes: HashMap<(u32, u32), u64>, end: (u32, u32)| {
            let mut best: HashMap<u32, (u64, u32)> = HashMap::new();
            for ((u, v), c) in votes {
                let e = best.entry(u).or_insert((c, v));
                if (c, std::cmp::Reverse(v)) > (e.0, std::cmp::Reverse(e.1)) {
                    *e = (c, v);
                }
            }
            let mut pairs: Vec<(u32, u32)> = best.into_iter().map(|(u, (_, v))| (u, v)).collect();
            pairs.sort_unstable();
            pairs.push(end);
            Shifts::fit(pairs)
        };
        let (types_end, names_end) = (k.old_types.saturating_add(1), k.old_names.max(1));
        BtfMap {
            types: winners(self.types, (types_end, types_end.wrapping_add(own_types))),
            names: winners(self.names, (names_end, names_end.wrapping_add(own_names))),
        }
    }
}

#[cfg(test)]
pub(super) mod sample;
#[cfg(test)]
pub(super) mod tests;

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(x)
}
