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
//! The deflater is the zlib bundled in this crate (built from source, never the system's),
//! so the bytes do not depend on the machine.

use flate2::{Compress, Compression, Crc, Decompress, FlushCompress, FlushDecompress, Status};

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
fn deflate_equals(raw: &[u8], level: u32, body: &[u8]) -> bool {
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
    fn empty_content_round_trips() {
        let member = gzip(b"", 9, None);
        let m = split(&member).unwrap();
        let mut out = Vec::new();
        rebuild(&member[..m.header_len], &m.raw, m.level, &mut out);
        assert_eq!(out, member);
    }
}
