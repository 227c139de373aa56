//! Decoding: [`Decoder`] reads a stream's chunks and rebuilds the layer from them and the
//! old layers it names, a chunk at a time, or on several threads
//! ([`with_parallel_reader`]).

use std::io::{self, Read};
use std::sync::{mpsc, Arc, Mutex};

use super::bsdiff::{self, Differences};
use super::btf;
use super::calls::Calls;
use super::encode::Chunk;
use super::gz;
use super::refs;
use super::schedule::{each_on_every_core, in_order_parallel, Footprint};
use super::stream::{
    bad, get, get_patch, Zeros, APART, APART_NAMES, CHUNK_BTF_MAP, CHUNK_INLINE, CHUNK_SPLIT,
    GZ_PATCH, GZ_TEXT, MAX_PATCH_SOURCE, OP_BDIFF, OP_CALLS, OP_COPY, OP_DIFF, OP_GZIP, OP_HDIFF,
    OP_LIT, OP_META, OP_SOURCE_TABLES, OP_TABLES, OP_WDIFF, OP_XDIFF, OP_ZIP, ZIP_PATCH, ZIP_TEXT,
};
use super::tables::Tables;
use super::zip;
use super::{LayerData, DECODE_MEMORY, MAGIC, MAX_CHUNK_OUTPUT, MAX_SECTION};
use crate::delta::blocks::BlockReader;
use crate::error::{Error, Result};

/// Rebuilds a layer as reading `decoder` would, decoding its chunks on `workers` threads;
/// each chunk's bytes go to `sink`, in order. The chunks read, being decoded and decoded
/// ahead of the sink take at most [`DECODE_MEMORY`] together (or one chunk, if larger). The
/// workers yield to the sink's side ([`crate::threads::yield_to_writer`]).
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
        crate::threads::yield_to_writer,
        move || decoder.read_chunk(),
        |raw: RawChunk| raw.decode(&old),
        sink,
    )
}

/// Runs `consume` on a reader of the layer `decoder` rebuilds, while its chunks are decoded
/// on `workers` threads beside: the reader's side (hashing, writing) and the chunks'
/// decoding overlap, the workers at a lower priority (on Linux: nice +10), so that the
/// reader's side keeps up. Errors of the decoding reach `consume` through the reader.
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

/// Decodes one encoded chunk (as `encode_chunk` made it), `map` being the stream's BTF
/// map.
pub(super) fn decode_chunk(
    chunk: &Chunk,
    old: &[&LayerData],
    map: &Arc<btf::BtfMap>,
) -> Result<Vec<u8>> {
    let apart = [chunk.apart[0].as_deref(), chunk.apart[1].as_deref()];
    let mut d = Decoder::with_apart(&chunk.bytes[..], apart, old.to_vec());
    d.started = true;
    d.btf = (!map.is_empty()).then(|| map.clone());
    match d.read_chunk()? {
        Some(raw) => raw.decode(old),
        None => Err(bad("no chunk to decode")),
    }
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
/// of new files). Holds at most [`MAX_SPARE_BYTES`], and no more than what the payload's
/// decoders leave of [`SPARE_ROOM`] (see [`Decoder::beside`]).
#[derive(Default)]
struct Spares {
    buffers: Mutex<Vec<Vec<u8>>>,
    /// What the payload's decoders hold now, if told.
    beside: Option<Beside>,
}

/// What the payload's decoders hold now, in bytes.
pub type Beside = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Capacity [`Spares`] keeps at most.
const MAX_SPARE_BYTES: u64 = 96 << 20;

/// What the spare buffers and the payload's decoders may hold together, as far as the
/// spares go: beside a new bytes' lane whose 256 MiB zstd window is full (and the other
/// lanes' 13 MiB), 51 MiB of spares. On an image with both the go pair's new layer (all
/// new bytes) and the ml pair's (many patches), apply peaked at 512-528 MiB with 96 MiB of
/// spares, 456 with 32 and 415-420 with none (1.74 s, 1.78 s, 2.0 s); a package whose
/// lanes are small keeps all 96 MiB.
const SPARE_ROOM: u64 = 320 << 20;

impl Spares {
    /// An empty buffer for about `size` bytes: the smallest spare that holds them, else
    /// the largest spare (to grow), else a new one.
    fn take(&self, size: u64) -> Vec<u8> {
        let mut g = self.buffers.lock().unwrap_or_else(|e| e.into_inner());
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
        let room = match &self.beside {
            Some(beside) => SPARE_ROOM.saturating_sub(beside()).min(MAX_SPARE_BYTES),
            None => MAX_SPARE_BYTES,
        };
        let mut g = self.buffers.lock().unwrap_or_else(|e| e.into_inner());
        let held: u64 = g.iter().map(|b| b.capacity() as u64).sum();
        if v.capacity() > 0 && held + v.capacity() as u64 <= room {
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

    /// Keeps fewer spare buffers while the payload's decoders hold much (`beside` says how
    /// much, in bytes): the new bytes' zstd window fills as it decodes, up to 256 MiB.
    pub fn beside(mut self, beside: Beside) -> Self {
        self.spares = Arc::new(Spares {
            buffers: Mutex::default(),
            beside: Some(beside),
        });
        self
    }

    /// A decoder reading `input`, whose chunks' sections [`APART`]`[k]` are in `apart[k]`
    /// where given (as [`encode`](super::encode()) writes them when given those writers).
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
        let sections = Sections {
            ops: &s[0],
            meta: &s[1],
            diff: Zeros::new(&s[2], &s[3]),
            extra: &s[4],
            controls: (s.len() == 8).then(|| [&s[5][..], &s[6][..], &s[7][..]]),
        };
        let mut source = self.spares.take(0);
        run_ops(
            sections,
            old,
            self.map.as_deref(),
            self.output,
            &mut out,
            &mut source,
        )?;
        self.spares.give(source);
        for s in self.sections {
            self.spares.give(s);
        }
        Ok(out)
    }
}

/// A chunk's sections, as [`run_ops`] reads them.
struct Sections<'a> {
    ops: &'a [u8],
    meta: &'a [u8],
    /// The difference bytes, read in place.
    diff: Zeros<'a>,
    extra: &'a [u8],
    /// The control sections, if the chunk has them ([`CHUNK_SPLIT`]).
    controls: Option<[&'a [u8]; 3]>,
}

/// Runs a chunk's operations on its `sections`; `map` is the stream's BTF map, if it has
/// one; `source` a buffer for the sources of patches (reused from chunk to chunk: fresh
/// multi-MiB buffers cost page faults).
fn run_ops(
    sections: Sections<'_>,
    old: &[&LayerData],
    map: Option<&btf::BtfMap>,
    output: u64,
    out: &mut Vec<u8>,
    source: &mut Vec<u8>,
) -> Result<()> {
    let Sections {
        mut ops,
        mut meta,
        mut diff,
        mut extra,
        mut controls,
    } = sections;
    // Gzip members are deflated after the operations around them, on every core (level-9
    // deflate is the slowest step of apply on a layer with many members).
    let mut pending = Pending::default();
    fn take<'s>(s: &mut &'s [u8], n: u64, what: &str) -> Result<&'s [u8]> {
        if n > s.len() as u64 {
            return Err(bad(format!("{what} section ends early")));
        }
        let (a, b) = s.split_at(n as usize);
        *s = b;
        Ok(a)
    }
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
    // A CALLS and a TABLES operation's fields, for the operation after them.
    let mut calls: Option<Calls> = None;
    let mut tables: Option<Tables> = None;
    let mut source_tables: Option<Tables> = None;
    while !ops.is_empty() {
        let op = ops[0];
        ops = &ops[1..];
        if op == OP_CALLS {
            if calls.is_some() {
                return Err(bad("two CALLS operations in a row"));
            }
            if tables.is_some() {
                return Err(bad("a CALLS operation after a TABLES operation"));
            }
            calls = Some(Calls::read(&mut ops, MAX_CHUNK_OUTPUT)?);
            continue;
        }
        if op == OP_TABLES {
            if source_tables.is_some() {
                return Err(bad("a TABLES operation after a SOURCE TABLES operation"));
            }
            if tables.is_some() {
                return Err(bad("two TABLES operations in a row"));
            }
            tables = Some(Tables::read(&mut ops, MAX_CHUNK_OUTPUT)?);
            continue;
        }
        if op == OP_SOURCE_TABLES {
            if tables.is_none() || source_tables.is_some() {
                return Err(bad(
                    "a SOURCE TABLES operation not right after a TABLES operation",
                ));
            }
            // Within the largest source a patch may have; `check` holds them to its own.
            source_tables = Some(Tables::read(&mut ops, MAX_PATCH_SOURCE)?);
            continue;
        }
        let (rewrite, table_fields, source_fields) =
            (calls.take(), tables.take(), source_tables.take());
        if source_fields.is_some() && !matches!(op, OP_DIFF | OP_XDIFF) {
            return Err(bad(format!(
                "a SOURCE TABLES operation before operation {op}, which is no patch of a program"
            )));
        }
        if (rewrite.is_some() || table_fields.is_some())
            && !matches!(op, OP_LIT | OP_DIFF | OP_XDIFF)
        {
            return Err(bad(if rewrite.is_some() {
                format!("a CALLS operation before operation {op}, which ships no machine code")
            } else {
                format!("a TABLES operation before operation {op}, which ships no new bytes")
            }));
        }
        let start = out.len();
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
                if let Some(t) = table_fields {
                    t.check(len)?;
                    t.to_values(&mut out[start..])?;
                }
                if let Some(c) = rewrite {
                    c.check(len)?;
                    c.to_relative(&mut out[start..], 0);
                }
            }
            OP_COPY => {
                let (src, off, len) = (get(&mut ops)?, get(&mut ops)?, get(&mut ops)?);
                room(out, len)?;
                let start = out.len();
                out.resize(start + len as usize, 0);
                layer(src)?.read_into(off, &mut out[start..])?;
            }
            OP_DIFF | OP_WDIFF | OP_BDIFF | OP_HDIFF | OP_XDIFF => {
                let p = get_patch(&mut ops, &mut controls)?;
                room(out, p.len)?;
                let code = if op == OP_XDIFF {
                    Some(refs::read_code(&mut ops, p.src_len, "the patch's source")?)
                } else {
                    None
                };
                layer(p.src)?.read_to(p.off, p.src_len, source)?;
                if let Some(code) = code {
                    refs::Projection::from_controls(&p.controls, &code).apply(source);
                }
                if let Some(st) = &source_fields {
                    st.check(p.src_len)?;
                    st.to_differences(source);
                }
                if op == OP_BDIFF {
                    let map =
                        map.ok_or_else(|| bad("a BTF patch in a stream without a BTF map"))?;
                    btf::rewrite(source, map);
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
                    source,
                    &p.controls,
                    differences,
                    &mut diff,
                    news,
                    p.len,
                    out,
                )?;
                if let Some(t) = table_fields {
                    t.check(p.len)?;
                    if source_fields.is_some() {
                        t.to_values(&mut out[start..])?;
                    } else {
                        t.to_values_in_output(&p.controls, &mut out[start..])?;
                    }
                }
                if let Some(c) = rewrite {
                    c.check(p.len)?;
                    c.to_relative_in_output(&p.controls, &mut out[start..]);
                }
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
                let member = PendingGzip {
                    at: out.len(),
                    header: Some(header),
                    raw,
                    level: level as u32,
                };
                pending.push(member, out, output)?;
            }
            OP_ZIP => {
                gz::require_remake("a zip archive of the layer")?;
                let layout = zip::Layout::read(&mut ops)?;
                let n = layout.expanded_len();
                // The old archive and its expansion, kept for the members whose streams
                // are taken from it.
                let (expanded, old_archive) = match get(&mut ops)? {
                    ZIP_TEXT => {
                        if get(&mut ops)? != n {
                            return Err(bad("zip text does not match its layout"));
                        }
                        (take(&mut extra, n, "extra")?.to_vec(), None)
                    }
                    ZIP_PATCH => {
                        let p = get_patch(&mut ops, &mut controls)?;
                        if p.len != n {
                            return Err(bad("zip patch does not match its layout"));
                        }
                        let archive = layer(p.src)?.read(p.off, p.src_len)?;
                        let source = zip::expand(&archive);
                        let mut e = Vec::new();
                        bsdiff::patch(
                            &source.bytes,
                            &p.controls,
                            Differences::Bytes,
                            &mut diff,
                            &mut extra,
                            p.len,
                            &mut e,
                        )?;
                        let archive = layout.refers_to_old().then_some((archive, source));
                        (e, archive)
                    }
                    m => return Err(bad(format!("unknown zip mode {m}"))),
                };
                let kept = n - layout.members.iter().map(|m| m.text).sum::<u64>();
                room(out, kept)?;
                let old = old_archive
                    .as_ref()
                    .map(|(bytes, expansion)| zip::OldArchive { bytes, expansion });
                // The members are deflated later, on every core, as gzip members are.
                zip::rebuild(&expanded, &layout, old, out, output, |text, level, out| {
                    let member = PendingGzip {
                        at: out.len(),
                        header: None,
                        raw: text.to_vec(),
                        level,
                    };
                    pending.push(member, out, output)
                })?;
            }
            o => return Err(bad(format!("unknown operation {o}"))),
        }
    }
    if calls.is_some() {
        return Err(bad("a CALLS operation ends a chunk's operations"));
    }
    if source_tables.is_some() {
        return Err(bad("a SOURCE TABLES operation ends a chunk's operations"));
    }
    if tables.is_some() {
        return Err(bad("a TABLES operation ends a chunk's operations"));
    }
    pending.flush(out, output)?;
    let controls_left = controls.is_some_and(|c| c.iter().any(|s| !s.is_empty()));
    if out.len() as u64 != output
        || !meta.is_empty()
        || !diff.is_done()?
        || !extra.is_empty()
        || controls_left
    {
        return Err(bad("chunk sections do not add up to its output"));
    }
    Ok(())
}

/// A gzip member (or a zip archive's member) [`run_ops`] has yet to deflate: where it goes
/// in the output, and what makes it.
struct PendingGzip {
    at: usize,
    /// The gzip header; None for a zip member (a raw deflate stream, no trailer).
    header: Option<Vec<u8>>,
    raw: Vec<u8>,
    level: u32,
}

/// The members [`run_ops`] has yet to deflate, and their text's length.
#[derive(Default)]
struct Pending {
    members: Vec<PendingGzip>,
    text: usize,
}

impl Pending {
    /// Queues a member, deflating the queue once its text passes [`MAX_PENDING_TEXT`].
    fn push(&mut self, member: PendingGzip, out: &mut Vec<u8>, output: u64) -> Result<()> {
        self.text += member.raw.len();
        self.members.push(member);
        if self.text > MAX_PENDING_TEXT {
            self.flush(out, output)?;
        }
        Ok(())
    }

    /// Deflates the queue into `out` (see [`flush_gzip`]).
    fn flush(&mut self, out: &mut Vec<u8>, output: u64) -> Result<()> {
        self.text = 0;
        flush_gzip(&mut self.members, out, output)
    }
}

/// Text of pending gzip members past which [`run_ops`] deflates them before going on, so
/// that a chunk of many members holds at most this much text besides its output.
pub(super) const MAX_PENDING_TEXT: usize = 16 << 20;

/// Deflates the pending gzip members, on every core, and puts each where it goes in `out`,
/// refusing output past the chunk's declared `output`.
fn flush_gzip(pending: &mut Vec<PendingGzip>, out: &mut Vec<u8>, output: u64) -> Result<()> {
    if pending.is_empty() {
        return Ok(());
    }
    let one = |p: &PendingGzip| {
        let mut m = Vec::with_capacity(p.raw.len() / 2 + 4096);
        match &p.header {
            Some(header) => gz::rebuild(header, &p.raw, p.level, &mut m),
            None => gz::deflate(&p.raw, p.level, &mut m),
        }
        m
    };
    let text: usize = pending.iter().map(|p| p.raw.len()).sum();
    // Each worker takes the next member as soon as it is free (sizes differ widely); a
    // little text is deflated on this thread.
    let workers = if text < 1 << 18 {
        1
    } else {
        crate::threads::threads()
    };
    let members = each_on_every_core(workers, pending.len(), |i| one(&pending[i]))?;
    let total = out.len() + members.iter().map(Vec::len).sum::<usize>();
    if total as u64 > output {
        return Err(bad("chunk writes more than its declared output"));
    }
    // The members go in place, from the last one back: each stretch of `out` after a
    // member's place moves right by the members before it. (A new buffer for the whole
    // chunk cost a chunk's worth of page faults and a copy of it, per flush.)
    let mut from = out.len();
    out.resize(total, 0);
    let mut end = total;
    for (p, m) in pending.iter().zip(&members).rev() {
        let after = from - p.at;
        out.copy_within(p.at..from, end - after);
        end -= after;
        out[end - m.len()..end].copy_from_slice(m);
        end -= m.len();
        from = p.at;
    }
    debug_assert_eq!(end, from);
    pending.clear();
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
pub(super) fn stream_error(e: io::Error) -> Error {
    // `read_exact` and this decoder's own length checks make a bare UnexpectedEof; an error
    // from below (the blob reader, a decompressor) carries a payload and keeps it.
    if e.kind() == io::ErrorKind::UnexpectedEof && e.get_ref().is_none() {
        bad("the stream ends early (truncated)")
    } else {
        Error::io("files delta stream", e)
    }
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
mod tests {
    use super::*;

    #[test]
    fn spares_keep_what_the_payloads_decoders_leave() {
        let lanes = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let seen = Arc::clone(&lanes);
        let spares = Spares {
            buffers: Mutex::default(),
            beside: Some(Arc::new(move || {
                seen.load(std::sync::atomic::Ordering::Relaxed)
            })),
        };
        let held = |s: &Spares| -> u64 {
            let g = s.buffers.lock().unwrap();
            g.iter().map(|b| b.capacity() as u64).sum()
        };
        let mib = 1 << 20;
        // Small lanes: up to MAX_SPARE_BYTES.
        for _ in 0..4 {
            spares.give(Vec::with_capacity(32 << 20));
        }
        assert_eq!(held(&spares), 96 * mib);
        // A full 256 MiB window beside: what is left of SPARE_ROOM, and no more.
        let spares = Spares {
            buffers: Mutex::default(),
            beside: spares.beside.clone(),
        };
        lanes.store(256 * mib + 13 * mib, std::sync::atomic::Ordering::Relaxed);
        for _ in 0..8 {
            spares.give(Vec::with_capacity(16 << 20));
        }
        assert_eq!(held(&spares), 48 * mib);
        lanes.store(SPARE_ROOM, std::sync::atomic::Ordering::Relaxed);
        spares.give(Vec::with_capacity(1));
        assert_eq!(
            held(&spares),
            48 * mib,
            "none kept once the lanes hold the room"
        );
    }
}
