//! The device side: what is published for an image (`list-deltas`), and the update
//! (`pull`): the smallest delta whose base the device has, checked, applied and loaded, or
//! a full pull of the image's layers when none fits.

use std::path::PathBuf;

use super::artifact::{chain_id, DeltaArtifact, ARTIFACT_TYPE};
use crate::daemon::{DockerClient, ImageName};
use crate::delta::apply::{apply_into, ApplyOptions};
use crate::delta::format::{Package, FORMAT_VERSION};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::platform::Platform;
use crate::progress::{NoProgress, Progress};
use crate::reference::ImageReference;
use crate::transport::docker_daemon::sink::DaemonSink;
use crate::transport::registry::client::TransferCount;
use crate::transport::registry::RegistryImage;
use crate::transport::{create_sink, ImageSink, ImageSource, OpenOptions, SinkOptions};

/// An artifact listed for an image but not usable as a delta package, and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Skipped {
    /// The artifact manifest's digest.
    pub digest: Digest,
    /// Why it was skipped.
    pub reason: String,
}

/// The `delta_list` document: what is published for an image.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeltaList {
    /// [`SCHEMA_VERSION`](crate::report::SCHEMA_VERSION).
    pub schema_version: u32,
    /// Always `delta_list`.
    pub document: &'static str,
    /// The image, as given.
    pub image: String,
    /// Its image ID for the platform.
    pub image_id: Digest,
    /// Its manifest for the platform: the subject the deltas refer to.
    pub manifest_digest: Digest,
    /// The platform.
    pub platform: Platform,
    /// `api` or `tag`: how the registry listed them.
    pub referrers: &'static str,
    /// What a full pull moves: the config and every layer blob, in bytes.
    pub full_pull_size: u64,
    /// The delta packages, smallest first.
    pub deltas: Vec<DeltaArtifact>,
    /// Artifacts of this kind that cannot serve this image (another platform, another new
    /// image, unreadable annotations).
    pub skipped: Vec<Skipped>,
}

/// Lists the delta packages published for the image `reference` names (for the platform
/// `open` chooses, the host's by default).
pub fn list_deltas(reference: &ImageReference, open: &OpenOptions) -> Result<DeltaList> {
    let image = RegistryImage::open(reference, open)?;
    list_for(reference, &image, open)
}

fn list_for(
    reference: &ImageReference,
    image: &RegistryImage,
    open: &OpenOptions,
) -> Result<DeltaList> {
    let (_, subject, _) = image.manifest_descriptor();
    let (referrers, from) = image.registry().referrers(
        image.repository(),
        &subject,
        Some(ARTIFACT_TYPE),
        open.limits.max_json_size,
    )?;
    let img = image.image();
    let mut deltas = Vec::new();
    let mut skipped = Vec::new();
    for r in &referrers {
        let skip = |reason: String| Skipped {
            digest: r.digest.clone(),
            reason,
        };
        match DeltaArtifact::from_referrer(r) {
            Err(e) => skipped.push(skip(e.to_string())),
            Ok(a) if a.new_image_id != img.config_digest => skipped.push(skip(format!(
                "it rebuilds {}, not this image ({})",
                a.new_image_id, img.config_digest
            ))),
            // A package a newer docker-delta wrote: not downloaded, the device falls back.
            Ok(DeltaArtifact {
                format_version: Some(v),
                ..
            }) if v > FORMAT_VERSION => skipped.push(skip(format!(
                "it is package format {v}; this docker-delta reads formats up to \
                 {FORMAT_VERSION} (upgrade docker-delta to use it)"
            ))),
            Ok(a) if a.platform.as_ref().is_some_and(|p| *p != img.platform) => {
                skipped.push(skip(format!(
                    "it is for {}, not {}",
                    a.platform
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                    img.platform
                )))
            }
            Ok(a) => deltas.push(a),
        }
    }
    deltas.sort_by_key(|a| a.package_size);
    Ok(DeltaList {
        schema_version: crate::report::SCHEMA_VERSION,
        document: "delta_list",
        image: reference.to_string(),
        image_id: img.config_digest.clone(),
        manifest_digest: subject,
        platform: img.platform.clone(),
        referrers: from.name(),
        full_pull_size: full_pull_size(image),
        deltas,
        skipped,
    })
}

fn full_pull_size(image: &RegistryImage) -> u64 {
    let img = image.image();
    img.layers
        .iter()
        .fold(img.config.len() as u64, |t, l| t.saturating_add(l.size))
}

/// Where a pulled image goes.
pub enum PullDestination<'a> {
    /// Loaded into this daemon and tagged `name` (default: the reference's
    /// `HOST/NAME:TAG`).
    Daemon {
        /// The daemon.
        client: &'a DockerClient,
        /// The tag.
        name: Option<ImageName>,
    },
    /// Written to this destination (`docker-archive:`, `oci:`, ...).
    Output {
        /// The destination.
        reference: ImageReference,
        /// Replace an existing output.
        force: bool,
        /// The name written into it (default: the reference's `HOST/NAME:TAG`).
        name: Option<ImageName>,
    },
}

/// How to pull.
pub struct PullOptions<'a> {
    /// How the registry is reached, the limits, the platform.
    pub open: OpenOptions,
    /// The base to take deltas from (default: what the daemon has).
    pub base: Option<ImageReference>,
    /// Refuse ([`Error::NoDelta`]) rather than fall back to a full pull.
    pub no_fallback: bool,
    /// Choose and report, download nothing but manifests.
    pub dry_run: bool,
    /// The memory bound of the apply.
    pub max_layer_memory: u64,
    /// Progress.
    pub progress: &'a dyn Progress,
}

impl Default for PullOptions<'_> {
    fn default() -> Self {
        PullOptions {
            open: OpenOptions::default(),
            base: None,
            no_fallback: false,
            dry_run: false,
            max_layer_memory: crate::delta::create::default_max_layer_memory(),
            progress: &NoProgress,
        }
    }
}

/// The `pull_report` document.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PullReport {
    /// [`SCHEMA_VERSION`](crate::report::SCHEMA_VERSION).
    pub schema_version: u32,
    /// Always `pull_report`.
    pub document: &'static str,
    /// Whether nothing was downloaded but manifests (`--dry-run`).
    pub dry_run: bool,
    /// The image pulled, as given.
    pub image: String,
    /// Its image ID (config digest) for the platform: what is loaded or written.
    pub image_id: Digest,
    /// Its manifest digest for the platform.
    pub manifest_digest: Digest,
    /// The platform.
    pub platform: Platform,
    /// `delta` or `full`.
    pub method: &'static str,
    /// The delta taken (null for a full pull).
    pub delta: Option<DeltaArtifact>,
    /// Why no delta was taken (null when one was).
    pub fallback_reason: Option<String>,
    /// How many usable deltas were listed for the image.
    pub deltas_listed: usize,
    /// Bytes downloaded from the registry: manifests (and referrers lists), configs, and
    /// blobs (the package, or the layers of a full pull).
    pub transferred: TransferCount,
    /// What a full pull moves (config and layer blobs), to compare with `transferred`.
    pub full_pull_size: u64,
    /// The daemon the image was loaded into.
    pub loaded_into: Option<String>,
    /// The file or directory written.
    pub output: Option<PathBuf>,
    /// The tag given.
    pub name: Option<String>,
}

/// Whether the daemon has the base of `a`: by image ID (classic store), by one of its
/// manifest digests, or by an image whose layers chain to its ChainID (containerd store).
fn daemon_has(
    client: &DockerClient,
    a: &DeltaArtifact,
    layers: &mut Option<Vec<Vec<Digest>>>,
) -> Result<bool> {
    if client
        .inspect_image(&a.base_image_id.to_string())?
        .is_some()
    {
        return Ok(true);
    }
    for m in &a.base_manifests {
        if client.inspect_image(&m.to_string())?.is_some() {
            return Ok(true);
        }
    }
    let Some(chain) = &a.base_chain_id else {
        return Ok(false);
    };
    if layers.is_none() {
        let mut all = Vec::new();
        for i in client.list_images()? {
            if let Some(inspect) = client.inspect_image(&i.id.to_string())? {
                all.push(inspect.rootfs_layers);
            }
        }
        *layers = Some(all);
    }
    Ok(layers
        .as_ref()
        .is_some_and(|all| all.iter().any(|l| chain_id(l).as_ref() == Some(chain))))
}

/// The default name of a pulled image: `HOST/NAME:TAG` of the reference.
fn default_name(reference: &ImageReference) -> Option<ImageName> {
    match reference {
        ImageReference::Docker {
            registry,
            repository,
            tag,
            ..
        } => ImageName::parse(&format!(
            "{registry}/{repository}:{}",
            tag.as_deref().unwrap_or("latest")
        ))
        .ok(),
        _ => None,
    }
}

/// Updates to the image `reference` names: lists its deltas, takes the smallest whose base
/// is at hand (`options.base`, else the daemon's images), downloads it (verified, resumed),
/// checks it like a local package, applies it and loads or writes the result; with no
/// delta that fits, pulls the image's layers instead (verified, exact) unless
/// `no_fallback`. A delta that turns out unusable once downloaded (its header names
/// another base or image, or a package format newer than this build reads) is skipped
/// for the next one, and said so; one whose annotations say so is not downloaded.
pub fn pull(
    reference: &ImageReference,
    dest: PullDestination<'_>,
    options: &PullOptions<'_>,
) -> Result<PullReport> {
    let image = RegistryImage::open(reference, &options.open)?;
    let list = list_for(reference, &image, &options.open)?;
    let client_for_bases = match &dest {
        PullDestination::Daemon { client, .. } => Some(*client),
        PullDestination::Output { .. } => None,
    };
    // The candidates whose base is at hand, smallest first.
    let given_base = options
        .base
        .as_ref()
        .map(|b| crate::transport::open(b, &options.open))
        .transpose()?;
    let mut usable = Vec::new();
    let mut layers_cache = None;
    for a in &list.deltas {
        let has = match (&given_base, client_for_bases) {
            (Some(b), _) => {
                let bi = b.image();
                bi.config_digest == a.base_image_id
                    || (a.base_chain_id.is_some() && chain_id(&bi.diff_ids()) == a.base_chain_id)
            }
            (None, Some(client)) => daemon_has(client, a, &mut layers_cache)?,
            (None, None) => false,
        };
        if has {
            usable.push(a.clone());
        } else {
            tracing::debug!(artifact = %a.digest, base = %a.base_image_id, "the base of this delta is not at hand");
        }
    }
    let name = match &dest {
        PullDestination::Daemon { name, .. } | PullDestination::Output { name, .. } => {
            name.clone().or_else(|| default_name(reference))
        }
    };
    let mut report = PullReport {
        schema_version: crate::report::SCHEMA_VERSION,
        document: "pull_report",
        dry_run: options.dry_run,
        image: reference.to_string(),
        image_id: list.image_id.clone(),
        manifest_digest: list.manifest_digest.clone(),
        platform: list.platform.clone(),
        method: "full",
        delta: None,
        fallback_reason: None,
        deltas_listed: list.deltas.len(),
        transferred: TransferCount::default(),
        full_pull_size: list.full_pull_size,
        loaded_into: None,
        output: None,
        name: name.as_ref().map(ToString::to_string),
    };
    let mut reasons = Vec::new();
    if list.deltas.is_empty() && list.skipped.is_empty() {
        reasons.push(format!(
            "no delta package is published for {} ({})",
            reference, list.manifest_digest
        ));
    } else if list.deltas.is_empty() {
        reasons.extend(
            list.skipped
                .iter()
                .map(|s| format!("delta {} skipped: {}", s.digest, s.reason)),
        );
    } else if usable.is_empty() {
        reasons.push(format!(
            "none of the {} published deltas has a base this device has (bases: {})",
            list.deltas.len(),
            list.deltas
                .iter()
                .map(|a| a.base_image_id.short().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if options.dry_run {
        match usable.first() {
            Some(a) => {
                report.method = "delta";
                report.delta = Some(a.clone());
            }
            None => report.fallback_reason = Some(reasons.join("; ")),
        }
        report.transferred = image.registry().transferred();
        if report.delta.is_none() && options.no_fallback {
            return Err(no_delta(reference, &report));
        }
        return Ok(report);
    }
    let work = crate::transport::output::open_output_dir(&std::env::temp_dir())?.temp_dir()?;
    for a in &usable {
        match take_delta(&image, a, work.dir().path(), &dest, name.as_ref(), options) {
            Ok((applied, tag_error)) => {
                report.method = "delta";
                report.delta = Some(a.clone());
                report.loaded_into = applied.loaded_into;
                report.output = applied.output;
                report.transferred = image.registry().transferred();
                if let Some(e) = tag_error {
                    return Err(e);
                }
                return Ok(report);
            }
            Err(
                e @ (Error::ImageNotFound { .. }
                | Error::WrongBaseImage { .. }
                | Error::DigestMismatch { .. }
                | Error::SizeMismatch { .. }
                | Error::InvalidPackage { .. }
                | Error::UnsupportedPackageVersion { .. }),
            ) => {
                tracing::warn!(artifact = %a.digest, error = %e, "skipping this delta");
                reasons.push(format!("delta {} skipped: {e}", a.digest));
            }
            Err(e) => return Err(e),
        }
    }
    report.fallback_reason = Some(reasons.join("; "));
    if options.no_fallback {
        report.transferred = image.registry().transferred();
        return Err(no_delta(reference, &report));
    }
    tracing::info!(image = %reference, reason = ?report.fallback_reason, "no delta fits: pulling the image's layers");
    let sink = sink_for(&dest, options)?;
    let written = crate::transport::copy_image(&image, sink, name.as_ref(), options.progress)?;
    report.loaded_into = written.loaded_into;
    report.output = written.path;
    report.transferred = image.registry().transferred();
    if let Some(e) = written.tag_error {
        return Err(e);
    }
    Ok(report)
}

fn no_delta(reference: &ImageReference, report: &PullReport) -> Error {
    Error::NoDelta {
        image: reference.to_string(),
        reason: report
            .fallback_reason
            .clone()
            .unwrap_or_else(|| "no delta fits".into()),
    }
}

fn sink_for<'b>(
    dest: &'b PullDestination<'b>,
    options: &'b PullOptions<'b>,
) -> Result<Box<dyn ImageSink + 'b>> {
    Ok(match dest {
        PullDestination::Daemon { client, .. } => {
            Box::new(DaemonSink::with_client(client, None, options.progress)?)
        }
        PullDestination::Output {
            reference, force, ..
        } => create_sink(
            reference,
            &SinkOptions {
                force: *force,
                progress: options.progress,
                registry: Some(&options.open.registry),
                ..Default::default()
            },
        )?,
    })
}

/// Downloads the package of `a` into `dir`, checks it against the image and its base, and
/// applies it into the destination.
fn take_delta(
    image: &RegistryImage,
    a: &DeltaArtifact,
    dir: &std::path::Path,
    dest: &PullDestination<'_>,
    name: Option<&ImageName>,
    options: &PullOptions<'_>,
) -> Result<(crate::delta::apply::ApplyReport, Option<Error>)> {
    let registry = image.registry();
    let repository = image.repository();
    let max = options.open.limits.max_json_size;
    let what = format!("artifact {}/{repository}@{}", registry.name(), a.digest);
    let (raw, _, _) = registry.manifest(repository, &a.digest.to_string(), max)?;
    let m: serde_json::Value = serde_json::from_slice(&raw).map_err(|e| Error::InvalidJson {
        file: what.clone(),
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })?;
    let field = |f: &str, reason: &str| Error::InvalidField {
        file: what.clone(),
        field: f.into(),
        reason: reason.into(),
    };
    if m.get("artifactType").and_then(|t| t.as_str()) != Some(ARTIFACT_TYPE) {
        return Err(field("artifactType", "not a docker-delta package"));
    }
    let subject = m
        .pointer("/subject/digest")
        .and_then(|d| d.as_str())
        .ok_or_else(|| field("subject.digest", "missing"))?;
    if subject != image.manifest_descriptor().1.to_string() {
        return Err(field("subject.digest", "refers to another manifest"));
    }
    let layer = m
        .pointer("/layers/0")
        .ok_or_else(|| field("layers", "no package layer"))?;
    let digest = Digest::parse_in(
        layer
            .get("digest")
            .and_then(|d| d.as_str())
            .unwrap_or_default(),
        Some(&format!("{what} layers[0].digest")),
    )?;
    let size = layer
        .get("size")
        .and_then(|s| s.as_u64())
        .ok_or_else(|| field("layers[0].size", "missing"))?;
    if size != a.package_size {
        tracing::warn!(artifact = %a.digest, annotated = a.package_size, size, "the package's size is not the one annotated; the blob is what counts");
    }
    // Downloaded (verified against its digest as it streams, resumed after a cut) into
    // the locked work directory, removed with it.
    let path = dir.join(format!("{}.ddelta", digest.hex()));
    {
        let reader = registry.blob(repository, &digest, size)?;
        let mut tracker = crate::progress::Tracker::start(
            options.progress,
            crate::progress::Phase::Download,
            size,
        )?;
        let mut file = std::fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
        std::io::copy(&mut tracker.reader(reader), &mut file).map_err(|e| Error::io(&path, e))?;
        tracker.finish()?;
    }
    let package = Package::open_with(&path, &options.open.limits)?;
    let target = &package.header.target.identity;
    if target.image_id != image.image().config_digest {
        return Err(Error::WrongBaseImage {
            expected: format!("a package that rebuilds {}", image.image().config_digest),
            found: format!(
                "one that rebuilds {} (its annotations say otherwise)",
                target.image_id
            ),
            reference: what,
        });
    }
    let base = crate::delta::deliver::open_base(
        &package,
        options.base.as_ref().map(ToString::to_string).as_deref(),
        &options.open,
    )?;
    let sink = sink_for(dest, options)?;
    let apply_options = ApplyOptions {
        name: name.cloned(),
        max_layer_memory: options.max_layer_memory,
        progress: options.progress,
        ..Default::default()
    };
    apply_into(&package, base.as_deref(), sink, &apply_options)
}
