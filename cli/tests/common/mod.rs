//! Helpers shared by the integration tests: synthetic images built with the `tar` crate
//! (for error cases real tools cannot produce), and access to the fixtures that
//! `scripts/make-fixtures.sh` builds with real Docker engines, skopeo and umoci.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

/// Opens the docker-archive at `path` with default options (panics on error).
pub fn open_archive(path: &Path) -> Box<dyn docker_delta::ImageSource> {
    open_archive_with(path, docker_delta::transport::Limits::default())
}

/// Opens the docker-archive at `path` under `limits` (panics on error).
pub fn open_archive_with(
    path: &Path,
    limits: docker_delta::transport::Limits,
) -> Box<dyn docker_delta::ImageSource> {
    docker_delta::open(
        &docker_delta::ImageReference::DockerArchive {
            path: path.to_path_buf(),
            selector: None,
        },
        &docker_delta::OpenOptions {
            platform: None,
            limits,
            timeouts: None,
            ..Default::default()
        },
    )
    .unwrap()
}

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Deterministic bytes that no codec shrinks (xorshift).
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(99);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A layer tar with the given regular files.
pub fn layer(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap()
}

/// An image config for these layers.
pub fn config(layers: &[Vec<u8>], arch: &str) -> Vec<u8> {
    let diff_ids: Vec<String> = layers.iter().map(|l| sha256(l)).collect();
    serde_json::to_vec(&serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "config": { "Env": ["PATH=/bin"], "Cmd": null },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
        "history": [],
    }))
    .unwrap()
}

/// Archive members, written in order.
pub struct Members(pub Vec<(String, Vec<u8>)>);

impl Members {
    pub fn new() -> Self {
        Members(Vec::new())
    }
    pub fn add(mut self, name: &str, data: impl Into<Vec<u8>>) -> Self {
        self.0.push((name.to_string(), data.into()));
        self
    }
    pub fn write(&self, path: &Path) {
        let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
        for (name, data) in &self.0 {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, &data[..]).unwrap();
        }
        b.finish().unwrap();
    }
}

/// A docker-archive (Docker >= 25 style paths) with one image.
pub fn docker_archive(
    dir: &Path,
    name: &str,
    tag: Option<&str>,
    layers: &[Vec<u8>],
) -> (PathBuf, String) {
    let cfg = config(layers, "amd64");
    let cfg_digest = sha256(&cfg);
    let mut m = Members::new();
    let mut layer_paths = Vec::new();
    for l in layers {
        let p = format!("blobs/sha256/{}", &sha256(l)[7..]);
        if !m.0.iter().any(|(n, _)| *n == p) {
            m = m.add(&p, l.clone());
        }
        layer_paths.push(p);
    }
    m = m.add(&format!("blobs/sha256/{}", &cfg_digest[7..]), cfg.clone());
    let manifest = serde_json::json!([{
        "Config": format!("blobs/sha256/{}", &cfg_digest[7..]),
        "RepoTags": tag.map(|t| vec![t]),
        "Layers": layer_paths,
    }]);
    m = m.add("manifest.json", serde_json::to_vec(&manifest).unwrap());
    let path = dir.join(name);
    m.write(&path);
    (path, cfg_digest)
}

/// The fixture directory built by scripts/make-fixtures.sh, or None (after saying why)
/// when it is absent and the run does not require it.
pub fn fixtures() -> Option<PathBuf> {
    match std::env::var_os("DOCKER_DELTA_FIXTURES") {
        Some(d) if Path::new(&d).join("expected.json").is_file() => Some(PathBuf::from(d)),
        _ => {
            if std::env::var("DOCKER_DELTA_REQUIRE_ENGINES").as_deref() == Ok("1") {
                panic!("DOCKER_DELTA_FIXTURES is not set or has no expected.json, but DOCKER_DELTA_REQUIRE_ENGINES=1");
            }
            eprintln!("skipping: DOCKER_DELTA_FIXTURES not set (scripts/test.sh sets it)");
            None
        }
    }
}

/// expected.json, with references rewritten to the fixture directory's real location.
pub fn expected(fixtures: &Path) -> Vec<serde_json::Value> {
    let raw = std::fs::read(fixtures.join("expected.json")).unwrap();
    let mut list: Vec<serde_json::Value> = serde_json::from_slice(&raw).unwrap();
    for e in &mut list {
        let path = e["path"].as_str().unwrap().to_string();
        let r = e["ref"].as_str().unwrap().to_string();
        let (transport, rest) = r.split_once(':').unwrap();
        let at = rest.find(&format!("/{path}")).expect("ref contains path");
        let tail = &rest[at + 1 + path.len()..];
        e["ref"] = serde_json::Value::String(format!(
            "{transport}:{}{tail}",
            fixtures.join(&path).display()
        ));
    }
    list
}

/// The docker-delta binary.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_docker-delta"))
}

pub fn write_file(path: &Path, data: &[u8]) {
    std::fs::File::create(path)
        .unwrap()
        .write_all(data)
        .unwrap();
}

/// Every file under `dir` (hidden ones too) with its bytes, to check that a failed
/// operation left a directory byte-for-byte as it was.
pub fn snapshot(dir: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.is_dir() {
                out.insert(p.strip_prefix(dir).unwrap().join(""), Vec::new());
                stack.push(p);
            } else {
                out.insert(
                    p.strip_prefix(dir).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap_or_default(),
                );
            }
        }
    }
    out
}

/// Re-signs a package: makes the prefix's header and payload lengths and checksums agree
/// with the bytes that follow (what an attacker who crafts a package does). `header_len`
/// gives the header's length; the rest is payload.
pub fn resign_package(bytes: &mut [u8], header_len: usize) {
    let payload_len = bytes.len() - 96 - header_len;
    bytes[16..24].copy_from_slice(&(header_len as u64).to_le_bytes());
    let h: [u8; 32] = Sha256::digest(&bytes[96..96 + header_len]).into();
    bytes[24..56].copy_from_slice(&h);
    bytes[56..64].copy_from_slice(&(payload_len as u64).to_le_bytes());
    let p: [u8; 32] = Sha256::digest(&bytes[96 + header_len..]).into();
    bytes[64..96].copy_from_slice(&p);
}

/// A package's header length, header JSON and payload offset.
pub fn package_parts(bytes: &[u8]) -> (usize, serde_json::Value, usize) {
    let h = u64::from_le_bytes(bytes[16..24].try_into().unwrap()) as usize;
    let header = serde_json::from_slice(&bytes[96..96 + h]).unwrap();
    (h, header, 96 + h)
}

/// A package with its header replaced by `edit(header)`, re-signed.
pub fn edit_package(bytes: &[u8], edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let (_, mut header, payload_at) = package_parts(bytes);
    edit(&mut header);
    let raw = serde_json::to_vec_pretty(&header).unwrap();
    let mut out = bytes[..96].to_vec();
    out.extend_from_slice(&raw);
    out.extend_from_slice(&bytes[payload_at..]);
    resign_package(&mut out, raw.len());
    out
}

/// Writes `data` to `path` and returns the path.
pub fn write_then(path: &Path, data: &[u8]) -> PathBuf {
    write_file(path, data);
    path.to_path_buf()
}

/// Whether the reference tool `name` is installed: tests that need it skip when it is not,
/// unless `DOCKER_DELTA_REQUIRE_ENGINES=1` (scripts/test.sh, after scripts/install-deps.sh
/// installed it), which makes a missing tool a failure.
pub fn tool_available(name: &str) -> bool {
    match std::process::Command::new(name).arg("--version").output() {
        Ok(_) => true,
        Err(e) => {
            if std::env::var("DOCKER_DELTA_REQUIRE_ENGINES").as_deref() == Ok("1") {
                panic!("the `{name}` tool is missing ({e}), but DOCKER_DELTA_REQUIRE_ENGINES=1");
            }
            println!("SKIPPED: `{name}` is not installed");
            false
        }
    }
}

/// What a child process did, with its peak resident memory as the kernel counted it.
#[derive(Debug)]
pub struct Measured {
    pub status: std::process::ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Peak resident set size of the command (`ru_maxrss` from `wait4`), in bytes.
    pub peak_rss: u64,
}

impl Measured {
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// Forks and execs its arguments (after the path it reports to), waits with `wait4`, writes
/// the child's `ru_maxrss` (KiB) to that path and exits as the child did. It stands
/// between the test and the command because Linux carries the high-water mark of the
/// address space an `exec` replaces into `ru_maxrss`: a command spawned by the test process
/// itself (vfork) would be charged the test process's peak. Forked from this small
/// interpreter instead, it starts from the interpreter's few MiB. The signals Python
/// ignores (SIGPIPE, SIGXFSZ) are restored for the command.
const MEASURE: &str = r#"
import os, signal, sys
pid = os.fork()
if pid == 0:
    for s in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(s, signal.SIG_DFL)
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
signal.signal(signal.SIGINT, signal.SIG_IGN)
while True:
    try:
        _, status, usage = os.wait4(pid, 0)
        break
    except InterruptedError:
        pass
with open(sys.argv[1], "w") as f:
    f.write(str(usage.ru_maxrss))
if os.WIFSIGNALED(status):
    signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
    os.kill(os.getpid(), os.WTERMSIG(status))
sys.exit(os.WEXITSTATUS(status))
"#;

/// Runs `cmd` to its end and reads its own peak RSS (`ru_maxrss` from `wait4`, taken by a
/// small wrapper process, see [`MEASURE`]: within a few MiB of the command's own figure,
/// whatever the test process holds). stdin is null; stdout and stderr are collected; the
/// command's program, arguments, environment and directory are kept.
pub fn run_measured(cmd: &mut std::process::Command) -> Measured {
    use std::process::Stdio;
    let report = tempfile::NamedTempFile::new().expect("a temporary file");
    let mut wrapped = std::process::Command::new("python3");
    wrapped
        .arg("-c")
        .arg(MEASURE)
        .arg(report.path())
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => wrapped.env(k, v),
            None => wrapped.env_remove(k),
        };
    }
    if let Some(d) = cmd.get_current_dir() {
        wrapped.current_dir(d);
    }
    let out = wrapped
        .stdin(Stdio::null())
        .output()
        .expect("run the command under python3 (the measuring wrapper)");
    let kib: u64 = std::fs::read_to_string(report.path())
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "the measuring wrapper reported nothing: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    Measured {
        status: out.status,
        stdout: out.stdout,
        stderr: out.stderr,
        peak_rss: kib * 1024,
    }
}

/// Validates each (schema file, document) with Python's jsonschema in one process, after
/// checking each schema file is itself a valid 2020-12 schema; returns the failures, one
/// string per document that does not validate.
pub fn schema_failures(docs: &[(&str, serde_json::Value)]) -> Vec<String> {
    const CHECK: &str = r#"
import json, sys
import jsonschema
cases = json.load(sys.stdin)
failed = []
for i, (schema_path, doc) in enumerate(cases):
    with open(schema_path) as f:
        schema = json.load(f)
    jsonschema.Draft202012Validator.check_schema(schema)
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(doc))
    if errors:
        failed.append("%d %s: %s" % (i, schema_path, "; ".join(
            "%s at %s" % (e.message, "/".join(map(str, e.absolute_path))) for e in errors)))
print(json.dumps(failed))
"#;
    let cases: Vec<serde_json::Value> = docs
        .iter()
        .map(|(schema, doc)| {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .unwrap()
                .join("docs/schema")
                .join(schema);
            assert!(path.is_file(), "no schema file {}", path.display());
            serde_json::json!([path.display().to_string(), doc])
        })
        .collect();
    let mut child = std::process::Command::new("python3")
        .args(["-c", CHECK])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 (with python3-jsonschema: scripts/install-deps.sh installs it)");
    serde_json::to_writer(child.stdin.take().unwrap(), &cases).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "python3 jsonschema check failed (is python3-jsonschema installed?): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

pub fn assert_schema_valid(docs: &[(&str, serde_json::Value)]) {
    let failures = schema_failures(docs);
    assert!(failures.is_empty(), "{failures:#?}");
}

/// The `DOCKER_DELTA_TEST_*` variables of `scripts/registries.sh env`, or `None` (skip)
/// when the test registries are not set up (a panic under
/// DOCKER_DELTA_REQUIRE_REGISTRIES=1).
pub fn registries() -> Option<std::collections::HashMap<String, String>> {
    let vars: std::collections::HashMap<String, String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("DOCKER_DELTA_TEST_"))
        .collect();
    if vars.contains_key("DOCKER_DELTA_TEST_REGISTRY_PLAIN") {
        return Some(vars);
    }
    if std::env::var("DOCKER_DELTA_REQUIRE_REGISTRIES").as_deref() == Ok("1") {
        panic!("DOCKER_DELTA_TEST_REGISTRY_PLAIN is not set but DOCKER_DELTA_REQUIRE_REGISTRIES=1");
    }
    eprintln!(
        "skipping: the test registries are not set up (eval \"$(scripts/registries.sh env)\")"
    );
    None
}

/// What a relay hook says after seeing (and perhaps changing) a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Forward the chunk and go on.
    Forward,
    /// Forward the chunk, then close the connection both ways.
    Close,
}

/// A loopback TCP proxy for tests: every connection to the returned address is relayed
/// to `upstream`, each chunk read from the client passed to the hook `make().0` and each
/// chunk from the server to `make().1` before it is forwarded (a hook may change or
/// shorten the chunk, or hold it back by blocking). `make` is called once per connection.
pub fn relay_proxy<U, D>(upstream: String, make: impl Fn() -> (U, D) + Send + 'static) -> String
where
    U: FnMut(&mut Vec<u8>) -> Flow + Send + 'static,
    D: FnMut(&mut Vec<u8>) -> Flow + Send + 'static,
{
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = std::net::TcpStream::connect(&upstream) else {
                continue;
            };
            let (up, down) = make();
            let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || pump(client, server, up));
            std::thread::spawn(move || pump(s2, c2, down));
        }
    });
    addr
}

/// Copies `from` to `to` through `hook` until either side ends or the hook closes.
fn pump(
    mut from: std::net::TcpStream,
    mut to: std::net::TcpStream,
    mut hook: impl FnMut(&mut Vec<u8>) -> Flow,
) {
    use std::io::Read;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut chunk = buf[..n].to_vec();
        let flow = hook(&mut chunk);
        if to.write_all(&chunk).is_err() {
            break;
        }
        if flow == Flow::Close {
            let _ = to.shutdown(std::net::Shutdown::Both);
            let _ = from.shutdown(std::net::Shutdown::Both);
            return;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}
