//! Apply on a fuzzed package against a fixed small base image (see
//! `docker_delta_fuzz::apply`). With `DD_FUZZ_WRITE_SEEDS=DIR` it writes seed packages and
//! archives into DIR and exits (scripts/fuzz.sh does this).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: {
        if let Some(dir) = std::env::var_os("DD_FUZZ_WRITE_SEEDS") {
            docker_delta_fuzz::write_seeds(std::path::Path::new(&dir));
            std::process::exit(0);
        }
        let _ = docker_delta_fuzz::base();
    },
    |data: &[u8]| docker_delta_fuzz::apply(data)
);
