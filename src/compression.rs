//! Layer and archive compression, detected from the content's magic bytes, never from names
//! or media types.

use std::io::{self, BufRead, Read};

/// A compression format found at the start of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Not compressed.
    None,
    /// gzip (one or several members, as parallel compressors write).
    Gzip,
    /// Zstandard.
    Zstd,
    /// xz.
    Xz,
    /// bzip2: recognised so it can be named in errors, but not decoded.
    Bzip2,
}

impl Compression {
    /// Detects the compression from the first bytes of a stream (6 are enough).
    pub fn detect(magic: &[u8]) -> Compression {
        if magic.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else if magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Compression::Xz
        } else if magic.starts_with(b"BZh") {
            Compression::Bzip2
        } else {
            Compression::None
        }
    }

    /// The name used in messages and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::Xz => "xz",
            Compression::Bzip2 => "bzip2",
        }
    }

    /// The OCI layer media type for a layer compressed this way.
    pub fn oci_layer_media_type(self) -> &'static str {
        match self {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
            Compression::Xz => "application/vnd.oci.image.layer.v1.tar+xz",
            Compression::Bzip2 => "application/vnd.oci.image.layer.v1.tar+bzip2",
        }
    }

    /// The Docker layer media type for a layer compressed this way.
    pub fn docker_layer_media_type(self) -> &'static str {
        match self {
            Compression::None => "application/vnd.docker.image.rootfs.diff.tar",
            Compression::Gzip => "application/vnd.docker.image.rootfs.diff.tar.gzip",
            Compression::Zstd => "application/vnd.docker.image.rootfs.diff.tar.zstd",
            Compression::Xz => "application/vnd.docker.image.rootfs.diff.tar.xz",
            Compression::Bzip2 => "application/vnd.docker.image.rootfs.diff.tar.bzip2",
        }
    }

    /// Wraps a buffered reader in the matching decoder.
    pub fn decoder<'a, R: BufRead + Send + 'a>(
        self,
        r: R,
    ) -> io::Result<Box<dyn Read + Send + 'a>> {
        Ok(match self {
            Compression::None => Box::new(r),
            Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(r)),
            Compression::Zstd => {
                let mut d = zstd::stream::read::Decoder::with_buffer(r)?;
                d.window_log_max(31)?;
                Box::new(d)
            }
            Compression::Xz => Box::new(liblzma::bufread::XzDecoder::new_multi_decoder(r)),
            Compression::Bzip2 => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "bzip2-compressed content is not supported",
                ))
            }
        })
    }

    /// Peeks at a buffered reader and returns its compression without consuming anything.
    pub fn sniff(r: &mut impl BufRead) -> io::Result<Compression> {
        // fill_buf may return fewer bytes than the magic needs at a buffer boundary only
        // at the very start of a tiny stream; that is fine for detection purposes.
        Ok(Compression::detect(r.fill_buf()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn detects_and_decodes_multi_member_gzip() {
        let mut out = Vec::new();
        for part in [&b"hello "[..], &b"world"[..]] {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(part).unwrap();
            out.extend(e.finish().unwrap());
        }
        let mut r = io::BufReader::new(&out[..]);
        let c = Compression::sniff(&mut r).unwrap();
        assert_eq!(c, Compression::Gzip);
        let mut s = String::new();
        c.decoder(r).unwrap().read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello world");
    }

    #[test]
    fn detects_zstd_and_plain() {
        let z = zstd::encode_all(&b"abc"[..], 3).unwrap();
        assert_eq!(Compression::detect(&z), Compression::Zstd);
        assert_eq!(Compression::detect(b"ustar"), Compression::None);
        assert_eq!(Compression::detect(b""), Compression::None);
    }
}
