//! Images in OCI registries (`docker://`): the OCI Distribution API spoken by CNCF
//! distribution, Harbor, GHCR and the others.
//!
//! [`auth`] finds a registry's credentials where skopeo and Docker users keep them.

pub mod auth;
