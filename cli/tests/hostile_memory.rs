//! Hostile inputs that claim large sizes or counts in a few KiB: the process must refuse
//! them (exit 3, naming the file, the member and the limit) while staying far below
//! 512 MiB, and leave nothing in the output directory or TMPDIR.
//!
//! Every case is a real file made by the test, run through the `docker-delta` binary, with
//! the child's own peak RSS read by `common::run_measured`. The large records are written
//! streaming into a gzip encoder, so the files are small and the test process stays small
//! too (its resident size counts in the child's figure; see `run_measured`).

mod common;

/// The fuzz targets' bodies (fuzz/src/lib.rs), to run the tar header target's checks here.
#[path = "../../fuzz/src/lib.rs"]
mod fuzz_harness;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest as _, Sha256};

/// The bound of issue 23: every hostile case stays far below it.
const BOUND: u64 = 512 << 20;
/// The tar extension record limit (`docker_delta::tar_headers::MAX_EXTENSION_RECORD`).
const RECORD_LIMIT: &str = "1048576";

struct World {
    _tmp: tempfile::TempDir,
    /// Inputs.
    dir: PathBuf,
    /// The output directory: holds one unrelated file, and must keep only what it had.
    out: PathBuf,
    /// The command's private TMPDIR, which must end empty.
    tmpdir: PathBuf,
    old: PathBuf,
    pkg: PathBuf,
}

fn world() -> World {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("in");
    let out = tmp.path().join("out");
    let tmpdir = tmp.path().join("tmp");
    for d in [&dir, &out, &tmpdir] {
        std::fs::create_dir_all(d).unwrap();
    }
    common::write_file(&out.join("keep.txt"), b"the user's own file\n");
    let base = common::layer(&[("etc/os-release", b"ID=t\n")]);
    let app1 = common::layer(&[("app/lib", &common::noise(2, 20_000))]);
    let app2 = common::layer(&[("app/lib", &common::noise(3, 20_000))]);
    let (old, _) = common::docker_archive(&dir, "old.tar", Some("t/app:1"), &[base.clone(), app1]);
    let (new, _) = common::docker_archive(&dir, "new.tar", Some("t/app:2"), &[base, app2]);
    let pkg = dir.join("p.dd");
    let st = Command::new(common::bin())
        .args(["-q", "create"])
        .arg(format!("docker-archive:{}", old.display()))
        .arg(format!("docker-archive:{}", new.display()))
        .arg("-o")
        .arg(&pkg)
        .status()
        .unwrap();
    assert!(st.success());
    World {
        _tmp: tmp,
        dir,
        out,
        tmpdir,
        old,
        pkg,
    }
}

/// Every file under `dir` with its length, modification time and SHA-256 (read streaming;
/// files past 256 MiB, the sparse ones, by length and time only).
fn fingerprint(dir: &Path) -> BTreeMap<PathBuf, (u64, std::time::SystemTime, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                // Its time may move with a temporary file made and removed; its entries
                // are compared one by one.
                stack.push(p.clone());
                out.insert(p, (0, std::time::UNIX_EPOCH, Vec::new()));
                continue;
            }
            let meta = e.metadata().unwrap();
            let mut h = Sha256::new();
            if t.is_file() && meta.len() < 256 << 20 {
                io::copy(&mut File::open(&p).unwrap(), &mut h).unwrap();
            }
            out.insert(
                p,
                (meta.len(), meta.modified().unwrap(), h.finalize().to_vec()),
            );
        }
    }
    out
}

/// Runs `apply PKG --base BASE -o OUTPUT` and checks the refusal: exit 3, every `needle`
/// in the message, peak RSS below the bound, the output directory and TMPDIR as before.
fn refused(w: &World, base: &str, output: &str, needles: &[&str]) -> u64 {
    let before = fingerprint(&w.out);
    let m = common::run_measured(
        Command::new(common::bin())
            .args(["-q", "apply"])
            .arg(&w.pkg)
            .arg("--base")
            .arg(base)
            .arg("-o")
            .arg(output)
            .env("TMPDIR", &w.tmpdir),
    );
    let err = m.stderr_text();
    eprintln!(
        "peak RSS {} MiB, exit {:?}: {err}",
        m.peak_rss >> 20,
        m.status.code()
    );
    assert_eq!(m.status.code(), Some(3), "{err}");
    for n in needles {
        assert!(err.contains(n), "{n:?} not in: {err}");
    }
    assert!(
        m.peak_rss < BOUND,
        "peak RSS {} MiB, bound {} MiB: {err}",
        m.peak_rss >> 20,
        BOUND >> 20
    );
    assert_eq!(fingerprint(&w.out), before, "the output directory changed");
    let left: Vec<_> = std::fs::read_dir(&w.tmpdir).unwrap().collect();
    assert!(left.is_empty(), "left in TMPDIR: {left:?}");
    m.peak_rss
}

/// A gzip-compressed file written by `f`, streaming.
fn gz(path: &Path, f: impl FnOnce(&mut dyn Write)) {
    let mut enc =
        flate2::write::GzEncoder::new(File::create(path).unwrap(), flate2::Compression::default());
    f(&mut enc);
    enc.finish().unwrap().sync_all().unwrap();
}

/// A header block of type `kind` claiming `size` bytes.
fn header(name: &str, kind: u8, size: u64) -> [u8; 512] {
    let mut h = tar::Header::new_gnu();
    h.set_path(name).unwrap();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::new(kind));
    h.set_cksum();
    *h.as_bytes()
}

/// `n` bytes of `b`, in 1 MiB writes.
fn repeat(w: &mut dyn Write, b: u8, mut n: u64) {
    let chunk = vec![b; 1 << 20];
    while n > 0 {
        let k = n.min(chunk.len() as u64) as usize;
        w.write_all(&chunk[..k]).unwrap();
        n -= k as u64;
    }
}

/// An archive that is one extension record of `size` bytes, then a small member.
fn one_record(path: &Path, kind: u8, size: u64) {
    gz(path, |w| {
        w.write_all(&header("././@LongLink", kind, size)).unwrap();
        if kind == b'x' || kind == b'g' {
            // One well-formed PAX record as long as the whole header.
            let digits = size.to_string().len() as u64;
            w.write_all(format!("{size} comment=").as_bytes()).unwrap();
            repeat(w, b'a', size - digits - 10);
            w.write_all(b"\n").unwrap();
        } else {
            repeat(w, b'a', size);
        }
        repeat(w, 0, (512 - size % 512) % 512);
        w.write_all(&header("manifest.json", b'0', 0)).unwrap();
        repeat(w, 0, 1024);
    });
}

#[test]
fn gnu_long_name_record_when_sniffing_an_archive() {
    let w = world();
    let base = w.dir.join("long-name.tar.gz");
    one_record(&base, b'L', 700 << 20);
    assert!(std::fs::metadata(&base).unwrap().len() < 1 << 20);
    refused(
        &w,
        base.to_str().unwrap(),
        w.out.join("new.tar").to_str().unwrap(),
        &[
            base.to_str().unwrap(),
            "\"@LongLink\"",
            "GNU long-name record",
            RECORD_LIMIT,
        ],
    );
}

#[test]
fn pax_record_in_an_indexed_archive() {
    let w = world();
    let base = w.dir.join("pax.tar.gz");
    one_record(&base, b'x', 600 << 20);
    assert!(std::fs::metadata(&base).unwrap().len() < 1 << 20);
    refused(
        &w,
        &format!("docker-archive:{}", base.display()),
        w.out.join("new.tar").to_str().unwrap(),
        &[
            base.to_str().unwrap(),
            "PAX extended header",
            RECORD_LIMIT,
            "it is fixed",
        ],
    );
}

#[test]
fn many_members_with_long_names() {
    let w = world();
    let base = w.dir.join("members.tar.gz");
    // 150 000 members, each with a 4000-byte PAX path: 750 MB of tar, 600 MB of names.
    gz(&base, |w| {
        let dir = "d".repeat(3980);
        for i in 0..150_000u32 {
            let rec = format!("path={dir}/{i:08}\n");
            let len = rec.len() + 5;
            let rec = format!("{len} {rec}");
            assert_eq!(rec.len(), len);
            w.write_all(&header("pax", b'x', len as u64)).unwrap();
            w.write_all(rec.as_bytes()).unwrap();
            repeat(w, 0, (512 - len as u64 % 512) % 512);
            w.write_all(&header("short", b'0', 0)).unwrap();
        }
        repeat(w, 0, 1024);
    });
    refused(
        &w,
        &format!("docker-archive:{}", base.display()),
        w.out.join("new.tar").to_str().unwrap(),
        &[
            base.to_str().unwrap(),
            "archive index size limit of 67108864",
            "DOCKER_DELTA_MAX_ARCHIVE_INDEX",
        ],
    );
}

/// A reader of `{PREFIX` + `0,` × n + `0]}`-like JSON, never held whole.
fn big_json(prefix: &str, n: u64, suffix: &str) -> (u64, impl Read) {
    let len = prefix.len() as u64 + 2 * n + 1 + suffix.len() as u64;
    struct Elements(u64);
    impl Read for Elements {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let pairs = (buf.len() / 2).min(self.0 as usize);
            for i in 0..pairs {
                buf[2 * i] = b'0';
                buf[2 * i + 1] = b',';
            }
            self.0 -= pairs as u64;
            Ok(2 * pairs)
        }
    }
    let r = io::Cursor::new(prefix.as_bytes().to_vec())
        .chain(Elements(n))
        .chain(io::Cursor::new(format!("0{suffix}").into_bytes()));
    (len, r)
}

#[test]
fn manifest_json_with_millions_of_values() {
    let w = world();
    let base = w.dir.join("values.tar.gz");
    // 30 million values in an unknown field: 60 MB, under the 64 MiB document limit.
    let (len, mut r) = big_json(
        r#"[{"Config":"c.json","RepoTags":null,"Layers":[],"Junk":["#,
        30_000_000,
        "]}]",
    );
    assert!(len < 64 << 20);
    gz(&base, |w| {
        w.write_all(&header("manifest.json", b'0', len)).unwrap();
        assert_eq!(io::copy(&mut r, w).unwrap(), len);
        repeat(w, 0, (512 - len % 512) % 512 + 1024);
    });
    refused(
        &w,
        &format!("docker-archive:{}", base.display()),
        w.out.join("new.tar").to_str().unwrap(),
        &[
            "manifest.json",
            "JSON values limit of 1048576",
            "DOCKER_DELTA_MAX_JSON_VALUES",
        ],
    );
}

/// An existing OCI layout in the output directory, with this index.json.
fn layout(w: &World, index: &mut dyn Read) -> PathBuf {
    let lay = w.out.join("lay");
    std::fs::create_dir_all(lay.join("blobs/sha256")).unwrap();
    common::write_file(
        &lay.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    );
    io::copy(index, &mut File::create(lay.join("index.json")).unwrap()).unwrap();
    lay
}

#[test]
fn output_layout_index_with_millions_of_values() {
    let w = world();
    let (_, mut r) = big_json(
        r#"{"schemaVersion":2,"manifests":[],"junk":["#,
        30_000_000,
        "]}",
    );
    let lay = layout(&w, &mut r);
    let index = lay.join("index.json");
    refused(
        &w,
        &format!("docker-archive:{}", w.old.display()),
        &format!("oci:{}:r", lay.display()),
        &[
            index.to_str().unwrap(),
            "JSON values limit of 1048576",
            "DOCKER_DELTA_MAX_JSON_VALUES",
        ],
    );
}

#[test]
fn output_layout_manifest_blob_larger_than_it_says() {
    let w = world();
    let hex = "ab".repeat(32);
    let index = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{hex}","size":300,"annotations":{{"org.opencontainers.image.ref.name":"r"}}}}]}}"#
    );
    let lay = layout(&w, &mut index.as_bytes());
    // A sparse regular file of 2 GiB: whatever its metadata or the descriptor says, the
    // read stops at the JSON document limit.
    let blob = lay.join("blobs/sha256").join(&hex);
    File::create(&blob).unwrap().set_len(2 << 30).unwrap();
    refused(
        &w,
        &format!("docker-archive:{}", w.old.display()),
        &format!("oci:{}:r", lay.display()),
        &[
            blob.to_str().unwrap(),
            "max JSON document size limit of 67108864",
            "DOCKER_DELTA_MAX_JSON_SIZE",
        ],
    );
}

/// The `tar_headers` fuzz target's checks (streaming and seeking readers agree, offsets in
/// order, the scanner accounts for every byte) on its seeds cut at every length and with
/// bytes flipped, and on records at and past the limit.
#[test]
fn tar_header_fuzz_checks_hold_on_seeds_and_their_damage() {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/tar_headers");
    let mut inputs = Vec::new();
    for e in std::fs::read_dir(seeds).unwrap() {
        inputs.push(std::fs::read(e.unwrap().path()).unwrap());
    }
    assert!(inputs.len() >= 2);
    let mut limit = header("././@LongLink", b'L', 1 << 20).to_vec();
    limit.extend(std::iter::repeat_n(b'n', 1 << 20));
    limit.extend_from_slice(&header("f", b'0', 3));
    limit.extend_from_slice(&[b'x'; 512]);
    inputs.push(limit);
    inputs.push(header("././@LongLink", b'x', (1 << 20) + 1).to_vec());
    for data in &inputs {
        for cut in (0..data.len()).step_by((data.len() / 300).max(61)) {
            fuzz_harness::tar_headers(&data[..cut]);
        }
        // Flips in the headers of the small inputs (the big one is all one record).
        let flips = if data.len() < 64 << 10 { data.len() } else { 0 };
        for at in (0..flips).step_by(7) {
            let mut d = data.clone();
            d[at] ^= 0x5a;
            fuzz_harness::tar_headers(&d);
        }
    }
}
