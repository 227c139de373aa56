//! `docker-archive`: tars written by `docker save` (the legacy `<id>/layer.tar` layout of
//! Docker <= 24 and the OCI-hybrid layout of Docker >= 25), skopeo and crane.
//!
//! `manifest.json` is authoritative: it names the config and the layers. (Docker 25.0.0 wrote
//! an `index.json` whose manifests lacked layers, so the OCI side of hybrid archives is not
//! trusted.) The layers' order and count are checked against the config's
//! `rootfs.diff_ids`, and each layer is verified against its diff_id as it is read.
//!
//! The writer, [`sink::DockerArchiveSink`], is in [`sink`].

pub mod sink;

use std::io::Read;
use std::path::Path;

use crate::compression::Compression;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::image::{Image, Layer};
use crate::manifest::{ArchiveEntry, ConfigView, Document, ManifestKind};
use crate::reference::{ArchiveSelector, ImageReference, Transport};
use crate::transport::store::{normalize, Store, TarStore};
use crate::transport::{ImageSource, Limits, OpenOptions};

/// An image inside a docker-archive tar.
pub struct DockerArchive {
    store: TarStore,
    image: Image,
    limits: Limits,
}

impl DockerArchive {
    /// Opens and checks the image `reference` names (a `docker-archive:` reference).
    pub fn open(reference: &ImageReference, options: &OpenOptions) -> Result<DockerArchive> {
        let ImageReference::DockerArchive { path, selector } = reference else {
            return Err(Error::Other(format!(
                "{reference} is not a docker-archive reference"
            )));
        };
        let store = TarStore::open_with(path, &options.limits)?;
        Self::from_store(store, reference.clone(), selector.as_ref(), options)
    }

    /// Reads an image from an already indexed archive (used by the docker-daemon transport,
    /// which spools `docker save` output to a temporary file).
    pub fn from_store(
        store: TarStore,
        reference: ImageReference,
        selector: Option<&ArchiveSelector>,
        options: &OpenOptions,
    ) -> Result<DockerArchive> {
        let path = store.root().to_path_buf();
        if !store.exists("manifest.json")? {
            if store.exists("repositories")? {
                return Err(Error::UnsupportedLegacyArchive { path });
            }
            if store.exists("index.json")? || store.exists("oci-layout")? {
                return Err(Error::InvalidLayout {
                    path: path.clone(),
                    reason: format!(
                        "no manifest.json, but an OCI layout (index.json): read it as oci-archive:{}",
                        path.display()
                    ),
                });
            }
            return Err(Error::MissingFile {
                container: path,
                what: "docker-archive manifest".into(),
                name: "manifest.json".into(),
            });
        }
        let raw = store.read_small("manifest.json", "manifest", options.limits.max_json_size)?;
        let file = format!("{}:manifest.json", path.display());
        let entries = match Document::parse(&raw, &file)? {
            Document::Archive(entries) => entries,
            other => {
                return Err(Error::UnsupportedManifest {
                    file,
                    found: format!(
                        "a {} where a docker-archive manifest.json was expected",
                        other.kind()
                    ),
                })
            }
        };
        let candidates = named(&entries, selector);
        let (position, entry) = if wants_platform_choice(&entries, &candidates, options) {
            choose_platform(&store, &path, &entries, &candidates, selector, options)?
        } else {
            select(&path, &entries, selector)?
        };
        tracing::debug!(archive = %path.display(), image = position, config = %entry.config, layers = entry.layers.len(), "selected image in archive");

        let config = store.read_small(&entry.config, "config", options.limits.max_json_size)?;
        let config_digest = Digest::of(&config);
        if let Some(named) = digest_in_name(&entry.config) {
            if named != config_digest {
                return Err(Error::DigestMismatch {
                    what: format!("{}:{} config", path.display(), entry.config),
                    expected: named.to_string(),
                    found: config_digest.to_string(),
                });
            }
        }
        let config_file = format!("{}:{}", path.display(), entry.config);
        let view = ConfigView::parse(&config, &config_file)?;
        options.limits.check_layers(
            &format!("{file} [{position}]"),
            entry.layers.len(),
            view.diff_ids.len(),
        )?;
        let mut layers = Vec::with_capacity(entry.layers.len());
        for (index, (name, diff_id)) in entry.layers.iter().zip(&view.diff_ids).enumerate() {
            if normalize(name).is_none() {
                return Err(Error::PathOutsideArchive {
                    container: path.clone(),
                    name: name.clone(),
                });
            }
            let size = store.size(name)?.ok_or_else(|| Error::MissingFile {
                container: path.clone(),
                what: format!("layer {index}"),
                name: name.clone(),
            })?;
            let mut magic = [0u8; 6];
            let n = read_prefix(store.open(name, "layer")?, &mut magic)
                .map_err(|e| Error::io(path.join(name), e))?;
            let compression = Compression::detect(&magic[..n]);
            let digest = match (digest_in_name(name), compression) {
                (Some(d), _) => Some(d),
                (None, Compression::None) => Some(diff_id.clone()),
                (None, _) => None,
            };
            tracing::debug!(layer = index, member = %name, compression = compression.name(), size, "layer");
            layers.push(Layer {
                index,
                diff_id: diff_id.clone(),
                digest,
                media_type: compression.docker_layer_media_type().to_string(),
                size,
                compression,
                uncompressed_size: (compression == Compression::None).then_some(size),
                location: name.clone(),
            });
        }
        let image = Image {
            reference,
            transport: Transport::DockerArchive,
            manifest_kind: ManifestKind::DockerArchiveManifest,
            index_kinds: Vec::new(),
            manifest: None,
            config,
            config_digest,
            repo_tags: entry.repo_tags.clone().unwrap_or_default(),
            platform: view.platform,
            layers,
        };
        Ok(DockerArchive {
            store,
            image,
            limits: options.limits.clone(),
        })
    }
}

impl DockerArchive {
    /// Whether `digest` names, inside this archive, an OCI manifest (or Docker schema2
    /// manifest) whose config is the selected image's config, or an index that lists such a
    /// manifest (at most two index levels deep). Each blob read is checked against its
    /// digest. Docker's containerd image store calls an image by this digest (its `Id`),
    /// not by the config digest, and `docker save` there writes the blobs it names.
    pub fn describes(&self, digest: &Digest) -> Result<bool> {
        self.describes_at(digest, 0)
    }

    fn describes_at(&self, digest: &Digest, depth: usize) -> Result<bool> {
        const MAX_DEPTH: usize = 2;
        let name = super::oci::blob_path(digest);
        if !self.store.exists(&name)? {
            return Ok(false);
        }
        let raw = self
            .store
            .read_small(&name, "manifest", self.limits.max_json_size)?;
        let found = Digest::of(&raw);
        if &found != digest {
            return Err(Error::DigestMismatch {
                what: format!("{}:{name}", self.store.root().display()),
                expected: digest.to_string(),
                found: found.to_string(),
            });
        }
        let file = format!("{}:{name}", self.store.root().display());
        match Document::parse(&raw, &file)? {
            Document::Manifest(m) => Ok(m.config.digest == self.image.config_digest),
            Document::Index(index) if depth < MAX_DEPTH => {
                for d in &index.manifests {
                    if self.describes_at(&d.digest, depth + 1)? {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            Document::Index(_) | Document::Archive(_) => Ok(false),
        }
    }

    /// Gives back the archive, to read it another way.
    pub fn into_store(self) -> TarStore {
        self.store
    }
}

impl ImageSource for DockerArchive {
    fn image(&self) -> &Image {
        &self.image
    }

    fn limits(&self) -> Limits {
        self.limits.clone()
    }

    fn open_blob(&self, index: usize) -> Result<Box<dyn Read + Send + '_>> {
        let layer = self.layer(index)?;
        self.store.open(&layer.location, "layer")
    }

    fn layer_section(&self, index: usize) -> Result<Option<super::store::FileSection>> {
        let layer = self.layer(index)?;
        self.store.locate(&layer.location, "layer")
    }
}

/// Chooses the image a selector names.
fn select<'a>(
    path: &Path,
    entries: &'a [ArchiveEntry],
    selector: Option<&ArchiveSelector>,
) -> Result<(usize, &'a ArchiveEntry)> {
    let describe = |i: usize, e: &ArchiveEntry| -> String {
        match e.repo_tags.as_deref() {
            Some(tags) if !tags.is_empty() => format!("@{i} ({})", tags.join(", ")),
            _ => format!("@{i} (untagged, config {})", e.config),
        }
    };
    match selector {
        None if entries.len() == 1 => Ok((0, &entries[0])),
        None => Err(Error::AmbiguousImage {
            path: path.to_path_buf(),
            reason: format!("the archive holds {} images", entries.len()),
            choices: entries
                .iter()
                .enumerate()
                .flat_map(|(i, e)| {
                    let mut c = vec![format!("docker-archive:{}:@{i}", path.display())];
                    for t in e.repo_tags.iter().flatten() {
                        c.push(format!("docker-archive:{}:{t}", path.display()));
                    }
                    c
                })
                .collect(),
        }),
        Some(ArchiveSelector::Index(i)) => {
            entries
                .get(*i)
                .map(|e| (*i, e))
                .ok_or_else(|| Error::ImageNotFound {
                    path: path.to_path_buf(),
                    wanted: format!("@{i}"),
                    available: entries
                        .iter()
                        .enumerate()
                        .map(|(i, e)| describe(i, e))
                        .collect(),
                })
        }
        Some(ArchiveSelector::Name(name)) => named(entries, selector)
            .first()
            .map(|&i| (i, &entries[i]))
            .ok_or_else(|| Error::ImageNotFound {
                path: path.to_path_buf(),
                wanted: name.clone(),
                available: entries
                    .iter()
                    .enumerate()
                    .map(|(i, e)| describe(i, e))
                    .collect(),
            }),
    }
}

/// The entries a selector names: all of them for none, every entry tagged with the name,
/// or the one at the index.
fn named(entries: &[ArchiveEntry], selector: Option<&ArchiveSelector>) -> Vec<usize> {
    match selector {
        None => (0..entries.len()).collect(),
        Some(ArchiveSelector::Index(i)) => (*i < entries.len()).then_some(*i).into_iter().collect(),
        Some(ArchiveSelector::Name(name)) => {
            let wanted = normalize_name(name);
            entries
                .iter()
                .enumerate()
                .filter(|(_, e)| {
                    e.repo_tags
                        .iter()
                        .flatten()
                        .any(|t| normalize_name(t) == wanted)
                })
                .map(|(i, _)| i)
                .collect()
        }
    }
}

/// Whether the platform decides between the entries a selector names: when there are
/// several and either `--platform` was given or they are one image's platforms (the
/// same tags, as Docker's containerd image store saves a multi-platform image). Two
/// different images in one archive stay ambiguous without `--platform`.
fn wants_platform_choice(entries: &[ArchiveEntry], named: &[usize], options: &OpenOptions) -> bool {
    if named.len() < 2 {
        return false;
    }
    let tags = |i: usize| {
        let mut t: Vec<String> = entries[i]
            .repo_tags
            .iter()
            .flatten()
            .map(|t| normalize_name(t))
            .collect();
        t.sort();
        t
    };
    options.platform.is_some() || named.iter().all(|&i| tags(i) == tags(named[0]))
}

/// Chooses, among the entries `named` (those `selector` names), the one whose config is
/// for the wanted platform (`--platform`, or the host's).
fn choose_platform<'a>(
    store: &TarStore,
    path: &Path,
    entries: &'a [ArchiveEntry],
    named: &[usize],
    selector: Option<&ArchiveSelector>,
    options: &OpenOptions,
) -> Result<(usize, &'a ArchiveEntry)> {
    let wanted = options
        .platform
        .clone()
        .unwrap_or_else(crate::platform::Platform::host);
    let mut available = Vec::new();
    let mut found = Vec::new();
    for &i in named {
        let e = &entries[i];
        let raw = store.read_small(&e.config, "config", options.limits.max_json_size)?;
        let view = ConfigView::parse(&raw, &format!("{}:{}", path.display(), e.config))?;
        available.push(format!("@{i} ({})", view.platform));
        if wanted.matches(&view.platform) {
            found.push(i);
        }
    }
    match found.as_slice() {
        [] => Err(Error::ImageNotFound {
            path: path.to_path_buf(),
            wanted: format!("platform {wanted}"),
            available,
        }),
        // A name picks its first entry for the platform, as it picks its first entry.
        [i, ..] if found.len() == 1 || matches!(selector, Some(ArchiveSelector::Name(_))) => {
            tracing::debug!(platform = %wanted, image = i, "selected image in archive by platform");
            Ok((*i, &entries[*i]))
        }
        many => Err(Error::AmbiguousImage {
            path: path.to_path_buf(),
            reason: format!("{} images in the archive are for {wanted}", many.len()),
            choices: many
                .iter()
                .map(|i| format!("docker-archive:{}:@{i}", path.display()))
                .collect(),
        }),
    }
}

/// Normalises a Docker name so that `busybox`, `busybox:latest`, `library/busybox:latest`
/// and `docker.io/library/busybox:latest` compare equal.
pub fn normalize_name(name: &str) -> String {
    let (repo, tag) = split_tag(name);
    let tag = tag.unwrap_or("latest");
    let repo = repo.strip_prefix("docker.io/").unwrap_or(repo);
    let repo = repo.strip_prefix("index.docker.io/").unwrap_or(repo);
    let repo = repo.strip_prefix("library/").unwrap_or(repo);
    format!("{repo}:{tag}")
}

/// Splits `repo[:tag]`, leaving a registry port (`host:5000/x`) in the repository.
pub fn split_tag(name: &str) -> (&str, Option<&str>) {
    let name = name.split('@').next().unwrap_or(name);
    match name.rfind(':') {
        Some(i) if !name[i + 1..].contains('/') => (&name[..i], Some(&name[i + 1..])),
        _ => (name, None),
    }
}

/// The digest a member name carries: `blobs/sha256/<hex>`, `<hex>.json`, `<hex>.tar`,
/// `<hex>.tar.gz` (skopeo, crane, Docker >= 25 name files after their content).
fn digest_in_name(name: &str) -> Option<Digest> {
    let name = normalize(name)?;
    if let Some(hex) = name.strip_prefix("blobs/sha256/") {
        return Digest::from_hex(hex).ok();
    }
    if name.contains('/') {
        return None;
    }
    let stem = name.split('.').next()?;
    Digest::from_hex(stem).ok()
}

fn read_prefix(mut r: impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_normalise() {
        assert_eq!(normalize_name("busybox"), "busybox:latest");
        assert_eq!(normalize_name("docker.io/library/busybox:1"), "busybox:1");
        assert_eq!(
            normalize_name("localhost:5000/a/b"),
            "localhost:5000/a/b:latest"
        );
        assert_eq!(
            split_tag("localhost:5000/a:t"),
            ("localhost:5000/a", Some("t"))
        );
    }

    #[test]
    fn digests_in_names() {
        let hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        for n in [
            format!("blobs/sha256/{hex}"),
            format!("{hex}.json"),
            format!("./{hex}.tar.gz"),
        ] {
            assert_eq!(
                digest_in_name(&n).map(|d| d.hex().to_string()),
                Some(hex.to_string()),
                "{n}"
            );
        }
        assert_eq!(digest_in_name(&format!("{hex}/layer.tar")), None);
    }
}
