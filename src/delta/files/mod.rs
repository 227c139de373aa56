//! The file-aware layer codec (method `files`).
//!
//! A changed layer is rebuilt from the regular files of **all** old layers. Each file of the
//! new layer gets the best source the old image has:
//!
//! 1. the same content anywhere (by SHA-256): copied, nothing stored;
//! 2. the same path (the topmost old layer that has it);
//! 3. the same path with version numbers folded (`libssl.so.3.0.11` ~ `libssl.so.3.0.15`,
//!    `pkg-2.1.4.dist-info/RECORD` ~ `pkg-2.2.0.dist-info/RECORD`, `/lib/modules/6.1.0-50-amd64/…`
//!    ~ `/lib/modules/6.1.0-56-amd64/…`), closest size first;
//! 4. the same file name elsewhere (a moved file), closest size first;
//!
//! and is stored as a bsdiff-class patch against it, or literally when it has no source or is
//! itself compressed (a patch of compressed bytes saves nothing). A gzip member that zlib
//! re-makes byte for byte is shipped as its text instead, patched against the old member's
//! text, and deflated again by the decoder (see [`gz`]). A kernel module is patched against
//! its old build with the old build's BTF first renumbered the way the new kernel renumbered
//! its types and strings (see [`btf`]). Tar headers are patched
//! against the source file's headers. Files larger than [`WINDOW`] (or whose source is) are
//! diffed in pieces of up to half that, each against a source window half a [`WINDOW`]
//! wider on either side, placed where the piece's content sits in the old file (found by
//! content anchors both files share, see [`align`]), and the chunks encoded at once share a
//! memory budget ([`CHUNK_MEMORY`]), so memory stays bounded whatever the file size and the
//! number of threads.
//!
//! # Stream
//!
//! The blob is `MAGIC`, then the layer's BTF map if it has one, then chunks, then a zero
//! byte. A chunk rebuilds up to about
//! [`CHUNK`] bytes of the layer and carries eight sections, so that like bytes sit
//! together in the package's compressed payload (the package compressor sees every layer's
//! headers, differences and new bytes in one strong stream). Encoders write tag 0x02;
//! decoders also read 0x01, whose patches keep their control triples in ops:
//!
//! ```text
//! btfmap  = 0x03 shifts(types) shifts(names)        see btf::BtfMap::write
//! chunk   = 0x02 varint(output_len) varint(ops_len) varint(meta_len) varint(runs_len)
//!           varint(lits_len) varint(extra_len) varint(adds_len) varint(copies_len)
//!           varint(seeks_len) ops meta runs lits extra adds copies seeks
//!         | 0x01 varint(output_len) varint(ops_len) varint(meta_len) varint(runs_len)
//!           varint(lits_len) varint(extra_len) ops meta runs lits extra
//! runs    = (varint(zeros) varint(n))*   the difference bytes: `zeros` zero bytes, then
//!                                         the next `n` bytes of lits
//! ops     = op*
//! op      = 0x00 varint(len)                          META: len bytes from meta
//!         | 0x01 varint(len)                          LIT: len bytes from extra
//!         | 0x02 varint(src) varint(off) varint(len)  COPY: len bytes of old layer src at off
//!         | 0x03 patch                                DIFF: patch, new bytes from extra
//!         | 0x04 patch                                HDIFF: patch, new bytes from meta
//!         | 0x05 varint(level) varint(header_len) gz  GZIP: header from meta, then the
//!                                                     text deflated at level, CRC, size
//!         | 0x06 patch                                WDIFF: as DIFF, its differences in
//!                                                     32-bit words (bsdiff::Differences)
//!         | 0x07 patch                                BDIFF: as WDIFF, the source (a whole
//!                                                     module) rewritten by btf::rewrite
//! gz      = 0x00 varint(text_len)                     the text from extra
//!         | 0x01 patch                                the text patched against the text
//!                                                     of the old gzip member it names
//! patch   = varint(src) varint(off) varint(src_len) varint(len) varint(n), then n
//!           control triples: in a 0x02 chunk the next n varints of adds, of copies and
//!           of seeks (zigzag); in a 0x01 chunk n * (varint(add) varint(copy)
//!           zigzag-varint(seek)) right here in ops
//! ```
//!
//! `src` indexes the layer's list of old layers ([`LayerSource::Files`]); offsets are into the
//! old layer's uncompressed tar. A patch reads `src_len` bytes of it from `off` and writes
//! `len` bytes (see [`bsdiff`]).
//!
//! [`LayerSource::Files`]: crate::delta::format::LayerSource::Files

pub mod access;
pub mod align;
pub mod bsdiff;
pub mod btf;
pub mod gz;
pub mod tarscan;

use std::collections::HashMap;
use std::io::{self, Read, Write};

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};

use crate::delta::blocks::BlockReader;
pub use access::LayerData;
use align::{Alignment, Span};
use bsdiff::{Control, Differences, Streams};
use tarscan::TarIndex;

use sha2::{Digest as _, Sha256};

use crate::digest::Digest;
use crate::error::{Error, Result};

/// The first bytes of a `files` blob.
pub const MAGIC: &[u8; 8] = b"DDFILES1";
/// Largest piece of a file a decoder accepts diffed at once (the source window is up to
/// twice this). Encoders diff a file and its source whole when neither is larger, else in
/// pieces of half this, each against the source from half this before it to half this
/// after it (see [`CHUNK_MEMORY`]).
pub const WINDOW: u64 = 16 << 20;
/// Memory the chunks being encoded, and encoded ahead of the writer, may take together,
/// however many threads encode them. A chunk's share is its difference searches (a suffix
/// array of the source, 4 bytes a byte, plus source, target and output: about 5 times the
/// source plus 3 times the target, the largest of its regions; a whole 16 MiB file against
/// a 16 MiB source takes 128 MiB, an 8 MiB piece of a larger file against its 24 MiB window
/// 144 MiB) and three times its output (the new bytes, the sections, the copy decoded
/// again); an encoded chunk then holds its bytes until written. A chunk that does not fit
/// beside the others waits; one larger than the whole runs alone.
///
/// With the payload lanes' encoders (up to about 300 MiB at the default compression),
/// create stays under 512 MiB on any number of threads. Measured on the kernel pair with a
/// changed 256 MiB file added to its layer, with 2, 4 and 8 threads on two cores: before
/// this limit (only the searches were limited, to 160 MiB) 487, 621 and 833 MiB; see
/// docs/BENCHMARKS.md for the numbers with it.
pub const CHUNK_MEMORY: u64 = 192 << 20;
/// Memory the chunks being decoded, and decoded ahead of the reader, may take together
/// (apply's counterpart of [`CHUNK_MEMORY`]): their sections, outputs and difference
/// bytes.
pub const DECODE_MEMORY: u64 = 96 << 20;
/// Output bytes per chunk (a chunk may exceed it by one region of up to [`WINDOW`]).
pub const CHUNK: u64 = 8 << 20;
/// Largest chunk output a decoder accepts.
pub const MAX_CHUNK_OUTPUT: u64 = CHUNK + WINDOW + (1 << 20);
/// Largest chunk section (ops, meta, diff or extra) a decoder accepts.
pub const MAX_SECTION: u64 = 4 * MAX_CHUNK_OUTPUT;
/// Headers longer than this are stored literally instead of patched.
const MAX_META_PATCH: u64 = 64 << 10;

const OP_META: u8 = 0;
const OP_LIT: u8 = 1;
const OP_COPY: u8 = 2;
const OP_DIFF: u8 = 3;
const OP_HDIFF: u8 = 4;
const OP_GZIP: u8 = 5;
const OP_WDIFF: u8 = 6;
const OP_BDIFF: u8 = 7;
/// OP_GZIP: the text follows in extra.
const GZ_TEXT: u64 = 0;
/// OP_GZIP: the text is a patch against an old gzip member's text.
const GZ_PATCH: u64 = 1;

/// An old layer, open for reading and indexed.
pub struct OldLayer {
    /// Its bytes.
    pub data: LayerData,
    /// Its files.
    pub index: TarIndex,
}

/// What encoding a layer did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct EncodeStats {
    /// Files copied unchanged from an old layer.
    pub files_copied: u64,
    /// Files patched against an old file.
    pub files_patched: u64,
    /// Files stored as they are.
    pub files_literal: u64,
    /// Gzip members considered for shipping as text (see [`gz`]).
    pub files_gzip: u64,
    /// Kernel modules patched with their BTF renumbered first (see [`btf`]).
    pub files_btf: u64,
    /// Bytes of the new layer rebuilt by copying.
    pub bytes_copied: u64,
    /// Bytes of the encoded stream (before package compression).
    pub encoded_size: u64,
    /// Bytes written to the streams of the sections kept apart ([`APART`]), when there are
    /// such streams (before package compression).
    pub apart_sizes: [u64; 2],
    /// The old layers the stream draws on, as indexes into the `old` slice given to
    /// [`encode`]; source number `i` in the stream is `sources[i]`, so the decoder is
    /// given exactly these layers, in this order.
    pub sources: Vec<usize>,
}

/// How a new file is sourced.
#[derive(Debug, Clone, Copy)]
enum Pick {
    Same(usize, usize),
    Similar(usize, usize),
    None,
}

/// A piece of the new layer and how to make it.
#[derive(Debug, Clone)]
enum Region {
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
    },
    Lit {
        off: u64,
        len: u64,
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
}

impl Region {
    /// Memory its difference search takes (see [`CHUNK_MEMORY`]); 0 for what is not
    /// searched, or only a header's worth.
    fn search_memory(&self) -> u64 {
        let search = |source: u64, target: u64| 5 * source + 3 * target;
        match *self {
            Region::Diff { len, src_len, .. } => search(src_len, len),
            // The old member's text is about as long as the new one's (or it is not
            // patched against it).
            Region::Gzip {
                text, src: Some(_), ..
            } => search(text, text),
            _ => 0,
        }
    }

    fn len(&self) -> u64 {
        match self {
            Region::Meta { len, .. }
            | Region::Copy { len, .. }
            | Region::Diff { len, .. }
            | Region::Lit { len, .. }
            | Region::Gzip { len, .. } => *len,
        }
    }
}

/// Where old files are, by content, path, folded path and file name.
struct Catalog<'a> {
    old: &'a [OldLayer],
    by_hash: HashMap<[u8; 32], (usize, usize)>,
    by_path: HashMap<&'a [u8], (usize, usize)>,
    by_folded: HashMap<Vec<u8>, Vec<(usize, usize)>>,
    by_name: HashMap<&'a [u8], Vec<(usize, usize)>>,
}

impl<'a> Catalog<'a> {
    fn new(old: &'a [OldLayer]) -> Catalog<'a> {
        let mut c = Catalog {
            old,
            by_hash: HashMap::new(),
            by_path: HashMap::new(),
            by_folded: HashMap::new(),
            by_name: HashMap::new(),
        };
        for (l, layer) in old.iter().enumerate() {
            for (i, f) in layer.index.files.iter().enumerate() {
                c.by_hash.entry(f.hash).or_insert((l, i));
                // Upper layers hide lower ones.
                c.by_path.insert(&f.path, (l, i));
                c.by_folded.entry(fold(&f.path)).or_default().push((l, i));
                c.by_name
                    .entry(file_name(&f.path))
                    .or_default()
                    .push((l, i));
            }
        }
        c
    }

    fn file(&self, (l, i): (usize, usize)) -> &tarscan::FileEntry {
        &self.old[l].index.files[i]
    }

    fn pick(&self, f: &tarscan::FileEntry) -> Pick {
        if let Some(&(l, i)) = self.by_hash.get(&f.hash) {
            if self.file((l, i)).size == f.size {
                return Pick::Same(l, i);
            }
        }
        if let Some(&s) = self.by_path.get(&f.path[..]) {
            return Pick::Similar(s.0, s.1);
        }
        let closest = |cands: Option<&Vec<(usize, usize)>>| {
            cands.and_then(|v| {
                v.iter()
                    .copied()
                    .min_by_key(|&s| self.file(s).size.abs_diff(f.size))
            })
        };
        if let Some(s) = closest(self.by_folded.get(&fold(&f.path))) {
            return Pick::Similar(s.0, s.1);
        }
        if let Some(s) = closest(self.by_name.get(file_name(&f.path))) {
            // A moved file must look like the same file: similar size.
            let size = self.file(s).size;
            if size.min(f.size) * 2 >= size.max(f.size) {
                return Pick::Similar(s.0, s.1);
            }
        }
        Pick::None
    }
}

fn file_name(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&b| b == b'/') {
        Some(p) => &path[p + 1..],
        None => path,
    }
}

/// A path with every run of digits replaced by `#`.
fn fold(path: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len());
    let mut digits = false;
    for &b in path {
        if b.is_ascii_digit() {
            if !digits {
                out.push(b'#');
            }
            digits = true;
        } else {
            digits = false;
            out.push(b);
        }
    }
    out
}

/// Whether bytes start like a compressed stream (gzip, xz, zstd, bzip2, zip, lzma).
fn looks_compressed(head: &[u8]) -> bool {
    head.starts_with(&[0x1f, 0x8b])
        || head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0])
        || head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || head.starts_with(b"BZh")
        || head.starts_with(b"PK\x03\x04")
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
fn plan(cat: &Catalog<'_>, new: &OldLayer, stats: &mut EncodeStats) -> Result<Vec<Region>> {
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
    for f in &new.index.files {
        let pick = cat.pick(f);
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
            (Pick::Similar(..), Some((l, s)))
                if !compressed_pair(&new.data, off, &cat.old[l].data, s.data_offset)? =>
            {
                stats.files_patched += 1;
                let relocatable = is_relocatable_elf(&new.data.read(off, size.min(18))?);
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
                    a
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
                let mut done = 0;
                while done < size {
                    let len = (size - done).min(CHUNK);
                    regions.push(Region::Lit {
                        off: off + done,
                        len,
                    });
                    done += len;
                }
            }
        }
        cursor = f.data_end();
    }
    push_meta(&mut regions, cursor, new.index.len, None);
    Ok(regions)
}

/// The source window of the piece `done..done + len` of a file of `size` bytes diffed
/// against an old file of `old_size` bytes: where the piece's content sits in the old file
/// (by the shift most of its shared anchors agree on, else by its proportional position),
/// from half a [`WINDOW`] before it to half a window after, kept inside the old file.
fn piece_source(a: &Alignment, done: u64, len: u64, size: u64, old_size: u64) -> (u64, u64) {
    let span = (len + WINDOW).min(old_size);
    let at = match a.shift(done, len, WINDOW / 2, 2) {
        Some(shift) => (done as i64).saturating_add(shift).max(0) as u64,
        None => (done as u128 * old_size as u128 / size.max(1) as u128) as u64,
    };
    let start = at.saturating_sub(WINDOW / 2).min(old_size - span);
    (start, span)
}

/// Whether bytes start like a relocatable ELF object (a `.o`, a kernel module), little
/// endian: mostly tables of fields that a rebuild moves by constants (relocations,
/// symbols, BTF type ids), which differ best by words (see [`Differences::Words`]).
fn is_relocatable_elf(head: &[u8]) -> bool {
    head.len() >= 18 && head.starts_with(b"\x7fELF") && head[5] == 1 && head[16..18] == [1, 0]
}

fn compressed_pair(new: &LayerData, off: u64, old: &LayerData, old_off: u64) -> Result<bool> {
    let head = |d: &LayerData, o: u64| -> Result<Vec<u8>> { d.read(o, 6.min(d.len() - o)) };
    Ok(looks_compressed(&head(new, off)?) && looks_compressed(&head(old, old_off)?))
}

/// Encodes `new` against `old` into `out`, the chunks' new bytes (their `extra` sections)
/// and difference literals (`lits`) into `apart[0]` and `apart[1]` if given (see
/// [`APART`]), else in the chunks; `progress` is told of each chunk's output
/// bytes.
///
/// Every chunk is decoded again as soon as it is encoded, and the rebuilt bytes must hash to
/// `expected` (the new layer's diff_id) in the end: a stream that would not rebuild the layer
/// exactly is never shipped.
pub fn encode(
    old: &[OldLayer],
    new: &OldLayer,
    expected: &Digest,
    out: &mut dyn Write,
    mut apart: [Option<&mut dyn Write>; 2],
    progress: &mut dyn FnMut(u64) -> Result<()>,
) -> Result<EncodeStats> {
    let cat = Catalog::new(old);
    let mut stats = EncodeStats::default();
    let mut regions = plan(&cat, new, &mut stats)?;
    // The catalog's maps (a few hundred bytes a file) are not needed past the plan: on a
    // layer of 400 000 files they are over 100 MiB that the encoding needs for itself.
    drop(cat);
    // Number the old layers actually used 0.. so the package names only those: a base
    // image then needs just the layers the delta reads.
    stats.sources = renumber_sources(&mut regions);
    let refs: Vec<&LayerData> = stats.sources.iter().map(|&i| &old[i].data).collect();
    let learnt = learn_btf(&mut regions, &refs, &new.data)?;
    // The map as the decoder will read it, so that the round-trip check covers its encoding.
    let mut map_bytes = Vec::new();
    if !learnt.is_empty() {
        map_bytes.push(CHUNK_BTF_MAP);
        learnt.write(&mut map_bytes, put);
    }
    let map = Arc::new(match map_bytes.split_first() {
        Some((_, mut rest)) => btf::BtfMap::read(&mut || get(&mut rest))?,
        None => btf::BtfMap::default(),
    });
    stats.files_btf = regions
        .iter()
        .filter(|r| matches!(r, Region::Diff { btf: true, .. }))
        .count() as u64;
    tracing::debug!(
        regions = regions.len(),
        btf_modules = stats.files_btf,
        btf_type_pieces = map.types.len(),
        btf_name_pieces = map.names.len(),
        btf_map_bytes = map_bytes.len(),
        "planned the files codec's regions"
    );
    // Group regions into chunks of about CHUNK output bytes.
    let mut chunks: Vec<ChunkJob<'_>> = Vec::new();
    let (mut start, mut acc, mut at) = (0usize, 0u64, 0u64);
    for (i, r) in regions.iter().enumerate() {
        // A gzip member's text passes through memory too: count the larger of the two.
        acc += match *r {
            Region::Gzip { len, text, .. } => len.max(text),
            _ => r.len(),
        };
        if acc >= CHUNK || i + 1 == regions.len() {
            let job = ChunkJob::new(&regions[start..=i], at);
            at += job.output;
            chunks.push(job);
            start = i + 1;
            acc = 0;
        }
    }
    let io_err = |e: io::Error| Error::io("files delta output", e);
    out.write_all(MAGIC).map_err(io_err)?;
    let mut written = MAGIC.len() as u64;
    out.write_all(&map_bytes).map_err(io_err)?;
    written += map_bytes.len() as u64;
    // Chunks are encoded on every core and written in order. A worker takes the next chunk
    // as soon as it is free (chunks differ widely in cost: a copied file is free, a patched
    // one is not), as memory allows (see CHUNK_MEMORY).
    //
    // Each chunk is decoded again by the worker that made it and compared with the layer's
    // bytes; the writer hashes the layer's bytes in order, which must give its diff_id.
    let workers = crate::threads::threads();
    let mut hasher = Sha256::new();
    let mut rebuilt = 0u64;
    let mut layer_bytes = Vec::new();
    let split = [apart[0].is_some(), apart[1].is_some()];
    let mut write = |chunk: Chunk| -> Result<()> {
        layer_pieces(
            &new.data,
            rebuilt,
            chunk.output,
            &mut layer_bytes,
            |_, piece| {
                hasher.update(piece);
                Ok(())
            },
        )?;
        rebuilt += chunk.output;
        out.write_all(&chunk.bytes).map_err(io_err)?;
        written += chunk.bytes.len() as u64;
        let sizes = stats.apart_sizes.iter_mut();
        for ((w, n), size) in apart.iter_mut().zip(&chunk.apart).zip(sizes) {
            if let (Some(w), Some(n)) = (w, n) {
                w.write_all(n).map_err(io_err)?;
                *size += n.len() as u64;
            }
        }
        progress(chunk.output)
    };
    let mut jobs = chunks.into_iter();
    in_order_parallel(
        workers,
        2 * workers,
        CHUNK_MEMORY,
        move || Ok(jobs.next()),
        |job: ChunkJob<'_>| {
            let chunk = encode_chunk(job.regions, &refs, &new.data, &map, split)?;
            let decoded = decode_chunk(&chunk, &refs, &map)?;
            same_as_layer(&decoded, job.output, &new.data, job.at)?;
            Ok(chunk)
        },
        &mut write,
    )?;
    out.write_all(&[0]).map_err(io_err)?;
    stats.encoded_size = written + 1;
    let found = Digest::from_sha256(hasher.finalize().into());
    if &found != expected || rebuilt != new.data.len() {
        return Err(Error::DigestMismatch {
            what: format!("{} (files codec round-trip check)", new.data.description()),
            expected: expected.to_string(),
            found: found.to_string(),
        });
    }
    Ok(stats)
}

/// A chunk of regions to encode, and where its output starts in the new layer.
struct ChunkJob<'r> {
    regions: &'r [Region],
    at: u64,
    output: u64,
}

impl<'r> ChunkJob<'r> {
    fn new(regions: &'r [Region], at: u64) -> ChunkJob<'r> {
        let output = regions.iter().map(Region::len).sum();
        ChunkJob {
            regions,
            at,
            output,
        }
    }
}

impl Footprint for ChunkJob<'_> {
    /// Nothing until it runs.
    fn held(&self) -> u64 {
        0
    }

    /// Its regions are searched one after the other (the largest search counts), beside
    /// the new bytes read, the sections made and the copy decoded again (each about the
    /// output, a gzip member counted as its text where that is longer).
    fn running(&self) -> u64 {
        let search = self.regions.iter().map(Region::search_memory).max();
        let text: u64 = self
            .regions
            .iter()
            .map(|r| match *r {
                Region::Gzip { len, text, .. } => text.saturating_sub(len),
                _ => 0,
            })
            .sum();
        search.unwrap_or(0) + 3 * (self.output + text)
    }
}

impl Footprint for Chunk {
    fn held(&self) -> u64 {
        let apart = self
            .apart
            .iter()
            .flatten()
            .map(Vec::capacity)
            .sum::<usize>();
        (self.bytes.capacity() + apart) as u64
    }
}

/// Bytes of a layer read at a time by [`layer_pieces`].
const LAYER_PIECE: u64 = 1 << 20;

/// Reads the `len` bytes of the layer from `at` piece by piece into `buf`, giving each
/// piece and its offset to `f`.
fn layer_pieces(
    layer: &LayerData,
    at: u64,
    len: u64,
    buf: &mut Vec<u8>,
    mut f: impl FnMut(u64, &[u8]) -> Result<()>,
) -> Result<()> {
    let mut done = 0;
    while done < len {
        let n = (len - done).min(LAYER_PIECE);
        layer.read_to(at + done, n, buf)?;
        f(at + done, buf)?;
        done += n;
    }
    Ok(())
}

/// Checks that `decoded` is the `len` bytes of the layer from `at`.
fn same_as_layer(decoded: &[u8], len: u64, layer: &LayerData, at: u64) -> Result<()> {
    let wrong = |what: String| Error::Codec {
        codec: "files".into(),
        reason: format!(
            "round-trip check: the stream rebuilds {what} ({})",
            layer.description()
        ),
    };
    if decoded.len() as u64 != len {
        let what = format!("{} bytes at offset {at}, not {len}", decoded.len());
        return Err(wrong(what));
    }
    layer_pieces(layer, at, len, &mut Vec::new(), |from, piece| {
        let want = &decoded[(from - at) as usize..][..piece.len()];
        match piece.iter().zip(want).position(|(a, b)| a != b) {
            Some(k) => Err(wrong(format!("byte {} wrong", from + k as u64))),
            None => Ok(()),
        }
    })
}

/// Memory a job or a result of [`in_order_parallel`] holds, in bytes: an estimate that errs
/// high.
trait Footprint {
    /// What it holds as it is: a job taken and not yet running, a result not yet sunk.
    fn held(&self) -> u64;
    /// The most a job holds while it runs (counted instead of [`held`](Self::held) from
    /// the time it starts until its result is made).
    fn running(&self) -> u64 {
        self.held()
    }
}

/// Runs jobs on `workers` threads and hands their results to `sink` in the order the jobs
/// were taken. `take` gives the next job (`None` when there are no more); it is called on
/// the worker threads, one at a time, so it may read a stream. `work` turns a job into a
/// result, on any thread. The first error (from any of the three) stops everything and is
/// returned.
///
/// Memory stays bounded whatever the number of workers: at most `ahead` jobs are taken
/// past the result being sunk, and only while less than `memory` is held; a job starts
/// only when its [`Footprint::running`] fits in `memory` beside what the others hold (jobs
/// waiting or running, results not yet sunk), or nothing else is held (a job larger than
/// `memory` runs alone). The job whose result the sink waits for is taken and started
/// counting only the jobs running: the results held ahead of it wait for it, so it must
/// not wait for them.
fn in_order_parallel<J: Send + Footprint, T: Send + Footprint>(
    workers: usize,
    ahead: usize,
    memory: u64,
    take: impl FnMut() -> Result<Option<J>> + Send,
    work: impl Fn(J) -> Result<T> + Sync,
    mut sink: impl FnMut(T) -> Result<()>,
) -> Result<()> {
    struct State<F> {
        take: F,
        /// Jobs taken so far; the next job's number.
        taken: usize,
        /// The number of the next result the sink takes.
        want: usize,
        /// Bytes held by the jobs taken and not done, and by the results not yet sunk.
        held: u64,
        /// Bytes held by the jobs running.
        running: u64,
        /// All jobs are taken (none left, or `take` failed).
        ended: bool,
        /// Stop: the sink failed or is done.
        stop: bool,
    }
    let state = (
        Mutex::new(State {
            take,
            taken: 0,
            want: 0,
            held: 0,
            running: 0,
            ended: false,
            stop: false,
        }),
        Condvar::new(),
    );
    let lock = || state.0.lock().unwrap_or_else(|e| e.into_inner());
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::channel::<(usize, Result<T>, u64)>();
        for _ in 0..workers.max(1) {
            let tx = tx.clone();
            let (state, work) = (&state, &work);
            scope.spawn(move || loop {
                let wait = |g| state.1.wait(g).unwrap_or_else(|e| e.into_inner());
                let mut g = state.0.lock().unwrap_or_else(|e| e.into_inner());
                // A job is taken (a stream may be read for it) only while memory is left,
                // unless it is the one the sink waits for.
                while !g.stop
                    && !g.ended
                    && (g.taken >= g.want + ahead || (g.taken != g.want && g.held >= memory))
                {
                    g = wait(g);
                }
                if g.stop || g.ended {
                    return;
                }
                let i = g.taken;
                let job = match (g.take)() {
                    Ok(Some(job)) => {
                        g.taken += 1;
                        job
                    }
                    Ok(None) => {
                        g.ended = true;
                        state.1.notify_all();
                        return;
                    }
                    Err(e) => {
                        // The error is the last result.
                        g.taken += 1;
                        g.ended = true;
                        state.1.notify_all();
                        drop(g);
                        let _ = tx.send((i, Err(e), 0));
                        return;
                    }
                };
                let (held, run) = (job.held(), job.running());
                g.held += held;
                loop {
                    if g.stop {
                        g.held -= held;
                        return;
                    }
                    let fits = if i == g.want {
                        g.running == 0 || g.running + run <= memory
                    } else {
                        g.held == held || g.held - held + run <= memory
                    };
                    if fits {
                        break;
                    }
                    g = wait(g);
                }
                g.held = g.held - held + run;
                g.running += run;
                drop(g);
                // A panic becomes an error: the result must arrive, or the sink and the
                // workers waiting for it would wait forever.
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(job)))
                    .unwrap_or_else(|_| {
                        Err(Error::Other("files codec: a worker thread panicked".into()))
                    });
                let kept = result.as_ref().map_or(0, Footprint::held);
                let mut g = state.0.lock().unwrap_or_else(|e| e.into_inner());
                g.held = g.held - run + kept;
                g.running -= run;
                state.1.notify_all();
                drop(g);
                if tx.send((i, result, kept)).is_err() {
                    return;
                }
            });
        }
        drop(tx);
        let stop = || {
            lock().stop = true;
            state.1.notify_all();
        };
        let mut waiting = BTreeMap::new();
        let mut want = 0usize;
        // Results arrive until every worker has stopped (all jobs taken and done).
        while let Ok((i, r, kept)) = rx.recv() {
            waiting.insert(i, (r, kept));
            while let Some((r, kept)) = waiting.remove(&want) {
                if let Err(e) = r.and_then(&mut sink) {
                    stop();
                    return Err(e);
                }
                want += 1;
                let mut g = lock();
                g.want = want;
                g.held -= kept;
                drop(g);
                state.1.notify_all();
            }
        }
        stop();
        let g = lock();
        if want < g.taken || !g.ended {
            return Err(Error::Other("files codec: a worker stopped early".into()));
        }
        Ok(())
    })
}

/// Rebuilds a layer as reading `decoder` would, decoding its chunks on `workers` threads;
/// each chunk's bytes go to `sink`, in order. The chunks read, being decoded and decoded
/// ahead of the sink take at most [`DECODE_MEMORY`] together (or one chunk, if larger).
fn decode_parallel<R: Read + Send>(
    decoder: Decoder<'_, R>,
    workers: usize,
    sink: impl FnMut(Vec<u8>) -> Result<()>,
) -> Result<()> {
    let old = decoder.old.clone();
    let mut decoder = decoder;
    in_order_parallel(
        workers,
        2 * workers.max(1),
        DECODE_MEMORY,
        move || decoder.read_chunk(),
        |raw: RawChunk| raw.decode(&old),
        sink,
    )
}

/// Runs `consume` on a reader of the layer `decoder` rebuilds, while its chunks are decoded
/// on `workers` threads beside: the reader's side (hashing, writing) and the chunks'
/// decoding overlap. Errors of the decoding reach `consume` through the reader.
pub fn with_parallel_reader<R: Read + Send, T>(
    decoder: Decoder<'_, R>,
    workers: usize,
    consume: impl FnOnce(&mut dyn Read) -> Result<T>,
) -> Result<T> {
    let spares = decoder.spares.clone();
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::sync_channel(1);
        let producer = scope.spawn(move || {
            let sent = decode_parallel(decoder, workers, |b| {
                tx.send(Ok(Some(b)))
                    .map_err(|_| Error::Other("the layer's reader stopped".into()))
            });
            // A failed send means the reader is gone: nobody to tell.
            let _ = tx.send(sent.map(|()| None).map_err(Error::into_io));
        });
        let mut reader = BlockReader::new(rx, "files codec: the decoding thread", move |b| {
            spares.give(b)
        });
        let result = consume(&mut reader);
        // Unblocks the producer if the consumer stopped early.
        drop(reader);
        if producer.join().is_err() && result.is_ok() {
            return Err(Error::Other(
                "files codec: the decoding thread panicked".into(),
            ));
        }
        result
    })
}

/// Renumbers the old layers the regions read from as 0.. in order of first index, and
/// returns the original index of each.
fn renumber_sources(regions: &mut [Region]) -> Vec<usize> {
    let mut used: Vec<usize> = regions
        .iter()
        .filter_map(|r| match *r {
            Region::Meta { src, .. } | Region::Gzip { src, .. } => src.map(|(l, _, _)| l),
            Region::Copy { src, .. } | Region::Diff { src, .. } => Some(src),
            Region::Lit { .. } => None,
        })
        .collect();
    used.sort_unstable();
    used.dedup();
    let number = |l: usize| used.binary_search(&l).unwrap_or_default();
    for r in regions.iter_mut() {
        match r {
            Region::Meta { src: Some(s), .. } | Region::Gzip { src: Some(s), .. } => {
                s.0 = number(s.0)
            }
            Region::Copy { src, .. } | Region::Diff { src, .. } => *src = number(*src),
            Region::Meta { src: None, .. }
            | Region::Gzip { src: None, .. }
            | Region::Lit { .. } => {}
        }
    }
    used
}

/// Learns the layer's BTF map from the kernel modules among the patched files (see
/// [`btf`]), and keeps the rewrite for the modules of the kernel it learnt it from. Both
/// passes read the sections again, so that no more than a pair per core is held at a time.
fn learn_btf(regions: &mut [Region], old: &[&LayerData], new: &LayerData) -> Result<btf::BtfMap> {
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

/// Runs `work(0..workers)` on as many threads and returns the results in that order.
fn on_every_core<T: Send>(
    workers: usize,
    work: impl Fn(usize) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    std::thread::scope(|scope| {
        let work = &work;
        let threads: Vec<_> = (0..workers).map(|k| scope.spawn(move || work(k))).collect();
        threads
            .into_iter()
            .map(|t| {
                t.join().unwrap_or_else(|_| {
                    Err(Error::Other("files codec: a worker thread panicked".into()))
                })
            })
            .collect()
    })
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

/// Decodes one encoded chunk (as [`encode_chunk`] made it), `map` being the stream's BTF
/// map.
fn decode_chunk(chunk: &Chunk, old: &[&LayerData], map: &Arc<btf::BtfMap>) -> Result<Vec<u8>> {
    let apart = [chunk.apart[0].as_deref(), chunk.apart[1].as_deref()];
    let mut d = Decoder::with_apart(&chunk.bytes[..], apart, old.to_vec());
    d.started = true;
    d.btf = (!map.is_empty()).then(|| map.clone());
    match d.read_chunk()? {
        Some(raw) => raw.decode(old),
        None => Err(bad("no chunk to decode")),
    }
}

/// An encoded chunk: its bytes in the stream and, when they go to a stream of their own,
/// its new bytes (its `extra` section).
struct Chunk {
    bytes: Vec<u8>,
    /// The bytes it rebuilds.
    output: u64,
    /// The sections kept apart ([`APART`]), if they are.
    apart: [Option<Vec<u8>>; 2],
}

/// Encodes one chunk of regions; with `split[k]`, its section [`APART`]`[k]` is left out of
/// its bytes and returned apart, for a stream of its own.
fn encode_chunk(
    regions: &[Region],
    old: &[&LayerData],
    new: &LayerData,
    map: &btf::BtfMap,
    split: [bool; 2],
) -> Result<Chunk> {
    let (mut ops, mut meta, mut diff, mut extra) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut ctl = ControlSections::default();
    let mut output = 0u64;
    for r in regions {
        output += r.len();
        match *r {
            Region::Meta { off, len, src } => {
                let bytes = new.read(off, len)?;
                match src {
                    Some((l, soff, slen)) if len <= MAX_META_PATCH && slen <= MAX_META_PATCH => {
                        let source = old[l].read(soff, slen)?;
                        let mut s = Streams::default();
                        bsdiff::diff(&source, &bytes, &mut s);
                        ops.push(OP_HDIFF);
                        put_patch(&mut ops, Some(&mut ctl), l, soff, slen, len, &s.controls);
                        diff.extend_from_slice(&s.diff);
                        meta.extend_from_slice(&s.extra);
                    }
                    _ => {
                        ops.push(OP_META);
                        put(&mut ops, len);
                        meta.extend_from_slice(&bytes);
                    }
                }
            }
            Region::Copy { src, off, len } => {
                ops.push(OP_COPY);
                put(&mut ops, src as u64);
                put(&mut ops, off);
                put(&mut ops, len);
            }
            Region::Diff {
                off,
                len,
                src,
                src_off,
                src_len,
                relocatable,
                btf,
            } => {
                let bytes = new.read(off, len)?;
                let mut source = old[src].read(src_off, src_len)?;
                if btf {
                    btf::rewrite(&mut source, map);
                }
                let mut s = Streams::default();
                bsdiff::diff(&source, &bytes, &mut s);
                if s.extra.len() as u64 * 10 > len * 9 {
                    // Hardly anything matched: the bytes alone are cheaper.
                    ops.push(OP_LIT);
                    put(&mut ops, len);
                    extra.extend_from_slice(&bytes);
                } else {
                    // Words only for relocatable objects: on other files (linked programs,
                    // text) they come out no smaller, or larger, in the package, even where
                    // they compress smaller on their own (measured on every bench pair).
                    let words = relocatable
                        .then(|| bsdiff::word_differences(&source, &bytes, &s.controls))
                        .flatten();
                    ops.push(match (btf, words.is_some()) {
                        (true, true) => OP_BDIFF,
                        (false, true) => OP_WDIFF,
                        (false, false) => OP_DIFF,
                        (true, false) => {
                            return Err(Error::Other(
                                "files codec: word differences do not fit a BTF patch".into(),
                            ))
                        }
                    });
                    put_patch(
                        &mut ops,
                        Some(&mut ctl),
                        src,
                        src_off,
                        src_len,
                        len,
                        &s.controls,
                    );
                    diff.extend_from_slice(words.as_ref().unwrap_or(&s.diff));
                    extra.extend_from_slice(&s.extra);
                }
            }
            Region::Gzip { off, len, src, .. } => {
                let bytes = new.read(off, len)?;
                // A deflater other than stock zlib would make members a stock build cannot
                // re-make (or fail to re-make stock members): they go whole.
                let split = gz::remake_at_create().then(|| gz::split(&bytes)).flatten();
                let Some(m) = split else {
                    ops.push(OP_LIT);
                    put(&mut ops, len);
                    extra.extend_from_slice(&bytes);
                    continue;
                };
                ops.push(OP_GZIP);
                put(&mut ops, m.level as u64);
                put(&mut ops, m.header_len as u64);
                meta.extend_from_slice(&bytes[..m.header_len]);
                let source = match src {
                    Some((l, soff, slen)) => gz::inflate_member(&old[l].read(soff, slen)?)
                        .map(|raw| (l, soff, slen, raw)),
                    None => None,
                };
                let mut s = Streams::default();
                if let Some((_, _, _, sraw)) = &source {
                    bsdiff::diff(sraw, &m.raw, &mut s);
                }
                match source {
                    Some((l, soff, slen, _)) if s.extra.len() * 10 <= m.raw.len() * 9 => {
                        put(&mut ops, GZ_PATCH);
                        let n = m.raw.len() as u64;
                        put_patch(&mut ops, Some(&mut ctl), l, soff, slen, n, &s.controls);
                        diff.extend_from_slice(&s.diff);
                        extra.extend_from_slice(&s.extra);
                    }
                    _ => {
                        put(&mut ops, GZ_TEXT);
                        put(&mut ops, m.raw.len() as u64);
                        extra.extend_from_slice(&m.raw);
                    }
                }
            }
            Region::Lit { off, len } => {
                ops.push(OP_LIT);
                put(&mut ops, len);
                extra.extend_from_slice(&new.read(off, len)?);
            }
        }
    }
    let (runs, lits) = squeeze_zeros(&diff);
    let mut sections = [ops, meta, runs, lits, extra, ctl.add, ctl.copy, ctl.seek];
    let mut out = Vec::with_capacity(sections.iter().map(Vec::len).sum::<usize>() + 48);
    out.push(CHUNK_SPLIT);
    put(&mut out, output);
    for s in &sections {
        put(&mut out, s.len() as u64);
    }
    let mut apart = [None, None];
    for (k, &i) in APART.iter().enumerate() {
        if split[k] {
            apart[k] = Some(std::mem::take(&mut sections[i]));
        }
    }
    for s in sections {
        out.extend_from_slice(&s);
    }
    Ok(Chunk {
        bytes: out,
        output,
        apart,
    })
}

/// The index of the `lits` section (the difference literals) among a chunk's sections.
const LITS: usize = 3;
/// The index of the `extra` section (the new bytes) among a chunk's sections.
const EXTRA: usize = 4;
/// The sections a stream may keep in streams of their own, so that the package compresses
/// each among its like and apply decodes them side by side: the new bytes, then the
/// difference literals.
pub const APART: [usize; 2] = [EXTRA, LITS];
/// What [`APART`]'s streams hold, for messages.
const APART_NAMES: [&str; 2] = ["new bytes", "difference literals"];

/// A chunk whose patches keep their control triples in `ops` (five sections).
const CHUNK_INLINE: u8 = 1;
/// A chunk whose patches' control triples are in three sections of their own, one per
/// field, after the five: each field's numbers then compress among their like (on the
/// kernel pair the operations and controls come out 6 % smaller; every bench package
/// 0.2-0.4 %).
const CHUNK_SPLIT: u8 = 2;
/// Not a chunk: the stream's BTF map (see [`btf`]), at most once; encoders write it before
/// the first chunk.
const CHUNK_BTF_MAP: u8 = 3;

/// The control sections of a [`CHUNK_SPLIT`] chunk: each triple's `add`, `copy` and
/// zigzag `seek` as varints.
#[derive(Default)]
struct ControlSections {
    add: Vec<u8>,
    copy: Vec<u8>,
    seek: Vec<u8>,
}

/// A patch's fields, as [`put_patch`] writes them.
struct Patch {
    src: u64,
    off: u64,
    src_len: u64,
    len: u64,
    controls: Vec<Control>,
}

/// Reads a patch's fields, refusing sizes beyond the codec's limits before allocating; the
/// control triples come from `ctl` (add, copy, seek sections) when the chunk has them,
/// else from `ops`.
fn get_patch(ops: &mut &[u8], ctl: &mut Option<[&[u8]; 3]>) -> Result<Patch> {
    let (src, off, src_len, len, n) = (get(ops)?, get(ops)?, get(ops)?, get(ops)?, get(ops)?);
    if src_len > 2 * WINDOW + MAX_META_PATCH {
        return Err(bad(format!("patch source of {src_len} bytes is too large")));
    }
    // Saturating: `len` is a claim (the gzip path checks it only after this).
    if n > len.saturating_add(1) {
        return Err(bad("more patch steps than bytes"));
    }
    let mut controls = Vec::with_capacity(n.min(1 << 16) as usize);
    for _ in 0..n {
        let (add, copy, z) = match ctl {
            Some([a, c, s]) => (get(a)?, get(c)?, get(s)?),
            None => (get(ops)?, get(ops)?, get(ops)?),
        };
        let seek = ((z >> 1) as i64) ^ -((z & 1) as i64);
        controls.push(Control { add, copy, seek });
    }
    Ok(Patch {
        src,
        off,
        src_len,
        len,
        controls,
    })
}

/// Writes a patch: its fields to `ops`, its control triples to `ctl` (a
/// [`CHUNK_SPLIT`] chunk) or, without, to `ops` too (a [`CHUNK_INLINE`] chunk).
fn put_patch(
    ops: &mut Vec<u8>,
    ctl: Option<&mut ControlSections>,
    src: usize,
    off: u64,
    src_len: u64,
    len: u64,
    c: &[Control],
) {
    put(ops, src as u64);
    put(ops, off);
    put(ops, src_len);
    put(ops, len);
    put(ops, c.len() as u64);
    let zigzag = |seek: i64| ((seek << 1) ^ (seek >> 63)) as u64;
    match ctl {
        Some(ctl) => {
            for c in c {
                put(&mut ctl.add, c.add);
                put(&mut ctl.copy, c.copy);
                put(&mut ctl.seek, zigzag(c.seek));
            }
        }
        None => {
            for c in c {
                put(ops, c.add);
                put(ops, c.copy);
                put(ops, zigzag(c.seek));
            }
        }
    }
}

fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Rebuilds a layer from a `files` stream and the old layers it names, as a reader of the
/// layer's bytes. Every length is checked against limits before anything is allocated.
pub struct Decoder<'a, R> {
    input: R,
    /// The streams of the sections kept apart ([`APART`]), when they are.
    apart: [Option<R>; 2],
    old: Vec<&'a LayerData>,
    /// The chunk being read out, and how far.
    buf: Vec<u8>,
    pos: usize,
    started: bool,
    done: bool,
    /// The stream's BTF map, once read.
    btf: Option<Arc<btf::BtfMap>>,
    /// Buffers to reuse.
    spares: Arc<Spares>,
}

/// Spare byte buffers for a decoder's chunks, sections and differences: reusing them spares
/// the page faults of fresh multi-MiB allocations (about a tenth of apply's time on a layer
/// of new files). Holds at most [`MAX_SPARE_BYTES`].
#[derive(Default)]
struct Spares(Mutex<Vec<Vec<u8>>>);

/// Capacity [`Spares`] keeps at most.
const MAX_SPARE_BYTES: usize = 96 << 20;

impl Spares {
    /// An empty buffer for about `size` bytes: the smallest spare that holds them, else
    /// the largest spare (to grow), else a new one.
    fn take(&self, size: u64) -> Vec<u8> {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let fits = (0..g.len())
            .filter(|&i| g[i].capacity() as u64 >= size)
            .min_by_key(|&i| g[i].capacity());
        match fits.or_else(|| (0..g.len()).max_by_key(|&i| g[i].capacity())) {
            Some(i) => g.swap_remove(i),
            None => Vec::new(),
        }
    }

    /// Keeps `v` for reuse, if there is room.
    fn give(&self, mut v: Vec<u8>) {
        v.clear();
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let held: usize = g.iter().map(Vec::capacity).sum();
        if v.capacity() > 0 && held + v.capacity() <= MAX_SPARE_BYTES {
            g.push(v);
        }
    }
}

impl<'a, R: Read> Decoder<'a, R> {
    /// A decoder reading `input`, with `old[i]` the layer that `src` index `i` names.
    pub fn new(input: R, old: Vec<&'a LayerData>) -> Self {
        Decoder {
            input,
            apart: [None, None],
            old,
            buf: Vec::new(),
            pos: 0,
            started: false,
            done: false,
            btf: None,
            spares: Arc::default(),
        }
    }

    /// A decoder reading `input`, whose chunks' sections [`APART`]`[k]` are in `apart[k]`
    /// where given (as [`encode`] writes them when given those writers).
    pub fn with_apart(input: R, apart: [Option<R>; 2], old: Vec<&'a LayerData>) -> Self {
        Decoder {
            apart,
            ..Decoder::new(input, old)
        }
    }

    fn byte(&mut self) -> Result<u8> {
        let mut b = [0u8; 1];
        self.input.read_exact(&mut b).map_err(stream_error)?;
        Ok(b[0])
    }

    /// After the end tag: the input must end too. Reading it to its end lets a package blob
    /// check its size and digest (so a damaged blob is reported as that, not as a layer
    /// that hashes wrong), and refuses bytes after the stream.
    fn expect_end(&mut self) -> Result<()> {
        expect_end(&mut self.input, "")?;
        for (k, a) in self.apart.iter_mut().enumerate() {
            if let Some(a) = a {
                expect_end(a, &format!(" of {}", APART_NAMES[k]))?;
            }
        }
        Ok(())
    }

    fn varint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(bad("varint too long"))
    }

    /// Reads the next chunk's sections; `None` after the end of the stream.
    fn read_chunk(&mut self) -> Result<Option<RawChunk>> {
        if !self.started {
            let mut m = [0u8; 8];
            self.input.read_exact(&mut m).map_err(stream_error)?;
            if &m != MAGIC {
                return Err(bad("not a files delta stream (wrong magic)"));
            }
            self.started = true;
        }
        let mut tag = self.byte()?;
        while tag == CHUNK_BTF_MAP {
            if self.btf.is_some() {
                return Err(bad("a second BTF map"));
            }
            self.btf = Some(Arc::new(btf::BtfMap::read(&mut || self.varint())?));
            tag = self.byte()?;
        }
        let count = match tag {
            0 => {
                self.expect_end()?;
                self.done = true;
                return Ok(None);
            }
            CHUNK_INLINE => 5,
            CHUNK_SPLIT => 8,
            t => return Err(bad(format!("unknown chunk tag {t}"))),
        };
        let output = self.varint()?;
        if output > MAX_CHUNK_OUTPUT {
            return Err(bad(format!(
                "chunk output of {output} bytes exceeds the {MAX_CHUNK_OUTPUT}-byte limit"
            )));
        }
        let mut lens = [0u64; 8];
        for l in &mut lens[..count] {
            *l = self.varint()?;
            if *l > MAX_SECTION {
                return Err(bad(format!(
                    "chunk section of {l} bytes exceeds the {MAX_SECTION}-byte limit"
                )));
            }
        }
        let mut sections: Vec<Vec<u8>> = Vec::with_capacity(count);
        for (i, &l) in lens[..count].iter().enumerate() {
            let k = APART.iter().position(|&a| a == i);
            let (from, what) = match k.and_then(|k| Some((self.apart[k].as_mut()?, k))) {
                Some((a, k)) => (a, format!("the stream of {}", APART_NAMES[k])),
                None => (&mut self.input, "the stream".to_string()),
            };
            let mut s = self.spares.take(l);
            let n = from.take(l).read_to_end(&mut s).map_err(stream_error)?;
            if n as u64 != l {
                return Err(bad(format!("{what} ends early (truncated) inside a chunk")));
            }
            sections.push(s);
        }
        Ok(Some(RawChunk {
            output,
            sections,
            map: self.btf.clone(),
            spares: self.spares.clone(),
        }))
    }
}

impl Footprint for RawChunk {
    /// Its sections.
    fn held(&self) -> u64 {
        self.sections.iter().map(|s| s.capacity() as u64).sum()
    }

    /// Its sections, its output and its difference bytes (about the output).
    fn running(&self) -> u64 {
        self.held() + 2 * self.output
    }
}

impl Footprint for Vec<u8> {
    fn held(&self) -> u64 {
        self.capacity() as u64
    }
}

/// A chunk's sections as read from the stream, to be decoded on any thread.
struct RawChunk {
    /// The output it declares.
    output: u64,
    /// Its five ([`CHUNK_INLINE`]) or eight ([`CHUNK_SPLIT`]) sections.
    sections: Vec<Vec<u8>>,
    /// The stream's BTF map, if it has one.
    map: Option<Arc<btf::BtfMap>>,
    /// Where its buffers go back to, and its output comes from.
    spares: Arc<Spares>,
}

impl RawChunk {
    /// Rebuilds the chunk's bytes from `old` (`src` index `i` naming `old[i]`).
    fn decode(self, old: &[&LayerData]) -> Result<Vec<u8>> {
        let s = &self.sections;
        let mut out = self.spares.take(self.output);
        out.reserve_exact(self.output as usize);
        // Difference bytes cover the chunk's output, plus the text of gzip members.
        let mut diff = self.spares.take(self.output);
        expand_zeros(&s[2], &s[3], self.output + gz::MAX_RAW, &mut diff)?;
        let controls = (s.len() == 8).then(|| [&s[5][..], &s[6][..], &s[7][..]]);
        let streams = [&s[0][..], &s[1][..], &diff[..], &s[4][..]];
        run_ops(
            streams,
            controls,
            old,
            self.map.as_deref(),
            self.output,
            &mut out,
        )?;
        self.spares.give(diff);
        for s in self.sections {
            self.spares.give(s);
        }
        Ok(out)
    }
}

/// Runs a chunk's operations: `streams` are its ops, meta, difference bytes (expanded) and
/// extra; `controls` its control sections, if it has them ([`CHUNK_SPLIT`]); `map` the
/// stream's BTF map, if it has one.
fn run_ops(
    streams: [&[u8]; 4],
    mut controls: Option<[&[u8]; 3]>,
    old: &[&LayerData],
    map: Option<&btf::BtfMap>,
    output: u64,
    out: &mut Vec<u8>,
) -> Result<()> {
    let [mut ops, mut meta, mut diff, mut extra] = streams;
    // Gzip members are deflated after the operations around them, on every core (level-9
    // deflate is the slowest step of apply on a layer with many members).
    let (mut pending, mut pending_text) = (Vec::new(), 0usize);
    fn take<'s>(s: &mut &'s [u8], n: u64, what: &str) -> Result<&'s [u8]> {
        if n > s.len() as u64 {
            return Err(bad(format!("{what} section ends early")));
        }
        let (a, b) = s.split_at(n as usize);
        *s = b;
        Ok(a)
    }
    // The sources of patches, read into one buffer (fresh multi-MiB buffers cost page
    // faults).
    let mut source = Vec::new();
    let room = |out: &Vec<u8>, n: u64| -> Result<()> {
        // `n` is read from the stream: checked, since a claim near 2^64 would wrap.
        if (out.len() as u64)
            .checked_add(n)
            .is_none_or(|end| end > output)
        {
            return Err(bad("chunk writes more than its declared output"));
        }
        Ok(())
    };
    let layer = |src: u64| -> Result<&LayerData> {
        old.get(src as usize)
            .copied()
            .ok_or_else(|| bad(format!("old layer {src} is not in the layer's source list")))
    };
    while !ops.is_empty() {
        let op = ops[0];
        ops = &ops[1..];
        match op {
            OP_META | OP_LIT => {
                let len = get(&mut ops)?;
                room(out, len)?;
                let src = if op == OP_META { &mut meta } else { &mut extra };
                out.extend_from_slice(take(
                    src,
                    len,
                    if op == OP_META { "meta" } else { "extra" },
                )?);
            }
            OP_COPY => {
                let (src, off, len) = (get(&mut ops)?, get(&mut ops)?, get(&mut ops)?);
                room(out, len)?;
                let start = out.len();
                out.resize(start + len as usize, 0);
                layer(src)?.read_into(off, &mut out[start..])?;
            }
            OP_DIFF | OP_WDIFF | OP_BDIFF | OP_HDIFF => {
                let p = get_patch(&mut ops, &mut controls)?;
                room(out, p.len)?;
                layer(p.src)?.read_to(p.off, p.src_len, &mut source)?;
                if op == OP_BDIFF {
                    let map =
                        map.ok_or_else(|| bad("a BTF patch in a stream without a BTF map"))?;
                    btf::rewrite(&mut source, map);
                }
                let news = if op == OP_HDIFF {
                    &mut meta
                } else {
                    &mut extra
                };
                let differences = if op == OP_WDIFF || op == OP_BDIFF {
                    Differences::Words
                } else {
                    Differences::Bytes
                };
                bsdiff::patch(
                    &source,
                    &p.controls,
                    differences,
                    &mut diff,
                    news,
                    p.len,
                    out,
                )?;
            }
            OP_GZIP => {
                gz::require_remake("a gzip member of the layer")?;
                let level = get(&mut ops)?;
                if !(1..=9).contains(&level) {
                    return Err(bad(format!("gzip level {level} is not 1-9")));
                }
                let header_len = get(&mut ops)?;
                if header_len > 4096 + 11 {
                    return Err(bad("gzip header too long"));
                }
                let header = take(&mut meta, header_len, "meta")?.to_vec();
                let raw = match get(&mut ops)? {
                    GZ_TEXT => {
                        let n = get(&mut ops)?;
                        if n > gz::MAX_RAW {
                            return Err(bad(format!("gzip text of {n} bytes is too large")));
                        }
                        take(&mut extra, n, "extra")?.to_vec()
                    }
                    GZ_PATCH => {
                        let p = get_patch(&mut ops, &mut controls)?;
                        if p.len > gz::MAX_RAW {
                            return Err(bad(format!("gzip text of {} bytes is too large", p.len)));
                        }
                        let member = layer(p.src)?.read(p.off, p.src_len)?;
                        let source = gz::inflate_member(&member).ok_or_else(|| {
                            bad(format!(
                                "the old gzip member at offset {} of old layer {} does not inflate",
                                p.off, p.src
                            ))
                        })?;
                        let mut raw = Vec::new();
                        bsdiff::patch(
                            &source,
                            &p.controls,
                            Differences::Bytes,
                            &mut diff,
                            &mut extra,
                            p.len,
                            &mut raw,
                        )?;
                        raw
                    }
                    m => return Err(bad(format!("unknown gzip mode {m}"))),
                };
                pending_text += raw.len();
                pending.push(PendingGzip {
                    at: out.len(),
                    header,
                    raw,
                    level: level as u32,
                });
                if pending_text > MAX_PENDING_TEXT {
                    flush_gzip(&mut pending, out, output)?;
                    pending_text = 0;
                }
            }
            o => return Err(bad(format!("unknown operation {o}"))),
        }
    }
    flush_gzip(&mut pending, out, output)?;
    let controls_left = controls.is_some_and(|c| c.iter().any(|s| !s.is_empty()));
    if out.len() as u64 != output
        || !meta.is_empty()
        || !diff.is_empty()
        || !extra.is_empty()
        || controls_left
    {
        return Err(bad("chunk sections do not add up to its output"));
    }
    Ok(())
}

/// A gzip member [`run_ops`] has yet to deflate: where it goes in the output, and what
/// makes it.
struct PendingGzip {
    at: usize,
    header: Vec<u8>,
    raw: Vec<u8>,
    level: u32,
}

/// Text of pending gzip members past which [`run_ops`] deflates them before going on, so
/// that a chunk of many members holds at most this much text besides its output.
const MAX_PENDING_TEXT: usize = 16 << 20;

/// Deflates the pending gzip members, on every core, and puts each where it goes in `out`,
/// refusing output past the chunk's declared `output`.
fn flush_gzip(pending: &mut Vec<PendingGzip>, out: &mut Vec<u8>, output: u64) -> Result<()> {
    if pending.is_empty() {
        return Ok(());
    }
    let one = |p: &PendingGzip| {
        let mut m = Vec::with_capacity(p.header.len() + p.raw.len() / 2 + 64);
        gz::rebuild(&p.header, &p.raw, p.level, &mut m);
        m
    };
    let text: usize = pending.iter().map(|p| p.raw.len()).sum();
    let workers = crate::threads::threads();
    let members: Vec<Vec<u8>> = if pending.len() == 1 || workers == 1 || text < 1 << 18 {
        pending.iter().map(one).collect()
    } else {
        // Each worker takes the next member as soon as it is free (sizes differ widely).
        let next = AtomicUsize::new(0);
        let pending = &pending[..];
        let done = on_every_core(workers.min(pending.len()), |_| {
            let mut mine = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(p) = pending.get(i) else {
                    return Ok(mine);
                };
                mine.push((i, one(p)));
            }
        })?;
        let mut done: Vec<(usize, Vec<u8>)> = done.into_iter().flatten().collect();
        done.sort_unstable_by_key(|d| d.0);
        done.into_iter().map(|d| d.1).collect()
    };
    let total = out.len() + members.iter().map(Vec::len).sum::<usize>();
    if total as u64 > output {
        return Err(bad("chunk writes more than its declared output"));
    }
    let mut all = Vec::with_capacity(total);
    let mut from = 0;
    for (p, m) in pending.iter().zip(&members) {
        all.extend_from_slice(&out[from..p.at]);
        all.extend_from_slice(m);
        from = p.at;
    }
    all.extend_from_slice(&out[from..]);
    *out = all;
    pending.clear();
    Ok(())
}

/// Zero runs shorter than this inside non-zero bytes stay in the literals.
const MIN_ZERO_RUN: usize = 4;

/// Splits difference bytes (mostly zeros) into `runs` (pairs of varints: zeros, then
/// literal length) and `lits` (the non-zero stretches), so that the package compressor
/// works on a few MiB instead of the whole patched size.
fn squeeze_zeros(diff: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let (mut runs, mut lits) = (Vec::new(), Vec::new());
    let mut i = 0;
    while i < diff.len() {
        let zeros = diff[i..].iter().take_while(|&&b| b == 0).count();
        let start = i + zeros;
        let mut end = start;
        while end < diff.len() {
            if diff[end] != 0 {
                end += 1;
                continue;
            }
            let z = diff[end..]
                .iter()
                .take(MIN_ZERO_RUN)
                .take_while(|&&b| b == 0)
                .count();
            if z >= MIN_ZERO_RUN || end + z == diff.len() {
                break;
            }
            end += z;
        }
        put(&mut runs, zeros as u64);
        put(&mut runs, (end - start) as u64);
        lits.extend_from_slice(&diff[start..end]);
        i = end;
    }
    (runs, lits)
}

/// Inverse of [`squeeze_zeros`], refusing to grow past `max` bytes.
fn expand_zeros(runs: &[u8], lits: &[u8], max: u64, out: &mut Vec<u8>) -> Result<()> {
    out.clear();
    let (mut runs, mut lits) = (runs, lits);
    while !runs.is_empty() {
        let (zeros, n) = (get(&mut runs)?, get(&mut runs)?);
        if (out.len() as u64).saturating_add(zeros).saturating_add(n) > max {
            return Err(bad("difference bytes exceed the chunk's output"));
        }
        if n > lits.len() as u64 {
            return Err(bad("difference literals end early"));
        }
        // Grow as a Vec would (doubling), but never past `max`: the claimed sizes are the
        // stream's, and doubling near the limit would reserve up to twice the bound.
        let need = out.len() + zeros as usize + n as usize;
        if need > out.capacity() {
            let target = need.max(out.capacity().saturating_mul(2)).min(max as usize);
            out.reserve_exact(target - out.len());
        }
        out.resize(out.len() + zeros as usize, 0);
        out.extend_from_slice(&lits[..n as usize]);
        lits = &lits[n as usize..];
    }
    if !lits.is_empty() {
        return Err(bad("unused difference literals"));
    }
    Ok(())
}

/// Reads `input` to its end, which must come now: reading it lets a package blob check its
/// size and digest, and bytes after the stream are refused.
fn expect_end(input: &mut impl Read, what: &str) -> Result<()> {
    let mut b = [0u8; 1];
    loop {
        match input.read(&mut b) {
            Ok(0) => return Ok(()),
            Ok(_) => return Err(bad(format!("data after the end of the stream{what}"))),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(stream_error(e)),
        }
    }
}

/// An error reading the stream: the end of the input inside it is a damaged stream (a codec
/// error naming that), anything else keeps its own kind (a package blob's digest mismatch,
/// a limit, I/O).
fn stream_error(e: io::Error) -> Error {
    // `read_exact` and this decoder's own length checks make a bare UnexpectedEof; an error
    // from below (the blob reader, a decompressor) carries a payload and keeps it.
    if e.kind() == io::ErrorKind::UnexpectedEof && e.get_ref().is_none() {
        bad("the stream ends early (truncated)")
    } else {
        Error::io("files delta stream", e)
    }
}

fn bad(reason: impl Into<String>) -> Error {
    Error::Codec {
        codec: "files".into(),
        reason: reason.into(),
    }
}

fn get(s: &mut &[u8]) -> Result<u64> {
    let mut v = 0u64;
    for (i, &b) in s.iter().enumerate().take(10) {
        v |= ((b & 0x7f) as u64) << (7 * i);
        if b & 0x80 == 0 {
            *s = &s[i + 1..];
            return Ok(v);
        }
    }
    Err(bad("truncated or overlong varint in operations"))
}

impl<R: Read> Read for Decoder<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            match self.read_chunk().map_err(Error::into_io)? {
                Some(raw) => {
                    self.spares.give(std::mem::take(&mut self.buf));
                    self.buf = raw.decode(&self.old).map_err(Error::into_io)?;
                    self.pos = 0;
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.buf.len() - self.pos);
        buf[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests;
