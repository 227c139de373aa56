//! The payload's lanes as they are written: each lane's encoder (zstd, xz, gzip or none)
//! spooling into an unnamed temporary file, and the new bytes' lane that is compressed
//! with xz while it stays small ([`SmallFirst`]).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use zstd::zstd_safe::CParameter;

use super::memory::Gate;
use super::{CompressionSpec, PayloadCompression};
use crate::error::{IoContext, Result};

/// One lane being written.
pub(super) struct LaneWriter {
    /// The lane's compression, unless [`PayloadEncoder::finish`] says otherwise.
    pub(super) compression: CompressionSpec,
    pub(super) encoder: PayloadEncoder,
    /// What messages call the lane's spool (it has no name on disk).
    pub(super) spool_path: PathBuf,
}

/// How a lane's encoder is set up beyond its compression.
#[derive(Clone, Copy)]
pub(super) struct LaneSettings {
    /// zstd: worker threads (0: none beside the lane's own), window log and overlap log.
    pub(super) zstd: (u32, u32, u32),
    /// zstd: the long-distance matcher's settings, if not the level's own.
    pub(super) zstd_ldm: Option<LongMatches>,
    /// xz: the dictionary size for presets 0-7 (8 and 9 keep theirs).
    pub(super) xz_dict: u32,
    /// xz: the preset's extreme variant (a deeper match search).
    pub(super) xz_extreme: bool,
}

/// How zstd's long-distance matcher looks for matches far back in the window: it hashes
/// `min_match` bytes at positions the hash picks, about one in 2^`hash_rate_log`, into a
/// table of 2^`hash_log` entries (8 bytes each, in buckets whose size the level sets: 256
/// entries at level 18).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct LongMatches {
    pub(super) min_match: u32,
    pub(super) hash_log: u32,
    pub(super) hash_rate_log: u32,
}

/// The long-distance matcher of the new bytes' lane (zstd 18, a 256 MiB window): it
/// hashes 10 bytes (level 18's own: 32) at one position in 16 (its own: 32) into the
/// level's table of 2^23 entries. The level's binary tree reaches back only 4 Mi positions
/// of the window, so matches further back are found by this matcher alone, and the
/// programs of the go pair repeat strings shorter than 32 bytes far apart. On the lanes of
/// the bench's packages, compressed alone: go 42.43 -> 41.92 MB (-1.2 %), ml 14.25 ->
/// 14.21 MB, arm64 and tools -0.1 %, with the same memory; create on go +7 % (169 -> 181
/// s). A larger tree finds those matches too, but for memory: go 42.21 MB with 2^24
/// entries (+32 MiB), 41.94 with 2^25 (+96 MiB); so does a larger table here (2^24
/// entries, +64 MiB: 41.91 MB). Hashing fewer bytes is worse (8: 42.03 MB), and so is
/// one position in 8 (the table overflows: 16 bytes, 42.38 MB against 42.02).
///
/// Only for levels 16 and up (zstd's optimal parsers, which weigh what the matcher finds
/// against their own matches; see [`new_bytes_long_matches`]).
pub(super) const NEW_BYTES_LONG_MATCHES: LongMatches = LongMatches {
    min_match: 10,
    hash_log: 23,
    hash_rate_log: 4,
};

/// The new bytes' long-distance matcher at zstd `level`: [`NEW_BYTES_LONG_MATCHES`] from
/// level 16 on, else the level's own. Below 16 zstd takes every match the matcher finds
/// as it is, and shorter ones cost: tools' new bytes at level 9 come to 9.80 MB with it,
/// 8.77 MB without; at 3, 9.83 MB against 10.37 but in 1.75 times the time. At 16 and 19
/// they come out a little smaller with it (8.282 against 8.284 MB, 8.106 against 8.108),
/// at 19 in less memory (a table of 2^23 entries where the level's own has 2^24).
pub(super) fn new_bytes_long_matches(level: i32) -> Option<LongMatches> {
    (level >= 16).then_some(NEW_BYTES_LONG_MATCHES)
}

/// A lane compressed with xz while its bytes stay few (see [`SmallFirst`]).
#[derive(Clone, Copy)]
pub(super) struct SmallLane {
    /// The xz level while the lane holds at most `limit` bytes.
    pub(super) level: u32,
    /// Its settings (the xz ones).
    pub(super) settings: LaneSettings,
    /// The most bytes the lane may hold and keep it.
    pub(super) limit: u64,
}

impl SmallLane {
    /// Whether a lane expected to hold `expected` bytes in the end leaves xz before it
    /// gets there: when those it all but surely holds are past the limit (it will get
    /// there), or when all it is expected to hold is more than a quarter past. The rest of
    /// the estimate is rough early on (see `files::encode`), and a lane wrongly taken out
    /// of xz compresses larger (the node pair's 20 MB: 1.27 MB in xz, 1.38 MB in zstd),
    /// where one left in xz too long costs create the time of compressing its bytes twice,
    /// and the seconds its own encoder waits for them.
    fn expects_to_outgrow(&self, expected: &Expected) -> bool {
        expected.sure.load(Ordering::Relaxed) > self.limit
            || expected.bytes.load(Ordering::Relaxed) > self.limit + self.limit / 4
    }

    /// Whether a lane told to expect `expected` bytes ends within the limit: it was told,
    /// and both the bytes it is expected to hold and those all but sure are within it.
    fn expects_to_stay(&self, expected: &Expected) -> bool {
        let bytes = expected.bytes.load(Ordering::Relaxed);
        bytes > 0 && bytes <= self.limit && expected.sure.load(Ordering::Relaxed) <= self.limit
    }
}

/// How many bytes a lane's writer expects it to hold in the end (0 while it does not
/// know; see `PackageWriter::new_bytes_hint`).
#[derive(Debug, Default)]
pub(super) struct Expected {
    /// The bytes the lane is expected to hold.
    pub(super) bytes: AtomicU64,
    /// Of those, the bytes it holds or all but surely will.
    pub(super) sure: AtomicU64,
}

impl LaneWriter {
    /// A lane compressed with `compression`, or with `small`'s while it holds no more than
    /// `small.limit` bytes.
    ///
    /// `gate` is the lane's hold on the lanes' memory: its encoder is given bytes only as
    /// the gate lets it. `expected` is how many bytes the lane is expected to hold in the
    /// end, as far as its writer knows (0 if it does not): a small lane expected to outgrow
    /// its limit leaves xz at once.
    pub(super) fn new(
        compression: CompressionSpec,
        spool_dir: &Path,
        settings: LaneSettings,
        small: Option<SmallLane>,
        expected: &Arc<Expected>,
        gate: Gate,
    ) -> Result<LaneWriter> {
        let spool_path = spool_name(spool_dir);
        // A small lane's replay stops with the lane's thread.
        let stop = Arc::default();
        let own =
            PayloadEncoder::for_lane(compression, settings, small, expected, spool_dir, &stop)?;
        let raw = crate::temp::spool_in(spool_dir)?;
        let encoder = PayloadEncoder::Thread(Box::new(
            LaneThread::start(raw, own, stop, gate).at(&spool_path)?,
        ));
        Ok(LaneWriter {
            compression,
            encoder,
            spool_path,
        })
    }
}

/// What errors call a lane's spool in `spool_dir` (its file is anonymous).
fn spool_name(spool_dir: &Path) -> PathBuf {
    spool_dir.join("(payload spool)")
}

/// A lane's encoder, writing to its spool.
pub(super) enum PayloadEncoder {
    None(File),
    Zstd(zstd::stream::write::Encoder<'static, File>),
    Gzip(flate2::write::GzEncoder<File>),
    Xz(liblzma::write::XzEncoder<File>),
    SmallFirst(Box<SmallFirst>),
    /// Another encoder, on a thread of its own ([`LaneThread`]).
    Thread(Box<LaneThread>),
}

/// What a lane's encoder ends with: its spool and, where its compression is not the one it
/// was made with (a small lane that stayed small), the one it has.
type Finished = (File, Option<CompressionSpec>);

impl PayloadEncoder {
    /// A lane's own encoder (the one its thread writes to): `compression`'s, or while the
    /// lane is small (and not `expected` to outgrow it) `small`'s xz, spooling in
    /// `spool_dir`; `stop` stops a small lane's replay into its own encoder.
    fn for_lane(
        compression: CompressionSpec,
        settings: LaneSettings,
        small: Option<SmallLane>,
        expected: &Arc<Expected>,
        spool_dir: &Path,
        stop: &Arc<AtomicBool>,
    ) -> Result<PayloadEncoder> {
        let spool_path = spool_name(spool_dir);
        let file = crate::temp::spool_in(spool_dir)?;
        Ok(match small {
            None => PayloadEncoder::new(compression, settings, file).at(&spool_path)?,
            Some(small) => {
                let lower = Arc::new(AtomicBool::new(true));
                PayloadEncoder::SmallFirst(Box::new(SmallFirst {
                    xz: XzThread::start(
                        small,
                        crate::temp::spool_in(spool_dir)?,
                        crate::temp::spool_in(spool_dir)?,
                        Arc::clone(&lower),
                    )
                    .at(&spool_path)?,
                    small,
                    then: Some((compression, settings, file)),
                    expected: Arc::clone(expected),
                    stop: Arc::clone(stop),
                    lower,
                }))
            }
        })
    }

    fn new(c: CompressionSpec, settings: LaneSettings, file: File) -> io::Result<PayloadEncoder> {
        Ok(match c.algorithm {
            PayloadCompression::None => PayloadEncoder::None(file),
            PayloadCompression::Zstd => PayloadEncoder::Zstd(zstd_encoder(
                file,
                c.level,
                settings.zstd,
                settings.zstd_ldm,
            )?),
            PayloadCompression::Gzip => PayloadEncoder::Gzip(flate2::write::GzEncoder::new(
                file,
                flate2::Compression::new(c.level as u32),
            )),
            PayloadCompression::Xz => PayloadEncoder::Xz(liblzma::write::XzEncoder::new_stream(
                file,
                xz_encoder(c.level as u32, settings)?,
            )),
        })
    }

    /// Ends the lane's stream; returns its spool and, where the lane's compression is not
    /// the one it was made with (a small lane that stayed small), the one it has.
    pub(super) fn finish(self) -> io::Result<Finished> {
        match self {
            PayloadEncoder::Thread(t) => t.finish(),
            PayloadEncoder::None(w) => Ok((w, None)),
            PayloadEncoder::Zstd(w) => Ok((w.finish()?, None)),
            PayloadEncoder::Gzip(w) => Ok((w.finish()?, None)),
            PayloadEncoder::Xz(w) => Ok((w.finish()?, None)),
            PayloadEncoder::SmallFirst(small) => small.finish(),
        }
    }

    /// Called by the lane's thread while no bytes come: a small lane expected to outgrow
    /// its limit grows now, rather than with its next bytes (which may come only once the
    /// layer's slowest chunk is written, long after the estimate said so).
    fn idle(&mut self) -> io::Result<()> {
        match self {
            PayloadEncoder::SmallFirst(small) if small.outgrows(0) => self.grow(),
            _ => Ok(()),
        }
    }

    /// A small lane that outgrew its limit: its bytes so far go to the lane's own encoder,
    /// which takes over.
    fn grow(&mut self) -> io::Result<()> {
        let PayloadEncoder::SmallFirst(small) = self else {
            return Ok(());
        };
        small.xz.cancel();
        let (compression, settings, file) = small
            .then
            .take()
            .ok_or_else(|| io::Error::other("internal: a small lane grew twice"))?;
        tracing::debug!(
            bytes = small.xz.len,
            expected = small.expected.bytes.load(Ordering::Relaxed),
            sure = small.expected.sure.load(Ordering::Relaxed),
            "the new bytes outgrew their small lane, or are expected to; compressing them with {}",
            compression.algorithm.name()
        );
        let mut own = PayloadEncoder::new(compression, settings, file)?;
        let replayed = small.xz.replay(&mut own, &small.stop)?;
        tracing::debug!(bytes = replayed, "the small lane's bytes replayed");
        *self = own;
        Ok(())
    }
}

impl Write for PayloadEncoder {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            PayloadEncoder::None(w) => w.write(buf),
            PayloadEncoder::Zstd(w) => w.write(buf),
            PayloadEncoder::Gzip(w) => w.write(buf),
            PayloadEncoder::Xz(w) => w.write(buf),
            PayloadEncoder::Thread(t) => {
                t.send(buf)?;
                Ok(buf.len())
            }
            PayloadEncoder::SmallFirst(small) => {
                if !small.outgrows(buf.len() as u64) {
                    small.lower.store(!small.stays_small(), Ordering::Relaxed);
                    small.xz.send(buf)?;
                    return Ok(buf.len());
                }
                self.grow()?;
                self.write(buf)
            }
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            PayloadEncoder::None(w) => w.flush(),
            PayloadEncoder::Zstd(w) => w.flush(),
            PayloadEncoder::Gzip(w) => w.flush(),
            PayloadEncoder::Xz(w) => w.flush(),
            PayloadEncoder::Thread(t) => t.flush(),
            PayloadEncoder::SmallFirst(_) => Ok(()),
        }
    }
}

/// A lane while it is small: its bytes go to an xz encoder on a thread of its own (through
/// a raw spool); when they pass the limit, or are expected to pass it well (see
/// [`SmallLane::expects_to_outgrow`]), the thread is stopped and the spool replayed into
/// the lane's own encoder, which takes over (see `PackageWriter::small_new_bytes`). The
/// sooner it grows, the fewer bytes are compressed twice: on the tools pair the lane
/// passed 24 MiB only once 70 % of the layer was encoded, and its 24 MiB went through
/// zstd 18 after the codec's searches were over, alone (create 16.5 s, where zstd from
/// the first byte took 12.4 s); told it would end at 46 MB after three chunks, it grew
/// with 8 MB (14.6 s, the same package).
/// The lane's own encoder is not made before: it is the bigger in memory (zstd 18's tables
/// and window), and both beside the codec's searches came to 573 MiB on the ml pair.
pub(super) struct SmallFirst {
    /// The xz stream, compressed on a thread.
    xz: XzThread,
    /// The xz compression and the limit.
    small: SmallLane,
    /// The lane's own compression, its settings and its spool, for when it grows.
    then: Option<(CompressionSpec, LaneSettings, File)>,
    /// The bytes the lane is expected to hold in the end (see
    /// `PackageWriter::new_bytes_hint`): it grows as soon as that is well past its limit,
    /// or the part of it that is all but sure is past it.
    expected: Arc<Expected>,
    /// Set to stop: a lane that grows replays its bytes so far into its own encoder (24
    /// MiB into zstd 18 takes seconds), which an interrupted create must not wait for.
    stop: Arc<AtomicBool>,
    /// Set while the lane may grow: its xz thread then runs at the lowest priority (see
    /// [`Role::Speculative`]).
    lower: Arc<AtomicBool>,
}

impl SmallFirst {
    /// Whether the lane must grow before it takes `more` bytes: they would pass its
    /// limit, or it is expected to pass it well.
    fn outgrows(&self, more: u64) -> bool {
        self.xz.len + more > self.small.limit || self.small.expects_to_outgrow(&self.expected)
    }

    /// Whether the lane is expected to end within its limit (see
    /// [`SmallLane::expects_to_stay`]).
    fn stays_small(&self) -> bool {
        self.small.expects_to_stay(&self.expected)
    }

    /// Ends the lane that stayed small: its xz stream, unless xz hardly compressed its
    /// bytes ([`xz_did_poorly`]) and the lane's own zstd does about as well
    /// ([`zstd_about_as_small`]), which then ships them. Such bytes are mostly
    /// compressed already (the kernel pair's new bytes are mainly its `vmlinuz`: 14.4 MB
    /// that xz takes to 12.58 MB, zstd 18 to 12.63), and xz decodes them a dozen times
    /// slower than zstd: 0.25 s of apply's CPU there, against 0.02 s. Trying costs create
    /// the zstd pass (5 s on those bytes, beside the other lanes' end), and only where xz
    /// did poorly.
    fn finish(mut self) -> io::Result<Finished> {
        let xz_spec = CompressionSpec {
            algorithm: PayloadCompression::Xz,
            level: self.small.level as i32,
        };
        let xz = self.xz.join()?;
        let (raw_len, xz_len) = (self.xz.len, xz.metadata()?.len());
        let Some((compression, settings, file)) = self.then.take() else {
            return Ok((xz, Some(xz_spec)));
        };
        if !xz_did_poorly(raw_len, xz_len) || compression.algorithm != PayloadCompression::Zstd {
            return Ok((xz, Some(xz_spec)));
        }
        let mut own = PayloadEncoder::new(compression, settings, file)?;
        self.xz.replay(&mut own, &self.stop)?;
        let (zstd, _) = own.finish()?;
        let zstd_len = zstd.metadata()?.len();
        let kept = zstd_about_as_small(xz_len, zstd_len);
        tracing::debug!(
            bytes = raw_len,
            xz = xz_len,
            zstd = zstd_len,
            kept = if kept { "zstd" } else { "xz" },
            "xz hardly compressed the new bytes; tried zstd, which decodes far faster"
        );
        if kept {
            Ok((zstd, None))
        } else {
            Ok((xz, Some(xz_spec)))
        }
    }
}

/// Whether an xz stream of `xz` bytes hardly compressed its `raw` bytes: it is more than
/// three quarters of them, and they are at least a MiB (fewer decode in a few
/// milliseconds whatever their compression; see [`SmallFirst::finish`]).
fn xz_did_poorly(raw: u64, xz: u64) -> bool {
    raw >= 1 << 20 && xz as u128 * 4 > raw as u128 * 3
}

/// Whether a zstd stream of `zstd` bytes is about as small as an xz stream of `xz` bytes
/// of the same bytes: at most 1 % larger (see [`SmallFirst::finish`]).
fn zstd_about_as_small(xz: u64, zstd: u64) -> bool {
    zstd as u128 * 100 <= xz as u128 * 101
}

/// A lane's encoder on a thread of its own, so that compressing a lane (zstd 18 on the new
/// bytes, xz on the others) never holds up the writer: the chunks' results are written as
/// soon as they are made, which frees their share of the codec's memory budget for the
/// next searches. On the ml pair the writing thread compressed all three lanes itself, and
/// for seconds at a time no search could start while it did (a chunk waits for the results
/// ahead of it to be written).
pub(super) type LaneThread = SpoolThread<Finished>;

impl LaneThread {
    /// Starts `encoder` on a thread of its own, stopped by `stop`; `raw` is a new spool for
    /// the lane's bytes.
    fn start(
        raw: File,
        encoder: PayloadEncoder,
        stop: Arc<AtomicBool>,
        gate: Gate,
    ) -> io::Result<LaneThread> {
        SpoolThread::spawn(
            "payload lane",
            raw,
            Role::Lane(gate),
            stop,
            encoder,
            PayloadEncoder::idle,
            PayloadEncoder::finish,
        )
    }
}

/// An xz encoder on a thread of its own (see [`SmallFirst`]).
type XzThread = SpoolThread<File>;

impl XzThread {
    /// Starts the thread; `raw` and `file` are two new spools (the lane's bytes, and their
    /// xz stream); the thread runs at the lowest priority once `lower` is set (see
    /// [`Role::Speculative`]).
    fn start(
        small: SmallLane,
        raw: File,
        file: File,
        lower: Arc<AtomicBool>,
    ) -> io::Result<XzThread> {
        let stream = xz_encoder(small.level, small.settings)?;
        let encoder = liblzma::write::XzEncoder::new_stream(file, stream);
        let stop = Arc::default();
        let idle = |_: &mut _| Ok(());
        SpoolThread::spawn(
            "xz lane",
            raw,
            Role::Speculative(lower),
            stop,
            encoder,
            idle,
            |e| e.finish(),
        )
    }
}

/// What a [`SpoolThread`] is to its lane.
enum Role {
    /// The lane's encoder: it runs at the normal priority, and the spool's bytes are let go
    /// once read (their blocks are freed), so the spool takes only the bytes still to
    /// compress (a layer's new bytes can be hundreds of MB). The encoder is given bytes
    /// only as its gate on the lanes' memory allows (the spool holds them meanwhile); the
    /// gate is let go when the thread ends.
    Lane(Gate),
    /// A small lane's xz: the spool is kept, to be replayed into the lane's own encoder if
    /// the lane grows. While the lane may grow, the thread runs at the lowest priority (its
    /// work would be lost, so it takes only what the encoder leaves idle): from the first
    /// piece it is given with the flag set on (a process cannot raise it back). A lane
    /// expected to stay small ([`SmallFirst::stays_small`]) leaves the flag off, and its
    /// xz runs as a lane's encoder does, beside the searches: on the node pair (20 MB of
    /// new JavaScript) it had run alone for the last 9 s of an 18.5 s create.
    Speculative(Arc<AtomicBool>),
}

/// An encoder on a thread of its own, fed through a raw spool: what is sent is appended to
/// an unnamed temporary file (so that bursts wait in the page cache rather than in memory)
/// and the thread is told how far it may read, and where the encoder is to be flushed.
/// The encoder sees the same bytes and flushes as if it were written to directly, so it
/// makes the same stream.
pub(super) struct SpoolThread<T> {
    /// The raw spool, written here and read by the thread.
    raw: File,
    /// How many bytes the spool holds.
    len: u64,
    tx: Option<Sender<Mark>>,
    stop: Arc<AtomicBool>,
    /// How many of the spool's bytes the thread has given its encoder.
    fed: Arc<AtomicU64>,
    handle: Option<JoinHandle<io::Result<T>>>,
    /// The thread's name, for messages.
    name: &'static str,
}

/// How far the spool may be read, and whether the encoder is then flushed.
struct Mark {
    end: u64,
    flush: bool,
}

/// The most bytes a spool's thread gives its encoder at a time (and between looks at its
/// stop flag).
const PIECE: usize = 1 << 20;

/// The same for a small lane's xz ([`Role::Speculative`]): its lane waits for it to stop
/// before it grows, and it runs at the lowest priority beside the codec's searches, where
/// it gets little of a core (nice 19 weighs 15 to nice 0's 1024). With 1 MiB pieces the
/// tools pair's lane waited 4 s for it to stop.
const SPECULATIVE_PIECE: usize = 4 << 10;

/// How long a spool's thread waits for bytes before it looks at its stop flag and calls
/// its encoder's idle hook.
const IDLE: Duration = Duration::from_millis(50);

impl<T: Send + 'static> SpoolThread<T> {
    /// Starts a thread called `name` that feeds what is sent to `encoder`, calls
    /// `idle(encoder)` every [`IDLE`] that nothing is sent, and ends with
    /// `finish(encoder)`.
    fn spawn<E: Write + Send + 'static>(
        name: &'static str,
        raw: File,
        role: Role,
        stop: Arc<AtomicBool>,
        mut encoder: E,
        mut idle: impl FnMut(&mut E) -> io::Result<()> + Send + 'static,
        finish: impl FnOnce(E) -> io::Result<T> + Send + 'static,
    ) -> io::Result<SpoolThread<T>> {
        let source = raw.try_clone()?;
        let (tx, rx) = channel::<Mark>();
        let stopped = Arc::clone(&stop);
        let fed = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&fed);
        let handle = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                // A small lane's xz has no gate (its lane's gate counts it), and keeps its
                // spool to be replayed; it is given small pieces, so that it sees soon
                // when it is stopped, and lowers itself once told to.
                let (mut gate, piece, lower) = match role {
                    Role::Lane(gate) => (Some(gate), PIECE, None),
                    Role::Speculative(lower) => (None, SPECULATIVE_PIECE, Some(lower)),
                };
                let mut lowered = false;
                let mut buf = vec![0u8; piece];
                let mut at = 0u64;
                loop {
                    let mark = match rx.recv_timeout(IDLE) {
                        Ok(mark) => mark,
                        Err(RecvTimeoutError::Timeout) => {
                            if stopped.load(Ordering::Relaxed) {
                                return Err(io::Error::other("stopped"));
                            }
                            idle(&mut encoder)?;
                            continue;
                        }
                        Err(RecvTimeoutError::Disconnected) => break,
                    };
                    while at < mark.end {
                        if stopped.load(Ordering::Relaxed) {
                            return Err(io::Error::other("stopped"));
                        }
                        if !lowered && lower.as_ref().is_some_and(|l| l.load(Ordering::Relaxed)) {
                            crate::threads::lowest_priority();
                            lowered = true;
                        }
                        let n = (mark.end - at).min(piece as u64) as usize;
                        if let Some(gate) = &mut gate {
                            gate.feed(at + n as u64, &stopped)?;
                        }
                        std::os::unix::fs::FileExt::read_exact_at(&source, &mut buf[..n], at)?;
                        encoder.write_all(&buf[..n])?;
                        if gate.is_some() {
                            let_go(&source, at, n as u64);
                        }
                        at += n as u64;
                        counted.store(at, Ordering::Relaxed);
                    }
                    if mark.flush {
                        encoder.flush()?;
                    }
                }
                // Stopped while waiting: the stream is not wanted, and finishing it (a
                // small lane's xz thread may have much left to compress) would keep the
                // caller waiting.
                if stopped.load(Ordering::Relaxed) {
                    return Err(io::Error::other("stopped"));
                }
                finish(encoder)
            })?;
        Ok(SpoolThread {
            raw,
            len: 0,
            tx: Some(tx),
            stop,
            fed,
            handle: Some(handle),
            name,
        })
    }

    /// Appends `buf` to what the encoder is given.
    fn send(&mut self, buf: &[u8]) -> io::Result<()> {
        self.raw.write_all(buf)?;
        self.len += buf.len() as u64;
        self.mark(false)
    }

    /// Has the encoder flushed once it has what was sent so far.
    fn flush(&mut self) -> io::Result<()> {
        self.mark(true)
    }

    fn mark(&mut self, flush: bool) -> io::Result<()> {
        let end = self.len;
        let sent = self.tx.as_ref().map(|tx| tx.send(Mark { end, flush }));
        if !matches!(sent, Some(Ok(()))) {
            // The thread ended early: its error says why.
            self.join()?;
            return Err(io::Error::other(format!(
                "internal: the {} thread ended early",
                self.name
            )));
        }
        Ok(())
    }

    /// Copies the raw spool (every byte sent) to `to` a piece at a time, unless `stop` is
    /// set; returns how many.
    fn replay(&mut self, to: &mut impl Write, stop: &AtomicBool) -> io::Result<u64> {
        self.raw.seek(SeekFrom::Start(0))?;
        let mut buf = vec![0u8; PIECE];
        let mut done = 0u64;
        while done < self.len {
            if stop.load(Ordering::Relaxed) {
                return Err(io::Error::other("stopped"));
            }
            let n = (self.len - done).min(PIECE as u64) as usize;
            self.raw.read_exact(&mut buf[..n])?;
            to.write_all(&buf[..n])?;
            done += n as u64;
        }
        Ok(done)
    }

    /// Ends the stream; returns what the thread ended with.
    pub(super) fn finish(mut self) -> io::Result<T> {
        self.join()
    }

    /// Tells the thread that nothing more comes: it compresses what is left and ends the
    /// stream, to be collected by [`finish`](Self::finish).
    pub(super) fn close(&mut self) {
        self.tx = None;
    }

    /// The bytes sent, and how many of them the thread has given its encoder so far.
    pub(super) fn backlog(&self) -> (u64, u64) {
        (self.len, self.fed.load(Ordering::Relaxed))
    }

    /// Whether the thread has ended (its stream done, or an error).
    pub(super) fn ended(&self) -> bool {
        self.handle.as_ref().is_none_or(JoinHandle::is_finished)
    }
}

impl<T> SpoolThread<T> {
    /// Ends the stream and waits for the thread; what it ended with, or the error that
    /// ended it.
    fn join(&mut self) -> io::Result<T> {
        self.tx = None;
        match self.handle.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(io::Error::other(format!(
                "the {} thread panicked",
                self.name
            ))),
            None => Err(io::Error::other(format!(
                "internal: the {} thread was joined twice",
                self.name
            ))),
        }
    }

    /// Stops the thread, dropping what it made.
    fn cancel(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if self.handle.is_some() {
            let _ = self.join();
        }
    }
}

/// Frees the blocks of `len` bytes of a spool from `at` (they read as zeros after), where
/// the file system can; else they stay until the spool is closed.
fn let_go(spool: &File, at: u64, len: u64) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        use rustix::fs::FallocateFlags;
        let punch = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
        if let Err(e) = rustix::fs::fallocate(spool, punch, at, len) {
            tracing::trace!(error = %e, "could not free a read part of a lane's spool");
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = (spool, at, len);
}

impl<T> Drop for SpoolThread<T> {
    fn drop(&mut self) {
        self.cancel();
    }
}

/// An xz encoder at `level`: the preset (with its extreme flag if `settings` say so), with
/// a dictionary of `settings.xz_dict` bytes for presets 0-7 (8 and 9 keep their 32 and 64
/// MiB) and no position bits in the match and literal contexts (`pb=0`). Measured on the
/// payloads of the bench pairs, against preset 6 alone: a 16 MiB dictionary reached the
/// far copies of a layer of upgraded tools when lane 0 held the new bytes too (13.19 ->
/// 12.17 MB, where zstd's 128 MiB window gets 12.27), `pb=0` saves 0.2-0.5 % on every pair
/// (the payload's sections are bytes and varints, not aligned words). The encoder needs
/// about 190 MiB with 16 MiB, 95 MiB with 8 MiB, 50 MiB with 4 MiB.
///
/// The stream carries no check of its own (xz's default is a CRC64 of each block): apply
/// verifies the payload's SHA-256 before it decodes a byte of it, and every layer rebuilt
/// against its diff_id, so a CRC64 would only be computed for nothing: it was 2.4 % of
/// apply's CPU on the bench's kernel pair (three xz lanes, 42 MB), whose apply went from
/// 808 to 780 ms (10 runs each). Decoders take streams with or without a check alike.
fn xz_encoder(level: u32, settings: LaneSettings) -> io::Result<liblzma::stream::Stream> {
    let preset = if settings.xz_extreme {
        level | liblzma::stream::PRESET_EXTREME
    } else {
        level
    };
    let mut options = liblzma::stream::LzmaOptions::new_preset(preset)?;
    // Presets 0-7 have dictionaries of 256 KiB to 16 MiB; 8 and 9 have 32 and 64 MiB.
    if level <= 7 {
        options.dict_size(settings.xz_dict);
    }
    options.position_bits(0);
    let mut filters = liblzma::stream::Filters::new();
    filters.lzma2(&options);
    Ok(liblzma::stream::Stream::new_stream_encoder(
        &filters,
        liblzma::stream::Check::None,
    )?)
}

/// The input a zstd encoder with workers compresses as one job (see `zstd_encoder`).
pub(super) const ZSTD_JOB_SIZE: u32 = 16 << 20;

/// A zstd encoder at `level` with long-distance matching over a window of 2^`window_log`
/// bytes, compressing on `workers` threads beside the caller in jobs of 16 MiB, each seeing
/// the last 2^`overlap_log` / 512 of the window before it (`threads` is the three), with
/// the long-distance matcher set as `ldm` says, else as the level sets it.
fn zstd_encoder(
    file: File,
    level: i32,
    threads: (u32, u32, u32),
    ldm: Option<LongMatches>,
) -> io::Result<zstd::stream::write::Encoder<'static, File>> {
    let (workers, window_log, overlap_log) = threads;
    let mut e = zstd::stream::write::Encoder::new(file, level)?;
    e.multithread(workers)?;
    e.long_distance_matching(true)?;
    e.window_log(window_log)?;
    if let Some(ldm) = ldm {
        e.set_parameter(CParameter::LdmMinMatch(ldm.min_match))?;
        e.set_parameter(CParameter::LdmHashLog(ldm.hash_log))?;
        e.set_parameter(CParameter::LdmHashRateLog(ldm.hash_rate_log))?;
    }
    // Jobs of 16 MiB: compression runs while blobs are still being encoded, instead of in
    // one job at the end (zstd's default job is four windows). Kernel pair, 128 MiB window,
    // overlap log 7 (32 MiB): create 45 -> 31 s, package 0.06 % larger.
    e.set_parameter(CParameter::JobSize(ZSTD_JOB_SIZE))?;
    e.set_parameter(CParameter::OverlapSizeLog(overlap_log))?;
    e.include_checksum(true)?;
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::super::memory::{LaneMemory, LANE_MEMORY};
    use super::*;

    fn bytes(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        let words: [&[u8]; 4] = [b"lane ", b"bytes ", b"small ", b"grow\n"];
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if x % 3 == 0 {
                out.extend_from_slice(&x.to_le_bytes());
            } else {
                out.extend_from_slice(words[(x % 4) as usize]);
            }
        }
        out.truncate(len);
        out
    }

    /// Writes `data` in writes of `piece` bytes to a lane kept in xz up to `limit` bytes
    /// (zstd beyond); returns what the lane's spool decodes to and the compression it
    /// says it has.
    fn round_trip(data: &[u8], piece: usize, limit: u64) -> (Vec<u8>, PayloadCompression) {
        let (_dir, mut lane) = small_lane(limit, &Arc::default());
        for p in data.chunks(piece) {
            lane.encoder.write_all(p).unwrap();
        }
        lane.encoder.flush().unwrap();
        decoded(lane)
    }

    /// A lane of zstd kept in xz up to `limit` bytes, told it is to hold `expected` bytes
    /// (and the directory of its spools).
    fn small_lane(limit: u64, expected: &Arc<Expected>) -> (tempfile::TempDir, LaneWriter) {
        let dir = tempfile::tempdir().unwrap();
        let zstd = CompressionSpec {
            algorithm: PayloadCompression::Zstd,
            level: 3,
        };
        let settings = test_settings();
        let small = SmallLane {
            level: 6,
            settings: LaneSettings {
                xz_extreme: true,
                ..settings
            },
            limit,
        };
        let lane =
            LaneWriter::new(zstd, dir.path(), settings, Some(small), expected, free()).unwrap();
        (dir, lane)
    }

    /// What a lane's writer tells it: to expect `bytes`, `sure` of them all but surely.
    fn told(bytes: u64, sure: u64) -> Arc<Expected> {
        Arc::new(Expected {
            bytes: AtomicU64::new(bytes),
            sure: AtomicU64::new(sure),
        })
    }

    /// What a lane's spool decodes to, and the compression it says it has.
    fn decoded(lane: LaneWriter) -> (Vec<u8>, PayloadCompression) {
        let (file, changed) = spooled(lane.encoder);
        let compression = changed.unwrap_or(lane.compression);
        let mut out = Vec::new();
        match compression.algorithm {
            PayloadCompression::Xz => {
                liblzma::read::XzDecoder::new(&file[..])
                    .read_to_end(&mut out)
                    .unwrap();
            }
            PayloadCompression::Zstd => {
                zstd::stream::read::Decoder::new(&file[..])
                    .unwrap()
                    .read_to_end(&mut out)
                    .unwrap();
            }
            other => panic!("unexpected lane compression {other:?}"),
        }
        (out, compression.algorithm)
    }

    /// Small settings for the tests' lanes: zstd with a 16 MiB window, xz with a 1 MiB
    /// dictionary.
    /// A gate on memory nobody else holds.
    fn free() -> Gate {
        Gate::new(LaneMemory::new(), 0, |_| 0)
    }

    fn test_settings() -> LaneSettings {
        LaneSettings {
            zstd: (0, 24, 9),
            zstd_ldm: None,
            xz_dict: 1 << 20,
            xz_extreme: false,
        }
    }

    /// The spool a lane's encoder wrote, read back.
    fn spooled(encoder: PayloadEncoder) -> (Vec<u8>, Option<CompressionSpec>) {
        let (mut file, changed) = encoder.finish().unwrap();
        file.seek(SeekFrom::Start(0)).unwrap();
        let mut out = Vec::new();
        file.read_to_end(&mut out).unwrap();
        (out, changed)
    }

    #[test]
    fn a_lane_on_its_thread_makes_the_stream_its_encoder_makes() {
        let dir = tempfile::tempdir().unwrap();
        let data = bytes(3 << 20, 11);
        let settings = test_settings();
        let small = SmallLane {
            level: 6,
            settings,
            limit: 1 << 20,
        };
        let spec = |algorithm, level| CompressionSpec { algorithm, level };
        // zstd ends a block where it is flushed, so the flushes must reach it where they
        // were made; a small lane grows mid-write.
        for (compression, small) in [
            (spec(PayloadCompression::Zstd, 3), None),
            (spec(PayloadCompression::Xz, 1), None),
            (spec(PayloadCompression::Gzip, 6), None),
            (spec(PayloadCompression::Zstd, 3), Some(small)),
        ] {
            let expected = Arc::default();
            let direct = PayloadEncoder::for_lane(
                compression,
                settings,
                small,
                &expected,
                dir.path(),
                &Arc::default(),
            )
            .unwrap();
            // The threaded lane waits for memory that another holds until it is given back,
            // a tenth of a second on: its bytes wait in its spool meanwhile.
            let memory = LaneMemory::new();
            memory.set_aside(LANE_MEMORY);
            let gate = Gate::new(Arc::clone(&memory), 0, |fed| fed.min(1));
            let threaded =
                LaneWriter::new(compression, dir.path(), settings, small, &expected, gate).unwrap();
            assert!(matches!(threaded.encoder, PayloadEncoder::Thread(_)));
            let giver = std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(100));
                memory.give(LANE_MEMORY);
            });
            let mut encoders = [direct, threaded.encoder];
            for e in &mut encoders {
                for (k, p) in data.chunks(300_001).enumerate() {
                    e.write_all(p).unwrap();
                    if k % 2 == 1 {
                        e.flush().unwrap();
                    }
                }
            }
            let [direct, threaded] = encoders;
            let (a, b) = (spooled(direct), spooled(threaded));
            giver.join().unwrap();
            assert_eq!(a.1, b.1, "{compression:?}, small {}", small.is_some());
            assert!(
                a.0 == b.0,
                "{compression:?}, small {}: the streams differ",
                small.is_some()
            );
            assert!(!a.0.is_empty());
        }
    }

    #[test]
    fn a_small_lane_is_xz_up_to_its_limit_exactly() {
        let data = bytes(300_000, 7);
        for (piece, limit) in [(4096, 1 << 20), (7777, 300_000), (300_000, 300_000)] {
            let (out, algorithm) = round_trip(&data, piece, limit);
            assert_eq!(
                algorithm,
                PayloadCompression::Xz,
                "piece {piece} limit {limit}"
            );
            assert!(out == data, "piece {piece} limit {limit}: bytes differ");
        }
        let (out, algorithm) = round_trip(&[], 1, 10);
        assert_eq!((out.len(), algorithm), (0, PayloadCompression::Xz));
    }

    #[test]
    fn a_small_lane_that_xz_hardly_compresses_is_zstd_when_about_as_small() {
        // Bytes nothing compresses: xz and zstd both come to about their length, and
        // zstd, which decodes far faster, ships them, every byte.
        let noise = crate::delta::codec::tests::noise(1, 1_200_000);
        let (out, algorithm) = round_trip(&noise, 7777, 2 << 20);
        assert_eq!(algorithm, PayloadCompression::Zstd);
        assert!(out == noise, "bytes differ");
        // Under a MiB, xz as they are.
        let (out, algorithm) = round_trip(&noise[..1_000_000], 7777, 2 << 20);
        assert_eq!(algorithm, PayloadCompression::Xz);
        assert!(out == noise[..1_000_000], "bytes differ");
        // Bytes xz compresses well stay xz (the other tests' bytes, and these).
        let (out, algorithm) = round_trip(&bytes(300_000, 3), 7777, 1 << 20);
        assert_eq!(algorithm, PayloadCompression::Xz);
        assert_eq!(out.len(), 300_000);
        // The bounds, exactly.
        let mib = 1u64 << 20;
        assert!(!xz_did_poorly(4 * mib, 3 * mib) && xz_did_poorly(4 * mib, 3 * mib + 1));
        assert!(!xz_did_poorly(mib - 1, mib) && xz_did_poorly(mib, mib));
        assert!(zstd_about_as_small(1000, 1010) && !zstd_about_as_small(1000, 1011));
        assert!(xz_did_poorly(u64::MAX, u64::MAX) && zstd_about_as_small(u64::MAX, u64::MAX));
    }

    #[test]
    fn a_lane_past_its_limit_is_its_own_compression_with_every_byte() {
        let data = bytes(3 << 20, 9);
        // Crossing the limit mid-write, at the first write, by one byte, and in one write
        // larger than the pieces the xz thread takes.
        for (piece, limit) in [
            (37_000, 100_000),
            (5000, 10),
            (1000, (3 << 20) - 1),
            (3 << 20, 1 << 20),
        ] {
            let (out, algorithm) = round_trip(&data, piece, limit);
            assert_eq!(
                algorithm,
                PayloadCompression::Zstd,
                "piece {piece} limit {limit}"
            );
            assert!(out == data, "piece {piece} limit {limit}: bytes differ");
        }
    }

    #[test]
    fn a_small_lane_expected_to_outgrow_its_limit_leaves_xz_without_more_bytes() {
        let data = bytes(200_000, 5);
        let limit = 1 << 20;
        // Past a quarter over the limit: zstd, as soon as the lane's thread is idle (the
        // lane is finished long after), with the bytes it had.
        let expected = Arc::default();
        let (_dir, mut lane) = small_lane(limit, &expected);
        lane.encoder.write_all(&data).unwrap();
        lane.encoder.flush().unwrap();
        // Once the lane's thread has given every byte to the small lane.
        let PayloadEncoder::Thread(thread) = &lane.encoder else {
            panic!("a lane on a thread of its own");
        };
        while thread.backlog().1 < data.len() as u64 {
            std::thread::sleep(IDLE / 10);
        }
        expected
            .bytes
            .store(limit + limit / 4 + 1, Ordering::Relaxed);
        std::thread::sleep(IDLE * 6);
        let (out, algorithm) = decoded(lane);
        assert_eq!(algorithm, PayloadCompression::Zstd);
        assert!(out == data, "bytes differ");
        // Told before its bytes come: the same.
        let expected = told(3 * limit, 0);
        let (_dir, mut lane) = small_lane(limit, &expected);
        lane.encoder.write_all(&data).unwrap();
        let (out, algorithm) = decoded(lane);
        assert_eq!(algorithm, PayloadCompression::Zstd);
        assert!(out == data, "bytes differ");
        // Expected past the limit but by less than a quarter: xz, which it ends within.
        let expected = told(limit + limit / 5, limit);
        let (_dir, mut lane) = small_lane(limit, &expected);
        lane.encoder.write_all(&data).unwrap();
        std::thread::sleep(IDLE * 6);
        let (out, algorithm) = decoded(lane);
        assert_eq!(algorithm, PayloadCompression::Xz);
        assert!(out == data, "bytes differ");
        // The same, but with more than the limit all but sure: zstd.
        let expected = told(limit + limit / 5, limit + 1);
        let (_dir, mut lane) = small_lane(limit, &expected);
        lane.encoder.write_all(&data).unwrap();
        let (out, algorithm) = decoded(lane);
        assert_eq!(algorithm, PayloadCompression::Zstd);
        assert!(out == data, "bytes differ");
    }

    #[test]
    fn a_small_lane_lowers_its_xz_only_while_it_may_grow() {
        let dir = tempfile::tempdir().unwrap();
        let limit = 1 << 20;
        let zstd = CompressionSpec {
            algorithm: PayloadCompression::Zstd,
            level: 3,
        };
        let small = SmallLane {
            level: 6,
            settings: test_settings(),
            limit,
        };
        // Not told; told within the limit; over it by no more than a quarter, with nothing
        // or all of the limit all but sure (the lane stays in xz, but may grow).
        for (expected, lowered) in [
            (Arc::default(), true),
            (told(limit / 2, limit / 4), false),
            (told(limit, limit), false),
            (told(limit + 1, 0), true),
            (told(limit + limit / 4, limit), true),
        ] {
            let mut e = PayloadEncoder::for_lane(
                zstd,
                test_settings(),
                Some(small),
                &expected,
                dir.path(),
                &Arc::default(),
            )
            .unwrap();
            e.write_all(&bytes(10_000, 3)).unwrap();
            let PayloadEncoder::SmallFirst(first) = &e else {
                panic!("a small lane");
            };
            assert_eq!(
                first.lower.load(Ordering::Relaxed),
                lowered,
                "told {:?}",
                expected
            );
            let (out, changed) = spooled(e);
            assert_eq!(changed.map(|c| c.algorithm), Some(PayloadCompression::Xz));
            assert!(!out.is_empty());
        }
    }

    /// zstd 18 on `data` in the new bytes' window, with the long-distance matcher `ldm`:
    /// the stream's size, once it was checked to decode to `data`.
    fn zstd18_size(data: &[u8], ldm: Option<LongMatches>) -> usize {
        let zstd18 = CompressionSpec {
            algorithm: PayloadCompression::Zstd,
            level: 18,
        };
        let settings = LaneSettings {
            zstd: (0, 28, 9),
            zstd_ldm: ldm,
            ..test_settings()
        };
        let mut encoder =
            PayloadEncoder::new(zstd18, settings, tempfile::tempfile().unwrap()).unwrap();
        encoder.write_all(data).unwrap();
        let (stream, _) = spooled(encoder);
        let mut decoder = zstd::stream::read::Decoder::new(&stream[..]).unwrap();
        decoder.window_log_max(28).unwrap();
        let mut out = Vec::new();
        decoder.read_to_end(&mut out).unwrap();
        assert!(out == data, "bytes differ");
        stream.len()
    }

    #[test]
    fn the_new_bytes_matcher_finds_short_strings_far_back() {
        // Noise of 16 symbols (half a byte of information a byte): 6 MiB of it, then 2
        // MiB where strings of 24 bytes from its first 1.5 MiB (4.5 MiB back or more,
        // where the binary tree's reach of 4 Mi positions ends) alternate with 8 bytes of
        // noise. The level's own matcher hashes 32 bytes: it finds none of them, and the
        // tree finds those it still reaches (on 3 MiB of noise and 1 MiB of strings, all
        // in its reach, both streams come out the same).
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut noise =
            move |n: usize| -> Vec<u8> { (0..n).map(|_| b'a' + (next() % 16) as u8).collect() };
        let mut data = noise(6 << 20);
        // String i is the (40503 i mod 65536)th of the first 1.5 MiB: no two overlap, so
        // none repeats a nearer one.
        for i in 0..1usize << 16 {
            let from = (i * 40503 % (1 << 16)) * 24;
            data.extend_from_within(from..from + 24);
            data.extend_from_slice(&noise(8));
        }
        let level_own = zstd18_size(&data, None);
        let ours = zstd18_size(&data, Some(NEW_BYTES_LONG_MATCHES));
        // Here: 3 733 268 and 3 661 934 bytes.
        assert!(ours + (32 << 10) < level_own, "{ours} vs {level_own}");
    }
}
