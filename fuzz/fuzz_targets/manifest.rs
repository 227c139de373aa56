//! Manifest detection and parsing, every format (see `docker_delta_fuzz::manifest`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| docker_delta_fuzz::manifest(data));
