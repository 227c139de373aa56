//! Planning a layer: cutting the new layer into regions ([`Region`]), each with its source
//! and how it is made (copied, patched whole or in pieces, shipped as gzip text or as an
//! expanded zip archive, or
//! literally); then numbering the old layers the regions use and settling which kernel
//! modules are patched through the layer's BTF map.

use super::align::{Alignment, Span};
use super::bsdiff;
use super::btf;
use super::calls::Calls;
use super::encode::patch_costs;
use super::gz;
use super::matching::{Catalog, Pick};
use super::refs;
use super::schedule::{each_on_every_core, on_every_core};
use super::tables::{self, Table, Tables};
use super::zip;
use super::{EncodeStats, LayerData, OldLayer, CHUNK, WINDOW};
use crate::error::Result;

/// A piece of the new layer and how to make it.
#[derive(Debug, Clone)]
pub(super) enum Region {
    Meta {
        off: u64,
        len: u64,
        src: Option<(usize, u64, u64)>,
    },
    Copy {
        src: usize,
        off: u64,
        len: u64,
    },
    Diff {
        off: u64,
        len: u64,
        src: usize,
        src_off: u64,
        src_len: u64,
        /// The file is a relocatable ELF object (its differences go by words).
        relocatable: bool,
        /// The source is a whole kernel module whose BTF is rewritten through the
        /// layer's map before diffing (see [`btf`]).
        btf: bool,
        /// A longer stretch of the same old layer around the source (offset, length),
        /// which the patch is searched against too when the source leaves much of the
        /// file unmatched (see `widen_sources`).
        span: Option<(u64, u64)>,
        /// The machine code in the source (ranges as offsets into it), whose references
        /// the patch may take projected (see [`refs`]).
        code: Option<refs::Code>,
        /// The source shares next to nothing with the file (see
        /// [`Catalog::by_content`]): the patch is expected to ship nearly all of it as new
        /// bytes (see `estimate.rs`).
        unlike: bool,
        /// The machine code in the file's bytes here, whose calls the patch's new bytes
        /// take absolute (see [`calls`](super::calls)).
        calls: Option<Calls>,
        /// The sorted tables in the file's bytes here, whose fields the patch's new bytes
        /// take as differences (see [`tables`]).
        tables: Option<Tables>,
        /// The tables in the source (offsets into it), for a patch of the file's bytes and
        /// the source both with their tables' fields as differences, if that is smaller.
        src_tables: Option<Tables>,
    },
    Lit {
        off: u64,
        len: u64,
        /// The machine code in the bytes, whose calls they take absolute.
        calls: Option<Calls>,
        /// The sorted tables in the bytes, whose fields they take as differences.
        tables: Option<Tables>,
    },
    /// A gzip member: its text is shipped (patched against `src`, a gzip member of an old
    /// layer, when there is one) and deflated again, if zlib re-makes it exactly.
    Gzip {
        off: u64,
        len: u64,
        /// The text length the member claims.
        text: u64,
        src: Option<(usize, u64, u64)>,
    },
    /// A zip archive: shipped expanded, its members deflated again where zlib re-makes
    /// them, patched against `src` (an old archive) expanded (see [`zip`]).
    Zip {
        off: u64,
        len: u64,
        /// The expanded length its central directory claims (for memory estimates).
        text: u64,
        src: Option<(usize, u64, u64)>,
        /// The same for the source.
        src_text: u64,
    },
}

impl Region {
    /// Memory its difference search takes (see [`CHUNK_MEMORY`](super::CHUNK_MEMORY)); 0 for what is not
    /// searched, or only a header's worth.
    pub(super) fn search_memory(&self) -> u64 {
        let search = bsdiff::search_memory;
        match *self {
            Region::Diff {
                len, src_len, span, ..
            } => search(span.map_or(src_len, |(_, n)| n.max(src_len)), len),
            // The old member's text is about as long as the new one's (or it is not
            // patched against it).
            Region::Gzip {
                text, src: Some(_), ..
            } => search(text, text),
            Region::Zip {
                text,
                src: Some(_),
                src_text,
                ..
            } => search(src_text, text),
            _ => 0,
        }
    }

    /// The most of old layers its decoding reads into memory at once: its source (a
    /// patch's part of its stretch, where that is longer; a gzip member or an archive
    /// beside its text).
    pub(super) fn decode_source(&self) -> u64 {
        match *self {
            Region::Diff { src_len, span, .. } => span.map_or(src_len, |(_, n)| n.max(src_len)),
            Region::Meta {
                src: Some((_, _, slen)),
                ..
            } => slen,
            Region::Gzip {
                text,
                src: Some((_, _, slen)),
                ..
            } => slen + text,
            Region::Zip {
                src: Some((_, _, slen)),
                src_text,
                ..
            } => slen + src_text,
            _ => 0,
        }
    }

    pub(super) fn len(&self) -> u64 {
        match self {
            Region::Meta { len, .. }
            | Region::Copy { len, .. }
            | Region::Diff { len, .. }
            | Region::Lit { len, .. }
            | Region::Gzip { len, .. }
            | Region::Zip { len, .. } => *len,
        }
    }

    /// The bytes it passes through memory as (a gzip member's or an archive's text, where
    /// that is longer than its bytes).
    pub(super) fn text_len(&self) -> u64 {
        match *self {
            Region::Gzip { len, text, .. } | Region::Zip { len, text, .. } => len.max(text),
            _ => self.len(),
        }
    }
}

/// Whether bytes start like one compressed stream (gzip, xz, zstd, bzip2, lzma).
///
/// Zip archives (jars, wheels) are not: each member is compressed on its own, and the
/// members a new version did not change keep their compressed bytes, which a patch copies.
/// On the bench's `jvm` pair (Debian's Java libraries across a release) shipping every
/// changed jar whole made a package 1.47 times `zstd --patch-from`'s.
fn looks_compressed(head: &[u8]) -> bool {
    head.starts_with(&[0x1f, 0x8b])
        || head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0])
        || head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || head.starts_with(b"BZh")
        || head.starts_with(&[0x5d, 0, 0])
}

/// The text length a gzip member at `off` claims (its ISIZE), if it starts like one and
/// claims at most [`gz::MAX_RAW`] bytes.
fn gzip_text_len(d: &LayerData, off: u64, size: u64) -> Result<Option<u64>> {
    if size < 18 || d.read(off, 3)? != [0x1f, 0x8b, 8] {
        return Ok(None);
    }
    let t = d.read(off + size - 4, 4)?;
    let isize = u32::from_le_bytes([t[0], t[1], t[2], t[3]]) as u64;
    Ok((isize <= gz::MAX_RAW).then_some(isize))
}

/// Cuts the new layer into regions, each with its source.
pub(super) fn plan(
    cat: &Catalog<'_>,
    new: &OldLayer,
    stats: &mut EncodeStats,
) -> Result<Vec<Region>> {
    let mut regions = Vec::new();
    let mut cursor = 0u64;
    let push_meta =
        |regions: &mut Vec<Region>, off: u64, end: u64, src: Option<(usize, u64, u64)>| {
            let mut o = off;
            while o < end {
                let len = (end - o).min(CHUNK);
                regions.push(Region::Meta {
                    off: o,
                    len,
                    src: if o == off { src } else { None },
                });
                o += len;
            }
        };
    let picks = pick_sources(cat, new)?;
    for (f, (pick, unlike)) in new.index.files.iter().zip(picks) {
        let src_entry = match pick {
            Pick::Same(l, i) | Pick::Similar(l, i) => Some((l, cat.file((l, i)))),
            Pick::None => None,
        };
        let meta_src = src_entry.map(|(l, s)| (l, s.meta_offset, s.meta_len()));
        push_meta(&mut regions, cursor, f.data_offset, meta_src);
        let (off, size) = (f.data_offset, f.size);
        match (pick, src_entry) {
            (Pick::Same(..), Some((l, s))) => {
                stats.files_copied += 1;
                stats.bytes_copied += size;
                let mut done = 0;
                while done < size {
                    let len = (size - done).min(CHUNK);
                    regions.push(Region::Copy {
                        src: l,
                        off: s.data_offset + done,
                        len,
                    });
                    done += len;
                }
            }
            _ if size <= zip::MAX_EXPANDED && is_zip(&new.data, off, size)? => {
                // Expanded, and its members re-made, if zlib re-makes them (decided when
                // the chunk is encoded).
                stats.files_zip += 1;
                let (mut src, mut src_text) = (None, 0);
                if let Some((l, s)) = src_entry {
                    let d = &cat.old[l].data;
                    if s.size <= zip::MAX_EXPANDED && is_zip(d, s.data_offset, s.size)? {
                        src = Some((l, s.data_offset, s.size));
                        src_text = zip::claimed_expanded_len(&d.read(s.data_offset, s.size)?);
                    }
                }
                regions.push(Region::Zip {
                    off,
                    len: size,
                    text: zip::claimed_expanded_len(&new.data.read(off, size)?),
                    src,
                    src_text,
                });
            }
            (Pick::Similar(..), Some((l, s)))
                if !compressed_pair(&new.data, off, &cat.old[l].data, s.data_offset)? =>
            {
                let relocatable = is_relocatable_elf(&new.data.read(off, size.min(18))?);
                let (code, new_code) = if relocatable {
                    (None, None)
                } else {
                    let d = &cat.old[l].data;
                    (
                        refs::elf_code(s.size, |o, n| d.read(s.data_offset + o, n).ok()),
                        new_code(&new.data, off, size),
                    )
                };
                let new_tables = file_tables(&new.data, off, size, new_code.as_ref());
                let whole = s.size <= WINDOW && size <= WINDOW;
                let piece = if whole { WINDOW } else { WINDOW / 2 };
                let alignment = if whole {
                    Alignment::default()
                } else {
                    let old_file = Span {
                        data: &cat.old[l].data,
                        offset: s.data_offset,
                        len: s.size,
                    };
                    let new_file = Span {
                        data: &new.data,
                        offset: off,
                        len: size,
                    };
                    let started = std::time::Instant::now();
                    let a = Alignment::find(old_file, new_file)?;
                    tracing::debug!(
                        path = %String::from_utf8_lossy(&f.path),
                        size,
                        source_size = s.size,
                        shared_anchors = a.len(),
                        ms = started.elapsed().as_millis() as u64,
                        "aligned a big file with its source"
                    );
                    if !samples_pay(&a, old_file, new_file, &f.path)? {
                        tracing::debug!(
                            path = %String::from_utf8_lossy(&f.path),
                            size,
                            "shipping a big file whole: patches of its samples cost what \
                             their bytes do"
                        );
                        stats.files_literal += 1;
                        push_literal(&mut regions, off, size, new_code.as_ref(), &new_tables);
                        cursor = f.data_end();
                        continue;
                    }
                    a
                };
                stats.files_patched += 1;
                // The old file's tables, for patches against it with both sides' tables
                // rewritten; read only for a file that is patched and has tables itself.
                let old_tables = if new_tables.is_empty() {
                    Vec::new()
                } else {
                    file_tables(&cat.old[l].data, s.data_offset, s.size, code.as_ref())
                };
                let mut done = 0;
                while done < size {
                    let len = alignment.piece_len(done, (size - done).min(piece), WINDOW / 2);
                    let (src_off, src_len) = if whole {
                        (0, s.size)
                    } else {
                        piece_source(&alignment, done, len, size, s.size)
                    };
                    regions.push(Region::Diff {
                        off: off + done,
                        len,
                        src: l,
                        src_off: s.data_offset + src_off,
                        src_len,
                        relocatable,
                        // A candidate if the source is the whole old file; `encode`
                        // decides once it has learnt the layer's map.
                        btf: relocatable && src_len == s.size && len == size,
                        span: None,
                        code: code.as_ref().map(|c| refs::clip(c, src_off, src_len)),
                        unlike,
                        calls: new_code
                            .as_ref()
                            .and_then(|c| Calls::of_piece(c, done, len)),
                        tables: Tables::of_piece(&new_tables, done, len),
                        src_tables: Tables::of_piece(&old_tables, src_off, src_len),
                    });
                    done += len;
                }
            }
            _ if size <= CHUNK && gzip_text_len(&new.data, off, size)?.is_some() => {
                // Shipped as text if zlib re-makes it (decided when the chunk is encoded).
                stats.files_gzip += 1;
                let src = match src_entry {
                    Some((l, s))
                        if s.size <= CHUNK
                            && gzip_text_len(&cat.old[l].data, s.data_offset, s.size)?
                                .is_some() =>
                    {
                        Some((l, s.data_offset, s.size))
                    }
                    _ => None,
                };
                let text = gzip_text_len(&new.data, off, size)?.unwrap_or_default();
                regions.push(Region::Gzip {
                    off,
                    len: size,
                    text,
                    src,
                });
            }
            _ => {
                stats.files_literal += 1;
                let code = new_code(&new.data, off, size);
                let tables = file_tables(&new.data, off, size, code.as_ref());
                push_literal(&mut regions, off, size, code.as_ref(), &tables);
            }
        }
        cursor = f.data_end();
    }
    push_meta(&mut regions, cursor, new.index.len, None);
    let mut regions = coalesce(regions, cat.old, &new.data)?;
    widen_sources(&mut regions, cat.old, &new.data)?;
    Ok(regions)
}

/// Each new file's source (see [`Catalog::pick`] and [`Catalog::by_content`]) and whether
/// that source shares next to nothing with it, in the order of the files. Files are judged
/// on every core: judging samples a file's bytes and looks up each sample, and a layer of
/// renamed files (the kernel pair's module directory, 4 900 modules) otherwise kept one
/// core busy for seconds before any chunk was encoded. Each file's verdict depends only on
/// its own bytes, so the picks do not depend on the number of cores.
fn pick_sources(cat: &Catalog<'_>, new: &OldLayer) -> Result<Vec<(Pick, bool)>> {
    let files = &new.index.files;
    let picks = each_on_every_core(crate::threads::threads(), files.len(), |i| {
        let f = &files[i];
        let pick = cat.pick(f);
        if matches!(pick, Pick::Same(..)) || is_packed(&new.data, f.data_offset, f.size)? {
            return Ok((pick, false));
        }
        cat.by_content(pick, f, &new.data)
    })?;
    picks.into_iter().collect()
}

/// Text files of at least this size patched whole get a stretch of old layer around their
/// source (see [`widen_sources`]).
const WIDE_FILE: u64 = 1 << 20;
/// The stretch is at most this long (as a big file's piece and its source window).
const WIDE_MAX: u64 = WINDOW + WINDOW / 2;

/// Gives big text files patched whole a longer stretch of the old layer around their
/// source, as long as the file again on either side (up to [`WIDE_MAX`]), to search too
/// when their source leaves much of them unmatched (see `encode`): a bundle's code moves
/// between the files a package builds, which sit next to one another in the layer's tar.
/// On the node pair, TypeScript 5.3 -> 5.5 moved code between `typescript.js`, `tsc.js`
/// and `tsserver.js` (which became a stub), and the patch of `typescript.js` against its
/// old self alone leaves 1.2 MB of its 8.9 MB unmatched: the package went from 2.23 to
/// 1.87 MB. Smaller files gain nothing from it there (they were tried: 1.88 MB, and 30 %
/// more create time for the sorting of their stretches).
fn widen_sources(regions: &mut [Region], old: &[OldLayer], new: &LayerData) -> Result<()> {
    for r in regions.iter_mut() {
        let Region::Diff {
            off,
            len,
            src,
            src_off,
            src_len,
            relocatable: false,
            btf: false,
            span,
            ..
        } = r
        else {
            continue;
        };
        if *len < WIDE_FILE || *len > WINDOW || *src_len > WINDOW {
            continue;
        }
        if !bsdiff::looks_like_text(&new.read(*off, bsdiff::TEXT_PROBE as u64)?) {
            continue;
        }
        let end = old[*src].data.len();
        let mut start = src_off.saturating_sub(*len);
        let mut stop = (*src_off + *src_len).saturating_add(*len).min(end);
        if stop - start > WIDE_MAX {
            // Centred on the source, kept inside the layer.
            let mid = *src_off + *src_len / 2;
            start = mid.saturating_sub(WIDE_MAX / 2);
            stop = (start + WIDE_MAX).min(end);
            start = stop.saturating_sub(WIDE_MAX);
        }
        *span = Some((start, stop - start));
    }
    Ok(())
}

/// Turns headers that are byte for byte their source's into copies, and joins copies of
/// consecutive old bytes (up to [`CHUNK`]).
///
/// A file copied unchanged whose tar headers (and the padding before them) did not change
/// either, next to others alike, is one run of the old layer's bytes: one COPY instead of
/// a patched header and a copy per file. A `node_modules` tree where a few packages
/// changed is almost all such runs (60 000 files, 57 500 unchanged: their per-file
/// operations were half of the node pair's package, HDiffPatch sees the runs as a few
/// thousand matches), and apply copies them in large reads.
fn coalesce(regions: Vec<Region>, old: &[OldLayer], new: &LayerData) -> Result<Vec<Region>> {
    let mut out: Vec<Region> = Vec::with_capacity(regions.len());
    for r in regions {
        let r = match r {
            Region::Meta {
                off,
                len,
                src: Some((l, soff, slen)),
            } if len == slen && len <= MAX_SAME_HEADER => {
                if new.read(off, len)? == old[l].data.read(soff, len)? {
                    Region::Copy {
                        src: l,
                        off: soff,
                        len,
                    }
                } else {
                    r
                }
            }
            r => r,
        };
        if let (
            Some(Region::Copy { src, off, len }),
            Region::Copy {
                src: s,
                off: o,
                len: n,
            },
        ) = (out.last_mut(), &r)
        {
            if *src == *s && *off + *len == *o && *len + *n <= CHUNK {
                *len += *n;
                continue;
            }
        }
        out.push(r);
    }
    Ok(out)
}

/// Headers compared with their source's for [`coalesce`] are at most this long (a PAX
/// header with long names; longer ones are patched).
const MAX_SAME_HEADER: u64 = 64 << 10;

/// Adds the regions that ship the file of `size` bytes from `off` as it is, its calls
/// absolute where it has `code` (see [`calls`](super::calls)) and the fields of its
/// `tables` as differences (see [`tables`]).
fn push_literal(
    regions: &mut Vec<Region>,
    off: u64,
    size: u64,
    code: Option<&refs::Code>,
    tables: &[Table],
) {
    let mut done = 0;
    while done < size {
        let len = (size - done).min(CHUNK);
        regions.push(Region::Lit {
            off: off + done,
            len,
            calls: code.and_then(|c| Calls::of_piece(c, done, len)),
            tables: Tables::of_piece(tables, done, len),
        });
        done += len;
    }
}

/// The machine code of the new file of `size` bytes at `off`, if it is an x86-64 or
/// AArch64 program or library (see [`refs::elf_code`]).
fn new_code(new: &LayerData, off: u64, size: u64) -> Option<refs::Code> {
    refs::elf_code(size, |o, n| new.read(off + o, n).ok())
}

/// The tables of the file of `size` bytes at `off` of `data`, whose code is `code`, if it
/// is a 64-bit little-endian program or library (see [`tables::elf_tables`]).
fn file_tables(data: &LayerData, off: u64, size: u64, code: Option<&refs::Code>) -> Vec<Table> {
    let code = code.map_or(&[][..], |c| &c.ranges[..]);
    tables::elf_tables(size, code, |o, n| data.read(off + o, n).ok())
}

/// Bytes of a big file patched as a sample by [`samples_pay`], and how far its source
/// reaches on either side of where the sample's content sits in the old file.
const SAMPLE: u64 = 1 << 20;
const SAMPLE_SLACK: u64 = 2 << 20;

/// Whether a big file is worth patching piece by piece: a sample of 1 MiB at a third and
/// at two thirds of it is patched against the old file around where its content sits
/// there, and the two patches together must leave under nine tenths of the samples' bytes
/// unmatched and cost at most nine tenths of what the samples cost alone (the bound
/// `encode::patch_pays` puts on each piece). Else the file is shipped whole without
/// searching its pieces, which would nearly all be shipped whole anyway: on docker 26's
/// engine programs (Go, 237 MB, against docker 20.10's) the searches took most of create's
/// time, for pieces none of which was kept.
///
/// Both samples count: containerd 1.7's (54 MB) patched at 1.01 and 0.82 of their bytes,
/// together at 0.92. When one paying sample was enough, its 8 MiB pieces were searched
/// (35 s of the go pair's create, 163 -> 129 s without them), one 3.6 MB piece of seven was
/// kept, and the package came out 114 KB larger than with the file whole: its bytes in the
/// new bytes' lane are what the other programs there, which link the same packages, match.
/// A file whose old version holds one half and not the other still has its samples pay
/// together. `path` names the file in the `-vv` log of its samples.
fn samples_pay(a: &Alignment, old: Span<'_>, new: Span<'_>, path: &[u8]) -> Result<bool> {
    let (mut bytes, mut unmatched, mut alone, mut patched) = (0u64, 0u64, 0u64, 0u64);
    for k in [1, 2] {
        let at = new.len * k / 3;
        let len = SAMPLE.min(new.len - at);
        let (start, span) = source_around(a, at, len, new.len, old.len, SAMPLE_SLACK);
        let source = old.data.read(old.offset + start, span)?;
        let sample = new.data.read(new.offset + at, len)?;
        let s = bsdiff::diff(&source, &sample)?;
        let Some((sample_alone, sample_patched)) = patch_costs(&sample, &s) else {
            // Nothing to judge by: search the file.
            return Ok(true);
        };
        bytes += sample.len() as u64;
        unmatched += s.extra.len() as u64;
        alone += sample_alone;
        patched += sample_patched;
    }
    let pays = unmatched * 10 <= bytes * 9 && patched * 10 <= alone * 9;
    tracing::debug!(
        path = %String::from_utf8_lossy(path),
        bytes,
        unmatched,
        alone,
        patched,
        pays,
        "a big file's samples patched"
    );
    Ok(pays)
}

/// The source window of the piece `done..done + len` of a file of `size` bytes diffed
/// against an old file of `old_size` bytes: where the piece's content sits in the old file
/// (by the shift most of its shared anchors agree on, else by its proportional position),
/// from half a [`WINDOW`] before it to half a window after, kept inside the old file.
fn piece_source(a: &Alignment, done: u64, len: u64, size: u64, old_size: u64) -> (u64, u64) {
    source_around(a, done, len, size, old_size, WINDOW / 2)
}

/// The source window of `done..done + len` of a file of `size` bytes: where its content
/// sits in the old file of `old_size` bytes (as [`piece_source`] finds it), from `slack`
/// before it to `slack` after, kept inside the old file.
fn source_around(
    a: &Alignment,
    done: u64,
    len: u64,
    size: u64,
    old_size: u64,
    slack: u64,
) -> (u64, u64) {
    let span = (len + 2 * slack).min(old_size);
    let at = match a.shift(done, len, WINDOW / 2, 2) {
        Some(shift) => (done as i64).saturating_add(shift).max(0) as u64,
        None => (done as u128 * old_size as u128 / size.max(1) as u128) as u64,
    };
    let start = at.saturating_sub(slack).min(old_size - span);
    (start, span)
}

/// Whether bytes start like a relocatable ELF object (a `.o`, a kernel module), little
/// endian: mostly tables of fields that a rebuild moves by constants (relocations,
/// symbols, BTF type ids), which differ best by words (see [`Differences::Words`](super::bsdiff::Differences::Words)).
fn is_relocatable_elf(head: &[u8]) -> bool {
    head.len() >= 18 && head.starts_with(b"\x7fELF") && head[5] == 1 && head[16..18] == [1, 0]
}

/// Whether the file at `off` starts like a compressed stream or a zip archive.
fn is_packed(d: &LayerData, off: u64, size: u64) -> Result<bool> {
    let head = d.read(off, size.min(6))?;
    Ok(looks_compressed(&head) || zip::looks_like(&head))
}

/// Whether the file at `off` starts like a zip archive.
fn is_zip(d: &LayerData, off: u64, size: u64) -> Result<bool> {
    Ok(size >= 30 && zip::looks_like(&d.read(off, 4)?))
}

fn compressed_pair(new: &LayerData, off: u64, old: &LayerData, old_off: u64) -> Result<bool> {
    let head = |d: &LayerData, o: u64| -> Result<Vec<u8>> { d.read(o, 6.min(d.len() - o)) };
    Ok(looks_compressed(&head(new, off)?) && looks_compressed(&head(old, old_off)?))
}

/// Renumbers the old layers the regions read from as 0.. in order of first index, and
/// returns the original index of each.
pub(super) fn renumber_sources(regions: &mut [Region]) -> Vec<usize> {
    let mut used: Vec<usize> = regions
        .iter()
        .filter_map(|r| match *r {
            Region::Meta { src, .. } | Region::Gzip { src, .. } | Region::Zip { src, .. } => {
                src.map(|(l, _, _)| l)
            }
            Region::Copy { src, .. } | Region::Diff { src, .. } => Some(src),
            Region::Lit { .. } => None,
        })
        .collect();
    used.sort_unstable();
    used.dedup();
    let number = |l: usize| used.binary_search(&l).unwrap_or_default();
    for r in regions.iter_mut() {
        match r {
            Region::Meta { src: Some(s), .. }
            | Region::Gzip { src: Some(s), .. }
            | Region::Zip { src: Some(s), .. } => s.0 = number(s.0),
            Region::Copy { src, .. } | Region::Diff { src, .. } => *src = number(*src),
            Region::Meta { src: None, .. }
            | Region::Gzip { src: None, .. }
            | Region::Zip { src: None, .. }
            | Region::Lit { .. } => {}
        }
    }
    used
}

/// Learns the layer's BTF map from the kernel modules among the patched files (see
/// [`btf`]), and keeps the rewrite for the modules of the kernel it learnt it from. Both
/// passes read the sections again, so that no more than a pair per core is held at a time.
pub(super) fn learn_btf(
    regions: &mut [Region],
    old: &[&LayerData],
    new: &LayerData,
) -> Result<btf::BtfMap> {
    let candidates = |regions: &[Region]| -> Vec<usize> {
        let btf = |r: &Region| matches!(r, Region::Diff { btf: true, .. });
        (0..regions.len()).filter(|&i| btf(&regions[i])).collect()
    };
    let sections = |r: &Region| -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        let Region::Diff {
            off,
            len,
            src,
            src_off,
            src_len,
            btf: true,
            ..
        } = *r
        else {
            return Ok(None);
        };
        let a = read_btf(old[src], src_off, src_len)?;
        let b = match a {
            Some(_) => read_btf(new, off, len)?,
            None => None,
        };
        Ok(a.zip(b))
    };
    let workers = crate::threads::threads();
    let pairs = candidates(regions);
    let surveys = on_every_core(workers, |k| {
        let mine = pairs.iter().skip(k).step_by(workers);
        mine.map(|&i| {
            let survey = sections(&regions[i])?.and_then(|(a, b)| btf::Survey::new(&a, &b));
            Ok((i, survey))
        })
        .collect::<Result<Vec<_>>>()
    })?;
    let surveys: Vec<(usize, Option<btf::Survey>)> = surveys.into_iter().flatten().collect();
    let kernel = btf::Kernel::settle(surveys.iter().filter_map(|(_, s)| s.as_ref()));
    // Only the pairs of the kernel learnt keep their candidacy.
    for (i, s) in &surveys {
        if let Region::Diff { btf, .. } = &mut regions[*i] {
            *btf = kernel.zip(*s).is_some_and(|(k, s)| k.owns(&s));
        }
    }
    let Some(kernel) = kernel else {
        return Ok(btf::BtfMap::default());
    };
    let pairs = candidates(regions);
    let regions = &*regions;
    let votes = on_every_core(workers, |k| {
        let mut votes = btf::Votes::default();
        for &i in pairs.iter().skip(k).step_by(workers) {
            if let Some((a, b)) = sections(&regions[i])? {
                votes.align(&kernel, &a, &b);
            }
        }
        Ok(votes)
    })?;
    let mut all = btf::Votes::default();
    for v in votes {
        all.merge(v);
    }
    Ok(all.finish(&kernel))
}

/// The `.BTF` section of the ELF file at `off` (`size` bytes) of a layer, if it has one.
fn read_btf(d: &LayerData, off: u64, size: u64) -> Result<Option<Vec<u8>>> {
    let mut read = |o: u64, l: u64| {
        let o = o.min(size);
        d.read(off + o, l.min(size - o))
    };
    match btf::find_section(size, &mut read)? {
        Some((o, l)) => Ok(Some(d.read(off + o, l)?)),
        None => Ok(None),
    }
}
