//! Binary delta codecs.
