//! Positioned reads of uncompressed layer tars.
//!
//! The file-aware codec reads old files by offset, in whatever order the new layer needs
//! them. A layer stored uncompressed (docker-archive layers, uncompressed OCI blobs, daemon
//! exports) is read in place; a compressed one is decompressed once into a temporary file
//! next to the output (verified against its digests while it is written), never extracted
//! into a directory tree.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::sync::Arc;

use crate::compression::Compression;
use crate::delta::files::tarscan::{self, TarIndex};
use crate::error::{Error, IoContext, Result};
use crate::transport::store::FileSection;
use crate::transport::ImageSource;

/// An uncompressed layer tar open for positioned reads.
#[derive(Debug)]
pub struct LayerData {
    section: FileSection,
    description: String,
}

impl LayerData {
    /// Opens layer `index` of `src` for positioned reads, spooling it into `spool_dir` when
    /// it is not stored uncompressed in a file. With `scan`, the layer is also read through
    /// once (verifying its digests) and its tar indexed.
    pub fn open(
        src: &dyn ImageSource,
        index: usize,
        spool_dir: &Path,
        scan: bool,
        progress: &mut dyn FnMut(u64) -> Result<()>,
    ) -> Result<(LayerData, Option<TarIndex>)> {
        let layer = src.layer(index)?;
        let description = src.describe_layer(layer);
        let direct = match src.layer_section(index)? {
            Some(s) if stored_plain(&s)? => Some(s),
            _ => None,
        };
        match direct {
            Some(section) => {
                let idx = if scan {
                    let mut r = src.open_layer(index)?;
                    let idx = tarscan::scan(
                        BufReader::with_capacity(1 << 20, Progressing::new(&mut r, progress)),
                        None,
                    )
                    .map_err(|e| Error::io(&description, e))?;
                    Some(idx)
                } else {
                    None
                };
                Ok((
                    LayerData {
                        section,
                        description,
                    },
                    idx,
                ))
            }
            None => {
                tracing::debug!(layer = %description, "spooling the uncompressed layer for positioned reads");
                let file = crate::temp::spool_in(spool_dir)?;
                let path = spool_dir.join(format!("(spool of {description})"));
                let mut r = src.open_layer(index)?;
                let mut w = BufWriter::with_capacity(1 << 20, &file);
                let mut input =
                    BufReader::with_capacity(1 << 20, Progressing::new(&mut r, progress));
                let idx = if scan {
                    Some(
                        tarscan::scan(&mut input, Some(&mut w))
                            .map_err(|e| Error::io(&description, e))?,
                    )
                } else {
                    io::copy(&mut input, &mut w).map_err(|e| Error::io(&description, e))?;
                    None
                };
                w.flush().at(&path)?;
                drop(w);
                let len = file.metadata().at(&path)?.len();
                Ok((
                    LayerData {
                        section: FileSection {
                            file: Arc::new(file),
                            offset: 0,
                            len,
                        },
                        description,
                    },
                    idx,
                ))
            }
        }
    }

    /// Opens an uncompressed tar file (tests, tools).
    pub fn from_file(path: &Path) -> Result<LayerData> {
        let f = File::open(path).at(path)?;
        let len = f.metadata().at(path)?.len();
        Ok(LayerData {
            section: FileSection {
                file: Arc::new(f),
                offset: 0,
                len,
            },
            description: path.display().to_string(),
        })
    }

    /// The layer's length.
    pub fn len(&self) -> u64 {
        self.section.len
    }

    /// Whether the layer is empty.
    pub fn is_empty(&self) -> bool {
        self.section.len == 0
    }

    /// Describes the layer for messages.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Reads `len` bytes at `offset`.
    pub fn read(&self, offset: u64, len: u64) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.read_to(offset, len, &mut buf)?;
        Ok(buf)
    }

    /// Reads `len` bytes at `offset` into `buf`, replacing what it held (its allocation is
    /// reused).
    pub fn read_to(&self, offset: u64, len: u64, buf: &mut Vec<u8>) -> Result<()> {
        // `len` may come from a delta stream: refuse a range outside the layer before
        // allocating for it.
        if offset.checked_add(len).is_none_or(|e| e > self.section.len) {
            return Err(self.range_error(offset, len));
        }
        let n = usize::try_from(len).map_err(|_| self.range_error(offset, len))?;
        // Only bytes past the buffer's old length are zeroed first: all are overwritten.
        buf.truncate(n);
        buf.resize(n, 0);
        self.read_into(offset, buf)
    }

    /// Fills `buf` from `offset`.
    pub fn read_into(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        if offset
            .checked_add(buf.len() as u64)
            .is_none_or(|e| e > self.section.len)
        {
            return Err(self.range_error(offset, buf.len() as u64));
        }
        self.section
            .read_exact_at(buf, offset)
            .map_err(|e| Error::io(&self.description, e))
    }

    fn range_error(&self, offset: u64, len: u64) -> Error {
        Error::Codec {
            codec: "files".into(),
            reason: format!(
                "{}: {len} bytes at offset {offset} are outside the {}-byte layer",
                self.description, self.section.len
            ),
        }
    }
}

/// Whether a stored blob is a plain (uncompressed) tar, from its first bytes.
fn stored_plain(s: &FileSection) -> Result<bool> {
    let mut magic = [0u8; 6];
    let n = magic.len().min(s.len as usize);
    s.read_exact_at(&mut magic[..n], 0)
        .map_err(|e| Error::io("layer blob", e))?;
    Ok(Compression::detect(&magic[..n]) == Compression::None)
}

struct Progressing<'a, 'p, R> {
    inner: R,
    progress: &'a mut (dyn FnMut(u64) -> Result<()> + 'p),
}

impl<'a, 'p, R> Progressing<'a, 'p, R> {
    fn new(inner: R, progress: &'a mut (dyn FnMut(u64) -> Result<()> + 'p)) -> Self {
        Progressing { inner, progress }
    }
}

impl<R: Read> Read for Progressing<'_, '_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        (self.progress)(n as u64).map_err(Error::into_io)?;
        Ok(n)
    }
}
