//! Applying a delta package: checking the base image, rebuilding every layer exactly, and
//! writing the new image.
//!
//! Order of work, so that a wrong input is refused before anything is written:
//! 1. the package's structure and header checksum ([`Package::open`]);
//! 2. the base image: every old layer the package needs must be in it (matched by diff_id);
//! 3. the payload checksum;
//! 4. the config, whose digest must be the new image ID;
//! 5. each layer, rebuilt and verified against its diff_id as it is written;
//! 6. only then the output takes its name.

use std::collections::HashMap;

use std::path::PathBuf;

use crate::delta::codec::{self, Codec};
use crate::delta::files::{self, LayerData};
use crate::delta::format::{ImageIdentity, LayerSource, Package};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::progress::{NoProgress, Phase, Progress, Tracker};
use crate::reference::ImageReference;
use crate::report::{ImageSummary, PackageLayer};
use crate::transport::docker_archive::sink::DockerArchiveSink;
use crate::transport::{ImageName, ImageSink, ImageSource, SinkOptions};

/// Options for [`apply`].
pub struct ApplyOptions<'a> {
    /// The name to give the image (default: the tag in the output reference, else the new
    /// image's own tag recorded in the package).
    pub name: Option<ImageName>,
    /// Overwrite an existing output archive.
    pub force: bool,
    /// Check everything, write nothing.
    pub dry_run: bool,
    /// The memory bound of the run, in bytes (`DOCKER_DELTA_MAX_MEMORY`, default 512 MiB):
    /// a whole-layer delta is decoded only within it (the bound create kept to, see
    /// `CreateOptions::max_layer_memory`).
    pub max_layer_memory: u64,
    /// Progress sink.
    pub progress: &'a dyn Progress,
    /// How a `docker://` output is reached: credentials, TLS (the command's `--dest-*`
    /// options, or the global ones).
    pub registry: crate::transport::registry::RegistryOptions,
    /// How layers pushed to a `docker://` output are compressed: gzip (the default, as
    /// skopeo; what every Docker pulls) or zstd (smaller; Docker 23 and later).
    pub layer_compression: crate::compression::Compression,
}

impl Default for ApplyOptions<'_> {
    fn default() -> Self {
        ApplyOptions {
            name: None,
            force: false,
            dry_run: false,
            max_layer_memory: crate::delta::create::default_max_layer_memory(),
            progress: &NoProgress,
            registry: Default::default(),
            layer_compression: crate::compression::Compression::Gzip,
        }
    }
}

/// The `apply_report` document: what [`apply`] did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ApplyReport {
    /// [`SCHEMA_VERSION`](crate::report::SCHEMA_VERSION).
    pub schema_version: u32,
    /// Always `apply_report`.
    pub document: &'static str,
    /// Whether this was a dry run (nothing written, no layer rebuilt).
    pub dry_run: bool,
    /// Where the image was written (null for a dry run, a stream, and after a load: the
    /// archive loaded was temporary).
    pub output: Option<PathBuf>,
    /// The Docker daemon the image was loaded into (`apply --load`,
    /// `-o docker-daemon:NAME:TAG`), else null.
    pub loaded_into: Option<String>,
    /// The registry reference the image was pushed to (`-o docker://HOST/NAME:TAG`),
    /// else null.
    pub pushed_to: Option<String>,
    /// The rebuilt image's ID (= the new image's ID).
    pub image_id: Digest,
    /// The digest of the OCI manifest written with the image (null for a dry run): the
    /// image's `Id` in Docker's containerd image store, where `Id` is not the config digest.
    pub manifest_digest: Option<Digest>,
    /// The name it was given.
    pub name: Option<String>,
    /// The base image used (null for a full package applied without one).
    pub base: Option<ImageSummary>,
    /// Per layer of the new image: how it was (or, in a dry run, would be) rebuilt.
    pub layers: Vec<PackageLayer>,
}

/// The name a package would give its image: the first recorded tag of the form `name:tag`.
pub fn default_name(target: &ImageIdentity) -> Option<ImageName> {
    target
        .repo_tags
        .iter()
        .filter(|t| t.contains(':') || t.contains('/'))
        .find_map(|t| ImageName::parse(t).ok())
}

/// Describes an image identity for messages: `sha256:<id> (tag, ...)`.
pub fn describe(id: &ImageIdentity) -> String {
    if id.repo_tags.is_empty() {
        id.image_id.to_string()
    } else {
        format!("{} ({})", id.image_id, id.repo_tags.join(", "))
    }
}

/// Checks that `base` holds every old layer the package needs and maps package old-layer
/// indexes to base layer indexes.
pub fn check_base(
    package: &Package,
    base: Option<&dyn ImageSource>,
) -> Result<HashMap<usize, usize>> {
    let header = &package.header;
    let needed: Vec<usize> = header
        .target
        .layers
        .iter()
        .flat_map(|l| l.source.old_layers())
        .collect();
    let mut map = HashMap::new();
    let Some(recorded) = &header.base else {
        return Ok(map);
    };
    if needed.is_empty() {
        return Ok(map);
    }
    let Some(base) = base else {
        return Err(Error::Other(format!(
            "{}: this delta needs its base image {}; give it with --base",
            package.path().display(),
            describe(recorded)
        )));
    };
    let image = base.image();
    let offered = crate::delta::create::identity(image);
    for &o in &needed {
        let want = &recorded.diff_ids[o];
        match image.layers.iter().position(|l| &l.diff_id == want) {
            Some(b) => {
                map.insert(o, b);
            }
            None => {
                return Err(Error::WrongBaseImage {
                    expected: format!(
                        "{} (needs its layer {o}, diff_id {want})",
                        describe(recorded)
                    ),
                    found: describe(&offered),
                    reference: image.reference.to_string(),
                })
            }
        }
    }
    if offered.image_id != recorded.image_id {
        tracing::warn!(recorded = %recorded.image_id, offered = %offered.image_id, "the base image is not the one the delta was made from, but it has every layer the delta needs");
    }
    Ok(map)
}

/// Rebuilds the package's image from `base` and writes it to `dest`: any transport's
/// destination ([`create_sink`](crate::transport::create_sink)), a `docker-daemon:NAME:TAG`
/// included. The image is then in the daemon even if tagging it fails, which is returned
/// as the error ([`Error::TagFailed`]); [`apply_into`] returns it beside the report.
pub fn apply(
    package: &Package,
    base: Option<&dyn ImageSource>,
    dest: &ImageReference,
    options: &ApplyOptions<'_>,
) -> Result<ApplyReport> {
    let sink = crate::transport::create_sink(
        dest,
        &SinkOptions {
            force: options.force,
            timeouts: None,
            progress: options.progress,
            registry: Some(&options.registry),
            layer_compression: options.layer_compression,
        },
    )?;
    match apply_into(package, base, sink, options)? {
        (_, Some(e)) => Err(e),
        (report, None) => Ok(report),
    }
}

/// Rebuilds the package's image from `base` and streams it to `out` as a docker-archive
/// (what `docker load` reads from its standard input). Every layer is verified as it is
/// written; `index.json` and `manifest.json` come last, so that a stream cut by a failure
/// (a damaged base layer found midway) holds no image a loader would take: the caller
/// must end the stream on an error, never end it as if it were complete. `describe`
/// names the stream in errors (e.g. "standard output"). The report has no `output`.
pub fn apply_to_stream(
    package: &Package,
    base: Option<&dyn ImageSource>,
    out: Box<dyn std::io::Write + Send>,
    describe: &str,
    options: &ApplyOptions<'_>,
) -> Result<ApplyReport> {
    let sink = Box::new(DockerArchiveSink::stream(out, describe));
    apply_into(package, base, sink, options).map(|(report, _)| report)
}

/// Rebuilds the package's image from `base` and writes it to `sink`, whichever transport
/// it writes to ([`create_sink`](crate::transport::create_sink), or a transport's own
/// constructor). Returns the report and, beside it, a failure met after the image was
/// written, which does not undo it: a daemon that loaded the image but could not tag it
/// ([`Error::TagFailed`]).
///
/// Nothing is written before the inputs checked out: the sink's destination is checked
/// (dry run or not) before any work, and opened only once the config verified.
pub fn apply_into(
    package: &Package,
    base: Option<&dyn ImageSource>,
    sink: Box<dyn ImageSink + '_>,
    options: &ApplyOptions<'_>,
) -> Result<(ApplyReport, Option<Error>)> {
    let header = &package.header;
    let target = &header.target;
    // A name written into the output reference (`docker-archive:out.tar:NAME:TAG`) must
    // be a valid image name, as `--tag` must: refused, not dropped for the old name.
    let named_in_reference = sink.name()?;
    let base_map = check_base(package, base)?;
    // Refuse an output that cannot be written before any work, dry run or not (the
    // sink checks again when it starts).
    sink.check(&target.identity.image_id)?;
    let name = options
        .name
        .clone()
        .or(named_in_reference)
        .or_else(|| default_name(&target.identity));
    // The payload's lanes start decompressing (into memory, a few MiB ahead) while the
    // payload's checksum is verified; nothing is read from them before it is.
    let mut blobs = (!options.dry_run).then(|| package.blobs()).transpose()?;
    if let Some(b) = &mut blobs {
        // Every blob ends in the config (checked against the image ID below) or in a layer
        // checked against its diff_id as it is written: hashing the blobs too would only
        // repeat those checks.
        b.check_digests(false);
    }
    let mut verify = Tracker::start(options.progress, Phase::Verify, package.payload_len)?;
    package.verify_payload()?;
    verify.advance(package.payload_len)?;
    verify.finish()?;

    let layers = crate::report::package_layers(package);
    let report = |output, loaded_into, pushed_to, manifest_digest| ApplyReport {
        schema_version: crate::report::SCHEMA_VERSION,
        document: "apply_report",
        dry_run: options.dry_run,
        output,
        loaded_into,
        pushed_to,
        image_id: target.identity.image_id.clone(),
        manifest_digest,
        name: name.as_ref().map(ToString::to_string),
        base: base.map(|b| ImageSummary::of_image(b.image())),
        layers: layers.clone(),
    };
    let Some(mut blobs) = blobs else {
        return Ok((report(None, None, None, None), None));
    };
    let config = blobs.read(
        target.config_blob,
        crate::transport::Limits::default().max_json_size,
    )?;
    let found = Digest::of(&config);
    if found != target.identity.image_id {
        return Err(Error::DigestMismatch {
            what: format!("{}: config", package.path().display()),
            expected: target.identity.image_id.to_string(),
            found: found.to_string(),
        });
    }

    let mut writer = sink;
    let total = target
        .layers
        .iter()
        .fold(0u64, |t, l| t.saturating_add(l.size));
    let mut tracker = Tracker::start(options.progress, Phase::Rebuild, total)?;
    let mut cached: Option<(usize, Vec<u8>)> = None;
    // Old layers the files codec reads, opened once (in place, or spooled uncompressed).
    let mut opened: HashMap<usize, LayerData> = HashMap::new();
    for (index, entry) in target.layers.iter().enumerate() {
        let what = format!("rebuilt layer {index}");
        tracing::debug!(layer = index, method = entry.source.method(), diff_id = %entry.diff_id, "rebuilding");
        match &entry.source {
            LayerSource::Reference { old_layer } => {
                let (base, b) = base_layer(base, &base_map, *old_layer)?;
                let r = base.open_layer(b)?;
                let origin = base.registry_blob(b);
                writer
                    .add_base_layer(
                        &entry.diff_id,
                        entry.size,
                        &mut tracker.reader(r),
                        origin.as_ref(),
                    )
                    .map_err(|e| blame_base(e, Some(base), &base_map, &[*old_layer]))?;
            }
            LayerSource::Files {
                old_layers,
                blob,
                extra_blob,
                lits_blob,
            } => {
                let spool = writer.spool_dir();
                for &o in old_layers {
                    if let std::collections::hash_map::Entry::Vacant(v) = opened.entry(o) {
                        let (base, b) = base_layer(base, &base_map, o)?;
                        let (data, _) = LayerData::open(base, b, &spool, false, &mut |_| Ok(()))?;
                        v.insert(data);
                    }
                }
                let sources = old_layers
                    .iter()
                    .filter_map(|o| opened.get(o))
                    .collect::<Vec<_>>();
                // The stream and the sections it keeps apart, each from its own lane.
                let wanted = [Some(*blob), *extra_blob, *lits_blob];
                let decoders_held = std::sync::Arc::new(blobs.decoders_held());
                let mut streams = blobs
                    .open_many(&wanted.iter().flatten().copied().collect::<Vec<_>>())?
                    .into_iter();
                let mut next = |b: Option<usize>| b.and_then(|_| streams.next());
                let stream = next(Some(*blob)).ok_or_else(|| {
                    Error::Other(format!("internal: {what} (blob {blob}) did not open"))
                })?;
                let apart = [next(*extra_blob), next(*lits_blob)];
                let decoder =
                    files::Decoder::with_apart(stream, apart, sources).beside(decoders_held);
                // Chunks are decoded on every core while this thread hashes and writes.
                let workers = crate::threads::threads();
                files::with_parallel_reader(decoder, workers, |r| {
                    writer.add_layer(&entry.diff_id, entry.size, &mut tracker.reader(r))
                })
                .map_err(|e| match e {
                    // Say which layer and blob a damaged stream belongs to.
                    Error::Codec { codec, reason } => Error::Codec {
                        codec,
                        reason: format!("{what} (blob {blob}): {reason}"),
                    },
                    Error::DeflaterMismatch { .. } => Error::DeflaterMismatch {
                        what: format!("{what} (blob {blob})"),
                    },
                    e => e,
                })
                .map_err(|e| blame_base(e, base, &base_map, old_layers))?;
            }
            LayerSource::Full { blob } => {
                let r = blobs.open(*blob)?;
                writer.add_layer(&entry.diff_id, entry.size, &mut tracker.reader(r))?;
            }
            LayerSource::Xdelta3 { old_layer, blob } | LayerSource::Zstd { old_layer, blob } => {
                let codec = if matches!(entry.source, LayerSource::Xdelta3 { .. }) {
                    Codec::Xdelta3
                } else {
                    Codec::Zstd
                };
                let (base, b) = base_layer(base, &base_map, *old_layer)?;
                // The same bound create kept to: a package made within it applies within it.
                let max = options.max_layer_memory;
                let over = |old_len: u64| {
                    Error::LimitExceeded {
                    what: format!("{what} (a whole-layer {codec} delta against old layer {old_layer})"),
                    limit: format!(
                        "memory bound (both layers, the delta and {codec}'s tables, beside {} MiB for the rest of the run)",
                        codec::RESERVED_MEMORY >> 20
                    ),
                    max,
                    found: codec::whole_layer_memory(codec, old_len, entry.size)
                        .saturating_add(codec::RESERVED_MEMORY),
                    option: "DOCKER_DELTA_MAX_MEMORY".into(),
                }
                };
                let cap = codec::max_source_len(codec, entry.size, max).ok_or_else(|| over(0))?;
                let source = match cached.take() {
                    Some((i, bytes)) if i == b => bytes,
                    _ => base.read_layer(b, cap).map_err(|e| match e {
                        Error::LimitExceeded { found, .. } => over(found),
                        e => e,
                    })?,
                };
                if codec::whole_layer_memory(codec, source.len() as u64, entry.size)
                    .saturating_add(codec::RESERVED_MEMORY)
                    > max
                {
                    return Err(over(source.len() as u64));
                }
                // A delta is only ever kept when smaller than its layer.
                let patch = blobs.read(*blob, entry.size.saturating_add(1 << 20))?;
                let rebuilt = codec::decode_verified(
                    codec,
                    &source,
                    &patch,
                    entry.size,
                    &entry.diff_id,
                    &what,
                )
                .map_err(|e| blame_base(e, Some(base), &base_map, &[*old_layer]))?;
                drop(patch);
                writer.add_layer(
                    &entry.diff_id,
                    entry.size,
                    &mut tracker.reader(&rebuilt[..]),
                )?;
                // Kept only for the next layer, if it is rebuilt from the same old one.
                let next_uses = target.layers.get(index + 1).is_some_and(|n| {
                    matches!(n.source, LayerSource::Xdelta3 { old_layer: x, .. }
                        | LayerSource::Zstd { old_layer: x, .. } if x == *old_layer)
                });
                if next_uses {
                    cached = Some((b, source));
                }
            }
        }
    }
    tracker.finish()?;
    let written = writer.finish(&config, name.as_ref())?;
    tracing::info!(output = %written.destination, image_id = %target.identity.image_id, manifest = %written.manifest_digest, "image rebuilt");
    Ok((
        report(
            written.path,
            written.loaded_into,
            written.pushed_to,
            Some(written.manifest_digest),
        ),
        written.tag_error,
    ))
}

/// A rebuilt layer that fails its check (or a stream that fails to decode) may be the
/// base image's fault: a base layer damaged since it was read, whose bytes the rebuild
/// used. Only then, on the failure path, the base layers used are hashed against their
/// diff_ids; a damaged one is named instead of the package, else `e` stands.
fn blame_base(
    e: Error,
    base: Option<&dyn ImageSource>,
    map: &HashMap<usize, usize>,
    old_layers: &[usize],
) -> Error {
    // Only the rebuilt layer's own failures: an error the base raised while being read
    // (a size or digest it checks itself, a limit) already names the base's layer.
    let rebuilt = match &e {
        Error::DigestMismatch { what, .. } | Error::SizeMismatch { what, .. } => {
            what.starts_with("layer ") || what.starts_with("rebuilt layer ")
        }
        Error::Codec { .. } => true,
        _ => false,
    };
    if !rebuilt {
        return e;
    }
    for &o in old_layers {
        let Ok((base, b)) = base_layer(base, map, o) else {
            continue;
        };
        let Ok(layer) = base.layer(b) else { continue };
        let found = match base.open_layer(b).and_then(|r| {
            crate::digest::digest_reader(r).map_err(|e| Error::io(base.describe_layer(layer), e))
        }) {
            Ok(found) => found,
            // Sources that verify as they read say so themselves, naming the layer.
            Err(found @ (Error::DigestMismatch { .. } | Error::SizeMismatch { .. })) => {
                tracing::debug!(error = %e, "a rebuilt layer failed; a base layer it used is damaged");
                return found;
            }
            Err(_) => continue,
        };
        if found.0 != layer.diff_id {
            tracing::debug!(error = %e, "a rebuilt layer failed; a base layer it used is damaged");
            return Error::DigestMismatch {
                what: format!(
                    "base image {} (its bytes differ from its diff_id; the package is not at fault)",
                    base.describe_layer(layer)
                ),
                expected: layer.diff_id.to_string(),
                found: found.0.to_string(),
            };
        }
    }
    e
}

fn base_layer<'b>(
    base: Option<&'b dyn ImageSource>,
    map: &HashMap<usize, usize>,
    old_layer: usize,
) -> Result<(&'b dyn ImageSource, usize)> {
    match (base, map.get(&old_layer)) {
        (Some(b), Some(i)) => Ok((b, *i)),
        _ => Err(Error::Other(format!(
            "internal: old layer {old_layer} was not mapped to the base image"
        ))),
    }
}
