//! `include/docker_delta.h` is generated from `ffi/src/` by cbindgen and committed, so
//! that C, Go and Python users need neither cbindgen nor a Rust toolchain to read it; the
//! Go module keeps a copy (`bindings/go/docker_delta.h`) so that it builds from its own
//! folder. This test regenerates the header and fails when either committed file differs,
//! so neither can silently drift from the library.
//!
//! Regenerate: `DOCKER_DELTA_BLESS=1 cargo test -p docker-delta-ffi --test header`.

use std::path::Path;

/// The header as cbindgen makes it from `cbindgen.toml`, plus the version macros taken
/// from Cargo.toml.
fn generate() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut config =
        cbindgen::Config::from_file(root.join("cbindgen.toml")).expect("read ffi/cbindgen.toml");
    let version = env!("CARGO_PKG_VERSION");
    let after = format!(
        "\n/* The version of docker-delta this header was generated from; compare with dd_version(). */\n\
         #define DOCKER_DELTA_VERSION \"{version}\"\n\
         #define DOCKER_DELTA_VERSION_MAJOR {}\n\
         #define DOCKER_DELTA_VERSION_MINOR {}\n\
         #define DOCKER_DELTA_VERSION_PATCH {}\n",
        env!("CARGO_PKG_VERSION_MAJOR"),
        env!("CARGO_PKG_VERSION_MINOR"),
        env!("CARGO_PKG_VERSION_PATCH"),
    );
    config.after_includes = Some(match config.after_includes.take() {
        Some(a) => format!("{a}\n{after}"),
        None => after,
    });
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(root.join("src/lib.rs"))
        .generate()
        .expect("cbindgen failed");
    let mut out = Vec::new();
    bindings.write(&mut out);
    String::from_utf8(out).expect("header is UTF-8")
}

/// The committed copies of the header, relative to the repository root.
const COPIES: [&str; 2] = ["include/docker_delta.h", "bindings/go/docker_delta.h"];

#[test]
fn committed_headers_are_current() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("ffi/ is inside the repository");
    let fresh = generate();
    let bless = std::env::var_os("DOCKER_DELTA_BLESS").is_some_and(|v| v == "1");
    for copy in COPIES {
        let path = repo.join(copy);
        if bless {
            std::fs::write(&path, &fresh).unwrap();
            eprintln!("wrote {}", path.display());
            continue;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        if committed != fresh {
            let first = committed
                .lines()
                .zip(fresh.lines())
                .position(|(a, b)| a != b)
                .unwrap_or_else(|| committed.lines().count().min(fresh.lines().count()));
            let show = |s: &str| s.lines().skip(first).take(5).collect::<Vec<_>>().join("\n");
            panic!(
                "{copy} is stale: it differs from a fresh cbindgen run from line {}.\n\
                 committed:\n{}\n\
                 generated:\n{}\n\
                 Regenerate and commit it with: DOCKER_DELTA_BLESS=1 cargo test -p docker-delta-ffi --test header",
                first + 1,
                show(&committed),
                show(&fresh)
            );
        }
    }
}

#[test]
fn header_has_version_macros_and_every_export() {
    let h = generate();
    assert!(h.contains(&format!(
        "#define DOCKER_DELTA_VERSION_MAJOR {}",
        env!("CARGO_PKG_VERSION_MAJOR")
    )));
    for f in [
        "dd_version",
        "dd_string_free",
        "dd_error_free",
        "dd_error_json",
        "dd_image_open",
        "dd_image_json",
        "dd_package_open",
        "dd_package_info_json",
        "dd_package_layers_json",
        "dd_create",
        "dd_apply",
        "dd_apply_load",
        "DD_STATUS_PANIC",
        "DD_PHASE_REBUILD",
    ] {
        assert!(h.contains(f), "{f} missing from the generated header");
    }
}
