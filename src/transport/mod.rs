//! Transports: where images are read from and written to. Each transport has its module
//! ([`docker_archive`], [`oci`] (also `oci-archive:`), [`docker_daemon`], [`registry`]) holding
//! its reader, an [`ImageSource`], and its writer, an [`ImageSink`], in `sink`.
//!
//! [`open`] turns an [`ImageReference`] into an [`ImageSource`]: the image's metadata is read
//! and checked up front (manifest detected from content, config hashed, layer count matched
//! against `rootfs.diff_ids`), and each layer is then streamed on demand, uncompressed, with
//! its stored digest and its diff_id verified as the stream reaches its end.
//!
//! [`create_sink`] turns an [`ImageReference`] into an [`ImageSink`], which takes an image
//! layer by layer, verifying each against its diff_id as it is written, and makes it
//! appear at the destination only once all of it verified.

use std::io::{self, BufReader, Read};
use std::sync::{Arc, Mutex};

use sha2::{Digest as _, Sha256};

use crate::compression::Compression;
use crate::digest::{Digest, HashingReader};
use crate::error::{Error, Result};
use crate::image::{Image, Layer, LayerCheck};
use crate::platform::Platform;
use crate::reference::ImageReference;

pub mod docker_archive;
pub mod docker_daemon;
pub mod oci;
pub(crate) mod output;
pub mod registry;
pub mod spooled;
pub mod store;

pub use crate::daemon::ImageName;

/// Where the image writers were: they moved to their transports
/// ([`docker_archive::sink`], [`oci::sink`], [`docker_daemon::sink`]), behind [`ImageSink`]
/// (made from a reference by [`create_sink`]).
#[deprecated(
    since = "0.1.0",
    note = "the writers moved to their transports, behind `transport::ImageSink` \
            (`transport::create_sink`); `ImageName` is `transport::ImageName`"
)]
pub mod dest {
    pub use super::ImageName;
}

/// Safety limits applied while reading untrusted images and packages.
///
/// Every refusal is an [`Error::LimitExceeded`] that names the limit and the environment
/// variable that raises it. Defaults are chosen so that real images never reach them (see
/// `SECURITY.md`).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest JSON document (manifest, index, config) read into memory
    /// (`DOCKER_DELTA_MAX_JSON_SIZE`, default 64 MiB).
    pub max_json_size: u64,
    /// Most layers an image may have (`DOCKER_DELTA_MAX_LAYERS`, default 1024).
    pub max_layers: usize,
    /// Deepest nesting of image indexes (`DOCKER_DELTA_MAX_INDEX_DEPTH`, default 8).
    pub max_index_depth: usize,
    /// Largest single entry: an archive member, an uncompressed layer, a decompressed
    /// archive, a package blob (`DOCKER_DELTA_MAX_ENTRY_SIZE`, default 64 GiB).
    pub max_entry_size: u64,
    /// Largest ratio of decompressed to compressed bytes for a compressed layer, a
    /// compressed archive and a package payload (`DOCKER_DELTA_MAX_EXPANSION_RATIO`,
    /// default 2000; deflate cannot exceed about 1032, so no gzip stream is ever refused).
    pub max_expansion_ratio: u64,
    /// The ratio is only enforced once this many bytes came out of a stream (default
    /// 1 GiB), so that small, very compressible files are never refused.
    pub expansion_check_after: u64,
    /// Most memory, in bytes, the index of an archive's members may take: each member
    /// counts its name and link target plus 96 bytes (`DOCKER_DELTA_MAX_ARCHIVE_INDEX`,
    /// default 64 MiB, some 400 000 members; an image archive has a few per layer).
    pub max_archive_index: u64,
    /// Most values (array elements, object members) one JSON document from outside may
    /// hold (`DOCKER_DELTA_MAX_JSON_VALUES`, default 1 048 576; see
    /// [`max_json_values`](crate::manifest::max_json_values)).
    pub max_json_values: u64,
    /// The memory bound of a run, which decides whether a layer can be diffed whole
    /// (`DOCKER_DELTA_MAX_MEMORY`, default 512 MiB; the default of
    /// `CreateOptions::max_layer_memory` and `ApplyOptions::max_layer_memory`).
    pub max_memory: u64,
}

/// Environment variable for [`Limits::max_json_size`].
pub const ENV_MAX_JSON_SIZE: &str = "DOCKER_DELTA_MAX_JSON_SIZE";
/// Environment variable for [`Limits::max_layers`].
pub const ENV_MAX_LAYERS: &str = "DOCKER_DELTA_MAX_LAYERS";
/// Environment variable for [`Limits::max_index_depth`].
pub const ENV_MAX_INDEX_DEPTH: &str = "DOCKER_DELTA_MAX_INDEX_DEPTH";
/// Environment variable for [`Limits::max_entry_size`].
pub const ENV_MAX_ENTRY_SIZE: &str = "DOCKER_DELTA_MAX_ENTRY_SIZE";
/// Environment variable for [`Limits::max_expansion_ratio`].
pub const ENV_MAX_EXPANSION_RATIO: &str = "DOCKER_DELTA_MAX_EXPANSION_RATIO";
/// Environment variable for [`Limits::max_archive_index`].
pub const ENV_MAX_ARCHIVE_INDEX: &str = "DOCKER_DELTA_MAX_ARCHIVE_INDEX";
/// Environment variable for [`Limits::max_json_values`].
pub const ENV_MAX_JSON_VALUES: &str = crate::manifest::ENV_MAX_JSON_VALUES;
/// Environment variable for [`Limits::max_memory`].
pub const ENV_MAX_MEMORY: &str = "DOCKER_DELTA_MAX_MEMORY";

impl Limits {
    /// The built-in limits, whatever the environment says.
    pub const DEFAULT: Limits = Limits {
        max_json_size: 64 << 20,
        max_layers: 1024,
        max_index_depth: 8,
        max_entry_size: 64 << 30,
        max_expansion_ratio: 2000,
        expansion_check_after: 1 << 30,
        max_archive_index: 64 << 20,
        max_json_values: 1 << 20,
        max_memory: crate::delta::codec::DEFAULT_MAX_MEMORY,
    };

    /// The built-in limits, each replaced by its environment variable when that is set
    /// (sizes as [`parse_size`] reads them, counts as whole numbers).
    ///
    /// A value that does not parse is refused with [`Error::InvalidOption`] naming the
    /// variable and the value: programs call this up front (the command line does), so
    /// that a mistyped limit is an error rather than the default.
    pub fn from_env() -> Result<Limits> {
        let d = Limits::DEFAULT;
        Ok(Limits {
            max_json_size: env_size(ENV_MAX_JSON_SIZE)?.unwrap_or(d.max_json_size),
            max_layers: env_count(ENV_MAX_LAYERS)?
                .map_or(Ok(d.max_layers), |v| count_to_usize(ENV_MAX_LAYERS, v))?,
            max_index_depth: env_count(ENV_MAX_INDEX_DEPTH)?
                .map_or(Ok(d.max_index_depth), |v| {
                    count_to_usize(ENV_MAX_INDEX_DEPTH, v)
                })?,
            max_entry_size: env_size(ENV_MAX_ENTRY_SIZE)?.unwrap_or(d.max_entry_size),
            max_expansion_ratio: env_count(ENV_MAX_EXPANSION_RATIO)?
                .unwrap_or(d.max_expansion_ratio),
            expansion_check_after: d.expansion_check_after,
            max_archive_index: env_size(ENV_MAX_ARCHIVE_INDEX)?.unwrap_or(d.max_archive_index),
            max_json_values: env_count(ENV_MAX_JSON_VALUES)?.unwrap_or(d.max_json_values),
            max_memory: env_size(ENV_MAX_MEMORY)?.unwrap_or(d.max_memory),
        })
    }

    /// Makes `limits` what [`Limits::default`] returns in this process from now on, for
    /// the reads that take no [`Limits`] of their own (a package opened with
    /// [`Package::open`](crate::delta::format::Package::open), the check of a package just
    /// written, an OCI layout's index). The command line sets it once from its options.
    pub fn set_process_default(limits: Limits) {
        let mut guard = PROCESS_LIMITS
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *guard = Some(limits);
    }
}

/// What [`Limits::set_process_default`] set.
static PROCESS_LIMITS: std::sync::RwLock<Option<Limits>> = std::sync::RwLock::new(None);

impl Default for Limits {
    /// The limits set by [`Limits::set_process_default`] if any, else
    /// [`Limits::from_env`]; a variable that does not parse is logged and its built-in
    /// value used (call [`Limits::from_env`] first to have it refused instead).
    fn default() -> Self {
        let set = PROCESS_LIMITS
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if let Some(l) = set {
            return l;
        }
        Limits::from_env().unwrap_or_else(|e| {
            tracing::warn!("{e}; using the built-in limits");
            Limits::DEFAULT
        })
    }
}

/// Reads a whole JSON file from outside the library's control (a part of an existing
/// layout, opened by the caller), refusing one larger than `max` bytes (a
/// [`Limits::max_json_size`]). The read itself stops past `max`: the file's metadata is
/// not believed, so that a file that keeps growing cannot make it read until memory runs
/// out.
pub(crate) fn read_json_file(file: impl Read, path: &std::path::Path, max: u64) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    let n = file
        .take(max.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(|e| Error::io(path, e))?;
    if n as u64 > max {
        return Err(Error::LimitExceeded {
            what: path.display().to_string(),
            limit: "max JSON document size".into(),
            max,
            found: n as u64,
            option: ENV_MAX_JSON_SIZE.into(),
        });
    }
    Ok(buf)
}

impl Limits {
    /// Checks a manifest's layer list against the config's `rootfs.diff_ids` and the
    /// layer limit; `file` names the manifest in errors.
    pub fn check_layers(&self, file: &str, manifest_layers: usize, diff_ids: usize) -> Result<()> {
        if manifest_layers != diff_ids {
            return Err(Error::LayerCountMismatch {
                file: file.to_string(),
                manifest_layers,
                diff_ids,
            });
        }
        if manifest_layers > self.max_layers {
            return Err(Error::LimitExceeded {
                what: file.to_string(),
                limit: "max layers".into(),
                max: self.max_layers as u64,
                found: manifest_layers as u64,
                option: ENV_MAX_LAYERS.into(),
            });
        }
        Ok(())
    }

    /// Refuses an entry (member, layer, blob) of `size` bytes above [`Self::max_entry_size`].
    pub fn check_entry_size(&self, what: &str, size: u64) -> Result<()> {
        if size > self.max_entry_size {
            return Err(Error::LimitExceeded {
                what: what.to_string(),
                limit: "max entry size".into(),
                max: self.max_entry_size,
                found: size,
                option: ENV_MAX_ENTRY_SIZE.into(),
            });
        }
        Ok(())
    }

    /// Refuses a stream that decompressed `out` bytes from `input` compressed bytes, when
    /// `out` is past [`Self::max_entry_size`], or past [`Self::expansion_check_after`] with
    /// a ratio above [`Self::max_expansion_ratio`].
    pub fn check_expansion(&self, what: &str, input: u64, out: u64) -> Result<()> {
        self.check_entry_size(what, out)?;
        if out > self.expansion_check_after {
            let ratio = out / input.max(1);
            if ratio > self.max_expansion_ratio {
                return Err(Error::LimitExceeded {
                    what: format!("{what} ({out} bytes from {input} compressed bytes)"),
                    limit: "max expansion ratio".into(),
                    max: self.max_expansion_ratio,
                    found: ratio,
                    option: ENV_MAX_EXPANSION_RATIO.into(),
                });
            }
        }
        Ok(())
    }
}

/// Counts the bytes read through it, so that a decompressor's input can be measured.
#[derive(Clone, Default)]
pub(crate) struct Counter(Arc<std::sync::atomic::AtomicU64>);

impl Counter {
    pub(crate) fn get(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
    fn add(&self, n: usize) {
        self.0
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A reader that adds what it reads to a [`Counter`].
pub(crate) struct CountingReader<R> {
    pub(crate) inner: R,
    pub(crate) counter: Counter,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.counter.add(n);
        Ok(n)
    }
}

/// Decompressed output checked against [`Limits::check_expansion`] as it is read; `input`
/// counts the compressed bytes consumed.
pub(crate) struct ExpansionGuard<R> {
    pub(crate) inner: R,
    pub(crate) input: Counter,
    pub(crate) out: u64,
    pub(crate) limits: Limits,
    pub(crate) what: String,
}

impl<R: Read> Read for ExpansionGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.out += n as u64;
        self.limits
            .check_expansion(&self.what, self.input.get(), self.out)
            .map_err(Error::into_io)?;
        Ok(n)
    }
}

/// The value of the environment variable `name`, `None` when unset or empty; a value
/// that is not UTF-8 is refused with [`Error::InvalidOption`] naming the variable.
pub fn env_value(name: &str) -> Result<Option<String>> {
    match std::env::var(name) {
        Ok(v) if v.trim().is_empty() => Ok(None),
        Ok(v) => Ok(Some(v)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(v)) => Err(Error::InvalidOption {
            option: name.into(),
            reason: format!("{v:?}: not valid UTF-8"),
        }),
    }
}

/// The size in the environment variable `name` ([`parse_size`]), if set.
pub fn env_size(name: &str) -> Result<Option<u64>> {
    env_value(name)?.map(|v| parse_size(name, &v)).transpose()
}

/// The whole number in the environment variable `name` ([`parse_count`]), if set.
pub fn env_count(name: &str) -> Result<Option<u64>> {
    env_value(name)?.map(|v| parse_count(name, &v)).transpose()
}

fn count_to_usize(option: &str, v: u64) -> Result<usize> {
    usize::try_from(v).map_err(|_| Error::InvalidOption {
        option: option.into(),
        reason: format!("{v}: too large for this machine"),
    })
}

/// Parses a size in bytes: a whole number, optionally followed by a unit `K`, `M`, `G` or
/// `T` (any case), with or without `i` and a final `B`: `4G`, `4g`, `4GiB` and `4294967296`
/// are the same size. Every unit is a power of 1024, as for `docker run --memory` (so `K`
/// is 1024, not 1000). `option` names where the value came from (the option or the
/// environment variable) in the [`Error::InvalidOption`] that refuses anything else.
pub fn parse_size(option: &str, value: &str) -> Result<u64> {
    let v = value.trim();
    let bad = |why: &str| Error::InvalidOption {
        option: option.into(),
        reason: format!("{v:?}: {why}"),
    };
    let digits = v.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(bad(
            "expected a size in bytes: a whole number, optionally with a unit K, M, G, T \
             (or Ki, Mi, Gi, Ti; all powers of 1024), e.g. 512M or 4G",
        ));
    }
    let (number, unit) = v.split_at(digits);
    let number: u64 = number.parse().map_err(|_| bad("too large"))?;
    let unit = unit.trim_start();
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "ki" | "kib" => 10,
        "m" | "mb" | "mi" | "mib" => 20,
        "g" | "gb" | "gi" | "gib" => 30,
        "t" | "tb" | "ti" | "tib" => 40,
        _ => {
            return Err(bad(
                "unknown unit; use K, M, G or T (or Ki, Mi, Gi, Ti; all powers of 1024)",
            ))
        }
    };
    number
        .checked_mul(1u64 << shift)
        .ok_or_else(|| bad("too large (more than 16 EiB)"))
}

/// Parses a count (layers, values, threads, a ratio): a whole number, refused with an
/// [`Error::InvalidOption`] naming `option` when it is anything else.
pub fn parse_count(option: &str, value: &str) -> Result<u64> {
    let v = value.trim();
    v.parse().map_err(|_| Error::InvalidOption {
        option: option.into(),
        reason: format!("{v:?}: expected a whole number"),
    })
}

/// How to open an image.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// The platform to choose from a multi-platform index (default: the host's).
    pub platform: Option<Platform>,
    /// Safety limits.
    pub limits: Limits,
    /// Timeouts of the conversations with a daemon (`docker-daemon:` images); `None`:
    /// [`Timeouts::from_env`](crate::Timeouts::from_env).
    pub timeouts: Option<crate::Timeouts>,
    /// How registries (`docker://` images) are reached: credentials, TLS.
    pub registry: registry::RegistryOptions,
}

/// A readable image.
pub trait ImageSource: Send + Sync {
    /// The image's metadata, read and checked when the source was opened.
    fn image(&self) -> &Image;

    /// Opens the stored blob of layer `index` as it is (possibly compressed), unverified.
    fn open_blob(&self, index: usize) -> Result<Box<dyn Read + Send + '_>>;

    /// Where layer `index`'s stored blob lies in a file, for positioned reads, when the
    /// source keeps it in one (`None` otherwise). The bytes are unverified and may be
    /// compressed: see [`Layer::compression`](crate::image::Layer).
    fn layer_section(&self, index: usize) -> Result<Option<store::FileSection>> {
        let _ = index;
        Ok(None)
    }

    /// Opens layer `index` as a stream of its uncompressed tar. The stream verifies the
    /// stored blob's digest (when known) and the diff_id when it reaches its end, and fails
    /// with [`Error::DigestMismatch`] naming the layer if either is wrong.
    fn open_layer(&self, index: usize) -> Result<LayerReader<'_>> {
        let layer = self.layer(index)?;
        let blob = self.open_blob(index)?;
        LayerReader::with_limits(
            blob,
            layer.clone(),
            self.describe_layer(layer),
            &self.limits(),
        )
    }

    /// Where layer `index`'s stored blob lies in a registry, when the image was read from
    /// one (`None` otherwise).
    fn registry_blob(&self, index: usize) -> Option<RegistryBlob> {
        let _ = index;
        None
    }

    /// The safety limits this source was opened with.
    fn limits(&self) -> Limits {
        Limits::default()
    }

    /// A description of a layer for messages: reference, index and location.
    fn describe_layer(&self, layer: &Layer) -> String {
        format!(
            "{} layer {} ({})",
            self.image().reference,
            layer.index,
            layer.location
        )
    }

    /// The layer at `index`.
    fn layer(&self, index: usize) -> Result<&Layer> {
        self.image().layers.get(index).ok_or_else(|| {
            Error::Other(format!(
                "{}: no layer {index} (the image has {})",
                self.image().reference,
                self.image().layers.len()
            ))
        })
    }

    /// Reads a whole layer (uncompressed, verified) into memory, refusing layers larger than
    /// `max` bytes with [`Error::LimitExceeded`].
    fn read_layer(&self, index: usize, max: u64) -> Result<Vec<u8>> {
        let mut r = self.open_layer(index)?;
        // Sized up front when the size is known, so that growing the buffer never holds
        // the layer twice; a claimed size is still only a hint (the reader verifies it).
        let hint = self.layer(index)?.uncompressed_size.unwrap_or(0).min(max);
        let mut buf = Vec::with_capacity(usize::try_from(hint).unwrap_or(0));
        let n = (&mut r)
            .take(max.saturating_add(1))
            .read_to_end(&mut buf)
            .map_err(|e| Error::io(r.description(), e))?;
        if n as u64 > max {
            return Err(Error::LimitExceeded {
                what: r.description().to_string(),
                limit: "max in-memory layer size".into(),
                max,
                found: n as u64,
                option: "DOCKER_DELTA_MAX_MEMORY".into(),
            });
        }
        // Read to the end so that the stream verifies its digests.
        io::copy(&mut r, &mut io::sink()).map_err(|e| Error::io(r.description(), e))?;
        Ok(buf)
    }

    /// Reads every layer to its end, verifying digests, and reports what was found.
    fn verify_layers(&self) -> Result<Vec<LayerCheck>> {
        (0..self.image().layers.len())
            .map(|i| {
                let mut r = self.open_layer(i)?;
                io::copy(&mut r, &mut io::sink()).map_err(|e| Error::io(r.description(), e))?;
                r.check()
            })
            .collect()
    }
}

/// Opens the image a reference names.
pub fn open(reference: &ImageReference, options: &OpenOptions) -> Result<Box<dyn ImageSource>> {
    tracing::debug!(reference = %reference, transport = %reference.transport(), "opening image");
    // An archive transport given a directory would fail reading it ("Is a directory").
    if let ImageReference::DockerArchive { path, .. } | ImageReference::OciArchive { path, .. } =
        reference
    {
        if path.is_dir() {
            let hint = if path.join("index.json").is_file() {
                format!("; it is an OCI layout: oci:{}", path.display())
            } else {
                String::new()
            };
            return Err(Error::InvalidLayout {
                path: path.clone(),
                reason: format!(
                    "is a directory; {}: needs an archive file{hint}",
                    reference.transport()
                ),
            });
        }
    }
    match reference {
        ImageReference::DockerArchive { .. } => Ok(Box::new(docker_archive::DockerArchive::open(
            reference, options,
        )?)),
        ImageReference::Oci { .. } | ImageReference::OciArchive { .. } => {
            Ok(Box::new(oci::OciLayout::open(reference, options)?))
        }
        ImageReference::DockerDaemon { .. } => Ok(Box::new(docker_daemon::DockerDaemon::open(
            reference, options,
        )?)),
        ImageReference::Docker { .. } => {
            Ok(Box::new(registry::RegistryImage::open(reference, options)?))
        }
    }
}

/// A writable image: where an image is written, layer by layer (base first), then its
/// config. Made by [`create_sink`] from a reference, or by a transport's own constructor
/// (a docker-archive streamed to a writer, a daemon reached through a given client).
///
/// A sink writes nothing before the first [`add_layer`](ImageSink::add_layer) (or
/// [`finish`](ImageSink::finish)), so that a run refused before that leaves no trace, and
/// nothing appears at its destination unless [`finish`](ImageSink::finish) succeeds.
pub trait ImageSink {
    /// The name the destination reference gives the image (`docker-archive:out.tar:NAME:TAG`,
    /// `oci:DIR:REF`, `docker-daemon:NAME:TAG`), if any; an invalid one is an error where
    /// the transport needs a valid one.
    fn name(&self) -> Result<Option<ImageName>> {
        Ok(None)
    }

    /// Checks, writing nothing, that the image `image_id` can be written here: called
    /// before any work, dry runs included.
    fn check(&self, image_id: &Digest) -> Result<()> {
        let _ = image_id;
        Ok(())
    }

    /// A directory on the output's filesystem for temporary files.
    fn spool_dir(&self) -> std::path::PathBuf {
        std::env::temp_dir()
    }

    /// Adds the next layer (base first): `size` bytes from `data` that must hash to
    /// `diff_id`, refused ([`Error::SizeMismatch`], [`Error::DigestMismatch`]) otherwise. A
    /// layer seen before (same diff_id) is stored once.
    fn add_layer(&mut self, diff_id: &Digest, size: u64, data: &mut dyn Read) -> Result<()>;

    /// [`ImageSink::add_layer`] for a layer taken unchanged from the base image, whose
    /// stored blob lies in a registry at `origin` (when the base was read from one): a
    /// registry output may mount or reuse that blob rather than upload it again.
    fn add_base_layer(
        &mut self,
        diff_id: &Digest,
        size: u64,
        data: &mut dyn Read,
        origin: Option<&RegistryBlob>,
    ) -> Result<()> {
        let _ = origin;
        self.add_layer(diff_id, size, data)
    }

    /// Writes the config (whose digest is the image ID), the manifests and index, named
    /// `name` if given, and makes the image appear at the destination.
    fn finish(self: Box<Self>, config: &[u8], name: Option<&ImageName>) -> Result<WrittenImage>;
}

/// Where a layer's stored blob lies in a registry ([`ImageSource::registry_blob`]).
#[derive(Debug, Clone)]
pub struct RegistryBlob {
    /// The registry (`host[:port]`).
    pub registry: String,
    /// The repository holding the blob.
    pub repository: String,
    /// The blob's digest.
    pub digest: Digest,
    /// The blob's size.
    pub size: u64,
    /// How the blob is compressed.
    pub compression: crate::compression::Compression,
}

/// What an [`ImageSink`] wrote.
#[derive(Debug)]
pub struct WrittenImage {
    /// The file or directory written (none for a stream or a daemon).
    pub path: Option<std::path::PathBuf>,
    /// Where the image went, for messages: the path, the stream, the daemon.
    pub destination: String,
    /// The daemon the image was loaded into, if it went into one.
    pub loaded_into: Option<String>,
    /// The registry reference the image was pushed to (`docker://HOST/NAME:TAG`), if it
    /// went to one.
    pub pushed_to: Option<String>,
    /// The digest of the OCI image manifest written for the image. It is what Docker's
    /// containerd image store reports as the image's `Id` after `docker load` (the classic
    /// store reports the config digest).
    pub manifest_digest: Digest,
    /// A failure after the image was written, which does not undo it: the daemon loaded
    /// the image but could not tag it ([`Error::TagFailed`]).
    pub tag_error: Option<Error>,
}

/// How to write an image ([`create_sink`]).
#[derive(Clone, Copy)]
pub struct SinkOptions<'a> {
    /// Replace an existing output (an archive, or an existing ref of an OCI layout).
    pub force: bool,
    /// Timeouts of the conversations with a daemon (`docker-daemon:` outputs); `None`:
    /// [`Timeouts::from_env`](crate::Timeouts::from_env).
    pub timeouts: Option<crate::Timeouts>,
    /// Where a daemon's load reports its progress ([`Phase::Load`](crate::progress::Phase)).
    pub progress: &'a dyn crate::progress::Progress,
    /// How a `docker://` output is reached; `None`: anonymously, TLS verified.
    pub registry: Option<&'a registry::RegistryOptions>,
    /// How layers pushed to a `docker://` output are compressed (gzip or zstd).
    pub layer_compression: crate::compression::Compression,
}

impl Default for SinkOptions<'_> {
    fn default() -> Self {
        SinkOptions {
            force: false,
            timeouts: None,
            progress: &crate::progress::NoProgress,
            registry: None,
            layer_compression: crate::compression::Compression::Gzip,
        }
    }
}

/// The writer for the destination a reference names: a `docker-archive:` or
/// `oci-archive:` file, an `oci:` layout (new, or an existing one the image is added to),
/// or the Docker daemon (`docker-daemon:[NAME:TAG]`, at `DOCKER_HOST`), which is reached
/// here (a daemon that does not answer is refused now) and loads the image when the sink
/// finishes. Nothing is written yet.
pub fn create_sink<'a>(
    dest: &ImageReference,
    options: &SinkOptions<'a>,
) -> Result<Box<dyn ImageSink + 'a>> {
    Ok(match dest {
        ImageReference::DockerArchive { .. } => Box::new(
            docker_archive::sink::DockerArchiveSink::create(dest, options.force)?,
        ),
        ImageReference::Oci { .. } | ImageReference::OciArchive { .. } => {
            Box::new(oci::sink::OciSink::create(dest, options.force)?)
        }
        ImageReference::DockerDaemon { name } => {
            let client = match options.timeouts {
                Some(t) => crate::daemon::DockerClient::from_env_with(t)?,
                None => crate::daemon::DockerClient::from_env()?,
            };
            Box::new(docker_daemon::sink::DaemonSink::new(
                client,
                Some(name.as_str()).filter(|n| !n.is_empty()),
                options.progress,
            )?)
        }
        ImageReference::Docker { .. } => {
            let default = registry::RegistryOptions::default();
            Box::new(registry::RegistrySink::create(
                dest,
                options.registry.unwrap_or(&default),
                options.layer_compression,
            )?)
        }
    })
}

/// Copies the image `source` holds into `sink`, named `name`: every layer is read
/// uncompressed into a nameless spool in the sink's spool directory, verified (blob digest
/// and diff_id), then given to the sink (a layer whose blob lies in a registry, as the
/// sink may reuse it). What `pull` does when no delta fits.
pub fn copy_image(
    source: &dyn ImageSource,
    mut sink: Box<dyn ImageSink + '_>,
    name: Option<&ImageName>,
    progress: &dyn crate::progress::Progress,
) -> Result<WrittenImage> {
    use crate::progress::{Phase, Tracker};
    let image = source.image();
    sink.check(&image.config_digest)?;
    let total = image
        .layers
        .iter()
        .fold(0u64, |t, l| t.saturating_add(l.size));
    let phase = if source.registry_blob(0).is_some() {
        Phase::Download
    } else {
        Phase::Rebuild
    };
    let mut tracker = Tracker::start(progress, phase, total)?;
    for layer in &image.layers {
        let mut reader = source.open_layer(layer.index)?;
        let spool = crate::temp::spool_in(&sink.spool_dir())?;
        let mut out = io::BufWriter::with_capacity(1 << 20, spool);
        let size =
            io::copy(&mut reader, &mut out).map_err(|e| Error::io(reader.description(), e))?;
        let mut file = out
            .into_inner()
            .map_err(|e| Error::io(reader.description(), e.into_error()))?;
        drop(reader);
        io::Seek::seek(&mut file, io::SeekFrom::Start(0)).map_err(|e| Error::io("spool", e))?;
        let origin = source.registry_blob(layer.index);
        sink.add_base_layer(
            &layer.diff_id,
            size,
            &mut io::BufReader::with_capacity(1 << 20, file),
            origin.as_ref(),
        )?;
        tracker.advance(layer.size)?;
    }
    tracker.finish()?;
    sink.finish(&image.config, name)
}

/// What is known of an image besides its reference: what a delta package records of the
/// image it was made against.
#[derive(Debug, Clone, Copy)]
pub struct KnownImage<'a> {
    /// The image ID (config digest).
    pub image_id: &'a Digest,
    /// Its layers' diff_ids, base first.
    pub diff_ids: &'a [Digest],
    /// Its tags where it was read.
    pub repo_tags: &'a [String],
    /// Its platform.
    pub platform: &'a Platform,
}

/// Opens the image `reference` names, knowing what it should be. An image in the Docker
/// daemon named by the known image ID (`docker-daemon:sha256:...`) is found by it whichever
/// image store the daemon uses ([`DockerDaemon::find`](docker_daemon::DockerDaemon::find):
/// with the containerd store, image IDs are manifest digests). Any other reference opens
/// as with [`open`], a multi-platform index resolved for the known platform unless
/// `options` choose one (an image known for arm64 opens as such on an amd64 machine).
pub fn open_known(
    reference: &ImageReference,
    known: &KnownImage<'_>,
    options: &OpenOptions,
) -> Result<Box<dyn ImageSource>> {
    match reference {
        ImageReference::DockerDaemon { name }
            if Digest::parse(name).is_ok_and(|d| d == *known.image_id) =>
        {
            let client = docker_daemon::client_for(options)?;
            Ok(Box::new(docker_daemon::DockerDaemon::find(
                &client,
                known.image_id,
                known.diff_ids,
                known.repo_tags,
                known.platform,
                options,
            )?))
        }
        _ => {
            let options = OpenOptions {
                platform: options.platform.clone().or(Some(known.platform.clone())),
                ..options.clone()
            };
            open(reference, &options)
        }
    }
}

/// The uncompressed stream of one layer, verified at its end.
pub struct LayerReader<'a> {
    decoder: Box<dyn Read + Send + 'a>,
    blob: SharedHash,
    diff_hasher: Sha256,
    uncompressed: u64,
    layer: Layer,
    description: String,
    done: bool,
}

/// The blob side's digest and size, published by [`BlobHasher`] when the blob ends.
#[derive(Clone, Default)]
struct SharedHash(Arc<Mutex<Option<(Digest, u64)>>>);

/// Hashes the stored (compressed) blob and publishes the result when it ends.
struct BlobHasher<'a> {
    inner: HashingReader<Box<dyn Read + Send + 'a>>,
    out: SharedHash,
}

impl Read for BlobHasher<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            if let Ok(mut slot) = self.out.0.lock() {
                *slot = Some((self.inner.digest_so_far(), self.inner.count()));
            }
        }
        Ok(n)
    }
}

impl<'a> LayerReader<'a> {
    /// Wraps a stored blob: detects its compression and prepares verification, with the
    /// default [`Limits`].
    pub fn new(blob: Box<dyn Read + Send + 'a>, layer: Layer, description: String) -> Result<Self> {
        Self::with_limits(blob, layer, description, &Limits::default())
    }

    /// Wraps a stored blob: detects its compression and prepares verification. The
    /// uncompressed stream is refused past [`Limits::max_entry_size`] or, for a compressed
    /// blob, past [`Limits::max_expansion_ratio`].
    pub fn with_limits(
        blob: Box<dyn Read + Send + 'a>,
        layer: Layer,
        description: String,
        limits: &Limits,
    ) -> Result<Self> {
        let shared = SharedHash::default();
        let input = Counter::default();
        let counted: Box<dyn Read + Send + 'a> = Box::new(CountingReader {
            inner: blob,
            counter: input.clone(),
        });
        let hasher = BlobHasher {
            inner: HashingReader::new(counted),
            out: shared.clone(),
        };
        let mut buffered = BufReader::with_capacity(256 * 1024, hasher);
        let compression =
            Compression::sniff(&mut buffered).map_err(|e| Error::io(&description, e))?;
        if compression != layer.compression {
            tracing::debug!(layer = %description, found = compression.name(), "blob compression differs from what was recorded");
        }
        let decoder = compression
            .decoder(buffered)
            .map_err(|e| Error::Other(format!("{description}: {e}")))?;
        let decoder: Box<dyn Read + Send + 'a> = Box::new(ExpansionGuard {
            inner: decoder,
            input,
            out: 0,
            limits: limits.clone(),
            what: format!("{description} (uncompressed)"),
        });
        Ok(LayerReader {
            decoder,
            blob: shared,
            diff_hasher: Sha256::new(),
            uncompressed: 0,
            layer,
            description,
            done: false,
        })
    }

    /// The layer being read.
    pub fn layer(&self) -> &Layer {
        &self.layer
    }

    /// The description used in messages.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// After the stream was read to its end: the verified digests and sizes.
    pub fn check(&self) -> Result<LayerCheck> {
        let Some((digest, size)) = self.blob.0.lock().ok().and_then(|s| s.clone()) else {
            return Err(Error::Other(format!(
                "{}: layer was not read to its end",
                self.description
            )));
        };
        Ok(LayerCheck {
            digest,
            size,
            uncompressed_size: self.uncompressed,
        })
    }

    fn verify(&mut self) -> Result<()> {
        // Drain what the decompressor left of the blob (trailing bytes after the last
        // member), so that the blob digest covers the whole blob.
        let mut rest = [0u8; 8192];
        loop {
            let n = self
                .decoder
                .read(&mut rest)
                .map_err(|e| Error::io(&self.description, e))?;
            if n == 0 {
                break;
            }
            self.diff_hasher.update(&rest[..n]);
            self.uncompressed += n as u64;
        }
        let check = self.check()?;
        // For an uncompressed blob recorded under its diff_id, the diff_id check below
        // says the same thing in the user's terms.
        let blob_is_diff = self.layer.digest.as_ref() == Some(&self.layer.diff_id);
        if let Some(expected) = self.layer.digest.as_ref().filter(|_| !blob_is_diff) {
            if *expected != check.digest {
                return Err(Error::DigestMismatch {
                    what: format!("{} blob", self.description),
                    expected: expected.to_string(),
                    found: check.digest.to_string(),
                });
            }
        }
        if check.size != self.layer.size {
            return Err(Error::SizeMismatch {
                what: format!("{} blob", self.description),
                expected: self.layer.size,
                found: check.size,
            });
        }
        let diff_id = Digest::from_sha256(self.diff_hasher.clone().finalize().into());
        if diff_id != self.layer.diff_id {
            return Err(Error::DigestMismatch {
                what: format!("{} diff_id", self.description),
                expected: self.layer.diff_id.to_string(),
                found: diff_id.to_string(),
            });
        }
        Ok(())
    }
}

impl Read for LayerReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        let n = self.decoder.read(buf).map_err(|e| {
            // Our own errors (a limit, a nested verification) travel as they are.
            if e.get_ref().is_some_and(|i| i.is::<Error>()) {
                e
            } else {
                io::Error::new(e.kind(), format!("{}: {e}", self.description))
            }
        })?;
        if n == 0 && !buf.is_empty() {
            self.done = true;
            self.verify().map_err(Error::into_io)?;
            return Ok(0);
        }
        self.diff_hasher.update(&buf[..n]);
        self.uncompressed += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_powers_of_1024() {
        for (text, want) in [
            ("0", 0),
            ("4096", 4096),
            (" 12 ", 12),
            ("1K", 1 << 10),
            ("1k", 1 << 10),
            ("1KiB", 1 << 10),
            ("512M", 512 << 20),
            ("512Mi", 512 << 20),
            ("512 MiB", 512 << 20),
            ("4G", 4 << 30),
            ("4gb", 4 << 30),
            ("4Gi", 4 << 30),
            ("2T", 2 << 40),
            ("2Ti", 2 << 40),
            ("7B", 7),
        ] {
            assert_eq!(parse_size("X", text).unwrap(), want, "{text}");
        }
        for bad in [
            "",
            "G",
            "4X",
            "4 G G",
            "-1",
            "1.5G",
            "4Gx",
            "99999999999T",
            "abc",
        ] {
            let e = parse_size("DOCKER_DELTA_MAX_MEMORY", bad).unwrap_err();
            assert!(matches!(e, Error::InvalidOption { .. }), "{bad}: {e:?}");
            let msg = e.to_string();
            assert!(msg.contains("DOCKER_DELTA_MAX_MEMORY"), "{msg}");
            assert!(msg.contains(&format!("{:?}", bad.trim())), "{msg}");
        }
    }

    #[test]
    fn counts_are_whole_numbers() {
        assert_eq!(parse_count("X", "12").unwrap(), 12);
        for bad in ["", "abc", "1K", "-3", "2.5"] {
            let e = parse_count("DOCKER_DELTA_MAX_LAYERS", bad).unwrap_err();
            assert!(e.to_string().contains("DOCKER_DELTA_MAX_LAYERS"), "{e}");
        }
    }
}
