//! Whole-blob binary delta codecs: encode a changed layer (an uncompressed tar) against an
//! old layer's bytes, and decode it on the far side.
//!
//! Available codecs:
//!
//! * [`xdelta3`](mod@xdelta3): VCDIFF through the xdelta3 C library, in memory. Fast, and
//!   the output decodes with the stock `xdelta3 -d -s SOURCE` tool; limited to 1 GiB
//!   sources and 2 GiB targets.
//!
//! Whatever codec decoded a layer, the caller verifies the result against the recorded
//! digest.

pub mod xdelta3;

#[cfg(test)]
mod tests;
