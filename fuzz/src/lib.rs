//! The fuzz targets' bodies, and what they share: small limits, a scratch directory, a
//! fixed small base image built in-process, and the checksum fix-up that lets mutated
//! package headers get past the header checksum.
//!
//! Each `fuzz_targets/NAME.rs` calls [`NAME`](self) here, and `tests/regressions.rs`
//! includes this file to replay the inputs kept in `fuzz/regressions/NAME/` through the
//! same code in the normal test run. So this file uses only crates the main crate depends
//! on (no libfuzzer-sys).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use std::io::Read;

use docker_delta::delta::apply::{apply as apply_package, ApplyOptions};
use docker_delta::delta::files::{self, LayerData};
use docker_delta::delta::format::Package;
use docker_delta::manifest::{detect, ConfigView, Document};
use docker_delta::transport::Limits;
use docker_delta::{ImageReference, ImageSource, OpenOptions};
use sha2::{Digest as _, Sha256};

/// Limits small enough that one input cannot take more than a moment or a few MiB, while
/// every real seed stays inside them.
pub fn limits() -> Limits {
    Limits {
        max_json_size: 1 << 20,
        max_layers: 64,
        max_index_depth: 8,
        max_entry_size: 64 << 20,
        max_expansion_ratio: 100,
        expansion_check_after: 1 << 20,
        max_archive_index: 1 << 20,
        max_json_values: 1 << 16,
        max_memory: MAX_LAYER_MEMORY,
    }
}

/// The memory bound of an apply under fuzzing: whole-layer deltas of up to 16 MiB of
/// source and target together are decoded (see `codec::whole_layer_memory`).
pub const MAX_LAYER_MEMORY: u64 = docker_delta::delta::codec::RESERVED_MEMORY + (128 << 20);

/// A scratch directory for this process, in `TMPDIR` (scripts/fuzz.sh points it to a
/// directory in /dev/shm that it removes afterwards: inputs are written to files at every
/// execution).
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        tempfile::Builder::new()
            .prefix("dd-fuzz-")
            .tempdir()
            .expect("scratch dir")
            .keep()
    })
}

/// Writes `data` to `name` in the scratch directory and returns the path.
pub fn input_file(name: &str, data: &[u8]) -> PathBuf {
    let p = scratch().join(name);
    std::fs::write(&p, data).expect("write fuzz input");
    p
}

/// Names in a directory (empty if it does not exist).
pub fn entries(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| {
                e.expect("dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Makes the two checksums and the payload length of a package prefix agree with the
/// bytes that follow, so that mutations of the header JSON and the payload reach the
/// parser and the decoders instead of stopping at the checksum. The header length is
/// clamped to the bytes present.
pub fn fix_package(data: &[u8]) -> Vec<u8> {
    let mut v = data.to_vec();
    if v.len() < 96 {
        return v;
    }
    let avail = (v.len() - 96) as u64;
    let mut h = [0u8; 8];
    h.copy_from_slice(&v[16..24]);
    let h = u64::from_le_bytes(h).min(avail);
    v[16..24].copy_from_slice(&h.to_le_bytes());
    let header_end = 96 + h as usize;
    let header_sha: [u8; 32] = Sha256::digest(&v[96..header_end]).into();
    v[24..56].copy_from_slice(&header_sha);
    let p = avail - h;
    v[56..64].copy_from_slice(&p.to_le_bytes());
    let payload_sha: [u8; 32] = Sha256::digest(&v[header_end..]).into();
    v[64..96].copy_from_slice(&payload_sha);
    v
}

/// A layer tar with the given regular files (fixed mtimes, so it is reproducible).
pub fn layer(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        b.append_data(&mut h, name, *data).expect("tar");
    }
    b.into_inner().expect("tar")
}

fn sha256(data: &[u8]) -> String {
    let d: [u8; 32] = Sha256::digest(data).into();
    let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// A docker-archive (Docker >= 25 style paths) with one image, as bytes.
pub fn docker_archive_bytes(tag: &str, layers: &[Vec<u8>]) -> Vec<u8> {
    let diff_ids: Vec<String> = layers.iter().map(|l| sha256(l)).collect();
    let cfg = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": { "Env": ["PATH=/bin"] },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    }))
    .expect("json");
    let cfg_path = format!("blobs/sha256/{}", &sha256(&cfg)[7..]);
    let mut members: Vec<(String, Vec<u8>)> = Vec::new();
    let mut layer_paths = Vec::new();
    for l in layers {
        let p = format!("blobs/sha256/{}", &sha256(l)[7..]);
        if !members.iter().any(|(n, _)| *n == p) {
            members.push((p.clone(), l.clone()));
        }
        layer_paths.push(p);
    }
    members.push((cfg_path.clone(), cfg));
    let manifest =
        serde_json::json!([{ "Config": cfg_path, "RepoTags": [tag], "Layers": layer_paths }]);
    members.push((
        "manifest.json".into(),
        serde_json::to_vec(&manifest).expect("json"),
    ));
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in &members {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, &data[..]).expect("tar");
    }
    b.into_inner().expect("tar")
}

/// Deterministic, somewhat compressible content.
pub fn content(seed: u64, len: usize) -> Vec<u8> {
    let words: [&[u8]; 6] = [
        b"alpha ", b"beta ", b"gamma ", b"delta\n", b"eps ", b"zeta ",
    ];
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if x % 4 == 0 {
            out.extend_from_slice(&x.to_le_bytes());
        } else {
            out.extend_from_slice(words[(x % 6) as usize]);
        }
    }
    out.truncate(len);
    out
}

/// A text that changes a little from one `version` to the next, like a changelog.
pub fn changelog(version: usize) -> Vec<u8> {
    (0..version)
        .rev()
        .map(|i| {
            format!(
                "fuzz ({i}.0-1) unstable; urgency=low\n\n  * Change {}.\n\n",
                i * 37 % 101
            )
        })
        .collect::<String>()
        .into_bytes()
}

/// `raw` as a gzip member the way `gzip -9n` writes it (which the files codec re-makes
/// from the text, so it ships text patches for it).
pub fn gzipped(raw: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut w = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::new(9));
    w.write_all(raw).expect("gzip");
    w.finish().expect("gzip")
}

/// The layers of the fixed base image (old) and of the images the seed packages rebuild.
pub fn base_layers() -> Vec<Vec<u8>> {
    vec![
        layer(&[
            ("etc/os-release", b"ID=fuzz\n"),
            ("bin/tool", &content(1, 6000)),
        ]),
        layer(&[
            ("app/lib.so.1", &content(2, 8000)),
            ("app/config", b"v=1\n"),
            ("app/changelog.gz", &gzipped(&changelog(40))),
        ]),
    ]
}

/// Synthetic kernel modules with split BTF: the library's own generator (its tests use
/// it too), included rather than copied.
mod btf_sample {
    include!("../../src/delta/files/btf/sample.rs");
}

/// Synthetic x86-64 and AArch64 libraries and their next builds: the library's own generator (its
/// tests use it too), included rather than copied.
mod program_sample {
    include!("../../src/delta/files/refs/sample.rs");
}

/// The x86-64 and AArch64 libraries in the `files` target's old layers, and their next
/// builds (seeds patch them with their references projected: `XDIFF`).
pub fn seed_programs() -> [(Vec<u8>, Vec<u8>); 2] {
    let edits = [(0, 7), (2, 30), (1, 45)];
    [program_sample::EM_X86_64, program_sample::EM_AARCH64]
        .map(|machine| program_sample::program_pair(machine, 5, 60, &edits))
}

/// A layer of `n` kernel modules of `build` under `lib/modules/6.1.0-<build>/` (the
/// directory renamed between builds, as Debian's kernel packages do): their `.BTF`
/// sections are generated for the build, their code is random.
pub fn modules_layer(n: u64, build: btf_sample::Build) -> Vec<u8> {
    modules_layer_and(n, build, &[])
}

/// [`modules_layer`] with more files after the modules.
pub fn modules_layer_and(n: u64, build: btf_sample::Build, more: &[(&str, &[u8])]) -> Vec<u8> {
    let modules: Vec<(String, Vec<u8>)> = (0..n)
        .map(|i| {
            let btf = btf_sample::generated(i, build);
            let name = format!("lib/modules/6.1.0-{}/m{i}.ko", build.type_base);
            (name, btf_sample::module(&btf, &content(100 + i, 1500)))
        })
        .collect();
    let mut files: Vec<(&str, &[u8])> = modules
        .iter()
        .map(|(n, m)| (n.as_str(), m.as_slice()))
        .collect();
    files.extend_from_slice(more);
    layer(&files)
}

/// A jar as `java.util.zip` writes one: members deflated at zlib's default level, the
/// even ones streamed (sizes in a data descriptor after the data), a central directory.
pub fn jar(members: &[(&str, &[u8])]) -> Vec<u8> {
    let (mut z, mut central) = (Vec::new(), Vec::new());
    for (i, (name, text)) in members.iter().enumerate() {
        let mut c = flate2::Compress::new(flate2::Compression::new(6), false);
        let mut body = Vec::with_capacity(text.len() + 64);
        c.compress_vec(text, &mut body, flate2::FlushCompress::Finish)
            .expect("deflate");
        let mut crc = flate2::Crc::new();
        crc.update(text);
        let mut sizes = crc.sum().to_le_bytes().to_vec();
        sizes.extend_from_slice(&(body.len() as u32).to_le_bytes());
        sizes.extend_from_slice(&(text.len() as u32).to_le_bytes());
        let streamed = i % 2 == 0;
        let at = z.len() as u32;
        z.extend_from_slice(b"PK\x03\x04\x14\x00");
        z.extend_from_slice(&[if streamed { 8 } else { 0 }, 0, 8, 0, 0, 0, 0, 0]);
        z.extend_from_slice(if streamed { &[0; 12][..] } else { &sizes });
        z.extend_from_slice(&(name.len() as u16).to_le_bytes());
        z.extend_from_slice(&[0, 0]);
        z.extend_from_slice(name.as_bytes());
        z.extend_from_slice(&body);
        if streamed {
            z.extend_from_slice(b"PK\x07\x08");
            z.extend_from_slice(&sizes);
        }
        central.extend_from_slice(b"PK\x01\x02\x14\x00\x14\x00");
        central.extend_from_slice(&[if streamed { 8 } else { 0 }, 0, 8, 0, 0, 0, 0, 0]);
        central.extend_from_slice(&sizes);
        central.extend_from_slice(&(name.len() as u16).to_le_bytes());
        central.extend_from_slice(&[0; 12]);
        central.extend_from_slice(&at.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let n = (members.len() as u16).to_le_bytes();
    let cd = z.len() as u32;
    z.extend_from_slice(&central);
    z.extend_from_slice(b"PK\x05\x06\x00\x00\x00\x00");
    z.extend_from_slice(&[n[0], n[1], n[0], n[1]]);
    z.extend_from_slice(&(central.len() as u32).to_le_bytes());
    z.extend_from_slice(&cd.to_le_bytes());
    z.extend_from_slice(&[0, 0]);
    z
}

/// The jar in the `files` target's old layers (with the kernel modules), and its next
/// version: two members edited, one added.
pub fn seed_jars() -> (Vec<u8>, Vec<u8>) {
    let class = |seed: u64, n: usize| content(seed, n);
    let (a, b, c) = (class(30, 4000), class(31, 2500), class(32, 900));
    let mut a2 = a.clone();
    a2[1000..1010].copy_from_slice(b"0123456789");
    let mut b2 = b.clone();
    b2.extend_from_slice(&class(33, 300));
    let old = jar(&[
        ("META-INF/MANIFEST.MF", b"Manifest-Version: 1.0\r\n"),
        ("A.class", &a),
        ("B.class", &b),
    ]);
    let new = jar(&[
        ("META-INF/MANIFEST.MF", b"Manifest-Version: 1.0\r\n"),
        ("A.class", &a2),
        ("B.class", &b2),
        ("C.class", &c),
    ]);
    (old, new)
}

/// Kernel modules in the `files` target's old layers, and rebuilt for the next kernel in
/// a seed: enough for the encoder to learn a BTF map and patch them with BDIFF.
const SEED_MODULES: u64 = 4;

/// Layers of a new image: the same base, a changed app layer, an extra layer.
pub fn new_layers() -> Vec<Vec<u8>> {
    let mut lib = content(2, 8000);
    lib[100..140].copy_from_slice(&content(9, 40));
    lib.extend_from_slice(&content(3, 500));
    vec![
        base_layers()[0].clone(),
        layer(&[
            ("app/lib.so.2", &lib),
            ("app/config", b"v=2\n"),
            ("app/new", b"new file"),
            ("app/changelog.gz", &gzipped(&changelog(42))),
        ]),
        layer(&[("data/extra", &content(4, 3000))]),
    ]
}

/// The fixed base image, written once per process; the apply target rebuilds against it.
pub fn base_archive() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        input_file(
            "base.tar",
            &docker_archive_bytes("fuzz/app:1", &base_layers()),
        )
    })
}

/// Manifest detection and parsing, every format: bytes in, a kind and a model or a clean
/// error out. Detection and parsing must agree on the kind.
pub fn manifest(data: &[u8]) {
    let detected = detect(data, "fuzz.json");
    match Document::parse(data, "fuzz.json") {
        Ok(doc) => {
            let kind = detected.as_ref().expect("parsed but not detected");
            assert_eq!(*kind, doc.kind());
        }
        Err(e) => {
            let _ = e.to_string();
            let _ = e.kind();
        }
    }
    if let Ok(c) = ConfigView::parse(data, "config.json") {
        let _ = c.platform.to_string();
    }
}

/// The tar header reader: never panics, holds no record past its limit (the target runs
/// under a malloc limit), reads the same members whether it skips data by reading or by
/// seeking, and gives members whose offsets are in order. The files codec's scanner, which
/// shares its block functions, never panics on the same bytes and accounts for them all.
pub fn tar_headers(data: &[u8]) {
    use docker_delta::tar_headers::{TarHeaders, BLOCK, MAX_EXTENSION_RECORD};
    fn read_all<S: docker_delta::tar_headers::Source>(
        mut it: TarHeaders<S>,
    ) -> (Vec<docker_delta::tar_headers::Member>, Option<String>) {
        let mut members = Vec::new();
        loop {
            match it.next_member() {
                Ok(Some(m)) => members.push(m),
                Ok(None) => return (members, None),
                Err(e) => return (members, Some(e.to_string())),
            }
        }
    }
    let (streamed, stream_err) = read_all(TarHeaders::new(data));
    let (sought, seek_err) = read_all(TarHeaders::seekable(std::io::Cursor::new(data)));
    assert_eq!(streamed, sought);
    assert_eq!(
        stream_err.is_some(),
        seek_err.is_some(),
        "{stream_err:?} / {seek_err:?}"
    );
    let mut end = 0u64;
    for m in &streamed {
        assert!(m.header_offset >= end);
        assert!(m.data_offset >= m.header_offset + BLOCK as u64);
        assert_eq!(m.data_offset % BLOCK as u64, 0);
        assert!(m.path.len() as u64 <= MAX_EXTENSION_RECORD.max(256));
        assert!(m.link.len() as u64 <= MAX_EXTENSION_RECORD.max(100));
        end = m.data_offset.saturating_add(m.size);
    }
    let idx = files::tarscan::scan(data, None).expect("scanning a slice cannot fail");
    assert_eq!(idx.len, data.len() as u64);
    let _ = docker_delta::delta::plan::TarSummary::read(data);
}

/// Image references: parse never panics, and whatever parses prints back to a string that
/// parses to the same reference. Inputs that could name files outside the working
/// directory are skipped (`parse` looks at the disk for bare paths).
pub fn reference(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if s.contains('/') || s.contains("..") || s.contains('~') || s.contains('\0') {
        return;
    }
    let Ok(r) = ImageReference::parse(s) else {
        return;
    };
    let printed = r.to_string();
    let back = ImageReference::parse(&printed)
        .unwrap_or_else(|e| panic!("{s:?} parsed as {r:?}, printed {printed:?}, which fails: {e}"));
    assert_eq!(back, r, "{s:?} printed as {printed:?}");
}

fn read_image(reference: ImageReference, platform: Option<docker_delta::Platform>) {
    let options = OpenOptions {
        platform,
        limits: limits(),
        timeouts: None,
        ..Default::default()
    };
    let Ok(src) = docker_delta::open(&reference, &options) else {
        return;
    };
    let image = src.image();
    let _ = image.report(None);
    if let Ok(checks) = src.verify_layers() {
        assert_eq!(checks.len(), image.layers.len());
    }
}

/// The docker-archive reader: a tar in, an image model out, then every layer read and
/// verified (bounded by small limits).
pub fn docker_archive(data: &[u8]) {
    let path = input_file("input.tar", data);
    read_image(
        ImageReference::DockerArchive {
            path,
            selector: None,
        },
        None,
    );
}

/// The oci-archive reader: a tar of an OCI layout in, an image model out, then every layer
/// read and verified (bounded by small limits).
pub fn oci_archive(data: &[u8]) {
    let path = input_file("input.tar", data);
    let platform = docker_delta::Platform::parse("linux/amd64").expect("platform");
    read_image(
        ImageReference::OciArchive { path, name: None },
        Some(platform),
    );
}

fn read_package(bytes: &[u8]) {
    let path = input_file("input.ddelta", bytes);
    let Ok(p) = Package::open_with(&path, &limits()) else {
        return;
    };
    let _ = p.header.payload_uncompressed_size();
    if p.verify_payload().is_err() {
        return;
    }
    let Ok(mut blobs) = p.blobs() else { return };
    for i in 0..p.header.blobs.len() {
        let Ok(mut s) = blobs.open(i) else { return };
        let mut sink = Vec::new();
        if s.read_to_end(&mut sink).is_err() {
            return;
        }
        assert_eq!(sink.len() as u64, p.header.blobs[i].size);
    }
}

/// The delta package reader: the bytes as given, then with the prefix's checksums fixed up
/// so that mutated headers and payloads reach the JSON parser and the decompressors. Every
/// blob is read and verified.
pub fn package(data: &[u8]) {
    read_package(data);
    read_package(&fix_package(data));
}

/// The fixed base image, opened once.
pub fn base() -> &'static dyn ImageSource {
    static BASE: OnceLock<Box<dyn ImageSource>> = OnceLock::new();
    BASE.get_or_init(|| {
        let r = ImageReference::DockerArchive {
            path: base_archive().to_path_buf(),
            selector: None,
        };
        docker_delta::open(&r, &OpenOptions::default()).expect("fixed base image")
    })
    .as_ref()
}

/// Apply on a fuzzed package (checksums fixed up) against the fixed base image: Ok, or a
/// clean error that leaves the output directory empty (no output, no temporary file).
pub fn apply(data: &[u8]) {
    let bytes = fix_package(data);
    let path = input_file("input.ddelta", &bytes);
    let Ok(package) = Package::open_with(&path, &limits()) else {
        return;
    };
    let out_dir = scratch().join("out");
    let _ = std::fs::remove_dir_all(&out_dir);
    std::fs::create_dir_all(&out_dir).expect("out dir");
    let dest = ImageReference::DockerArchive {
        path: out_dir.join("image.tar"),
        selector: None,
    };
    let options = ApplyOptions {
        max_layer_memory: MAX_LAYER_MEMORY,
        ..ApplyOptions::default()
    };
    match apply_package(&package, Some(base()), &dest, &options) {
        Ok(report) => {
            let out = report.output.expect("an output");
            assert!(out.is_file());
        }
        Err(e) => {
            let left = entries(&out_dir);
            assert!(left.is_empty(), "apply failed ({e}) but left {left:?}");
        }
    }
}

/// The old layers the `files` target decodes against: [`base_layers`], as files in the
/// scratch directory, opened once.
pub fn files_old() -> &'static [LayerData] {
    static OLD: OnceLock<Vec<LayerData>> = OnceLock::new();
    OLD.get_or_init(|| {
        files_old_layers()
            .iter()
            .enumerate()
            .map(|(i, l)| {
                LayerData::from_file(&input_file(&format!("old-{i}.tar"), l)).expect("old layer")
            })
            .collect()
    })
}

/// The `files` target's old layers: the base image's two, then old kernel modules.
pub fn files_old_layers() -> Vec<Vec<u8>> {
    let mut layers = base_layers();
    let (jar, _) = seed_jars();
    let [(x86, _), (arm, _)] = seed_programs();
    let linked = program_sample::linked(300, 5);
    layers.push(modules_layer_and(
        SEED_MODULES,
        btf_sample::OLD,
        &[
            ("usr/share/java/app.jar", &jar),
            ("usr/lib/libseed.so", &x86),
            ("usr/lib/aarch64/libseed.so", &arm),
            ("usr/lib/liblinked-next.so", &linked),
        ],
    ));
    layers
}

/// The source lists a `files` input may select with its first byte (see
/// [`files_sources`]): the layers of [`files_old`] that the stream's `src` numbers 0, 1,
/// ... name. Layer 2 (the kernel modules) is in the last four.
pub const FILES_SOURCES: [&[usize]; 8] =
    [&[0, 1], &[1], &[0], &[], &[2], &[2, 0], &[0, 1, 2], &[1, 2]];

/// The source list a `files` input's first byte selects: bits 0-1 and 3 index
/// [`FILES_SOURCES`] (bit 2 says whether sections are kept apart, see [`files_apart`]).
pub fn files_sources(selector: u8) -> &'static [usize] {
    FILES_SOURCES[usize::from(selector & 3 | (selector >> 1) & 4)]
}

/// Most layer bytes one `files` input may decode; a stream of many small copies of the old
/// layers can claim far more, and reading past this proves nothing new.
pub const FILES_MAX_OUTPUT: u64 = 256 << 20;

/// The `files` codec's decoder on a hostile stream. The first byte picks the source list
/// (see [`files_sources`]), whether the sections a stream may keep apart are in streams of
/// their own (bit 2, as packages carry them: see [`files_apart`]) and whether the stream is
/// decoded a second time as `apply` decodes it, chunks on two threads
/// (`files::with_parallel_reader`), which must give the same bytes and the same verdict
/// (bit 4); the rest is the stream. It must end in an error or the end of the stream,
/// never panic, and never allocate from a size the stream merely claims (scripts/fuzz.sh
/// runs this target with a malloc limit).
pub fn files(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let sequential = files_decode(selector, rest, None);
    if selector & 16 != 0 {
        let parallel = files_decode(selector, rest, Some(2));
        assert!(
            sequential == parallel,
            "sequential decoding gave {sequential:?}, parallel {parallel:?}"
        );
    }
}

/// What decoding a `files` input gave: whether it decoded to its end (or to
/// [`FILES_MAX_OUTPUT`]), and how many bytes came out before, and their SHA-256.
#[derive(Debug, PartialEq, Eq)]
pub struct FilesOutcome {
    pub decoded: bool,
    pub bytes: u64,
    pub sha256: [u8; 32],
}

/// Decodes a `files` input's stream (`selector` and the rest, as [`files`] takes them) in
/// the calling thread, or with its chunks decoded on `workers` threads as `apply` does.
pub fn files_decode(selector: u8, rest: &[u8], workers: Option<usize>) -> FilesOutcome {
    /// Hashes and counts what is written to it.
    struct Sink(Sha256, u64);
    impl std::io::Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.update(b);
            self.1 += b.len() as u64;
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let old = files_old();
    let sources = files_sources(selector).iter().map(|&i| &old[i]).collect();
    let decoder = match files_apart(selector, rest) {
        Some((stream, apart)) => files::Decoder::with_apart(stream, apart.map(Some), sources),
        None => files::Decoder::new(rest, sources),
    };
    let mut sink = Sink(Sha256::new(), 0);
    let copy = |r: &mut dyn Read, sink: &mut Sink| {
        std::io::copy(&mut r.take(FILES_MAX_OUTPUT), sink)
            .map(|_| ())
            .map_err(|e| docker_delta::Error::io("files stream", e))
    };
    let result = match workers {
        None => copy(&mut { decoder }, &mut sink),
        Some(w) => files::with_parallel_reader(decoder, w, |r| copy(r, &mut sink)),
    };
    if let Err(e) = &result {
        let _ = (e.to_string(), e.kind());
    }
    FilesOutcome {
        decoded: result.is_ok(),
        bytes: sink.1,
        sha256: sink.0.finalize().into(),
    }
}

/// The stream and the streams of the sections it keeps apart (new bytes, difference
/// literals) of a `files` input whose selector has bit 2 set: two little-endian u32 give
/// the lengths of the stream and of the new bytes, which follow in that order; the rest is
/// the difference literals. `None` for an input without bit 2.
pub fn files_apart(selector: u8, rest: &[u8]) -> Option<(&[u8], [&[u8]; 2])> {
    if selector & 4 == 0 {
        return None;
    }
    let len = |rest: &mut &[u8]| {
        let (l, r) = rest.split_at(rest.len().min(4));
        *rest = r;
        let mut le = [0u8; 4];
        le[..l.len()].copy_from_slice(l);
        u32::from_le_bytes(le) as usize
    };
    let mut rest = rest;
    let (stream_len, new_len) = (len(&mut rest), len(&mut rest));
    let (stream, rest) = rest.split_at(stream_len.min(rest.len()));
    let (new_bytes, lits) = rest.split_at(new_len.min(rest.len()));
    Some((stream, [new_bytes, lits]))
}

/// Real `files` streams, as inputs of the `files` target (selector byte, then the stream):
/// each new layer of [`new_layers`] and a few more encoded against the base layers. Each
/// comes as (file name, input, the layer it decodes to).
pub fn files_seeds() -> Vec<(String, Vec<u8>, Vec<u8>)> {
    use docker_delta::delta::files::{tarscan, OldLayer};
    use docker_delta::Digest;
    let open = |name: &str, bytes: &[u8]| OldLayer {
        data: LayerData::from_file(&input_file(name, bytes)).expect("layer"),
        index: tarscan::scan(bytes, None).expect("tar index"),
    };
    let old: Vec<OldLayer> = files_old_layers()
        .iter()
        .enumerate()
        .map(|(i, l)| open(&format!("seed-old-{i}.tar"), l))
        .collect();
    let mut tool = content(1, 6000);
    tool[10..20].copy_from_slice(b"0123456789");
    let mut news = new_layers();
    news.extend([
        // A moved file, a changed one, an unchanged one, under other names and modes.
        layer(&[
            ("usr/bin/tool", &tool),
            ("app/lib.so.1", &content(2, 8000)),
            ("etc/os-release", b"ID=fuzz\nVERSION=2\n"),
        ]),
        // Nothing in common with the base (a gzip member shipped as text, too).
        layer(&[
            ("x", &content(77, 3000)),
            ("x.gz", &gzipped(&changelog(15))),
        ]),
        // An empty layer (just the end-of-archive blocks).
        layer(&[]),
        // The old kernel modules rebuilt for the next kernel: a BTF map and BDIFF.
        modules_layer(SEED_MODULES, btf_sample::NEW),
        // A jar's next version, expanded and patched, and a new jar: both ZIP modes.
        layer(&[
            ("usr/share/java/app.jar", &seed_jars().1),
            (
                "usr/share/java/new.jar",
                &jar(&[("N.class", &content(34, 2000))]),
            ),
        ]),
        // The libraries' next builds: XDIFF and CALLS, both instruction sets.
        layer(&[
            ("usr/lib/libseed.so", &seed_programs()[0].1),
            ("usr/lib/aarch64/libseed.so", &seed_programs()[1].1),
        ]),
        // A linked library with relocations and unwind tables, shipped whole (TABLES), and
        // the next build of one in the old layers, patched (SOURCE TABLES).
        layer(&[
            ("usr/lib/liblinked.so", &program_sample::linked(200, 3)),
            (
                "usr/lib/liblinked-next.so",
                &program_sample::linked_next(300, 5),
            ),
        ]),
        // Go programs shipped whole: their function table, `_func` records and pc-value
        // tables (TABLES kinds 1, 4 and 5).
        layer(&[
            (
                "usr/bin/go-tool",
                &program_sample::go_like(false, true, 300).0,
            ),
            (
                "usr/bin/go-pie",
                &program_sample::go_like(true, true, 500).0,
            ),
        ]),
    ]);
    let mut seeds = Vec::new();
    let (mut gzip, mut btf, mut zip, mut projected) = (0, 0, 0, 0);
    let (mut calls, mut tables, mut source_tables) = (0, 0, 0);
    for (n, new) in news.iter().enumerate() {
        let new_layer = open(&format!("seed-new-{n}.tar"), new);
        // Each layer twice: everything in the stream, and the sections it may keep apart
        // in streams of their own.
        for split in [false, true] {
            let (mut stream, mut new_bytes, mut lits) = (Vec::new(), Vec::new(), Vec::new());
            let stats = files::encode(
                &old,
                &new_layer,
                &Digest::of(new),
                &mut stream,
                [
                    split.then_some(&mut new_bytes as &mut dyn std::io::Write),
                    split.then_some(&mut lits as &mut dyn std::io::Write),
                ],
                &mut |_| Ok(()),
                &|_, _| (),
            )
            .expect("encode a seed layer");
            gzip += stats.files_gzip;
            btf += stats.files_btf;
            zip += stats.files_zip;
            projected += stats.patches_projected;
            calls += stats.calls_absolute;
            tables += stats.tables_as_differences;
            source_tables += stats.patches_with_source_tables;
            let list = FILES_SOURCES
                .iter()
                .position(|s| *s == &stats.sources[..])
                .expect("a source list the target offers") as u8;
            // Kept apart as packages keep them, and then also decoded as apply decodes.
            let mut input = vec![list & 3 | (list & 4) << 1 | if split { 4 | 16 } else { 0 }];
            assert_eq!(files_sources(input[0]), &stats.sources[..]);
            if split {
                input.extend_from_slice(&(stream.len() as u32).to_le_bytes());
                input.extend_from_slice(&(new_bytes.len() as u32).to_le_bytes());
            }
            input.extend_from_slice(&stream);
            input.extend_from_slice(&new_bytes);
            input.extend_from_slice(&lits);
            let name = match split {
                false => format!("layer-{n}.files"),
                true => format!("layer-{n}-apart.files"),
            };
            seeds.push((name, input, new.clone()));
        }
    }
    assert!(gzip >= 2, "the seeds should reach the gzip operation");
    assert!(zip >= 4, "the seeds should reach the zip operation");
    assert!(btf >= 2, "the seeds should reach BDIFF and the BTF map");
    assert!(projected >= 2, "the seeds should reach XDIFF");
    assert!(calls >= 2, "the seeds should reach CALLS");
    assert!(tables >= 2, "the seeds should reach TABLES");
    assert!(source_tables >= 2, "the seeds should reach SOURCE TABLES");
    seeds
}

/// Writes seed packages made by `create` from the fixed base (every method and payload
/// compression, and a full package), and an OCI archive and a docker-archive written by
/// `apply`, into `dir`.
pub fn write_seeds(dir: &Path) {
    use docker_delta::delta::create::{create, CreateOptions};
    use docker_delta::delta::format::{CompressionSpec, PayloadCompression};
    use docker_delta::delta::plan::Method;
    std::fs::create_dir_all(dir).expect("seed dir");
    for (name, bytes, _) in files_seeds() {
        std::fs::write(dir.join(name), bytes).expect("write seed");
    }
    let new_path = input_file(
        "new.tar",
        &docker_archive_bytes("fuzz/app:2", &new_layers()),
    );
    std::fs::copy(&new_path, dir.join("new.tar")).expect("copy");
    std::fs::copy(base_archive(), dir.join("base.tar")).expect("copy");
    let new = docker_delta::open(
        &ImageReference::DockerArchive {
            path: new_path,
            selector: None,
        },
        &OpenOptions::default(),
    )
    .expect("new image");
    for method in [
        Method::Auto,
        Method::Files,
        Method::Xdelta3,
        Method::Zstd,
        Method::Layer,
    ] {
        for algorithm in [
            PayloadCompression::Zstd,
            PayloadCompression::Gzip,
            PayloadCompression::Xz,
            PayloadCompression::None,
        ] {
            let out = dir.join(format!("{method:?}-{}.ddelta", algorithm.name()).to_lowercase());
            let _ = std::fs::remove_file(&out);
            let options = CreateOptions {
                method,
                compression: CompressionSpec {
                    algorithm,
                    level: algorithm.default_level().min(3),
                },
                ..CreateOptions::default()
            };
            create(Some(base()), new.as_ref(), &out, &options).expect("create seed");
        }
    }
    let full = dir.join("full-none.ddelta");
    let _ = std::fs::remove_file(&full);
    let options = CreateOptions {
        compression: CompressionSpec {
            algorithm: PayloadCompression::None,
            level: 0,
        },
        ..CreateOptions::default()
    };
    create(None, new.as_ref(), &full, &options).expect("create full seed");
    let pkg = Package::open(&dir.join("auto-zstd.ddelta")).expect("seed package");
    for (file, r) in [
        ("applied.oci.tar", "oci-archive"),
        ("applied.docker.tar", "docker-archive"),
    ] {
        let out = dir.join(file);
        let _ = std::fs::remove_file(&out);
        let dest = ImageReference::parse(&format!("{r}:{}", out.display())).expect("dest");
        apply_package(&pkg, Some(base()), &dest, &ApplyOptions::default()).expect("apply seed");
    }
}

/// A referrers list (the referrers API's answer or a fallback index, as a registry may
/// send anything): never panics; every entry read serializes and reads back the same; a
/// delta package's annotations, when they read, give digests that print and parse back.
pub fn referrers(data: &[u8]) {
    use docker_delta::fleet::DeltaArtifact;
    use docker_delta::transport::registry::referrers::parse_referrers;
    let Ok(list) = parse_referrers(data, "fuzz.json") else {
        return;
    };
    let again =
        serde_json::to_vec(&serde_json::json!({ "manifests": list })).expect("referrers serialize");
    let back = parse_referrers(&again, "again.json").expect("what was read reads again");
    assert_eq!(back, list);
    for r in &list {
        if let Ok(a) = DeltaArtifact::from_referrer(r) {
            assert_eq!(
                docker_delta::Digest::parse(&a.base_image_id.to_string()).ok(),
                Some(a.base_image_id.clone())
            );
            let _ = serde_json::to_string(&a).expect("an artifact serializes");
        }
    }
}
