//! The oci-archive reader (see `docker_delta_fuzz::oci_archive`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| docker_delta_fuzz::oci_archive(data));
