//! `push`: a package stored next to its new image as an artifact; `publish`: packages made
//! from several old versions to a new one and pushed, in one run (the rollout step).

use std::path::Path;
use std::time::Duration;

use super::artifact::{self, ArtifactFacts, DeltaArtifact, ARTIFACT_TYPE, MANIFEST_MEDIA_TYPE};
use crate::delta::create::{create, CreateOptions};
use crate::delta::format::Package;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::Document;
use crate::platform::Platform;
use crate::progress::{NoProgress, Progress};
use crate::reference::ImageReference;
use crate::transport::registry::referrers::{Referrer, ReferrersFrom};
use crate::transport::registry::RegistryImage;
use crate::transport::spooled::SpooledBlobs;
use crate::transport::{ImageSource, OpenOptions};

/// How packages are pushed and published.
pub struct PublishOptions<'a> {
    /// How the registry is reached (credentials, TLS) and the limits.
    pub open: OpenOptions,
    /// How long a write of the fallback referrers index is given to land before it is
    /// read back (writes of other clients in flight land meanwhile).
    pub settle: Duration,
    /// How packages are made (`publish`).
    pub create: CreateOptions<'a>,
    /// Progress.
    pub progress: &'a dyn Progress,
}

impl Default for PublishOptions<'_> {
    fn default() -> Self {
        PublishOptions {
            open: OpenOptions::default(),
            settle: Duration::from_millis(1500),
            create: CreateOptions::default(),
            progress: &NoProgress,
        }
    }
}

/// The `push_report` document: what [`push`] stored.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PushReport {
    /// [`SCHEMA_VERSION`](crate::report::SCHEMA_VERSION).
    pub schema_version: u32,
    /// Always `push_report`.
    pub document: &'static str,
    /// The new image the package is stored next to (`docker://HOST/NAME:TAG`).
    pub image: String,
    /// The new image's manifest for the package's platform: the artifact's `subject`.
    pub subject: Digest,
    /// The artifact: `docker://HOST/NAME@DIGEST`.
    pub artifact: String,
    /// Whether an artifact for the same package was there already (nothing pushed).
    pub already_published: bool,
    /// How the artifact is found: `api` (the registry indexes referrers) or `tag` (the
    /// `sha256-<hex>` fallback index, written here).
    pub referrers: &'static str,
    /// What the annotations say.
    pub delta: DeltaArtifact,
}

/// The digest and size of a file, read once.
fn file_digest(path: &Path) -> Result<(Digest, u64)> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    crate::digest::digest_reader(std::io::BufReader::with_capacity(1 << 20, f))
        .map_err(|e| Error::io(path, e))
}

/// The tag a package's new image had (`NAME:TAG` -> `TAG`), if it recorded one.
fn recorded_tag(package: &Package) -> Option<String> {
    package
        .header
        .target
        .identity
        .repo_tags
        .iter()
        .find_map(|t| {
            let last = t.rsplit('/').next().unwrap_or(t);
            last.rsplit_once(':').map(|(_, tag)| tag.to_string())
        })
}

/// Now, in RFC 3339 (UTC, seconds).
pub(crate) fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// The registry reference `dest` with `tag` when it names neither tag nor digest.
fn with_tag(dest: &ImageReference, tag: Option<String>) -> Result<ImageReference> {
    match dest {
        ImageReference::Docker {
            registry,
            repository,
            tag: None,
            digest: None,
        } => {
            let tag = tag.ok_or_else(|| Error::InvalidReference {
                input: dest.to_string(),
                reason: "names no tag, and the package records none for its new image; \
                         give docker://HOST/NAME:TAG"
                    .into(),
            })?;
            Ok(ImageReference::Docker {
                registry: registry.clone(),
                repository: repository.clone(),
                tag: Some(tag),
                digest: None,
            })
        }
        ImageReference::Docker { .. } => Ok(dest.clone()),
        other => Err(Error::InvalidReference {
            input: other.to_string(),
            reason: "packages are pushed to a registry: give docker://HOST/NAME[:TAG]".into(),
        }),
    }
}

/// Stores the package at `path` in the registry next to its new image, which `dest`
/// names (`docker://HOST/NAME[:TAG|@DIGEST]`, the tag by default the one the package
/// records): refused unless that image's config digest, for the package's platform, is
/// the package's new image ID. The package is checked whole first. `base_manifests`: the
/// base image's manifest digests in the registry, when known (they go into the
/// annotations, for daemons that know images by manifest digest).
pub fn push(
    path: &Path,
    dest: &ImageReference,
    base_manifests: &[Digest],
    options: &PublishOptions<'_>,
) -> Result<PushReport> {
    let package = Package::open_with(path, &options.open.limits)?;
    package.verify_payload()?;
    let header = &package.header;
    let target = &header.target.identity;
    let dest = with_tag(dest, recorded_tag(&package))?;
    let open = OpenOptions {
        platform: Some(target.platform.clone()),
        ..options.open.clone()
    };
    let image = RegistryImage::open(&dest, &open)?;
    let found = &image.image().config_digest;
    if found != &target.image_id {
        return Err(Error::DigestMismatch {
            what: format!(
                "{dest} for {}: its config digest is not the package's new image ID \
                 (push the package next to the image it rebuilds)",
                target.platform
            ),
            expected: target.image_id.to_string(),
            found: found.to_string(),
        });
    }
    let (subject_type, subject, subject_size) = image.manifest_descriptor();
    let registry = image.registry();
    let repository = image.repository();
    let max = options.open.limits.max_json_size;
    let full_pull = image
        .image()
        .layers
        .iter()
        .fold(image.image().config.len() as u64, |t, l| {
            t.saturating_add(l.size)
        });
    let mut known = base_manifests.to_vec();
    if known.is_empty() {
        known = base_manifests_from_reference(&package, &options.open);
    }
    let (package_digest, _) = file_digest(path)?;
    let title = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "package.ddelta".into());
    let created = now_rfc3339();
    let facts = ArtifactFacts {
        package: &package,
        package_digest: &package_digest,
        title: &title,
        subject: (subject_type, &subject, subject_size),
        base_manifests: &known,
        full_pull,
        created: &created,
    };
    let annotations = artifact::annotations(&facts);
    let registry_name = registry.name().to_string();
    let report = |artifact: &Digest, already, from: ReferrersFrom, annotations| {
        let referrer = Referrer {
            media_type: MANIFEST_MEDIA_TYPE.into(),
            digest: artifact.clone(),
            size: 0,
            artifact_type: Some(ARTIFACT_TYPE.into()),
            annotations,
        };
        Ok::<_, Error>(PushReport {
            schema_version: crate::report::SCHEMA_VERSION,
            document: "push_report",
            image: dest.to_string(),
            subject: subject.clone(),
            artifact: format!("docker://{registry_name}/{repository}@{artifact}"),
            already_published: already,
            referrers: from.name(),
            delta: DeltaArtifact::from_referrer(&referrer)?,
        })
    };
    // The same package there already (same base, new image, size and format): done.
    let (existing, from) = registry.referrers(repository, &subject, Some(ARTIFACT_TYPE), max)?;
    for r in &existing {
        let same = |k: &str| r.annotations.get(k) == annotations.get(k);
        if [
            artifact::keys::BASE_IMAGE_ID,
            artifact::keys::NEW_IMAGE_ID,
            artifact::keys::PACKAGE_SIZE,
            artifact::keys::FORMAT_VERSION,
            artifact::keys::PLATFORM,
        ]
        .iter()
        .all(|k| same(k))
        {
            tracing::info!(artifact = %r.digest, "this package is published already");
            return report(&r.digest, true, from, r.annotations.clone());
        }
    }
    registry.put_small_blob(
        repository,
        &Digest::of(artifact::EMPTY_CONFIG),
        artifact::EMPTY_CONFIG,
    )?;
    if !registry.has_blob(repository, &package_digest, package.file_size)? {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        registry.upload_blob(repository, &package_digest, &file, package.file_size)?;
    }
    let bytes = artifact::manifest(&facts, &annotations)?;
    let (digest, indexed) =
        registry.put_referrer_manifest(repository, MANIFEST_MEDIA_TYPE, &bytes)?;
    let from = if indexed {
        ReferrersFrom::Api
    } else {
        let referrer = Referrer {
            media_type: MANIFEST_MEDIA_TYPE.into(),
            digest: digest.clone(),
            size: bytes.len() as u64,
            artifact_type: Some(ARTIFACT_TYPE.into()),
            annotations: annotations.clone(),
        };
        registry.add_referrer(repository, &subject, &referrer, options.settle, max)?;
        ReferrersFrom::Tag
    };
    tracing::info!(artifact = %digest, subject = %subject, referrers = from.name(), "package pushed");
    report(&digest, false, from, annotations)
}

/// The base's manifest digest, when the package says it was read from a registry and
/// that image is still there with the same config (best effort: nothing on failure).
fn base_manifests_from_reference(package: &Package, open: &OpenOptions) -> Vec<Digest> {
    let Some(base) = &package.header.base else {
        return Vec::new();
    };
    let Ok(reference) = ImageReference::parse(&base.reference) else {
        return Vec::new();
    };
    if !matches!(reference, ImageReference::Docker { .. }) {
        return Vec::new();
    }
    let open = OpenOptions {
        platform: Some(base.platform.clone()),
        ..open.clone()
    };
    match RegistryImage::open(&reference, &open) {
        Ok(image) if image.image().config_digest == base.image_id => {
            vec![image.manifest_descriptor().1]
        }
        Ok(_) => Vec::new(),
        Err(e) => {
            tracing::debug!(base = %reference, error = %e, "the base's manifest digest is not known");
            Vec::new()
        }
    }
}

/// Which old versions `publish` makes packages from.
#[derive(Debug, Clone)]
pub enum Bases {
    /// These tags or digests of the same repository (or whole `docker://` references).
    Given(Vec<String>),
    /// The N newest other tags, by their config's `created`.
    Last(usize),
}

/// One line of a `publish_report`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Published {
    /// The old version, as given or found.
    pub base: String,
    /// Its image ID for this platform (null when it lacks the platform).
    pub base_image_id: Option<Digest>,
    /// The platform.
    pub platform: Platform,
    /// `published`, `already_published`, or `no_platform` (the old version lacks it).
    pub status: &'static str,
    /// The package's size.
    pub package_size: Option<u64>,
    /// Bytes it saves against a full pull of the new image's layers.
    pub saves: Option<u64>,
    /// The artifact, `docker://HOST/NAME@DIGEST`.
    pub artifact: Option<String>,
}

/// The `publish_report` document.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PublishReport {
    /// [`SCHEMA_VERSION`](crate::report::SCHEMA_VERSION).
    pub schema_version: u32,
    /// Always `publish_report`.
    pub document: &'static str,
    /// The new image.
    pub image: String,
    /// One line per (old version, platform).
    pub packages: Vec<Published>,
}

/// The platforms of the image `reference` names (one for a plain manifest).
fn platforms(reference: &ImageReference, open: &OpenOptions) -> Result<Vec<Platform>> {
    let ImageReference::Docker {
        registry,
        repository,
        tag,
        digest,
    } = reference
    else {
        return Err(Error::InvalidReference {
            input: reference.to_string(),
            reason: "publish reads images from a registry: give docker://HOST/NAME:TAG".into(),
        });
    };
    let client = crate::transport::registry::Registry::connect(registry, &open.registry)?;
    let wanted = match (digest, tag) {
        (Some(d), _) => d.to_string(),
        (None, Some(t)) => t.clone(),
        (None, None) => "latest".into(),
    };
    let (raw, _, _) = client.manifest(repository, &wanted, open.limits.max_json_size)?;
    match Document::parse(&raw, &reference.to_string())? {
        Document::Index(i) => Ok(i
            .manifests
            .iter()
            .filter_map(|m| m.platform.clone())
            .filter(|p| p.os != "unknown" && p.architecture != "unknown")
            .collect()),
        _ => {
            let image = RegistryImage::open(reference, open)?;
            Ok(vec![image.image().platform.clone()])
        }
    }
}

/// A tag or digest of `new`'s repository, or a whole `docker://` reference.
fn base_reference(new: &ImageReference, base: &str) -> Result<ImageReference> {
    if base.starts_with("docker://") {
        return ImageReference::parse(base);
    }
    let ImageReference::Docker {
        registry,
        repository,
        ..
    } = new
    else {
        return Err(Error::Other(format!("{new}: not a registry reference")));
    };
    let (tag, digest) = match Digest::parse(base) {
        Ok(d) => (None, Some(d)),
        Err(_) => (Some(base.trim_start_matches(':').to_string()), None),
    };
    Ok(ImageReference::Docker {
        registry: registry.clone(),
        repository: repository.clone(),
        tag,
        digest,
    })
}

/// The `n` newest other versions of `new`'s repository, by the config's `created`.
fn last_versions(new: &ImageReference, n: usize, open: &OpenOptions) -> Result<Vec<String>> {
    let ImageReference::Docker {
        registry,
        repository,
        tag,
        ..
    } = new
    else {
        return Err(Error::Other(format!("{new}: not a registry reference")));
    };
    let new_id = RegistryImage::open(new, open)?
        .image()
        .config_digest
        .clone();
    let client = crate::transport::registry::Registry::connect(registry, &open.registry)?;
    let mut found: Vec<(String, String, Digest)> = Vec::new();
    for t in client.tags(repository, open.limits.max_json_size)? {
        if Some(&t) == tag.as_ref() || t.starts_with("sha256-") {
            continue;
        }
        let r = base_reference(new, &t)?;
        let image = match RegistryImage::open(&r, open) {
            Ok(i) => i,
            Err(e) => {
                tracing::info!(tag = %t, error = %e, "skipping a tag that does not open for this platform");
                continue;
            }
        };
        let id = image.image().config_digest.clone();
        if id == new_id || found.iter().any(|(_, _, i)| *i == id) {
            continue;
        }
        let created = serde_json::from_slice::<serde_json::Value>(&image.image().config)
            .ok()
            .and_then(|v| {
                v.get("created")
                    .and_then(|c| c.as_str())
                    .map(str::to_string)
            })
            .unwrap_or_default();
        found.push((created, t, id));
    }
    // RFC 3339 times in UTC sort as strings.
    found.sort_by(|a, b| b.0.cmp(&a.0));
    Ok(found.into_iter().take(n).map(|(_, t, _)| t).collect())
}

/// Makes a package from each old version in `bases` to `new` (for every platform both
/// have) and pushes it next to `new`; a pair already published is skipped. Packages are
/// made in a temporary directory and removed once pushed.
pub fn publish(
    new: &ImageReference,
    bases: &Bases,
    options: &PublishOptions<'_>,
) -> Result<PublishReport> {
    let names = match bases {
        Bases::Given(list) => list.clone(),
        Bases::Last(n) => last_versions(new, *n, &options.open)?,
    };
    let work = crate::transport::output::open_output_dir(&std::env::temp_dir())?.temp_dir()?;
    let mut packages = Vec::new();
    for platform in platforms(new, &options.open)? {
        let open = OpenOptions {
            platform: Some(platform.clone()),
            ..options.open.clone()
        };
        let new_image = RegistryImage::open(new, &open)?;
        let new_once = SpooledBlobs::new(&new_image, &std::env::temp_dir());
        let (_, subject, _) = new_image.manifest_descriptor();
        let max = options.open.limits.max_json_size;
        let (existing, _) = new_image.registry().referrers(
            new_image.repository(),
            &subject,
            Some(ARTIFACT_TYPE),
            max,
        )?;
        let existing: Vec<DeltaArtifact> = existing
            .iter()
            .filter_map(|r| DeltaArtifact::from_referrer(r).ok())
            .collect();
        for name in &names {
            let reference = base_reference(new, name)?;
            let base = match RegistryImage::open(&reference, &open) {
                Ok(b) if b.image().platform == platform => b,
                Ok(_) | Err(Error::ImageNotFound { .. }) => {
                    packages.push(Published {
                        base: name.clone(),
                        base_image_id: None,
                        platform: platform.clone(),
                        status: "no_platform",
                        package_size: None,
                        saves: None,
                        artifact: None,
                    });
                    continue;
                }
                Err(e) => return Err(e),
            };
            let base_id = base.image().config_digest.clone();
            if let Some(a) = existing.iter().find(|a| {
                a.base_image_id == base_id && a.new_image_id == new_image.image().config_digest
            }) {
                packages.push(Published {
                    base: name.clone(),
                    base_image_id: Some(base_id),
                    platform: platform.clone(),
                    status: "already_published",
                    package_size: Some(a.package_size),
                    saves: a.saves,
                    artifact: Some(format!(
                        "docker://{}/{}@{}",
                        new_image.registry().name(),
                        new_image.repository(),
                        a.digest
                    )),
                });
                continue;
            }
            let file = work.dir().path().join(format!(
                "{}-to-{}-{}.ddelta",
                base_id.short(),
                new_image.image().config_digest.short(),
                platform.to_string().replace('/', "-")
            ));
            create(
                Some(&base as &dyn ImageSource),
                &new_once,
                &file,
                &options.create,
            )?;
            let (_, base_manifest, _) = base.manifest_descriptor();
            let pushed = push(
                &file,
                &with_digest(new, &new_image)?,
                &[base_manifest],
                options,
            )?;
            let _ = std::fs::remove_file(&file);
            packages.push(Published {
                base: name.clone(),
                base_image_id: Some(base_id),
                platform: platform.clone(),
                status: if pushed.already_published {
                    "already_published"
                } else {
                    "published"
                },
                package_size: Some(pushed.delta.package_size),
                saves: pushed.delta.saves,
                artifact: Some(pushed.artifact),
            });
        }
    }
    Ok(PublishReport {
        schema_version: crate::report::SCHEMA_VERSION,
        document: "publish_report",
        image: new.to_string(),
        packages,
    })
}

/// `new` pinned to the manifest read (so that a tag moved meanwhile is not pushed next to).
fn with_digest(new: &ImageReference, image: &RegistryImage) -> Result<ImageReference> {
    match new {
        ImageReference::Docker {
            registry,
            repository,
            ..
        } => Ok(ImageReference::Docker {
            registry: registry.clone(),
            repository: repository.clone(),
            tag: None,
            digest: Some(image.manifest_descriptor().1),
        }),
        other => Err(Error::Other(format!("{other}: not a registry reference"))),
    }
}
