//! Fleet updates through a registry: delta packages stored next to their new image as OCI
//! artifacts (an image manifest with its own `artifactType`, the empty config, the package
//! as its one layer, and `subject` = the new image's manifest), found by devices through
//! the referrers of that manifest (the API, or the `sha256-<hex>` tag where the registry
//! has none), chosen by what the device has, applied, and loaded, with a full pull as the
//! fallback.
//!
//! - [`artifact`]: the artifact manifest and the annotations a client chooses by;
//! - [`publish`]: pushing a package (`push`) and making and pushing many (`publish`);
//! - [`pull`]: what is published for an image (`list-deltas`) and the device's update
//!   (`pull`).
//!
//! The annotations are hints for choosing without downloading; a package pulled is checked
//! like a local one (its checksums, its base, every layer), and its own header wins.

pub mod artifact;
pub mod publish;
pub mod pull;

pub use artifact::{DeltaArtifact, ARTIFACT_TYPE};
