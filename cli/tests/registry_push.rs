//! `apply -o docker://...`: images pushed to a real CNCF distribution 2.8 registry on
//! loopback (`scripts/registries.sh`), then read back by tools nobody here wrote (skopeo,
//! and `docker pull` through Docker 20.10 and 26), which must see the new image's config
//! digest. A proxy in the test cuts one upload midway to show the push recovers.

mod common;

use common::Flow;

use std::collections::HashMap;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

fn env() -> Option<HashMap<String, String>> {
    common::registries()
}

/// A value of the fixtures' images.env (`D26_NEW_ID`, ...).
fn fixture_id(key: &str) -> Option<String> {
    let fx = common::fixtures()?;
    let text = std::fs::read_to_string(fx.join("images.env")).ok()?;
    text.lines()
        .filter_map(|l| l.trim_start_matches("export ").split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.trim_matches('"').to_string())
}

/// A repository name no other run uses.
fn unique(prefix: &str) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{t}", std::process::id())
}

fn dd(args: &[&str]) -> Output {
    Command::new(common::bin()).args(args).output().unwrap()
}

#[track_caller]
fn ok(o: &Output) {
    assert!(
        o.status.success(),
        "exit {:?}: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn skopeo(args: &[&str]) -> Output {
    Command::new("skopeo").args(args).output().unwrap()
}

/// The raw manifest of `image` as skopeo reads it.
fn raw_manifest(image: &str) -> (Vec<u8>, serde_json::Value) {
    let o = skopeo(&["inspect", "--raw", "--tls-verify=false", image]);
    ok(&o);
    let v = serde_json::from_slice(&o.stdout).unwrap();
    (o.stdout, v)
}

/// Pulls `name` with every Docker engine set up (classic store) and returns the image IDs
/// they report, by engine.
fn docker_pull_ids(name: &str) -> Vec<(String, String)> {
    let mut ids = Vec::new();
    for engine in ["DOCKER20", "DOCKER26"] {
        let Ok(host) = std::env::var(format!("DOCKER_DELTA_TEST_{engine}")) else {
            continue;
        };
        let cli = std::env::var(format!("DOCKER_DELTA_TEST_{engine}_CLI"))
            .unwrap_or_else(|_| "docker".into());
        let docker = |args: &[&str]| Command::new(&cli).arg("-H").arg(&host).args(args).output();
        ok(&docker(&["pull", name]).unwrap());
        let o = docker(&["image", "inspect", "--format", "{{.Id}}", name]).unwrap();
        ok(&o);
        ids.push((
            engine.to_string(),
            String::from_utf8_lossy(&o.stdout).trim().to_string(),
        ));
        let _ = docker(&["rmi", name]);
    }
    ids
}

/// Makes the package fixtures/app:1 -> :2 of the registry `r` at `pkg`; returns the old
/// image's reference.
fn fixture_package(r: &str, pkg: &str) -> String {
    let old = format!("docker://{r}/fixtures/app:1");
    let new = format!("docker://{r}/fixtures/app:2");
    ok(&dd(&[
        "create",
        "--tls-verify=false",
        &new,
        "--base",
        &old,
        "-o",
        pkg,
    ]));
    old
}

#[test]
fn apply_pushes_the_exact_image_and_docker_pulls_it() {
    let (Some(env), Some(new_id)) = (env(), fixture_id("D26_NEW_ID")) else {
        return;
    };
    let r = &env["DOCKER_DELTA_TEST_REGISTRY_PLAIN"];
    let d = tempfile::tempdir().unwrap();
    let pkg = d.path().join("p.ddelta");
    let pkg = pkg.to_str().unwrap();
    let old = fixture_package(r, pkg);
    let repo = unique("pushed/app");
    let dest = format!("docker://{r}/{repo}:2");

    let o = dd(&[
        "apply",
        "--tls-verify=false",
        pkg,
        "--base",
        &old,
        "-o",
        &dest,
        "--json",
    ]);
    ok(&o);
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["pushed_to"], dest.as_str(), "{report}");
    assert_eq!(report["image_id"], new_id.as_str());
    assert_eq!(report["output"], serde_json::Value::Null);

    // skopeo reads what was pushed: the manifest digest reported, the config digest the
    // new image's, a Docker schema2 manifest of gzip layers.
    let (raw, manifest) = raw_manifest(&dest);
    assert_eq!(
        report["manifest_digest"].as_str().unwrap(),
        common::sha256(&raw)
    );
    assert_eq!(manifest["config"]["digest"], new_id.as_str(), "{manifest}");
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    // The layer taken from the base is the base's own blob, mounted, not a new one.
    let (_, base_manifest) = raw_manifest(&old);
    assert_eq!(
        manifest["layers"][0]["digest"],
        base_manifest["layers"][0]["digest"]
    );
    // And by digest, as a fleet would pin it.
    let by_digest = format!(
        "docker://{r}/{repo}@{}",
        report["manifest_digest"].as_str().unwrap()
    );
    let o = dd(&[
        "inspect",
        "--tls-verify=false",
        "--verify",
        "--json",
        &by_digest,
    ]);
    ok(&o);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["image_id"], new_id.as_str());

    // Docker pulls it with the new image ID.
    let pulled = docker_pull_ids(&format!("{r}/{repo}:2"));
    for (engine, id) in &pulled {
        assert_eq!(id, &new_id, "{engine}");
    }
    if std::env::var("DOCKER_DELTA_REQUIRE_ENGINES").as_deref() == Ok("1") {
        assert_eq!(pulled.len(), 2, "both Docker engines pulled");
    }

    // Pushing again finds every blob there: same manifest digest, nothing uploaded.
    let o = dd(&[
        "apply",
        "--tls-verify=false",
        pkg,
        "--base",
        &old,
        "-o",
        &dest,
        "--json",
        "-v",
    ]);
    ok(&o);
    let again: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(again["manifest_digest"], report["manifest_digest"]);
    assert!(
        !String::from_utf8_lossy(&o.stderr).contains("uploading"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // zstd layers: an OCI manifest whose new layers are zstd; the gzip base layer is
    // still mounted. skopeo copies it (verifying every blob); Docker 26 pulls it.
    let zrepo = unique("pushed/app-zstd");
    let zdest = format!("docker://{r}/{zrepo}:2");
    let o = dd(&[
        "apply",
        "--tls-verify=false",
        pkg,
        "--base",
        &old,
        "-o",
        &zdest,
        "--dest-compress-format",
        "zstd",
    ]);
    ok(&o);
    let (_, zm) = raw_manifest(&zdest);
    assert_eq!(
        zm["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(zm["config"]["digest"], new_id.as_str());
    let types: Vec<&str> = zm["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap())
        .collect();
    assert_eq!(types[0], "application/vnd.oci.image.layer.v1.tar+gzip");
    assert!(
        types[1..]
            .iter()
            .all(|t| *t == "application/vnd.oci.image.layer.v1.tar+zstd"),
        "{types:?}"
    );
    let layout = d.path().join("layout");
    ok(&skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &zdest,
        &format!("oci:{}:z", layout.display()),
    ]));
    if let Ok(host) = std::env::var("DOCKER_DELTA_TEST_DOCKER26") {
        let cli =
            std::env::var("DOCKER_DELTA_TEST_DOCKER26_CLI").unwrap_or_else(|_| "docker".into());
        let name = format!("{r}/{zrepo}:2");
        ok(&Command::new(&cli)
            .args(["-H", &host, "pull", &name])
            .output()
            .unwrap());
        let o = Command::new(&cli)
            .args([
                "-H", &host, "image", "inspect", "--format", "{{.Id}}", &name,
            ])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), new_id);
        let _ = Command::new(&cli)
            .args(["-H", &host, "rmi", &name])
            .output();
    }
}

#[test]
fn src_and_dest_options_reach_each_registry_and_refusals_come_first() {
    let Some(env) = env() else {
        return;
    };
    let plain = &env["DOCKER_DELTA_TEST_REGISTRY_PLAIN"];
    let basic = &env["DOCKER_DELTA_TEST_REGISTRY_BASIC"];
    let creds = format!(
        "{}:{}",
        env["DOCKER_DELTA_TEST_REGISTRY_BASIC_USER"], env["DOCKER_DELTA_TEST_REGISTRY_BASIC_PASS"]
    );
    let d = tempfile::tempdir().unwrap();
    let pkg = d.path().join("p.ddelta");
    let pkg = pkg.to_str().unwrap();
    let old = fixture_package(plain, pkg);
    let repo = unique("pushed/creds");
    let dest = format!("docker://{basic}/{repo}:2");

    // No credentials for the output: refused before any work, naming the push scope.
    let o = dd(&[
        "apply",
        "--tls-verify=false",
        pkg,
        "--base",
        &old,
        "-o",
        &dest,
        "--json",
    ]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    let e: serde_json::Value = serde_json::from_str(stderr.lines().last().unwrap()).unwrap();
    assert_eq!(e["kind"], "unauthorized", "{e}");
    assert!(
        e.to_string()
            .contains(&format!("repository:{repo}:pull,push")),
        "{e}"
    );

    // The base from the plain registry, the output to the Basic one with its own
    // credentials; the global --tls-verify stays on, each side turns it off.
    let o = dd(&[
        "apply",
        pkg,
        "--base",
        &old,
        "--src-tls-verify=false",
        "-o",
        &dest,
        "--dest-tls-verify=false",
        "--dest-creds",
        &creds,
        "-vv",
    ]);
    ok(&o);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let secret = &env["DOCKER_DELTA_TEST_REGISTRY_BASIC_PASS"];
    assert!(!all.contains(secret.as_str()), "the password leaked");
    let o = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--creds",
        &creds,
        &format!("docker://{basic}/{repo}:2"),
    ]);
    ok(&o);
    // The base side's own credentials: the Basic registry as the base needs them.
    let basic_old = format!("docker://{basic}/fixtures/app:1");
    let out = d.path().join("out.tar");
    let o = dd(&[
        "apply",
        "--tls-verify=false",
        pkg,
        "--base",
        &basic_old,
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!out.exists());
    ok(&dd(&[
        "apply",
        "--tls-verify=false",
        pkg,
        "--base",
        &basic_old,
        "--src-creds",
        &creds,
        "-o",
        out.to_str().unwrap(),
    ]));

    // A digest names no tag to push under; --tag conflicts with the tag in the reference.
    let o = dd(&[
        "apply",
        "--tls-verify=false",
        pkg,
        "--base",
        &old,
        "-o",
        &format!("docker://{plain}/{repo}@sha256:{}", "0".repeat(64)),
    ]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = dd(&[
        "apply",
        "--tls-verify=false",
        pkg,
        "--base",
        &old,
        "--tag",
        "x/y:z",
        "-o",
        &format!("docker://{plain}/{repo}:2"),
    ]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("--tag"));
}

/// A proxy to `upstream` that cuts the first `PATCH` any connection sends once `keep`
/// bytes of it reached the registry (both sides closed), once `cut` is false; counts the
/// `PATCH`es.
fn cutting_upload_proxy(
    upstream: String,
    keep: usize,
    cut: &Arc<AtomicBool>,
    patches: &Arc<AtomicUsize>,
) -> String {
    let (cut, patches) = (cut.clone(), patches.clone());
    common::relay_proxy(upstream, move || {
        let (cut, patches) = (cut.clone(), patches.clone());
        let mut left: Option<usize> = None;
        let up = move |chunk: &mut Vec<u8>| {
            if chunk.starts_with(b"PATCH ") {
                patches.fetch_add(1, Ordering::SeqCst);
                if !cut.swap(true, Ordering::SeqCst) {
                    left = Some(keep);
                }
            }
            if let Some(l) = left {
                if chunk.len() >= l {
                    chunk.truncate(l);
                    return Flow::Close;
                }
                left = Some(l - chunk.len());
            }
            Flow::Forward
        };
        (up, |_: &mut Vec<u8>| Flow::Forward)
    })
}

#[test]
fn a_chunked_upload_cut_midway_is_recovered_and_exact() {
    let Some(env) = env() else {
        return;
    };
    let upstream = env["DOCKER_DELTA_TEST_REGISTRY_PLAIN"].clone();
    let d = tempfile::tempdir().unwrap();
    // Two images: the new one adds a 3 MiB layer that will not compress away.
    let base_layer = common::layer(&[("etc/os", b"base 1\n")]);
    let big = common::layer(&[("data/blob.bin", &common::noise(7, 3 << 20))]);
    let (old_tar, _) = common::docker_archive(
        d.path(),
        "old.tar",
        Some("t/a:1"),
        std::slice::from_ref(&base_layer),
    );
    let (new_tar, new_id) =
        common::docker_archive(d.path(), "new.tar", Some("t/a:2"), &[base_layer, big]);
    // Armed (false) only once skopeo has put the base there: skopeo uploads with PATCH too.
    let cut = Arc::new(AtomicBool::new(true));
    let patches = Arc::new(AtomicUsize::new(0));
    let proxy = cutting_upload_proxy(upstream, 300 * 1024, &cut, &patches);
    let repo = unique("pushed/cut");
    let base_ref = format!("docker://{proxy}/{repo}:1");
    ok(&skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("docker-archive:{}", old_tar.display()),
        &base_ref,
    ]));
    cut.store(false, Ordering::SeqCst);
    patches.store(0, Ordering::SeqCst);
    let pkg = d.path().join("p.ddelta");
    ok(&dd(&[
        "create",
        new_tar.to_str().unwrap(),
        "--base",
        old_tar.to_str().unwrap(),
        "-o",
        pkg.to_str().unwrap(),
    ]));
    let dest = format!("docker://{proxy}/{repo}:2");
    let o = dd(&[
        "apply",
        "--tls-verify=false",
        pkg.to_str().unwrap(),
        "--base",
        &base_ref,
        "-o",
        &dest,
        "--dest-chunk-size",
        "512K",
        "-v",
    ]);
    ok(&o);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(cut.load(Ordering::SeqCst), "the proxy cut an upload");
    assert!(
        stderr.contains("resuming an upload") || stderr.contains("restarting an upload"),
        "{stderr}"
    );
    for line in stderr.lines().filter(|l| l.contains("an upload")) {
        eprintln!("{line}");
    }
    // 3 MiB of noise (gzip cannot shrink it) in 512 KiB parts, and the cut one again.
    assert!(
        patches.load(Ordering::SeqCst) >= 7,
        "{}",
        patches.load(Ordering::SeqCst)
    );
    // What is in the registry is exact: skopeo copies it (checking every blob's digest) and
    // docker-delta reads it back with every diff_id verified.
    let (_, manifest) = raw_manifest(&dest);
    assert_eq!(manifest["config"]["digest"], new_id.as_str());
    let o = dd(&["inspect", "--tls-verify=false", "--verify", "--json", &dest]);
    ok(&o);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["image_id"], new_id.as_str());
    assert_eq!(v["layers_verified"], true);
    ok(&skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &dest,
        &format!("oci:{}:x", d.path().join("layout").display()),
    ]));
}

/// A proxy to `upstream` that cuts the first answer to a blob GET without `Range` after
/// `keep` bytes of its body (both sides closed), once.
fn cutting_download_proxy(upstream: String, keep: usize, cut: &Arc<AtomicBool>) -> String {
    let cut = cut.clone();
    common::relay_proxy(upstream, move || {
        let armed = Arc::new(AtomicBool::new(false));
        let a = armed.clone();
        let up = move |chunk: &mut Vec<u8>| {
            let head =
                String::from_utf8_lossy(&chunk[..chunk.len().min(2048)]).to_ascii_lowercase();
            if head.starts_with("get ") && head.contains("/blobs/") && !head.contains("\r\nrange:")
            {
                a.store(true, Ordering::SeqCst);
            }
            Flow::Forward
        };
        let cut = cut.clone();
        let (mut head, mut body) = (Vec::new(), None::<usize>);
        let down = move |chunk: &mut Vec<u8>| {
            if !armed.load(Ordering::SeqCst) || cut.load(Ordering::SeqCst) {
                return Flow::Forward;
            }
            body = match body {
                None => {
                    head.extend_from_slice(chunk);
                    head.windows(4)
                        .position(|w| w == b"\r\n\r\n")
                        .map(|i| head.len() - (i + 4))
                }
                Some(b) => Some(b + chunk.len()),
            };
            match body {
                Some(b) if b > keep && head.starts_with(b"HTTP/1.1 200") => {
                    let n = chunk.len().saturating_sub(b - keep);
                    chunk.truncate(n);
                    cut.store(true, Ordering::SeqCst);
                    Flow::Close
                }
                _ => Flow::Forward,
            }
        };
        (up, down)
    })
}

#[test]
fn a_100_mb_blob_cut_midway_is_resumed_and_exact() {
    let Some(env) = env() else {
        return;
    };
    let upstream = env["DOCKER_DELTA_TEST_REGISTRY_PLAIN"].clone();
    let d = tempfile::tempdir().unwrap();
    // 100 MiB that gzip cannot shrink: the blob is about as big.
    let big = common::layer(&[("data/big.bin", &common::noise(11, 100 << 20))]);
    let (tar, image_id) = common::docker_archive(d.path(), "big.tar", Some("t/big:1"), &[big]);
    let repo = unique("pushed/big");
    ok(&skopeo(&[
        "copy",
        "-q",
        "--dest-tls-verify=false",
        &format!("docker-archive:{}", tar.display()),
        &format!("docker://{upstream}/{repo}:1"),
    ]));
    let cut = Arc::new(AtomicBool::new(false));
    let proxy = cutting_download_proxy(upstream, 50 << 20, &cut);
    // Read through the proxy: the layer downloaded and verified against its digest and
    // diff_id.
    let o = dd(&[
        "inspect",
        "--tls-verify=false",
        "--verify",
        "--json",
        "-v",
        &format!("docker://{proxy}/{repo}:1"),
    ]);
    ok(&o);
    assert!(cut.load(Ordering::SeqCst), "the proxy cut the download");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("resuming a blob download"), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["image_id"], image_id.as_str());
    assert_eq!(v["layers_verified"], true);
}

#[test]
fn create_from_a_registry_downloads_each_blob_once() {
    let Some(env) = env() else {
        return;
    };
    let upstream = env["DOCKER_DELTA_TEST_REGISTRY_PLAIN"].clone();
    let gets = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let g = gets.clone();
    let proxy = common::relay_proxy(upstream, move || {
        let g = g.clone();
        let up = move |chunk: &mut Vec<u8>| {
            let text = String::from_utf8_lossy(chunk);
            for line in text
                .lines()
                .filter(|l| l.starts_with("GET ") && l.contains("/blobs/"))
            {
                g.lock().unwrap().push(line.to_string());
            }
            Flow::Forward
        };
        (up, |_: &mut Vec<u8>| Flow::Forward)
    });
    let d = tempfile::tempdir().unwrap();
    let pkg = d.path().join("p.ddelta");
    ok(&dd(&[
        "create",
        "--tls-verify=false",
        &format!("docker://{proxy}/fixtures/app:2"),
        "--base",
        &format!("docker://{proxy}/fixtures/app:1"),
        "-o",
        pkg.to_str().unwrap(),
    ]));
    let gets = gets.lock().unwrap();
    assert!(gets.len() >= 4, "{gets:?}");
    let mut seen = std::collections::HashSet::new();
    for g in gets.iter() {
        assert!(
            seen.insert(g.clone()),
            "downloaded twice: {g}\nall: {gets:#?}"
        );
    }
}
