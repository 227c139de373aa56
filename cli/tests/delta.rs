//! create -> apply round trips on synthetic images, and the refusals of bad packages and
//! wrong bases, each leaving no output behind.

mod common;

use std::path::{Path, PathBuf};

use docker_delta::delta::apply::{apply, ApplyOptions};
use docker_delta::delta::create::{create, CreateOptions};
use docker_delta::delta::format::{
    CompressionSpec, Package, PayloadCompression, FORMAT_VERSION, PREFIX_LEN,
};
use docker_delta::delta::plan::Method;
use docker_delta::{open, Error, ImageReference, OpenOptions};

fn src(path: &Path) -> Box<dyn docker_delta::ImageSource> {
    open(
        &ImageReference::parse(&format!("docker-archive:{}", path.display())).unwrap(),
        &OpenOptions::default(),
    )
    .unwrap()
}

/// Pseudo-random but compressible-ish content.
fn content(seed: u64, len: usize) -> Vec<u8> {
    let words = [
        "alpha ", "beta ", "gamma ", "delta ", "epsilon ", "zeta\n", "eta ", "theta ",
    ];
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if x % 5 == 0 {
            out.extend_from_slice(&x.to_le_bytes());
        } else {
            out.extend_from_slice(words[(x % 8) as usize].as_bytes());
        }
    }
    out.truncate(len);
    out
}

struct Pair {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    old: PathBuf,
    new: PathBuf,
    new_id: String,
    new_layers: Vec<Vec<u8>>,
}

fn pair() -> Pair {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let base = common::layer(&[
        ("etc/os-release", b"ID=test\n"),
        ("bin/tool", &content(1, 200_000)),
    ]);
    let app_v1 = common::layer(&[
        ("app/lib.so.1.2", &content(2, 300_000)),
        ("app/config", b"v=1\n"),
    ]);
    let mut lib2 = content(2, 300_000);
    lib2[1000..1100].copy_from_slice(&content(9, 100));
    lib2.extend_from_slice(&content(3, 5000));
    let app_v2 = common::layer(&[
        ("app/lib.so.1.3", &lib2),
        ("app/config", b"v=2\n"),
        ("app/new.txt", b"new file"),
    ]);
    let extra = common::layer(&[("data/extra", &content(4, 50_000))]);
    let (old, _) =
        common::docker_archive(&d, "old.tar", Some("test/app:1"), &[base.clone(), app_v1]);
    let new_layers = vec![base, app_v2, extra];
    let (new, new_id) = common::docker_archive(&d, "new.tar", Some("test/app:2"), &new_layers);
    Pair {
        _dir: dir,
        dir: d,
        old,
        new,
        new_id,
        new_layers,
    }
}

impl Pair {
    /// `d.ddelta`: the delta from the old image to the new one, default options.
    fn delta(&self) -> PathBuf {
        let pkg = self.dir.join("d.ddelta");
        create(
            Some(src(&self.old).as_ref()),
            src(&self.new).as_ref(),
            &pkg,
            &CreateOptions::default(),
        )
        .unwrap();
        pkg
    }
}

/// Reads the layers of a docker-archive written by apply, in manifest order.
fn layers_of(archive: &Path) -> Vec<Vec<u8>> {
    let s = src(archive);
    (0..s.image().layers.len())
        .map(|i| s.read_layer(i, u64::MAX).unwrap())
        .collect()
}

#[test]
fn round_trip_is_byte_identical_for_every_method_and_compression() {
    let p = pair();
    let cases = [
        (Method::Auto, PayloadCompression::Zstd, 19),
        (Method::Xdelta3, PayloadCompression::Zstd, 3),
        (Method::Zstd, PayloadCompression::Gzip, 6),
        (Method::Layer, PayloadCompression::Xz, 6),
        (Method::Auto, PayloadCompression::None, 0),
        (Method::Files, PayloadCompression::Xz, 6),
    ];
    for (method, algorithm, level) in cases {
        let pkg = p.dir.join(format!("{method:?}-{algorithm:?}.ddelta"));
        let options = CreateOptions {
            method,
            compression: CompressionSpec { algorithm, level },
            ..CreateOptions::default()
        };
        let report = create(
            Some(src(&p.old).as_ref()),
            src(&p.new).as_ref(),
            &pkg,
            &options,
        )
        .unwrap();
        assert_eq!(report.layers[0].method, "reference", "{method:?}");
        match method {
            Method::Layer => assert_eq!(report.layers[1].method, "full"),
            Method::Xdelta3 => assert_eq!(report.layers[1].method, "xdelta3"),
            Method::Zstd => assert_eq!(report.layers[1].method, "zstd"),
            // Auto diffs a tar layer file by file.
            Method::Auto | Method::Files => assert_eq!(report.layers[1].method, "files"),
        }
        let package = Package::open(&pkg).unwrap();
        assert_eq!(package.version, FORMAT_VERSION);
        assert_eq!(package.header.compression.algorithm, algorithm);
        let out = p.dir.join(format!("{method:?}-{algorithm:?}.out.tar"));
        let dest = ImageReference::parse(&format!("docker-archive:{}", out.display())).unwrap();
        let r = apply(
            &package,
            Some(src(&p.old).as_ref()),
            &dest,
            &ApplyOptions::default(),
        )
        .unwrap();
        assert_eq!(r.image_id.to_string(), p.new_id);
        assert_eq!(r.name.as_deref(), Some("test/app:2"));
        assert_eq!(layers_of(&out), p.new_layers, "{method:?} {algorithm:?}");
        assert_eq!(src(&out).image().config_digest.to_string(), p.new_id);
        assert_eq!(src(&out).image().repo_tags, vec!["test/app:2"]);
    }
}

#[test]
fn delta_is_much_smaller_than_the_layers() {
    let p = pair();
    let pkg = p.dir.join("d.ddelta");
    let report = create(
        Some(src(&p.old).as_ref()),
        src(&p.new).as_ref(),
        &pkg,
        &CreateOptions::default(),
    )
    .unwrap();
    let full = p.dir.join("full.ddelta");
    let full_report = create(None, src(&p.new).as_ref(), &full, &CreateOptions::default()).unwrap();
    assert!(full_report.layers.iter().all(|l| l.method == "full"));
    assert!(
        report.package_size.unwrap() * 3 < full_report.package_size.unwrap(),
        "{:?} vs {:?}",
        report.package_size,
        full_report.package_size
    );
    // A full package applies without any base.
    let out = p.dir.join("from-full.tar");
    let dest = ImageReference::parse(&format!("docker-archive:{}", out.display())).unwrap();
    apply(
        &Package::open(&full).unwrap(),
        None,
        &dest,
        &ApplyOptions::default(),
    )
    .unwrap();
    assert_eq!(layers_of(&out), p.new_layers);
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect()
}

#[test]
fn wrong_base_is_refused_before_any_work() {
    let p = pair();
    let pkg = p.delta();
    let other = common::layer(&[("x", b"unrelated")]);
    let (wrong, _) = common::docker_archive(&p.dir, "wrong.tar", Some("other:1"), &[other]);
    let out = p.dir.join("out.tar");
    let dest = ImageReference::parse(&format!("docker-archive:{}", out.display())).unwrap();
    let e = apply(
        &Package::open(&pkg).unwrap(),
        Some(src(&wrong).as_ref()),
        &dest,
        &ApplyOptions::default(),
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::WrongBaseImage { .. }), "{e:?}");
    assert!(
        msg.contains("test/app:1") && msg.contains("other:1"),
        "{msg}"
    );
    assert!(!out.exists());
    assert!(leftovers(&p.dir).is_empty(), "{:?}", leftovers(&p.dir));
    // CLI: exit code 3, no output.
    let o = std::process::Command::new(common::bin())
        .args([
            "apply",
            pkg.to_str().unwrap(),
            "--base",
            wrong.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("wrong base image"));
    assert!(!out.exists());
}

#[test]
fn damaged_packages_are_refused_and_leave_nothing() {
    let p = pair();
    let pkg = p.delta();
    let good = std::fs::read(&pkg).unwrap();
    let header_len = u64::from_le_bytes(good[16..24].try_into().unwrap()) as usize;
    let payload_at = PREFIX_LEN as usize + header_len;
    let bad = p.dir.join("bad.ddelta");
    let out = p.dir.join("out.tar");
    let dest = ImageReference::parse(&format!("docker-archive:{}", out.display())).unwrap();
    let try_apply = |bytes: &[u8]| -> Error {
        common::write_file(&bad, bytes);
        let r = Package::open(&bad).and_then(|pk| {
            apply(
                &pk,
                Some(src(&p.old).as_ref()),
                &dest,
                &ApplyOptions::default(),
            )
        });
        let e = r.expect_err("damaged package applied");
        assert!(!out.exists());
        assert!(leftovers(&p.dir).is_empty(), "{:?}", leftovers(&p.dir));
        e
    };
    // A flipped byte in every region: magic, version, lengths, header, payload start/middle/end.
    let positions = [
        0,
        9,
        17,
        30,
        60,
        70,
        PREFIX_LEN as usize + 5,
        payload_at + header_len / 2,
        payload_at,
        (payload_at + good.len()) / 2,
        good.len() - 1,
    ];
    for pos in positions {
        let mut b = good.clone();
        b[pos] ^= 0x20;
        let e = try_apply(&b);
        assert!(
            matches!(
                e,
                Error::InvalidPackage { .. }
                    | Error::DigestMismatch { .. }
                    | Error::UnsupportedPackageVersion { .. }
                    | Error::InvalidJson { .. }
            ),
            "byte {pos}: {e:?}"
        );
    }
    // Truncated anywhere.
    for len in [0, 5, 50, payload_at - 1, good.len() - 1] {
        let e = try_apply(&good[..len]);
        let msg = e.to_string();
        assert!(
            msg.contains("truncated") || msg.contains("magic"),
            "len {len}: {msg}"
        );
    }
    // A newer format version.
    let mut b = good.clone();
    b[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    let e = try_apply(&b);
    assert!(
        matches!(e, Error::UnsupportedPackageVersion { found, .. } if found == FORMAT_VERSION + 1),
        "{e:?}"
    );
    // A header that claims 1 TiB: refused without allocating.
    let mut b = good.clone();
    b[16..24].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let e = try_apply(&b);
    assert!(e.to_string().contains("exceeds"), "{e}");
    // Trailing garbage.
    let mut b = good.clone();
    b.extend_from_slice(b"junk");
    let e = try_apply(&b);
    assert!(
        e.to_string().contains("unexpected bytes after the payload"),
        "{e}"
    );
}

#[test]
fn existing_output_needs_force_and_dry_run_writes_nothing() {
    let p = pair();
    let pkg = p.dir.join("d.ddelta");
    let dry = create(
        Some(src(&p.old).as_ref()),
        src(&p.new).as_ref(),
        &pkg,
        &CreateOptions {
            dry_run: true,
            ..CreateOptions::default()
        },
    )
    .unwrap();
    assert!(dry.package_path.is_none() && dry.dry_run && !pkg.exists());
    create(
        Some(src(&p.old).as_ref()),
        src(&p.new).as_ref(),
        &pkg,
        &CreateOptions::default(),
    )
    .unwrap();
    let e = create(
        Some(src(&p.old).as_ref()),
        src(&p.new).as_ref(),
        &pkg,
        &CreateOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(e, Error::OutputExists { .. }));
    create(
        Some(src(&p.old).as_ref()),
        src(&p.new).as_ref(),
        &pkg,
        &CreateOptions {
            force: true,
            ..CreateOptions::default()
        },
    )
    .unwrap();

    let out = p.dir.join("out.tar");
    let dest = ImageReference::parse(&format!("docker-archive:{}", out.display())).unwrap();
    let package = Package::open(&pkg).unwrap();
    apply(
        &package,
        Some(src(&p.old).as_ref()),
        &dest,
        &ApplyOptions {
            dry_run: true,
            ..ApplyOptions::default()
        },
    )
    .unwrap();
    assert!(!out.exists());
    apply(
        &package,
        Some(src(&p.old).as_ref()),
        &dest,
        &ApplyOptions::default(),
    )
    .unwrap();
    let e = apply(
        &package,
        Some(src(&p.old).as_ref()),
        &dest,
        &ApplyOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(e, Error::OutputExists { .. }));
}

/// The process's umask, from `/proc/self/status` (reading it with umask(2) would change it
/// for the other tests' threads for a moment).
fn umask() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("Umask:")).unwrap();
    u32::from_str_radix(line["Umask:".len()..].trim(), 8).unwrap()
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// Packages and images are written through temporary files (owner-only by default) but end
/// with the permissions of any new file: 0666 / 0777 less the umask, so that another user
/// or a web server can read them as they read files the user made.
#[test]
fn outputs_get_the_permissions_of_new_files() {
    let (file, dir) = (0o666 & !umask(), 0o777 & !umask());
    let p = pair();
    let pkg = p.delta();
    assert_eq!(mode(&pkg), file, "package");
    let package = Package::open(&pkg).unwrap();
    let to = |r: &str| {
        let dest = ImageReference::parse(r).unwrap();
        apply(
            &package,
            Some(src(&p.old).as_ref()),
            &dest,
            &ApplyOptions::default(),
        )
        .unwrap();
    };
    let tar = p.dir.join("out.tar");
    to(&format!("docker-archive:{}", tar.display()));
    assert_eq!(mode(&tar), file, "docker-archive");
    let layout = p.dir.join("layout");
    to(&format!("oci:{}:app:2", layout.display()));
    // A second image into the existing layout: its new blobs and index.json are replaced.
    to(&format!("oci:{}:again", layout.display()));
    assert_eq!(mode(&layout), dir, "layout directory");
    for f in ["oci-layout", "index.json"] {
        assert_eq!(mode(&layout.join(f)), file, "{f}");
    }
    let blobs = std::fs::read_dir(layout.join("blobs/sha256")).unwrap();
    for b in blobs {
        let b = b.unwrap().path();
        assert_eq!(mode(&b), file, "{}", b.display());
    }
    assert!(leftovers(&p.dir).is_empty(), "{:?}", leftovers(&p.dir));
}

#[test]
fn info_and_list_cli() {
    let p = pair();
    let pkg = p.dir.join("d.ddelta");
    let o = std::process::Command::new(common::bin())
        .args([
            "create",
            p.old.to_str().unwrap(),
            p.new.to_str().unwrap(),
            "-o",
            pkg.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = std::process::Command::new(common::bin())
        .args(["info", "--json", "--verify", pkg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["format_version"], FORMAT_VERSION);
    assert_eq!(v["target"]["image_id"], p.new_id);
    assert_eq!(v["target"]["repo_tags"][0], "test/app:2");
    assert_eq!(v["base"]["repo_tags"][0], "test/app:1");
    assert_eq!(
        v["package_size"].as_u64().unwrap(),
        std::fs::metadata(&pkg).unwrap().len()
    );
    let o = std::process::Command::new(common::bin())
        .args(["list", "--json", pkg.to_str().unwrap()])
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["document"], "package_layers");
    let rows = doc["layers"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0]["method"], "reference");
    assert_eq!(rows[0]["delta_size"], 0);
    assert!(
        rows[1]["delta_size"].as_u64().unwrap()
            < rows[1]["uncompressed_size"].as_u64().unwrap() / 4
    );
    assert_eq!(
        rows[2]["method"].as_str().map(|m| m != "reference"),
        Some(true)
    );
}

#[test]
fn closed_stdout_ends_quietly() {
    let p = pair();
    let mut child = std::process::Command::new(common::bin())
        .args(["inspect", "--json", p.new.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Runs `args`, sends it `signal` as soon as a hidden file (a temporary output or spool)
/// appears in `dir`, and checks that it died of that signal and left no hidden file there.
fn interrupt_when_writing(args: &[&std::ffi::OsStr], dir: &Path, signal: i32) {
    use std::os::unix::process::ExitStatusExt;
    let mut child = std::process::Command::new(common::bin())
        .args(args)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while leftovers(dir).is_empty() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "ended before writing anything"
        );
        assert!(
            started.elapsed().as_secs() < 120,
            "nothing written in 2 minutes"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    // SAFETY: signalling our own child, which has not been waited for.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(signal), "{status:?}");
    assert!(leftovers(dir).is_empty(), "{:?}", leftovers(dir));
}

/// Ctrl-C (or a TERM from a service manager) during create or apply leaves nothing behind:
/// the command removes the temporary files it was writing before it dies of the signal.
#[test]
fn interrupted_commands_leave_no_temporary_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let old_layer = common::layer(&[("data/a.bin", &common::noise(1, 24 << 20))]);
    let mut changed = common::noise(1, 24 << 20);
    changed.splice(1000..1000, common::noise(2, 4 << 20));
    let new_layer = common::layer(&[("data/a.bin", &changed)]);
    let (old, _) = common::docker_archive(d, "old.tar", Some("t/a:1"), &[old_layer]);
    let (new, _) = common::docker_archive(d, "new.tar", Some("t/a:2"), &[new_layer]);
    let out = d.join("out");
    std::fs::create_dir(&out).unwrap();
    let arg = |s: String| std::ffi::OsString::from(s);
    let (old_ref, new_ref) = (
        arg(format!("docker-archive:{}", old.display())),
        arg(format!("docker-archive:{}", new.display())),
    );
    let pkg = out.join("d.ddelta");
    interrupt_when_writing(
        &[
            "create".as_ref(),
            &old_ref,
            &new_ref,
            "-o".as_ref(),
            pkg.as_os_str(),
        ],
        &out,
        libc::SIGINT,
    );
    assert!(!pkg.exists());

    let whole = d.join("whole.ddelta");
    create(None, src(&new).as_ref(), &whole, &CreateOptions::default()).unwrap();
    for (to, signal) in [
        (
            format!("docker-archive:{}/new.tar", out.display()),
            libc::SIGTERM,
        ),
        (format!("oci:{}/layout", out.display()), libc::SIGINT),
    ] {
        interrupt_when_writing(
            &["apply".as_ref(), whole.as_os_str(), "-o".as_ref(), &arg(to)],
            &out,
            signal,
        );
    }
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0);
}

/// An existing OCI layout as output: checked before any work (dry run too), a ref it has
/// is moved to another image only with --force, and a write that fails leaves its blobs
/// as they were. An empty directory is a new layout.
#[test]
fn existing_layouts_are_checked_first_and_left_as_they_were() {
    let p = pair();
    let delta = p.delta();
    let whole_old = p.dir.join("old.ddelta");
    create(
        None,
        src(&p.old).as_ref(),
        &whole_old,
        &CreateOptions::default(),
    )
    .unwrap();
    let (delta, whole_old) = (
        Package::open(&delta).unwrap(),
        Package::open(&whole_old).unwrap(),
    );
    let layout = p.dir.join("layout");
    std::fs::create_dir(&layout).unwrap();
    let to = |package: &Package, r: &str, dry_run: bool, force: bool| {
        let base = src(&p.old);
        apply(
            package,
            Some(base.as_ref()),
            &ImageReference::parse(&format!("oci:{}{r}", layout.display())).unwrap(),
            &ApplyOptions {
                dry_run,
                force,
                ..ApplyOptions::default()
            },
        )
    };
    // An empty directory becomes the layout; the same image again under its ref is fine.
    to(&whole_old, ":v1", false, false).unwrap();
    to(&whole_old, ":v1", false, false).unwrap();
    let before = common::snapshot(&layout);
    // Another image under that ref: refused, dry run or not, unless forced.
    for dry_run in [true, false] {
        let e = to(&delta, ":v1", dry_run, false).unwrap_err();
        assert!(matches!(e, Error::OutputExists { .. }), "{e}");
        assert!(e.to_string().contains("(ref \"v1\")"), "{e}");
    }
    assert!(common::snapshot(&layout) == before);
    // The ref from the image's name (test/app:2 -> "2") is known only when the image is
    // written: the blobs written by then are removed again.
    to(&whole_old, ":2", false, false).unwrap();
    let before = common::snapshot(&layout);
    let e = to(&delta, "", false, false).unwrap_err();
    assert!(e.to_string().contains("(ref \"2\")"), "{e}");
    assert!(common::snapshot(&layout) == before, "blobs left behind");
    to(&delta, ":v1", false, true).unwrap();
    assert_ne!(common::snapshot(&layout), before);
    // A damaged index.json is found before anything is written.
    std::fs::write(layout.join("index.json"), b"{\"manifests\": [\n  oops").unwrap();
    let before = common::snapshot(&layout);
    for dry_run in [true, false] {
        let e = to(&delta, ":v3", dry_run, false).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("index.json") && msg.contains("line 2"),
            "{msg}"
        );
    }
    assert!(common::snapshot(&layout) == before);
}

/// A layout made by `umoci init` (`"manifests": null`, what Debian's umoci writes) takes
/// the image as skopeo and umoci would add one, and umoci then lists it under its ref.
#[test]
fn a_layout_made_by_umoci_init_takes_the_image() {
    if !common::tool_available("umoci") {
        return;
    }
    let p = pair();
    let delta = Package::open(&p.delta()).unwrap();
    let layout = p.dir.join("umoci-layout");
    let init = std::process::Command::new("umoci")
        .args(["init", "--layout"])
        .arg(&layout)
        .output()
        .unwrap();
    assert!(init.status.success(), "{init:?}");
    let index = std::fs::read_to_string(layout.join("index.json")).unwrap();
    assert!(
        index.contains("\"manifests\":null"),
        "umoci init wrote {index}"
    );
    apply(
        &delta,
        Some(src(&p.old).as_ref()),
        &ImageReference::parse(&format!("oci:{}:v2", layout.display())).unwrap(),
        &ApplyOptions::default(),
    )
    .unwrap();
    let ls = std::process::Command::new("umoci")
        .args(["ls", "--layout"])
        .arg(&layout)
        .output()
        .unwrap();
    assert!(ls.status.success(), "{ls:?}");
    assert_eq!(String::from_utf8_lossy(&ls.stdout).trim(), "v2");
    let rebuilt = open(
        &ImageReference::parse(&format!("oci:{}:v2", layout.display())).unwrap(),
        &OpenOptions::default(),
    )
    .unwrap();
    assert_eq!(rebuilt.image().id().to_string(), p.new_id);
}

/// A name in the output reference is checked as `--tag` is: an invalid one is refused
/// before anything is written, not dropped for the image's old name.
#[test]
fn an_invalid_name_in_the_output_reference_is_refused() {
    let p = pair();
    let delta = Package::open(&p.delta()).unwrap();
    let out = p.dir.join("named.tar");
    for name in [
        "UPPER:tag",
        "has space:tag",
        "new\nline:tag",
        "ok/name:bad tag",
    ] {
        let dest =
            ImageReference::parse(&format!("docker-archive:{}:{name}", out.display())).unwrap();
        let e = apply(
            &delta,
            Some(src(&p.old).as_ref()),
            &dest,
            &ApplyOptions::default(),
        )
        .unwrap_err();
        assert!(matches!(e, Error::InvalidReference { .. }), "{name:?}: {e}");
        assert_eq!(
            e.exit_code(),
            docker_delta::ExitCode::InvalidInput,
            "{name:?}"
        );
        assert!(!out.exists(), "{name:?} wrote {}", out.display());
    }
    let dest =
        ImageReference::parse(&format!("docker-archive:{}:ok/name:v2", out.display())).unwrap();
    apply(
        &delta,
        Some(src(&p.old).as_ref()),
        &dest,
        &ApplyOptions::default(),
    )
    .unwrap();
    assert_eq!(src(&out).image().repo_tags, vec!["ok/name:v2"]);
}

/// `apply --dry-run` refuses an existing output as the real run does.
#[test]
fn dry_run_refuses_an_existing_output() {
    let p = pair();
    let pkg = p.delta();
    let out = p.dir.join("exists.tar");
    std::fs::write(&out, b"keep me").unwrap();
    let e = apply(
        &Package::open(&pkg).unwrap(),
        Some(src(&p.old).as_ref()),
        &ImageReference::parse(&format!("docker-archive:{}", out.display())).unwrap(),
        &ApplyOptions {
            dry_run: true,
            ..ApplyOptions::default()
        },
    )
    .unwrap_err();
    assert!(matches!(e, Error::OutputExists { .. }), "{e}");
    assert_eq!(std::fs::read(&out).unwrap(), b"keep me");
}

/// An OCI layout holding one image per architecture (`(arch, layers)`), each manifest
/// annotated with its platform in index.json.
fn multi_platform_layout(dir: &Path, images: &[(&str, Vec<Vec<u8>>)]) -> PathBuf {
    let root = dir.join("multi");
    let blobs = root.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |data: &[u8]| -> (String, usize) {
        let d = common::sha256(data);
        std::fs::write(blobs.join(&d[7..]), data).unwrap();
        (d, data.len())
    };
    let mut entries = Vec::new();
    for (arch, layers) in images {
        let (cfg, cfg_size) = put(&common::config(layers, arch));
        let layer_descs: Vec<_> = layers
            .iter()
            .map(|l| {
                let (d, n) = put(l);
                serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": n})
            })
            .collect();
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg, "size": cfg_size},
            "layers": layer_descs,
        }))
        .unwrap();
        let (m, m_size) = put(&manifest);
        entries.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": m, "size": m_size,
            "platform": {"architecture": arch, "os": "linux"},
        }));
    }
    let index = serde_json::json!({"schemaVersion": 2, "manifests": entries});
    std::fs::write(root.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(
        root.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    root
}

/// A package made from one platform of a multi-platform base applies against that base
/// without `--platform`: the base is resolved for the platform the package recorded, not
/// the host's.
#[test]
fn a_multi_platform_base_is_resolved_for_the_packages_platform() {
    use docker_delta::delta::deliver::open_base;
    let p = pair();
    let amd = vec![common::layer(&[("a", &content(5, 40_000))])];
    let arm = vec![common::layer(&[("a", &content(6, 40_000))])];
    let layout = multi_platform_layout(&p.dir, &[("amd64", amd), ("s390x", arm.clone())]);
    let base_ref = format!("oci:{}", layout.display());
    let s390x = OpenOptions {
        platform: Some("linux/s390x".parse().unwrap()),
        ..OpenOptions::default()
    };
    let old = open(&ImageReference::parse(&base_ref).unwrap(), &s390x).unwrap();
    assert_eq!(old.image().platform.architecture, "s390x");
    let pkg = p.dir.join("s390x.ddelta");
    create(
        Some(old.as_ref()),
        src(&p.new).as_ref(),
        &pkg,
        &CreateOptions::default(),
    )
    .unwrap();
    let package = Package::open(&pkg).unwrap();
    let base = open_base(&package, Some(&base_ref), &OpenOptions::default())
        .unwrap()
        .unwrap();
    assert_eq!(base.image().platform.architecture, "s390x");
    let out = p.dir.join("out.tar");
    let dest = ImageReference::parse(&format!("docker-archive:{}", out.display())).unwrap();
    let report = apply(
        &package,
        Some(base.as_ref()),
        &dest,
        &ApplyOptions::default(),
    )
    .unwrap();
    assert_eq!(report.image_id.to_string(), p.new_id);
}

/// A base layer damaged after the package was made: apply names the base image's layer,
/// not the package (whose rebuilt layer merely fails its diff_id).
#[test]
fn a_damaged_base_layer_is_named_not_the_package() {
    let p = pair();
    let pkg = p.delta();
    // Flip a byte in the middle of the old image's second layer (the app layer the new
    // one is diffed against).
    let bytes = std::fs::read(&p.old).unwrap();
    let mut archive = tar::Archive::new(&bytes[..]);
    let app_layer = src(&p.old).image().layers[1].diff_id.to_string();
    let at = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap())
        .find(|e| {
            e.path()
                .unwrap()
                .to_string_lossy()
                .ends_with(&app_layer[7..])
        })
        .map(|e| e.raw_file_position() + e.size() / 2)
        .unwrap() as usize;
    let damaged = p.dir.join("damaged.tar");
    let mut b = bytes.clone();
    b[at] ^= 0xff;
    std::fs::write(&damaged, b).unwrap();
    let out = p.dir.join("out.tar");
    let e = apply(
        &Package::open(&pkg).unwrap(),
        Some(src(&damaged).as_ref()),
        &ImageReference::parse(&format!("docker-archive:{}", out.display())).unwrap(),
        &ApplyOptions::default(),
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("damaged.tar layer 1") && msg.contains(&app_layer[7..]),
        "{msg}"
    );
    assert!(!out.exists());
}

/// A layer of these (path, content) files (`common::layer` of them, borrowed).
fn owned_layer(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let files: Vec<(&str, &[u8])> = files.iter().map(|(p, t)| (p.as_str(), &t[..])).collect();
    common::layer(&files)
}

/// A package is the same bytes whatever the number of threads that made it: the new
/// layer is indexed beside the old ones, and its files' sources are judged by content on
/// every core, each in its own order. Here a package's files were renamed (so that no
/// path, folded path or file name names their sources: only their content does).
#[test]
fn packages_do_not_depend_on_the_number_of_threads() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let base = common::layer(&[("etc/os-release", b"ID=test\n")]);
    let texts: Vec<Vec<u8>> = (0..40)
        .map(|k| content(100 + k, 6_000 + 500 * k as usize))
        .collect();
    let old_files: Vec<(String, Vec<u8>)> = texts
        .iter()
        .enumerate()
        .map(|(k, t)| (format!("usr/lib/pkg-1.0/mod{k}.py"), t.clone()))
        .collect();
    let new_files: Vec<(String, Vec<u8>)> = texts
        .iter()
        .enumerate()
        .map(|(k, t)| {
            let mut t = t.clone();
            t[100..140].copy_from_slice(&content(900 + k as u64, 40));
            let name: String = format!("{k:02}")
                .chars()
                .map(|c| (c as u8 - b'0' + b'a') as char)
                .collect();
            (format!("opt/app/part-{name}.dat"), t)
        })
        .collect();
    let (old, _) = common::docker_archive(
        d,
        "old.tar",
        Some("test/moved:1"),
        &[base.clone(), owned_layer(&old_files)],
    );
    let (new, new_id) = common::docker_archive(
        d,
        "new.tar",
        Some("test/moved:2"),
        &[base, owned_layer(&new_files)],
    );
    let make = |threads: &str| -> Vec<u8> {
        let pkg = d.join(format!("t{threads}.ddelta"));
        let o = std::process::Command::new(common::bin())
            .args(["--threads", threads, "-q", "create"])
            .arg(format!("docker-archive:{}", old.display()))
            .arg(format!("docker-archive:{}", new.display()))
            .arg("-o")
            .arg(&pkg)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        std::fs::read(&pkg).unwrap()
    };
    let one = make("1");
    assert!(one == make("3"), "1 and 3 threads made different packages");
    assert!(one == make("2"), "1 and 2 threads made different packages");
    // Each moved file found its old self: the package is far smaller than its files.
    let total: usize = texts.iter().map(Vec::len).sum();
    assert!(one.len() * 10 < total, "{} bytes for {total}", one.len());
    let out = d.join("out.tar");
    let report = apply(
        &Package::open(&d.join("t1.ddelta")).unwrap(),
        Some(src(&old).as_ref()),
        &ImageReference::parse(&format!("docker-archive:{}", out.display())).unwrap(),
        &ApplyOptions::default(),
    )
    .unwrap();
    assert_eq!(report.image_id.to_string(), new_id);
}

/// A damaged new layer is named by create, with its digests, even when it is found damaged
/// while the old layers are still being indexed beside it (which it then stops): the
/// error is the damage, not the cancellation it caused.
#[test]
fn a_damaged_new_layer_is_named_while_the_old_ones_are_indexed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let base = common::layer(&[("etc/os-release", b"ID=test\n")]);
    // An old layer that takes a while to index, a new one that takes no time.
    let big: Vec<(String, Vec<u8>)> = (0..24)
        .map(|k| (format!("usr/lib/big{k}.so"), content(500 + k, 2 << 20)))
        .collect();
    let (old, _) = common::docker_archive(
        d,
        "old.tar",
        Some("test/big:1"),
        &[base.clone(), owned_layer(&big)],
    );
    let small = common::layer(&[("usr/lib/big0.so", &content(500, 40_000)[..])]);
    let (new, _) = common::docker_archive(d, "new.tar", Some("test/big:2"), &[base, small.clone()]);
    let mut bytes = std::fs::read(&new).unwrap();
    let at = bytes
        .windows(small.len())
        .position(|w| w == &small[..])
        .unwrap()
        + 20_000;
    bytes[at] ^= 0xff;
    std::fs::write(&new, &bytes).unwrap();
    let pkg = d.join("d.ddelta");
    let e = create(
        Some(src(&old).as_ref()),
        src(&new).as_ref(),
        &pkg,
        &CreateOptions::default(),
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(e, Error::DigestMismatch { .. })
            && msg.contains("new.tar layer 1")
            && msg.contains("digest mismatch"),
        "{msg}"
    );
    assert!(!pkg.exists());
}
