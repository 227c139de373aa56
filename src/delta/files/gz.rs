//! Gzip members that can be re-made exactly.
//!
//! A gzip file in a layer (`changelog.Debian.gz`, man pages) changes completely when one
//! line of its text changes, so a patch of its compressed bytes saves nothing. But most
//! were written by zlib or by `gzip -n` at a standard level, and deflating the text again
//! with the same level gives the same bytes. For such a member the codec ships the text
//! (patched against the old member's text) and the level; the decoder deflates it again.
//! The encoder only chooses this after re-deflating and comparing every byte, and the
//! layer's diff_id is checked at the end either way.
//!
//! The deflater is the stock zlib bundled in this crate (built from source, never the
//! system's), so the bytes do not depend on the machine. A build can still end up with
//! another deflater (zlib-ng, through a feature another crate turns on; see Cargo.toml),
//! which makes other bytes: [`remake_supported`] checks, once, that this build's deflater
//! makes stock zlib's. Where it does not, create ships gzip members whole and apply refuses
//! packages that need one re-made ([`Error::DeflaterMismatch`]).

use std::fmt::Write as _;
use std::sync::{Once, OnceLock};

use flate2::{Compress, Compression, Crc, Decompress, FlushCompress, FlushDecompress, Status};
use sha2::{Digest as _, Sha256};

use crate::error::Error;

/// The largest uncompressed member handled (larger ones are stored as they are).
pub const MAX_RAW: u64 = 32 << 20;

/// Header flag bits we accept: FTEXT (1) and FNAME (8). FHCRC, FEXTRA and FCOMMENT make the
/// member ineligible (rare, and not worth the code).
const ACCEPTED_FLAGS: u8 = 0x01 | 0x08;

/// Levels tried, most common first (`gzip -9n` for Debian's docs, 6 as zlib's default).
const LEVELS: [u32; 9] = [9, 6, 1, 2, 3, 4, 5, 7, 8];

/// A gzip member split into what the decoder cannot recompute (the header) and what it can
/// (the deflate body and the trailer, from `raw` and `level`).
#[derive(Debug, PartialEq, Eq)]
pub struct Member {
    /// Length of the header (10 bytes, plus the file name if any).
    pub header_len: usize,
    /// The uncompressed bytes.
    pub raw: Vec<u8>,
    /// The zlib level that re-deflates `raw` into exactly the member's body.
    pub level: u32,
}

/// Splits `bytes` if it is exactly one gzip member that zlib re-makes byte for byte.
pub fn split(bytes: &[u8]) -> Option<Member> {
    let header_len = header_len(bytes)?;
    if bytes.len() < header_len + 8 {
        return None;
    }
    let body = &bytes[header_len..bytes.len() - 8];
    let trailer = &bytes[bytes.len() - 8..];
    let isize = u32::from_le_bytes([trailer[4], trailer[5], trailer[6], trailer[7]]) as u64;
    // ISIZE is the length mod 2^32; a larger claim than we handle is refused before
    // anything is allocated.
    if isize > MAX_RAW {
        return None;
    }
    let raw = inflate(body, isize as usize)?;
    let mut crc = Crc::new();
    crc.update(&raw);
    if crc.sum().to_le_bytes() != trailer[..4] {
        return None;
    }
    LEVELS
        .iter()
        .find(|&&level| deflate_equals(&raw, level, body))
        .map(|&level| Member {
            header_len,
            raw,
            level,
        })
}

/// The length of a gzip header we can keep as it is, or None.
pub fn header_len(bytes: &[u8]) -> Option<usize> {
    if bytes.len() < 18 || bytes[0] != 0x1f || bytes[1] != 0x8b || bytes[2] != 8 {
        return None;
    }
    let flags = bytes[3];
    if flags & !ACCEPTED_FLAGS != 0 {
        return None;
    }
    if flags & 0x08 == 0 {
        return Some(10);
    }
    let name_end = bytes[10..].iter().take(4096).position(|&b| b == 0)?;
    Some(10 + name_end + 1)
}

/// Inflates a raw deflate `body` that must end exactly at its end and give `expected`
/// bytes.
fn inflate(body: &[u8], expected: usize) -> Option<Vec<u8>> {
    let mut d = Decompress::new(false);
    // One spare byte, so that more output than `expected` is noticed; decompress_vec
    // never grows the vector.
    let mut out = Vec::with_capacity(expected + 1);
    loop {
        let (before_in, before_out) = (d.total_in(), d.total_out());
        let input = body.get(before_in as usize..)?;
        let status = d
            .decompress_vec(input, &mut out, FlushDecompress::Finish)
            .ok()?;
        if status == Status::StreamEnd {
            break;
        }
        if d.total_in() == before_in && d.total_out() == before_out {
            // Truncated input, or the output is full: either way not what it claims.
            return None;
        }
    }
    (d.total_in() as usize == body.len() && out.len() == expected).then_some(out)
}

/// Deflates `raw` at `level` (raw deflate, 32 KiB window, memLevel 8, default strategy).
pub fn deflate(raw: &[u8], level: u32, out: &mut Vec<u8>) {
    let mut c = Compress::new(Compression::new(level), false);
    out.reserve(raw.len() / 2 + 64);
    loop {
        let consumed = c.total_in() as usize;
        if out.len() == out.capacity() {
            out.reserve(out.capacity().max(4096));
        }
        // Errors cannot happen with a fresh stream and room to write; the loop ends when
        // zlib says the stream is finished.
        match c.compress_vec(&raw[consumed..], out, FlushCompress::Finish) {
            Ok(Status::StreamEnd) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Whether deflating `raw` at `level` gives exactly `body`. Output is compared as it is
/// made, so a level that does not fit is given up at its first differing byte.
pub(super) fn deflate_equals(raw: &[u8], level: u32, body: &[u8]) -> bool {
    let mut c = Compress::new(Compression::new(level), false);
    let mut buf = Vec::with_capacity(64 << 10);
    let mut matched = 0usize;
    loop {
        buf.clear();
        let consumed = c.total_in() as usize;
        let input = &raw[consumed..(consumed + (64 << 10)).min(raw.len())];
        let flush = if consumed + input.len() == raw.len() {
            FlushCompress::Finish
        } else {
            FlushCompress::None
        };
        let status = match c.compress_vec(input, &mut buf, flush) {
            Ok(s) => s,
            Err(_) => return false,
        };
        let Some(expected) = body.get(matched..matched + buf.len()) else {
            return false;
        };
        if expected != &buf[..] {
            return false;
        }
        matched += buf.len();
        if status == Status::StreamEnd {
            return matched == body.len();
        }
    }
}

/// Length and SHA-256 of stock zlib's raw deflate of [`sample_text`] at levels 1 to 9
/// (32 KiB window, memLevel 8, default strategy). Checked identical with zlib 1.2.11,
/// 1.2.13 and 1.3.2 (the bundled one), with Python's `zlib.compressobj(level,
/// zlib.DEFLATED, -15, 8)` over the system's zlib 1.2.13, and, for levels 6 and 9, with the
/// body of `gzip -n -6` and `gzip -n -9`.
const STOCK_DEFLATE: [(usize, &str); 9] = [
    (
        3178,
        "2ad6bc95bb16a351e77616857b1afea7c70bda98bd8b78cf0938194d5959fa99",
    ),
    (
        3110,
        "63ca7fe534edf0a7be5ae36afcf3ee51d9ec1582c22ff1072ecd9c5171dbdf8e",
    ),
    (
        3030,
        "d8c4c9e5bc2606e9f93a9a98612d6b40d692af9440991d9ac92ec9e9a225d57d",
    ),
    (
        2887,
        "4117ca9e0f42e82ea3f87f07c6b0789acb41a08de52491118ad8a78180980119",
    ),
    (
        2799,
        "9bf69ffa81830d683cce30b555b8fb0da6bed8ff767107165e8bce4926627104",
    ),
    (
        2772,
        "f1cf90e95511bb0407b4bb9f9d1248da26a696f615723a8d5137d55ffa6dded8",
    ),
    (
        2766,
        "fab96a835369bd0224aecfaeab173cee4464cf859e7a862eeaad5b53b95e059d",
    ),
    (
        2743,
        "597bdc08dc90a862d00073be5ed0a77c95e433088458bbf8ee1115ddefa214b0",
    ),
    (
        2743,
        "597bdc08dc90a862d00073be5ed0a77c95e433088458bbf8ee1115ddefa214b0",
    ),
];

/// The known input of the self-check: 13,273 bytes of a Debian-changelog-like text, made
/// from a fixed xorshift sequence so that no file has to be shipped.
fn sample_text() -> Vec<u8> {
    const WORDS: [&str; 24] = [
        "fix",
        "update",
        "package",
        "upstream",
        "release",
        "build",
        "the",
        "for",
        "with",
        "new",
        "version",
        "patch",
        "security",
        "debian",
        "policy",
        "standards",
        "bump",
        "drop",
        "add",
        "support",
        "test",
        "docs",
        "man",
        "page",
    ];
    let mut x: u32 = 0x2545_f491;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x as usize
    };
    let mut out = String::with_capacity(14 << 10);
    // Writing to a String cannot fail.
    for e in 0..40 {
        let _ = write!(
            out,
            "pkg (2.{}.{}-{}) unstable; urgency=medium\n\n",
            e / 10,
            e % 10,
            1 + next() % 3
        );
        for _ in 0..2 + next() % 4 {
            let n = 3 + next() % 8;
            let words: Vec<&str> = (0..n).map(|_| WORDS[next() % WORDS.len()]).collect();
            let closes = 100_000 + next() % 900_000;
            let _ = writeln!(out, "  * {} (Closes: #{closes})", words.join(" "));
        }
        let day = 1 + next() % 28;
        let _ = write!(
            out,
            "\n -- Jane Doe <jane@example.org>  Mon, {day:02} Jan 2024 12:00:00 +0000\n\n"
        );
    }
    out.into_bytes()
}

/// The levels at which this build's deflater does not make stock zlib's bytes from the
/// self-check's known input (empty on a stock zlib build).
pub fn self_check_failures() -> Vec<u32> {
    let text = sample_text();
    let mut out = Vec::new();
    (1..=9)
        .zip(STOCK_DEFLATE)
        .filter(|&(level, (len, sha))| {
            out.clear();
            deflate(&text, level, &mut out);
            out.len() != len || hex::encode(Sha256::digest(&out)) != sha
        })
        .map(|(level, _)| level)
        .collect()
}

/// Whether this build's deflater re-makes stock zlib's deflate streams byte for byte, as
/// the gzip members of the files codec need (computed once: nine deflates of 13 KB).
///
/// False when the build links another deflater than stock zlib, such as zlib-ng through the
/// `libz-sys/zlib-ng` or `flate2/zlib-ng` features (see Cargo.toml). Such a build's
/// packages ship gzip members whole, and it refuses packages that need one re-made
/// ([`Error::DeflaterMismatch`]).
pub fn remake_supported() -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        let failures = self_check_failures();
        if !failures.is_empty() {
            tracing::debug!(levels = ?failures, "the deflater does not make stock zlib's bytes");
        }
        failures.is_empty()
    })
}

/// [`remake_supported`] for create: when false, says once why gzip members are shipped
/// whole.
pub(crate) fn remake_at_create() -> bool {
    let supported = remake_supported();
    if !supported {
        static WARNED: Once = Once::new();
        WARNED.call_once(|| {
            tracing::warn!(
                "this build's zlib (e.g. zlib-ng) does not re-make stock zlib's deflate \
                 streams byte for byte: gzip members are shipped whole (a larger package); \
                 rebuild docker-delta without the libz-sys/zlib-ng or flate2/zlib-ng feature"
            )
        });
    }
    supported
}

/// Fails with [`Error::DeflaterMismatch`] for `what` unless [`remake_supported`]: apply's
/// check before re-making a gzip member.
pub(crate) fn require_remake(what: &str) -> Result<(), Error> {
    if remake_supported() {
        Ok(())
    } else {
        Err(Error::DeflaterMismatch {
            what: what.to_string(),
        })
    }
}

/// Appends the member rebuilt from its header, text and level.
pub fn rebuild(header: &[u8], raw: &[u8], level: u32, out: &mut Vec<u8>) {
    out.extend_from_slice(header);
    deflate(raw, level, out);
    let mut crc = Crc::new();
    crc.update(raw);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    out.extend_from_slice(&(raw.len() as u32).to_le_bytes());
}

/// Inflates a whole gzip member (the source of a patch), refusing one that claims or
/// holds more than [`MAX_RAW`] bytes.
pub fn inflate_member(bytes: &[u8]) -> Option<Vec<u8>> {
    let header_len = header_len(bytes)?;
    if bytes.len() < header_len + 8 {
        return None;
    }
    let trailer = &bytes[bytes.len() - 8..];
    let isize = u32::from_le_bytes([trailer[4], trailer[5], trailer[6], trailer[7]]) as u64;
    if isize > MAX_RAW {
        return None;
    }
    inflate(&bytes[header_len..bytes.len() - 8], isize as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn text(n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| format!("line {i}: the quick brown fox {}\n", i * 7 % 13))
            .collect::<String>()
            .into_bytes()
    }

    fn gzip(raw: &[u8], level: u32, name: Option<&str>) -> Vec<u8> {
        let mut b = flate2::GzBuilder::new().mtime(0);
        if let Some(n) = name {
            b = b.filename(n);
        }
        let mut w = b.write(Vec::new(), Compression::new(level));
        w.write_all(raw).unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn zlib_members_split_and_rebuild_exactly() {
        for level in [1, 6, 9] {
            for name in [None, Some("changelog")] {
                let raw = text(5000);
                let member = gzip(&raw, level, name);
                let m = split(&member).expect("splits");
                assert_eq!(m.raw, raw);
                let mut out = Vec::new();
                rebuild(&member[..m.header_len], &m.raw, m.level, &mut out);
                assert_eq!(out, member, "level {level} name {name:?}");
                assert_eq!(inflate_member(&member).unwrap(), raw);
            }
        }
    }

    #[test]
    fn anything_else_is_not_split() {
        let raw = text(100);
        let member = gzip(&raw, 9, None);
        // Trailing bytes, a second member, a wrong CRC, a lying ISIZE, truncation.
        let mut trailing = member.clone();
        trailing.push(0);
        let mut two = member.clone();
        two.extend_from_slice(&member);
        let mut bad_crc = member.clone();
        let n = bad_crc.len();
        bad_crc[n - 8] ^= 1;
        let mut big = member.clone();
        big[n - 1] = 0xff;
        for (what, b) in [
            ("trailing", trailing),
            ("two members", two),
            ("bad crc", bad_crc),
            ("huge isize", big),
            ("truncated", member[..n - 3].to_vec()),
            ("not gzip", raw.clone()),
            ("empty", Vec::new()),
        ] {
            assert!(split(&b).is_none(), "{what}");
        }
        // A stored (level 0) member is valid gzip, but not one zlib's levels 1-9 re-make.
        assert!(split(&gzip(&raw, 0, None)).is_none());
    }

    #[test]
    fn the_self_check_input_is_the_one_the_constants_were_made_from() {
        let t = sample_text();
        assert_eq!(t.len(), 13_273);
        assert_eq!(
            hex::encode(Sha256::digest(&t)),
            "3e6ac6e1acb85856da524f882cd42ce1f20116f02ef4a361bf02ab2615d01591"
        );
    }

    /// On a stock zlib build (every build but the zlib-ng one of cli/tests/zlib.rs, which runs
    /// only that file's ignored tests) the self-check passes at every level.
    #[test]
    fn the_self_check_passes_on_stock_zlib() {
        assert_eq!(self_check_failures(), Vec::<u32>::new());
        assert!(remake_supported());
        assert!(remake_at_create());
        assert!(require_remake("a test").is_ok());
    }

    #[test]
    fn empty_content_round_trips() {
        let member = gzip(b"", 9, None);
        let m = split(&member).unwrap();
        let mut out = Vec::new();
        rebuild(&member[..m.header_len], &m.raw, m.level, &mut out);
        assert_eq!(out, member);
    }
}
