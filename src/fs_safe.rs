//! Files opened by type, directories walked without following links, and temporary files
//! that a later run can tell from a live run's.
//!
//! - [`open_input`] opens a file the command reads (a package, an archive) with
//!   `O_NONBLOCK`, so that a FIFO cannot block the open, and refuses FIFOs, sockets and
//!   devices ([`Error::UnsupportedFileType`]) before anything reads from them.
//! - [`Dir`] is a directory opened once (following a link in the path the user gave, as
//!   `tar -C` does); everything inside it is reached with `openat2(RESOLVE_BENEATH |
//!   RESOLVE_NO_SYMLINKS)` relative to its descriptor (a walk of `O_NOFOLLOW` opens where
//!   the kernel lacks `openat2`), so a symbolic link at any component inside is refused and
//!   a write can never land outside the directory.
//! - [`LockedTemp`] and [`LockedTempDir`] are temporary files and directories named
//!   `.docker-delta-XXXXXX.tmp` that their run holds an `flock` on while it writes them.
//!   [`Dir::sweep`] removes such names whose lock it can take at once: the temporary files
//!   of a run that was killed (`SIGKILL` runs no clean-up), never a live run's and never a
//!   file of another name.
//! - Temporary files take their final name with `renameat` inside the same directory; a
//!   name that must not exist yet is taken with `renameat2(RENAME_NOREPLACE)` (or `link` +
//!   `unlink` where the file system lacks it), so of two runs racing for it exactly one
//!   wins and the other gets [`Error::OutputExists`].

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rustix::fs::{AtFlags, FileType, FlockOperation, Mode, OFlags, RenameFlags};
use rustix::io::Errno;

use crate::error::{Error, IoContext, Result};
use crate::temp::Tracked;

/// What a file type is called in messages.
fn type_name(t: FileType) -> &'static str {
    match t {
        FileType::RegularFile => "regular file",
        FileType::Directory => "directory",
        FileType::Symlink => "symbolic link",
        FileType::Fifo => "FIFO",
        FileType::Socket => "socket",
        FileType::CharacterDevice => "character device",
        FileType::BlockDevice => "block device",
        _ => "file of unknown type",
    }
}

/// The name of a FIFO, socket or device type (`None` for files, directories and links).
fn special_std(t: std::fs::FileType) -> Option<&'static str> {
    if t.is_fifo() {
        Some("FIFO")
    } else if t.is_socket() {
        Some("socket")
    } else if t.is_char_device() {
        Some("character device")
    } else if t.is_block_device() {
        Some("block device")
    } else {
        None
    }
}

fn unsupported(path: impl Into<PathBuf>, found: &str, expected: &str) -> Error {
    Error::UnsupportedFileType {
        path: path.into(),
        found: found.to_string(),
        expected: expected.to_string(),
    }
}

fn errno_io(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error())
}

/// Opens `path` for reading: a regular file or a directory (the caller checks which it
/// wants). A FIFO, socket or device is refused with [`Error::UnsupportedFileType`] naming
/// `expected` before anything is read; the open itself cannot block on a FIFO
/// (`O_NONBLOCK`, cleared again once the type is known).
pub(crate) fn open_input(path: &Path, expected: &str) -> Result<File> {
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
    {
        Ok(f) => f,
        Err(e) => {
            // A socket cannot be opened at all (ENXIO): say what it is.
            if let Some(found) = std::fs::metadata(path)
                .ok()
                .and_then(|m| special_std(m.file_type()))
            {
                return Err(unsupported(path, found, expected));
            }
            return Err(Error::io(path, e));
        }
    };
    let meta = file.metadata().at(path)?;
    if let Some(found) = special_std(meta.file_type()) {
        return Err(unsupported(path, found, expected));
    }
    let flags = rustix::fs::fcntl_getfl(&file).map_err(errno_io).at(path)?;
    rustix::fs::fcntl_setfl(&file, flags - OFlags::NONBLOCK)
        .map_err(errno_io)
        .at(path)?;
    Ok(file)
}

/// Refuses an output path that is a FIFO, socket or device, or a symbolic link to one:
/// `--force` replaces regular files, never device nodes (as root, `-o /dev/null --force`
/// would otherwise replace `/dev/null` with a file).
pub(crate) fn check_output(path: &Path, expected: &str) -> Result<()> {
    for meta in [std::fs::symlink_metadata(path), std::fs::metadata(path)]
        .into_iter()
        .flatten()
    {
        if let Some(found) = special_std(meta.file_type()) {
            return Err(unsupported(path, found, expected));
        }
    }
    Ok(())
}

/// Whether `openat2` is known to be missing (ENOSYS: Linux before 5.6, or a seccomp
/// filter): then paths are walked one `O_NOFOLLOW` open at a time.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`: Linux 5.6 and later.
#[cfg(target_os = "linux")]
fn openat2_beneath(
    dir: BorrowedFd<'_>,
    rel: &str,
    flags: OFlags,
) -> std::result::Result<OwnedFd, Errno> {
    rustix::fs::openat2(
        dir,
        rel,
        flags,
        Mode::empty(),
        rustix::fs::ResolveFlags::BENEATH | rustix::fs::ResolveFlags::NO_SYMLINKS,
    )
}

/// Elsewhere there is no `openat2`: the `O_NOFOLLOW` walk does its work.
#[cfg(not(target_os = "linux"))]
fn openat2_beneath(
    _dir: BorrowedFd<'_>,
    _rel: &str,
    _flags: OFlags,
) -> std::result::Result<OwnedFd, Errno> {
    Err(Errno::NOSYS)
}

/// A directory opened once; paths inside it are resolved relative to its descriptor and
/// may not pass through a symbolic link.
#[derive(Debug)]
pub(crate) struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

impl Dir {
    /// Opens the directory at `path` (a link in `path` itself is followed).
    pub(crate) fn open(path: &Path) -> Result<Dir> {
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NONBLOCK,
            Mode::empty(),
        )
        .map_err(errno_io)
        .at(path)?;
        Ok(Dir {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The path the directory was opened by, for messages.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The descriptor.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Opens `rel` (relative, `/`-separated, no `..`) beneath the directory without
    /// following any symbolic link; `Ok(None)` when it does not exist. A link (or a file
    /// where a directory is needed) on the way is [`Error::UnsupportedFileType`] naming
    /// `expected` for the last component.
    fn open_beneath(&self, rel: &str, flags: OFlags, expected: &str) -> Result<Option<OwnedFd>> {
        let flags = flags | OFlags::CLOEXEC | OFlags::NOCTTY;
        let result = if NO_OPENAT2.load(Ordering::Relaxed) {
            self.walk(rel, flags)
        } else {
            match openat2_beneath(self.fd.as_fd(), rel, flags) {
                Err(Errno::NOSYS) => {
                    NO_OPENAT2.store(true, Ordering::Relaxed);
                    self.walk(rel, flags)
                }
                other => other,
            }
        };
        match result {
            Ok(fd) => Ok(Some(fd)),
            Err(Errno::NOENT) => Ok(None),
            Err(e @ (Errno::LOOP | Errno::NOTDIR | Errno::XDEV | Errno::NXIO)) => Err(self
                .diagnose(rel, expected)
                .unwrap_or_else(|| Error::io(self.path.join(rel), errno_io(e)))),
            Err(e) => Err(Error::io(self.path.join(rel), errno_io(e))),
        }
    }

    /// `openat` one component at a time, each with `O_NOFOLLOW`.
    fn walk(&self, rel: &str, flags: OFlags) -> std::result::Result<OwnedFd, Errno> {
        let parts: Vec<&str> = rel.split('/').filter(|p| !p.is_empty()).collect();
        let Some((last, dirs)) = parts.split_last() else {
            return rustix::fs::openat(&self.fd, ".", flags, Mode::empty());
        };
        let mut cur: Option<OwnedFd> = None;
        for d in dirs {
            let at = cur.as_ref().map_or(self.fd.as_fd(), |f| f.as_fd());
            let next = rustix::fs::openat(
                at,
                *d,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            cur = Some(next);
        }
        let at = cur.as_ref().map_or(self.fd.as_fd(), |f| f.as_fd());
        rustix::fs::openat(at, *last, flags | OFlags::NOFOLLOW, Mode::empty())
    }

    /// Finds the component of `rel` that is a link, or not a directory where one is
    /// needed, and says so.
    fn diagnose(&self, rel: &str, expected: &str) -> Option<Error> {
        let parts: Vec<&str> = rel.split('/').filter(|p| !p.is_empty()).collect();
        for i in 0..parts.len() {
            let prefix = parts[..=i].join("/");
            let st =
                rustix::fs::statat(&self.fd, prefix.as_str(), AtFlags::SYMLINK_NOFOLLOW).ok()?;
            let t = FileType::from_raw_mode(st.st_mode);
            let last = i + 1 == parts.len();
            if t == FileType::Symlink {
                let what = if last { expected } else { "a directory" };
                return Some(unsupported(self.path.join(&prefix), "symbolic link", what));
            }
            if !last && t != FileType::Directory {
                return Some(unsupported(
                    self.path.join(&prefix),
                    type_name(t),
                    "a directory",
                ));
            }
            if last && t != FileType::RegularFile && t != FileType::Directory {
                return Some(unsupported(self.path.join(&prefix), type_name(t), expected));
            }
        }
        None
    }

    /// Opens the regular file `rel` for reading; `Ok(None)` when it does not exist.
    /// Anything but a regular file there (a directory, FIFO, device, socket, or a link on
    /// the way) is [`Error::UnsupportedFileType`]; the open cannot block on a FIFO.
    pub(crate) fn open_file(&self, rel: &str) -> Result<Option<File>> {
        let Some(fd) =
            self.open_beneath(rel, OFlags::RDONLY | OFlags::NONBLOCK, "a regular file")?
        else {
            return Ok(None);
        };
        let path = self.path.join(rel);
        let st = rustix::fs::fstat(&fd).map_err(errno_io).at(&path)?;
        let t = FileType::from_raw_mode(st.st_mode);
        if t != FileType::RegularFile {
            return Err(unsupported(path, type_name(t), "a regular file"));
        }
        let flags = rustix::fs::fcntl_getfl(&fd).map_err(errno_io).at(&path)?;
        rustix::fs::fcntl_setfl(&fd, flags - OFlags::NONBLOCK)
            .map_err(errno_io)
            .at(&path)?;
        Ok(Some(File::from(fd)))
    }

    /// Opens the directory `rel` beneath this one; `Ok(None)` when it does not exist.
    pub(crate) fn open_subdir(&self, rel: &str) -> Result<Option<Dir>> {
        let fd = self.open_beneath(
            rel,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NONBLOCK,
            "a directory",
        );
        let fd = match fd {
            Ok(Some(fd)) => fd,
            Ok(None) => return Ok(None),
            // O_DIRECTORY on a file: ENOTDIR, diagnosed as "regular file where a
            // directory is expected" by open_beneath already.
            Err(e) => return Err(e),
        };
        Ok(Some(Dir {
            fd,
            path: self.path.join(rel),
        }))
    }

    /// Opens the directory `rel`, making each missing component (mode 0777 less the
    /// umask) on the way; a link on the way is refused.
    pub(crate) fn create_subdirs(&self, rel: &str) -> Result<Dir> {
        let mut done = String::new();
        for part in rel.split('/').filter(|p| !p.is_empty()) {
            if !done.is_empty() {
                done.push('/');
            }
            done.push_str(part);
            if self.open_subdir(&done)?.is_none() {
                let parent = match done.rsplit_once('/') {
                    Some((p, _)) => self
                        .open_subdir(p)?
                        .ok_or_else(|| Error::io(self.path.join(p), errno_io(Errno::NOENT)))?,
                    None => self.try_clone()?,
                };
                match rustix::fs::mkdirat(&parent.fd, part, Mode::from_raw_mode(0o777)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(Error::io(self.path.join(&done), errno_io(e))),
                }
            }
        }
        self.open_subdir(rel)?
            .ok_or_else(|| Error::io(self.path.join(rel), errno_io(Errno::NOENT)))
    }

    /// Another descriptor for the same directory.
    pub(crate) fn try_clone(&self) -> Result<Dir> {
        Ok(Dir {
            fd: self.fd.try_clone().at(&self.path)?,
            path: self.path.clone(),
        })
    }

    /// The type of the entry `name` (one component, not followed), if it exists.
    pub(crate) fn entry_type(&self, name: &OsStr) -> Result<Option<FileType>> {
        match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(FileType::from_raw_mode(st.st_mode))),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(Error::io(self.path.join(name), errno_io(e))),
        }
    }

    /// Whether the directory has no entries.
    pub(crate) fn is_empty(&self) -> Result<bool> {
        let entries = rustix::fs::Dir::read_from(&self.fd)
            .map_err(errno_io)
            .at(&self.path)?;
        for entry in entries {
            let entry = entry.map_err(errno_io).at(&self.path)?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Takes an exclusive `flock` on the directory itself (waiting for another run that
    /// holds it), held until the guard is dropped. No lock file is made.
    pub(crate) fn lock(&self) -> Result<DirLock> {
        let fd = rustix::fs::openat(
            &self.fd,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno_io)
        .at(&self.path)?;
        rustix::fs::flock(&fd, FlockOperation::LockExclusive)
            .map_err(errno_io)
            .at(&self.path)?;
        Ok(DirLock(fd))
    }

    /// Removes the temporary files and directories (named `.docker-delta-XXXXXX.tmp`) that
    /// runs which were killed left here: those whose `flock` can be taken at once. A live
    /// run holds the lock on its own; names of any other form are never touched. Returns
    /// how many it removed. Errors are ignored: a stale file that stays is no failure.
    pub(crate) fn sweep(&self) -> usize {
        let Ok(entries) = rustix::fs::Dir::read_from(&self.fd) else {
            return 0;
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            let Ok(name) = entry.file_name().to_str() else {
                continue;
            };
            if !is_temp_name(name) {
                continue;
            }
            let name = name.to_string();
            if self.remove_if_dead(&name).unwrap_or(false) {
                tracing::info!(path = %self.path.join(&name).display(), "removed a temporary file a killed run left");
                removed += 1;
            }
        }
        removed
    }

    fn remove_if_dead(&self, name: &str) -> std::result::Result<bool, Errno> {
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY,
            Mode::empty(),
        )?;
        let st = rustix::fs::fstat(&fd)?;
        let t = FileType::from_raw_mode(st.st_mode);
        if t != FileType::RegularFile && t != FileType::Directory {
            return Ok(false);
        }
        match rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(Errno::WOULDBLOCK) => return Ok(false),
            Err(e) => return Err(e),
        }
        // Still the file that was opened (not removed and made again meanwhile)?
        let now = rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW)?;
        if st.st_nlink == 0 || now.st_ino != st.st_ino || now.st_dev != st.st_dev {
            return Ok(false);
        }
        if t == FileType::Directory {
            remove_tree(self.fd.as_fd(), name)?;
        } else {
            rustix::fs::unlinkat(&self.fd, name, AtFlags::empty())?;
        }
        Ok(true)
    }

    /// A new temporary file in this directory, locked (see [`Dir::sweep`]), mode 0666
    /// less the umask.
    pub(crate) fn temp_file(&self) -> Result<LockedTemp> {
        let ((name, fd), tracked) = crate::temp::make_tracked(|| {
            let (name, fd) = self.make_temp(|dir, name| {
                rustix::fs::openat(
                    dir,
                    name,
                    OFlags::RDWR
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o666),
                )
            })?;
            let path = self.path.join(&name);
            Ok(((name, fd), path))
        })?;
        Ok(LockedTemp {
            dir: self.try_clone()?,
            _tracked: tracked,
            name: Some(name),
            file: File::from(fd),
        })
    }

    /// A new temporary directory in this one, locked (see [`Dir::sweep`]), mode 0777 less
    /// the umask.
    pub(crate) fn temp_dir(&self) -> Result<LockedTempDir> {
        let ((name, fd), tracked) = crate::temp::make_tracked(|| {
            let (name, fd) = self.make_temp(|dir, name| {
                rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o777))?;
                rustix::fs::openat(
                    dir,
                    name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
            })?;
            let path = self.path.join(&name);
            Ok(((name, fd), path))
        })?;
        let path = self.path.join(&name);
        Ok(LockedTempDir {
            parent: self.try_clone()?,
            _tracked: tracked,
            dir: Dir { fd, path },
            name: Some(name),
        })
    }

    /// Makes a temporary entry with `make` under a fresh name and locks it. An entry a
    /// sweeping run removed between its creation and the lock (gone when a directory is
    /// opened after `mkdir`, or with no links left once the lock is ours) is made again
    /// under another name.
    fn make_temp(
        &self,
        make: impl Fn(BorrowedFd<'_>, &str) -> std::result::Result<OwnedFd, Errno>,
    ) -> Result<(String, OwnedFd)> {
        for _ in 0..100 {
            let name = temp_name();
            let fd = match make(self.fd.as_fd(), &name) {
                Ok(fd) => fd,
                // Taken; or (a directory, made then opened) swept away in between.
                Err(Errno::EXIST | Errno::NOENT) => continue,
                Err(e) => return Err(Error::io(self.path.join(&name), errno_io(e))),
            };
            let path = self.path.join(&name);
            rustix::fs::flock(&fd, FlockOperation::LockExclusive)
                .map_err(errno_io)
                .at(&path)?;
            let st = rustix::fs::fstat(&fd).map_err(errno_io).at(&path)?;
            if st.st_nlink > 0 {
                return Ok((name, fd));
            }
        }
        Err(Error::io(
            &self.path,
            io::Error::new(io::ErrorKind::AlreadyExists, "cannot make a temporary file"),
        ))
    }

    /// Gives the entry `from` the name `to` in the same directory: replacing what is there
    /// when `replace`, else only if nothing is (`renameat2(RENAME_NOREPLACE)`, or `link` +
    /// `unlink` where the file system lacks it; a directory falls back to `mkdir` and a
    /// rename over that empty directory). An existing `to` is [`Error::OutputExists`].
    fn rename(&self, from: &str, to: &OsStr, replace: bool, is_dir: bool) -> Result<()> {
        let dest = self.path.join(to);
        let exists = || Error::OutputExists { path: dest.clone() };
        if replace {
            return rustix::fs::renameat(&self.fd, from, &self.fd, to)
                .map_err(errno_io)
                .at(&dest);
        }
        match rustix::fs::renameat_with(&self.fd, from, &self.fd, to, RenameFlags::NOREPLACE) {
            Ok(()) => return Ok(()),
            Err(Errno::EXIST) => return Err(exists()),
            Err(Errno::INVAL | Errno::NOSYS) => {}
            Err(e) => return Err(Error::io(&dest, errno_io(e))),
        }
        if is_dir {
            match rustix::fs::mkdirat(&self.fd, to, Mode::from_raw_mode(0o700)) {
                Ok(()) => {}
                Err(Errno::EXIST) => return Err(exists()),
                Err(e) => return Err(Error::io(&dest, errno_io(e))),
            }
            // Renaming a directory over an empty one replaces it; over one another run
            // filled meanwhile, it fails.
            return match rustix::fs::renameat(&self.fd, from, &self.fd, to) {
                Ok(()) => Ok(()),
                Err(Errno::EXIST | Errno::NOTEMPTY) => Err(exists()),
                Err(e) => Err(Error::io(&dest, errno_io(e))),
            };
        }
        match rustix::fs::linkat(&self.fd, from, &self.fd, to, AtFlags::empty()) {
            Ok(()) => {}
            Err(Errno::EXIST) => return Err(exists()),
            Err(e) => return Err(Error::io(&dest, errno_io(e))),
        }
        let _ = rustix::fs::unlinkat(&self.fd, from, AtFlags::empty());
        Ok(())
    }
}

/// An exclusive `flock` on a directory, released when dropped.
#[derive(Debug)]
pub(crate) struct DirLock(#[allow(dead_code)] OwnedFd);

/// Removes `name` in `dir` and, for a directory, everything under it, following no links.
fn remove_tree(dir: BorrowedFd<'_>, name: &str) -> std::result::Result<(), Errno> {
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) => return Ok(()),
        Err(Errno::ISDIR | Errno::PERM) => {}
        Err(e) => return Err(e),
    }
    let sub = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(&sub)? {
        let entry = entry?;
        let n = entry.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(String::from_utf8_lossy(n).into_owned());
        }
    }
    for n in names {
        remove_tree(sub.as_fd(), &n)?;
    }
    rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)
}

const TEMP_PREFIX: &str = ".docker-delta-";
const TEMP_SUFFIX: &str = ".tmp";
const TEMP_RANDOM: usize = 6;

/// Whether `name` is one of our temporary names: `.docker-delta-` + six letters or digits
/// + `.tmp`, exactly.
pub(crate) fn is_temp_name(name: &str) -> bool {
    name.len() == TEMP_PREFIX.len() + TEMP_RANDOM + TEMP_SUFFIX.len()
        && name.starts_with(TEMP_PREFIX)
        && name.ends_with(TEMP_SUFFIX)
        && name[TEMP_PREFIX.len()..TEMP_PREFIX.len() + TEMP_RANDOM]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric())
}

/// A fresh temporary name (uniqueness comes from `O_EXCL`; the randomness only makes
/// collisions rare).
fn temp_name() -> String {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    let mut v = h.finish();
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut s = String::from(TEMP_PREFIX);
    for _ in 0..TEMP_RANDOM {
        s.push(ALPHABET[(v % ALPHABET.len() as u64) as usize] as char);
        v /= ALPHABET.len() as u64;
    }
    s.push_str(TEMP_SUFFIX);
    s
}

/// A temporary file in a [`Dir`], locked while this lives, removed when dropped unless it
/// was given its final name.
#[derive(Debug)]
pub(crate) struct LockedTemp {
    dir: Dir,
    name: Option<String>,
    file: File,
    _tracked: Tracked,
}

impl LockedTemp {
    /// The open file (its lock belongs to the open file description, so a duplicate of it
    /// keeps the lock too).
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// The temporary file's path, for messages.
    pub(crate) fn path(&self) -> PathBuf {
        self.dir.path.join(self.name.as_deref().unwrap_or(""))
    }

    /// Gives the file the name `to` in its directory (see [`Dir::rename`]).
    pub(crate) fn persist(mut self, to: &OsStr, replace: bool) -> Result<()> {
        // What `--force` may replace: a file, or a link itself (never what it names).
        match self.dir.entry_type(to)? {
            None | Some(FileType::RegularFile | FileType::Symlink) => {}
            Some(t) => {
                return Err(unsupported(
                    self.dir.path.join(to),
                    type_name(t),
                    "a regular file",
                ))
            }
        }
        let from = self.name.clone().unwrap_or_default();
        self.dir.rename(&from, to, replace, false)?;
        self.name = None;
        Ok(())
    }
}

impl Drop for LockedTemp {
    fn drop(&mut self) {
        if let Some(name) = &self.name {
            let _ = rustix::fs::unlinkat(&self.dir.fd, name.as_str(), AtFlags::empty());
        }
    }
}

/// A temporary directory in a [`Dir`], locked while this lives, removed with its contents
/// when dropped unless it was given its final name.
#[derive(Debug)]
pub(crate) struct LockedTempDir {
    parent: Dir,
    dir: Dir,
    name: Option<String>,
    _tracked: Tracked,
}

impl LockedTempDir {
    /// The directory, to write into.
    pub(crate) fn dir(&self) -> &Dir {
        &self.dir
    }

    /// Gives the directory the name `to` in its parent, which must not exist or be an
    /// empty directory (replaced atomically; one that another run filled meanwhile is
    /// [`Error::OutputExists`]).
    pub(crate) fn persist(mut self, to: &OsStr) -> Result<()> {
        let from = self.name.clone().unwrap_or_default();
        let dest = self.parent.path.join(to);
        match self.parent.entry_type(to)? {
            Some(FileType::Directory) => {
                match rustix::fs::renameat(&self.parent.fd, from.as_str(), &self.parent.fd, to) {
                    Ok(()) => {}
                    Err(Errno::EXIST | Errno::NOTEMPTY) => {
                        return Err(Error::OutputExists { path: dest })
                    }
                    Err(e) => return Err(Error::io(dest, errno_io(e))),
                }
            }
            _ => self.parent.rename(&from, to, false, true)?,
        }
        self.name = None;
        Ok(())
    }
}

impl Drop for LockedTempDir {
    fn drop(&mut self) {
        if let Some(name) = &self.name {
            let _ = remove_tree(self.parent.fd.as_fd(), name);
        }
    }
}

/// A test-only pause point (debug builds only): with `DOCKER_DELTA_TEST_PAUSE=POINT:DIR`,
/// a run that reaches `POINT` creates `DIR/arrived.<pid>` and then waits until
/// `DIR/release` exists. The tests use it to hold runs right before a final rename
/// (`persist`) or an index merge (`index`), release racing runs together, or kill a run
/// midway. Release builds have no such point.
pub(crate) fn pause_point(point: &str) {
    #[cfg(debug_assertions)]
    {
        let Some(spec) = std::env::var_os("DOCKER_DELTA_TEST_PAUSE") else {
            return;
        };
        let spec = spec.to_string_lossy().into_owned();
        let Some((name, dir)) = spec.split_once(':') else {
            return;
        };
        if name != point {
            return;
        }
        let dir = Path::new(dir);
        let _ = std::fs::write(dir.join(format!("arrived.{}", std::process::id())), b"");
        while !dir.join("release").exists() {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = point;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_match_exactly_our_pattern() {
        for _ in 0..100 {
            assert!(is_temp_name(&temp_name()));
        }
        for other in [
            ".docker-delta-x.tmp",
            ".docker-delta-abcdefg.tmp",
            ".docker-delta-abc-ef.tmp",
            "docker-delta-abcdef.tmp",
            ".docker-delta-abcdef.tmpx",
            ".docker-delta-abcdef",
        ] {
            assert!(!is_temp_name(other), "{other}");
        }
    }

    #[test]
    fn a_link_inside_a_directory_is_refused() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("real/sub")).unwrap();
        std::fs::write(d.path().join("real/sub/f"), b"x").unwrap();
        std::os::unix::fs::symlink("real", d.path().join("link")).unwrap();
        std::os::unix::fs::symlink("sub/f", d.path().join("real/flink")).unwrap();
        let dir = Dir::open(d.path()).unwrap();
        assert!(dir.open_file("real/sub/f").unwrap().is_some());
        assert!(dir.open_file("real/nope").unwrap().is_none());
        for (rel, bad) in [("link/sub/f", "link"), ("real/flink", "real/flink")] {
            match dir.open_file(rel) {
                Err(Error::UnsupportedFileType { path, found, .. }) => {
                    assert_eq!(path, d.path().join(bad));
                    assert_eq!(found, "symbolic link");
                }
                other => panic!("{rel}: {other:?}"),
            }
        }
        // The same through the O_NOFOLLOW walk.
        assert!(dir.walk("real/sub/f", OFlags::RDONLY).is_ok());
        assert!(matches!(
            dir.walk("link/sub/f", OFlags::RDONLY).err(),
            Some(Errno::LOOP | Errno::NOTDIR)
        ));
        assert_eq!(
            dir.walk("real/flink", OFlags::RDONLY).err(),
            Some(Errno::LOOP)
        );
    }

    /// Runs making temporary files and directories while others sweep the same directory:
    /// a sweep never removes one its run is still making or writing (making it again under
    /// another name when it caught one between `mkdir` and the lock), and every make works.
    #[test]
    fn sweeping_never_breaks_a_live_run() {
        let d = tempfile::tempdir().unwrap();
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    let dir = Dir::open(d.path()).unwrap();
                    while !stop.load(Ordering::Relaxed) {
                        dir.sweep();
                    }
                });
            }
            let makers: Vec<_> = (0..2)
                .map(|_| {
                    s.spawn(|| {
                        let dir = Dir::open(d.path()).unwrap();
                        for _ in 0..500 {
                            let t = dir.temp_dir().unwrap();
                            t.dir().create_subdirs("blobs/sha256").unwrap();
                            let f = dir.temp_file().unwrap();
                            assert!(f.path().exists() && t.dir().path().exists());
                        }
                    })
                })
                .collect();
            let made: Vec<bool> = makers.into_iter().map(|m| m.join().is_ok()).collect();
            // Stop the sweepers before failing, or the scope would wait for them forever.
            stop.store(true, Ordering::Relaxed);
            assert_eq!(made, [true, true], "a make failed");
        });
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
    }

    #[test]
    fn sweep_removes_only_unlocked_temp_files() {
        let d = tempfile::tempdir().unwrap();
        let dir = Dir::open(d.path()).unwrap();
        let live = dir.temp_file().unwrap();
        let live_dir = dir.temp_dir().unwrap();
        let dead = dir.temp_file().unwrap();
        let dead_path = dead.path();
        // A killed run: the file stays, its lock goes with the process (here: its only
        // descriptor is closed).
        let dead_name = dead.name.clone().unwrap();
        let mut dead = dead;
        dead.name = None;
        drop(dead);
        assert!(dead_path.exists());
        std::fs::write(d.path().join(".docker-delta-notours.tmp"), b"").unwrap();
        std::fs::create_dir(d.path().join(".docker-delta-zzzzzz.tmp")).unwrap();
        std::fs::write(d.path().join(".docker-delta-zzzzzz.tmp/x"), b"").unwrap();
        assert_eq!(dir.sweep(), 2, "the dead file and the unlocked directory");
        assert!(!d.path().join(&dead_name).exists());
        assert!(live.path().exists());
        assert!(live_dir.dir().path().exists());
        assert!(d.path().join(".docker-delta-notours.tmp").exists());
    }
}
