//! zstd "patch-from" deltas: the target compressed with the source as a reference prefix.
//!
//! The source is given to zstd as a raw-content prefix (`ZSTD_CCtx_refPrefix`), so every
//! sequence of the target that also occurs in the source becomes a match into the prefix.
//! This is what `zstd --patch-from=SOURCE` does, and the output decodes with
//! `zstd -d --patch-from=SOURCE --long=31`.
//!
//! Like `zstd --patch-from`, the window is sized to cover source + target, so that a match
//! from the end of the target may reach the start of the source: [`window_log_for`] picks
//! the smallest such window, up to zstd's maximum of 2 GiB (`--long=31`). (zstd 1.5.7 was
//! observed to find matches into the prefix beyond a smaller window too, as it treats them
//! like dictionary matches, but that is not documented; the window also bounds matches
//! within the target.) Long distance matching is on, so long repeats far back are found
//! cheaply even at low levels. The encoder streams the target; the decoder
//! streams the patch and the output; only the source is held in memory by both.
//!
//! Memory: the encoder buffers one window of target (at most the target size when it is
//! known, see [`encode_sized`]) plus level-dependent tables (about 100 MiB at level 19);
//! the decoder needs the source plus one window.

use std::io::{self, BufReader, Read, Write};

use crate::error::{Error, Result};

/// The default compression level (as `zstd -19`).
pub const DEFAULT_LEVEL: i32 = 19;

/// The largest window zstd supports on 64-bit platforms: 2^31 bytes (`ZSTD_WINDOWLOG_MAX_64`).
pub const MAX_WINDOW_LOG: u32 = 31;

/// The smallest window zstd supports: 2^10 bytes (`ZSTD_WINDOWLOG_MIN`).
pub const MIN_WINDOW_LOG: u32 = 10;

const CODEC: &str = "zstd";

/// The window log that lets the end of a `target_len`-byte target reach back to the start
/// of a `source_len`-byte source: `ceil(log2(source + target))`, clamped to
/// [`MIN_WINDOW_LOG`]..=[`MAX_WINDOW_LOG`].
pub fn window_log_for(source_len: u64, target_len: u64) -> u32 {
    let total = source_len.saturating_add(target_len).max(1);
    // ceil(log2(total)) for total >= 1.
    let log = u64::BITS - (total - 1).leading_zeros();
    log.clamp(MIN_WINDOW_LOG, MAX_WINDOW_LOG)
}

/// Encodes `target` (read to its end) against `source` into `out` at `level` (1–22;
/// negative levels are zstd's fast modes). Returns the number of bytes written to `out`.
///
/// The target's size is not known in advance, so the window is sized for a target as
/// large as the source; a bigger target still encodes correctly but its tail cannot
/// reference the start of the source. Use [`encode_sized`] when the size is known.
pub fn encode(source: &[u8], target: impl Read, out: impl Write, level: i32) -> Result<u64> {
    encode_impl(source, target, None, out, level)
}

/// Like [`encode`] for a target of exactly `target_len` bytes: the window covers
/// source + target, the frame records the size (so decoders size their buffers from it),
/// and a target of any other length fails with [`Error::SizeMismatch`].
pub fn encode_sized(
    source: &[u8],
    target: impl Read,
    target_len: u64,
    out: impl Write,
    level: i32,
) -> Result<u64> {
    encode_impl(source, target, Some(target_len), out, level)
}

fn encode_impl(
    source: &[u8],
    target: impl Read,
    target_len: Option<u64>,
    out: impl Write,
    level: i32,
) -> Result<u64> {
    let source_len = source.len() as u64;
    let window_log = window_log_for(source_len, target_len.unwrap_or(source_len));
    let mut reader = Tracked::new(target);
    let writer = Tracked::new(Counting {
        inner: out,
        count: 0,
    });
    let mut enc = ::zstd::stream::write::Encoder::with_ref_prefix(writer, level, source)
        .map_err(|e| codec_error("cannot create the encoder", e))?;
    let setup = (|| -> io::Result<()> {
        enc.window_log(window_log)?;
        enc.long_distance_matching(true)?;
        enc.include_checksum(true)?;
        enc.include_contentsize(target_len.is_some())?;
        enc.set_pledged_src_size(target_len)?;
        Ok(())
    })();
    setup.map_err(|e| {
        codec_error(
            &format!("cannot configure the encoder (level {level}, window log {window_log})"),
            e,
        )
    })?;

    let copied = io::copy(&mut reader, &mut enc);
    let copied = match copied {
        Ok(n) => n,
        Err(e) => {
            let writer_error = enc.get_mut().take_error();
            return Err(stream_error(
                reader.take_error(),
                writer_error,
                e,
                "encoding",
            ));
        }
    };
    if let Some(expected) = target_len {
        if copied != expected {
            return Err(Error::SizeMismatch {
                what: "zstd delta target".into(),
                expected,
                found: copied,
            });
        }
    }
    match enc.try_finish() {
        Ok(mut writer) => {
            writer
                .flush()
                .map_err(|e| stream_error(None, writer.take_error(), e, "encoding"))?;
            Ok(writer.inner.count)
        }
        Err((mut enc, e)) => {
            let writer_error = enc.get_mut().take_error();
            Err(stream_error(None, writer_error, e, "encoding"))
        }
    }
}

/// Encodes `target` against `source` in one call, both held in memory, into a buffer of at
/// most `budget` bytes: `None` when the delta would not fit (the caller keeps something
/// smaller). The same frame as [`encode_sized`] (window over source + target, long distance
/// matching, checksum, content size), without the streaming encoder's input buffer of one
/// window: memory is the two inputs, the output and the level's tables
/// ([`whole_layer_memory`](super::whole_layer_memory)).
pub fn encode_within(
    source: &[u8],
    target: &[u8],
    level: i32,
    budget: usize,
) -> Result<Option<Vec<u8>>> {
    use ::zstd::zstd_safe::{CCtx, CParameter};
    let window_log = window_log_for(source.len() as u64, target.len() as u64);
    let mut cctx = CCtx::try_create().ok_or_else(|| Error::Codec {
        codec: CODEC.into(),
        reason: "cannot create the encoder (out of memory)".into(),
    })?;
    let params = [
        CParameter::CompressionLevel(level),
        CParameter::WindowLog(window_log),
        CParameter::EnableLongDistanceMatching(true),
        CParameter::ChecksumFlag(true),
        CParameter::ContentSizeFlag(true),
    ];
    for p in params {
        cctx.set_parameter(p).map_err(|code| {
            zstd_error(
                &format!("cannot configure the encoder (level {level}, window log {window_log})"),
                code,
            )
        })?;
    }
    cctx.ref_prefix(source)
        .map_err(|code| zstd_error("cannot set the source as prefix", code))?;
    // Pages of the output are only touched as zstd writes them.
    let mut out = Vec::with_capacity(budget);
    match cctx.compress2(&mut out, target) {
        Ok(_) => Ok(Some(out)),
        Err(code) if ::zstd::zstd_safe::get_error_name(code).contains("too small") => Ok(None),
        Err(code) => Err(zstd_error("encoding failed", code)),
    }
}

/// Decodes a patch held in memory against `source` into a buffer of exactly `target_len`
/// bytes, in one call (no window buffer beside the output): [`Error::SizeMismatch`] when the
/// frame holds fewer bytes, [`Error::Codec`] when it holds more or is damaged.
pub fn decode_to_vec(source: &[u8], patch: &[u8], target_len: usize) -> Result<Vec<u8>> {
    use ::zstd::zstd_safe::{DCtx, DParameter};
    let mut dctx = DCtx::try_create().ok_or_else(|| Error::Codec {
        codec: CODEC.into(),
        reason: "cannot create the decoder (out of memory)".into(),
    })?;
    dctx.set_parameter(DParameter::WindowLogMax(MAX_WINDOW_LOG))
        .map_err(|code| zstd_error("cannot configure the decoder", code))?;
    dctx.ref_prefix(source)
        .map_err(|code| zstd_error("cannot set the source as prefix", code))?;
    let mut out = Vec::with_capacity(target_len);
    dctx.decompress(&mut out, patch).map_err(|code| {
        if ::zstd::zstd_safe::get_error_name(code).contains("too small") {
            Error::Codec {
                codec: CODEC.into(),
                reason: format!(
                    "the delta decodes to more than the recorded target size of {target_len} bytes"
                ),
            }
        } else {
            zstd_error("decoding failed", code)
        }
    })?;
    if out.len() != target_len {
        return Err(Error::SizeMismatch {
            what: "zstd decoded target".into(),
            expected: target_len as u64,
            found: out.len() as u64,
        });
    }
    Ok(out)
}

fn zstd_error(what: &str, code: usize) -> Error {
    Error::Codec {
        codec: CODEC.into(),
        reason: format!("{what}: {}", ::zstd::zstd_safe::get_error_name(code)),
    }
}

/// Decodes a patch made by [`encode`] or [`encode_sized`] (or by
/// `zstd --patch-from=SOURCE`) against the same `source`, writing the target to `out`.
/// Returns the number of bytes written.
///
/// Windows up to 2 GiB are accepted. zstd's checksum of the target is verified when the
/// patch carries one (ours always do); the caller still checks the target's digest.
pub fn decode(source: &[u8], patch: impl Read, out: impl Write) -> Result<u64> {
    let mut reader = Tracked::new(patch);
    let mut writer = Tracked::new(out);
    let mut dec = ::zstd::stream::read::Decoder::with_ref_prefix(
        BufReader::with_capacity(1 << 17, &mut reader),
        source,
    )
    .map_err(|e| codec_error("cannot create the decoder", e))?;
    dec.window_log_max(MAX_WINDOW_LOG)
        .map_err(|e| codec_error("cannot configure the decoder", e))?;
    let copied = io::copy(&mut dec, &mut writer);
    drop(dec);
    let n = copied
        .map_err(|e| stream_error(reader.take_error(), writer.take_error(), e, "decoding"))?;
    writer
        .flush()
        .map_err(|e| stream_error(None, writer.take_error(), e, "decoding"))?;
    Ok(n)
}

fn codec_error(what: &str, e: io::Error) -> Error {
    Error::Codec {
        codec: CODEC.into(),
        reason: format!("{what}: {e}"),
    }
}

/// Tells apart a failure of the caller's reader or writer (reported as [`Error::Io`], or as
/// the crate error it carries) from one of zstd itself (reported as [`Error::Codec`]).
fn stream_error(
    reader: Option<io::Error>,
    writer: Option<io::Error>,
    e: io::Error,
    doing: &str,
) -> Error {
    if let Some(r) = reader {
        return Error::io(format!("<{CODEC} {doing} input>"), r);
    }
    if let Some(w) = writer {
        return Error::io(format!("<{CODEC} {doing} output>"), w);
    }
    Error::Codec {
        codec: CODEC.into(),
        reason: format!("{doing} failed: {e}"),
    }
}

/// Wraps a reader or writer and keeps the first error it returned, so that an error coming
/// out of zstd can be attributed to it.
struct Tracked<T> {
    inner: T,
    error: Option<io::Error>,
}

impl<T> Tracked<T> {
    fn new(inner: T) -> Self {
        Tracked { inner, error: None }
    }

    fn take_error(&mut self) -> Option<io::Error> {
        self.error.take()
    }

    fn keep<V>(&mut self, r: io::Result<V>) -> io::Result<V> {
        match r {
            // A plain EINTR: zstd retries, as it should.
            Err(e)
                if e.kind() == io::ErrorKind::Interrupted
                    && !e.get_ref().is_some_and(|inner| inner.is::<Error>()) =>
            {
                Err(e)
            }
            Err(e) => {
                // Hand a stand-in up the stack and keep the original (which may carry one
                // of our own errors) for `stream_error`. The stand-in is never
                // `Interrupted`: `Error::Cancelled` travels as an `Interrupted` I/O error,
                // and zstd (like `io::copy`) would retry it forever.
                let kind = match e.kind() {
                    io::ErrorKind::Interrupted => io::ErrorKind::Other,
                    k => k,
                };
                let stand_in = io::Error::new(kind, e.to_string());
                if self.error.is_none() {
                    self.error = Some(e);
                }
                Err(stand_in)
            }
            ok => ok,
        }
    }
}

impl<R: Read> Read for Tracked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let r = self.inner.read(buf);
        self.keep(r)
    }
}

impl<W: Write> Write for Tracked<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let r = self.inner.write(buf);
        self.keep(r)
    }

    fn flush(&mut self) -> io::Result<()> {
        let r = self.inner.flush();
        self.keep(r)
    }
}

/// Counts the bytes written through it.
struct Counting<W> {
    inner: W,
    count: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
