//! Zip archives (jars, wars, wheels) whose deflated members can be re-made.
//!
//! A new version of a jar recompiles most of its classes, and a class that changed a little
//! deflates to bytes that share nothing with its old ones: a patch of the archive's
//! compressed bytes saves next to nothing. But jars are written by `java.util.zip` (and
//! wheels by Python's `zipfile`) over stock zlib, and deflating a member's text again at
//! the same level gives the same bytes. So the codec ships such an archive *expanded*:
//! its bytes with every re-made member's deflate stream replaced by the member's text,
//! patched against the old archive expanded the same way (every member that inflates),
//! plus a [`Layout`] saying where the texts are and at which level each deflates. The
//! decoder deflates them again. Headers, central directory, stored members and members
//! that do not re-make stay as they are, inside the expanded bytes.
//!
//! On the bench's `jvm` pair (Debian's Java libraries across a release, 48 000 deflated
//! members, every one re-made at level 6) this is what a patch can do with class files:
//! `zstd -19 --patch-from` over the jars as stored archives is a quarter of its size over
//! the jars as shipped.
//!
//! Members are found by walking the local headers from the start of the archive (as
//! `unzip` streaming does), not through the central directory: a member's end is where its
//! deflate stream ends, which also serves members with a data descriptor (bit 3, which
//! `java.util.zip` sets when it streams). The walk stops at the first thing it does not
//! understand; what follows stays as it is.

use flate2::{Decompress, FlushDecompress, Status};

use super::gz;
use super::stream::{bad, get, put};
use crate::error::Result;

/// Expanded bytes an archive may come to, on either side: the old archive's expansion
/// stops growing here (its later members stay deflated), and a new archive's members past
/// it are shipped deflated. A decoder refuses larger layouts.
pub const MAX_EXPANDED: u64 = super::WINDOW;

/// The levels tried, stock zlib's default first (`java.util.zip` and Python's `zipfile`
/// both use it).
const LEVELS: [u32; 9] = [6, 9, 1, 2, 3, 4, 5, 7, 8];

/// Deflated members of at least this size that re-make at no level, before any has, after
/// which an archive's other members are not tried (it was written by another deflater).
const GIVE_UP_AFTER: usize = 8;

const LOCAL: &[u8; 4] = b"PK\x03\x04";
const CENTRAL: &[u8; 4] = b"PK\x01\x02";
const DESCRIPTOR: &[u8; 4] = b"PK\x07\x08";
const END: &[u8; 4] = b"PK\x05\x06";

/// Whether bytes start like a zip archive with a local header.
pub fn looks_like(head: &[u8]) -> bool {
    head.starts_with(LOCAL)
}

/// The length `bytes` would expand to by its central directory's sizes (at most
/// [`MAX_EXPANDED`]), for memory estimates only: four times its length where there is no
/// central directory to read.
pub fn claimed_expanded_len(bytes: &[u8]) -> u64 {
    let len = bytes.len() as u64;
    let guess = (4 * len).min(MAX_EXPANDED);
    let from = bytes.len().saturating_sub(22 + 0xffff);
    let Some(end) = bytes[from..].windows(4).rposition(|w| w == END) else {
        return guess;
    };
    let end = from + end;
    let u16_at = |p: usize| -> Option<usize> {
        Some(u16::from_le_bytes(bytes.get(p..p + 2)?.try_into().ok()?) as usize)
    };
    let u32_at = |p: usize| -> Option<usize> {
        Some(u32::from_le_bytes(bytes.get(p..p + 4)?.try_into().ok()?) as usize)
    };
    let central = || -> Option<u64> {
        let (size, at) = (u32_at(end + 12)?, u32_at(end + 16)?);
        let stop = at.checked_add(size)?.min(bytes.len());
        // Texts in, deflate streams out (a tiny member's stream is longer than its text).
        let (mut p, mut texts, mut streams) = (at, 0u64, 0u64);
        while p + 46 <= stop && bytes.get(p..p + 4)? == CENTRAL {
            if u16_at(p + 10)? == 8 {
                streams = streams.saturating_add(u32_at(p + 20)? as u64);
                texts = texts.saturating_add(u32_at(p + 24)? as u64);
            }
            p += 46 + u16_at(p + 28)? + u16_at(p + 30)? + u16_at(p + 32)?;
        }
        let expanded = len.saturating_add(texts).saturating_sub(streams.min(len));
        Some(expanded.min(MAX_EXPANDED))
    };
    central().unwrap_or(guess)
}

/// A re-made member: `raw` bytes as they are (headers, stored members, a data descriptor)
/// come before its text of `text` bytes, which deflates at `level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    /// Bytes kept as they are before the member's text.
    pub raw: u64,
    /// Length of its text.
    pub text: u64,
    /// The zlib level that re-makes its deflate stream.
    pub level: u32,
}

/// Where the texts are in an expanded archive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layout {
    /// The re-made members, in order.
    pub members: Vec<Member>,
    /// Bytes kept as they are after the last member's text.
    pub tail: u64,
}

impl Layout {
    /// The length of the expanded bytes.
    pub fn expanded_len(&self) -> u64 {
        self.members.iter().map(|m| m.raw + m.text).sum::<u64>() + self.tail
    }

    /// Writes the layout: `varint(n)`, then `n` times `varint(raw) varint(text)
    /// varint(level)`, then `varint(tail)`.
    pub fn write(&self, out: &mut Vec<u8>) {
        put(out, self.members.len() as u64);
        for m in &self.members {
            put(out, m.raw);
            put(out, m.text);
            put(out, m.level as u64);
        }
        put(out, self.tail);
    }

    /// Reads a layout, refusing levels outside 1-9 and expanded bytes past
    /// [`MAX_EXPANDED`] before anything large is allocated.
    pub fn read(s: &mut &[u8]) -> Result<Layout> {
        let n = get(s)?;
        // Each member takes at least three bytes of the stream.
        if n > s.len() as u64 / 3 {
            return Err(bad(format!(
                "zip layout of {n} members is longer than its stream"
            )));
        }
        let mut members = Vec::with_capacity(n as usize);
        let mut total = 0u64;
        for _ in 0..n {
            let (raw, text, level) = (get(s)?, get(s)?, get(s)?);
            if !(1..=9).contains(&level) {
                return Err(bad(format!("zip member level {level} is not 1-9")));
            }
            total = total.saturating_add(raw).saturating_add(text);
            if total > MAX_EXPANDED {
                return Err(bad("zip archive expands past the codec's limit"));
            }
            members.push(Member {
                raw,
                text,
                level: level as u32,
            });
        }
        let tail = get(s)?;
        if total.saturating_add(tail) > MAX_EXPANDED {
            return Err(bad("zip archive expands past the codec's limit"));
        }
        Ok(Layout { members, tail })
    }
}

/// A member's deflate stream found by [`walk`], and its text.
struct Deflated<'a> {
    body: &'a [u8],
    text: Vec<u8>,
}

/// Walks the members of `bytes` from its first local header, inflating each deflated one
/// while the texts so far and the bytes left come to at most [`MAX_EXPANDED`]; `keep`
/// says, for each, whether its text goes into the expansion. Returns the expansion, the
/// layout of the texts kept, and the levels `keep` gave.
fn walk(bytes: &[u8], mut keep: impl FnMut(&Deflated<'_>) -> Option<u32>) -> (Vec<u8>, Layout) {
    let mut out = Vec::new();
    let mut layout = Layout::default();
    // Bytes of `bytes` copied to `out` so far.
    let mut copied = 0usize;
    let mut pos = 0usize;
    let u16_at = |p: usize| u16::from_le_bytes([bytes[p], bytes[p + 1]]) as usize;
    let u32_at = |p: usize| {
        u32::from_le_bytes([bytes[p], bytes[p + 1], bytes[p + 2], bytes[p + 3]]) as usize
    };
    while bytes.len() >= pos + 30 && &bytes[pos..pos + 4] == LOCAL {
        let (flags, method, csize) = (u16_at(pos + 6), u16_at(pos + 8), u32_at(pos + 18));
        let data = pos + 30 + u16_at(pos + 26) + u16_at(pos + 28);
        let streamed = flags & 0x08 != 0;
        if data > bytes.len() {
            break;
        }
        // Encrypted members, or sizes in a zip64 extra field: past here is not walked.
        if flags & 0x01 != 0 || csize == 0xffff_ffff {
            break;
        }
        if method != 8 {
            if streamed || data + csize > bytes.len() {
                break;
            }
            pos = data + csize;
            continue;
        }
        // What the expansion may still grow by.
        let room = (MAX_EXPANDED as usize).saturating_sub(out.len() + (bytes.len() - copied));
        let inflated = inflate_stream(&bytes[data..], room);
        let (text, used) = match inflated {
            Some((text, used)) if streamed || used == csize => (text, used),
            _ if streamed || data + csize > bytes.len() => break,
            _ => {
                pos = data + csize;
                continue;
            }
        };
        let member = Deflated {
            body: &bytes[data..data + used],
            text,
        };
        if let Some(level) = keep(&member) {
            out.extend_from_slice(&bytes[copied..data]);
            layout.members.push(Member {
                raw: (data - copied) as u64,
                text: member.text.len() as u64,
                level,
            });
            out.extend_from_slice(&member.text);
            copied = data + used;
        }
        pos = data + used;
        if streamed {
            match descriptor_len(&bytes[pos..]) {
                Some(n) => pos += n,
                None => break,
            }
        }
    }
    out.extend_from_slice(&bytes[copied..]);
    layout.tail = (bytes.len() - copied) as u64;
    (out, layout)
}

/// The length of the data descriptor at the start of `rest`: the one (with or without its
/// signature, 32- or 64-bit sizes) after which the next local header, the central
/// directory or the end record starts.
fn descriptor_len(rest: &[u8]) -> Option<usize> {
    let next = |n: usize| {
        rest.get(n..n + 4)
            .is_some_and(|s| s == LOCAL || s == CENTRAL || s == END)
    };
    let candidates: &[usize] = if rest.starts_with(DESCRIPTOR) {
        &[16, 24]
    } else {
        &[12, 20]
    };
    candidates.iter().copied().find(|&n| next(n))
}

/// Inflates the raw deflate stream at the start of `bytes`, giving up past `max` bytes of
/// text; returns the text and the stream's length.
fn inflate_stream(bytes: &[u8], max: usize) -> Option<(Vec<u8>, usize)> {
    let mut d = Decompress::new(false);
    let mut out = Vec::new();
    loop {
        if out.len() == out.capacity() {
            if out.len() > max {
                return None;
            }
            // Doubling, up to one byte past `max` so that more text than that is noticed.
            let want = (out.capacity() * 2).max(64 << 10).min(max + 1);
            out.reserve_exact(want - out.len());
        }
        let before = (d.total_in(), d.total_out());
        let input = bytes.get(d.total_in() as usize..)?;
        match d
            .decompress_vec(input, &mut out, FlushDecompress::None)
            .ok()?
        {
            Status::StreamEnd => break,
            // No progress with room to write: the stream is truncated.
            _ if (d.total_in(), d.total_out()) == before && out.len() < out.capacity() => {
                return None
            }
            _ => {}
        }
    }
    (out.len() <= max).then(|| (out, d.total_in() as usize))
}

/// The old side: `bytes` with every deflated member that inflates replaced by its text
/// (up to [`MAX_EXPANDED`] in all), the source a new archive's expansion is patched
/// against. The encoder and the decoder both call this on the same bytes.
pub fn expand(bytes: &[u8]) -> Vec<u8> {
    walk(bytes, |_| Some(0)).0
}

/// The new side: `bytes` expanded with the members stock zlib re-makes byte for byte, and
/// their layout; None if none does.
pub fn split(bytes: &[u8]) -> Option<(Vec<u8>, Layout)> {
    let mut last = LEVELS[0];
    let (mut tried, mut made) = (0usize, 0usize);
    let (expanded, layout) = walk(bytes, |m| {
        if made == 0 && tried >= GIVE_UP_AFTER {
            return None;
        }
        let mut levels = std::iter::once(last).chain(LEVELS.iter().copied().filter(|&l| l != last));
        let level = levels.find(|&l| gz::deflate_equals(&m.text, l, m.body));
        match level {
            Some(l) => {
                last = l;
                made += 1;
            }
            None if m.body.len() >= 1024 => tried += 1,
            None => {}
        }
        level
    });
    (!layout.members.is_empty()).then_some((expanded, layout))
}

/// Rebuilds the archive from its expanded bytes and layout into `out`, deflating each text
/// with `deflate` (given the text, its level and where its stream goes in `out`).
pub fn rebuild(
    expanded: &[u8],
    layout: &Layout,
    out: &mut Vec<u8>,
    mut deflate: impl FnMut(&[u8], u32, &mut Vec<u8>) -> Result<()>,
) -> Result<()> {
    if layout.expanded_len() != expanded.len() as u64 {
        return Err(bad("zip layout does not add up to its expanded bytes"));
    }
    let mut at = 0usize;
    for m in &layout.members {
        let (raw, text) = (m.raw as usize, m.text as usize);
        out.extend_from_slice(&expanded[at..at + raw]);
        deflate(&expanded[at + raw..at + raw + text], m.level, out)?;
        at += raw + text;
    }
    out.extend_from_slice(&expanded[at..]);
    Ok(())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    fn deflate(text: &[u8], level: u32) -> Vec<u8> {
        let mut out = Vec::new();
        gz::deflate(text, level, &mut out);
        out
    }

    /// A zip archive of `(name, text, method, level, streamed)` members, with a central
    /// directory, as java.util.zip writes them (streamed members with a signed
    /// descriptor).
    pub(in crate::delta::files) fn archive(members: &[(&str, &[u8], u16, u32, bool)]) -> Vec<u8> {
        let mut z = Vec::new();
        let mut central = Vec::new();
        for &(name, text, method, level, streamed) in members {
            let body = if method == 8 {
                deflate(text, level)
            } else {
                text.to_vec()
            };
            let mut crc = flate2::Crc::new();
            crc.update(text);
            let at = z.len() as u32;
            let flags: u16 = if streamed { 8 } else { 0 };
            let sizes = |v: &mut Vec<u8>| {
                v.extend_from_slice(&crc.sum().to_le_bytes());
                v.extend_from_slice(&(body.len() as u32).to_le_bytes());
                v.extend_from_slice(&(text.len() as u32).to_le_bytes());
            };
            z.extend_from_slice(LOCAL);
            z.extend_from_slice(&20u16.to_le_bytes());
            z.extend_from_slice(&flags.to_le_bytes());
            z.extend_from_slice(&method.to_le_bytes());
            z.extend_from_slice(&[0; 4]);
            if streamed {
                z.extend_from_slice(&[0; 12]);
            } else {
                sizes(&mut z);
            }
            z.extend_from_slice(&(name.len() as u16).to_le_bytes());
            z.extend_from_slice(&0u16.to_le_bytes());
            z.extend_from_slice(name.as_bytes());
            z.extend_from_slice(&body);
            if streamed {
                z.extend_from_slice(DESCRIPTOR);
                sizes(&mut z);
            }
            central.extend_from_slice(CENTRAL);
            central.extend_from_slice(&[20, 0, 20, 0]);
            central.extend_from_slice(&flags.to_le_bytes());
            central.extend_from_slice(&method.to_le_bytes());
            central.extend_from_slice(&[0; 4]);
            sizes(&mut central);
            central.extend_from_slice(&(name.len() as u16).to_le_bytes());
            central.extend_from_slice(&[0; 12]);
            central.extend_from_slice(&at.to_le_bytes());
            central.extend_from_slice(name.as_bytes());
        }
        let cd_at = z.len() as u32;
        z.extend_from_slice(&central);
        z.extend_from_slice(END);
        z.extend_from_slice(&[0; 4]);
        let n = members.len() as u16;
        z.extend_from_slice(&n.to_le_bytes());
        z.extend_from_slice(&n.to_le_bytes());
        z.extend_from_slice(&(central.len() as u32).to_le_bytes());
        z.extend_from_slice(&cd_at.to_le_bytes());
        z.extend_from_slice(&[0; 2]);
        z
    }

    fn class(n: usize, seed: usize) -> Vec<u8> {
        (0..n)
            .map(|i| {
                format!(
                    "method{} calls helper{} at {}\n",
                    i % 97,
                    (i * seed) % 31,
                    i
                )
            })
            .collect::<String>()
            .into_bytes()
    }

    fn round_trip(z: &[u8]) -> Option<Layout> {
        let (expanded, layout) = split(z)?;
        assert_eq!(layout.expanded_len(), expanded.len() as u64);
        let mut stream = Vec::new();
        layout.write(&mut stream);
        let read = Layout::read(&mut &stream[..]).expect("layout reads back");
        assert_eq!(read, layout);
        let mut out = Vec::new();
        rebuild(&expanded, &read, &mut out, |t, l, o| {
            gz::deflate(t, l, o);
            Ok(())
        })
        .expect("rebuilds");
        assert!(out == z, "archive rebuilt byte for byte");
        Some(layout)
    }

    #[test]
    fn members_of_every_kind_round_trip() {
        let (a, b, c) = (class(3000, 7), class(500, 11), class(40, 3));
        let z = archive(&[
            ("META-INF/", b"", 0, 0, false),
            (
                "META-INF/MANIFEST.MF",
                b"Manifest-Version: 1.0\n",
                8,
                6,
                true,
            ),
            ("a/A.class", &a, 8, 6, true),
            ("a/B.class", &b, 8, 9, false),
            ("a/c.txt", &c, 0, 0, false),
            ("a/C.class", &c, 8, 1, true),
        ]);
        let layout = round_trip(&z).expect("re-made");
        let levels: Vec<u32> = layout.members.iter().map(|m| m.level).collect();
        assert_eq!(levels[1..], [6, 9, 1]);
        assert_eq!(claimed_expanded_len(&z), layout.expanded_len());
        // The old side inflates the same members.
        assert_eq!(expand(&z).len() as u64, layout.expanded_len());
        assert!(expand(&z).windows(a.len()).any(|w| w == &a[..]));
    }

    #[test]
    fn another_deflater_gives_up_and_leaves_the_archive_as_it_is() {
        // Level 0 (stored blocks) is a deflate stream zlib makes at no level 1-9.
        let texts: Vec<Vec<u8>> = (0..12).map(|i| class(200, i + 2)).collect();
        let members: Vec<(&str, &[u8], u16, u32, bool)> = texts
            .iter()
            .map(|t| ("x.class", &t[..], 8, 0, false))
            .collect();
        let z = archive(&members);
        assert!(split(&z).is_none());
        // Its members still inflate for the old side.
        let old = expand(&z);
        assert!(old.windows(texts[3].len()).any(|x| x == &texts[3][..]));
    }

    #[test]
    fn damaged_archives_stop_the_walk_without_failing() {
        let a = class(2000, 5);
        let z = archive(&[("a", &a, 8, 6, true), ("b", &a, 8, 6, false)]);
        for cut in [10, 40, 60, 200, z.len() / 2, z.len() - 30] {
            let part = &z[..cut];
            if let Some(l) = round_trip(part) {
                assert!(l.members.len() <= 2);
            }
            assert!(expand(part).len() >= part.len());
        }
        let mut flipped = z.clone();
        flipped[45] ^= 0xff;
        let _ = round_trip(&flipped);
        let _ = expand(&flipped);
    }

    #[test]
    fn hostile_layouts_are_refused() {
        let mut s = Vec::new();
        put(&mut s, 1);
        put(&mut s, 0);
        put(&mut s, 5);
        put(&mut s, 10);
        put(&mut s, 0);
        assert!(Layout::read(&mut &s[..]).is_err(), "level 10");
        let mut s = Vec::new();
        put(&mut s, 1);
        put(&mut s, MAX_EXPANDED);
        put(&mut s, 1);
        put(&mut s, 6);
        put(&mut s, 0);
        assert!(Layout::read(&mut &s[..]).is_err(), "past the limit");
        let mut s = Vec::new();
        put(&mut s, u64::MAX >> 1);
        assert!(
            Layout::read(&mut &s[..]).is_err(),
            "more members than bytes"
        );
        let l = Layout {
            members: vec![Member {
                raw: 3,
                text: 4,
                level: 6,
            }],
            tail: 1,
        };
        let mut out = Vec::new();
        assert!(rebuild(&[0; 7], &l, &mut out, |_, _, _| Ok(())).is_err());
    }

    #[test]
    fn expansion_stops_at_the_limit() {
        // Highly compressible members: 40 of 1 MiB text each (the limit is 16 MiB).
        let t = vec![b'a'; 1 << 20];
        let members: Vec<(&str, &[u8], u16, u32, bool)> =
            (0..40).map(|_| ("z", &t[..], 8, 6, false)).collect();
        let z = archive(&members);
        let old = expand(&z);
        assert!(old.len() as u64 <= MAX_EXPANDED);
        let layout = round_trip(&z).expect("re-made");
        assert!(layout.expanded_len() <= MAX_EXPANDED);
        assert!(layout.members.len() < 40 && layout.members.len() >= 14);
    }
}
