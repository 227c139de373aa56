//! `oci` and `oci-archive`: OCI image layouts, as a directory or as a tar of one.
//!
//! `index.json` is walked down to one image manifest: entries are filtered by the
//! `org.opencontainers.image.ref.name` the reference names, nested indexes (and Docker
//! manifest lists) are descended by platform, and every blob read is checked against its
//! descriptor's digest and size. Blobs of platforms that were not chosen are never touched,
//! so layouts that hold only some platforms' blobs read fine.
//!
//! The writer of both, [`sink::OciSink`], is in [`sink`].

pub mod sink;

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::compression::Compression;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::image::{Image, Layer};
use crate::manifest::{
    ConfigView, Descriptor, Document, Index, Manifest, ManifestKind, ANNOTATION_CONTAINERD_NAME,
};
use crate::platform::Platform;
use crate::reference::ImageReference;
use crate::transport::store::{DirStore, Store, TarStore};
use crate::transport::{ImageSource, Limits, OpenOptions};

/// An image in an OCI layout.
pub struct OciLayout {
    store: Box<dyn Store>,
    image: Image,
    limits: Limits,
    top: Digest,
}

/// Path of a blob inside a layout.
pub fn blob_path(digest: &Digest) -> String {
    format!("blobs/{}/{}", digest.algorithm(), digest.hex())
}

impl OciLayout {
    /// Opens and checks the image an `oci:` or `oci-archive:` reference names.
    pub fn open(reference: &ImageReference, options: &OpenOptions) -> Result<OciLayout> {
        let (store, name): (Box<dyn Store>, &Option<String>) = match reference {
            ImageReference::Oci { path, name } => (Box::new(DirStore::new(path)?), name),
            ImageReference::OciArchive { path, name } => {
                (Box::new(TarStore::open_with(path, &options.limits)?), name)
            }
            _ => {
                return Err(Error::Other(format!(
                    "{reference} is not an OCI layout reference"
                )))
            }
        };
        let name = name.clone();
        Self::from_store(store, reference.clone(), name.as_deref(), options)
    }

    /// Reads the image `name` (an `org.opencontainers.image.ref.name`, or the only or
    /// platform-matching entry when `None`) from an already opened layout. Used by the
    /// docker-daemon transport too: an export from Docker's containerd image store is an
    /// OCI layout with every platform the daemon has, while its `manifest.json` names one.
    pub fn from_store(
        store: Box<dyn Store>,
        reference: ImageReference,
        name: Option<&str>,
        options: &OpenOptions,
    ) -> Result<OciLayout> {
        let root = store.root().to_path_buf();
        let limits = &options.limits;
        match store.size("oci-layout")? {
            Some(_) => {
                let raw =
                    store.read_small("oci-layout", "oci-layout file", limits.max_json_size)?;
                let v: serde_json::Value =
                    crate::manifest::parse_json(&raw, &display(&root, "oci-layout"))?;
                let version = v
                    .get("imageLayoutVersion")
                    .and_then(|x| x.as_str())
                    .unwrap_or("");
                if !version.starts_with("1.") {
                    return Err(Error::InvalidField {
                        file: display(&root, "oci-layout"),
                        field: "imageLayoutVersion".into(),
                        reason: format!("unsupported layout version {version:?} (expected 1.x)"),
                    });
                }
            }
            None => {
                tracing::warn!(layout = %root.display(), "no oci-layout file; reading index.json anyway")
            }
        }
        if !store.exists("index.json")? {
            if store.exists("manifest.json")? {
                return Err(Error::InvalidLayout {
                    path: root.clone(),
                    reason: format!(
                        "no index.json, but a docker-archive manifest.json: read it as docker-archive:{}",
                        root.display()
                    ),
                });
            }
            return Err(Error::MissingFile {
                container: root,
                what: "OCI index".into(),
                name: "index.json".into(),
            });
        }
        let raw = store.read_small("index.json", "OCI index", limits.max_json_size)?;
        let file = display(&root, "index.json");
        let index = match Document::parse(&raw, &file)? {
            Document::Index(i) => i,
            other => {
                return Err(Error::UnsupportedManifest {
                    file,
                    found: format!("a {} where an image index was expected", other.kind()),
                })
            }
        };
        let mut walker = Walker {
            store: store.as_ref(),
            root: &root,
            limits,
            platform: options.platform.clone(),
            visited: HashSet::new(),
            kinds: vec![index.kind],
        };
        let top = walker.choose_top(&index, name)?;
        let mut tags: Vec<String> = Vec::new();
        if let Some(n) = top.annotations.get(ANNOTATION_CONTAINERD_NAME) {
            tags.push(n.clone());
        } else if let Some(n) = top.ref_name() {
            tags.push(n.to_string());
        }
        let (manifest_raw, manifest) = walker.resolve(&top, 0)?;
        let kinds = walker.kinds;

        let config = read_blob(store.as_ref(), &root, &manifest.config, "config", limits)?;
        let config_digest = manifest.config.digest.clone();
        let config_file = display(&root, &blob_path(&config_digest));
        let view = ConfigView::parse(&config, &config_file)?;
        limits.check_layers(
            &display(&root, &blob_path(&Digest::of(&manifest_raw))),
            manifest.layers.len(),
            view.diff_ids.len(),
        )?;
        let mut layers = Vec::with_capacity(manifest.layers.len());
        for (index, (desc, diff_id)) in manifest.layers.iter().zip(&view.diff_ids).enumerate() {
            let location = blob_path(&desc.digest);
            let stored = store.size(&location)?.ok_or_else(|| Error::MissingFile {
                container: root.clone(),
                what: format!("layer {index} blob"),
                name: location.clone(),
            })?;
            if stored != desc.size {
                return Err(Error::SizeMismatch {
                    what: display(&root, &location),
                    expected: desc.size,
                    found: stored,
                });
            }
            tracing::debug!(layer = index, blob = %location, media_type = ?desc.media_type, size = desc.size, "layer");
            layers.push(layer_of(index, desc, diff_id, location));
        }
        let image = Image {
            reference: reference.clone(),
            transport: reference.transport(),
            manifest_kind: manifest.kind,
            index_kinds: kinds,
            manifest: Some(manifest_raw),
            config,
            config_digest,
            repo_tags: tags,
            platform: view.platform,
            layers,
        };
        Ok(OciLayout {
            store,
            image,
            limits: options.limits.clone(),
            top: top.digest.clone(),
        })
    }

    /// The digest of the index.json entry the image was reached from (a manifest, or an
    /// index for a multi-platform image).
    pub fn top_digest(&self) -> &Digest {
        &self.top
    }
}

impl ImageSource for OciLayout {
    fn image(&self) -> &Image {
        &self.image
    }

    fn limits(&self) -> Limits {
        self.limits.clone()
    }

    fn open_blob(&self, index: usize) -> Result<Box<dyn Read + Send + '_>> {
        let layer = self.layer(index)?;
        self.store.open(&layer.location, "layer blob")
    }

    fn layer_section(&self, index: usize) -> Result<Option<super::store::FileSection>> {
        let layer = self.layer(index)?;
        self.store.locate(&layer.location, "layer blob")
    }
}

/// What a layer media type says about compression (verified against the content when read).
/// The layer `index` an image manifest's descriptor `desc` describes, whose blob is at
/// `location` (for messages); its compression is read from its media type.
pub(crate) fn layer_of(
    index: usize,
    desc: &Descriptor,
    diff_id: &Digest,
    location: String,
) -> Layer {
    let compression = compression_of(desc.media_type.as_deref());
    Layer {
        index,
        diff_id: diff_id.clone(),
        digest: Some(desc.digest.clone()),
        media_type: desc
            .media_type
            .clone()
            .unwrap_or_else(|| compression.oci_layer_media_type().to_string()),
        size: desc.size,
        compression,
        uncompressed_size: (compression == Compression::None).then_some(desc.size),
        location,
    }
}

/// The index entry for `wanted` (else the host's) platform; [`Error::ImageNotFound`]
/// naming the platforms there are when none matches. `file` names the index.
pub(crate) fn choose_platform<'a>(
    entries: &[&'a Descriptor],
    wanted: Option<&Platform>,
    file: &str,
) -> Result<&'a Descriptor> {
    let wanted = wanted.cloned().unwrap_or_else(Platform::host);
    let found = entries
        .iter()
        .find(|d| d.platform.as_ref().is_some_and(|p| wanted.matches(p)))
        .ok_or_else(|| Error::ImageNotFound {
            path: PathBuf::from(file),
            wanted: format!("platform {wanted}"),
            available: entries
                .iter()
                .filter_map(|d| d.platform.as_ref().map(ToString::to_string))
                .collect(),
        })?;
    tracing::debug!(platform = %wanted, digest = %found.digest, "selected manifest by platform");
    Ok(found)
}

/// A layer blob's compression from its media type (none when it names none).
pub(crate) fn compression_of(media_type: Option<&str>) -> Compression {
    match media_type {
        Some(m) if m.ends_with("+gzip") || m.ends_with(".tar.gzip") || m.ends_with("tar.gzip") => {
            Compression::Gzip
        }
        Some(m) if m.ends_with("+zstd") || m.ends_with(".zstd") => Compression::Zstd,
        Some(m) if m.ends_with("+xz") => Compression::Xz,
        _ => Compression::None,
    }
}

/// Names a file of the layout for messages: its path in a directory, `ARCHIVE:NAME` in an
/// archive.
fn display(root: &Path, name: &str) -> String {
    if root.is_dir() {
        root.join(name).display().to_string()
    } else {
        format!("{}:{}", root.display(), name)
    }
}

/// Reads a JSON blob, checking its size before reading and its digest after.
fn read_blob(
    store: &dyn Store,
    root: &Path,
    desc: &Descriptor,
    what: &str,
    limits: &Limits,
) -> Result<Vec<u8>> {
    let name = blob_path(&desc.digest);
    if desc.size > limits.max_json_size {
        return Err(Error::LimitExceeded {
            what: display(root, &name),
            limit: "max JSON document size".into(),
            max: limits.max_json_size,
            found: desc.size,
            option: crate::transport::ENV_MAX_JSON_SIZE.into(),
        });
    }
    let raw = store.read_small(&name, what, limits.max_json_size)?;
    if raw.len() as u64 != desc.size {
        return Err(Error::SizeMismatch {
            what: display(root, &name),
            expected: desc.size,
            found: raw.len() as u64,
        });
    }
    let found = Digest::of(&raw);
    if found != desc.digest {
        return Err(Error::DigestMismatch {
            what: display(root, &name),
            expected: desc.digest.to_string(),
            found: found.to_string(),
        });
    }
    Ok(raw)
}

struct Walker<'a> {
    store: &'a dyn Store,
    root: &'a PathBuf,
    limits: &'a Limits,
    platform: Option<Platform>,
    visited: HashSet<Digest>,
    kinds: Vec<ManifestKind>,
}

impl Walker<'_> {
    /// Chooses among the top-level entries of `index.json`.
    fn choose_top(&self, index: &Index, name: Option<&str>) -> Result<Descriptor> {
        let file = self.root.to_path_buf();
        let refs: Vec<String> = index
            .manifests
            .iter()
            .filter_map(|d| d.ref_name().map(str::to_string))
            .collect();
        let candidates: Vec<&Descriptor> = match name {
            Some(n) => {
                let found: Vec<&Descriptor> = index
                    .manifests
                    .iter()
                    .filter(|d| d.ref_name() == Some(n))
                    .collect();
                if found.is_empty() {
                    return Err(Error::ImageNotFound {
                        path: file,
                        wanted: format!("ref name {n:?}"),
                        available: refs,
                    });
                }
                tracing::debug!(
                    ref_name = n,
                    matches = found.len(),
                    "selected index.json entries by ref name"
                );
                found
            }
            None => index.manifests.iter().collect(),
        };
        match candidates.as_slice() {
            [] => Err(Error::ImageNotFound {
                path: file,
                wanted: "an image".into(),
                available: vec![],
            }),
            [one] => Ok((*one).clone()),
            many => {
                if many.iter().all(|d| d.platform.is_some()) {
                    return self.choose_platform(many, &display(self.root, "index.json"));
                }
                let mut choices: Vec<String> = many
                    .iter()
                    .filter_map(|d| d.ref_name())
                    .map(|r| {
                        let (path, name) = (self.root.to_path_buf(), Some(r.to_string()));
                        // A reference to paste back: with its transport, colons escaped.
                        if self.root.is_dir() {
                            ImageReference::Oci { path, name }.to_string()
                        } else {
                            ImageReference::OciArchive { path, name }.to_string()
                        }
                    })
                    .collect();
                choices.dedup();
                Err(Error::AmbiguousImage {
                    path: file,
                    reason: format!("index.json lists {} manifests", many.len()),
                    choices: if choices.is_empty() {
                        vec!["(none of them has an org.opencontainers.image.ref.name)".into()]
                    } else {
                        choices
                    },
                })
            }
        }
    }

    /// Chooses the entry for the wanted (or host) platform.
    fn choose_platform(&self, entries: &[&Descriptor], file: &str) -> Result<Descriptor> {
        choose_platform(entries, self.platform.as_ref(), file).cloned()
    }

    /// Follows a descriptor down to an image manifest.
    fn resolve(&mut self, desc: &Descriptor, depth: usize) -> Result<(Vec<u8>, Manifest)> {
        let name = blob_path(&desc.digest);
        if depth > self.limits.max_index_depth {
            return Err(Error::LimitExceeded {
                what: display(self.root, &name),
                limit: "max index nesting depth".into(),
                max: self.limits.max_index_depth as u64,
                found: depth as u64,
                option: crate::transport::ENV_MAX_INDEX_DEPTH.into(),
            });
        }
        if !self.visited.insert(desc.digest.clone()) {
            return Err(Error::InvalidLayout {
                path: self.root.clone(),
                reason: format!("image index cycle: {} is reached twice", desc.digest),
            });
        }
        let raw = read_blob(self.store, self.root, desc, "manifest", self.limits)?;
        let file = display(self.root, &name);
        match Document::parse(&raw, &file)? {
            Document::Manifest(m) => {
                tracing::debug!(manifest = %desc.digest, kind = %m.kind, "reached image manifest");
                Ok((raw, m))
            }
            Document::Index(i) => {
                tracing::debug!(index = %desc.digest, kind = %i.kind, entries = i.manifests.len(), "descending into nested index");
                self.kinds.push(i.kind);
                let entries: Vec<&Descriptor> = i.manifests.iter().collect();
                let next = match entries.as_slice() {
                    [] => {
                        return Err(Error::ImageNotFound {
                            path: PathBuf::from(&file),
                            wanted: "an image".into(),
                            available: vec![],
                        })
                    }
                    [one] if one.platform.is_none() => (*one).clone(),
                    many => self.choose_platform(many, &file)?,
                };
                self.resolve(&next, depth + 1)
            }
            Document::Archive(_) => Err(Error::UnsupportedManifest {
                file,
                found: "a docker-archive manifest.json as a blob".into(),
            }),
        }
    }
}
