//! The bad-input suite: hostile packages, base images and outputs, as real files.
//!
//! Every case runs twice, through the library (asserting the exact `Error::kind()`) and
//! through the `docker-delta apply` command (asserting the exit code and the message), and
//! both times asserts that the output directory is byte-for-byte as it was: no output, no
//! temporary file. The command runs with its own `TMPDIR`, which must end empty too.
//!
//! The output-side cases (a read-only directory, a full disk) mount small tmpfs file
//! systems, which needs root; they skip with a message otherwise, unless
//! `DOCKER_DELTA_REQUIRE_ROOT=1` (set by scripts/test.sh) makes that a failure.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use docker_delta::delta::apply::{apply, ApplyOptions};
use docker_delta::delta::create::{create, CreateOptions};
use docker_delta::delta::format::{CompressionSpec, Package, PayloadCompression, FORMAT_VERSION};
use docker_delta::delta::plan::Method;
use docker_delta::transport::Limits;
use docker_delta::{open, Error, ImageReference, OpenOptions};

struct World {
    _tmp: tempfile::TempDir,
    /// Inputs live here.
    dir: PathBuf,
    /// The output directory: holds one unrelated file, and must keep only that.
    out: PathBuf,
    old: PathBuf,
    new: PathBuf,
    old_layers: Vec<Vec<u8>>,
}

fn world() -> World {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("in");
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    common::write_file(&out.join("keep.txt"), b"the user's own file\n");
    let base = common::layer(&[
        ("etc/os-release", b"ID=t\n"),
        ("bin/tool", &common::noise(1, 60_000)),
    ]);
    let app1 = common::layer(&[
        ("app/lib", &common::noise(2, 90_000)),
        ("app/conf", b"v=1\n"),
    ]);
    let mut lib2 = common::noise(2, 90_000);
    lib2[500..600].copy_from_slice(&common::noise(7, 100));
    let app2 = common::layer(&[("app/lib", &lib2), ("app/conf", b"v=2\n")]);
    // Unrelated to every old layer (a hash chain), so `auto` ships it whole.
    let mut noise = Vec::new();
    let mut h = b"extra".to_vec();
    while noise.len() < 40_000 {
        h = <sha2::Sha256 as sha2::Digest>::digest(&h).to_vec();
        noise.extend_from_slice(&h);
    }
    let extra = common::layer(&[("data/x", &noise)]);
    let old_layers = vec![base.clone(), app1];
    let (old, _) = common::docker_archive(&dir, "old.tar", Some("t/app:1"), &old_layers);
    let (new, _) = common::docker_archive(&dir, "new.tar", Some("t/app:2"), &[base, app2, extra]);
    World {
        _tmp: tmp,
        dir,
        out,
        old,
        new,
        old_layers,
    }
}

/// A package old -> new with `auto` (a referenced layer, then deltas) and an uncompressed
/// payload unless `compression` says otherwise, so that blob offsets are known.
fn package(w: &World, compression: PayloadCompression) -> Vec<u8> {
    package_with(w, compression, Method::Auto)
}

fn package_with(w: &World, compression: PayloadCompression, method: Method) -> Vec<u8> {
    let path = w
        .dir
        .join(format!("good-{}-{method:?}.ddelta", compression.name()));
    if !path.exists() {
        let options = CreateOptions {
            method,
            compression: CompressionSpec {
                algorithm: compression,
                level: compression.default_level().min(3),
            },
            ..CreateOptions::default()
        };
        let report = create(
            Some(common::open_archive(&w.old).as_ref()),
            common::open_archive(&w.new).as_ref(),
            &path,
            &options,
        )
        .unwrap();
        let methods: Vec<&str> = report.layers.iter().map(|l| l.method).collect();
        assert_eq!(methods[0], "reference");
        if method == Method::Layer {
            assert_eq!(methods[1..], ["full", "full"]);
        }
        if method == Method::Auto {
            // Format v2: tar layers go through the files codec.
            assert_eq!(methods[1..], ["files", "files"]);
        }
    }
    std::fs::read(path).unwrap()
}

/// One hostile input and what it must produce.
struct Case {
    name: String,
    package: Vec<u8>,
    /// `--base` reference.
    base: String,
    kind: &'static str,
    /// Part of the message (library and command).
    msg: String,
    /// Limits for the library run; the command gets `env` instead.
    limits: Limits,
    env: Vec<(&'static str, String)>,
}

impl Case {
    fn new(
        name: impl Into<String>,
        package: Vec<u8>,
        base: &Path,
        kind: &'static str,
        msg: &str,
    ) -> Case {
        Case {
            name: name.into(),
            package,
            base: format!("docker-archive:{}", base.display()),
            kind,
            msg: msg.to_string(),
            limits: Limits::default(),
            env: Vec::new(),
        }
    }
    fn base_ref(mut self, r: String) -> Case {
        self.base = r;
        self
    }
    fn limit(mut self, var: &'static str, value: u64, set: impl FnOnce(&mut Limits)) -> Case {
        set(&mut self.limits);
        self.env.push((var, value.to_string()));
        self
    }
}

/// Runs a case through the library and the command; both must fail as the case says and
/// leave the output directory (and the command's TMPDIR) exactly as they were.
fn check(w: &World, case: &Case) {
    let name = &case.name;
    let pkg = w.dir.join("case.ddelta");
    common::write_file(&pkg, &case.package);
    let before = common::snapshot(&w.out);
    let target = w.out.join("image.tar");
    let dest = ImageReference::DockerArchive {
        path: target.clone(),
        selector: None,
    };

    let run = || -> docker_delta::Result<()> {
        let p = Package::open_with(&pkg, &case.limits)?;
        let options = OpenOptions {
            platform: None,
            limits: case.limits.clone(),
            timeouts: None,
            ..Default::default()
        };
        let base = open(&ImageReference::parse(&case.base)?, &options)?;
        apply(&p, Some(base.as_ref()), &dest, &ApplyOptions::default())?;
        Ok(())
    };
    let e: Error = match run() {
        Ok(()) => panic!("{name}: applied"),
        Err(e) => e,
    };
    assert_eq!(e.kind(), case.kind, "{name}: {e}");
    let text = e.to_string();
    assert!(
        text.contains(&case.msg),
        "{name}: {text:?} lacks {:?}",
        case.msg
    );
    assert_eq!(
        common::snapshot(&w.out),
        before,
        "{name}: output dir changed"
    );

    let tmp = w.dir.join("cli-tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let o = Command::new(common::bin())
        .args(["apply", pkg.to_str().unwrap(), "--base", &case.base, "-o"])
        .arg(&target)
        .env("TMPDIR", &tmp)
        .envs(case.env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        o.status.code(),
        Some(e.exit_code() as i32),
        "{name}: {stderr}"
    );
    assert!(stderr.contains(&case.msg), "{name}: {stderr}");
    assert_eq!(
        common::snapshot(&w.out),
        before,
        "{name}: output dir changed by the command"
    );
    assert!(
        common::snapshot(&tmp).is_empty(),
        "{name}: TMPDIR left {:?}",
        common::snapshot(&tmp).keys()
    );
}

/// Blob `i`'s offset and size in an uncompressed payload: after the lanes before its lane
/// and the blobs before it in its lane.
fn blob_span(bytes: &[u8], i: usize) -> (usize, usize) {
    let (_, header, payload_at) = common::package_parts(bytes);
    let blobs: Vec<(usize, usize)> = header["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            let lane = b["lane"].as_u64().unwrap_or(0) as usize;
            (b["size"].as_u64().unwrap() as usize, lane)
        })
        .collect();
    let lane = blobs[i].1;
    let lanes_before: usize = header["lanes"].as_array().map_or(0, |l| {
        l[..lane]
            .iter()
            .map(|l| l["length"].as_u64().unwrap() as usize)
            .sum()
    });
    let before: usize = blobs[..i].iter().filter(|b| b.1 == lane).map(|b| b.0).sum();
    (payload_at + lanes_before + before, blobs[i].0)
}

#[test]
fn truncated_packages_every_region() {
    let w = world();
    let good = package(&w, PayloadCompression::None);
    let (h, _, payload_at) = common::package_parts(&good);
    let mut cuts = vec![
        ("empty", 0),
        ("inside the magic", 5),
        ("inside the prefix", 50),
        ("inside the header", 96 + h / 2),
        ("at the payload", payload_at),
        ("one byte short", good.len() - 1),
    ];
    for i in 0..3 {
        let (at, size) = blob_span(&good, i);
        cuts.push((
            [
                "inside blob 0 (config)",
                "inside blob 1 (a files stream)",
                "inside blob 2 (a files stream)",
            ][i],
            at + size / 2,
        ));
    }
    for (name, len) in cuts {
        check(
            &w,
            &Case::new(
                format!("truncated {name}"),
                good[..len].to_vec(),
                &w.old,
                "invalid_package",
                "truncated",
            ),
        );
    }
}

#[test]
fn bit_flipped_packages_every_region() {
    let w = world();
    let good = package(&w, PayloadCompression::None);
    let (h, _, _) = common::package_parts(&good);
    let flip = |pos: usize, mask: u8| {
        let mut b = good.clone();
        b[pos] ^= mask;
        b
    };
    let cases = vec![
        (
            "magic",
            flip(0, 0x01),
            "invalid_package",
            "wrong magic bytes",
        ),
        (
            "version",
            flip(8, 0x20),
            "unsupported_package_version",
            "newer than this docker-delta supports",
        ),
        (
            "version zero",
            flip(8, FORMAT_VERSION as u8),
            "invalid_package",
            "format version 0",
        ),
        ("flags", flip(13, 0x01), "invalid_package", "unknown flags"),
        (
            "header length",
            flip(17, 0x20),
            "invalid_package",
            "truncated",
        ),
        (
            "header length high bits",
            flip(23, 0x80),
            "invalid_package",
            "exceeds",
        ),
        (
            "header checksum",
            flip(30, 0x01),
            "digest_mismatch",
            "package header",
        ),
        (
            "payload length",
            flip(56, 0x01),
            "invalid_package",
            "the package should be",
        ),
        (
            "payload checksum",
            flip(70, 0x01),
            "digest_mismatch",
            "package payload",
        ),
        (
            "header JSON",
            flip(96 + h / 2, 0x01),
            "digest_mismatch",
            "package header",
        ),
    ];
    for (name, bytes, kind, msg) in cases {
        check(
            &w,
            &Case::new(format!("flipped {name}"), bytes, &w.old, kind, msg),
        );
    }
    // Each blob: first caught by the payload checksum; re-signed (a crafted package), by
    // the check of what it turns into (apply does not hash blobs again): the config's
    // digest, or the layer's diff_id while the layer is written.
    for (i, what) in ["config: digest mismatch", "layer 1 (", "layer 1 ("]
        .into_iter()
        .enumerate()
    {
        let (at, size) = blob_span(&good, i);
        let mut b = good.clone();
        b[at + size / 2] ^= 0x04;
        check(
            &w,
            &Case::new(
                format!("flipped blob {i}"),
                b.clone(),
                &w.old,
                "digest_mismatch",
                "package payload",
            ),
        );
        common::resign_package(&mut b, h);
        check(
            &w,
            &Case::new(
                format!("flipped blob {i}, re-signed"),
                b,
                &w.old,
                "digest_mismatch",
                what,
            ),
        );
    }
}

#[test]
fn packages_whose_header_lies() {
    let w = world();
    let good = package_with(&w, PayloadCompression::None, Method::Layer);
    let zstd = package_with(&w, PayloadCompression::Zstd, Method::Layer);
    let edit = |bytes: &[u8], f: &dyn Fn(&mut serde_json::Value)| common::edit_package(bytes, f);
    const TIB: u64 = 1 << 40;
    let other = common::sha256(b"something else");
    let cases = vec![
        Case::new("a blob claims 1 TiB", edit(&good, &|h| h["blobs"][2]["size"] = TIB.into()), &w.old, "limit_exceeded", "max entry size limit of 68719476736 exceeded (1099511627776); raise it with DOCKER_DELTA_MAX_ENTRY_SIZE"),
        Case::new("a layer claims 1 TiB", edit(&good, &|h| h["target"]["layers"][2]["size"] = TIB.into()), &w.old, "limit_exceeded", "DOCKER_DELTA_MAX_ENTRY_SIZE"),
        Case::new("60 GiB out of a few KiB of zstd", edit(&zstd, &|h| h["blobs"][2]["size"] = (60u64 << 30).into()), &w.old, "limit_exceeded", "max expansion ratio limit of 2000 exceeded"),
        Case::new("blob sizes overflow u64", edit(&good, &|h| { h["blobs"][1]["size"] = u64::MAX.into(); h["blobs"][2]["size"] = u64::MAX.into(); }), &w.old, "invalid_package", "more than 2^64")
            .limit("DOCKER_DELTA_MAX_ENTRY_SIZE", u64::MAX, |l| l.max_entry_size = u64::MAX),
        Case::new("a blob claims one byte more", edit(&good, &|h| { let s = h["blobs"][1]["size"].as_u64().unwrap(); h["blobs"][1]["size"] = (s + 1).into(); }), &w.old, "size_mismatch", "layer 1"),
        Case::new("the last blob claims one byte more", edit(&good, &|h| { let s = h["blobs"][2]["size"].as_u64().unwrap(); h["blobs"][2]["size"] = (s + 1).into(); }), &w.old, "invalid_package", "payload ends inside the blob"),
        Case::new("a full layer's size is wrong", edit(&good, &|h| { let s = h["target"]["layers"][2]["size"].as_u64().unwrap(); h["target"]["layers"][2]["size"] = (s - 1).into(); }), &w.old, "size_mismatch", "layer 2"),
        Case::new("a layer's diff_id is wrong", edit(&good, &|h| { h["target"]["layers"][2]["diff_id"] = other.clone().into(); h["target"]["diff_ids"][2] = other.clone().into(); }), &w.old, "digest_mismatch", &other[..20]),
        Case::new("the image ID is wrong", edit(&good, &|h| h["target"]["image_id"] = other.clone().into()), &w.old, "digest_mismatch", "config"),
        Case::new("an old layer out of range", edit(&good, &|h| h["target"]["layers"][0]["old_layer"] = 7.into()), &w.old, "invalid_package", "needs old layer 7"),
        Case::new("a blob used twice", edit(&good, &|h| h["target"]["layers"][2]["blob"] = 1.into()), &w.old, "invalid_package", "uses blob 1"),
        Case::new("a sha512 digest", edit(&good, &|h| h["blobs"][0]["digest"] = format!("sha512:{}", "ab".repeat(64)).into()), &w.old, "invalid_field", "unsupported algorithm \"sha512\""),
        Case::new("a short digest", edit(&good, &|h| h["target"]["image_id"] = "sha256:abc".into()), &w.old, "invalid_field", "64 lowercase hex characters"),
        Case::new("an upper-case digest", edit(&good, &|h| h["target"]["image_id"] = format!("sha256:{}", "AB".repeat(32)).into()), &w.old, "invalid_field", "64 lowercase hex characters"),
        Case::new("an unknown method", edit(&good, &|h| h["target"]["layers"][1]["method"] = "bsdiff".into()), &w.old, "invalid_field", "target.layers[1]"),
    ];
    for case in &cases {
        check(&w, case);
    }
    check(
        &w,
        &Case::new(
            "an xz payload that claims a 1 GiB dictionary",
            greedy_xz(&w),
            &w.old,
            "invalid_package",
            "needs more than 96 MiB of memory",
        ),
    );
    // A zstd payload damaged behind a valid checksum: the decoder's complaint names the
    // package (it was a bare "Data corruption detected", exit 1).
    let (h, _, payload_at) = common::package_parts(&zstd);
    let mut b = zstd.clone();
    b[payload_at + 1] ^= 0x5a; // the frame's magic number
    common::resign_package(&mut b, h);
    check(
        &w,
        &Case::new(
            "zstd payload damaged, re-signed",
            b,
            &w.old,
            "invalid_package",
            "zstd payload is damaged",
        ),
    );
    // Invalid UTF-8 inside a JSON string of the header.
    let (h, _, _) = common::package_parts(&good);
    let mut b = good.clone();
    let at = 96
        + b[96..96 + h]
            .windows(10)
            .position(|s| s == b"created_by")
            .unwrap()
        + 16;
    b[at] = 0xff;
    common::resign_package(&mut b, h);
    check(
        &w,
        &Case::new(
            "invalid UTF-8 in the header",
            b,
            &w.old,
            "invalid_json",
            "package header",
        ),
    );
}

/// An xz package whose block header claims a 1 GiB dictionary (the decoder would need that
/// much memory), re-signed so that only the decoder's memory limit stands in the way.
fn greedy_xz(w: &World) -> Vec<u8> {
    let mut bytes = package_with(w, PayloadCompression::Xz, Method::Layer);
    let (header_len, _, at) = common::package_parts(&bytes);
    // The xz stream header (12 bytes), then the first block header: its size / 4 - 1,
    // flags (one filter, no sizes), LZMA2's id and one property byte, the dictionary size
    // code; padding; a CRC-32 of all that.
    let b = at + 12;
    let len = (bytes[b] as usize + 1) * 4;
    assert_eq!(
        bytes[b + 1..b + 4],
        [0x00, 0x21, 0x01],
        "an unexpected xz block header"
    );
    bytes[b + 4] = 36; // (2 | 36 & 1) << (36 / 2 + 11) = 1 GiB
    let mut crc = flate2::Crc::new();
    crc.update(&bytes[b..b + len - 4]);
    bytes[b + len - 4..b + len].copy_from_slice(&crc.sum().to_le_bytes());
    common::resign_package(&mut bytes, header_len);
    bytes
}

/// The package with blob `i` replaced by `blob`, its size and digest in the header made to
/// match and the whole re-signed: a crafted package whose every checksum holds, so that
/// the damage reaches the codec.
fn replace_blob(bytes: &[u8], i: usize, blob: &[u8]) -> Vec<u8> {
    let (at, size) = blob_span(bytes, i);
    let mut spliced = bytes[..at].to_vec();
    spliced.extend_from_slice(blob);
    spliced.extend_from_slice(&bytes[at + size..]);
    common::edit_package(&spliced, |h| {
        h["blobs"][i]["size"] = blob.len().into();
        h["blobs"][i]["digest"] = common::sha256(blob).into();
        // An uncompressed lane is as long as its blobs.
        let lane = h["blobs"][i]["lane"].as_u64().unwrap_or(0) as usize;
        if let Some(l) = h["lanes"].get_mut(lane) {
            let length = l["length"].as_u64().unwrap() as usize + blob.len() - size;
            l["length"] = length.into();
        }
    })
}

/// A `files` stream (MAGIC, one chunk, the end tag) for crafted blobs.
fn files_stream(output: u64, ops: &[u8], meta: &[u8]) -> Vec<u8> {
    fn put(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    let mut s = docker_delta::delta::files::MAGIC.to_vec();
    s.push(1);
    for v in [output, ops.len() as u64, meta.len() as u64, 0, 0, 0] {
        put(&mut s, v);
    }
    s.extend_from_slice(ops);
    s.extend_from_slice(meta);
    s.push(0);
    s
}

/// The `files` layer source (format v2, the default for tar layers): its blob damaged,
/// truncated, padded or crafted, and its list of old layers wrong. Each is refused with an
/// error that says what is wrong, and leaves nothing behind.
#[test]
fn files_layers_damaged_or_lying() {
    let w = world();
    let good = package(&w, PayloadCompression::None);
    let (h, header, _) = common::package_parts(&good);
    let layer = header["target"]["layers"][1].clone();
    assert_eq!(layer["method"], "files", "{header:#}");
    assert_eq!(layer["old_layers"], serde_json::json!([1]), "{header:#}");
    let i = layer["blob"].as_u64().unwrap() as usize;
    let (at, size) = blob_span(&good, i);
    let blob = good[at..at + size].to_vec();
    // The sections it keeps apart, each non-empty and in a lane of its own: its new bytes
    // (lane 1) and its difference literals (lane 2).
    let apart = |key: &str, lane: u64| {
        let b = layer[key].as_u64().unwrap() as usize;
        let (at, size) = blob_span(&good, b);
        assert!(size > 0, "the files layer's {key} is empty: {header:#}");
        assert_eq!(header["blobs"][b]["lane"], lane, "{header:#}");
        (b, good[at..at + size].to_vec())
    };
    let (e, new_bytes) = apart("extra_blob", 1);
    let (d, lits) = apart("lits_blob", 2);
    let max_chunk = docker_delta::delta::files::MAX_CHUNK_OUTPUT;
    let edit = |f: &dyn Fn(&mut serde_json::Value)| common::edit_package(&good, f);
    let cases = vec![
        Case::new(
            "files blob cut in half",
            replace_blob(&good, i, &blob[..size / 2]),
            &w.old,
            "codec",
            &format!("files: rebuilt layer 1 (blob {i}): the stream ends early (truncated)"),
        ),
        Case::new(
            "files blob without its end tag",
            replace_blob(&good, i, &blob[..size - 1]),
            &w.old,
            "codec",
            "the stream ends early (truncated)",
        ),
        Case::new(
            "files blob of just the magic",
            replace_blob(&good, i, &blob[..8]),
            &w.old,
            "codec",
            "truncated",
        ),
        Case::new(
            "files blob with a byte after its end",
            replace_blob(&good, i, &[&blob[..], &[0]].concat()),
            &w.old,
            "codec",
            "data after the end of the stream",
        ),
        Case::new(
            "files blob with the wrong magic",
            replace_blob(&good, i, &[b"DDFILES9", &blob[8..]].concat()),
            &w.old,
            "codec",
            "wrong magic",
        ),
        Case::new(
            "files chunk claims more than the limit",
            replace_blob(&good, i, &files_stream(max_chunk + 1, &[], &[])),
            &w.old,
            "codec",
            &format!("exceeds the {max_chunk}-byte limit"),
        ),
        // COPY 10 bytes from offset 2^47 of the old layer.
        Case::new(
            "files copy outside the old layer",
            replace_blob(
                &good,
                i,
                &files_stream(
                    10,
                    &[2, 0, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x20, 10],
                    &[],
                ),
            ),
            &w.old,
            "codec",
            "are outside the",
        ),
        // META of 2^64 - 1 bytes after one byte of output.
        Case::new(
            "files length near 2^64",
            replace_blob(
                &good,
                i,
                &files_stream(
                    10,
                    &[
                        0, 1, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
                    ],
                    b"x",
                ),
            ),
            &w.old,
            "codec",
            "more than its declared output",
        ),
        Case::new(
            "new-bytes blob cut in half",
            replace_blob(&good, e, &new_bytes[..new_bytes.len() / 2]),
            &w.old,
            "codec",
            &format!("rebuilt layer 1 (blob {i}): the stream of new bytes ends early"),
        ),
        Case::new(
            "new-bytes blob with a byte after its end",
            replace_blob(&good, e, &[&new_bytes[..], &[0]].concat()),
            &w.old,
            "codec",
            "data after the end of the stream of new bytes",
        ),
        Case::new(
            "difference-literals blob cut in half",
            replace_blob(&good, d, &lits[..lits.len() / 2]),
            &w.old,
            "codec",
            "the stream of difference literals ends early",
        ),
        Case::new(
            "difference-literals blob with a byte after its end",
            replace_blob(&good, d, &[&lits[..], &[0]].concat()),
            &w.old,
            "codec",
            "data after the end of the stream of difference literals",
        ),
        Case::new(
            "a files layer's new bytes and differences in one lane",
            edit(&|h| h["blobs"][d]["lane"] = 1.into()),
            &w.old,
            "invalid_package",
            &format!("layer 1's blobs {e} and {d} are both in lane 1"),
        ),
        Case::new(
            "a files layer's two blobs in one lane",
            edit(&|h| h["blobs"][e]["lane"] = 0.into()),
            &w.old,
            "invalid_package",
            &format!("layer 1's blobs {i} and {e} are both in lane 0"),
        ),
        Case::new(
            "a blob in a lane the payload lacks",
            edit(&|h| h["blobs"][e]["lane"] = 5.into()),
            &w.old,
            "invalid_package",
            &format!("blob {e} is in lane 5, but the payload has 3 lanes"),
        ),
        Case::new(
            "lanes that do not add up to the payload",
            edit(&|h| {
                let l = h["lanes"][1]["length"].as_u64().unwrap();
                h["lanes"][1]["length"] = (l + 1).into();
            }),
            &w.old,
            "invalid_package",
            "the lanes add up to",
        ),
        Case::new(
            "nine lanes",
            edit(&|h| {
                let lanes = h["lanes"].as_array_mut().unwrap();
                let none = serde_json::json!({"compression": {"algorithm": "none", "level": 0}, "length": 0});
                lanes.resize(9, none);
            }),
            &w.old,
            "invalid_package",
            "9 payload lanes, more than the 8 allowed",
        ),
        Case::new(
            "files source names an old layer out of range",
            edit(&|h| h["target"]["layers"][1]["old_layers"] = serde_json::json!([1, 7])),
            &w.old,
            "invalid_package",
            "layer 1 needs old layer 7, but the base image has 2 layers",
        ),
        Case::new(
            "files source names no old layers",
            edit(&|h| h["target"]["layers"][1]["old_layers"] = serde_json::json!([])),
            &w.old,
            "codec",
            "old layer 0 is not in the layer's source list",
        ),
        Case::new(
            "files source names the wrong old layer",
            edit(&|h| h["target"]["layers"][1]["old_layers"] = serde_json::json!([0])),
            &w.old,
            "codec",
            "outside the",
        ),
    ];
    for case in &cases {
        check(&w, case);
    }
    // A flipped bit anywhere in the blob, with the package's checksums re-signed and the
    // blob's recorded digest either left or made to match: apply does not hash blobs (the
    // payload checksum covers their bytes), so both must be caught by the codec or by the
    // layer's diff_id; or, where the flip still rebuilds the same bytes (a copy of zeros
    // from other zeros), give a correct image, which the diff_id check proves.
    let snapshot = common::snapshot(&w.out);
    let mut same_bytes = 0;
    let step = (size / 2000).max(1);
    for pos in (0..size).step_by(step) {
        for resign_blob in [false, true] {
            let mut damaged = blob.clone();
            damaged[pos] ^= 0x10;
            let bytes = if resign_blob {
                replace_blob(&good, i, &damaged)
            } else {
                let mut b = good.clone();
                b[at + pos] ^= 0x10;
                common::resign_package(&mut b, h);
                b
            };
            let pkg = common::write_then(&w.dir.join("flip.ddelta"), &bytes);
            let dest = ImageReference::DockerArchive {
                path: w.out.join("image.tar"),
                selector: None,
            };
            let r = Package::open(&pkg).and_then(|p| {
                apply(
                    &p,
                    Some(common::open_archive(&w.old).as_ref()),
                    &dest,
                    &ApplyOptions::default(),
                )
            });
            let e = match r {
                Ok(_) => {
                    same_bytes += 1;
                    std::fs::remove_file(w.out.join("image.tar")).unwrap();
                    continue;
                }
                Err(e) => e,
            };
            assert!(
                ["digest_mismatch", "codec"].contains(&e.kind()),
                "flip at {pos}: {} {e}",
                e.kind()
            );
            if e.kind() == "digest_mismatch" {
                assert!(e.to_string().contains("layer 1"), "flip at {pos}: {e}");
            }
            assert_eq!(
                common::snapshot(&w.out),
                snapshot,
                "flip at {pos}: output dir changed"
            );
        }
    }
    assert!(
        same_bytes * 10 < 2 * size.div_ceil(step),
        "{same_bytes} of the flips changed nothing"
    );
}

/// Writes a tar whose members are given as raw headers, for entries the `Members` helper
/// cannot make (links, odd names, sparse and truncated entries).
struct RawTar(tar::Builder<Vec<u8>>);

impl RawTar {
    fn new() -> RawTar {
        RawTar(tar::Builder::new(Vec::new()))
    }
    fn file(mut self, name: &[u8], data: &[u8]) -> RawTar {
        let mut h = tar::Header::new_gnu();
        h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        self.0.append(&h, data).unwrap();
        self
    }
    fn link(mut self, name: &str, target: &str, kind: tar::EntryType) -> RawTar {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(0);
        h.set_mode(0o777);
        self.0.append_link(&mut h, name, target).unwrap();
        self
    }
    fn members(mut self, m: &common::Members) -> RawTar {
        for (n, d) in &m.0 {
            self = self.file(n.as_bytes(), d);
        }
        self
    }
    fn bytes(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}

/// The old image's members (docker-archive, Docker >= 25 paths), for variations.
fn old_members(w: &World) -> (common::Members, Vec<String>, String) {
    let cfg = common::config(&w.old_layers, "amd64");
    let cfg_name = format!("blobs/sha256/{}", &common::sha256(&cfg)[7..]);
    let names: Vec<String> = w
        .old_layers
        .iter()
        .map(|l| format!("blobs/sha256/{}", &common::sha256(l)[7..]))
        .collect();
    let mut m = common::Members::new().add(&cfg_name, cfg);
    for (n, l) in names.iter().zip(&w.old_layers) {
        m = m.add(n, l.clone());
    }
    (m, names, cfg_name)
}

fn archive_manifest(cfg: &str, layers: &[&str]) -> Vec<u8> {
    serde_json::to_vec(
        &serde_json::json!([{ "Config": cfg, "RepoTags": ["t/app:1"], "Layers": layers }]),
    )
    .unwrap()
}

#[test]
fn hostile_base_images() {
    let w = world();
    let good = package(&w, PayloadCompression::None);
    let (members, names, cfg) = old_members(&w);
    let put = |name: &str, bytes: Vec<u8>| -> PathBuf {
        let p = w.dir.join(name);
        common::write_file(&p, &bytes);
        p
    };
    let manifest = |layers: &[&str]| archive_manifest(&cfg, layers);
    let (l0, l1) = (names[0].as_str(), names[1].as_str());

    // The wrong image altogether.
    let (wrong, _) = common::docker_archive(
        &w.dir,
        "wrong.tar",
        Some("other:1"),
        &[common::layer(&[("x", b"y")])],
    );
    check(
        &w,
        &Case::new(
            "wrong base image",
            good.clone(),
            &wrong,
            "wrong_base_image",
            "the delta was made against",
        ),
    );

    // The right image with one byte of a referenced layer altered: caught while the
    // output is being written, which must then vanish.
    let mut altered = w.old_layers[0].clone();
    altered[700] ^= 1;
    let mut m = common::Members::new();
    for (n, d) in &members.0 {
        m = m.add(n, if n == l0 { altered.clone() } else { d.clone() });
    }
    let p = put(
        "altered.tar",
        RawTar::new()
            .members(&m.add("manifest.json", manifest(&[l0, l1])))
            .bytes(),
    );
    check(
        &w,
        &Case::new(
            "base layer altered",
            good.clone(),
            &p,
            "digest_mismatch",
            "diff_id",
        ),
    );

    let cases: Vec<(&str, Vec<u8>, &'static str, &str)> = vec![
        (
            "manifest points outside",
            RawTar::new()
                .members(&members)
                .file(b"manifest.json", &manifest(&[l0, "../../../etc/passwd"]))
                .bytes(),
            "path_outside_archive",
            "\"../../../etc/passwd\" points outside the archive",
        ),
        (
            "manifest names an absolute path",
            RawTar::new()
                .members(&members)
                .file(b"manifest.json", &manifest(&[l0, "/etc/passwd"]))
                .bytes(),
            "path_outside_archive",
            "points outside the archive",
        ),
        (
            "symlink member pointing outside",
            RawTar::new()
                .members(&members)
                .link(
                    "evil/layer.tar",
                    "../../../etc/passwd",
                    tar::EntryType::Symlink,
                )
                .file(b"manifest.json", &manifest(&[l0, "evil/layer.tar"]))
                .bytes(),
            "path_outside_archive",
            "points outside the archive",
        ),
        (
            "absolute symlink member",
            RawTar::new()
                .members(&members)
                .link("evil/layer.tar", "/etc/passwd", tar::EntryType::Symlink)
                .file(b"manifest.json", &manifest(&[l0, "evil/layer.tar"]))
                .bytes(),
            "path_outside_archive",
            "\"/etc/passwd\" points outside",
        ),
        (
            "hard link member pointing outside",
            RawTar::new()
                .members(&members)
                .link("evil/layer.tar", "../etc/shadow", tar::EntryType::Link)
                .file(b"manifest.json", &manifest(&[l0, "evil/layer.tar"]))
                .bytes(),
            "path_outside_archive",
            "points outside the archive",
        ),
        (
            "member named ../ is not reachable",
            RawTar::new()
                .members(&members)
                .file(b"../evil.tar", b"x")
                .file(b"manifest.json", &manifest(&[l0, "evil.tar"]))
                .bytes(),
            "missing_file",
            "missing layer 1 \"evil.tar\"",
        ),
        (
            "symlink cycle",
            RawTar::new()
                .members(&members)
                .link("a/layer.tar", "../b/layer.tar", tar::EntryType::Symlink)
                .link("b/layer.tar", "../a/layer.tar", tar::EntryType::Symlink)
                .file(b"manifest.json", &manifest(&[l0, "a/layer.tar"]))
                .bytes(),
            "invalid_layout",
            "too many levels of links",
        ),
        (
            "duplicate entries",
            RawTar::new()
                .members(&members)
                .file(l1.as_bytes(), b"another layer")
                .file(b"manifest.json", &manifest(&[l0, l1]))
                .bytes(),
            "invalid_layout",
            "duplicate archive entry",
        ),
        (
            "duplicate manifest.json via ./",
            RawTar::new()
                .members(&members)
                .file(b"manifest.json", &manifest(&[l0, l1]))
                .file(b"./manifest.json", b"[]")
                .bytes(),
            "invalid_layout",
            "duplicate archive entry \"manifest.json\"",
        ),
        (
            "invalid UTF-8 names that collide",
            RawTar::new()
                .members(&members)
                .file(b"x\xff.tar", b"1")
                .file(b"x\xfe.tar", b"2")
                .file(b"manifest.json", &manifest(&[l0, l1]))
                .bytes(),
            "invalid_layout",
            "duplicate archive entry",
        ),
        (
            "manifest.json that is not UTF-8",
            RawTar::new()
                .members(&members)
                .file(b"manifest.json", b"[{\"Config\":\"\xff\xfe\"}]")
                .bytes(),
            "invalid_json",
            "manifest.json",
        ),
        (
            "config diff_id with the wrong algorithm",
            {
                let cfg2 = String::from_utf8(common::config(&w.old_layers, "amd64"))
                    .unwrap()
                    .replacen("sha256:", "md5:", 1)
                    .into_bytes();
                let n = format!("{}.json", &common::sha256(&cfg2)[7..]);
                RawTar::new()
                    .members(&members)
                    .file(n.as_bytes(), &cfg2)
                    .file(b"manifest.json", &archive_manifest(&n, &[l0, l1]))
                    .bytes()
            },
            "invalid_digest",
            "unsupported algorithm \"md5\"",
        ),
    ];
    for (name, bytes, kind, msg) in cases {
        let file: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let p = put(&format!("{file}.tar"), bytes);
        check(&w, &Case::new(name, good.clone(), &p, kind, msg));
    }

    // A member that claims more bytes than the archive holds.
    let mut b = RawTar::new()
        .members(&members)
        .file(b"manifest.json", &manifest(&[l0, l1]))
        .bytes();
    let end = b.len() - 1024; // the two zero blocks that end the archive
    b.truncate(end - 512);
    let p = put("truncated.tar", b);
    check(
        &w,
        &Case::new(
            "truncated archive",
            good.clone(),
            &p,
            "invalid_layout",
            "truncated",
        ),
    );
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[test]
fn bombs_are_refused_by_the_limits() {
    let w = world();
    let good = package(&w, PayloadCompression::None);
    let (members, names, cfg) = old_members(&w);
    let (l0, l1) = (names[0].as_str(), names[1].as_str());
    let zeros = vec![0u8; 64 << 20];

    // A base layer that is a gzip bomb, under the name of the layer the package needs:
    // refused while streaming, as soon as it passes the limit, and the output vanishes.
    let bomb = gzip(&zeros);
    let mut m = common::Members::new();
    for (n, d) in &members.0 {
        m = m.add(n, if n == l0 { bomb.clone() } else { d.clone() });
    }
    let m = m.add("manifest.json", archive_manifest(&cfg, &[l0, l1]));
    let p = w.dir.join("layer-bomb.tar");
    m.write(&p);
    // The output writer stops it first, at the size the package recorded; apply then
    // finds the base's layer does not hash to its diff_id and names it.
    check(
        &w,
        &Case::new(
            "gzip layer bomb",
            good.clone(),
            &p,
            "digest_mismatch",
            "layer-bomb.tar layer 0",
        ),
    );
    // Read on its own (inspect, create), the limit stops it.
    let limits = Limits {
        max_entry_size: 4 << 20,
        ..Limits::default()
    };
    let base = common::open_archive_with(&p, limits);
    let e = base.verify_layers().unwrap_err();
    assert_eq!(e.kind(), "limit_exceeded", "{e}");
    assert!(
        e.to_string()
            .contains("max entry size limit of 4194304 exceeded"),
        "{e}"
    );
    let o = Command::new(common::bin())
        .args(["inspect", &format!("docker-archive:{}", p.display())])
        .env("DOCKER_DELTA_MAX_ENTRY_SIZE", (4 << 20).to_string())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("raise it with DOCKER_DELTA_MAX_ENTRY_SIZE")
    );
    // The same bomb against the expansion ratio (library only: the ratio is enforced past
    // 1 GiB by default, which this test does not want to produce).
    let limits = Limits {
        expansion_check_after: 1 << 20,
        max_expansion_ratio: 100,
        ..Limits::default()
    };
    let base = common::open_archive_with(&p, limits);
    let e = base.verify_layers().unwrap_err();
    assert_eq!(e.kind(), "limit_exceeded", "{e}");
    assert!(
        e.to_string().contains("max expansion ratio")
            && e.to_string().contains("DOCKER_DELTA_MAX_EXPANSION_RATIO"),
        "{e}"
    );

    // A whole archive compressed (docker load accepts .tar.gz) that decompresses to far
    // more than its limit: refused while spooling, and the spool file is removed.
    let mut inner = RawTar::new()
        .members(&members)
        .file(b"manifest.json", &archive_manifest(&cfg, &[l0, l1]));
    inner = inner.file(b"padding", &zeros);
    let p = w.dir.join("archive-bomb.tar.gz");
    common::write_file(&p, &gzip(&inner.bytes()));
    check(
        &w,
        &Case::new(
            "gzip archive bomb",
            good.clone(),
            &p,
            "limit_exceeded",
            "decompressed archive",
        )
        .limit("DOCKER_DELTA_MAX_ENTRY_SIZE", 8 << 20, |l| {
            l.max_entry_size = 8 << 20
        }),
    );

    // A sparse member (GNU tar -S) of 1 TiB in a tiny archive.
    let sparse_dir = w.dir.join("sparse");
    std::fs::create_dir_all(&sparse_dir).unwrap();
    for (n, d) in &members.0 {
        let f = sparse_dir.join(n);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        common::write_file(&f, d);
    }
    common::write_file(
        &sparse_dir.join("manifest.json"),
        &archive_manifest(&cfg, &[l0, l1]),
    );
    let huge = std::fs::File::create(sparse_dir.join("huge.img")).unwrap();
    huge.set_len(1 << 40).unwrap();
    drop(huge);
    let p = w.dir.join("sparse.tar");
    let st = Command::new("tar")
        .args([
            "-cSf",
            p.to_str().unwrap(),
            "-C",
            sparse_dir.to_str().unwrap(),
            ".",
        ])
        .status()
        .unwrap();
    assert!(st.success());
    assert!(std::fs::metadata(&p).unwrap().len() < 1 << 20);
    check(
        &w,
        &Case::new(
            "sparse 1 TiB member",
            good.clone(),
            &p,
            "invalid_layout",
            "sparse archive entry \"huge.img\"",
        ),
    );

    // A member that claims 1 TiB (a lying header): refused by the entry limit at once.
    let mut h = tar::Header::new_gnu();
    h.set_size(1 << 40);
    h.set_path("huge").unwrap();
    h.set_cksum();
    let mut b = RawTar::new()
        .members(&members)
        .file(b"manifest.json", &archive_manifest(&cfg, &[l0, l1]))
        .bytes();
    b.truncate(b.len() - 1024);
    b.extend_from_slice(h.as_bytes());
    b.extend_from_slice(&[0u8; 1024]);
    let p = w.dir.join("claims-1tib.tar");
    common::write_file(&p, &b);
    check(
        &w,
        &Case::new(
            "member claims 1 TiB",
            good.clone(),
            &p,
            "limit_exceeded",
            "DOCKER_DELTA_MAX_ENTRY_SIZE",
        ),
    );
}

/// An OCI layout tar of the old image with the given index.json and extra blobs.
fn oci_archive(
    w: &World,
    path: &Path,
    index: serde_json::Value,
    extra: &[Vec<u8>],
) -> (String, usize) {
    let cfg = common::config(&w.old_layers, "amd64");
    let mut blobs = vec![cfg.clone()];
    blobs.extend(w.old_layers.iter().cloned());
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": common::sha256(&cfg), "size": cfg.len() },
        "layers": w.old_layers.iter().map(|l| serde_json::json!({ "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": common::sha256(l), "size": l.len() })).collect::<Vec<_>>(),
    }))
    .unwrap();
    blobs.push(manifest.clone());
    blobs.extend(extra.iter().cloned());
    let mut m = common::Members::new().add("oci-layout", &br#"{"imageLayoutVersion":"1.0.0"}"#[..]);
    for b in &blobs {
        m = m.add(
            &format!("blobs/sha256/{}", &common::sha256(b)[7..]),
            b.clone(),
        );
    }
    let index = if index.is_null() {
        serde_json::json!({ "schemaVersion": 2, "manifests": [{ "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": common::sha256(&manifest), "size": manifest.len() }] })
    } else {
        index
    };
    m.add("index.json", serde_json::to_vec(&index).unwrap())
        .write(path);
    (common::sha256(&manifest), manifest.len())
}

#[test]
fn hostile_oci_bases() {
    let w = world();
    let good = package(&w, PayloadCompression::None);
    let ok = w.dir.join("ok.oci.tar");
    let (md, msize) = oci_archive(&w, &ok, serde_json::Value::Null, &[]);
    // The good layout applies (the checks below are about the layout, not the package).
    let dest = ImageReference::DockerArchive {
        path: w.dir.join("from-oci.tar"),
        selector: None,
    };
    let base = open(
        &ImageReference::OciArchive {
            path: ok.clone(),
            name: None,
        },
        &OpenOptions::default(),
    )
    .unwrap();
    apply(
        &Package::open(&common::write_then(&w.dir.join("g.ddelta"), &good)).unwrap(),
        Some(base.as_ref()),
        &dest,
        &ApplyOptions::default(),
    )
    .unwrap();

    // A chain of nested indexes deeper than the limit. (A true cycle cannot be built: a
    // blob would have to contain its own digest. The reader also refuses a digest reached
    // twice.)
    let mut chain = Vec::new();
    let (mut prev, mut prev_len) = (md.clone(), msize);
    for _ in 0..12 {
        let doc = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{ "mediaType": "application/vnd.oci.image.index.v1+json", "digest": prev, "size": prev_len }],
        }))
        .unwrap();
        prev = common::sha256(&doc);
        prev_len = doc.len();
        chain.push(doc);
    }
    let index =
        |entry: serde_json::Value| serde_json::json!({ "schemaVersion": 2, "manifests": [entry] });
    type OciCase<'a> = (
        &'a str,
        serde_json::Value,
        Vec<Vec<u8>>,
        &'static str,
        &'a str,
    );
    let cases: Vec<OciCase> = vec![
        ("index nesting too deep", index(serde_json::json!({ "mediaType": "application/vnd.oci.image.index.v1+json", "digest": prev, "size": prev_len })), chain, "limit_exceeded", "max index nesting depth limit of 8 exceeded (9); raise it with DOCKER_DELTA_MAX_INDEX_DEPTH"),
        ("sha512 digest", index(serde_json::json!({ "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": format!("sha512:{}", "a".repeat(128)), "size": 3 })), vec![], "invalid_digest", "unsupported algorithm \"sha512\""),
        ("short digest", index(serde_json::json!({ "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:abcd", "size": 3 })), vec![], "invalid_field", "manifests[0].digest: Invalid digest length 4"),
        ("digest of another blob", index(serde_json::json!({ "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": common::sha256(&w.old_layers[0]), "size": w.old_layers[0].len() })), vec![], "invalid_json", "invalid JSON at line 1, column 1"),
        ("manifest size lies", index(serde_json::json!({ "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": msize + 1 })), vec![], "size_mismatch", "expected"),
        ("manifest claims 1 TiB", index(serde_json::json!({ "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": 1u64 << 40 })), vec![], "limit_exceeded", "DOCKER_DELTA_MAX_JSON_SIZE"),
    ];
    for (name, idx, extra, kind, msg) in cases {
        let p = w.dir.join(format!("{}.oci.tar", name.replace(' ', "_")));
        oci_archive(&w, &p, idx, &extra);
        check(
            &w,
            &Case::new(name, good.clone(), &p, kind, msg)
                .base_ref(format!("oci-archive:{}", p.display())),
        );
    }
}

/// Layers are data: entries with `../` or absolute names, links that point outside, and
/// duplicates are carried byte for byte and never extracted, so nothing is written outside
/// the output whatever a layer holds.
#[test]
fn hostile_layer_entries_are_carried_not_extracted() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let stamp = format!("dd-escape-{}", std::process::id());
    let rel = format!("../../../../../../../tmp/{stamp}-rel");
    let abs = format!("/tmp/{stamp}-abs");
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &[u8], kind: tar::EntryType, link: Option<&str>, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name);
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        if let Some(l) = link {
            h.set_link_name(l).unwrap();
        }
        h.set_cksum();
        b.append(&h, data).unwrap();
    };
    add(
        rel.as_bytes(),
        tar::EntryType::Regular,
        None,
        b"escaped by ..",
    );
    add(
        abs.as_bytes(),
        tar::EntryType::Regular,
        None,
        b"escaped by /",
    );
    add(
        b"link-out",
        tar::EntryType::Symlink,
        Some("/etc/passwd"),
        b"",
    );
    add(
        b"hard-out",
        tar::EntryType::Link,
        Some("../../etc/shadow"),
        b"",
    );
    add(b"dup", tar::EntryType::Regular, None, b"one");
    add(b"dup", tar::EntryType::Regular, None, b"two");
    add(
        b"bad-\xff\xfe-utf8",
        tar::EntryType::Regular,
        None,
        b"name is not UTF-8",
    );
    let hostile = b.into_inner().unwrap();
    let base = common::layer(&[("etc/os-release", b"ID=t\n")]);
    let (old, _) = common::docker_archive(d, "old.tar", Some("t/h:1"), std::slice::from_ref(&base));
    let (new, new_id) =
        common::docker_archive(d, "new.tar", Some("t/h:2"), &[base, hostile.clone()]);
    let pkg = d.join("h.ddelta");
    create(
        Some(common::open_archive(&old).as_ref()),
        common::open_archive(&new).as_ref(),
        &pkg,
        &CreateOptions::default(),
    )
    .unwrap();
    let out = d.join("out.tar");
    let dest = ImageReference::DockerArchive {
        path: out.clone(),
        selector: None,
    };
    let r = apply(
        &Package::open(&pkg).unwrap(),
        Some(common::open_archive(&old).as_ref()),
        &dest,
        &ApplyOptions::default(),
    )
    .unwrap();
    assert_eq!(r.image_id.to_string(), new_id);
    assert_eq!(
        common::open_archive(&out).read_layer(1, u64::MAX).unwrap(),
        hostile
    );
    for p in [format!("/tmp/{stamp}-rel"), abs] {
        assert!(!Path::new(&p).exists(), "{p} was written");
    }
}

// --- the output side: a read-only directory, a full disk ------------------------------

/// A tmpfs mounted for one test, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` at a new directory, or says why it cannot.
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).unwrap();
        let o = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(at)
            .output();
        match o {
            Ok(o) if o.status.success() => Some(Tmpfs(at.to_path_buf())),
            Ok(o) => skip(&format!(
                "mount failed: {}",
                String::from_utf8_lossy(&o.stderr)
            )),
            Err(e) => skip(&format!("cannot run mount: {e}")),
        }
    }
    fn remount_ro(&self) {
        let st = Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(st.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn skip(why: &str) -> Option<Tmpfs> {
    if std::env::var("DOCKER_DELTA_REQUIRE_ROOT").as_deref() == Ok("1") {
        panic!("{why}, but DOCKER_DELTA_REQUIRE_ROOT=1");
    }
    eprintln!("skipping: {why} (needs root; set DOCKER_DELTA_REQUIRE_ROOT=1 to make this fail)");
    None
}

#[test]
fn read_only_output_directory() {
    let w = world();
    let good = package(&w, PayloadCompression::Zstd);
    let pkg = common::write_then(&w.dir.join("ro.ddelta"), &good);
    let Some(fs) = Tmpfs::mount(&w.dir.join("ro"), "4m") else {
        return;
    };
    common::write_file(&fs.0.join("keep.txt"), b"mine");
    fs.remount_ro();
    let before = common::snapshot(&fs.0);
    let dest = ImageReference::DockerArchive {
        path: fs.0.join("image.tar"),
        selector: None,
    };
    let e = apply(
        &Package::open(&pkg).unwrap(),
        Some(common::open_archive(&w.old).as_ref()),
        &dest,
        &ApplyOptions::default(),
    )
    .unwrap_err();
    assert_eq!(e.kind(), "io", "{e}");
    assert!(e.to_string().contains("Read-only file system"), "{e}");
    assert_eq!(common::snapshot(&fs.0), before);
    let o = Command::new(common::bin())
        .args([
            "apply",
            pkg.to_str().unwrap(),
            "--base",
            w.old.to_str().unwrap(),
            "-o",
        ])
        .arg(fs.0.join("image.tar"))
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("Read-only file system"));
    assert_eq!(common::snapshot(&fs.0), before);
    // create into it fails the same way.
    let e = create(
        Some(common::open_archive(&w.old).as_ref()),
        common::open_archive(&w.new).as_ref(),
        &fs.0.join("p.ddelta"),
        &CreateOptions::default(),
    )
    .unwrap_err();
    assert_eq!(e.kind(), "io", "{e}");
    assert_eq!(common::snapshot(&fs.0), before);
}

#[test]
fn full_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let base = common::layer(&[("etc/os-release", b"ID=t\n")]);
    // 2 MiB that does not compress: the package fits on disk, the image does not.
    let big = common::layer(&[("data/blob", &common::noise(11, 2 << 20))]);
    let (old, _) = common::docker_archive(d, "old.tar", Some("t/f:1"), std::slice::from_ref(&base));
    let (new, _) = common::docker_archive(d, "new.tar", Some("t/f:2"), &[base, big]);
    let pkg = d.join("f.ddelta");
    create(
        Some(common::open_archive(&old).as_ref()),
        common::open_archive(&new).as_ref(),
        &pkg,
        &CreateOptions::default(),
    )
    .unwrap();
    let Some(fs) = Tmpfs::mount(&d.join("small"), "1m") else {
        return;
    };
    common::write_file(&fs.0.join("keep.txt"), b"mine");
    let before = common::snapshot(&fs.0);
    for out in [
        "docker-archive:image.tar",
        "oci-archive:image.oci.tar",
        "oci:layout",
    ] {
        let (t, p) = out.split_once(':').unwrap();
        let dest = ImageReference::parse(&format!("{t}:{}", fs.0.join(p).display())).unwrap();
        let e = apply(
            &Package::open(&pkg).unwrap(),
            Some(common::open_archive(&old).as_ref()),
            &dest,
            &ApplyOptions::default(),
        )
        .unwrap_err();
        assert_eq!(e.kind(), "io", "{out}: {e}");
        assert!(
            e.to_string().contains("No space left on device"),
            "{out}: {e}"
        );
        assert_eq!(common::snapshot(&fs.0), before, "{out}");
    }
    let o = Command::new(common::bin())
        .args([
            "apply",
            pkg.to_str().unwrap(),
            "--base",
            old.to_str().unwrap(),
            "-o",
        ])
        .arg(fs.0.join("image.tar"))
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("No space left on device"));
    assert_eq!(common::snapshot(&fs.0), before);
    // A package too big for the disk: create fails and leaves nothing.
    let e = create(
        None,
        common::open_archive(&new).as_ref(),
        &fs.0.join("p.ddelta"),
        &CreateOptions {
            compression: CompressionSpec {
                algorithm: PayloadCompression::None,
                level: 0,
            },
            ..CreateOptions::default()
        },
    )
    .unwrap_err();
    assert_eq!(e.kind(), "io", "{e}");
    assert_eq!(common::snapshot(&fs.0), before);
}

#[test]
fn existing_output_is_kept() {
    let w = world();
    let good = package(&w, PayloadCompression::Zstd);
    let target = w.out.join("keep.txt");
    let case = Case::new(
        "output exists",
        good,
        &w.old,
        "output_exists",
        "output exists; use --force",
    );
    // check() writes to out/image.tar; this case writes onto the existing file instead.
    let pkg = common::write_then(&w.dir.join("e.ddelta"), &case.package);
    let before = common::snapshot(&w.out);
    let dest = ImageReference::DockerArchive {
        path: target.clone(),
        selector: None,
    };
    let e = apply(
        &Package::open(&pkg).unwrap(),
        Some(common::open_archive(&w.old).as_ref()),
        &dest,
        &ApplyOptions::default(),
    )
    .unwrap_err();
    assert_eq!(e.kind(), case.kind);
    assert!(e.to_string().contains(&case.msg), "{e}");
    assert_eq!(common::snapshot(&w.out), before);
}

/// Bad arguments are invalid input (3), not clap's 2, which this command gives a missing
/// Docker daemon; `--help` and `--version` succeed.
#[test]
fn usage_errors_exit_with_invalid_input() {
    let run = |args: &[&str]| Command::new(common::bin()).args(args).output().unwrap();
    for args in [
        &["create", "--method", "bogus", "a", "b", "-o", "c"][..],
        &["apply", "x.ddelta"],
        &["info"],
        &["frobnicate"],
    ] {
        let o = run(args);
        assert_eq!(o.status.code(), Some(3), "{args:?}");
        assert!(!o.stderr.is_empty(), "{args:?}");
    }
    // `-o -` made a file named `-`: refused, before any image is opened.
    let o = run(&["create", "docker-daemon:a:1", "-o", "-"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("standard output is not supported"));
    assert!(!Path::new("-").exists());
    for args in [&["--help"][..], &["--version"], &["apply", "--help"]] {
        let o = run(args);
        assert_eq!(o.status.code(), Some(0), "{args:?}");
        assert!(!o.stdout.is_empty());
    }
}

/// A report that cannot be written (stdout on a full disk) is an error naming standard
/// output, not a panic.
#[test]
fn unwritable_stdout_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let layer = common::layer(&[("a", b"a")]);
    let (archive, _) = common::docker_archive(dir.path(), "i.tar", Some("t/i:1"), &[layer]);
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let o = Command::new(common::bin())
        .args(["inspect", &format!("docker-archive:{}", archive.display())])
        .stdout(full)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("standard output: No space left"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// An output that is one of the inputs is refused even with --force (it would replace
/// the image or package being read), and so is a directory as the package; both before
/// any work, and the inputs are left as they were.
#[test]
fn outputs_that_are_inputs_or_directories_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (old, _) = common::docker_archive(
        d,
        "old.tar",
        Some("t/a:1"),
        &[common::layer(&[("a", b"1")])],
    );
    let (new, _) = common::docker_archive(
        d,
        "new.tar",
        Some("t/a:2"),
        &[common::layer(&[("a", b"2")])],
    );
    let before = common::snapshot(d);
    let run = |args: &[&std::ffi::OsStr]| Command::new(common::bin()).args(args).output().unwrap();
    let s = |p: &Path| p.as_os_str().to_owned();
    let pkg = d.join("p.ddelta");
    for out in [&new, &old] {
        let o = run(&[
            "create".as_ref(),
            &s(&old),
            &s(&new),
            "-o".as_ref(),
            &s(out),
            "--force".as_ref(),
        ]);
        assert_eq!(o.status.code(), Some(3));
        assert!(String::from_utf8_lossy(&o.stderr).contains("is also an input"));
    }
    let o = run(&["create".as_ref(), &s(&old), &s(&new), "-o".as_ref(), &s(d)]);
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("is a directory"));
    assert!(common::snapshot(d) == before);
    let o = run(&[
        "create".as_ref(),
        &s(&old),
        &s(&new),
        "-o".as_ref(),
        &s(&pkg),
    ]);
    assert!(o.status.success());
    let before = common::snapshot(d);
    for out in [&pkg, &old] {
        let o = run(&[
            "apply".as_ref(),
            &s(&pkg),
            "--base".as_ref(),
            &s(&old),
            "-o".as_ref(),
            &s(out),
            "--force".as_ref(),
        ]);
        assert_eq!(
            o.status.code(),
            Some(3),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(String::from_utf8_lossy(&o.stderr).contains("is also an input"));
    }
    assert!(common::snapshot(d) == before);
}

/// A compression level out of range is invalid input naming the option; a new-bytes level
/// alone sets the level of the default new-bytes compression.
#[test]
fn compression_levels_are_checked_and_new_bytes_level_stands_alone() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (old, _) = common::docker_archive(
        d,
        "old.tar",
        Some("t/a:1"),
        &[common::layer(&[("a", b"1")])],
    );
    let (new, _) = common::docker_archive(
        d,
        "new.tar",
        Some("t/a:2"),
        &[common::layer(&[("a", b"2")])],
    );
    let pkg = d.join("p.ddelta");
    let create = |extra: &[&str]| {
        Command::new(common::bin())
            .arg("create")
            .args([&old, &new])
            .arg("-o")
            .arg(&pkg)
            .arg("--force")
            .args(extra)
            .output()
            .unwrap()
    };
    let o = create(&["--compression", "xz", "--level", "10"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--level: compression level 10"));
    let o = create(&["--new-bytes-level", "3"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let info = Command::new(common::bin())
        .arg("info")
        .arg(&pkg)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&info.stdout).contains("zstd level 3"));
}

/// A directory given as an archive or a package is invalid input that says so (it was a
/// bare "Is a directory", exit 1), pointing an OCI layout to `oci:`.
#[test]
fn directories_as_archives_or_packages_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    std::fs::create_dir(&layout).unwrap();
    std::fs::write(
        layout.join("index.json"),
        br#"{"schemaVersion":2,"manifests":[]}"#,
    )
    .unwrap();
    let run = |args: &[String]| Command::new(common::bin()).args(args).output().unwrap();
    let cases = [
        (
            vec!["inspect".into(), format!("docker-archive:{}", layout.display())],
            format!("is a directory; docker-archive: needs an archive file; it is an OCI layout: oci:{}", layout.display()),
        ),
        (
            vec!["inspect".into(), format!("oci-archive:{}", dir.path().display())],
            "is a directory; oci-archive: needs an archive file".to_string(),
        ),
        (
            vec!["info".into(), dir.path().display().to_string()],
            "is a directory, not a package file".to_string(),
        ),
    ];
    for (args, want) in cases {
        let o = run(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(3), "{args:?}: {err}");
        assert!(err.contains(&want), "{args:?}: {err}");
    }
}

#[test]
fn measured_runs_report_the_commands_own_peak_memory() {
    // The harness the memory cases rely on: a command that touches 64 MiB reports at least
    // that, and one that touches little reports far less, even while the test process
    // itself holds (and has touched) 256 MiB.
    let held = vec![1u8; 256 << 20];
    let big = common::run_measured(Command::new("python3").args([
        "-c",
        "b = bytearray(64 << 20); b[::4096] = b'x' * len(b[::4096])",
    ]));
    assert!(big.status.success(), "{}", big.stderr_text());
    assert!(big.peak_rss >= 64 << 20, "peak {}", big.peak_rss);
    let small = common::run_measured(&mut Command::new("true"));
    assert!(small.status.success());
    assert!(small.peak_rss < 32 << 20, "peak {}", small.peak_rss);
    assert_eq!(held.iter().map(|&b| b as usize).sum::<usize>(), 256 << 20);
    // Exit codes and deaths by signal come through as the command's own.
    let code =
        common::run_measured(Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]));
    assert_eq!(code.status.code(), Some(3));
    assert_eq!(
        (code.stdout.as_slice(), code.stderr.as_slice()),
        (&b"out\n"[..], &b"err\n"[..])
    );
    let killed = common::run_measured(Command::new("sh").args(["-c", "kill -TERM $$"]));
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(killed.status.signal(), Some(15));
}

/// `apply -o -` streams the same archive `-o FILE` writes, byte for byte; it refuses a
/// terminal as standard output and `--json` (whose report would go into the archive).
#[test]
fn streamed_output_is_the_file_output_and_refuses_terminals() {
    let w = world();
    let pkg = w.dir.join("p.ddelta");
    std::fs::write(&pkg, package(&w, PayloadCompression::Zstd)).unwrap();
    let base = format!("docker-archive:{}", w.old.display());
    let file = w.dir.join("file.tar");
    let o = Command::new(common::bin())
        .args(["apply", pkg.to_str().unwrap(), "--base", &base, "-o"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let streamed = w.dir.join("streamed.tar");
    let o = Command::new(common::bin())
        .args(["apply", pkg.to_str().unwrap(), "--base", &base, "-o", "-"])
        .stdout(std::fs::File::create(&streamed).unwrap())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        std::fs::read(&streamed).unwrap() == std::fs::read(&file).unwrap(),
        "the stream differs from the file"
    );
    // The files a loader starts from come last.
    let names: Vec<String> = tar::Archive::new(std::fs::File::open(&streamed).unwrap())
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert_eq!(
        names[names.len() - 2..],
        ["index.json", "manifest.json"],
        "{names:?}"
    );

    let o = Command::new(common::bin())
        .args([
            "apply",
            pkg.to_str().unwrap(),
            "--base",
            &base,
            "-o",
            "-",
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3));
    assert!(o.stdout.is_empty());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--json"));
    // A terminal on standard output, from script(1).
    let cmd = format!(
        "'{}' apply '{}' --base '{base}' -o -",
        common::bin().display(),
        pkg.display()
    );
    let o = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("standard output is a terminal"));
}
