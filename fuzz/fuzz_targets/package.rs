//! The delta package reader (see `docker_delta_fuzz::package`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| docker_delta_fuzz::package(data));
