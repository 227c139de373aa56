//! Splitting a layer tar into header bytes and file contents.
//!
//! The file-aware codec treats a layer as a byte stream cut into alternating *meta* regions
//! (tar headers, PAX and GNU long-name records, padding, directory and link entries, the
//! end-of-archive blocks) and *data* regions (the contents of regular files). Rebuilding is
//! concatenation, so the cut only has to be good, not right: where the scanner does not
//! understand the stream (a damaged header, an unknown extension), everything from there on
//! is one meta region and the layer still rebuilds byte for byte. Headers are parsed by
//! [`crate::tar_headers`]'s functions; an extension record larger than its limit ends the
//! scan (the rest is meta), which is safe here because nothing is refused.

use std::io::{self, Read, Write};

use sha2::{Digest as _, Sha256};

use crate::tar_headers::{
    checksum_ok, padding, parse_size, pax_records, ustar_name, BLOCK, MAX_EXTENSION_RECORD,
};

/// A regular file found in a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Its path as stored (PAX `path`, GNU long name or ustar prefix + name), without `./`.
    pub path: Vec<u8>,
    /// Offset of the meta region before the contents (headers and previous padding).
    pub meta_offset: u64,
    /// Offset of the contents in the layer tar (the meta region ends here).
    pub data_offset: u64,
    /// Size of the contents.
    pub size: u64,
    /// SHA-256 of the contents.
    pub hash: [u8; 32],
}

impl FileEntry {
    /// Length of the meta region before the contents.
    pub fn meta_len(&self) -> u64 {
        self.data_offset - self.meta_offset
    }

    /// The contents' end offset.
    pub fn data_end(&self) -> u64 {
        self.data_offset + self.size
    }
}

/// Regular files of a layer tar, in stream order, and its total length.
#[derive(Debug, Clone, Default)]
pub struct TarIndex {
    /// Regular files with at least one byte of content.
    pub files: Vec<FileEntry>,
    /// Total length of the layer tar.
    pub len: u64,
    /// Whether the stream parsed as a tar up to its end-of-archive marker.
    pub complete: bool,
}

/// Reads a tar stream to its end, indexing its regular files. Every byte read is also
/// written to `copy` when given (to spool the layer while indexing it).
pub fn scan(r: impl Read, copy: Option<&mut dyn Write>) -> io::Result<TarIndex> {
    let mut s = Scanner {
        r,
        copy,
        pos: 0,
        eof: false,
        buf: vec![0u8; CONSUME_PIECE],
    };
    let mut index = TarIndex::default();
    let mut meta_offset = 0u64;
    let mut long_name: Option<Vec<u8>> = None;
    let mut pax_path: Option<Vec<u8>> = None;
    let mut pax_size: Option<u64> = None;
    let mut block = [0u8; BLOCK];
    loop {
        if s.read_full(&mut block)? < BLOCK {
            break;
        }
        if block.iter().all(|&b| b == 0) {
            index.complete = true;
            break;
        }
        if !checksum_ok(&block) {
            break;
        }
        let Some(header_size) = parse_size(&block[124..136]) else {
            break;
        };
        let kind = block[156];
        let size = match kind {
            b'x' | b'g' | b'L' | b'K' => header_size,
            _ => pax_size.take().unwrap_or(header_size),
        };
        match kind {
            b'x' | b'g' | b'L' | b'K' => {
                if size > MAX_EXTENSION_RECORD {
                    break;
                }
                let mut data = vec![0u8; size as usize];
                if s.read_full(&mut data)? < data.len() || !s.skip(padding(size))? {
                    break;
                }
                match kind {
                    b'x' => {
                        let (p, sz) = parse_pax(&data);
                        if p.is_some() {
                            pax_path = p;
                        }
                        if sz.is_some() {
                            pax_size = sz;
                        }
                    }
                    b'L' => {
                        let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
                        data.truncate(end);
                        long_name = Some(data);
                    }
                    _ => {}
                }
            }
            b'0' | b'\0' | b'7' => {
                let path = pax_path
                    .take()
                    .or_else(|| long_name.take())
                    .unwrap_or_else(|| ustar_name(&block));
                long_name = None;
                let data_offset = s.pos;
                let mut hasher = Sha256::new();
                if !s.consume(size, Some(&mut hasher))? {
                    break;
                }
                if size > 0 {
                    index.files.push(FileEntry {
                        path: clean(path),
                        meta_offset,
                        data_offset,
                        size,
                        hash: hasher.finalize().into(),
                    });
                    meta_offset = data_offset + size;
                }
                if !s.skip(padding(size))? {
                    break;
                }
            }
            _ => {
                pax_path = None;
                long_name = None;
                if !s.consume(size, None)? || !s.skip(padding(size))? {
                    break;
                }
            }
        }
    }
    // Whatever follows (end blocks, trailing bytes, or a part not understood) is meta.
    s.drain()?;
    index.len = s.pos;
    Ok(index)
}

/// Bytes of file contents read at a time.
const CONSUME_PIECE: usize = 256 << 10;

struct Scanner<'c, R> {
    r: R,
    copy: Option<&'c mut dyn Write>,
    pos: u64,
    eof: bool,
    /// The buffer contents are read into, made once: made for each file, the zeroing of
    /// 256 KiB twice a file took 1.1 s of CPU on the node pair's two layers of 60 000
    /// files.
    buf: Vec<u8>,
}

impl<R: Read> Scanner<'_, R> {
    fn read_full(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut n = 0;
        while n < buf.len() && !self.eof {
            match self.r.read(&mut buf[n..]) {
                Ok(0) => self.eof = true,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if let Some(c) = self.copy.as_mut() {
            c.write_all(&buf[..n])?;
        }
        self.pos += n as u64;
        Ok(n)
    }

    /// Reads `n` bytes, hashing them; false when the stream ends first.
    fn consume(&mut self, mut n: u64, mut hasher: Option<&mut Sha256>) -> io::Result<bool> {
        let mut buf = std::mem::take(&mut self.buf);
        let mut whole = true;
        while n > 0 {
            let want = n.min(buf.len() as u64) as usize;
            let got = match self.read_full(&mut buf[..want]) {
                Ok(got) => got,
                Err(e) => {
                    self.buf = buf;
                    return Err(e);
                }
            };
            if let Some(h) = hasher.as_mut() {
                h.update(&buf[..got]);
            }
            n -= got as u64;
            if got < want {
                whole = false;
                break;
            }
        }
        self.buf = buf;
        Ok(whole)
    }

    fn skip(&mut self, n: u64) -> io::Result<bool> {
        self.consume(n, None)
    }

    fn drain(&mut self) -> io::Result<()> {
        while !self.eof {
            self.consume(1 << 20, None)?;
        }
        Ok(())
    }
}

/// The `path` and `size` records of a PAX extended header; a record that does not parse
/// ends the reading (what came before it still counts).
fn parse_pax(data: &[u8]) -> (Option<Vec<u8>>, Option<u64>) {
    let (mut path, mut size) = (None, None);
    for (k, v) in pax_records(data).map_while(|r| r.ok()) {
        match k {
            b"path" => path = Some(v.to_vec()),
            b"size" => size = std::str::from_utf8(v).ok().and_then(|s| s.parse().ok()),
            _ => {}
        }
    }
    (path, size)
}

fn clean(mut p: Vec<u8>) -> Vec<u8> {
    while p.starts_with(b"./") {
        p.drain(..2);
    }
    while p.first() == Some(&b'/') {
        p.remove(0);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, name, *data).unwrap();
        }
        let mut dir = tar::Header::new_ustar();
        dir.set_entry_type(tar::EntryType::Directory);
        dir.set_size(0);
        b.append_data(&mut dir, "some/dir/", &[][..]).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn finds_files_and_long_names() {
        let long = format!("{}/file.txt", "d".repeat(150));
        let t = build(&[("a.txt", b"hello"), ("empty", b""), (&long, b"world!")]);
        let mut copy = Vec::new();
        let idx = scan(&t[..], Some(&mut copy)).unwrap();
        assert_eq!(copy, t);
        assert!(idx.complete);
        assert_eq!(idx.len, t.len() as u64);
        assert_eq!(idx.files.len(), 2);
        assert_eq!(idx.files[0].path, b"a.txt");
        assert_eq!(idx.files[1].path, long.as_bytes());
        for f in &idx.files {
            let d = &t[f.data_offset as usize..f.data_end() as usize];
            assert_eq!(<[u8; 32]>::from(Sha256::digest(d)), f.hash);
        }
        assert_eq!(idx.files[1].meta_offset, idx.files[0].data_end());
    }

    #[test]
    fn pax_path_and_size() {
        let mut b = tar::Builder::new(Vec::new());
        let name = format!("x/{}", "é".repeat(80));
        let mut h = tar::Header::new_ustar();
        h.set_size(3);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_pax_extensions([("path", name.as_bytes())])
            .unwrap();
        h.set_path("short").unwrap();
        h.set_cksum();
        b.append(&h, &b"abc"[..]).unwrap();
        let t = b.into_inner().unwrap();
        let idx = scan(&t[..], None).unwrap();
        assert_eq!(idx.files.len(), 1);
        assert_eq!(idx.files[0].path, name.as_bytes());
        assert_eq!(idx.files[0].size, 3);
    }

    #[test]
    fn garbage_is_all_meta() {
        let data = vec![7u8; 5000];
        let idx = scan(&data[..], None).unwrap();
        assert!(idx.files.is_empty());
        assert!(!idx.complete);
        assert_eq!(idx.len, 5000);
    }

    #[test]
    fn truncated_tar_keeps_what_it_found() {
        let t = build(&[("a", b"1234"), ("b", &[9u8; 3000])]);
        let cut = &t[..1024 + 512 + 100];
        let idx = scan(cut, None).unwrap();
        assert_eq!(idx.files.len(), 1);
        assert_eq!(idx.len, cut.len() as u64);
    }
}
