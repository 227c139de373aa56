//! The tar header reader on any bytes: long names, PAX records, damaged headers (see
//! `docker_delta_fuzz::tar_headers`). scripts/fuzz.sh runs it under a malloc limit, so a
//! record held past its 1 MiB limit is a crash.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| docker_delta_fuzz::tar_headers(data));
