//! Where an image's files live: a directory, or a tar archive indexed once and read in place.
//!
//! Both give the transports the same view: named files, opened as streams, with every name
//! resolved inside the root (`..` and absolute paths are refused; so are symlinks that leave
//! an archive, and any symlink inside a directory).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::compression::Compression;
use crate::error::{Error, IoContext, Result};
use crate::tar_headers::{display_name, TarHeaders};
use crate::transport::{
    Counter, CountingReader, ExpansionGuard, Limits, ENV_MAX_ARCHIVE_INDEX, ENV_MAX_JSON_SIZE,
};

/// A set of named files.
pub trait Store: Send + Sync {
    /// The directory or archive, for messages.
    fn root(&self) -> &Path;
    /// Opens the file at `name` (relative, `/`-separated). Missing files are
    /// [`Error::MissingFile`] with `what` naming the role of the file.
    fn open(&self, name: &str, what: &str) -> Result<Box<dyn Read + Send + '_>>;
    /// The size of the file at `name`, or `None` if it does not exist.
    fn size(&self, name: &str) -> Result<Option<u64>>;

    /// Where a member's bytes lie in a file, for positioned reads (`None`: not present).
    fn locate(&self, name: &str, what: &str) -> Result<Option<FileSection>>;

    /// Whether `name` exists.
    fn exists(&self, name: &str) -> Result<bool> {
        Ok(self.size(name)?.is_some())
    }

    /// Reads a whole small file (a JSON document), refusing files larger than `max`.
    fn read_small(&self, name: &str, what: &str, max: u64) -> Result<Vec<u8>> {
        let size = self.size(name)?.ok_or_else(|| Error::MissingFile {
            container: self.root().to_path_buf(),
            what: what.to_string(),
            name: name.to_string(),
        })?;
        let too_big = |found: u64| Error::LimitExceeded {
            what: format!("{} {name}", self.root().display()),
            limit: "max JSON document size".into(),
            max,
            found,
            option: ENV_MAX_JSON_SIZE.into(),
        };
        if size > max {
            return Err(too_big(size));
        }
        let mut buf = Vec::with_capacity(size as usize);
        let n = self
            .open(name, what)?
            .take(max.saturating_add(1))
            .read_to_end(&mut buf)
            .at(self.root().join(name))?;
        // The size said, and the bytes read, are two things: a file that grew, or a link
        // to an endless device, is held to the limit too.
        if n as u64 > max {
            return Err(too_big(n as u64));
        }
        Ok(buf)
    }
}

/// Normalises a relative name: strips `./`, folds `a/../b`, refuses escapes and absolute
/// paths. Returns `None` if the name leaves the root.
pub fn normalize(name: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    if name.starts_with('/') {
        return None;
    }
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

/// A directory on disk (an OCI layout), opened once. Files inside are reached relative to
/// it without following any symbolic link (a link at any component is
/// [`Error::UnsupportedFileType`]), and only regular files are read: a FIFO, socket or
/// device is refused before anything reads it.
pub struct DirStore {
    root: PathBuf,
    dir: crate::fs_safe::Dir,
}

impl DirStore {
    /// A store rooted at `root`, which must be a directory (`root` itself may be a link
    /// to one).
    pub fn new(root: &Path) -> Result<DirStore> {
        let meta = std::fs::metadata(root).at(root)?;
        if !meta.is_dir() {
            return Err(Error::InvalidLayout {
                path: root.to_path_buf(),
                reason: "not a directory".into(),
            });
        }
        let root = root.canonicalize().at(root)?;
        let dir = crate::fs_safe::Dir::open(&root)?;
        Ok(DirStore { root, dir })
    }

    fn resolve(&self, name: &str) -> Result<Option<File>> {
        let rel = normalize(name).ok_or_else(|| Error::PathOutsideArchive {
            container: self.root.clone(),
            name: name.to_string(),
        })?;
        self.dir.open_file(&rel)
    }
}

impl Store for DirStore {
    fn root(&self) -> &Path {
        &self.root
    }

    fn open(&self, name: &str, what: &str) -> Result<Box<dyn Read + Send + '_>> {
        let f = self.resolve(name)?.ok_or_else(|| Error::MissingFile {
            container: self.root.clone(),
            what: what.to_string(),
            name: name.to_string(),
        })?;
        Ok(Box::new(f))
    }

    fn locate(&self, name: &str, _what: &str) -> Result<Option<FileSection>> {
        let Some(f) = self.resolve(name)? else {
            return Ok(None);
        };
        let len = f.metadata().at(self.root.join(name))?.len();
        Ok(Some(FileSection {
            file: Arc::new(f),
            offset: 0,
            len,
        }))
    }

    fn size(&self, name: &str) -> Result<Option<u64>> {
        match self.resolve(name)? {
            None => Ok(None),
            Some(f) => Ok(Some(f.metadata().at(self.root.join(name))?.len())),
        }
    }
}

#[derive(Debug, Clone)]
enum TarEntry {
    File { offset: u64, size: u64 },
    Symlink { target: String },
    HardLink { target: String },
    Dir,
}

/// A tar archive, indexed once; members are read in place with positioned reads.
/// A compressed archive (gzip, zstd, xz) is first decompressed to a temporary file.
pub struct TarStore {
    path: PathBuf,
    file: Arc<File>,
    entries: HashMap<String, TarEntry>,
}

impl TarStore {
    /// Indexes the archive at `path`, with the default [`Limits`].
    pub fn open(path: &Path) -> Result<TarStore> {
        Self::open_with(path, &Limits::default())
    }

    /// Indexes the archive at `path`. A compressed archive is refused past
    /// [`Limits::max_entry_size`] or [`Limits::max_expansion_ratio`], and so is a member
    /// larger than [`Limits::max_entry_size`].
    pub fn open_with(path: &Path, limits: &Limits) -> Result<TarStore> {
        let mut file = crate::fs_safe::open_input(path, "an archive file")?;
        let mut magic = [0u8; 6];
        let n = read_up_to(&mut file, &mut magic).at(path)?;
        file.seek(SeekFrom::Start(0)).at(path)?;
        let compression = Compression::detect(&magic[..n]);
        let file = if compression == Compression::None {
            file
        } else {
            tracing::debug!(path = %path.display(), compression = compression.name(), "archive is compressed; decompressing to a temporary file");
            let mut spool = crate::temp::spool_in(&std::env::temp_dir())?;
            let input = Counter::default();
            let counted = CountingReader {
                inner: file,
                counter: input.clone(),
            };
            let dec =
                compression
                    .decoder(BufReader::new(counted))
                    .map_err(|e| Error::InvalidLayout {
                        path: path.to_path_buf(),
                        reason: format!("cannot decompress {} archive: {e}", compression.name()),
                    })?;
            let mut guarded = ExpansionGuard {
                inner: dec,
                input,
                out: 0,
                limits: limits.clone(),
                what: format!("{} (decompressed archive)", path.display()),
            };
            io::copy(&mut guarded, &mut spool).map_err(|e| match Error::io(path, e) {
                Error::Io { source, .. } => Error::InvalidLayout {
                    path: path.to_path_buf(),
                    reason: format!("cannot decompress {} archive: {source}", compression.name()),
                },
                ours => ours,
            })?;
            spool
        };
        let entries = index_tar(&file, path, limits)?;
        tracing::debug!(path = %path.display(), entries = entries.len(), "indexed archive");
        Ok(TarStore {
            path: path.to_path_buf(),
            file: Arc::new(file),
            entries,
        })
    }

    /// Indexes an archive held in an open file, such as a spool with no name; `name` is
    /// what messages call it. The store keeps the file open as long as it lives.
    pub fn open_spooled(file: File, name: impl Into<PathBuf>) -> Result<TarStore> {
        let path = name.into();
        let entries = index_tar(&file, &path, &Limits::default())?;
        Ok(TarStore {
            path,
            file: Arc::new(file),
            entries,
        })
    }

    /// Follows symlinks and hard links to a regular file entry.
    fn resolve(&self, name: &str) -> Result<Option<(u64, u64)>> {
        let outside = |n: &str| Error::PathOutsideArchive {
            container: self.path.clone(),
            name: n.to_string(),
        };
        let mut current = normalize(name).ok_or_else(|| outside(name))?;
        for _ in 0..32 {
            match self.entries.get(&current) {
                None => return Ok(None),
                Some(TarEntry::File { offset, size }) => return Ok(Some((*offset, *size))),
                Some(TarEntry::Dir) => return Ok(None),
                Some(TarEntry::HardLink { target }) => {
                    current = normalize(target).ok_or_else(|| outside(target))?;
                }
                Some(TarEntry::Symlink { target }) => {
                    let joined = if target.starts_with('/') {
                        return Err(outside(target));
                    } else {
                        match current.rsplit_once('/') {
                            Some((dir, _)) => format!("{dir}/{target}"),
                            None => target.clone(),
                        }
                    };
                    current = normalize(&joined).ok_or_else(|| outside(&joined))?;
                }
            }
        }
        Err(Error::InvalidLayout {
            path: self.path.clone(),
            reason: format!("too many levels of links resolving {name:?}"),
        })
    }

    /// All regular-file and link names in the archive.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }
}

fn read_up_to(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// What one indexed member costs besides its name and link bytes (map slot, strings'
/// headers, the record), for [`Limits::max_archive_index`].
const INDEX_ENTRY_OVERHEAD: u64 = 96;

fn index_tar(file: &File, path: &Path, limits: &Limits) -> Result<HashMap<String, TarEntry>> {
    let file_size = file.metadata().at(path)?.len();
    let bad = |reason: String| Error::InvalidLayout {
        path: path.to_path_buf(),
        reason,
    };
    let mut entries = HashMap::new();
    let mut index_bytes = 0u64;
    let mut reader = file;
    reader.seek(SeekFrom::Start(0)).at(path)?;
    for member in TarHeaders::seekable(reader) {
        let member = member.map_err(|e| e.into_error(path))?;
        let name_str = String::from_utf8_lossy(&member.path).into_owned();
        let Some(name) = normalize(&name_str) else {
            tracing::warn!(archive = %path.display(), entry = %name_str, "ignoring archive entry outside the root");
            continue;
        };
        if name.is_empty() {
            continue;
        }
        let link = || -> Result<String> {
            if member.link.is_empty() {
                return Err(bad(format!("link entry {name:?} has no target")));
            }
            Ok(String::from_utf8_lossy(&member.link).into_owned())
        };
        let record = if member.is_file() {
            let (offset, size) = (member.data_offset, member.size);
            limits.check_entry_size(&format!("{} member {name:?}", path.display()), size)?;
            // A member claiming more bytes than the file holds is truncated; say so now
            // rather than when it is read.
            let fits = matches!(offset.checked_add(size), Some(end) if end <= file_size);
            if !fits {
                return Err(bad(format!(
                    "archive member {name:?} is truncated: it claims {size} bytes at offset {offset}, the archive has {file_size}"
                )));
            }
            TarEntry::File { offset, size }
        } else if member.is_symlink() {
            TarEntry::Symlink { target: link()? }
        } else if member.is_hard_link() {
            TarEntry::HardLink { target: link()? }
        } else if member.is_dir() {
            TarEntry::Dir
        } else if member.is_gnu_sparse() {
            return Err(bad(format!(
                "sparse archive entry {name:?} is not supported in an image archive"
            )));
        } else {
            continue;
        };
        // The index lives as long as the store: a tiny compressed archive must not make it
        // hold millions of members.
        let cost = match &record {
            TarEntry::Symlink { target } | TarEntry::HardLink { target } => target.len() as u64,
            _ => 0,
        } + name.len() as u64
            + INDEX_ENTRY_OVERHEAD;
        index_bytes = index_bytes.saturating_add(cost);
        if index_bytes > limits.max_archive_index {
            return Err(Error::LimitExceeded {
                what: format!(
                    "{} (index of its members, at member {:?})",
                    path.display(),
                    display_name(name.as_bytes())
                ),
                limit: "archive index size".into(),
                max: limits.max_archive_index,
                found: index_bytes,
                option: ENV_MAX_ARCHIVE_INDEX.into(),
            });
        }
        if matches!(record, TarEntry::Dir) {
            entries.entry(name).or_insert(record);
            continue;
        }
        if let Some(prev) = entries.insert(name.clone(), record) {
            if !matches!(prev, TarEntry::Dir) {
                return Err(bad(format!("duplicate archive entry {name:?}")));
            }
        }
    }
    Ok(entries)
}

/// A run of bytes in a file, read with positioned reads (several readers can share it).
#[derive(Debug, Clone)]
pub struct FileSection {
    /// The file.
    pub file: Arc<File>,
    /// Where the section starts.
    pub offset: u64,
    /// Its length.
    pub len: u64,
}

impl FileSection {
    /// Fills `buf` from position `pos` of the section; fails if the section (or the file)
    /// ends first.
    pub fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        if pos
            .checked_add(buf.len() as u64)
            .is_none_or(|e| e > self.len)
        {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "read of {} bytes at {pos} is past the end of a {}-byte section",
                    buf.len(),
                    self.len
                ),
            ));
        }
        self.file.read_exact_at(buf, self.offset + pos)
    }

    /// A reader of the whole section (positioned reads: several may be open at once).
    pub fn reader(&self) -> impl Read + Send + 'static {
        SectionReader {
            file: self.file.clone(),
            pos: self.offset,
            end: self.offset + self.len,
        }
    }
}

/// Reads a section of a shared file with positioned reads, so several can be open at once.
struct SectionReader {
    file: Arc<File>,
    pos: u64,
    end: u64,
}

impl Read for SectionReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let left = self.end - self.pos;
        if left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(left.min(usize::MAX as u64) as usize);
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "archive member is truncated",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl Store for TarStore {
    fn root(&self) -> &Path {
        &self.path
    }

    fn open(&self, name: &str, what: &str) -> Result<Box<dyn Read + Send + '_>> {
        let (offset, size) = self.resolve(name)?.ok_or_else(|| Error::MissingFile {
            container: self.path.clone(),
            what: what.to_string(),
            name: name.to_string(),
        })?;
        Ok(Box::new(SectionReader {
            file: Arc::clone(&self.file),
            pos: offset,
            end: offset + size,
        }))
    }

    fn size(&self, name: &str) -> Result<Option<u64>> {
        Ok(self.resolve(name)?.map(|(_, size)| size))
    }

    fn locate(&self, name: &str, _what: &str) -> Result<Option<FileSection>> {
        Ok(self.resolve(name)?.map(|(offset, len)| FileSection {
            file: Arc::clone(&self.file),
            offset,
            len,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_refuses_escapes() {
        assert_eq!(normalize("./a/b/../c").as_deref(), Some("a/c"));
        assert_eq!(normalize("a//b/").as_deref(), Some("a/b"));
        assert_eq!(normalize("../x"), None);
        assert_eq!(normalize("a/../../x"), None);
        assert_eq!(normalize("/etc/passwd"), None);
    }

    fn tar_with(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> tempfile::NamedTempFile {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        let data = b.into_inner().unwrap();
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, &data).unwrap();
        f
    }

    fn add_file(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, data).unwrap();
    }

    fn add_link(b: &mut tar::Builder<Vec<u8>>, name: &str, target: &str, kind: tar::EntryType) {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(0);
        h.set_cksum();
        b.append_link(&mut h, name, target).unwrap();
    }

    #[test]
    fn tar_store_follows_links_inside_and_refuses_outside() {
        let f = tar_with(|b| {
            add_file(b, "./a/layer.tar", b"layer bytes");
            add_link(b, "b/layer.tar", "../a/layer.tar", tar::EntryType::Symlink);
            add_link(b, "c/layer.tar", "a/layer.tar", tar::EntryType::Link);
            add_link(b, "evil", "../../etc/passwd", tar::EntryType::Symlink);
            add_link(b, "abs", "/etc/passwd", tar::EntryType::Symlink);
        });
        let s = TarStore::open(f.path()).unwrap();
        for name in ["a/layer.tar", "b/layer.tar", "c/layer.tar"] {
            let mut out = String::new();
            s.open(name, "layer")
                .unwrap()
                .read_to_string(&mut out)
                .unwrap();
            assert_eq!(out, "layer bytes", "{name}");
        }
        for name in ["evil", "abs", "../a/layer.tar"] {
            let e = s.open(name, "layer").err().expect(name);
            assert!(matches!(e, Error::PathOutsideArchive { .. }), "{name}: {e}");
        }
        let e = s.open("nope", "config").err().unwrap();
        assert!(e.to_string().contains("missing config \"nope\""), "{e}");
    }

    #[test]
    fn tar_store_refuses_duplicates() {
        let f = tar_with(|b| {
            add_file(b, "manifest.json", b"[]");
            add_file(b, "./manifest.json", b"[1]");
        });
        let e = TarStore::open(f.path()).err().unwrap();
        assert!(
            e.to_string()
                .contains("duplicate archive entry \"manifest.json\""),
            "{e}"
        );
    }

    #[test]
    fn gzip_archive_is_transparent() {
        let plain = tar_with(|b| add_file(b, "x", b"hi"));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::copy(&mut File::open(plain.path()).unwrap(), &mut gz).unwrap();
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, &gz.finish().unwrap()).unwrap();
        let s = TarStore::open(f.path()).unwrap();
        assert_eq!(s.size("x").unwrap(), Some(2));
    }
}
