//! Images in OCI registries (`docker://`): the OCI Distribution API spoken by CNCF
//! distribution, Harbor, GHCR and the others.
//!
//! - [`auth`] finds a registry's credentials where skopeo and Docker users keep them;
//! - [`client`] speaks to one registry: authentication (anonymous, Basic, bearer tokens),
//!   manifests, and blobs streamed, verified and resumed;
//! - [`push`] is the protocol's writing half: blobs found, mounted or uploaded in chunks,
//!   manifests put;
//! - [`referrers`] lists and records the artifacts that refer to a manifest;
//! - [`source`] reads an image: manifest and config at open, layers when read;
//! - [`sink`] pushes an image: layers compressed and uploaded (or mounted), manifest last.

pub mod auth;
pub mod client;
pub mod push;
pub mod referrers;
pub mod sink;
pub mod source;

pub use client::{Registry, RegistryOptions};
pub use sink::RegistrySink;
pub use source::RegistryImage;
