//! What every file output shares: the directory an output is written in and the
//! temporary files renamed into place there, the archive tar ([`TarOut`]) that
//! docker-archive and oci-archive outputs write, the check that every blob written is what
//! it claims ([`Verify`]), the layers of an image being written ([`Layers`]), and the
//! write-behind that makes a big output durable while it is written ([`WriteBehind`]).
//!
//! Every layer is written uncompressed, named by its diff_id, and verified (size and
//! SHA-256) while it is written. Nothing appears at the destination until the whole image
//! verified: archives are written to a temporary file next to the destination and renamed;
//! a new layout directory is built beside its final name and renamed; blobs added to an
//! existing layout are renamed into place one by one and `index.json` is replaced last.
//! The transports' sinks ([`docker_archive::sink`](super::docker_archive::sink),
//! [`oci::sink`](super::oci::sink)) decide what is written.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use crate::digest::{Digest, HashingReader};
use crate::error::{Error, IoContext, Result};
use crate::fs_safe::{check_output, pause_point, Dir, LockedTemp};

/// The directory an output at `path` is written in: its parent (`.` for a bare name).
pub(crate) fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The directory an output at `path` is written in, which must exist (its temporary files
/// are made there, to be renamed into place).
pub(crate) fn output_dir(path: &Path) -> Result<PathBuf> {
    let dir = parent_dir(path);
    if !dir.is_dir() {
        return Err(Error::Io {
            path: dir,
            source: io::Error::new(io::ErrorKind::NotFound, "output directory does not exist"),
        });
    }
    Ok(dir)
}

/// The last component of an output path: the name its temporary file takes in
/// [`output_dir`].
pub(crate) fn output_name(path: &Path) -> Result<OsString> {
    match path.file_name() {
        Some(n) => Ok(n.to_os_string()),
        None => Err(Error::InvalidLayout {
            path: path.to_path_buf(),
            reason: "names no file (it ends in `..` or is a root); name the output file".into(),
        }),
    }
}

/// Opens the directory an output is written in, and removes the temporary files that
/// killed runs left there (those no live run holds).
pub(crate) fn open_output_dir(dir: &Path) -> Result<Dir> {
    let d = Dir::open(dir)?;
    d.sweep();
    Ok(d)
}

/// Checks, writing nothing, an archive output (docker-archive, oci-archive): its
/// directory exists, and it is not a directory, nor existing unless `force`. Returns its
/// directory.
pub(crate) fn check_archive(path: &Path, force: bool) -> Result<PathBuf> {
    let parent = output_dir(path)?;
    check_output(path, "a regular file")?;
    if path.is_dir() {
        return Err(Error::InvalidLayout {
            path: path.to_path_buf(),
            reason: "is a directory; an archive output must be a file".into(),
        });
    }
    if path.exists() && !force {
        return Err(Error::OutputExists {
            path: path.to_path_buf(),
        });
    }
    Ok(parent)
}

/// The layers of an image being written, in order (base first), and which are written
/// already: a layer seen before (same diff_id) is stored once.
#[derive(Default)]
pub(crate) struct Layers {
    list: Vec<(Digest, u64)>,
    written: HashSet<Digest>,
}

impl Layers {
    /// The layers so far: diff_id and size.
    pub(crate) fn list(&self) -> &[(Digest, u64)] {
        &self.list
    }

    /// Adds the next layer: `size` bytes from `data` that must hash to `diff_id`, stored
    /// with `put` (digest, size, data, what to call it in errors) unless stored already.
    /// `dest` names the output in errors.
    pub(crate) fn add(
        &mut self,
        diff_id: &Digest,
        size: u64,
        data: &mut dyn Read,
        dest: &Path,
        put: impl FnOnce(&Digest, u64, &mut dyn Read, &str) -> Result<()>,
    ) -> Result<()> {
        self.list.push((diff_id.clone(), size));
        let what = format!("layer {}", self.list.len() - 1);
        if self.written.contains(diff_id) {
            // Written already; this copy is still read to its end and verified, so that a
            // package that rebuilds a repeated layer wrongly is refused all the same.
            let mut verify = Verify::new(data, size, diff_id, &what);
            io::copy(&mut verify, &mut io::sink()).map_err(|e| Error::io(dest, e))?;
            return verify.check();
        }
        put(diff_id, size, data, &what)?;
        self.written.insert(diff_id.clone());
        Ok(())
    }
}

/// An output that stores verified blobs (a docker-archive, an OCI layout or archive): the
/// layers it has written and how it stores a blob. What it does with them is shared: a
/// layer seen before is stored once ([`Layers::add`]), and an image ends in its config and
/// its OCI image manifest.
pub(crate) trait BlobStore {
    /// The layers written so far.
    fn layers_mut(&mut self) -> &mut Layers;

    /// The destination, to name in errors.
    fn dest(&self) -> PathBuf;

    /// Stores the blob `digest`, `size` bytes from `data`, verifying it; `what` names it.
    fn put_blob(
        &mut self,
        digest: &Digest,
        size: u64,
        data: &mut dyn Read,
        what: &str,
    ) -> Result<()>;

    /// [`ImageSink::add_layer`](super::ImageSink::add_layer) for such an output.
    fn add_layer_blob(&mut self, diff_id: &Digest, size: u64, data: &mut dyn Read) -> Result<()> {
        let mut layers = std::mem::take(self.layers_mut());
        let dest = self.dest();
        let result = layers.add(diff_id, size, data, &dest, |d, s, r, what| {
            self.put_blob(d, s, r, what)
        });
        *self.layers_mut() = layers;
        result
    }

    /// Stores the config and the OCI image manifest of the layers written; returns the
    /// config's digest, the manifest and its digest.
    fn put_config_and_manifest(&mut self, config: &[u8]) -> Result<(Digest, Vec<u8>, Digest)> {
        let config_digest = Digest::of(config);
        self.put_blob(
            &config_digest,
            config.len() as u64,
            &mut &config[..],
            "config",
        )?;
        let (raw, digest) = super::oci::sink::image_manifest(
            &config_digest,
            config.len(),
            self.layers_mut().list(),
        )?;
        self.put_blob(&digest, raw.len() as u64, &mut &raw[..], "manifest")?;
        Ok((config_digest, raw, digest))
    }
}

/// An archive being written: a tar in a temporary file beside the destination, renamed
/// into place by [`TarOut::commit`], or a tar streamed to a writer, in the order written.
pub(crate) enum TarOut {
    File {
        builder: tar::Builder<BufWriter<WriteBehind<File>>>,
        temp: LockedTemp,
        /// The directory the archive is written in.
        parent: Dir,
    },
    Stream {
        builder: tar::Builder<BufWriter<Box<dyn Write + Send>>>,
    },
}

impl TarOut {
    /// Starts an archive to be renamed to `path` (checked with [`check_archive`]).
    pub(crate) fn create(path: &Path) -> Result<TarOut> {
        output_name(path)?;
        let parent = open_output_dir(&parent_dir(path))?;
        let temp = parent.temp_file()?;
        let file = temp.file().try_clone().at(temp.path())?;
        let mut builder =
            tar::Builder::new(BufWriter::with_capacity(1 << 20, WriteBehind::new(file)));
        builder.mode(tar::HeaderMode::Deterministic);
        Ok(TarOut::File {
            builder,
            temp,
            parent,
        })
    }

    /// Starts an archive streamed to `out`.
    pub(crate) fn stream(out: Box<dyn Write + Send>) -> TarOut {
        let mut builder = tar::Builder::new(BufWriter::with_capacity(1 << 20, out));
        builder.mode(tar::HeaderMode::Deterministic);
        TarOut::Stream { builder }
    }

    /// Appends the blob `name`, `size` bytes from `data`; `dest` names a stream in errors.
    pub(crate) fn append(
        &mut self,
        name: &str,
        size: u64,
        data: &mut dyn Read,
        dest: &Path,
    ) -> Result<()> {
        let mut h = tar_header(size);
        match self {
            TarOut::File { builder, temp, .. } => {
                append_blob(builder, &mut h, name, data).map_err(|e| Error::io(temp.path(), e))
            }
            TarOut::Stream { builder } => {
                append_blob(builder, &mut h, name, data).map_err(|e| Error::io(dest, e))
            }
        }
    }

    /// Appends the small files that end an archive, in order, and the tar's end.
    pub(crate) fn append_files(&mut self, files: Vec<(&str, Vec<u8>)>, dest: &Path) -> Result<()> {
        match self {
            TarOut::File { builder, temp, .. } => append_files(builder, files, &temp.path()),
            TarOut::Stream { builder } => append_files(builder, files, dest),
        }
    }

    /// Makes the archive durable and gives it the name `dest` (replacing a file there when
    /// `force`), or flushes the stream.
    pub(crate) fn commit(self, dest: &Path, force: bool) -> Result<()> {
        match self {
            TarOut::File {
                builder,
                temp,
                parent,
            } => {
                let writer = builder
                    .into_inner()
                    .map_err(|e| Error::io(temp.path(), e))?;
                let file = writer
                    .into_inner()
                    .map_err(|e| Error::io(temp.path(), e.into_error()))?
                    .finish()
                    .at(temp.path())?;
                file.sync_all().at(temp.path())?;
                drop(file);
                // A new output's name is taken only if nothing has it (of two runs racing
                // for it, one wins); `--force` replaces a file, never a device or FIFO.
                pause_point("persist");
                check_output(dest, "a regular file")?;
                temp.persist(&output_name(dest)?, force)?;
                drop(parent);
            }
            TarOut::Stream { builder } => {
                let mut w = builder.into_inner().map_err(|e| Error::io(dest, e))?;
                w.flush().map_err(|e| Error::io(dest, e))?;
            }
        }
        Ok(())
    }
}

/// Bytes a blob is moved in, from its reader to an archive's writer.
const BLOB_PIECE: usize = 1 << 20;

/// Appends a blob as `tar::Builder::append_data` does (the same bytes), in pieces of
/// [`BLOB_PIECE`] bytes rather than the 8 KiB of `io::copy` into a `dyn Write`: a piece as
/// big as the archive's buffer goes past it to the file, so each byte is copied once in
/// user space instead of twice, in a hundredth of the calls. This is the thread that also
/// hashes every layer apply rebuilds, and waits for none: apply on the bench's kernel pair
/// (411 MB) went from 818 to 808 ms, multilayer from 393 to 381 ms (10 runs each).
fn append_blob<W: Write>(
    builder: &mut tar::Builder<W>,
    h: &mut tar::Header,
    name: &str,
    data: &mut dyn Read,
) -> io::Result<()> {
    if h.set_path(name).is_err() {
        // A name ustar cannot hold: the builder writes a GNU long name entry first.
        return builder.append_data(h, name, data);
    }
    h.set_cksum();
    let out = builder.get_mut();
    out.write_all(h.as_bytes())?;
    let mut piece = vec![0u8; BLOB_PIECE];
    let mut len = 0u64;
    loop {
        let n = match data.read(&mut piece) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        out.write_all(&piece[..n])?;
        len += n as u64;
    }
    // Padded to the next 512-byte block, as the builder pads.
    let pad = (512 - len % 512) % 512;
    out.write_all(&[0u8; 512][..pad as usize])
}

/// Appends the small files that end an archive, in order, and the tar's end.
fn append_files<W: Write>(
    builder: &mut tar::Builder<W>,
    files: Vec<(&str, Vec<u8>)>,
    path: &Path,
) -> Result<()> {
    for (file, data) in files {
        let mut h = tar_header(data.len() as u64);
        builder
            .append_data(&mut h, file, &data[..])
            .map_err(|e| Error::io(path, e))?;
    }
    builder.finish().map_err(|e| Error::io(path, e))
}

pub(crate) fn tar_header(size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(tar::EntryType::Regular);
    h
}

/// Writes `data` to `name` in `dir` through a locked temporary file there, made durable
/// and renamed into place (replacing what is there when `replace`).
pub(crate) fn write_file(dir: &Dir, name: &str, data: &[u8], replace: bool) -> Result<()> {
    let tmp = dir.temp_file()?;
    let path = dir.path().join(name);
    let mut f = tmp.file();
    f.write_all(data).at(&path)?;
    f.sync_all().at(&path)?;
    tmp.persist(OsStr::new(name), replace)
}

pub(crate) fn to_json(v: &serde_json::Value) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| Error::Other(format!("cannot encode JSON: {e}")))
}

/// Checks size and digest of what passes through.
pub(crate) struct Verify<R> {
    inner: HashingReader<R>,
    size: u64,
    digest: Digest,
    what: String,
}

impl<R: Read> Read for Verify<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if self.inner.count() > self.size {
            return Err(Error::SizeMismatch {
                what: self.what.clone(),
                expected: self.size,
                found: self.inner.count(),
            }
            .into_io());
        }
        Ok(n)
    }
}

impl<R: Read> Verify<R> {
    /// Checks that `data` is `size` bytes with digest `digest`; `what` names it in errors.
    pub(crate) fn new(data: R, size: u64, digest: &Digest, what: &str) -> Verify<R> {
        Verify {
            inner: HashingReader::new(data),
            size,
            digest: digest.clone(),
            what: format!("{what} ({digest})"),
        }
    }

    pub(crate) fn check(mut self) -> Result<()> {
        // Anything left means the stream is longer than recorded.
        let mut extra = [0u8; 1];
        let n = self
            .inner
            .read(&mut extra)
            .map_err(|e| Error::io(&self.what, e))?;
        let count = self.inner.count();
        if n != 0 || count != self.size {
            return Err(Error::SizeMismatch {
                what: self.what,
                expected: self.size,
                found: count,
            });
        }
        let (found, _, _) = self.inner.finish();
        if found != self.digest {
            return Err(Error::DigestMismatch {
                what: self.what,
                expected: self.digest.to_string(),
                found: found.to_string(),
            });
        }
        Ok(())
    }
}

/// Bytes after which [`WriteBehind`] asks the kernel to start writing them out and has
/// them made durable in the background.
const WRITE_BEHIND: u64 = 8 << 20;

/// A file writer that makes its output durable while it is being written, so that the
/// `fsync` that makes an output durable before it takes its name finds little left to do.
///
/// Every [`WRITE_BEHIND`] bytes it has the kernel start writing them out (Linux
/// `sync_file_range`) and wakes a thread of its own that calls `fdatasync` on the file. The
/// second part matters on disks with a write cache (virtual machines' disks among them):
/// there the final `fsync` pays for flushing everything written since the last flush,
/// however early the kernel handed it to the disk. On the tools bench pair the final
/// `fsync` of the 89 MB image took 62-66 ms with `sync_file_range` alone and 6 ms with the
/// flushes made along the way, at no cost to the writing thread.
///
/// [`WriteBehind::finish`] stops the thread and reports an error it met: an error a flush
/// on a shared file description reports is not reported again to the final `fsync`.
pub(crate) struct WriteBehind<F> {
    inner: F,
    written: u64,
    started: u64,
    syncer: Option<Syncer>,
}

impl<F: Write + AsFd> WriteBehind<F> {
    pub(crate) fn new(inner: F) -> WriteBehind<F> {
        WriteBehind {
            inner,
            written: 0,
            started: 0,
            syncer: None,
        }
    }

    /// Stops the background flushes and returns the file, or the first error a flush met.
    pub(crate) fn finish(mut self) -> io::Result<F> {
        if let Some(syncer) = self.syncer.take() {
            syncer.stop()?;
        }
        Ok(self.inner)
    }

    /// Starts writing out what was written since the last call and wakes the flusher.
    fn write_behind(&mut self) -> io::Result<()> {
        self.inner.flush()?;
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            // SAFETY: the descriptor is open for as long as `inner` lives; the call only
            // reads its arguments. Its result is ignored: it is a hint, and the flushes
            // report any write error.
            unsafe {
                libc::sync_file_range(
                    self.inner.as_fd().as_raw_fd(),
                    self.started as libc::off64_t,
                    (self.written - self.started) as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
        }
        self.started = self.written;
        let syncer = match &mut self.syncer {
            Some(s) => s,
            None => self.syncer.insert(Syncer::start(File::from(
                self.inner.as_fd().try_clone_to_owned()?,
            ))?),
        };
        match syncer.wake.as_ref().map(|w| w.try_send(())) {
            // Woken, or already due to flush again: either way it flushes these bytes.
            Some(Ok(())) | Some(Err(mpsc::TrySendError::Full(()))) => Ok(()),
            // It stopped: a flush failed.
            _ => match self.syncer.take() {
                Some(s) => s.stop(),
                None => Ok(()),
            },
        }
    }
}

impl<F: Write + AsFd> Write for WriteBehind<F> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        if self.written - self.started >= WRITE_BEHIND {
            self.write_behind()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The thread behind [`WriteBehind`]: flushes the file (`fdatasync`) each time it is woken,
/// until the waker is dropped or a flush fails.
struct Syncer {
    wake: Option<mpsc::SyncSender<()>>,
    thread: Option<std::thread::JoinHandle<io::Result<()>>>,
}

impl Syncer {
    fn start(file: File) -> io::Result<Syncer> {
        // One pending wake-up at most: wakes that come while a flush runs fold into one.
        let (wake, woken) = mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("write-behind".into())
            .spawn(move || {
                while woken.recv().is_ok() {
                    file.sync_data()?;
                }
                Ok(())
            })?;
        Ok(Syncer {
            wake: Some(wake),
            thread: Some(thread),
        })
    }

    /// Lets the thread finish its flush, and returns the error it met if any.
    fn stop(mut self) -> io::Result<()> {
        self.wake = None;
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(io::Error::other("the write-behind thread panicked")),
            None => Ok(()),
        }
    }
}

impl Drop for Syncer {
    /// An output abandoned on an error still waits for its flusher, so no thread outlives
    /// the writer.
    fn drop(&mut self) {
        self.wake = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// A blob appended in pieces is the tar `append_data` writes, for a name ustar holds
    /// and for one it does not (a GNU long name entry first), from a reader that gives few
    /// bytes at a time, and the archive's next entry follows it as before.
    #[test]
    fn a_blob_appended_in_pieces_is_what_the_builder_writes() {
        /// Gives at most 1000 bytes a read.
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = self.0.len().min(buf.len()).min(1000);
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let data: Vec<u8> = (0..(3 * BLOB_PIECE + 777))
            .map(|i| (i % 253) as u8)
            .collect();
        let long = format!("blobs/sha256/{}", "ab".repeat(60));
        for name in ["blobs/sha256/0123", long.as_str()] {
            for len in [0, 1, 511, 512, 4000, data.len()] {
                let blob = &data[..len];
                let mut ours = tar::Builder::new(Vec::new());
                let mut h = tar_header(len as u64);
                append_blob(&mut ours, &mut h, name, &mut Trickle(blob)).unwrap();
                append_files(&mut ours, vec![("next", b"after".to_vec())], Path::new("-")).unwrap();
                let mut theirs = tar::Builder::new(Vec::new());
                let mut h = tar_header(len as u64);
                theirs.append_data(&mut h, name, blob).unwrap();
                append_files(
                    &mut theirs,
                    vec![("next", b"after".to_vec())],
                    Path::new("-"),
                )
                .unwrap();
                let (ours, theirs) = (ours.into_inner().unwrap(), theirs.into_inner().unwrap());
                assert!(ours == theirs, "{name} with {len} bytes");
            }
        }
    }

    /// Bytes written through the write-behind (three flushes' worth, in writes of odd
    /// sizes) all arrive, in order.
    #[test]
    fn write_behind_keeps_every_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let data: Vec<u8> = (0..(3 * WRITE_BEHIND + 12345))
            .map(|i| (i % 251) as u8)
            .collect();
        let mut w = BufWriter::new(WriteBehind::new(File::create(&path).unwrap()));
        for piece in data.chunks(65521) {
            w.write_all(piece).unwrap();
        }
        let file = w.into_inner().map_err(|e| e.into_error()).unwrap();
        let file = file.finish().unwrap();
        file.sync_all().unwrap();
        drop(file);
        assert!(fs::read(&path).unwrap() == data);
    }

    /// A flush that fails in the background is reported, by a later write or by `finish`:
    /// the final `fsync` on the same open file would not report it again. (`/dev/null`
    /// cannot be flushed: `fdatasync` fails with EINVAL.)
    #[test]
    fn write_behind_reports_a_failed_flush() {
        let null = fs::OpenOptions::new()
            .write(true)
            .open("/dev/null")
            .unwrap();
        let mut w = WriteBehind::new(null);
        let block = vec![7u8; 1 << 20];
        let mut failed = None;
        for _ in 0..(4 * WRITE_BEHIND) >> 20 {
            if let Err(e) = w.write_all(&block) {
                failed = Some(e);
                break;
            }
        }
        let e = match failed {
            Some(e) => e,
            None => match w.finish() {
                Err(e) => e,
                Ok(_) => panic!("the failed flush was not reported"),
            },
        };
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{e}");
    }
}
