//! Encoding: [`encode`] plans a layer, groups its regions into chunks, encodes them on
//! every core into the stream's sections and checks that each chunk decodes back to the
//! layer's bytes.

use std::io::{self, Write};
use std::sync::{Arc, Mutex, MutexGuard};

use sha2::{Digest as _, Sha256};

use super::bsdiff::{self, Streams};
use super::btf;
use super::calls::Calls;
use super::decode::decode_chunk;
use super::estimate::{NewBytes, Shares};
use super::gz;
use super::matching::Catalog;
use super::plan::{learn_btf, plan, renumber_sources, Region};
use super::refs;
use super::schedule::{in_order_parallel, Footprint};
use super::stream::{
    get, put, put_patch, squeeze_zeros, ControlSections, APART, CHUNK_BTF_MAP, CHUNK_SPLIT,
    GZ_PATCH, GZ_TEXT, MAX_META_PATCH, OP_BDIFF, OP_CALLS, OP_COPY, OP_DIFF, OP_GZIP, OP_HDIFF,
    OP_LIT, OP_META, OP_SOURCE_TABLES, OP_TABLES, OP_WDIFF, OP_XDIFF, OP_ZIP, ZIP_PATCH, ZIP_TEXT,
};
use super::tables::Tables;
use super::zip;
use super::{EncodeStats, LayerData, OldLayer, CHUNK, CHUNK_MEMORY, FIRST_CHUNK, MAGIC};
use crate::digest::Digest;
use crate::error::{Error, Result};

/// Encodes `new` against `old` into `out`, the chunks' new bytes (their `extra` sections)
/// and difference literals (`lits`) into `apart[0]` and `apart[1]` if given (see
/// [`APART`]), else in the chunks; `progress` is told of each chunk's output
/// bytes as it is written, and `new_bytes` of how many new bytes the whole layer's stream
/// is expected to hold, and of those how many all but surely, once the layer is planned
/// and again as each chunk is encoded (from the encoding threads, chunks in any order):
/// the bytes shipped whole (and those patched against a source that shares next to
/// nothing with them), and for the bytes searched against a source in chunks not encoded
/// yet the share the encoded ones left unmatched (their lower median, once there are two;
/// see `estimate.rs`).
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
    new_bytes: &(dyn Fn(u64, u64) + Sync),
) -> Result<EncodeStats> {
    let cat = Catalog::new(old)?;
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
    // Group regions into chunks of about CHUNK output bytes, the first ones smaller (see
    // FIRST_CHUNK).
    let mut chunks: Vec<ChunkJob<'_>> = Vec::new();
    let (mut start, mut acc, mut at) = (0usize, 0u64, 0u64);
    for (i, r) in regions.iter().enumerate() {
        // A gzip member's or an archive's text passes through memory too: count the
        // larger of the two.
        acc += r.text_len();
        let limit = CHUNK.min(FIRST_CHUNK << chunks.len().min(16));
        if acc >= limit || i + 1 == regions.len() {
            let job = ChunkJob::new(&regions[start..=i], at);
            at += job.output;
            chunks.push(job);
            start = i + 1;
            acc = 0;
        }
    }
    let estimate = Mutex::new(NewBytes::new(Shares::of(&regions)));
    {
        let estimate = lock(&estimate);
        let (expected, sure) = (estimate.expected(), estimate.sure());
        tracing::debug!(expected, sure, "new bytes expected of the layer");
        new_bytes(expected, sure);
    }
    let io_err = |e: io::Error| Error::io("files delta output", e);
    out.write_all(MAGIC).map_err(io_err)?;
    let mut written = MAGIC.len() as u64;
    out.write_all(&map_bytes).map_err(io_err)?;
    written += map_bytes.len() as u64;
    // Chunks are encoded on every core and written in order. A worker takes the next chunk
    // as soon as it is free (chunks differ widely in cost: a copied file is free, a patched
    // one is not), as memory allows (see CHUNK_MEMORY). Up to 16 chunks a worker may be
    // done ahead of the one the writer waits for: a chunk of slow patches (distant versions
    // of programs, searched at every byte) can take seconds, and with 2 a worker the other
    // core sat idle behind it (the tools pair: create 36.5 -> 33.4 s, the same package);
    // what they hold still counts in the memory budget. The workers run at a lower
    // priority than the payload lanes' encoders (`threads::yield_to_lanes`).
    //
    // Each chunk is decoded again by the worker that made it and compared with the layer's
    // bytes; the writer hashes the layer's bytes in order, which must give its diff_id.
    let workers = crate::threads::threads();
    let mut hasher = Sha256::new();
    let mut rebuilt = 0u64;
    let mut layer_bytes = Vec::new();
    let split = [apart[0].is_some(), apart[1].is_some()];
    // What each section holds over the layer (uncompressed), for the debug log: where a
    // package's bytes go.
    let mut section_totals = [0u64; 8];
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
        stats.patches_projected += chunk.projected;
        stats.calls_absolute += chunk.calls;
        stats.tables_as_differences += chunk.tables;
        stats.patches_with_source_tables += chunk.source_tables;
        for (t, n) in section_totals.iter_mut().zip(chunk.sections) {
            *t += n;
        }
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
        16 * workers,
        CHUNK_MEMORY,
        crate::threads::yield_to_lanes,
        move || Ok(jobs.next()),
        |job: ChunkJob<'_>| {
            let chunk = encode_chunk(job.regions, &refs, &new.data, &map, split)?;
            {
                // Told under the lock, so that what it is told last is the latest.
                let mut estimate = lock(&estimate);
                estimate.encoded(job.shares, chunk.sections[APART[0]]);
                let (expected, sure) = (estimate.expected(), estimate.sure());
                tracing::trace!(at = job.at, expected, sure, "new bytes expected");
                new_bytes(expected, sure);
            }
            let decoded = decode_chunk(&chunk, &refs, &map)?;
            same_as_layer(&decoded, job.output, &new.data, job.at)?;
            Ok(chunk)
        },
        &mut write,
    )?;
    out.write_all(&[0]).map_err(io_err)?;
    stats.encoded_size = written + 1;
    let [ops, meta, runs, lits, extra, adds, copies, seeks] = section_totals;
    tracing::debug!(
        ops,
        meta,
        runs,
        lits,
        extra,
        adds,
        copies,
        seeks,
        "files codec sections (bytes before compression)"
    );
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
pub(super) struct ChunkJob<'r> {
    regions: &'r [Region],
    at: u64,
    output: u64,
    /// What its regions bring to the new bytes (for the estimate).
    shares: Shares,
}

impl<'r> ChunkJob<'r> {
    pub(super) fn new(regions: &'r [Region], at: u64) -> ChunkJob<'r> {
        let output = regions.iter().map(Region::len).sum();
        ChunkJob {
            regions,
            at,
            output,
            shares: Shares::of(regions),
        }
    }
}

/// The estimate, locked (one that a panicking thread held is whole: each update is one
/// call).
fn lock(estimate: &Mutex<NewBytes>) -> MutexGuard<'_, NewBytes> {
    estimate.lock().unwrap_or_else(|e| e.into_inner())
}

impl Footprint for ChunkJob<'_> {
    /// Nothing until it runs.
    fn held(&self) -> u64 {
        0
    }

    /// Its regions are searched one after the other, each beside the sections the ones
    /// before it made (the largest search counts: it holds the region's bytes and what its
    /// patch makes); then the chunk is decoded again, its sections beside their copy in
    /// the decoder and the bytes rebuilt, and one region's source read at a time. The
    /// sections, the copy and the bytes rebuilt are each at most the output (a gzip member
    /// or a zip archive counted as its text where that is longer).
    ///
    /// The two phases never overlap, so the larger counts, not their sum: counting both
    /// (the search beside three times the output) kept the tools pair's second chunk (a
    /// 73 MiB search in 16.5 MB of output) from starting beside the first (61 MiB then),
    /// and one core idle for the first 2.2 s of the encoding.
    fn running(&self) -> u64 {
        let search = self.regions.iter().map(Region::search_memory).max();
        let source = self.regions.iter().map(Region::decode_source).max();
        let text: u64 = self.regions.iter().map(|r| r.text_len() - r.len()).sum();
        let made = self.output + text;
        (made + search.unwrap_or(0)).max(3 * made + source.unwrap_or(0))
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
pub(super) const LAYER_PIECE: u64 = 1 << 20;

/// Reads the `len` bytes of the layer from `at` piece by piece into `buf`, giving each
/// piece and its offset to `f`.
pub(super) fn layer_pieces(
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
pub(super) fn same_as_layer(decoded: &[u8], len: u64, layer: &LayerData, at: u64) -> Result<()> {
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

/// An encoded chunk: its bytes in the stream and, when they go to a stream of their own,
/// its new bytes (its `extra` section).
pub(super) struct Chunk {
    pub(super) bytes: Vec<u8>,
    /// The bytes it rebuilds.
    output: u64,
    /// The sections kept apart ([`APART`]), if they are.
    pub(super) apart: [Option<Vec<u8>>; 2],
    /// The length of each of its eight sections.
    sections: [u64; 8],
    /// Its patches of machine code made against projected references (`XDIFF`).
    projected: u64,
    /// Its operations whose new bytes of machine code have their calls absolute (`CALLS`).
    calls: u64,
    /// Its operations whose new bytes of sorted tables have their fields as differences
    /// (`TABLES`).
    tables: u64,
    /// Its patches whose source had its tables rewritten too (`SOURCE TABLES`).
    source_tables: u64,
}

/// Writes a CALLS operation for the operation that follows, if `rewrite` (making the calls
/// of that operation's new bytes absolute, see [`calls`](super::calls)) rewrote any; counts
/// it in `written`.
fn put_calls(
    ops: &mut Vec<u8>,
    calls: Option<&Calls>,
    written: &mut u64,
    rewrite: impl FnOnce(&Calls) -> usize,
) {
    if let Some(c) = calls {
        if rewrite(c) > 0 {
            ops.push(OP_CALLS);
            c.write(ops);
            *written += 1;
        }
    }
}

/// Writes a TABLES operation for the operation that follows, if `rewrite` (taking the
/// fields of that operation's new bytes of sorted tables as differences, see
/// [`tables`](super::tables)) rewrote any; counts it in `written`.
fn put_tables(
    ops: &mut Vec<u8>,
    tables: Option<&Tables>,
    written: &mut u64,
    rewrite: impl FnOnce(&Tables) -> usize,
) {
    if let Some(t) = tables {
        if rewrite(t) > 0 {
            ops.push(OP_TABLES);
            t.write(ops);
            *written += 1;
        }
    }
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
    let mut chunk_projected = 0;
    let mut chunk_calls = 0;
    let mut chunk_tables = 0;
    let mut chunk_source_tables = 0;
    for r in regions {
        output += r.len();
        match *r {
            Region::Meta { off, len, src } => {
                let bytes = new.read(off, len)?;
                match src {
                    Some((l, soff, slen)) if len <= MAX_META_PATCH && slen <= MAX_META_PATCH => {
                        let source = old[l].read(soff, slen)?;
                        let s = bsdiff::diff(&source, &bytes)?;
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
                span,
                ref code,
                unlike: _,
                ref calls,
                ref tables,
                ref src_tables,
            } => {
                let mut bytes = new.read(off, len)?;
                let read_source = || -> Result<Vec<u8>> {
                    let mut source = old[src].read(src_off, src_len)?;
                    if btf {
                        btf::rewrite(&mut source, map);
                    }
                    Ok(source)
                };
                let first = read_source()?;
                let mut s = bsdiff::diff(&first, &bytes)?;
                // The source is held only while it is needed, and read again if it is
                // needed after the stretch's search: a search holds what
                // `Region::search_memory` counts, and no more.
                let mut source = Some(first);
                // Where the patch's source is, as written.
                let (mut at, mut at_len) = (src_off, src_len);
                // A file its source leaves much unmatched is searched for in the stretch
                // around the source too; the cheaper patch is kept.
                if let Some((span_off, span_len)) =
                    span.filter(|_| s.extra.len() as u64 * WIDEN_UNMATCHED >= len)
                {
                    source = None;
                    let wide = old[src].read(span_off, span_len)?;
                    let mut w = bsdiff::diff(&wide, &bytes)?;
                    // The decoder reads only the part of the stretch the patch reads.
                    let (part, end) = bsdiff::narrow(&mut w.controls, span_len);
                    // (Both against the same bytes: their costs compare as their ratios.)
                    if patch_cost(&w) < patch_cost(&s) {
                        (s, at, at_len) = (w, span_off + part, end - part);
                    }
                }
                // Machine code: the patch's difference bytes taken against the source with
                // its references projected where its matches say their targets went, if
                // those come out smaller (see `refs`).
                let mut projected = false;
                // The projected source, kept for the tables below if they may take it.
                let mut moved_source = None;
                let code = code.as_ref().filter(|c| !c.ranges.is_empty());
                if let Some(code) = code.filter(|_| at == src_off && !relocatable) {
                    // Not needed past this (relocatable objects are not projected).
                    let mut moved = source.take().map_or_else(&read_source, Ok)?;
                    refs::Projection::from_controls(&s.controls, code).apply(&mut moved);
                    if let Some(d) = bsdiff::byte_differences(&moved, &bytes, &s.controls) {
                        if quick_size(&d) < quick_size(&s.diff) {
                            (s.diff, projected) = (d, true);
                            if tables.is_some() && src_tables.is_some() {
                                moved_source = Some(moved);
                            }
                        }
                    }
                }
                // Tables: the difference bytes taken with the tables of the source and of
                // the file's bytes both rewritten, every field (see `tables`), if those come
                // out smaller: a table whose entries all moved by the same amount differs
                // in every entry as it is, and in next to none rewritten.
                let mut source_tables = None;
                if let (Some(t), Some(st)) = (tables.as_ref(), src_tables.as_ref()) {
                    if at == src_off && !relocatable {
                        // The source as the patch reads it: projected, if XDIFF won.
                        let mut rewritten = match moved_source.take() {
                            Some(moved) => moved,
                            None => source.take().map_or_else(&read_source, Ok)?,
                        };
                        st.to_differences(&mut rewritten);
                        let mut whole = bytes.clone();
                        t.to_differences(&mut whole);
                        let differences = bsdiff::byte_differences(&rewritten, &whole, &s.controls);
                        if let Some(d) = differences {
                            if quick_size(&d) < quick_size(&s.diff) {
                                s.diff = d;
                                let mut o = 0;
                                s.extra.clear();
                                for c in &s.controls {
                                    o += c.add as usize;
                                    let run = whole.get(o..o + c.copy as usize);
                                    s.extra.extend_from_slice(run.unwrap_or_default());
                                    o += c.copy as usize;
                                }
                                source_tables = Some(st);
                            }
                        }
                    }
                }
                if !patch_wins(&bytes, &s) {
                    // Hardly anything matched, or what matched differs in so many bytes
                    // that the bytes alone are cheaper.
                    put_calls(&mut ops, calls.as_ref(), &mut chunk_calls, |c| {
                        c.to_absolute(&mut bytes, 0)
                    });
                    put_tables(&mut ops, tables.as_ref(), &mut chunk_tables, |t| {
                        t.to_differences(&mut bytes)
                    });
                    ops.push(OP_LIT);
                    put(&mut ops, len);
                    extra.extend_from_slice(&bytes);
                } else {
                    // Words only for relocatable objects: on other files (linked programs,
                    // text) they come out no smaller, or larger, in the package, even where
                    // they compress smaller on their own (measured on every bench pair).
                    // (A relocatable object has no stretch: its patch's source is `source`.)
                    let words = if relocatable {
                        let source = source.take().map_or_else(&read_source, Ok)?;
                        bsdiff::word_differences(&source, &bytes, &s.controls)
                    } else {
                        None
                    };
                    // New bytes of machine code: their calls absolute, and of sorted
                    // tables: their fields as differences (not beside words or BTF, which
                    // only relocatable objects take).
                    let plain = !btf && words.is_none();
                    put_calls(
                        &mut ops,
                        calls.as_ref().filter(|_| plain),
                        &mut chunk_calls,
                        |c| c.extra_to_absolute(&s.controls, &mut s.extra),
                    );
                    if let (Some(t), Some(st)) = (tables.as_ref(), source_tables) {
                        // The new bytes are already rewritten, every field of them.
                        ops.push(OP_TABLES);
                        t.write(&mut ops);
                        ops.push(OP_SOURCE_TABLES);
                        st.write(&mut ops);
                        chunk_tables += 1;
                        chunk_source_tables += 1;
                    } else {
                        put_tables(
                            &mut ops,
                            tables.as_ref().filter(|_| plain),
                            &mut chunk_tables,
                            |t| t.extra_to_differences(&s.controls, &mut s.extra, &bytes),
                        );
                    }
                    ops.push(match (btf, words.is_some()) {
                        (true, true) => OP_BDIFF,
                        (false, true) => OP_WDIFF,
                        (false, false) if projected => {
                            chunk_projected += 1;
                            OP_XDIFF
                        }
                        (false, false) => OP_DIFF,
                        (true, false) => {
                            return Err(Error::Other(
                                "files codec: word differences do not fit a BTF patch".into(),
                            ))
                        }
                    });
                    put_patch(&mut ops, Some(&mut ctl), src, at, at_len, len, &s.controls);
                    if let Some(code) = code.filter(|_| projected) {
                        refs::write_code(&mut ops, code);
                    }
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
                let s = match &source {
                    Some((_, _, _, sraw)) => bsdiff::diff(sraw, &m.raw)?,
                    None => Streams::default(),
                };
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
            Region::Zip { off, len, src, .. } => {
                let bytes = new.read(off, len)?;
                let source = match src {
                    Some((l, soff, slen)) => Some((l, soff, slen, old[l].read(soff, slen)?)),
                    None => None,
                };
                // As for gzip members: another deflater than stock zlib re-makes nothing.
                let remake = gz::remake_at_create();
                let old_expanded = source
                    .as_ref()
                    .filter(|_| remake)
                    .map(|(_, _, _, raw)| zip::expand(raw));
                let old_archive = source.as_ref().zip(old_expanded.as_ref()).map(
                    |((_, _, _, raw), expansion)| zip::OldArchive {
                        bytes: raw,
                        expansion,
                    },
                );
                let split = remake.then(|| zip::split(&bytes, old_archive)).flatten();
                let Some((expanded, layout)) = split else {
                    // Patched as it is against its source, or shipped whole.
                    let s = match &source {
                        Some((_, _, _, raw)) => bsdiff::diff(raw, &bytes)?,
                        None => Streams::default(),
                    };
                    match source {
                        Some((l, soff, slen, _)) if patch_wins(&bytes, &s) => {
                            ops.push(OP_DIFF);
                            put_patch(&mut ops, Some(&mut ctl), l, soff, slen, len, &s.controls);
                            diff.extend_from_slice(&s.diff);
                            extra.extend_from_slice(&s.extra);
                        }
                        _ => {
                            ops.push(OP_LIT);
                            put(&mut ops, len);
                            extra.extend_from_slice(&bytes);
                        }
                    }
                    continue;
                };
                drop(bytes);
                let source = source.map(|(l, soff, slen, _)| (l, soff, slen));
                let s = match &old_expanded {
                    Some(old_expanded) => bsdiff::diff(&old_expanded.bytes, &expanded)?,
                    None => Streams::default(),
                };
                drop(old_expanded);
                match source {
                    Some((l, soff, slen)) if patch_wins(&expanded, &s) => {
                        ops.push(OP_ZIP);
                        layout.write(&mut ops);
                        put(&mut ops, ZIP_PATCH);
                        let n = expanded.len() as u64;
                        put_patch(&mut ops, Some(&mut ctl), l, soff, slen, n, &s.controls);
                        diff.extend_from_slice(&s.diff);
                        extra.extend_from_slice(&s.extra);
                    }
                    _ => {
                        // Shipped as its text, without the old archive: members that took
                        // their streams from it are deflated again, or left deflated.
                        let (expanded, layout) = if layout.refers_to_old() {
                            drop(expanded);
                            let bytes = new.read(off, len)?;
                            match zip::split(&bytes, None) {
                                Some(split) => split,
                                None => {
                                    ops.push(OP_LIT);
                                    put(&mut ops, len);
                                    extra.extend_from_slice(&bytes);
                                    continue;
                                }
                            }
                        } else {
                            (expanded, layout)
                        };
                        ops.push(OP_ZIP);
                        layout.write(&mut ops);
                        put(&mut ops, ZIP_TEXT);
                        put(&mut ops, expanded.len() as u64);
                        extra.extend_from_slice(&expanded);
                    }
                }
            }
            Region::Lit {
                off,
                len,
                ref calls,
                ref tables,
            } => {
                let mut bytes = new.read(off, len)?;
                put_calls(&mut ops, calls.as_ref(), &mut chunk_calls, |c| {
                    c.to_absolute(&mut bytes, 0)
                });
                put_tables(&mut ops, tables.as_ref(), &mut chunk_tables, |t| {
                    t.to_differences(&mut bytes)
                });
                ops.push(OP_LIT);
                put(&mut ops, len);
                extra.extend_from_slice(&bytes);
            }
        }
    }
    let (runs, lits) = squeeze_zeros(&diff);
    let mut sections = [ops, meta, runs, lits, extra, ctl.add, ctl.copy, ctl.seek];
    let lens = sections.each_ref().map(|s| s.len() as u64);
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
        sections: lens,
        projected: chunk_projected,
        calls: chunk_calls,
        tables: chunk_tables,
        source_tables: chunk_source_tables,
    })
}

/// Whether a patch of `bytes` (its streams `s`) is shipped rather than the bytes: most of
/// them matched (new bytes under nine tenths) and the patch pays ([`patch_pays`]).
fn patch_wins(bytes: &[u8], s: &Streams) -> bool {
    s.extra.len() * 10 <= bytes.len() * 9 && patch_pays(bytes, s)
}

/// A file patched whole is searched for in the stretch of old layer around its source too
/// (see `plan::widen_sources`) when its source leaves at least one in this many of its bytes
/// unmatched.
const WIDEN_UNMATCHED: u64 = 16;

/// Regions shorter than this are patched whenever anything matched: trying both ways costs
/// more than it could save.
const TRIAL_MIN: u64 = 64 << 10;

/// Whether a patch of `bytes` (its streams `s`) is clearly smaller than the bytes alone,
/// judged by compressing each quickly (zstd level 3): the patch must come to at most 9/10
/// of the bytes.
///
/// A patch is cheap when its matches are close (differences mostly zero) and costly when
/// the source only looks alike: the two versions of statically linked Go programs three
/// years apart (docker 20.10 -> 26: dockerd, containerd, ctr, the runc shim, the docker
/// client, runc; 237 MB) give patches the size of the bytes alone in nearly every 8 MiB
/// piece, and those bytes, shipped as they are, compress far better beside the other new
/// programs that link the same packages. Measured on those programs (new bytes in a
/// 128 MiB window): 53.2 MB of package with every piece patched, 47.7 MB with every one
/// shipped whole, 48.0 MB with this choice (`zstd -19 --long=31 --patch-from`: 49.9 MB).
/// On the bench's `tools` pair (C programs across a Debian release) the pieces' patches
/// come to 0.8 of their bytes, and shipping them whole would cost 24 % more. Nine tenths
/// separates the two: 94 % of the Go programs' bytes are in pieces at 0.95 or more, 96 % of
/// `tools`' at 0.85 or less.
pub(super) fn patch_pays(bytes: &[u8], s: &Streams) -> bool {
    (bytes.len() as u64) < TRIAL_MIN || patch_cost_ratio(bytes, s) <= 0.9
}

/// The length of `b` compressed quickly (zstd level 3), as the estimates here judge bytes.
fn quick_size(b: &[u8]) -> Option<u64> {
    zstd::bulk::compress(b, 3).ok().map(|c| c.len() as u64)
}

/// What a patch (its streams `s`) costs, its streams compressed quickly (see
/// [`quick_size`]); `None` if they cannot be compressed.
fn patch_cost(s: &Streams) -> Option<u64> {
    // A control triple takes about three varints of two bytes, compressed.
    Some(quick_size(&s.diff)? + quick_size(&s.extra)? + 4 * s.controls.len() as u64)
}

/// What a patch of `bytes` (its streams `s`) costs against the bytes alone, each
/// compressed quickly (see [`quick_size`]); 0 if either cannot be compressed.
fn patch_cost_ratio(bytes: &[u8], s: &Streams) -> f64 {
    match patch_costs(bytes, s) {
        Some((alone, patch)) => patch as f64 / alone.max(1) as f64,
        None => 0.0,
    }
}

/// What `bytes` cost alone and what their patch (its streams `s`) costs, each compressed
/// quickly (see [`quick_size`]); `None` if either cannot be compressed.
pub(super) fn patch_costs(bytes: &[u8], s: &Streams) -> Option<(u64, u64)> {
    Some((quick_size(bytes)?, patch_cost(s)?))
}
