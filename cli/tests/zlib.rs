//! The deflater the files codec's gzip members need (issue 21).
//!
//! A `files` layer may ship a gzip member as its text, to be deflated again at apply by
//! stock zlib, byte for byte. On an ordinary (stock zlib) build, the committed package
//! `tests/fixtures/gzip-remake.ddelta`, made by a stock build and holding such a member,
//! applies. The tests named `zlib_ng_*` are for a build whose deflater is zlib-ng:
//!
//! ```text
//! cargo test -p docker-delta-cli --test zlib --features flate2/zlib-ng -- --ignored
//! ```
//!
//! (scripts/test.sh's `zlibng` suite). They are ignored in ordinary runs, and each first
//! asserts that the self-check fails, so on a stock build they fail instead of passing for
//! nothing. Under zlib-ng: create ships gzip members whole (and the package applies), and
//! apply refuses the stock package with [`Error::DeflaterMismatch`].
//!
//! `DOCKER_DELTA_BLESS=1 cargo test -p docker-delta-cli --test zlib` rewrites the fixture (on a stock build).

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use docker_delta::delta::apply::{apply, ApplyOptions};
use docker_delta::delta::create::{create, CreateOptions};
use docker_delta::delta::files::gz;
use docker_delta::delta::format::Package;
use docker_delta::delta::plan::Method;
use docker_delta::{open, Error, ExitCode, ImageReference, OpenOptions};

/// A package from `old_image` to `new_image(&stock_member())`, made by a stock build.
const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/gzip-remake.ddelta"
);

fn src(path: &Path) -> Box<dyn docker_delta::ImageSource> {
    open(
        &ImageReference::parse(&format!("docker-archive:{}", path.display())).unwrap(),
        &OpenOptions::default(),
    )
    .unwrap()
}

fn dest(path: &Path) -> ImageReference {
    ImageReference::parse(&format!("docker-archive:{}", path.display())).unwrap()
}

/// A changelog-like text of `entries` entries.
fn changelog(entries: usize) -> Vec<u8> {
    (0..entries)
        .map(|i| {
            format!(
                "pkg (1.{i}-1) unstable; urgency=medium\n\n  * Release {i}: fix bug #{}.\n\n \
                 -- A Maintainer <a@example.org>  Tue, {:02} Feb 2025 10:00:00 +0000\n\n",
                1000 + i * 37 % 911,
                1 + i % 28
            )
        })
        .collect::<String>()
        .into_bytes()
}

/// `changelog(60)` as `gzip -n -9` writes it, deflated by this build's zlib.
fn gzip_member() -> Vec<u8> {
    let mut w = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::new(9));
    w.write_all(&changelog(60)).unwrap();
    w.finish().unwrap()
}

/// The old image's one layer (no gzip member: a zlib-ng build makes it the same).
fn old_layer() -> Vec<u8> {
    common::layer(&[
        ("etc/os-release", b"ID=test\nVERSION_ID=1\n"),
        ("usr/share/doc/pkg/copyright", &changelog(20)),
    ])
}

/// The new image's one layer, with the gzip member `member`.
fn new_layer(member: &[u8]) -> Vec<u8> {
    common::layer(&[
        ("etc/os-release", b"ID=test\nVERSION_ID=2\n"),
        ("usr/share/doc/pkg/copyright", &changelog(20)),
        ("usr/share/doc/pkg/changelog.Debian.gz", member),
    ])
}

/// Writes the old image and the new one (with `member`) to `dir`.
fn images(dir: &Path, member: &[u8]) -> (PathBuf, PathBuf) {
    let (old, _) = common::docker_archive(dir, "old.tar", Some("test/gz:1"), &[old_layer()]);
    let (new, _) = common::docker_archive(dir, "new.tar", Some("test/gz:2"), &[new_layer(member)]);
    (old, new)
}

fn create_files(old: &Path, new: &Path, package: &Path) {
    let options = CreateOptions {
        method: Method::Files,
        force: true,
        ..CreateOptions::default()
    };
    let report = create(
        Some(src(old).as_ref()),
        src(new).as_ref(),
        package,
        &options,
    )
    .unwrap();
    assert_eq!(report.layers[0].method, "files");
}

/// Applies `package` to `old`, writing `out`, and returns the rebuilt layer.
fn apply_to(package: &Path, old: &Path, out: &Path) -> Result<Vec<u8>, Error> {
    let package = Package::open(package)?;
    apply(
        &package,
        Some(src(old).as_ref()),
        &dest(out),
        &ApplyOptions::default(),
    )?;
    src(out).read_layer(0, u64::MAX)
}

fn assert_zlib_ng() {
    assert!(
        !gz::remake_supported(),
        "the self-check passes: this build's deflater is stock zlib, not zlib-ng \
         (run with --features flate2/zlib-ng)"
    );
    assert!(!gz::self_check_failures().is_empty());
}

#[test]
fn stock_build_applies_the_committed_package() {
    assert!(
        gz::remake_supported(),
        "this build's deflater is not stock zlib"
    );
    let dir = tempfile::tempdir().unwrap();
    let member = gzip_member();
    let (old, new) = images(dir.path(), &member);
    if std::env::var_os("DOCKER_DELTA_BLESS").is_some_and(|v| v == "1") {
        let fixture = Path::new(FIXTURE);
        std::fs::create_dir_all(fixture.parent().unwrap()).unwrap();
        create_files(&old, &new, fixture);
    }
    let out = dir.path().join("out.tar");
    assert_eq!(
        apply_to(Path::new(FIXTURE), &old, &out).unwrap(),
        new_layer(&member)
    );
}

#[test]
#[ignore = "needs a zlib-ng build: cargo test -p docker-delta-cli --test zlib --features flate2/zlib-ng -- --ignored"]
fn zlib_ng_self_check_fails() {
    assert_zlib_ng();
}

#[test]
#[ignore = "needs a zlib-ng build: cargo test -p docker-delta-cli --test zlib --features flate2/zlib-ng -- --ignored"]
fn zlib_ng_create_ships_gzip_members_whole() {
    assert_zlib_ng();
    let dir = tempfile::tempdir().unwrap();
    // Made by zlib-ng, so its own level 9 would re-make it: only the self-check keeps it
    // whole. Had it gone as text, apply below would refuse it.
    let member = gzip_member();
    assert!(
        gz::split(&member).is_some(),
        "zlib-ng does not re-make its own member"
    );
    let (old, new) = images(dir.path(), &member);
    let package = dir.path().join("p.ddelta");
    create_files(&old, &new, &package);
    let out = dir.path().join("out.tar");
    assert_eq!(apply_to(&package, &old, &out).unwrap(), new_layer(&member));
}

#[test]
#[ignore = "needs a zlib-ng build: cargo test -p docker-delta-cli --test zlib --features flate2/zlib-ng -- --ignored"]
fn zlib_ng_apply_refuses_a_stock_package() {
    assert_zlib_ng();
    let dir = tempfile::tempdir().unwrap();
    let (old, _) = common::docker_archive(dir.path(), "old.tar", Some("test/gz:1"), &[old_layer()]);
    let out = dir.path().join("out.tar");
    let e = apply_to(Path::new(FIXTURE), &old, &out).unwrap_err();
    assert!(
        matches!(&e, Error::DeflaterMismatch { what } if what.starts_with("rebuilt layer 0")),
        "{e:?}"
    );
    assert_eq!(e.exit_code(), ExitCode::MissingDependency);
    assert_eq!(e.kind(), "deflater_mismatch");
    let message = e.to_string();
    assert!(message.contains("zlib-ng"), "{message}");
    assert!(message.contains("byte for byte"), "{message}");
    // Nothing written beside the base: no output, no temporary file.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec!["old.tar"], "left behind");
}
