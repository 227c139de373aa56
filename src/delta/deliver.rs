//! Where an applied package goes, and where its base image comes from: the parts of
//! `docker-delta apply` that are policy rather than rebuilding, shared by the command and
//! the C ABI so that both behave the same.
//!
//! - [`output_reference`]: `-o` accepts a reference with a transport or a plain path
//!   (meaning docker-archive).
//! - [`base_reference`]: without an explicit base, a package that needs one looks for it
//!   in the Docker daemon by the image ID it records.
//! - [`open_base`]: opens it, knowing what the package recorded of it.
//!
//! Where the image is written is the transports' business: see
//! [`create_sink`](crate::transport::create_sink).

use crate::daemon::DockerClient;
use crate::delta::apply::{self, ApplyOptions, ApplyReport};
use crate::delta::format::Package;
use crate::error::{Error, Result};
use crate::reference::ImageReference;
use crate::transport::docker_daemon::sink::DaemonSink;
use crate::transport::{open_known, ImageSource, KnownImage, OpenOptions};

/// Parses an output: a reference with a transport (`docker-archive:`, `oci:`,
/// `oci-archive:`), or a plain path, which means a docker-archive at that path (colons in
/// it are part of the path).
pub fn output_reference(s: &str) -> Result<ImageReference> {
    let has_transport = [
        "docker-archive:",
        "oci:",
        "oci-archive:",
        "docker-daemon:",
        "docker://",
    ]
    .iter()
    .any(|p| s.starts_with(p));
    if has_transport {
        ImageReference::parse(s)
    } else {
        ImageReference::parse(&format!(
            "docker-archive:{}",
            s.replace('\\', "\\\\").replace(':', "\\:")
        ))
    }
}

/// Whether any layer of the package is rebuilt from an old layer.
pub fn needs_base(package: &Package) -> bool {
    package
        .header
        .target
        .layers
        .iter()
        .any(|l| l.source.old_layer().is_some())
}

/// The base image to open: `explicit` if given, else (when the package needs one) the
/// recorded base image's ID in the Docker daemon, else none.
pub fn base_reference(package: &Package, explicit: Option<&str>) -> Result<Option<ImageReference>> {
    match (explicit, &package.header.base) {
        (Some(b), _) => Ok(Some(ImageReference::parse(b)?)),
        (None, Some(recorded)) if needs_base(package) => {
            tracing::info!(image = %recorded.image_id, "no base given: looking for the base image in the Docker daemon");
            Ok(Some(ImageReference::DockerDaemon {
                name: recorded.image_id.to_string(),
            }))
        }
        _ => Ok(None),
    }
}

/// Opens the base image: what [`base_reference`] names, knowing what the package recorded
/// of it ([`open_known`]): an image in the Docker daemon named by its image ID (the
/// recorded one when no base is given, or an explicit `docker-daemon:sha256:...`) is found
/// whichever image store the daemon uses, and a multi-platform base is resolved for the
/// platform the package was made from unless `options` say otherwise.
pub fn open_base(
    package: &Package,
    explicit: Option<&str>,
    options: &OpenOptions,
) -> Result<Option<Box<dyn ImageSource>>> {
    let Some(reference) = base_reference(package, explicit)? else {
        return Ok(None);
    };
    let Some(recorded) = &package.header.base else {
        return crate::transport::open(&reference, options).map(Some);
    };
    let known = KnownImage {
        image_id: &recorded.image_id,
        diff_ids: &recorded.diff_ids,
        repo_tags: &recorded.repo_tags,
        platform: &recorded.platform,
    };
    let base = open_known(&reference, &known, options).map_err(|e| match e {
        // Say what the image is and what to do, when the user named none.
        Error::ImageNotFound {
            path,
            wanted,
            available,
        } if explicit.is_none() => Error::ImageNotFound {
            path,
            wanted: format!(
                "{wanted} (the package's base image, {} for {}, read from {}; load it \
                 into the daemon or name it with --base)",
                if recorded.repo_tags.is_empty() {
                    "untagged".to_string()
                } else {
                    format!("tagged {}", recorded.repo_tags.join(", "))
                },
                recorded.platform,
                recorded.reference
            ),
            available,
        },
        e => e,
    })?;
    Ok(Some(base))
}

/// Rebuilds the package's image into a temporary docker-archive, loads it into the daemon
/// `client` talks to, and tags it with the report's name. A tagging failure
/// ([`Error::TagFailed`]) is returned beside the report, because the image is loaded and
/// the report is still true.
#[deprecated(
    since = "0.1.0",
    note = "the daemon is a destination like any other: `apply::apply_into` with a \
            `transport::docker_daemon::sink::DaemonSink`, or `apply::apply` with \
            `docker-daemon:NAME:TAG`"
)]
pub fn apply_and_load(
    client: &DockerClient,
    package: &Package,
    base: Option<&dyn ImageSource>,
    options: &ApplyOptions<'_>,
) -> Result<(ApplyReport, Option<Error>)> {
    let sink = DaemonSink::with_client(client, None, options.progress)?;
    apply::apply_into(package, base, Box::new(sink), options)
}
