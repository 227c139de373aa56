//! The payload lanes' share of create's memory bound: what each lane's encoder holds (an
//! estimate that errs high, from the encoder's settings and the bytes it was given), and
//! the budget the lanes draw on ([`LaneMemory`]).
//!
//! The encoders of the structure and difference lanes have their memory fixed by their
//! settings: it is taken when the package is started. The new bytes' lane grows: zstd's
//! window fills as bytes come (up to 256 MiB, beside about 116 MiB of match-finder
//! tables). While layers are still being encoded the lanes may hold [`LANE_MEMORY`], and
//! the codec's searches [`CHUNK_MEMORY`](crate::delta::files::CHUNK_MEMORY) beside them;
//! a lane that would pass its share waits, its bytes kept in its raw spool on disk, and
//! goes on once the searches are over (its stream is the same whenever its bytes come).
//! Then the lanes may hold both shares together; a lane that needs more than that (levels
//! asked for by name: xz 9's encoder alone takes 740 MiB) goes on once it is alone.
//!
//! To apply, each lane's decoder counts what it decoded ([`LaneHold`]): it holds that much,
//! up to its window. The files codec keeps fewer spare buffers while the lanes hold much
//! (see `files::Decoder::beside`).

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::lanes::ZSTD_JOB_SIZE;
use super::{CompressionSpec, LaneSettings, PayloadCompression, SmallLane};

const MIB: u64 = 1 << 20;

/// What the payload lanes' encoders may hold together while layers are still being
/// encoded (the codec's searches hold up to
/// [`CHUNK_MEMORY`](crate::delta::files::CHUNK_MEMORY) beside them); once they are over,
/// the lanes may hold both. The structure and difference lanes' xz encoders take 96 and
/// 50 MiB, which leaves 158 MiB to the new bytes' lane: its xz while it is small (150
/// MiB), or zstd 18's tables (116 MiB) and the first 42 MiB of its window. A layer with
/// more new bytes than that (the ml pair's 63 MB, the go pair's 260 MB) has the rest
/// compressed once its searches are done. Before this share, create peaked at 490 MiB on
/// the ml pair and 580 MiB on an image holding both the go pair's and the ml pair's new
/// layers (the new bytes' window full beside the searches); see docs/BENCHMARKS.md.
pub const LANE_MEMORY: u64 = 304 << 20;

/// The memory the payload lanes' encoders hold, against a limit.
#[derive(Debug)]
pub(super) struct LaneMemory {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Debug)]
struct State {
    /// Bytes the lanes hold (or have set aside for a lane not started yet).
    held: u64,
    /// The most they may hold, but for a lane alone.
    limit: u64,
}

impl LaneMemory {
    /// A budget of [`LANE_MEMORY`], for while layers are being encoded.
    pub(super) fn new() -> Arc<LaneMemory> {
        Arc::new(LaneMemory {
            state: Mutex::new(State {
                held: 0,
                limit: LANE_MEMORY,
            }),
            changed: Condvar::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The searches are over: the lanes may take their share too.
    pub(super) fn searches_over(&self) {
        self.lock().limit = LANE_MEMORY + crate::delta::files::CHUNK_MEMORY;
        self.changed.notify_all();
    }

    /// Takes `n` bytes whatever is held already: an encoder whose memory its settings fix,
    /// taken before any lane may grow.
    pub(super) fn set_aside(&self, n: u64) {
        self.lock().held += n;
    }

    /// Gives back `n` bytes.
    pub(super) fn give(&self, n: u64) {
        let mut s = self.lock();
        s.held = s.held.saturating_sub(n);
        drop(s);
        self.changed.notify_all();
    }

    /// Takes `n` more bytes for a lane that holds `mine`, once they fit under the limit or
    /// the lane holds all that is held; gives up when `stop` is set.
    fn take(&self, n: u64, mine: u64, stop: &AtomicBool) -> io::Result<()> {
        let waits = |s: &State| s.held + n > s.limit && s.held > mine;
        let mut s = self.lock();
        if waits(&s) {
            tracing::debug!(
                held = s.held,
                limit = s.limit,
                wanted = n,
                "a payload lane waits for memory (its bytes wait in its spool)"
            );
        }
        while waits(&s) {
            if stop.load(Ordering::Relaxed) {
                return Err(io::Error::other("stopped"));
            }
            s = self
                .changed
                .wait_timeout(s, Duration::from_millis(50))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        s.held += n;
        Ok(())
    }

    /// Bytes held now (for tests and logs).
    #[cfg(test)]
    pub(super) fn held(&self) -> u64 {
        self.lock().held
    }
}

/// One lane's hold on [`LaneMemory`]: it grows to what the lane's encoder needs as bytes
/// are given to it ([`Gate::feed`]) and is given back when dropped (the encoder's thread
/// ends).
pub(super) struct Gate {
    memory: Arc<LaneMemory>,
    /// What the encoder holds once given so many bytes.
    cost: Box<dyn Fn(u64) -> u64 + Send>,
    /// What the lane holds.
    held: u64,
}

impl Gate {
    /// A lane that holds `held` already (set aside for it) and needs `cost(bytes)`.
    pub(super) fn new(
        memory: Arc<LaneMemory>,
        held: u64,
        cost: impl Fn(u64) -> u64 + Send + 'static,
    ) -> Gate {
        Gate {
            memory,
            cost: Box::new(cost),
            held,
        }
    }

    /// Waits until the encoder may be given bytes up to `to` (counted from the lane's
    /// start), unless `stop` is set.
    pub(super) fn feed(&mut self, to: u64, stop: &AtomicBool) -> io::Result<()> {
        let need = (self.cost)(to);
        if need > self.held {
            self.memory.take(need - self.held, self.held, stop)?;
            tracing::trace!(fed = to, held = need, "a payload lane took memory");
            self.held = need;
        }
        Ok(())
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.memory.give(self.held);
    }
}

/// What a lane's encoder holds once given `fed` bytes: `compression`'s with `settings`,
/// or while the lane holds at most `small.limit` bytes, `small`'s xz.
pub(super) fn lane_memory(
    compression: CompressionSpec,
    settings: &LaneSettings,
    small: Option<&SmallLane>,
    fed: u64,
) -> u64 {
    match small {
        Some(small) if fed <= small.limit => xz_memory(small.level, &small.settings),
        _ => encoder_memory(compression, settings, fed),
    }
}

/// What an encoder of `compression` with `settings` holds once given `fed` bytes.
pub(super) fn encoder_memory(c: CompressionSpec, settings: &LaneSettings, fed: u64) -> u64 {
    match c.algorithm {
        PayloadCompression::None => 0,
        PayloadCompression::Gzip => MIB,
        PayloadCompression::Xz => xz_memory(c.level as u32, settings),
        PayloadCompression::Zstd => zstd_memory(c.level, settings, fed),
    }
}

/// The most an encoder of `compression` with `settings` holds, whatever it is given.
pub(super) fn most_memory(c: CompressionSpec, settings: &LaneSettings) -> u64 {
    encoder_memory(c, settings, u64::MAX)
}

/// xz's encoder at `level`: LZMA2's binary-tree match finder takes a hash table of half
/// the dictionary rounded up to a power of two (4 bytes an entry), two 4-byte links a
/// dictionary byte, and a buffer of one and a half dictionaries; all of it is used once a
/// dictionary of bytes went through; and some 4 MiB of state and buffers. Measured here
/// (RSS after 24 MiB): 96 MiB with 8 MiB, 50 with 4 MiB, 150 with 12 MiB.
fn xz_memory(level: u32, settings: &LaneSettings) -> u64 {
    let dict = match level {
        0..=7 => u64::from(settings.xz_dict),
        8 => 32 * MIB,
        _ => MAX_XZ_DICTIONARY,
    };
    2 * dict.next_power_of_two() + dict * 19 / 2 + 4 * MIB
}

/// zstd's encoder at `level` (on `settings.zstd`'s workers and window, with long-distance
/// matching, as `lanes::zstd_encoder` makes it): the level's match-finder tables (4 bytes an
/// entry; one set a worker), the long-distance matcher's table (8 bytes an entry: 2^hash
/// log of `settings.zstd_ldm`, else one entry every 2^4 to 2^7 bytes of the window by
/// strategy), and the window, which fills as bytes come; with workers, two 16 MiB jobs
/// each and the round buffer's slack too. Measured here for lane 1 (zstd 18, a 256 MiB
/// window, no workers): 116 MiB plus what the window holds.
fn zstd_memory(level: i32, settings: &LaneSettings, fed: u64) -> u64 {
    // (chain log, hash log, strategy) of zstd's levels 1-22 for inputs over 256 KiB.
    const LEVELS: [(u32, u32, u32); 22] = [
        (13, 14, 1),
        (15, 16, 1),
        (16, 17, 2),
        (18, 18, 2),
        (18, 19, 3),
        (18, 19, 4),
        (19, 20, 4),
        (19, 20, 5),
        (20, 21, 5),
        (21, 22, 5),
        (21, 22, 5),
        (22, 23, 5),
        (22, 22, 6),
        (22, 23, 6),
        (23, 23, 6),
        (22, 22, 7),
        (23, 22, 7),
        (23, 22, 8),
        (24, 22, 9),
        (25, 23, 9),
        (26, 24, 9),
        (27, 25, 9),
    ];
    let (workers, window_log, _) = settings.zstd;
    let i = (level.clamp(1, 22) - 1) as usize;
    let (chain, hash, strategy) = LEVELS[i];
    let tables = (4u64 << chain) + (4u64 << hash);
    let ldm_hash_log = match settings.zstd_ldm {
        Some(ldm) => ldm.hash_log,
        None => window_log.saturating_sub(7 - strategy / 3).max(6),
    };
    let ldm = 8u64 << ldm_hash_log;
    let window = 1u64 << window_log;
    let job = u64::from(ZSTD_JOB_SIZE);
    let workers = u64::from(workers);
    let own = if workers == 0 {
        tables
    } else {
        workers * (tables + 2 * job) + (workers + 2) * job
    };
    own + ldm + fed.min(window) + 4 * MIB
}

// What the lanes' decoders hold, to apply.

/// The largest dictionary of xz's presets (9): what an xz lane's decoder holds at most.
pub(super) const MAX_XZ_DICTIONARY: u64 = 64 << 20;

/// What a lane's decoder holds as it goes: the bytes it decoded, up to its window (the
/// earlier bytes that later ones may copy).
#[derive(Debug)]
pub(super) struct LaneHold {
    decoded: AtomicU64,
    /// zstd's window (from the frame header), xz's largest dictionary, or 0.
    window: u64,
}

impl LaneHold {
    /// A decoder with a window of `window` bytes, that decoded nothing yet.
    pub(super) fn new(window: u64) -> LaneHold {
        LaneHold {
            decoded: AtomicU64::new(0),
            window,
        }
    }

    /// What it holds now.
    pub(super) fn held(&self) -> u64 {
        self.decoded.load(Ordering::Relaxed).min(self.window)
    }
}

/// A lane's decoder, counting what it decodes into its [`LaneHold`].
pub(super) struct Counted {
    inner: Box<dyn Read + Send>,
    hold: Arc<LaneHold>,
}

impl Counted {
    pub(super) fn new(inner: Box<dyn Read + Send>, hold: Arc<LaneHold>) -> Counted {
        Counted { inner, hold }
    }
}

impl Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hold.decoded.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// The window size a zstd frame's header declares (RFC 8878, 3.1.1.1): `None` when `head`
/// does not start with a whole frame header.
pub(super) fn zstd_window(head: &[u8]) -> Option<u64> {
    let (magic, rest) = head.split_first_chunk::<4>()?;
    if u32::from_le_bytes(*magic) != 0xFD2F_B528 {
        return None;
    }
    let (&descriptor, rest) = rest.split_first()?;
    if descriptor & 0x20 == 0 {
        // A window descriptor: 2^(10 + exponent), plus mantissa eighths of it.
        let &w = rest.first()?;
        let base = 1u64 << (10 + u32::from(w >> 3));
        return Some(base + base / 8 * u64::from(w & 7));
    }
    // A single segment: the window is the frame's content size, after the dictionary id.
    let id_len = [0, 1, 2, 4][usize::from(descriptor & 3)];
    let size_len = [1, 2, 4, 8][usize::from(descriptor >> 6)];
    let field = rest.get(id_len..id_len + size_len)?;
    let mut size = [0u8; 8];
    size[..size_len].copy_from_slice(field);
    let size = u64::from_le_bytes(size);
    Some(if size_len == 2 { size + 256 } else { size })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xz(dict: u32) -> LaneSettings {
        LaneSettings {
            zstd: (0, 0, 0),
            zstd_ldm: None,
            xz_dict: dict << 20,
            xz_extreme: false,
        }
    }

    #[test]
    fn the_model_errs_high_of_what_was_measured() {
        // RSS measured after 24 MiB through each encoder (xz) and 300 MiB (zstd).
        let mib = |n: u64| n * MIB;
        let xz6 = CompressionSpec {
            algorithm: PayloadCompression::Xz,
            level: 6,
        };
        for (dict, measured) in [(8, 96), (4, 50), (12, 150)] {
            let m = most_memory(xz6, &xz(dict));
            assert!(m >= mib(measured) && m <= mib(measured + 8), "{dict}: {m}");
        }
        let zstd18 = CompressionSpec {
            algorithm: PayloadCompression::Zstd,
            level: 18,
        };
        let lane1 = LaneSettings {
            zstd: (0, 28, 9),
            ..xz(16)
        };
        assert_eq!(encoder_memory(zstd18, &lane1, 0), mib(116));
        assert_eq!(encoder_memory(zstd18, &lane1, mib(100)), mib(216));
        assert_eq!(most_memory(zstd18, &lane1), mib(372));
    }

    #[test]
    fn a_lane_waits_for_what_others_hold_and_goes_on_alone() {
        let memory = LaneMemory::new();
        memory.set_aside(LANE_MEMORY - 10 * MIB);
        let stop = Arc::new(AtomicBool::new(false));
        let mut gate = Gate::new(Arc::clone(&memory), 0, |fed| fed);
        gate.feed(10 * MIB, &stop).expect("fits");
        assert_eq!(memory.held(), LANE_MEMORY);
        // Past the limit: it waits until what was set aside is given back.
        let other = Arc::clone(&memory);
        let giver = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            other.give(LANE_MEMORY - 10 * MIB);
        });
        let started = std::time::Instant::now();
        gate.feed(LANE_MEMORY + MIB, &stop).expect("alone");
        assert!(started.elapsed() >= Duration::from_millis(150));
        giver.join().expect("giver");
        assert_eq!(memory.held(), LANE_MEMORY + MIB);
        drop(gate);
        assert_eq!(memory.held(), 0);
    }

    #[test]
    fn a_waiting_lane_stops_when_told() {
        let memory = LaneMemory::new();
        memory.set_aside(LANE_MEMORY);
        let stop = Arc::new(AtomicBool::new(false));
        let mut gate = Gate::new(Arc::clone(&memory), 0, |fed| fed);
        let stopper = Arc::clone(&stop);
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            stopper.store(true, Ordering::Relaxed);
        });
        assert!(gate.feed(MIB, &stop).is_err());
        t.join().expect("stopper");
        drop(gate);
        assert_eq!(memory.held(), LANE_MEMORY);
    }

    #[test]
    fn the_lanes_take_the_searches_share_once_they_are_over() {
        let memory = LaneMemory::new();
        memory.set_aside(LANE_MEMORY);
        let stop = AtomicBool::new(false);
        memory.searches_over();
        let mut gate = Gate::new(Arc::clone(&memory), 0, |fed| fed);
        gate.feed(crate::delta::files::CHUNK_MEMORY, &stop)
            .expect("the searches' share");
    }
}

#[cfg(test)]
mod decoder_tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_zstd_frames_window_is_read_from_its_header() {
        for log in [10u32, 20, 24, 28] {
            let mut e = zstd::stream::write::Encoder::new(Vec::new(), 3).expect("encoder");
            e.window_log(log).expect("window");
            e.write_all(&[7u8; 5000]).expect("write");
            let frame = e.finish().expect("finish");
            assert_eq!(zstd_window(&frame), Some(1 << log), "window log {log}");
        }
        // A single segment (the whole content in one buffer, its size known): the window
        // is the content size.
        let frame = zstd::bulk::compress(&[1u8; 70_000], 3).expect("compress");
        assert_eq!(zstd_window(&frame), Some(70_000));
        let frame = zstd::bulk::compress(&[1u8; 300], 3).expect("compress");
        assert_eq!(zstd_window(&frame), Some(300));
        assert_eq!(zstd_window(b"\x28\xb5\x2f"), None);
        assert_eq!(zstd_window(b"not zstd at all"), None);
        assert_eq!(zstd_window(&[0x28, 0xb5, 0x2f, 0xfd, 0x00]), None);
    }

    #[test]
    fn a_lane_decoder_holds_what_it_decoded_up_to_its_window() {
        let hold = Arc::new(LaneHold::new(1000));
        let mut r = Counted::new(Box::new(&[5u8; 1500][..]), Arc::clone(&hold));
        let mut buf = [0u8; 600];
        r.read_exact(&mut buf).expect("read");
        assert_eq!(hold.held(), 600);
        io::copy(&mut r, &mut io::sink()).expect("copy");
        assert_eq!(hold.held(), 1000);
    }
}
