//! An image whose layer blobs are read once: each is copied, the first time it is read,
//! into a nameless spool file, and read from there after (as positioned reads, so several
//! readers may be open at once). For sources where a second read costs a second download
//! (registries): `create` reads a new layer to learn its size and again to encode it, and
//! `publish` makes packages from several bases against one new image.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::store::FileSection;
use super::{ImageSource, Limits, RegistryBlob};
use crate::error::{Error, Result};
use crate::image::Image;

/// `inner`, with its blobs spooled on first read.
pub struct SpooledBlobs<'a> {
    inner: &'a dyn ImageSource,
    dir: PathBuf,
    spools: Mutex<HashMap<usize, Arc<File>>>,
}

impl<'a> SpooledBlobs<'a> {
    /// Spools `inner`'s blobs in `dir` (files with no name there).
    pub fn new(inner: &'a dyn ImageSource, dir: &Path) -> SpooledBlobs<'a> {
        SpooledBlobs {
            inner,
            dir: dir.to_path_buf(),
            spools: Mutex::new(HashMap::new()),
        }
    }

    /// Whether reading `source` twice would download it twice: its blobs are in a registry
    /// and not in a local file.
    pub fn worth_it(source: &dyn ImageSource) -> bool {
        !source.image().layers.is_empty()
            && source.registry_blob(0).is_some()
            && !matches!(source.layer_section(0), Ok(Some(_)))
    }

    fn spool(&self, index: usize) -> Result<FileSection> {
        let layer = self.inner.layer(index)?;
        let mut spools = self
            .spools
            .lock()
            .map_err(|_| Error::Other("internal: a spool lock was poisoned".into()))?;
        let file = match spools.get(&index) {
            Some(f) => f.clone(),
            None => {
                let what = self.inner.describe_layer(layer);
                let mut blob = self.inner.open_blob(index)?;
                let mut spool = crate::temp::spool_in(&self.dir)?;
                let n = std::io::copy(&mut blob, &mut spool).map_err(|e| Error::io(&what, e))?;
                if n != layer.size {
                    return Err(Error::SizeMismatch {
                        what,
                        expected: layer.size,
                        found: n,
                    });
                }
                let f = Arc::new(spool);
                spools.insert(index, f.clone());
                f
            }
        };
        Ok(FileSection {
            file,
            offset: 0,
            len: layer.size,
        })
    }
}

impl ImageSource for SpooledBlobs<'_> {
    fn image(&self) -> &Image {
        self.inner.image()
    }

    fn open_blob(&self, index: usize) -> Result<Box<dyn Read + Send + '_>> {
        Ok(Box::new(self.spool(index)?.reader()))
    }

    fn layer_section(&self, index: usize) -> Result<Option<FileSection>> {
        self.spool(index).map(Some)
    }

    fn limits(&self) -> Limits {
        self.inner.limits()
    }

    fn describe_layer(&self, layer: &crate::image::Layer) -> String {
        self.inner.describe_layer(layer)
    }

    fn registry_blob(&self, index: usize) -> Option<RegistryBlob> {
        self.inner.registry_blob(index)
    }
}
