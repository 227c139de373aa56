//! The file-aware layer codec (method `files`).
//!
//! A changed layer is rebuilt from the regular files of **all** old layers. Each file of the
//! new layer gets the best source the old image has:
//!
//! 1. the same content (by SHA-256), at the same path if it is there, else anywhere:
//!    copied, nothing stored (a tar header equal to its source's is copied too, and copies
//!    of consecutive old bytes are one, so a run of unchanged files is one copy);
//! 2. the same path (the topmost old layer that has it);
//! 3. the same path with version numbers folded (`libssl.so.3.0.11` ~ `libssl.so.3.0.15`,
//!    `pkg-2.1.4.dist-info/RECORD` ~ `pkg-2.2.0.dist-info/RECORD`, `/lib/modules/6.1.0-50-amd64/…`
//!    ~ `/lib/modules/6.1.0-56-amd64/…`), closest size first;
//! 4. the same file name elsewhere (a moved file), closest size first;
//! 5. for a file of 1 MiB or more, a file of the same directory and extension within twice
//!    its size, closest size first (libraries that wheels name by a hash);
//!
//! unless its content says another old file is clearly likelier than the one rules 2-5
//! name, or than none (code moved to another package, a bundle renamed; see
//! `likeness.rs`): that one then. It is stored as a bsdiff-class patch against it (a text
//! file of 1 MiB or more that its source leaves much unmatched is also searched for in the
//! stretch of old layer around the source, as long as the file on either side, and the
//! cheaper patch kept: bundles move code between the files a package builds), or
//! literally when it has no source, is itself one compressed stream (a patch of compressed bytes saves nothing; zip archives are
//! not: their unchanged members keep their bytes), or when the patch, compressed, would
//! cost nine tenths of the bytes or more (see `encode::patch_pays`). A gzip member that zlib
//! re-makes byte for byte is shipped as its text instead, patched against the old member's
//! text, and deflated again by the decoder (see [`gz`]); a zip archive (a jar, a wheel) of at
//! most [`WINDOW`] bytes is shipped with the deflated members that zlib re-makes expanded
//! to their text (up to [`WINDOW`] in all), patched against the old archive expanded, and its members
//! deflated again by the decoder (see [`zip`]). An x86-64 or AArch64 program or library is
//! patched against its old build with the old build's calls, jumps (and on x86-64
//! RIP-relative operands) first pointed where the patch's matches say their targets went
//! (see `refs.rs`); the bytes shipped as they are of such a file (the file or a piece of it
//! shipped whole, a patch's new bytes) go with their calls made absolute (see `calls.rs`).
//! A kernel module is patched against
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
//!         | 0x08 layout zip                           ZIP: an archive's expanded bytes, then
//!                                                     each member's text deflated again
//!         | 0x09 patch code                           XDIFF: as DIFF, the source's machine
//!                                                     code references first projected by
//!                                                     the patch's own matches (refs::Projection)
//!         | 0x0A calls                               CALLS: not an operation; the next one
//!                                                     (LIT, DIFF or XDIFF) ships new bytes of
//!                                                     machine code with their calls absolute
//!                                                     (calls::Calls)
//!         | 0x0B tables                              TABLES: not an operation; the next one
//!                                                     (LIT, DIFF or XDIFF) ships new bytes of
//!                                                     sorted tables with their fields as
//!                                                     differences (tables::Tables); after
//!                                                     CALLS if both are there
//!         | 0x0C tables                              SOURCE TABLES: not an operation; right
//!                                                     after a TABLES, before a DIFF or XDIFF:
//!                                                     the patch's source has these tables
//!                                                     rewritten (offsets into the source),
//!                                                     and the TABLES puts back every field
//!                                                     of the output's, not only new bytes'
//! calls   = varint(origin) code                       where the next operation's output
//!                                                     starts in its file, and the file's
//!                                                     code ranges as offsets into that output
//! tables  = varint(n) n*(varint(gap) varint(len) varint(kind))
//!                                                     the tables in the next operation's
//!                                                     output (kind 1: pairs of 32-bit
//!                                                     fields, 2: ELF64 Rela: whole entries
//!                                                     from the second; 3: .eh_frame's
//!                                                     records, 4: Go's _func records, 5: Go's
//!                                                     pc-value tables),
//!                                                     gaps from the end of the one before
//! code    = varint(arch) varint(n) n*(varint(gap) varint(len))
//!                                                     the source's code ranges (arch 1:
//!                                                     x86-64, 2: AArch64), in order, gaps
//!                                                     from the end of the one before
//! gz      = 0x00 varint(text_len)                     the text from extra
//!         | 0x01 patch                                the text patched against the text
//!                                                     of the old gzip member it names
//! layout  = varint(n) n*(varint(raw) varint(text) varint(remade)) varint(tail)
//!                                                     the expanded bytes are, n times, `raw`
//!                                                     bytes kept as they are and the `text` of
//!                                                     a member re-made as `remade` says, then
//!                                                     `tail` bytes kept (see zip::Layout):
//!                                                     1-9 deflated again at that level; 0 or
//!                                                     9 + zigzag(k - predicted) the stream of
//!                                                     the old archive's member k, copied
//!                                                     (zip::Remade::Old, zip::predicted_old)
//! zip     = 0x00 varint(len)                          the expanded bytes from extra
//!         | 0x01 patch                                the expanded bytes patched against the
//!                                                     old archive the patch names, expanded
//!                                                     by zip::expand
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
//! # Code
//!
//! - `matching.rs`: where the old files are, and which one each new file is made from;
//! - `likeness.rs`: the old files' content samples, which say what a changed file resembles;
//! - `plan.rs`: the new layer cut into regions, each with its source and how it is made;
//! - `encode.rs`: [`encode`](encode()), the regions grouped into chunks and encoded, each
//!   chunk checked by decoding it again;
//! - `estimate.rs`: how many new bytes a layer's stream will hold, estimated as its chunks
//!   are encoded;
//! - `schedule.rs`: the threads that encode and decode chunks in order, within a memory
//!   budget ([`CHUNK_MEMORY`], [`DECODE_MEMORY`]);
//! - `stream.rs`: the pieces of the stream above (tags, patches, varints, zero runs);
//! - `decode.rs`: [`Decoder`] and [`with_parallel_reader`], which rebuild the layer;
//! - the public submodules: reading layers ([`access`], [`tarscan`]), placing pieces of big
//!   files ([`align`]), patches ([`bsdiff`]), gzip members ([`gz`]), zip archives
//!   ([`zip`]), kernel modules' BTF ([`btf`]);
//! - `refs.rs`: machine code's relative references, projected for a patch;
//! - `calls.rs`: new bytes of machine code, their calls made absolute;
//! - `tables.rs`: new bytes of sorted tables, their fields as differences.
//!
//! [`LayerSource::Files`]: crate::delta::format::LayerSource::Files

pub mod access;
pub mod align;
pub mod bsdiff;
pub mod btf;
pub mod gz;
pub mod tarscan;
pub mod zip;

mod calls;
mod decode;
mod encode;
mod estimate;
mod likeness;
mod matching;
mod plan;
mod refs;
mod schedule;
mod stream;
mod tables;

pub use access::LayerData;
pub use decode::{with_parallel_reader, Beside, Decoder};
pub use encode::encode;
pub use stream::APART;
use tarscan::TarIndex;

/// The first bytes of a `files` blob.
pub const MAGIC: &[u8; 8] = b"DDFILES1";
/// Largest piece of a file a decoder accepts diffed at once (the source window is up to
/// twice this). Encoders diff a file and its source whole when neither is larger, else in
/// pieces of half this, each against the source from half this before it to half this
/// after it (see [`CHUNK_MEMORY`]).
pub const WINDOW: u64 = 16 << 20;
/// Memory the chunks being encoded, and encoded ahead of the writer, may take together,
/// however many threads encode them. A chunk's share is its difference searches (a suffix
/// array of the source, 4 bytes a byte, the filter of its 8-byte strings, half a byte a
/// byte, plus source, target and output: about 5.5 times the source plus 3 times the
/// target, the largest of its regions, see [`bsdiff::search_memory`]; a whole 16 MiB file
/// against a 16 MiB source takes 136 MiB, an 8 MiB piece of a larger file against its
/// 24 MiB window 156 MiB) beside its output (the sections made), or, while it is decoded
/// again, three times its output and a source (see `ChunkJob::running`); an encoded chunk
/// then holds its bytes until written. A chunk that does not fit beside the others waits;
/// one larger than the whole runs alone.
///
/// Beside it the payload lanes' encoders hold at most
/// [`LANE_MEMORY`](crate::delta::format::LANE_MEMORY) while layers are being encoded (the
/// new bytes' lane waits for the searches to end before its zstd window grows past its
/// share), so create stays under 512 MiB on any number of threads and whatever the mix of
/// new bytes and searches: 391 MiB on the go pair (260 MB of new bytes), 466 on the ml
/// pair (the most searches), 463 on an image holding both their new layers (580 before
/// the lanes had a share). A search frees its suffix array before anything else it makes
/// takes memory, and holds no copy of a patch or of its source beside the one it needs,
/// so that what it holds at its peak is what its share counts (478 MiB on the ml pair
/// before: the estimates and the pruned patch beside the suffix array, about 30 MiB past
/// a piece's share). The budget was 192 MiB while the new bytes' window was 16 MiB
/// (two cores keep as busy with 144: the large searches ran one at a time with 192 too),
/// then 144 MiB until the searches asked a filter first (12 MiB more for a piece's).
/// Measured on the kernel pair with a changed 256 MiB file added to its layer, with
/// 2, 4 and 8 threads on two cores: before this limit (only the searches were limited, to
/// 160 MiB) 487, 621 and 833 MiB; see docs/BENCHMARKS.md for the numbers with it.
pub const CHUNK_MEMORY: u64 = 156 << 20;
/// Memory the chunks being decoded, and decoded ahead of the reader, may take together
/// (apply's counterpart of [`CHUNK_MEMORY`]): their sections, outputs and difference
/// bytes.
pub const DECODE_MEMORY: u64 = 96 << 20;
/// Output bytes per chunk (a chunk may exceed it by one region of up to [`WINDOW`]).
pub const CHUNK: u64 = 8 << 20;
/// Output bytes of a stream's first chunk; the next ones double up to [`CHUNK`]. Apply's
/// writing side hashes nothing until the first chunk is decoded whole: an 8 MiB first
/// chunk of patched programs kept it waiting 30-40 ms on two cores, a sixth of a 100 MB
/// layer's apply.
pub const FIRST_CHUNK: u64 = 1 << 20;
/// Largest chunk output a decoder accepts.
pub const MAX_CHUNK_OUTPUT: u64 = CHUNK + WINDOW + (1 << 20);
/// Largest chunk section (ops, meta, diff or extra) a decoder accepts.
pub const MAX_SECTION: u64 = 4 * MAX_CHUNK_OUTPUT;

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
    /// Zip archives considered for shipping expanded (see [`zip`]).
    pub files_zip: u64,
    /// Kernel modules patched with their BTF renumbered first (see [`btf`]).
    pub files_btf: u64,
    /// Patches of x86-64 programs and libraries (or of their pieces) made against the old
    /// build with its references projected (see `refs.rs`).
    pub patches_projected: u64,
    /// Files shipped whole, pieces of them and patches whose new bytes of machine code
    /// went with their calls made absolute (see `calls.rs`).
    pub calls_absolute: u64,
    /// Files shipped whole, pieces of them and patches whose new bytes of sorted tables
    /// went with their fields as differences (see `tables.rs`).
    pub tables_as_differences: u64,
    /// Patches made with their source's tables and the new file's rewritten alike, every
    /// field (see `tables.rs`).
    pub patches_with_source_tables: u64,
    /// Bytes of the new layer rebuilt by copying.
    pub bytes_copied: u64,
    /// Bytes of the encoded stream (before package compression).
    pub encoded_size: u64,
    /// Bytes written to the streams of the sections kept apart ([`APART`]), when there are
    /// such streams (before package compression).
    pub apart_sizes: [u64; 2],
    /// The old layers the stream draws on, as indexes into the `old` slice given to
    /// [`encode`](encode()); source number `i` in the stream is `sources[i]`, so the decoder is
    /// given exactly these layers, in this order.
    pub sources: Vec<usize>,
}

#[cfg(test)]
mod tests;
