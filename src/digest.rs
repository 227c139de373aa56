//! Content digests (`sha256:<64 hex>`) and readers/writers that compute them while streaming.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

/// A validated `sha256:` content digest.
///
/// Only SHA-256 is accepted: it is what Docker and every OCI tool we read from produce.
/// Other algorithms are reported as [`Error::InvalidDigest`] with the reason.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

impl Digest {
    /// Parses `sha256:<64 lowercase hex>`.
    pub fn parse(s: &str) -> Result<Digest> {
        Self::parse_in(s, None)
    }

    /// Parses a digest found at `context` (a file and field), which the error names.
    pub fn parse_in(s: &str, context: Option<&str>) -> Result<Digest> {
        let err = |reason: String| Error::InvalidDigest {
            input: s.to_string(),
            context: context.map(str::to_string),
            reason,
        };
        let Some((algo, hex)) = s.split_once(':') else {
            return Err(err("expected <algorithm>:<hex>".into()));
        };
        if algo != "sha256" {
            return Err(err(format!(
                "unsupported algorithm {algo:?} (only sha256 is supported)"
            )));
        }
        Self::from_hex(hex).map_err(|_| {
            err(format!(
                "a sha256 digest has 64 lowercase hex characters, found {} characters",
                hex.len()
            ))
        })
    }

    /// Builds a digest from the 64 hex characters of a SHA-256.
    pub fn from_hex(hex: &str) -> Result<Digest> {
        if hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(Digest {
                hex: hex.to_string(),
            })
        } else {
            Err(Error::InvalidDigest {
                input: hex.to_string(),
                context: None,
                reason: "expected 64 lowercase hex characters".into(),
            })
        }
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Self::from_sha256(Sha256::digest(bytes).into())
    }

    /// The digest for a finished SHA-256 state.
    pub fn from_sha256(raw: [u8; 32]) -> Digest {
        Digest {
            hex: hex::encode(raw),
        }
    }

    /// The 64 hex characters, without the algorithm.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The first 12 hex characters, as Docker shows image IDs.
    pub fn short(&self) -> &str {
        &self.hex[..12]
    }

    /// The algorithm name (always `sha256`).
    pub fn algorithm(&self) -> &'static str {
        "sha256"
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest(sha256:{})", self.hex)
    }
}

impl FromStr for Digest {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Digest::parse(s)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A reader that hashes and counts everything read through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Bytes read so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The digest of what was read so far and the inner reader.
    pub fn finish(self) -> (Digest, u64, R) {
        (
            Digest::from_sha256(self.hasher.finalize().into()),
            self.count,
            self.inner,
        )
    }

    /// The inner reader.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// The digest so far, without consuming the reader.
    pub fn digest_so_far(&self) -> Digest {
        Digest::from_sha256(self.hasher.clone().finalize().into())
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// A writer that hashes and counts everything written through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Bytes written so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The digest and size of what was written, and the inner writer.
    pub fn finish(self) -> (Digest, u64, W) {
        (
            Digest::from_sha256(self.hasher.finalize().into()),
            self.count,
            self.inner,
        )
    }

    /// The inner writer.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Hashes a whole stream, returning its digest and length.
pub fn digest_reader(r: impl Read) -> io::Result<(Digest, u64)> {
    let mut h = HashingReader::new(r);
    io::copy(&mut h, &mut io::sink())?;
    let (d, n, _) = h.finish();
    Ok((d, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn digest_of_empty() {
        assert_eq!(Digest::of(b"").to_string(), EMPTY);
        assert_eq!(Digest::parse(EMPTY).unwrap(), Digest::of(b""));
    }

    #[test]
    fn bad_digests_say_why() {
        let cases = [
            ("sha512:abcd", "unsupported algorithm \"sha512\""),
            ("sha256:abcd", "found 4 characters"),
            ("e3b0c442", "expected <algorithm>:<hex>"),
            (
                "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
                "64 lowercase hex",
            ),
        ];
        for (input, want) in cases {
            let e = Digest::parse_in(input, Some("index.json manifests[0].digest")).unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains(want), "{input}: {msg}");
            assert!(msg.contains("index.json manifests[0].digest"), "{msg}");
        }
    }

    #[test]
    fn hashing_reader_and_writer_agree() {
        let data = b"hello layer".repeat(1000);
        let (d, n) = digest_reader(&data[..]).unwrap();
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(&data).unwrap();
        let (d2, n2, out) = w.finish();
        assert_eq!((d.clone(), n), (d2, n2));
        assert_eq!(out, data);
        assert_eq!(d, Digest::of(&data));
    }
}
