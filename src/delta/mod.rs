//! Delta packages: the on-disk format, the plan of how each layer is rebuilt, the codecs,
//! and the create and apply operations.

pub mod apply;
mod blocks;
pub mod codec;
pub mod create;
pub mod deliver;
pub mod files;
pub mod format;
pub mod info;
pub mod plan;
