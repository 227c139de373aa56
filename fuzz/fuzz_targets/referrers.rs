//! Referrers lists and delta-package annotations from a registry (see
//! `docker_delta_fuzz::referrers`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| docker_delta_fuzz::referrers(data));
