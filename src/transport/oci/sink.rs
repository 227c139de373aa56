//! Writing `oci:` layout directories and `oci-archive:` tars (a layout in a tar), and the
//! OCI manifest and index every image written here carries (docker-archives included:
//! see [`docker_archive::sink`](crate::transport::docker_archive::sink)).
//!
//! A new layout is built in a staging directory beside its final name and renamed into
//! place; an image added to an existing layout has its blobs renamed into place one by
//! one (removed again if the write fails) and `index.json` replaced last, under a lock on
//! the layout, so that runs adding to one layout take turns. An archive is written to a
//! temporary file beside its name and renamed.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::{self, BufWriter, Read};
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::daemon::ImageName;
use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::fs_safe::{check_output, pause_point, Dir, LockedTempDir};
use crate::manifest::{
    ANNOTATION_REF_NAME, MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_OCI_MANIFEST,
};
use crate::reference::ImageReference;
use crate::transport::oci::blob_path;
use crate::transport::output::{
    check_archive, open_output_dir, output_dir, output_name, parent_dir, to_json, write_file,
    BlobStore, Layers, TarOut, Verify, WriteBehind,
};
use crate::transport::{ImageSink, WrittenImage};

/// The `oci-layout` file of every layout written.
pub(crate) const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";

/// The OCI image manifest of an image written here (uncompressed layers): its bytes and
/// their digest.
pub(crate) fn image_manifest(
    config_digest: &Digest,
    config_len: usize,
    layers: &[(Digest, u64)],
) -> Result<(Vec<u8>, Digest)> {
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_OCI_MANIFEST,
        "config": {
            "mediaType": MEDIA_TYPE_OCI_CONFIG,
            "digest": config_digest.to_string(),
            "size": config_len,
        },
        "layers": layers.iter().map(|(d, s)| json!({
            "mediaType": LAYER_MEDIA_TYPE,
            "digest": d.to_string(),
            "size": s,
        })).collect::<Vec<_>>(),
    });
    let raw = to_json(&manifest)?;
    let digest = Digest::of(&raw);
    Ok((raw, digest))
}

/// The index descriptor of the manifest `raw` (digest `digest`), with `annotations`.
pub(crate) fn descriptor(
    digest: &Digest,
    raw: &[u8],
    annotations: BTreeMap<&str, String>,
) -> serde_json::Value {
    let mut descriptor = json!({
        "mediaType": MEDIA_TYPE_OCI_MANIFEST,
        "digest": digest.to_string(),
        "size": raw.len(),
    });
    if !annotations.is_empty() {
        descriptor["annotations"] = json!(annotations);
    }
    descriptor
}

/// A new layout's `index.json`, naming the one manifest `descriptor`.
pub(crate) fn index(descriptor: &serde_json::Value) -> Result<Vec<u8>> {
    to_json(&json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_OCI_INDEX,
        "manifests": [descriptor],
    }))
}

/// Blobs added to an existing layout (names in its `blobs/sha256`), removed again unless
/// the image is committed: a failed write leaves the layout as it was.
struct AddedBlobs {
    blobs: Option<Dir>,
    names: Vec<String>,
    keep: bool,
}

impl Drop for AddedBlobs {
    fn drop(&mut self) {
        if let (false, Some(blobs)) = (self.keep, &self.blobs) {
            for n in &self.names {
                let _ = rustix::fs::unlinkat(blobs.fd(), n.as_str(), rustix::fs::AtFlags::empty());
            }
        }
    }
}

/// What an `oci:` destination path holds.
enum LayoutTarget {
    /// Nothing, or an empty directory: a new layout is staged and renamed there.
    New,
    /// An OCI image layout: the image is added to it; the layout, opened, and the refs its
    /// index has, with the digests of the manifests they name.
    Existing(Dir, Vec<(String, String)>),
}

/// Looks at an `oci:` destination: refuses anything but nothing, an empty directory or
/// a layout whose index.json parses and has a manifests array. The path itself may be a
/// link to a directory; inside it, `oci-layout`, `index.json` and `blobs` must not be
/// links (nothing is written through one), and a FIFO, socket or device anywhere is
/// refused.
fn layout_target(path: &Path) -> Result<LayoutTarget> {
    check_output(path, "a directory")?;
    if !path.exists() {
        return Ok(LayoutTarget::New);
    }
    let not_layout = || Error::InvalidLayout {
        path: path.to_path_buf(),
        reason: "exists and is not an OCI image layout; choose a new or empty directory".into(),
    };
    if !path.is_dir() {
        return Err(not_layout());
    }
    let layout = Dir::open(path)?;
    if layout.is_empty()? {
        return Ok(LayoutTarget::New);
    }
    let has_layout_file = layout.open_file("oci-layout")?.is_some();
    if !has_layout_file || layout.open_file("index.json")?.is_none() {
        return Err(not_layout());
    }
    if layout.open_subdir("blobs")?.is_some() {
        layout.open_subdir("blobs/sha256")?;
    }
    let index = read_index(&layout)?;
    let refs = index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| {
            let r = m.pointer("/annotations/org.opencontainers.image.ref.name")?;
            let digest = m.get("digest").and_then(|d| d.as_str()).unwrap_or("");
            Some((r.as_str()?.to_string(), digest.to_string()))
        })
        .collect();
    Ok(LayoutTarget::Existing(layout, refs))
}

/// Reads an existing layout's index.json as JSON, checking it has a manifests array.
/// `"manifests": null`, what `umoci init` writes for a layout with no image yet (and what
/// skopeo and umoci add images to), is read as an empty list.
fn read_index(layout: &Dir) -> Result<serde_json::Value> {
    let index_path = &layout.path().join("index.json");
    let file = layout
        .open_file("index.json")?
        .ok_or_else(|| Error::MissingFile {
            container: layout.path().to_path_buf(),
            what: "OCI index".into(),
            name: "index.json".into(),
        })?;
    let raw = crate::transport::read_json_file(
        file,
        index_path,
        crate::transport::Limits::default().max_json_size,
    )?;
    let mut index: serde_json::Value =
        crate::manifest::parse_json(&raw, &index_path.display().to_string())?;
    if let Some(m) = index.get_mut("manifests").filter(|m| m.is_null()) {
        *m = serde_json::Value::Array(Vec::new());
    }
    if !index.get("manifests").is_some_and(|m| m.is_array()) {
        return Err(Error::InvalidField {
            file: index_path.display().to_string(),
            field: "manifests".into(),
            reason: "missing or not an array".into(),
        });
    }
    Ok(index)
}

/// The config digest of the manifest `digest` in `layout`, if it reads. A manifest blob
/// that is not a regular file (a FIFO, a device, a link) is an error, not read; so is one
/// past the JSON size or value limits (it is read bounded, whatever the file claims).
fn config_of(layout: &Dir, digest: &str) -> Result<Option<String>> {
    let Some(hex) = digest.strip_prefix("sha256:") else {
        return Ok(None);
    };
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(None);
    }
    #[derive(serde::Deserialize)]
    struct Manifest {
        config: Config,
    }
    #[derive(serde::Deserialize)]
    struct Config {
        digest: String,
    }
    let rel = format!("blobs/sha256/{hex}");
    let Some(file) = layout.open_file(&rel)? else {
        return Ok(None);
    };
    let path = layout.path().join(&rel);
    let parsed = crate::transport::read_json_file(
        file,
        &path,
        crate::transport::Limits::default().max_json_size,
    )
    .and_then(|raw| crate::manifest::parse_json::<Manifest>(&raw, &path.display().to_string()));
    match parsed {
        Ok(m) => Ok(Some(m.config.digest)),
        Err(e @ Error::LimitExceeded { .. }) => Err(e),
        Err(_) => Ok(None),
    }
}

/// The error for a ref of an existing layout that `--force` would be needed to move.
fn ref_exists(layout: &Path, r: &str) -> Error {
    Error::OutputExists {
        path: PathBuf::from(format!("{} (ref {r:?})", layout.display())),
    }
}

/// Checks, writing nothing, an `oci:` or `oci-archive:` destination: the output's
/// directory exists; an archive is not a directory and does not exist unless `force`; an
/// `oci:` path is new, an empty directory or a layout whose index.json parses, and, given
/// the image's ID, an explicit ref of an existing layout names no other image unless
/// `force` (naming this image already, the write just keeps it).
pub fn check(dest: &ImageReference, force: bool, image_id: Option<&Digest>) -> Result<()> {
    match dest {
        ImageReference::OciArchive { path, .. } => check_archive(path, force).map(|_| ()),
        ImageReference::Oci { path, name } => {
            output_dir(path)?;
            if let LayoutTarget::Existing(layout, refs) = layout_target(path)? {
                if let (Some(r), Some(id)) = (name, image_id) {
                    for (n, m) in &refs {
                        if n == r
                            && !force
                            && config_of(&layout, m)?.is_none_or(|c| c != id.to_string())
                        {
                            return Err(ref_exists(path, r));
                        }
                    }
                }
            }
            Ok(())
        }
        _ => Err(Error::Other(format!(
            "internal: {dest} is not an oci: or oci-archive: destination"
        ))),
    }
}

/// Where an OCI sink writes, once it started.
enum Out {
    /// An `oci-archive:`.
    Tar(TarOut),
    /// An `oci:` layout.
    Dir {
        /// The layout: a staging directory for a new layout, the layout itself when adding
        /// to an existing one. Nothing in it is reached through a link.
        root: Dir,
        /// `blobs/sha256` in `root`.
        blobs: Dir,
        /// A new layout's staging directory and the directory it is renamed in.
        staging: Option<(LockedTempDir, Dir)>,
        /// Blobs this writer added to an existing layout.
        added: AddedBlobs,
    },
}

/// Writes one image to an `oci:` layout (a new one, or added to an existing one, its
/// `ref` replaced) or an `oci-archive:` tar.
pub struct OciSink {
    dest: ImageReference,
    path: PathBuf,
    out: Option<Out>,
    layers: Layers,
    /// `ref` of an `oci:DIR:REF` / `oci-archive:PATH:REF` destination.
    oci_ref: Option<String>,
    /// Whether an existing archive, or a ref of an existing layout, may be replaced.
    force: bool,
}

impl OciSink {
    /// A sink for `dest` (an `oci:` or `oci-archive:` reference); nothing is checked or
    /// written yet.
    pub fn create(dest: &ImageReference, force: bool) -> Result<OciSink> {
        let (path, oci_ref) = match dest {
            ImageReference::Oci { path, name } | ImageReference::OciArchive { path, name } => {
                (path.clone(), name.clone())
            }
            _ => {
                return Err(Error::Other(format!(
                    "internal: {dest} is not an oci: or oci-archive: destination"
                )))
            }
        };
        Ok(OciSink {
            dest: dest.clone(),
            path,
            out: None,
            layers: Layers::default(),
            oci_ref,
            force,
        })
    }

    /// Starts writing (once): checks the destination again and opens it.
    fn out(&mut self) -> Result<&mut Out> {
        if self.out.is_none() {
            check(&self.dest, self.force, None)?;
            let path = &self.path;
            let out = match self.dest {
                ImageReference::OciArchive { .. } => Out::Tar(TarOut::create(path)?),
                _ => match layout_target(path)? {
                    LayoutTarget::Existing(root, _) => {
                        root.sweep();
                        let blobs = root.create_subdirs("blobs/sha256")?;
                        blobs.sweep();
                        Out::Dir {
                            added: AddedBlobs {
                                blobs: Some(blobs.try_clone()?),
                                names: Vec::new(),
                                keep: false,
                            },
                            root,
                            blobs,
                            staging: None,
                        }
                    }
                    LayoutTarget::New => {
                        output_name(path)?;
                        let parent = open_output_dir(&parent_dir(path))?;
                        let staging = parent.temp_dir()?;
                        let root = staging.dir().try_clone()?;
                        let blobs = root.create_subdirs("blobs/sha256")?;
                        Out::Dir {
                            root,
                            blobs,
                            staging: Some((staging, parent)),
                            added: AddedBlobs {
                                blobs: None,
                                names: Vec::new(),
                                keep: false,
                            },
                        }
                    }
                },
            };
            self.out = Some(out);
        }
        self.out
            .as_mut()
            .ok_or_else(|| Error::Other("internal: the OCI output did not open".into()))
    }
}

impl BlobStore for OciSink {
    fn layers_mut(&mut self) -> &mut Layers {
        &mut self.layers
    }

    fn dest(&self) -> PathBuf {
        self.path.clone()
    }

    fn put_blob(
        &mut self,
        digest: &Digest,
        size: u64,
        data: &mut dyn Read,
        what: &str,
    ) -> Result<()> {
        let path = self.path.clone();
        put_blob(self.out()?, &path, digest, size, data, what)
    }
}

/// Writes a blob into `out` (named by `digest`, `size` bytes from `data`), verifying it.
fn put_blob(
    out: &mut Out,
    dest: &Path,
    digest: &Digest,
    size: u64,
    data: &mut dyn Read,
    what: &str,
) -> Result<()> {
    let mut verify = Verify::new(data, size, digest, what);
    match out {
        Out::Tar(tar) => tar.append(&blob_path(digest), size, &mut verify, dest)?,
        Out::Dir { blobs, added, .. } => {
            let hex = digest.hex().to_string();
            let final_path = blobs.path().join(&hex);
            // Content-addressed: an existing blob with this name is this blob, provided
            // it is intact (and a regular file: anything else is refused, not read).
            if let Some(existing) = blobs.open_file(&hex)? {
                let (found, n) = crate::digest::digest_reader(existing).at(&final_path)?;
                if found == *digest && n == size {
                    io::copy(&mut verify, &mut io::sink())
                        .map_err(|e| Error::io(&final_path, e))?;
                    return verify.check();
                }
            }
            let tmp = blobs.temp_file()?;
            {
                let mut w = BufWriter::with_capacity(1 << 20, WriteBehind::new(tmp.file()));
                io::copy(&mut verify, &mut w).map_err(|e| Error::io(&final_path, e))?;
                w.into_inner()
                    .map_err(|e| Error::io(&final_path, e.into_error()))?
                    .finish()
                    .at(&final_path)?;
            }
            verify.check()?;
            tmp.file().sync_all().at(&final_path)?;
            tmp.persist(OsStr::new(&hex), true)?;
            added.names.push(hex);
            return Ok(());
        }
    }
    verify.check()
}

impl ImageSink for OciSink {
    /// The ref of `oci:DIR:REF` as a name, when it reads as one (a ref such as `2` is a
    /// tag, and stays the ref whatever the name).
    fn name(&self) -> Result<Option<ImageName>> {
        Ok(self
            .oci_ref
            .as_deref()
            .and_then(|n| ImageName::parse(n).ok()))
    }

    fn check(&self, image_id: &Digest) -> Result<()> {
        check(&self.dest, self.force, Some(image_id))
    }

    fn spool_dir(&self) -> PathBuf {
        parent_dir(&self.path)
    }

    fn add_layer(&mut self, diff_id: &Digest, size: u64, data: &mut dyn Read) -> Result<()> {
        self.add_layer_blob(diff_id, size, data)
    }

    fn finish(
        mut self: Box<Self>,
        config: &[u8],
        name: Option<&ImageName>,
    ) -> Result<WrittenImage> {
        let (_, manifest_raw, manifest_digest) = self.put_config_and_manifest(config)?;
        let mut annotations = BTreeMap::new();
        if let Some(n) = name {
            annotations.insert(ANNOTATION_REF_NAME, n.tag().to_string());
        }
        if let Some(r) = &self.oci_ref {
            annotations.insert(ANNOTATION_REF_NAME, r.clone());
        }
        let descriptor = descriptor(&manifest_digest, &manifest_raw, annotations);
        let OciSink {
            path, out, force, ..
        } = *self;
        let out =
            out.ok_or_else(|| Error::Other("internal: the OCI output did not open".into()))?;
        match out {
            Out::Tar(mut tar) => {
                // `index.json`, what loaders start from, last.
                let files = vec![
                    ("oci-layout", OCI_LAYOUT.to_vec()),
                    ("index.json", index(&descriptor)?),
                ];
                tar.append_files(files, &path)?;
                tar.commit(&path, force)?;
            }
            Out::Dir {
                root,
                staging,
                added,
                ..
            } => {
                // An existing layout keeps its own (checked to be a regular file).
                if staging.is_some() {
                    write_file(&root, "oci-layout", OCI_LAYOUT, true)?;
                }
                commit_layout(&path, root, staging, added, descriptor, force)?;
            }
        }
        Ok(WrittenImage {
            pushed_to: None,
            destination: path.display().to_string(),
            path: Some(path),
            loaded_into: None,
            manifest_digest,
            tag_error: None,
        })
    }
}

/// Merges the image's manifest `descriptor` into the layout's index (replacing the ref it
/// names unless that needs `force`) and, for a new layout, renames it into place.
fn commit_layout(
    dest: &Path,
    root: Dir,
    staging: Option<(LockedTempDir, Dir)>,
    mut added: AddedBlobs,
    descriptor: serde_json::Value,
    force: bool,
) -> Result<()> {
    let index_path = root.path().join("index.json");
    // Runs adding to one layout read, merge and replace its index.json one at a
    // time: the lock is on the layout directory itself, so no lock file stays.
    let _lock = if staging.is_none() {
        pause_point("index");
        Some(root.lock()?)
    } else {
        None
    };
    let mut index = if staging.is_none() {
        read_index(&root)?
    } else {
        json!({ "schemaVersion": 2, "mediaType": MEDIA_TYPE_OCI_INDEX, "manifests": [] })
    };
    let tag = descriptor
        .pointer("/annotations/org.opencontainers.image.ref.name")
        .and_then(|v| v.as_str())
        .map(str::to_string);
    let manifests = index
        .get_mut("manifests")
        .and_then(|m| m.as_array_mut())
        .ok_or_else(|| Error::InvalidField {
            file: index_path.display().to_string(),
            field: "manifests".into(),
            reason: "missing or not an array".into(),
        })?;
    if let Some(tag) = &tag {
        let named = |m: &serde_json::Value| {
            m.pointer("/annotations/org.opencontainers.image.ref.name")
                .and_then(|v| v.as_str())
                == Some(tag.as_str())
        };
        // The ref may come from the image's name, known only now; moving it
        // to another image needs --force (pointing it at this image again is
        // a no-op).
        let moved = manifests
            .iter()
            .any(|m| named(m) && m.get("digest") != descriptor.get("digest"));
        if moved && !force {
            return Err(ref_exists(dest, tag));
        }
        manifests.retain(|m| !named(m));
    }
    manifests.push(descriptor);
    let raw = to_json(&index)?;
    write_file(&root, "index.json", &raw, true)?;
    added.keep = true;
    if let Some((staging, _parent)) = staging {
        // A new layout takes its name only if nothing has it, or an empty
        // directory does: of two runs racing for it, one wins.
        pause_point("persist");
        staging.persist(&output_name(dest)?)?;
    }
    Ok(())
}
