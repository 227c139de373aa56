//! Byte-level pieces of the VCDIFF format: header constants, the RFC's variable-length
//! integers and the Adler-32 checksum of xdelta3's window extension.

/// The file header's first four bytes: "VCD" with the high bits set, and version 0.
pub(super) const MAGIC: [u8; 4] = [0xD6, 0xC3, 0xC4, 0x00];

/// `Hdr_Indicator`: a secondary compressor ID follows.
pub(super) const VCD_DECOMPRESS: u8 = 0x01;
/// `Hdr_Indicator`: an application-defined code table follows.
pub(super) const VCD_CODETABLE: u8 = 0x02;
/// `Hdr_Indicator` (xdelta3 extension): application data follows (file names).
pub(super) const VCD_APPHEADER: u8 = 0x04;

/// `Win_Indicator`: the window copies from a segment of the source.
pub(super) const VCD_SOURCE: u8 = 0x01;
/// `Win_Indicator`: the window copies from a segment of the target decoded before it.
pub(super) const VCD_TARGET: u8 = 0x02;
/// `Win_Indicator` (xdelta3 extension): an Adler-32 of the window's target follows the
/// section lengths.
pub(super) const VCD_ADLER32: u8 = 0x04;

/// Appends `v` as an RFC 3284 integer: base 128, most significant digit first, the high
/// bit set on every byte but the last.
pub(super) fn put_varint(out: &mut Vec<u8>, v: u64) {
    let n = varint_len(v);
    for i in (0..n).rev() {
        let digit = ((v >> (7 * i)) & 0x7F) as u8;
        out.push(if i == 0 { digit } else { digit | 0x80 });
    }
}

/// How many bytes [`put_varint`] writes for `v`.
pub(super) fn varint_len(v: u64) -> usize {
    let bits = 64 - v.leading_zeros() as usize;
    bits.div_ceil(7).max(1)
}

/// Why reading a section failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReadError {
    /// The bytes ran out.
    Truncated,
    /// An integer does not fit in 64 bits.
    Overflow,
}

/// A cursor over one part of a patch.
pub(super) struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `data`.
    pub fn new(data: &'a [u8]) -> Reader<'a> {
        Reader { data, pos: 0 }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    /// The next byte.
    pub fn byte(&mut self) -> Result<u8, ReadError> {
        let b = *self.data.get(self.pos).ok_or(ReadError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    /// The next `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], ReadError> {
        if n > self.remaining() {
            return Err(ReadError::Truncated);
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// The next RFC 3284 integer.
    pub fn varint(&mut self) -> Result<u64, ReadError> {
        let mut v: u64 = 0;
        loop {
            let b = self.byte()?;
            if v >> 57 != 0 {
                return Err(ReadError::Overflow);
            }
            v = (v << 7) | u64::from(b & 0x7F);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
    }
}

/// Adler-32 (RFC 1950) of `data`, as xdelta3 checksums each window's target.
pub(super) fn adler32(data: &[u8]) -> u32 {
    const MOD: u32 = 65521;
    // 5552 bytes is the most that can be summed before `b` could overflow 32 bits.
    let (mut a, mut b) = (1u32, 0u32);
    for chunk in data.chunks(5552) {
        for &x in chunk {
            a += u32::from(x);
            b += a;
        }
        a %= MOD;
        b %= MOD;
    }
    (b << 16) | a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip() {
        // 123456789 is 58 111 26 21 in base 128.
        let mut out = Vec::new();
        put_varint(&mut out, 123_456_789);
        assert_eq!(out, [0x80 | 58, 0x80 | 111, 0x80 | 26, 21]);
        for v in [0, 1, 127, 128, 16383, 16384, u32::MAX as u64, u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v));
            assert_eq!(Reader::new(&out).varint(), Ok(v));
        }
        assert_eq!(Reader::new(&[0x80]).varint(), Err(ReadError::Truncated));
        assert_eq!(Reader::new(&[0xFF; 11]).varint(), Err(ReadError::Overflow));
    }

    #[test]
    fn adler32_matches_known_values() {
        assert_eq!(adler32(b""), 1);
        assert_eq!(adler32(b"Wikipedia"), 0x11E6_0398);
        let big = vec![0xFFu8; 100_000];
        // Computed byte by byte without the deferred modulo.
        let (mut a, mut b) = (1u64, 0u64);
        for &x in &big {
            a = (a + u64::from(x)) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!(adler32(&big), ((b << 16) | a) as u32);
    }
}
