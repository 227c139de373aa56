//! The `files` codec's decoder on hostile streams against fixed small old layers (see
//! `docker_delta_fuzz::files`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: {
        let _ = docker_delta_fuzz::files_old();
    },
    |data: &[u8]| docker_delta_fuzz::files(data)
);
