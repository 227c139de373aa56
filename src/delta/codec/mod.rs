//! Whole-blob binary delta codecs: encode a changed layer (an uncompressed tar) against an
//! old layer's bytes, and decode it on the far side.
//!
//! Two codecs are available:
//!
//! * [`xdelta3`](mod@xdelta3): VCDIFF through the xdelta3 C library, in memory. Fast, and
//!   the output decodes with the stock `xdelta3 -d -s SOURCE` tool; limited to 1 GiB
//!   sources and 2 GiB targets.
//! * [`zstd`](mod@zstd): zstd with the source as a reference prefix (`--patch-from`).
//!   Usually smaller (matches and literals are entropy-coded), streams the target, and
//!   handles sources and targets of any size (matches reach back at most 2 GiB).
//!
//! Whatever codec decoded a layer, the caller verifies the result against the recorded
//! digest.

pub mod xdelta3;
pub mod zstd;

#[cfg(test)]
mod tests;
