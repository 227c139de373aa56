//! Images in OCI registries (`docker://`): the OCI Distribution API spoken by CNCF
//! distribution, Harbor, GHCR and the others.
//!
//! - [`auth`] finds a registry's credentials where skopeo and Docker users keep them;
//! - [`client`] speaks to one registry: authentication (anonymous, Basic, bearer tokens),
//!   manifests, and blobs streamed, verified and resumed;
//! - [`source`] reads an image: manifest and config at open, layers when read.

pub mod auth;
pub mod client;
pub mod source;

pub use client::{Registry, RegistryOptions};
pub use source::RegistryImage;
