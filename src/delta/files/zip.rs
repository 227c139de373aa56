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
//!
//! A new jar also keeps many members as they were (a class nobody touched, a resource): a
//! member whose deflate stream the old archive holds byte for byte is not deflated again
//! at all, by the encoder (to see that it re-makes) or by the decoder. Its layout entry
//! names the old member ([`Remade::Old`]), whose stream the decoder copies once it has
//! checked that their texts are the same. This also serves archives from other deflaters
//! than stock zlib, whose unchanged members re-make at no level.

use std::collections::HashMap;
use std::ops::Range;

use flate2::{Decompress, FlushDecompress, Status};

use super::gz;
use super::stream::{bad, get, put, unzigzag, zigzag};
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
/// come before its text of `text` bytes, whose deflate stream is made again as `remade`
/// says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    /// Bytes kept as they are before the member's text.
    pub raw: u64,
    /// Length of its text.
    pub text: u64,
    /// How its deflate stream is made again.
    pub remade: Remade,
}

/// How a member's deflate stream is made again from its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remade {
    /// Deflated by stock zlib at this level (1-9).
    Level(u32),
    /// Copied from the old archive the expanded bytes are patched against: the deflate
    /// stream of its member `k`, counting the members [`expand`] inflates from 0. Its text
    /// is this member's.
    Old(u64),
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

    /// Whether a member's stream is copied from the old archive ([`Remade::Old`]): the
    /// layout then needs one to rebuild.
    pub fn refers_to_old(&self) -> bool {
        self.members
            .iter()
            .any(|m| matches!(m.remade, Remade::Old(_)))
    }

    /// Writes the layout: `varint(n)`, then `n` times `varint(raw) varint(text)
    /// varint(remade)`, then `varint(tail)`. `remade` is the level (1-9), or for
    /// [`Remade::Old`] 0 if `k` is the old member predicted (`predicted_old`: members
    /// kept as they were mostly stay where they were among the others), else
    /// `9 + zigzag(k - predicted)`.
    pub fn write(&self, out: &mut Vec<u8>) {
        put(out, self.members.len() as u64);
        let mut last = None;
        for (i, m) in self.members.iter().enumerate() {
            put(out, m.raw);
            put(out, m.text);
            match m.remade {
                Remade::Level(level) => put(out, level as u64),
                Remade::Old(k) => {
                    let step = k.wrapping_sub(predicted_old(last, i)) as i64;
                    match zigzag(step) {
                        0 => put(out, 0),
                        z => put(out, 9 + z),
                    }
                    last = Some((i, k));
                }
            }
        }
        put(out, self.tail);
    }

    /// Reads a layout, refusing old members outside 0 to 2^32 and expanded bytes past
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
        let mut last = None;
        for i in 0..n as usize {
            let (raw, text, level) = (get(s)?, get(s)?, get(s)?);
            let remade = match level {
                1..=9 => Remade::Level(level as u32),
                _ => {
                    let z = level.saturating_sub(9);
                    let step = unzigzag(z);
                    let k = predicted_old(last, i).wrapping_add(step as u64);
                    if k > u32::MAX as u64 {
                        return Err(bad(format!(
                            "zip member {i} names old member {} (not 0 to 2^32)",
                            k as i64
                        )));
                    }
                    last = Some((i, k));
                    Remade::Old(k)
                }
            };
            total = total.saturating_add(raw).saturating_add(text);
            if total > MAX_EXPANDED {
                return Err(bad("zip archive expands past the codec's limit"));
            }
            members.push(Member { raw, text, remade });
        }
        let tail = get(s)?;
        if total.saturating_add(tail) > MAX_EXPANDED {
            return Err(bad("zip archive expands past the codec's limit"));
        }
        Ok(Layout { members, tail })
    }
}

/// The old member a layout's member `i` most likely takes its stream from, given the last
/// one before it that did (`(its index, its old member)`): as far on in the old archive as
/// `i` is past it (members in the same order, the changed ones deflated again), or `i`
/// itself at first. [`Layout::write`] writes the old member's distance from it.
fn predicted_old(last: Option<(usize, u64)>, i: usize) -> u64 {
    match last {
        Some((j, k)) => k.wrapping_add((i - j) as u64),
        None => i as u64,
    }
}

/// A member's deflate stream found by [`walk`], and its text.
struct Deflated<'a> {
    body: &'a [u8],
    text: Vec<u8>,
}

/// What [`walk`] made of an archive.
struct Walked {
    /// The expansion.
    expanded: Vec<u8>,
    /// Where its texts are, and how `keep` said each is re-made.
    layout: Layout,
    /// For each text kept: where its deflate stream is in the archive and where its text
    /// is in the expansion.
    spans: Vec<(Range<usize>, Range<usize>)>,
}

/// Walks the members of `bytes` from its first local header, inflating each deflated one
/// while the texts so far and the bytes left come to at most [`MAX_EXPANDED`]; `keep`
/// says, for each, whether its text goes into the expansion, and how it is re-made.
fn walk(bytes: &[u8], mut keep: impl FnMut(&Deflated<'_>) -> Option<Remade>) -> Walked {
    let mut out = Vec::new();
    let mut layout = Layout::default();
    let mut spans = Vec::new();
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
        if let Some(remade) = keep(&member) {
            out.extend_from_slice(&bytes[copied..data]);
            layout.members.push(Member {
                raw: (data - copied) as u64,
                text: member.text.len() as u64,
                remade,
            });
            let at = out.len();
            out.extend_from_slice(&member.text);
            spans.push((data..data + used, at..out.len()));
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
    Walked {
        expanded: out,
        layout,
        spans,
    }
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

/// An old archive expanded by [`expand`].
#[derive(Debug, Clone, Default)]
pub struct Expansion {
    /// The expanded bytes.
    pub bytes: Vec<u8>,
    /// For each member inflated, in order: where its deflate stream is in the archive, and
    /// where its text is in `bytes`.
    pub members: Vec<(Range<usize>, Range<usize>)>,
}

/// An old archive and its expansion: where a new archive's members may take their
/// streams from ([`Remade::Old`]).
#[derive(Debug, Clone, Copy)]
pub struct OldArchive<'a> {
    /// The archive's bytes.
    pub bytes: &'a [u8],
    /// Its expansion ([`expand`] of `bytes`).
    pub expansion: &'a Expansion,
}

/// The old side: `bytes` with every deflated member that inflates replaced by its text
/// (up to [`MAX_EXPANDED`] in all), the source a new archive's expansion is patched
/// against. The encoder and the decoder both call this on the same bytes.
pub fn expand(bytes: &[u8]) -> Expansion {
    // Every member inflated is kept; how it would be re-made does not matter here.
    let w = walk(bytes, |_| Some(Remade::Old(0)));
    Expansion {
        bytes: w.expanded,
        members: w.spans,
    }
}

/// The new side: `bytes` expanded with the members whose deflate stream `old` holds byte
/// for byte (taken from there) and those stock zlib re-makes byte for byte, and their
/// layout; None if there are none.
pub fn split(bytes: &[u8], old: Option<OldArchive<'_>>) -> Option<(Vec<u8>, Layout)> {
    // The old members' streams, the first of equal ones.
    let mut streams: HashMap<&[u8], u64> = HashMap::new();
    if let Some(old) = old {
        for (k, (body, _)) in old.expansion.members.iter().enumerate().rev() {
            if let Some(stream) = old.bytes.get(body.clone()) {
                streams.insert(stream, k as u64);
            }
        }
    }
    let old_stream = |k: u64| {
        let old = old?;
        old.bytes
            .get(old.expansion.members.get(k as usize)?.0.clone())
    };
    let mut last = LEVELS[0];
    // The members kept so far, and the last that took an old stream: the old member
    // predicted (which the layout writes in one byte) is taken even if an equal stream
    // comes earlier.
    let (mut kept, mut last_old) = (0usize, None);
    let (mut tried, mut made) = (0usize, 0usize);
    let w = walk(bytes, |m| {
        let predicted = predicted_old(last_old, kept);
        let found = if old_stream(predicted) == Some(m.body) {
            Some(predicted)
        } else {
            streams.get(m.body).copied()
        };
        if let Some(k) = found {
            last_old = Some((kept, k));
            kept += 1;
            return Some(Remade::Old(k));
        }
        if made == 0 && tried >= GIVE_UP_AFTER {
            return None;
        }
        let mut levels = std::iter::once(last).chain(LEVELS.iter().copied().filter(|&l| l != last));
        let level = levels.find(|&l| gz::deflate_equals(&m.text, l, m.body));
        match level {
            Some(l) => {
                last = l;
                made += 1;
                kept += 1;
            }
            None if m.body.len() >= 1024 => tried += 1,
            None => {}
        }
        level.map(Remade::Level)
    });
    (!w.layout.members.is_empty()).then_some((w.expanded, w.layout))
}

/// Rebuilds the archive from its expanded bytes and layout into `out`, writing at most
/// `max` bytes there in all: each text is deflated with `deflate` (given the text, its
/// level and where its stream goes in `out`), or its stream copied from `old` once its
/// text is checked to be the old member's.
pub fn rebuild(
    expanded: &[u8],
    layout: &Layout,
    old: Option<OldArchive<'_>>,
    out: &mut Vec<u8>,
    max: u64,
    mut deflate: impl FnMut(&[u8], u32, &mut Vec<u8>) -> Result<()>,
) -> Result<()> {
    if layout.expanded_len() != expanded.len() as u64 {
        return Err(bad("zip layout does not add up to its expanded bytes"));
    }
    let mut at = 0usize;
    for (i, m) in layout.members.iter().enumerate() {
        let (raw, text) = (m.raw as usize, m.text as usize);
        out.extend_from_slice(&expanded[at..at + raw]);
        let text = &expanded[at + raw..at + raw + text];
        match m.remade {
            Remade::Level(level) => deflate(text, level, out)?,
            Remade::Old(k) => {
                let old = old.ok_or_else(|| {
                    bad(format!(
                        "zip member {i} names old member {k}, but the archive has no old one"
                    ))
                })?;
                let (stream, old_text) =
                    old.expansion.members.get(k as usize).ok_or_else(|| {
                        bad(format!(
                            "zip member {i} names old member {k}, but the old archive has {}",
                            old.expansion.members.len()
                        ))
                    })?;
                if old.expansion.bytes.get(old_text.clone()) != Some(text) {
                    return Err(bad(format!(
                        "zip member {i}'s text is not that of old member {k}, whose stream it names"
                    )));
                }
                let stream = old
                    .bytes
                    .get(stream.clone())
                    .ok_or_else(|| bad("zip: an old member's stream is past its archive"))?;
                if (out.len() + stream.len()) as u64 > max {
                    return Err(bad("zip archive rebuilds past its chunk's declared output"));
                }
                out.extend_from_slice(stream);
            }
        }
        at += raw + text.len();
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
        round_trip_from(z, None)
    }

    /// Splits `z` (against `old`, an archive, if any), checks the layout reads back and
    /// the archive rebuilds byte for byte; returns the layout.
    fn round_trip_from(z: &[u8], old: Option<&[u8]>) -> Option<Layout> {
        let expansion = old.map(expand);
        let old = old
            .zip(expansion.as_ref())
            .map(|(bytes, expansion)| OldArchive { bytes, expansion });
        let (expanded, layout) = split(z, old)?;
        assert_eq!(layout.expanded_len(), expanded.len() as u64);
        let mut stream = Vec::new();
        layout.write(&mut stream);
        let read = Layout::read(&mut &stream[..]).expect("layout reads back");
        assert_eq!(read, layout);
        let mut out = Vec::new();
        rebuild(
            &expanded,
            &read,
            old,
            &mut out,
            z.len() as u64,
            |t, l, o| {
                gz::deflate(t, l, o);
                Ok(())
            },
        )
        .expect("rebuilds");
        assert!(out == z, "archive rebuilt byte for byte");
        Some(layout)
    }

    fn remade(layout: &Layout) -> Vec<Remade> {
        layout.members.iter().map(|m| m.remade).collect()
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
        use Remade::Level;
        assert_eq!(remade(&layout)[1..], [Level(6), Level(9), Level(1)]);
        assert_eq!(claimed_expanded_len(&z), layout.expanded_len());
        // The old side inflates the same members.
        let old = expand(&z);
        assert_eq!(old.bytes.len() as u64, layout.expanded_len());
        assert!(old.bytes.windows(a.len()).any(|w| w == &a[..]));
        assert_eq!(old.members.len(), 4);
        for (stream, text) in &old.members {
            let inflated = inflate_stream(&z[stream.clone()], usize::MAX >> 1);
            assert_eq!(
                inflated.map(|(t, _)| t).as_deref(),
                Some(&old.bytes[text.clone()])
            );
        }
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
        assert!(split(&z, None).is_none());
        // Its members still inflate for the old side.
        let old = expand(&z).bytes;
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
            assert!(expand(part).bytes.len() >= part.len());
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
        // 10 is an old member one before the predicted one (member 0's is 0).
        assert!(Layout::read(&mut &s[..]).is_err(), "old member -1");
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
                remade: Remade::Level(6),
            }],
            tail: 1,
        };
        let mut out = Vec::new();
        assert!(rebuild(&[0; 7], &l, None, &mut out, 100, |_, _, _| Ok(())).is_err());
        // An old member past 2^32, and one just below.
        for (k, ok) in [(1u64 << 32, false), (u32::MAX as u64, true)] {
            let mut s = Vec::new();
            for v in [1, 0, 1, 9 + 2 * k, 1] {
                put(&mut s, v);
            }
            assert_eq!(Layout::read(&mut &s[..]).is_ok(), ok, "old member {k}");
        }
    }

    #[test]
    fn expansion_stops_at_the_limit() {
        // Highly compressible members: 40 of 1 MiB text each (the limit is 16 MiB).
        let t = vec![b'a'; 1 << 20];
        let members: Vec<(&str, &[u8], u16, u32, bool)> =
            (0..40).map(|_| ("z", &t[..], 8, 6, false)).collect();
        let z = archive(&members);
        let old = expand(&z);
        assert!(old.bytes.len() as u64 <= MAX_EXPANDED);
        let layout = round_trip(&z).expect("re-made");
        assert!(layout.expanded_len() <= MAX_EXPANDED);
        assert!(layout.members.len() < 40 && layout.members.len() >= 14);
    }

    #[test]
    fn members_the_old_archive_holds_take_its_streams() {
        use Remade::{Level, Old};
        let (a, b, b2, c, d) = (
            class(3000, 7),
            class(500, 11),
            class(520, 11),
            class(800, 5),
            class(900, 13),
        );
        let old = archive(&[
            ("a/A.class", &a, 8, 6, true),
            ("a/B.class", &b, 8, 6, false),
            ("a/c.txt", &c, 0, 0, false),
            ("a/C.class", &c, 8, 9, true),
        ]);
        // B changed; A and C kept, in another order; D added.
        let new = archive(&[
            ("a/C.class", &c, 8, 9, true),
            ("a/B.class", &b2, 8, 6, false),
            ("a/A.class", &a, 8, 6, true),
            ("a/D.class", &d, 8, 6, true),
        ]);
        let layout = round_trip_from(&new, Some(&old)).expect("re-made");
        // Old members counted as expand inflates them (the stored c.txt is not one).
        assert_eq!(remade(&layout), [Old(2), Level(6), Old(0), Level(6)]);
        // Without the old archive, every member is deflated again.
        let alone = round_trip(&new).expect("re-made");
        assert_eq!(remade(&alone), [Level(9), Level(6), Level(6), Level(6)]);
        assert_eq!(alone.expanded_len(), layout.expanded_len());

        // What the decoder refuses: no old archive, an old member past its end, a text
        // that is not the old member's.
        let (expanded, layout) = {
            let e = expand(&old);
            let o = OldArchive {
                bytes: &old,
                expansion: &e,
            };
            split(&new, Some(o)).expect("re-made")
        };
        let deflate = |t: &[u8], l: u32, o: &mut Vec<u8>| {
            gz::deflate(t, l, o);
            Ok(())
        };
        let e = expand(&old);
        let o = OldArchive {
            bytes: &old,
            expansion: &e,
        };
        let max = new.len() as u64;
        let err = |r: Result<()>| r.expect_err("refused").to_string();
        let mut out = Vec::new();
        assert!(
            err(rebuild(&expanded, &layout, None, &mut out, max, deflate)).contains("no old one")
        );
        let mut far = layout.clone();
        far.members[0].remade = Old(7);
        out.clear();
        assert!(err(rebuild(&expanded, &far, Some(o), &mut out, max, deflate)).contains("has 3"));
        let mut changed = expanded.clone();
        let at = layout.members[0].raw as usize + 10;
        changed[at] ^= 1;
        out.clear();
        assert!(
            err(rebuild(&changed, &layout, Some(o), &mut out, max, deflate))
                .contains("not that of old member 2")
        );
        out.clear();
        assert!(
            rebuild(&expanded, &layout, Some(o), &mut out, 100, deflate).is_err(),
            "past max"
        );
    }

    #[test]
    fn another_deflaters_unchanged_members_take_the_old_streams() {
        // Level 0 (stored blocks): a deflate stream zlib makes at no level 1-9.
        let texts: Vec<Vec<u8>> = (0..12).map(|i| class(200, i + 2)).collect();
        fn member(t: &[u8]) -> (&str, &[u8], u16, u32, bool) {
            ("x.class", t, 8, 0, false)
        }
        let old = archive(&texts.iter().map(|t| member(t)).collect::<Vec<_>>());
        let changed = class(210, 5);
        let mut new_texts: Vec<&[u8]> = texts.iter().map(|t| &t[..]).collect();
        new_texts[4] = &changed;
        let new = archive(&new_texts.iter().map(|t| member(t)).collect::<Vec<_>>());
        let layout = round_trip_from(&new, Some(&old)).expect("unchanged members kept");
        let want: Vec<Remade> = (0..12).filter(|&k| k != 4).map(Remade::Old).collect();
        assert_eq!(remade(&layout), want);
        // Consecutive old members cost one zero byte each in the layout.
        let mut stream = Vec::new();
        layout.write(&mut stream);
        assert!(stream.len() < 12 * 6, "{} bytes", stream.len());
    }
}
