//! # docker-delta
//!
//! Ship container-image updates as small deltas, and rebuild the new image exactly on the
//! far side.
//!
//! The library reads images from any supported source ([`transport`]), by content: the
//! manifest format is detected from the JSON itself ([`manifest`]). A delta package
//! ([`delta`]) references the layers the old image already has, encodes changed layers
//! against old content, and carries the new image's config verbatim, so that `apply`
//! rebuilds an image with exactly the same ID.

#![warn(missing_docs)]
#![deny(clippy::unwrap_used)]

pub mod build_info;
pub mod compression;
pub mod daemon;
pub mod delta;
pub mod digest;
pub mod error;
pub mod fleet;
mod fs_safe;
pub mod image;
pub mod manifest;
pub mod platform;
pub mod progress;
pub mod reference;
pub mod report;
pub mod tar_headers;
pub mod temp;
pub mod threads;
pub mod timeouts;
pub mod transport;

pub use build_info::{build_info, BuildInfo};
pub use digest::Digest;
pub use error::{Error, ExitCode, Result};
pub use image::{Image, Layer};
pub use platform::Platform;
pub use reference::{ImageReference, Transport};
pub use timeouts::Timeouts;
pub use transport::{open, ImageSource, OpenOptions};

/// The library version (the crate version).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
