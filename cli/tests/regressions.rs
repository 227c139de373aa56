//! Regression tests for bugs found while hardening against hostile input (by reading the
//! code for the fuzz targets, or by the fuzzers; inputs the fuzzers found are kept in
//! fuzz/regressions/TARGET/ and replayed here).

mod common;

/// The fuzz targets' bodies (fuzz/src/lib.rs), to replay kept inputs through them.
#[path = "../../fuzz/src/lib.rs"]
mod fuzz_harness;

use std::process::Command;

use docker_delta::delta::apply::{apply, ApplyOptions};
use docker_delta::delta::create::{create, CreateOptions};
use docker_delta::delta::format::{CompressionSpec, Package, PayloadCompression};
use docker_delta::delta::plan::Method;
use docker_delta::ImageReference;

/// A package whose layers (or blobs) claim sizes that add up past 2^64 made `apply` (the
/// progress total) and `info` (the payload size) panic with an arithmetic overflow in
/// debug builds, and wrap silently in release builds.
#[test]
fn sizes_that_add_up_past_u64_do_not_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let base = common::layer(&[("a", b"base")]);
    let (old, _) = common::docker_archive(d, "old.tar", Some("r/a:1"), std::slice::from_ref(&base));
    let l1 = common::layer(&[("b", b"one")]);
    let l2 = common::layer(&[("c", b"two")]);
    let (new, _) = common::docker_archive(d, "new.tar", Some("r/a:2"), &[base, l1, l2]);
    let pkg = d.join("p.ddelta");
    let options = CreateOptions {
        method: Method::Layer,
        compression: CompressionSpec {
            algorithm: PayloadCompression::None,
            level: 0,
        },
        ..CreateOptions::default()
    };
    create(
        Some(common::open_archive(&old).as_ref()),
        common::open_archive(&new).as_ref(),
        &pkg,
        &options,
    )
    .unwrap();
    let good = std::fs::read(&pkg).unwrap();
    let half = u64::MAX / 2 + 10;
    let bad = common::edit_package(&good, |h| {
        h["target"]["layers"][1]["size"] = half.into();
        h["target"]["layers"][2]["size"] = half.into();
    });
    let bad_pkg = common::write_then(&d.join("bad.ddelta"), &bad);
    let out = d.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let dest = ImageReference::DockerArchive {
        path: out.join("image.tar"),
        selector: None,
    };
    // The entry-size limit would refuse these claims first; raise it to reach apply.
    let limits = docker_delta::transport::Limits {
        max_entry_size: u64::MAX,
        ..Default::default()
    };
    let r = Package::open_with(&bad_pkg, &limits).and_then(|p| {
        apply(
            &p,
            Some(common::open_archive(&old).as_ref()),
            &dest,
            &ApplyOptions::default(),
        )
    });
    assert!(r.is_err());
    assert!(common::snapshot(&out).is_empty());

    let blobs = common::edit_package(&good, |h| {
        h["blobs"][1]["size"] = half.into();
        h["blobs"][2]["size"] = half.into();
    });
    let blobs_pkg = common::write_then(&d.join("blobs.ddelta"), &blobs);
    for cmd in ["info", "list"] {
        let o = Command::new(common::bin())
            .args([cmd, blobs_pkg.to_str().unwrap()])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!stderr.contains("panicked"), "{cmd}: {stderr}");
        assert_ne!(o.status.code(), Some(101), "{cmd}: {stderr}");
    }
}

/// Every input kept in fuzz/regressions/TARGET/ (inputs that once crashed a fuzz target)
/// and the checked-in seeds in fuzz/seeds/TARGET/, through the same code the fuzz target
/// runs: they must neither panic nor leave output behind.
#[test]
fn fuzz_inputs_replay() {
    let fuzz = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    type Target = (&'static str, fn(&[u8]));
    let targets: [Target; 8] = [
        ("manifest", fuzz_harness::manifest),
        ("reference", fuzz_harness::reference),
        ("docker_archive", fuzz_harness::docker_archive),
        ("oci_archive", fuzz_harness::oci_archive),
        ("package", fuzz_harness::package),
        ("apply", fuzz_harness::apply),
        ("files", fuzz_harness::files),
        ("referrers", fuzz_harness::referrers),
    ];
    let mut n = 0;
    for (name, run) in targets {
        for dir in ["regressions", "seeds"] {
            let Ok(rd) = std::fs::read_dir(fuzz.join(dir).join(name)) else {
                continue;
            };
            for e in rd {
                let path = e.unwrap().path();
                eprintln!("{name}: {}", path.display());
                run(&std::fs::read(&path).unwrap());
                n += 1;
            }
        }
    }
    assert!(n > 0, "no fuzz inputs found under {}", fuzz.display());
    files_fuzz_seeds_decode_to_their_layers();
    std::fs::remove_dir_all(fuzz_harness::scratch()).unwrap();
}

/// The `files` fuzz target's seeds are real streams that decode, through the source list
/// their first byte selects, to exactly the layer they were encoded from (so the fuzzer
/// starts from streams that reach every operation, not from ones the decoder refuses).
/// Called by [`fuzz_inputs_replay`], which owns the harness's scratch directory.
fn files_fuzz_seeds_decode_to_their_layers() {
    use std::io::Read;
    let old = fuzz_harness::files_old();
    for (name, input, layer) in fuzz_harness::files_seeds() {
        let sources = fuzz_harness::files_sources(input[0])
            .iter()
            .map(|&i| &old[i])
            .collect();
        let mut out = Vec::new();
        let mut decoder = match fuzz_harness::files_apart(input[0], &input[1..]) {
            Some((stream, apart)) => {
                docker_delta::delta::files::Decoder::with_apart(stream, apart.map(Some), sources)
            }
            None => docker_delta::delta::files::Decoder::new(&input[1..], sources),
        };
        decoder
            .read_to_end(&mut out)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(out == layer, "{name}: decodes to other bytes");
        fuzz_harness::files(&input);
    }
}

/// Packages made while the xdelta3 method went through the xdelta3 C library must keep
/// applying with our own VCDIFF decoder. tests/fixtures/xdelta3-c.ddelta was made by that
/// version with `docker-delta create samples/app-1.tar samples/app-2.tar --method xdelta3`.
#[test]
fn xdelta3_packages_from_the_c_library_still_apply() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let package = Package::open(&root.join("tests/fixtures/xdelta3-c.ddelta")).unwrap();
    let methods: Vec<&str> = package
        .header
        .target
        .layers
        .iter()
        .map(|l| l.source.method())
        .collect();
    assert!(methods.contains(&"xdelta3"), "{methods:?}");
    let old = common::open_archive(&root.join("samples/app-1.tar"));
    let new = common::open_archive(&root.join("samples/app-2.tar"));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("rebuilt.tar");
    let dest = ImageReference::parse(&format!("docker-archive:{}", out.display())).unwrap();
    let report = apply(
        &package,
        Some(old.as_ref()),
        &dest,
        &ApplyOptions::default(),
    )
    .unwrap();
    assert_eq!(report.image_id, new.image().config_digest);
}
