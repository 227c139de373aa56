//! Image references parse and round-trip (see `docker_delta_fuzz::reference`). Runs in an
//! empty directory, since `parse` looks at the disk for bare paths.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: {
        std::env::set_current_dir(docker_delta_fuzz::scratch()).expect("chdir");
    },
    |data: &[u8]| docker_delta_fuzz::reference(data)
);
