//! Creating a delta package from an old and a new image.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::delta::codec::{self, Codec, EncodeOptions};
use crate::delta::files::{self, LayerData};
use crate::delta::format::{
    CompressionSpec, Header, ImageIdentity, LayerEntry, LayerSource, NewImage, Package,
    PackageWriter, PayloadCompression, LANE_DIFFERENCES, LANE_MAIN, LANE_NEW_BYTES,
    SMALL_NEW_BYTES,
};
use crate::delta::plan::{self, Action, Method, TarSummary};
use crate::error::{Error, IoContext, Result};
use crate::image::Image;
use crate::progress::{NoProgress, Phase, Progress, Tracker};
use crate::report::{name_old_layers, ImageSummary, PackageLayer, SCHEMA_VERSION};
use crate::transport::output::{open_output_dir, output_dir, output_name};
use crate::transport::spooled::SpooledBlobs;
use crate::transport::ImageSource;

/// Options for [`create`].
pub struct CreateOptions<'a> {
    /// How changed layers are encoded.
    pub method: Method,
    /// Payload compression.
    pub compression: CompressionSpec,
    /// Compression of the new bytes of `files` layers, which go to a payload lane of their
    /// own; `None` for [`CompressionSpec::new_bytes_default`] (beside xz: xz while they
    /// come to at most [`SMALL_NEW_BYTES`]).
    pub new_bytes_compression: Option<CompressionSpec>,
    /// The memory bound of the run, in bytes (`DOCKER_DELTA_MAX_MEMORY`, default 512 MiB).
    /// The whole-layer codecs hold both layers in memory: one is used only when
    /// [`codec::whole_layer_memory`] plus [`codec::RESERVED_MEMORY`] fits; otherwise the
    /// layer is shipped whole, or refused when `xdelta3` or `zstd` was asked for by name.
    pub max_layer_memory: u64,
    /// Overwrite an existing output.
    pub force: bool,
    /// Plan only: report what would be done, write nothing.
    pub dry_run: bool,
    /// Progress sink.
    pub progress: &'a dyn Progress,
}

impl Default for CreateOptions<'_> {
    fn default() -> Self {
        CreateOptions {
            method: Method::Auto,
            compression: CompressionSpec {
                algorithm: PayloadCompression::default(),
                level: PayloadCompression::default().default_level(),
            },
            new_bytes_compression: None,
            max_layer_memory: default_max_layer_memory(),
            force: false,
            dry_run: false,
            progress: &NoProgress,
        }
    }
}

/// The default for [`CreateOptions::max_layer_memory`] and `ApplyOptions::max_layer_memory`:
/// [`Limits::max_memory`](crate::transport::Limits::max_memory) of
/// [`Limits::default`](crate::transport::Limits): the process's limits when set, else
/// `DOCKER_DELTA_MAX_MEMORY` (a size such as `4G`), else [`codec::DEFAULT_MAX_MEMORY`]
/// (512 MiB).
pub fn default_max_layer_memory() -> u64 {
    crate::transport::Limits::default().max_memory
}

/// The `create_report` document: what [`create`] did (or, for a dry run, would do).
#[derive(Debug, Clone, serde::Serialize)]
pub struct CreateReport {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Always `create_report`.
    pub document: &'static str,
    /// Whether this was a dry run (nothing written).
    pub dry_run: bool,
    /// The package written (null for a dry run).
    pub package_path: Option<PathBuf>,
    /// Its size in bytes (null for a dry run).
    pub package_size: Option<u64>,
    /// The old image (null for a full package).
    pub base: Option<ImageSummary>,
    /// The new image.
    pub target: ImageSummary,
    /// Sum of the new image's layer sizes as stored in its source (usually gzip'd).
    pub target_stored_size: u64,
    /// Sum of the new image's uncompressed layer sizes.
    pub target_uncompressed_size: u64,
    /// Per layer of the new image: what `list` says of the package written (for a dry run,
    /// what is planned).
    pub layers: Vec<PackageLayer>,
}

/// Identity of an opened image.
pub fn identity(image: &Image) -> ImageIdentity {
    ImageIdentity {
        image_id: image.config_digest.clone(),
        diff_ids: image.diff_ids(),
        repo_tags: image.repo_tags.clone(),
        reference: image.reference.to_string(),
        platform: image.platform.clone(),
    }
}

/// Creates a package at `output` that rebuilds `new` from `old` (or from nothing).
pub fn create(
    old: Option<&dyn ImageSource>,
    new: &dyn ImageSource,
    output: &Path,
    options: &CreateOptions<'_>,
) -> Result<CreateReport> {
    // The output's checks come first, dry run too: a run that would be refused says so.
    // `--force` replaces a file, never a FIFO, socket or device.
    crate::fs_safe::check_output(output, "a regular file")?;
    if output.is_dir() {
        return Err(Error::InvalidLayout {
            path: output.to_path_buf(),
            reason: "is a directory; the package must be a file".into(),
        });
    }
    if output.exists() && !options.force {
        return Err(Error::OutputExists {
            path: output.to_path_buf(),
        });
    }
    let dir = output_dir(output)?;
    // A layer in a registry is downloaded once: the new image's layers are read to learn
    // their sizes and again to encode them, old layers for similarity and again to diff.
    let (new_spooled, old_spooled);
    let new: &dyn ImageSource = if SpooledBlobs::worth_it(new) {
        new_spooled = SpooledBlobs::new(new, &dir);
        &new_spooled
    } else {
        new
    };
    let old: Option<&dyn ImageSource> = match old {
        Some(o) if SpooledBlobs::worth_it(o) => {
            old_spooled = SpooledBlobs::new(o, &dir);
            Some(&old_spooled)
        }
        o => o,
    };
    let new_image = new.image();
    let old_image = old.map(|o| o.image());
    if let Some(o) = old_image {
        if o.platform != new_image.platform {
            tracing::warn!(old = %o.platform, new = %new_image.platform, "old and new images are for different platforms");
        }
    }
    let use_files = matches!(options.method, Method::Auto | Method::Files);
    // The whole-layer codecs need to know which old layer a new one resembles; the files
    // codec draws on every old layer at once.
    let scores = match (old, options.method) {
        (Some(old), Method::Xdelta3 | Method::Zstd) => {
            Some(similarity(old, new, options.progress)?)
        }
        _ => None,
    };
    let plans = plan::plan(old_image, new_image, options.method, scores.as_deref());
    for p in &plans {
        tracing::debug!(layer = p.index, diff_id = %p.diff_id, action = ?p.action, "planned");
    }
    let sizes = uncompressed_sizes(new, old)?;

    if options.dry_run {
        let base = old_image.map(identity);
        let layers = plans
            .iter()
            .map(|p| {
                let layer = &new_image.layers[p.index];
                let (method, old) = match (&p.action, options.method) {
                    (Action::Reference(o), _) => ("reference", Some(vec![*o])),
                    (Action::Full, _) | (_, Method::Layer) => ("full", Some(Vec::new())),
                    // The files codec draws on every old layer; which ones a layer uses
                    // is known only once it is encoded.
                    (Action::Delta(_), Method::Auto | Method::Files) => ("files", None),
                    (Action::Delta(o), Method::Xdelta3) => ("xdelta3", Some(vec![*o])),
                    (Action::Delta(o), Method::Zstd) => ("zstd", Some(vec![*o])),
                };
                PackageLayer {
                    index: p.index,
                    diff_id: p.diff_id.clone(),
                    method,
                    old_layers: old.map(|o| name_old_layers(o, base.as_ref())),
                    delta_size: None,
                    uncompressed_size: sizes[p.index],
                    stored_size: layer.size,
                    media_type: layer.media_type.clone(),
                }
            })
            .collect();
        return Ok(report(None, old_image, new_image, &sizes, layers));
    }

    let new_bytes_compression = options
        .new_bytes_compression
        .unwrap_or(options.compression.new_bytes_default());
    let mut writer = PackageWriter::new(options.compression, new_bytes_compression, &dir)?;
    if options.new_bytes_compression.is_none()
        && options.compression.algorithm == PayloadCompression::Xz
    {
        writer = writer.small_new_bytes(SMALL_NEW_BYTES);
    }
    let config_blob = writer.add_bytes(&new_image.config)?;
    let total: u64 = plans
        .iter()
        .filter(|p| !matches!(p.action, Action::Reference(_)))
        .map(|p| sizes[p.index])
        .sum();
    // The files codec draws on every old layer: index them all first (one pass each).
    let wants_old_layers = use_files && plans.iter().any(|p| matches!(p.action, Action::Delta(_)));
    let (old_layers, mut first_new) = match old {
        Some(old) if wants_old_layers => {
            let first = plans.iter().find(|p| matches!(p.action, Action::Delta(_)));
            open_layers_side_by_side(old, new, first.map(|p| p.index), &dir, options.progress)?
        }
        _ => (Vec::new(), None),
    };
    let mut tracker = Tracker::start(options.progress, Phase::Encode, total)?;
    let mut entries = Vec::with_capacity(plans.len());
    let mut cached_old: Option<(usize, Vec<u8>)> = None;
    for (i, p) in plans.iter().enumerate() {
        let layer = &new_image.layers[p.index];
        let size = sizes[p.index];
        if let (true, Action::Delta(_), false) = (use_files, &p.action, old_layers.is_empty()) {
            let olds = &old_layers[..];
            let new_layer = match first_new.take() {
                Some((i, opened)) if i == p.index => opened,
                _ => open_indexed(new, p.index, &dir, &AtomicBool::new(false), &mut |_| Ok(()))?,
            };
            tracing::debug!(layer = p.index, "indexed the new layer");
            if !new_layer.index.files.is_empty() {
                // The layer's new bytes go to a lane of their own: they compress among
                // their like, and apply decodes them beside the rest.
                let lanes = [LANE_MAIN, LANE_NEW_BYTES, LANE_DIFFERENCES];
                let hint = writer.new_bytes_hint();
                let (blobs, stats) = writer.add_blobs_with(&lanes, |w| {
                    let [stream, new_bytes, lits] = w else {
                        return Err(Error::Other("internal: three payload lanes".into()));
                    };
                    files::encode(
                        olds,
                        &new_layer,
                        &layer.diff_id,
                        *stream,
                        [Some(*new_bytes), Some(*lits)],
                        &mut |n| tracker.advance(n),
                        &|expected, sure| hint.expect(expected, sure),
                    )
                })?;
                tracing::debug!(layer = p.index, ?stats, "encoded with the files codec");
                let source = LayerSource::Files {
                    old_layers: stats.sources.clone(),
                    blob: blobs[0],
                    extra_blob: Some(blobs[1]),
                    lits_blob: Some(blobs[2]),
                };
                entries.push(entry(layer, size, source));
                continue;
            }
            tracing::info!(
                layer = p.index,
                "layer is not a tar with files; using a whole-layer delta"
            );
        }
        // The old layer a whole-layer delta is encoded against, and the codecs that can
        // encode this layer against it within the memory bound; a layer none can is
        // shipped whole (`auto`, `layer`) or refused (`xdelta3`, `zstd` asked for by name).
        let wanted = match options.method {
            Method::Xdelta3 => vec![Codec::Xdelta3],
            Method::Zstd => vec![Codec::Zstd],
            Method::Auto | Method::Files | Method::Layer => Codec::ALL.to_vec(),
        };
        let delta_source = match p.action {
            Action::Delta(o) => {
                let max = options.max_layer_memory;
                let cap = wanted
                    .iter()
                    .filter_map(|&c| codec::max_source_len(c, size, max))
                    .max();
                let bytes = match (old, cached_old.take(), cap) {
                    (_, Some((i, bytes)), _) if i == o => Some(bytes),
                    (Some(old), _, Some(cap)) => match old.read_layer(o, cap) {
                        Ok(b) => Some(b),
                        Err(Error::LimitExceeded { .. }) => None,
                        Err(e) => return Err(e),
                    },
                    _ => None,
                };
                let fitting: Vec<Codec> = match &bytes {
                    Some(b) => wanted
                        .iter()
                        .copied()
                        .filter(|&c| {
                            codec::whole_layer_memory(c, b.len() as u64, size)
                                .saturating_add(codec::RESERVED_MEMORY)
                                <= max
                        })
                        .collect(),
                    None => Vec::new(),
                };
                match bytes {
                    Some(b) if !fitting.is_empty() => Some((o, b, fitting)),
                    _ if matches!(options.method, Method::Xdelta3 | Method::Zstd) => {
                        let old_len = old
                            .and_then(|old| old.image().layers.get(o))
                            .and_then(|l| l.uncompressed_size)
                            .or(cap.map(|c| c.saturating_add(1)))
                            .unwrap_or(0);
                        let codec = wanted[0];
                        return Err(Error::LimitExceeded {
                            what: format!(
                                "{} (a whole-layer {codec} delta against old layer {o})",
                                new.describe_layer(layer)
                            ),
                            limit: format!(
                                "memory bound (both layers, the delta and {codec}'s tables, beside {} MiB for the rest of the run; --method files streams within it)",
                                codec::RESERVED_MEMORY >> 20
                            ),
                            max,
                            found: codec::whole_layer_memory(codec, old_len, size)
                                .saturating_add(codec::RESERVED_MEMORY),
                            option: "DOCKER_DELTA_MAX_MEMORY".into(),
                        });
                    }
                    _ => {
                        tracing::warn!(layer = p.index, old_layer = o, limit = max, "layer too large to diff whole within the memory bound; shipping it whole (raise DOCKER_DELTA_MAX_MEMORY to diff it)");
                        None
                    }
                }
            }
            _ => None,
        };
        let source = match (&p.action, delta_source) {
            (Action::Reference(o), _) => LayerSource::Reference { old_layer: *o },
            (Action::Delta(_), Some((o, source_bytes, codecs))) => {
                let target = new.read_layer(p.index, options.max_layer_memory)?;
                let encoded = codec::encode_best(
                    &source_bytes,
                    &target,
                    &EncodeOptions {
                        codecs,
                        ..EncodeOptions::default()
                    },
                )?;
                tracker.advance(size)?;
                let source = match encoded {
                    Some(enc) => {
                        // Decode it back now: a delta that would not rebuild the layer
                        // exactly is never shipped. (The target goes first: decoding makes
                        // it again, and memory holds one of them at a time.)
                        drop(target);
                        codec::decode_verified(
                            enc.codec,
                            &source_bytes,
                            &enc.data,
                            size,
                            &layer.diff_id,
                            &format!("{} (round-trip check)", new.describe_layer(layer)),
                        )?;
                        let blob = writer.add_bytes(&enc.data)?;
                        tracing::debug!(layer = p.index, codec = %enc.codec, old_layer = o, size, delta = enc.data.len(), "encoded");
                        match enc.codec {
                            Codec::Xdelta3 => LayerSource::Xdelta3 { old_layer: o, blob },
                            Codec::Zstd => LayerSource::Zstd { old_layer: o, blob },
                        }
                    }
                    None => {
                        tracing::debug!(
                            layer = p.index,
                            "no delta smaller than the layer; shipping it whole"
                        );
                        let blob = writer.add_bytes(&target)?;
                        LayerSource::Full { blob }
                    }
                };
                // Kept only for the next layer, if it is diffed against the same old one.
                if plans
                    .get(i + 1)
                    .is_some_and(|n| matches!(n.action, Action::Delta(x) if x == o))
                {
                    cached_old = Some((o, source_bytes));
                }
                source
            }
            (Action::Full, _) | (Action::Delta(_), None) => {
                let mut r = new.open_layer(p.index)?;
                let blob = writer.add_blob(tracker.reader(&mut r))?;
                LayerSource::Full { blob }
            }
        };
        entries.push(entry(layer, size, source));
    }
    tracker.finish()?;
    drop(cached_old);

    let header = Header {
        created_by: format!("docker-delta {}", crate::VERSION),
        compression: options.compression,
        lanes: Vec::new(),
        base: old_image.map(identity),
        target: NewImage {
            identity: identity(new_image),
            config_blob,
            source_manifest: new_image
                .manifest
                .as_ref()
                .and_then(|m| String::from_utf8(m.clone()).ok()),
            layers: entries,
        },
        blobs: Vec::new(),
    };
    let progress = options.progress;
    // The lanes may still be compressing (each on a thread of its own): that is writing
    // the package too, and it can be cancelled.
    let mut write = Tracker::start(progress, Phase::Write, writer.lanes_backlog())?;
    writer.wait_for_lanes(&mut |n| write.advance(n))?;
    let name = output_name(output)?;
    let temp = open_output_dir(&dir)?.temp_file()?;
    let package_size = writer.finish(header, &mut io::BufWriter::new(temp.file()))?;
    temp.file().sync_all().at(temp.path())?;
    // Verify what was written before it takes the output's name.
    let check = Package::open(&temp.path())?;
    check.verify_payload()?;
    write.finish()?;
    // A new output's name is taken only if nothing has it (of two runs racing for it, one
    // wins with the other told `output exists`); `--force` replaces a file.
    crate::fs_safe::pause_point("persist");
    crate::fs_safe::check_output(output, "a regular file")?;
    temp.persist(&name, options.force)?;
    tracing::info!(package = %output.display(), size = package_size, "package written");
    // The layers as `list` describes the package written: one description everywhere.
    let layers = crate::report::package_layers(&check);
    Ok(report(
        Some((output.to_path_buf(), package_size)),
        old_image,
        new_image,
        &sizes,
        layers,
    ))
}

fn entry(layer: &crate::image::Layer, size: u64, source: LayerSource) -> LayerEntry {
    LayerEntry {
        diff_id: layer.diff_id.clone(),
        size,
        media_type: layer.media_type.clone(),
        source_size: layer.size,
        source,
    }
}

fn report(
    package: Option<(PathBuf, u64)>,
    old: Option<&Image>,
    new: &Image,
    sizes: &[u64],
    layers: Vec<PackageLayer>,
) -> CreateReport {
    CreateReport {
        schema_version: SCHEMA_VERSION,
        document: "create_report",
        dry_run: package.is_none(),
        package_size: package.as_ref().map(|p| p.1),
        package_path: package.map(|p| p.0),
        base: old.map(ImageSummary::of_image),
        target: ImageSummary::of_image(new),
        target_stored_size: new.layers.iter().map(|l| l.size).sum(),
        target_uncompressed_size: sizes.iter().sum(),
        layers,
    }
}

/// A new layer opened and indexed ahead of its turn, and its index in the image.
type OpenedLayer = (usize, files::OldLayer);

/// Opens and indexes the old layers (see [`open_old_layers`]) and, on a thread of its own
/// beside them, new layer `first` (the first the files codec encodes). Each is a pass over
/// the layer's bytes, hashing them and every file in them, on one core: on the kernel pair
/// (two 410 MB layers) the new layer's pass took 1.3 s after the old one's. A failure on
/// either side stops the other; the error returned is the one that stopped it (the old
/// layers' if both failed on their own, as it was met first when they were opened in
/// turn), not the cancellation it caused.
fn open_layers_side_by_side(
    old: &dyn ImageSource,
    new: &dyn ImageSource,
    first: Option<usize>,
    spool_dir: &Path,
    progress: &dyn Progress,
) -> Result<(Vec<files::OldLayer>, Option<OpenedLayer>)> {
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let ahead = first.map(|i| {
            let stop = &stop;
            scope.spawn(move || {
                let opened = open_indexed(new, i, spool_dir, stop, &mut |_| Ok(()));
                if opened.is_err() {
                    stop.store(true, Ordering::Relaxed);
                }
                opened.map(|layer| (i, layer))
            })
        });
        let olds = open_old_layers(old, spool_dir, progress, &stop);
        if olds.is_err() {
            stop.store(true, Ordering::Relaxed);
        }
        let ahead = ahead
            .map(|t| {
                t.join().unwrap_or_else(|_| {
                    Err(Error::Other(
                        "indexing the new layer: its thread panicked".into(),
                    ))
                })
            })
            .transpose();
        match (olds, ahead) {
            (Ok(olds), Ok(ahead)) => Ok((olds, ahead)),
            // Stopped because the new layer failed (or both were cancelled): its error.
            (Err(Error::Cancelled), Err(e)) => Err(e),
            (Err(e), _) | (Ok(_), Err(e)) => Err(e),
        }
    })
}

/// Opens every old layer for positioned reads and indexes its files (one pass each),
/// giving up when `stop` is set.
fn open_old_layers(
    old: &dyn ImageSource,
    spool_dir: &Path,
    progress: &dyn Progress,
    stop: &AtomicBool,
) -> Result<Vec<files::OldLayer>> {
    let layers = &old.image().layers;
    let total = layers
        .iter()
        .map(|l| l.uncompressed_size.unwrap_or(l.size))
        .sum();
    let mut tracker = Tracker::start(progress, Phase::Analyze, total)?;
    let opened = (0..layers.len())
        .map(|i| {
            let layer = open_indexed(old, i, spool_dir, stop, &mut |n| tracker.advance(n))?;
            tracing::debug!(
                layer = i,
                files = layer.index.files.len(),
                len = layer.index.len,
                "indexed old layer"
            );
            Ok(layer)
        })
        .collect::<Result<Vec<_>>>()?;
    tracker.finish()?;
    Ok(opened)
}

/// Opens layer `index` of `src` for positioned reads and indexes its files (one pass,
/// `progress` told of the bytes read), giving up as cancelled once `stop` is set.
fn open_indexed(
    src: &dyn ImageSource,
    index: usize,
    spool_dir: &Path,
    stop: &AtomicBool,
    progress: &mut dyn FnMut(u64) -> Result<()>,
) -> Result<files::OldLayer> {
    let (data, tar_index) = LayerData::open(src, index, spool_dir, true, &mut |n| {
        if stop.load(Ordering::Relaxed) {
            return Err(Error::Cancelled);
        }
        progress(n)
    })?;
    Ok(files::OldLayer {
        data,
        index: tar_index.unwrap_or_default(),
    })
}

/// Uncompressed sizes of the new image's layers (compressed ones are read, and verified,
/// to learn it).
fn uncompressed_sizes(new: &dyn ImageSource, old: Option<&dyn ImageSource>) -> Result<Vec<u64>> {
    new.image()
        .layers
        .iter()
        .map(|l| {
            if let Some(s) = l.uncompressed_size {
                return Ok(s);
            }
            // A layer the old image has too is measured there: the old image's layers are
            // read anyway (the files codec indexes them all), the new one's copy need not be.
            let (src, index) = match old.and_then(|o| {
                o.image()
                    .layers
                    .iter()
                    .find(|ol| ol.diff_id == l.diff_id)
                    .map(|ol| (o, ol))
            }) {
                Some((o, ol)) => match ol.uncompressed_size {
                    Some(s) => return Ok(s),
                    None => (o, ol.index),
                },
                None => (new, l.index),
            };
            let mut r = src.open_layer(index)?;
            io::copy(&mut r, &mut io::sink()).map_err(|e| Error::io(r.description(), e))
        })
        .collect()
}

/// Content overlap of every new layer with every old layer, from tar headers.
fn similarity(
    old: &dyn ImageSource,
    new: &dyn ImageSource,
    progress: &dyn Progress,
) -> Result<Vec<Vec<u64>>> {
    let old_ids: Vec<_> = old.image().diff_ids();
    let changed: Vec<usize> = new
        .image()
        .layers
        .iter()
        .filter(|l| !old_ids.contains(&l.diff_id))
        .map(|l| l.index)
        .collect();
    let mut scores = vec![vec![0u64; old_ids.len()]; new.image().layers.len()];
    if changed.is_empty() || old_ids.len() < 2 {
        return Ok(scores);
    }
    // Both sides are read: every old layer and each changed new layer.
    let total = old.image().layers.iter().map(|l| l.size).sum::<u64>()
        + changed
            .iter()
            .map(|&n| new.image().layers[n].size)
            .sum::<u64>();
    let mut tracker = Tracker::start(progress, Phase::Analyze, total)?;
    let summarize =
        |src: &dyn ImageSource, i: usize, tracker: &mut Tracker<'_>| -> Result<TarSummary> {
            let mut r = src.open_layer(i)?;
            let desc = r.description().to_string();
            let s = TarSummary::read(tracker.reader(&mut r)).map_err(|e| Error::io(&desc, e))?;
            io::copy(&mut r, &mut io::sink()).map_err(|e| Error::io(&desc, e))?;
            Ok(s)
        };
    let old_summaries = (0..old_ids.len())
        .map(|i| summarize(old, i, &mut tracker))
        .collect::<Result<Vec<_>>>()?;
    for &n in &changed {
        let s = summarize(new, n, &mut tracker)?;
        for (o, os) in old_summaries.iter().enumerate() {
            scores[n][o] = s.overlap(os);
        }
        tracing::debug!(layer = n, scores = ?scores[n], "content overlap with old layers");
    }
    tracker.finish()?;
    Ok(scores)
}
