//! The VCDIFF decoder: parses the header and each window, checks every length, address
//! and checksum against the bounds it knows, and rebuilds the target into one buffer.

use super::code_table::{default_table, AddressCache, Half, Kind};
use super::wire::{
    adler32, ReadError, Reader, MAGIC, VCD_ADLER32, VCD_APPHEADER, VCD_CODETABLE, VCD_DECOMPRESS,
    VCD_SOURCE, VCD_TARGET,
};
use super::CODEC;
use crate::error::{Error, Result};

/// Decodes `patch` against `source` into a buffer of at most `target_len` bytes (the
/// only large allocation), returning what it decoded: fewer bytes than `target_len` when
/// the patch describes a shorter target, an error when it describes a longer one.
pub(super) fn decode(source: &[u8], patch: &[u8], target_len: usize) -> Result<Vec<u8>> {
    let mut r = Reader::new(patch);
    header(&mut r)?;
    let table = default_table();
    let mut cache = AddressCache::new();
    let mut out = Vec::with_capacity(target_len);
    let mut index = 0u64;
    while r.remaining() > 0 {
        window(&mut r, source, &table, &mut cache, &mut out, target_len).map_err(|e| match e {
            Fault::TooLong => too_long(target_len),
            Fault::Bad(why) => invalid(format!("window {index}: {why}")),
        })?;
        index += 1;
    }
    Ok(out)
}

/// Why a window failed to decode; the caller names the window.
enum Fault {
    /// The target would be longer than the caller's size (reported as such).
    TooLong,
    /// Anything else wrong with the patch (or its source).
    Bad(String),
}

impl From<ReadError> for Fault {
    fn from(e: ReadError) -> Fault {
        Fault::Bad(
            match e {
                ReadError::Truncated => "the patch is truncated",
                ReadError::Overflow => "an integer overflows 64 bits",
            }
            .into(),
        )
    }
}

fn bad(msg: impl Into<String>) -> Fault {
    Fault::Bad(msg.into())
}

fn invalid(reason: String) -> Error {
    Error::Codec {
        codec: CODEC.into(),
        reason: format!("decoding failed: {reason}"),
    }
}

fn too_long(target_len: usize) -> Error {
    Error::Codec {
        codec: CODEC.into(),
        reason: format!(
            "the patch decodes to more than the recorded target size of {target_len} bytes"
        ),
    }
}

/// Parses the file header. Secondary compression and custom code tables are refused by
/// name (we never write them); xdelta3's application header (file names) is skipped.
fn header(r: &mut Reader<'_>) -> Result<()> {
    let truncated = |_| invalid("the patch is shorter than a VCDIFF header".into());
    let magic = r.bytes(4).map_err(truncated)?;
    if magic[..3] != MAGIC[..3] {
        return Err(invalid("not a VCDIFF patch (bad magic bytes)".into()));
    }
    if magic[3] != MAGIC[3] {
        return Err(invalid(format!("unsupported VCDIFF version {}", magic[3])));
    }
    let indicator = r.byte().map_err(truncated)?;
    if indicator & !(VCD_DECOMPRESS | VCD_CODETABLE | VCD_APPHEADER) != 0 {
        return Err(invalid(format!(
            "unknown header indicator bits {indicator:#04x}"
        )));
    }
    if indicator & VCD_DECOMPRESS != 0 {
        let id = r.byte().map_err(truncated)?;
        let name = match id {
            1 => "DJW".to_string(),
            2 => "LZMA".to_string(),
            16 => "FGK".to_string(),
            other => format!("number {other}"),
        };
        return Err(Error::Codec {
            codec: CODEC.into(),
            reason: format!(
                "the patch uses {name} secondary compression, which this decoder does not \
                 support; re-encode it with `xdelta3 -S none`"
            ),
        });
    }
    if indicator & VCD_CODETABLE != 0 {
        return Err(invalid(
            "the patch uses an application-defined code table, which this decoder does not \
             support"
                .into(),
        ));
    }
    if indicator & VCD_APPHEADER != 0 {
        let n = r.varint().map_err(truncated)?;
        let n = usize::try_from(n).map_err(|_| invalid("application header too long".into()))?;
        r.bytes(n).map_err(truncated)?;
    }
    Ok(())
}

/// Decodes one window, appending its target to `out`.
fn window(
    r: &mut Reader<'_>,
    source: &[u8],
    table: &[(Half, Half); 256],
    cache: &mut AddressCache,
    out: &mut Vec<u8>,
    target_len: usize,
) -> std::result::Result<(), Fault> {
    let indicator = r.byte()?;
    if indicator & VCD_TARGET != 0 {
        return Err(bad(
            "VCD_TARGET windows (copying from earlier target) are not supported",
        ));
    }
    if indicator & !(VCD_SOURCE | VCD_ADLER32) != 0 {
        return Err(bad(format!(
            "unknown window indicator bits {indicator:#04x}"
        )));
    }
    let segment: &[u8] = if indicator & VCD_SOURCE != 0 {
        let len = r.varint()?;
        let pos = r.varint()?;
        let end = pos.checked_add(len).filter(|&e| e <= source.len() as u64);
        match end {
            // Both fit: end <= source.len().
            Some(end) => &source[pos as usize..end as usize],
            None => {
                return Err(bad(format!(
                    "source segment of {len} bytes at {pos} is beyond the {}-byte source \
                     (the wrong source?)",
                    source.len()
                )))
            }
        }
    } else {
        &[]
    };
    let encoding_len = r.varint()?;
    let before = r.remaining();
    let window_len = r.varint()?;
    let room = target_len - out.len();
    if window_len > room as u64 {
        return Err(Fault::TooLong);
    }
    let window_len = window_len as usize;
    let delta_indicator = r.byte()?;
    if delta_indicator != 0 {
        return Err(bad(format!(
            "the window's sections are compressed (Delta_Indicator {delta_indicator:#04x}), \
             which this decoder does not support"
        )));
    }
    let data_len = r.varint()?;
    let inst_len = r.varint()?;
    let addr_len = r.varint()?;
    let checksum = if indicator & VCD_ADLER32 != 0 {
        let b = r.bytes(4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    } else {
        None
    };
    let header_len = (before - r.remaining()) as u64;
    let sections = data_len
        .checked_add(inst_len)
        .and_then(|n| n.checked_add(addr_len));
    if sections.and_then(|n| n.checked_add(header_len)) != Some(encoding_len) {
        return Err(bad(format!(
            "the delta encoding length {encoding_len} disagrees with its sections"
        )));
    }
    if encoding_len - header_len > r.remaining() as u64 {
        return Err(ReadError::Truncated.into());
    }
    // All three fit: their sum is at most the bytes remaining.
    let mut data = Reader::new(r.bytes(data_len as usize)?);
    let mut inst = Reader::new(r.bytes(inst_len as usize)?);
    let mut addrs = Reader::new(r.bytes(addr_len as usize)?);

    cache.reset();
    let base = out.len();
    let end = base + window_len;
    while inst.remaining() > 0 {
        let code = inst.byte()?;
        let (first, second) = table[usize::from(code)];
        for half in [first, second] {
            if half.kind == Kind::Noop {
                continue;
            }
            let size = match half.size {
                0 => inst.varint()?,
                n => u64::from(n),
            };
            if size > (end - out.len()) as u64 {
                return Err(bad(format!(
                    "an instruction of {size} bytes runs past the window's {window_len} bytes"
                )));
            }
            let size = size as usize;
            match half.kind {
                Kind::Noop => {}
                Kind::Add => out.extend_from_slice(data.bytes(size)?),
                Kind::Run => {
                    let b = data.byte()?;
                    out.resize(out.len() + size, b);
                }
                Kind::Copy => {
                    let here = (segment.len() + (out.len() - base)) as u64;
                    let addr = cache
                        .decode(half.mode, here, &mut addrs)?
                        .filter(|&a| a < here)
                        .ok_or_else(|| bad("a copy address points past the data decoded so far"))?;
                    copy(segment, out, base, addr as usize, size);
                }
            }
        }
    }
    if out.len() != end {
        return Err(bad(format!(
            "the instructions produce {} bytes, the window declares {window_len}",
            out.len() - base
        )));
    }
    if data.remaining() != 0 || addrs.remaining() != 0 {
        return Err(bad("data or addresses left over after the instructions"));
    }
    if let Some(expected) = checksum {
        let found = adler32(&out[base..]);
        if found != expected {
            return Err(bad(format!(
                "Adler-32 mismatch (recorded {expected:#010x}, decoded {found:#010x}): the \
                 wrong source, or a corrupt patch"
            )));
        }
    }
    Ok(())
}

/// Appends `size` bytes from address `addr` of the window's superstring: the source
/// segment followed by the target window from `base` (which may overlap what is being
/// written, as in a run). The caller checked `addr < here` and that `size` fits.
fn copy(segment: &[u8], out: &mut Vec<u8>, base: usize, mut addr: usize, mut size: usize) {
    if addr < segment.len() {
        let n = size.min(segment.len() - addr);
        out.extend_from_slice(&segment[addr..addr + n]);
        size -= n;
        addr = segment.len();
    }
    let mut from = base + (addr - segment.len());
    while size > 0 {
        // Everything before `out.len()` is decoded: copy as much of it as is needed,
        // doubling the available span on each pass when the copy overlaps itself.
        let n = size.min(out.len() - from);
        out.extend_from_within(from..from + n);
        from += n;
        size -= n;
    }
}
