//! Reading the headers of a tar stream in bounded memory.
//!
//! Every archive, layer and package member list the library reads from outside goes
//! through [`TarHeaders`]: it understands ustar, GNU and PAX headers (checksum, octal and
//! base-256 numbers, the ustar name prefix, GNU long-name and long-link records, PAX
//! `path`, `linkpath` and `size`, global PAX headers) and yields one [`Member`] per entry,
//! with its data skipped — by seeking when the source can seek, by reading otherwise.
//!
//! Memory is bounded whatever the archive claims: an extension record (GNU `L`/`K`, PAX
//! `x`/`g`) is read only up to [`MAX_EXTENSION_RECORD`] bytes, and a larger one is an
//! error ([`TarError::RecordTooLarge`]), never a silent truncation, so that a few KiB of
//! compressed input cannot make the process hold a record of hundreds of MiB. File data is
//! never held at all.
//!
//! The block-level functions ([`checksum_ok`], [`parse_size`], [`ustar_name`],
//! [`pax_records`]) are shared with the files codec's scanner
//! (`delta::files::tarscan`), so the library has one parser of tar headers.

use std::fmt;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use crate::error::Error;

/// The tar block size.
pub const BLOCK: usize = 512;

/// Largest extension record read: a GNU long name or long link, or a PAX extended header.
///
/// 1 MiB, as Go's `archive/tar` allows: a path is at most `PATH_MAX` (4096) bytes on
/// Linux, and the PAX records real tools write (times, xattrs, SELinux labels, capability
/// sets) are far smaller. It is fixed: no image needs more.
pub const MAX_EXTENSION_RECORD: u64 = 1 << 20;

/// One entry of a tar stream, after its extension records were applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its path as stored: PAX `path`, else GNU long name, else ustar prefix + name.
    pub path: Vec<u8>,
    /// Its link target (PAX `linkpath`, GNU long link or the header's field); empty for
    /// entries that are not links.
    pub link: Vec<u8>,
    /// The type flag (`b'0'`, `b'5'`, ...; `b'\0'` is an old regular file).
    pub kind: u8,
    /// Size of its data (PAX `size` when given).
    pub size: u64,
    /// Offset of its first header block (its extension records included).
    pub header_offset: u64,
    /// Offset of its data.
    pub data_offset: u64,
}

impl Member {
    /// A regular file (including the old `\0` type and contiguous files).
    pub fn is_file(&self) -> bool {
        matches!(self.kind, b'0' | b'\0' | b'7')
    }
    /// A hard link.
    pub fn is_hard_link(&self) -> bool {
        self.kind == b'1'
    }
    /// A symbolic link.
    pub fn is_symlink(&self) -> bool {
        self.kind == b'2'
    }
    /// A directory.
    pub fn is_dir(&self) -> bool {
        self.kind == b'5'
    }
    /// A GNU sparse file.
    pub fn is_gnu_sparse(&self) -> bool {
        self.kind == b'S'
    }
}

/// Why a tar stream could not be read.
#[derive(Debug)]
pub enum TarError {
    /// The source failed (or, for a verified layer stream, its check failed).
    Io(io::Error),
    /// The stream is not a valid tar at `offset`.
    Malformed {
        /// Offset of the header block at fault.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// An extension record is larger than [`MAX_EXTENSION_RECORD`].
    RecordTooLarge {
        /// Offset of the record's header block.
        offset: u64,
        /// The record's kind, e.g. "GNU long-name record".
        record: &'static str,
        /// The name in the record's own header (e.g. `././@LongLink`).
        member: String,
        /// The size it claims.
        size: u64,
    },
}

impl fmt::Display for TarError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TarError::Io(e) => write!(f, "{e}"),
            TarError::Malformed { offset, reason } => write!(f, "{reason} at byte {offset}"),
            TarError::RecordTooLarge {
                offset,
                record,
                member,
                size,
            } => write!(
                f,
                "{record} {member:?} at byte {offset} claims {size} bytes, more than the {MAX_EXTENSION_RECORD}-byte limit"
            ),
        }
    }
}

impl std::error::Error for TarError {}

impl From<io::Error> for TarError {
    fn from(e: io::Error) -> Self {
        TarError::Io(e)
    }
}

impl TarError {
    /// The library error for this failure in the archive at `archive`: an oversized record
    /// is [`Error::LimitExceeded`] naming the archive, the member and the limit; a malformed
    /// stream, or one whose reading failed (a damaged compressed stream), is
    /// [`Error::InvalidLayout`] ("not a readable tar archive"); a library error carried
    /// inside an I/O error (a failed layer check) is returned as it is.
    pub fn into_error(self, archive: &Path) -> Error {
        match self {
            TarError::Io(e) if e.get_ref().is_some_and(|i| i.is::<Error>()) => {
                Error::io(archive, e)
            }
            TarError::Io(e) => Error::InvalidLayout {
                path: archive.to_path_buf(),
                reason: format!("not a readable tar archive: {e}"),
            },
            TarError::Malformed { .. } => Error::InvalidLayout {
                path: archive.to_path_buf(),
                reason: format!("not a readable tar archive: {self}"),
            },
            TarError::RecordTooLarge {
                offset,
                record,
                member,
                size,
            } => Error::LimitExceeded {
                what: format!(
                    "{} member {member:?} ({record} at byte {offset})",
                    archive.display()
                ),
                limit: "tar extension record size".into(),
                max: MAX_EXTENSION_RECORD,
                found: size,
                option: "no option: it is fixed, as in Go's archive/tar (no real image has such a record)"
                    .into(),
            },
        }
    }
}

/// Where header blocks come from, and how data between them is passed over.
pub trait Source: Read {
    /// Passes over `n` bytes; returns how many there were (fewer at the end of the source).
    fn skip(&mut self, n: u64) -> io::Result<u64>;
}

/// A source that can only be read: data is passed over by reading it.
pub struct Stream<R>(pub R);

impl<R: Read> Read for Stream<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl<R: Read> Source for Stream<R> {
    fn skip(&mut self, n: u64) -> io::Result<u64> {
        io::copy(&mut (&mut self.0).take(n), &mut io::sink())
    }
}

/// A source that can seek: data is passed over without reading it (a skip past the end
/// stops at the end, so that a truncated member is noticed as when reading).
pub struct Seekable<R> {
    inner: R,
    /// The source's length, learnt at the first skip.
    len: Option<u64>,
}

impl<R: Read> Read for Seekable<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

impl<R: Read + Seek> Source for Seekable<R> {
    fn skip(&mut self, n: u64) -> io::Result<u64> {
        let pos = self.inner.stream_position()?;
        let len = match self.len {
            Some(len) => len,
            None => {
                let len = self.inner.seek(SeekFrom::End(0))?;
                self.inner.seek(SeekFrom::Start(pos))?;
                *self.len.insert(len)
            }
        };
        let step = n.min(len.saturating_sub(pos));
        self.inner.seek(SeekFrom::Start(pos + step))?;
        Ok(step)
    }
}

/// The PAX keys the reader applies; other keys are passed over.
#[derive(Debug, Clone, Default)]
struct Pax {
    path: Option<Vec<u8>>,
    linkpath: Option<Vec<u8>>,
    size: Option<u64>,
}

impl Pax {
    /// Applies the records of one extended header on top of `self`.
    fn apply(&mut self, data: &[u8]) -> std::result::Result<(), String> {
        for record in pax_records(data) {
            let (key, value) = record?;
            match key {
                b"path" => self.path = Some(value.to_vec()),
                b"linkpath" => self.linkpath = Some(value.to_vec()),
                b"size" => {
                    self.size = Some(
                        std::str::from_utf8(value)
                            .ok()
                            .and_then(|s| s.parse().ok())
                            .ok_or_else(|| {
                                format!(
                                    "PAX size {:?} is not a number",
                                    String::from_utf8_lossy(value)
                                )
                            })?,
                    )
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Iterates the members of a tar stream, reading only headers and bounded extension
/// records. See the [module documentation](self).
pub struct TarHeaders<S> {
    src: S,
    /// Offset of the next byte `src` gives.
    pos: u64,
    /// Data and padding of the last member, not yet passed over.
    pending: u64,
    /// Global PAX records (`g`), in force for every later member.
    global: Pax,
    done: bool,
}

impl<R: Read> TarHeaders<Stream<R>> {
    /// Reads a stream that cannot seek.
    pub fn new(r: R) -> Self {
        Self::from_source(Stream(r))
    }
}

impl<R: Read + Seek> TarHeaders<Seekable<R>> {
    /// Reads a source that can seek, from its current position (taken as offset 0); it
    /// must not change length while it is read.
    pub fn seekable(r: R) -> Self {
        Self::from_source(Seekable {
            inner: r,
            len: None,
        })
    }
}

impl<S: Source> TarHeaders<S> {
    fn from_source(src: S) -> Self {
        TarHeaders {
            src,
            pos: 0,
            pending: 0,
            global: Pax::default(),
            done: false,
        }
    }

    /// The next member, or `None` at the end-of-archive block or at the end of the stream
    /// on a block boundary (as GNU tar and the `tar` crate accept).
    pub fn next_member(&mut self) -> std::result::Result<Option<Member>, TarError> {
        if self.done {
            return Ok(None);
        }
        let result = self.read_member();
        if !matches!(result, Ok(Some(_))) {
            self.done = true;
        }
        result
    }

    fn read_member(&mut self) -> std::result::Result<Option<Member>, TarError> {
        let pending = std::mem::take(&mut self.pending);
        let skipped = self.src.skip(pending)?;
        self.pos += skipped;
        if skipped < pending {
            return Err(self.truncated("member data"));
        }
        let header_offset = self.pos;
        let mut local = Pax::default();
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut block = [0u8; BLOCK];
        loop {
            let offset = self.pos;
            match self.read_block(&mut block)? {
                0 if offset == header_offset => return Ok(None),
                BLOCK => {}
                _ => return Err(self.truncated("header")),
            }
            if block.iter().all(|&b| b == 0) {
                if offset != header_offset {
                    return Err(
                        self.malformed(offset, "end-of-archive block after an extension record")
                    );
                }
                return Ok(None);
            }
            if !checksum_ok(&block) {
                return Err(self.malformed(offset, "header checksum mismatch"));
            }
            let size = parse_size(&block[124..136])
                .ok_or_else(|| self.malformed(offset, "header size field is not a number"))?;
            let kind = block[156];
            let record = match kind {
                b'L' => "GNU long-name record",
                b'K' => "GNU long-link record",
                b'x' => "PAX extended header",
                b'g' => "PAX global header",
                _ => {
                    let pax_size = local.size.or(self.global.size);
                    let size = pax_size.unwrap_or(size);
                    let path = local
                        .path
                        .take()
                        .or(long_name)
                        .or_else(|| self.global.path.clone())
                        .unwrap_or_else(|| ustar_name(&block));
                    let link = local
                        .linkpath
                        .take()
                        .or(long_link)
                        .or_else(|| self.global.linkpath.clone())
                        .unwrap_or_else(|| cstr(&block[157..257]).to_vec());
                    // Data follows every kind of entry whose size field says so (as the
                    // files codec's scanner and the `tar` crate read it).
                    let data = size;
                    self.pending = data
                        .checked_add(padding(data))
                        .ok_or_else(|| self.malformed(offset, "member size overflows"))?;
                    return Ok(Some(Member {
                        path,
                        link,
                        kind,
                        size: data,
                        header_offset,
                        data_offset: self.pos,
                    }));
                }
            };
            if size > MAX_EXTENSION_RECORD {
                return Err(TarError::RecordTooLarge {
                    offset,
                    record,
                    member: display_name(&ustar_name(&block)),
                    size,
                });
            }
            // Bounded by the check above.
            let mut data = vec![0u8; size as usize];
            if self.read_block(&mut data)? < data.len() {
                return Err(self.truncated(record));
            }
            let pad = padding(size);
            let skipped = self.src.skip(pad)?;
            self.pos += skipped;
            if skipped < pad {
                return Err(self.truncated(record));
            }
            match kind {
                b'L' => long_name = Some(cstr(&data).to_vec()),
                b'K' => long_link = Some(cstr(&data).to_vec()),
                b'x' => local
                    .apply(&data)
                    .map_err(|reason| self.malformed(offset, &reason))?,
                _ => self
                    .global
                    .apply(&data)
                    .map_err(|reason| self.malformed(offset, &reason))?,
            }
        }
    }

    /// Reads until `buf` is full or the source ends; returns the bytes read.
    fn read_block(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            match self.src.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.pos += n as u64;
        Ok(n)
    }

    fn malformed(&self, offset: u64, reason: &str) -> TarError {
        TarError::Malformed {
            offset,
            reason: reason.to_string(),
        }
    }

    fn truncated(&self, what: &str) -> TarError {
        self.malformed(self.pos, &format!("archive ends inside a {what}"))
    }
}

impl<S: Source> Iterator for TarHeaders<S> {
    type Item = std::result::Result<Member, TarError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_member().transpose()
    }
}

/// A member name for a message: lossy UTF-8, cut to 200 characters (a name can be a
/// megabyte long).
pub fn display_name(name: &[u8]) -> String {
    const MAX: usize = 200;
    let s = String::from_utf8_lossy(name);
    match s.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}... ({} bytes)", &s[..cut], name.len()),
        None => s.into_owned(),
    }
}

/// Padding after `size` bytes of data, up to the next block.
pub fn padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

/// Whether a header block's checksum (unsigned sum, the field counted as spaces) holds.
pub fn checksum_ok(block: &[u8; BLOCK]) -> bool {
    let Some(stored) = parse_octal(&block[148..156]) else {
        return false;
    };
    let sum: u64 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                b as u64
            }
        })
        .sum();
    sum == stored
}

/// An octal number field: leading spaces, digits, then NUL or space; empty is 0.
pub fn parse_octal(field: &[u8]) -> Option<u64> {
    let digits = field
        .iter()
        .copied()
        .skip_while(|&b| b == b' ')
        .take_while(|&b| b != 0 && b != b' ');
    let mut v: u64 = 0;
    for b in digits {
        if !(b'0'..=b'7').contains(&b) {
            return None;
        }
        v = v.checked_mul(8)?.checked_add((b - b'0') as u64)?;
    }
    Some(v)
}

/// A size field: octal, or GNU base-256 (high bit set; a negative value is refused).
pub fn parse_size(field: &[u8]) -> Option<u64> {
    let (&first, rest) = field.split_first()?;
    if first & 0x80 == 0 {
        return parse_octal(field);
    }
    if first & 0x40 != 0 {
        return None;
    }
    let mut v: u64 = (first & 0x3f) as u64;
    for &b in rest {
        v = v.checked_mul(256)?.checked_add(b as u64)?;
    }
    Some(v)
}

/// The bytes of a NUL-terminated field, up to its first NUL.
pub fn cstr(b: &[u8]) -> &[u8] {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    &b[..end]
}

/// A header's name: the ustar prefix (POSIX ustar headers only, not GNU, whose bytes
/// there are times) joined to the name field.
pub fn ustar_name(block: &[u8; BLOCK]) -> Vec<u8> {
    let name = cstr(&block[0..100]);
    if &block[257..263] == b"ustar\0" {
        let prefix = cstr(&block[345..500]);
        if !prefix.is_empty() {
            let mut p = Vec::with_capacity(prefix.len() + 1 + name.len());
            p.extend_from_slice(prefix);
            p.push(b'/');
            p.extend_from_slice(name);
            return p;
        }
    }
    name.to_vec()
}

/// The `key=value` records of a PAX extended header (`"LEN key=value\n"` each), in
/// order; a record that does not parse ends the iteration with an error.
pub fn pax_records(data: &[u8]) -> PaxRecords<'_> {
    PaxRecords { rest: data }
}

/// Iterator returned by [`pax_records`].
pub struct PaxRecords<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for PaxRecords<'a> {
    type Item = std::result::Result<(&'a [u8], &'a [u8]), String>;

    fn next(&mut self) -> Option<Self::Item> {
        // Trailing NULs pad some writers' records to the block.
        if self.rest.iter().all(|&b| b == 0) {
            return None;
        }
        let data = std::mem::take(&mut self.rest);
        let Some(sp) = data.iter().position(|&b| b == b' ') else {
            return Some(Err("PAX record without a length".into()));
        };
        let Some(len) = std::str::from_utf8(&data[..sp])
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
        else {
            return Some(Err("PAX record length is not a number".into()));
        };
        if len <= sp + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Some(Err(format!("PAX record length {len} does not fit")));
        }
        let record = &data[sp + 1..len - 1];
        let Some(eq) = record.iter().position(|&b| b == b'=') else {
            return Some(Err("PAX record without '='".into()));
        };
        self.rest = &data[len..];
        Some(Ok((&record[..eq], &record[eq + 1..])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &str, kind: u8, size: u64) -> [u8; BLOCK] {
        let mut h = tar::Header::new_gnu();
        h.set_path(name).unwrap();
        h.set_size(size);
        h.set_entry_type(tar::EntryType::new(kind));
        h.set_cksum();
        *h.as_bytes()
    }

    fn members(data: &[u8]) -> Vec<Member> {
        TarHeaders::new(data)
            .collect::<std::result::Result<Vec<_>, _>>()
            .unwrap()
    }

    #[test]
    fn reads_what_the_tar_crate_writes() {
        let mut b = tar::Builder::new(Vec::new());
        let long = format!("{}/file", "d".repeat(200));
        let mut h = tar::Header::new_gnu();
        h.set_size(5);
        h.set_mode(0o644);
        b.append_data(&mut h, &long, &b"hello"[..]).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "link", "t".repeat(300)).unwrap();
        b.append_pax_extensions([("path", &b"pax/name"[..]), ("size", &b"3"[..])])
            .unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_path("short").unwrap();
        h.set_size(3);
        h.set_cksum();
        b.append(&h, &b"abc"[..]).unwrap();
        let data = b.into_inner().unwrap();
        let m = members(&data);
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].path, long.as_bytes());
        assert!(m[0].is_file());
        assert_eq!(&data[m[0].data_offset as usize..][..5], b"hello");
        assert!(m[1].is_symlink());
        assert_eq!(m[1].link, "t".repeat(300).as_bytes());
        assert_eq!(m[2].path, b"pax/name");
        assert_eq!(m[2].size, 3);
        assert_eq!(&data[m[2].data_offset as usize..][..3], b"abc");
        // The same through the seeking source.
        let seek: Vec<Member> = TarHeaders::seekable(io::Cursor::new(&data))
            .collect::<std::result::Result<_, _>>()
            .unwrap();
        assert_eq!(seek, m);
    }

    #[test]
    fn ustar_prefix_and_base256_size() {
        let mut h = tar::Header::new_ustar();
        h.as_ustar_mut().unwrap().prefix[..3].copy_from_slice(b"pre");
        h.set_path("name").unwrap();
        h.set_size(0);
        let mut block = *h.as_bytes();
        // Base-256: 0x80 then a big-endian 4.
        block[124..136].copy_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4]);
        let mut h = tar::Header::from_byte_slice(&block).clone();
        h.set_cksum();
        let mut data = h.as_bytes().to_vec();
        data.extend_from_slice(&[7u8; 512]);
        data.extend_from_slice(&[0u8; 1024]);
        let m = members(&data);
        assert_eq!(m[0].path, b"pre/name");
        assert_eq!(m[0].size, 4);
    }

    #[test]
    fn oversized_records_are_errors_without_reading_them() {
        for kind in [b'L', b'K', b'x', b'g'] {
            let mut data = header("././@LongLink", kind, 300 << 20).to_vec();
            data.extend_from_slice(&[b'a'; 4096]);
            let err = TarHeaders::new(&data[..]).next_member().unwrap_err();
            match err {
                TarError::RecordTooLarge { size, offset, .. } => {
                    assert_eq!((size, offset), (300 << 20, 0))
                }
                e => panic!("{e}"),
            }
        }
        // At the limit it is read.
        let mut data = header("././@LongLink", b'L', MAX_EXTENSION_RECORD).to_vec();
        data.extend(std::iter::repeat_n(b'n', MAX_EXTENSION_RECORD as usize));
        data.extend_from_slice(&header("x", b'0', 0));
        let m = members(&data);
        assert_eq!(m[0].path.len(), MAX_EXTENSION_RECORD as usize);
    }

    #[test]
    fn damaged_streams_are_errors() {
        let good = header("a", b'0', 10);
        let mut bad = good;
        bad[0] ^= 1;
        assert!(matches!(
            TarHeaders::new(&bad[..]).next_member(),
            Err(TarError::Malformed { .. })
        ));
        // Data shorter than claimed.
        let mut short = good.to_vec();
        short.extend_from_slice(&[1, 2, 3]);
        let mut it = TarHeaders::new(&short[..]);
        assert!(it.next_member().unwrap().is_some());
        assert!(it.next_member().is_err());
        // The same when the data is passed over by seeking.
        let mut it = TarHeaders::seekable(io::Cursor::new(&short));
        assert!(it.next_member().unwrap().is_some());
        assert!(it.next_member().is_err());
        // A partial header.
        assert!(TarHeaders::new(&good[..100]).next_member().is_err());
        // Empty is an empty archive.
        assert!(TarHeaders::new(&[][..]).next_member().unwrap().is_none());
        // A malformed PAX record.
        let mut pax = header("p", b'x', 6).to_vec();
        pax.extend_from_slice(b"9 a=b\n");
        pax.resize(1024, 0);
        assert!(TarHeaders::new(&pax[..]).next_member().is_err());
    }

    #[test]
    fn global_pax_applies_to_later_members() {
        let rec = b"16 linkpath=tgt\n";
        let mut data = header("g", b'g', rec.len() as u64).to_vec();
        data.extend_from_slice(rec);
        data.resize(1024, 0);
        data.extend_from_slice(&header("l", b'2', 0));
        data.extend_from_slice(&header("l2", b'2', 0));
        let m = members(&data);
        assert_eq!(m.len(), 2);
        assert!(m.iter().all(|m| m.link == b"tgt"));
    }

    #[test]
    fn negative_base256_is_refused() {
        assert_eq!(parse_size(&[0xff; 12]), None);
        assert_eq!(parse_size(b"0000000017\0\0"), Some(15));
        assert_eq!(
            parse_size(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]),
            Some(256)
        );
    }
}
