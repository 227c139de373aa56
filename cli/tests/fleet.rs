//! Fleet updates through a real registry (CNCF distribution 2.8 on loopback, which has no
//! referrers API, so the `sha256-<hex>` fallback index is used for real): `publish` from
//! two old versions, `oras discover`/`oras pull` (a client nobody here wrote) see the
//! packages, and devices on Docker 20.10, 26 and 26 with the containerd store `pull` the
//! new version through the delta that fits what they hold, or in full.

mod common;

use common::Flow;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use serde_json::Value;

fn env() -> Option<HashMap<String, String>> {
    common::registries()
}

fn nonce() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{}-{t}", std::process::id())
}

#[track_caller]
fn ok(o: &Output) {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn json(o: &Output) -> Value {
    ok(o);
    serde_json::from_slice(&o.stdout).unwrap()
}

/// docker-delta with `DOCKER_HOST` set to `host` (if any) and plain HTTP allowed.
fn dd(host: Option<&str>, args: &[&str]) -> Output {
    let mut c = Command::new(common::bin());
    c.arg("--tls-verify=false").args(args);
    if let Some(h) = host {
        c.env("DOCKER_HOST", h);
    }
    c.output().unwrap()
}

/// Three versions of an app (unique to this run): a shared base layer, and an app layer
/// that grows and changes. Returns the archives and the image IDs, v1 first.
fn versions(dir: &Path, run: &str) -> Vec<(PathBuf, String)> {
    let base = common::layer(&[
        ("etc/os-release", format!("fleet test {run}\n").as_bytes()),
        ("usr/lib/libbase.so", &common::noise(1, 300_000)),
    ]);
    (1..=3u64)
        .map(|v| {
            let mut app = common::noise(2, 400_000);
            // Each version changes a few places of the binary and adds a little.
            for k in 0..v as usize * 3 {
                app[k * 37_000] ^= 0x5a;
            }
            app.extend_from_slice(&common::noise(10 + v, 20_000 * v as usize));
            let layer = common::layer(&[
                ("app/bin/server", &app),
                ("app/VERSION", format!("{v}\n").as_bytes()),
            ]);
            common::docker_archive(
                dir,
                &format!("v{v}.tar"),
                Some(&format!("fleet-{run}/app:{v}")),
                &[base.clone(), layer],
            )
        })
        .collect()
}

/// Puts the archives into `repo` of the registry as tags 1, 2, 3.
fn push_versions(registry: &str, repo: &str, archives: &[(PathBuf, String)]) {
    for (i, (path, _)) in archives.iter().enumerate() {
        ok(&Command::new("skopeo")
            .args([
                "copy",
                "-q",
                "--dest-tls-verify=false",
                &format!("docker-archive:{}", path.display()),
                &format!("docker://{registry}/{repo}:{}", i + 1),
            ])
            .output()
            .unwrap());
    }
}

/// The engines set up: (name, DOCKER_HOST, docker CLI).
fn engines() -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for e in ["DOCKER20", "DOCKER26", "C8D"] {
        if let Ok(host) = std::env::var(format!("DOCKER_DELTA_TEST_{e}")) {
            let cli = std::env::var(format!("DOCKER_DELTA_TEST_{e}_CLI"))
                .unwrap_or_else(|_| "docker".into());
            out.push((e.to_string(), host, cli));
        }
    }
    if std::env::var("DOCKER_DELTA_REQUIRE_ENGINES").as_deref() == Ok("1") {
        assert_eq!(out.len(), 3, "all three engines");
    }
    out
}

fn docker(host: &str, cli: &str, args: &[&str]) -> Output {
    Command::new(cli)
        .arg("-H")
        .arg(host)
        .args(args)
        .output()
        .unwrap()
}

/// The config digest of `name` in the daemon (whichever image store it has).
fn config_digest(host: &str, name: &str) -> Option<String> {
    let o = dd(
        Some(host),
        &[
            "inspect",
            "--no-verify",
            "--json",
            &format!("docker-daemon:{name}"),
        ],
    );
    o.status.success().then(|| {
        serde_json::from_slice::<Value>(&o.stdout).unwrap()["image_id"]
            .as_str()
            .unwrap()
            .to_string()
    })
}

#[test]
fn publish_then_each_device_pulls_through_what_it_has() {
    let Some(env) = env() else {
        return;
    };
    let r = &env["DOCKER_DELTA_TEST_REGISTRY_PLAIN"];
    let d = tempfile::tempdir().unwrap();
    let run = nonce();
    let v = versions(d.path(), &run);
    let repo = format!("fleet/app-{run}");
    push_versions(r, &repo, &v);
    let v3 = format!("docker://{r}/{repo}:3");

    // CI: publish v1 -> v3 and v2 -> v3.
    let report = json(&dd(
        None,
        &["publish", &v3, "--base", "1", "--base", "2", "--json"],
    ));
    assert_eq!(report["document"], "publish_report");
    let packages = report["packages"].as_array().unwrap();
    assert_eq!(packages.len(), 2, "{report}");
    for (p, (_, id)) in packages.iter().zip(&v) {
        assert_eq!(p["status"], "published", "{p}");
        assert_eq!(p["base_image_id"], id.as_str());
    }
    // Again: nothing new.
    let again = json(&dd(
        None,
        &["publish", &v3, "--base", "1", "--base", "2", "--json"],
    ));
    for p in again["packages"].as_array().unwrap() {
        assert_eq!(p["status"], "already_published", "{p}");
    }
    // --last 2 finds the same two versions (newest by creation time... all the same here,
    // so any two of the other tags: both are published already).
    let last = json(&dd(None, &["publish", &v3, "--last", "2", "--json"]));
    assert_eq!(last["packages"].as_array().unwrap().len(), 2, "{last}");

    let list = json(&dd(None, &["list-deltas", &v3, "--json"]));
    common::assert_schema_valid(&[
        ("publish-report.schema.json", report.clone()),
        ("publish-report.schema.json", last.clone()),
        ("delta-list.schema.json", list.clone()),
    ]);
    assert_eq!(list["document"], "delta_list");
    assert_eq!(
        list["referrers"], "tag",
        "distribution 2.8 has no referrers API"
    );
    assert_eq!(list["image_id"], v[2].1.as_str());
    let deltas = list["deltas"].as_array().unwrap();
    assert_eq!(deltas.len(), 2, "{list}");

    // oras, which nobody here wrote, sees them as referrers of the image and pulls a
    // package byte for byte (its sha256 is the artifact layer's digest; it opens).
    let oras = env
        .get("DOCKER_DELTA_TEST_ORAS")
        .cloned()
        .unwrap_or_else(|| "oras".into());
    let o = Command::new(&oras)
        .args([
            "discover",
            "--plain-http",
            "--format",
            "json",
            &format!("{r}/{repo}:3"),
        ])
        .output()
        .unwrap();
    ok(&o);
    let text = String::from_utf8_lossy(&o.stdout);
    for delta in deltas {
        assert!(text.contains(delta["digest"].as_str().unwrap()), "{text}");
    }
    assert!(text.contains("application/vnd.docker-delta.package.v1"));
    let pulled = d.path().join("oras");
    std::fs::create_dir(&pulled).unwrap();
    let artifact = deltas[0]["digest"].as_str().unwrap();
    ok(&Command::new(&oras)
        .current_dir(&pulled)
        .args(["pull", "--plain-http", &format!("{r}/{repo}@{artifact}")])
        .output()
        .unwrap());
    let file = std::fs::read_dir(&pulled)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert!(
        file.to_string_lossy().ends_with(".ddelta"),
        "{}",
        file.display()
    );
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(
        bytes.len() as u64,
        deltas[0]["package_size"].as_u64().unwrap()
    );
    let raw = Command::new("skopeo")
        .args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{r}/{repo}@{artifact}"),
        ])
        .output()
        .unwrap();
    ok(&raw);
    let manifest: Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(
        manifest["layers"][0]["digest"],
        common::sha256(&bytes).as_str()
    );
    assert_eq!(
        manifest["artifactType"],
        "application/vnd.docker-delta.package.v1"
    );
    let info = json(&dd(None, &["info", "--json", file.to_str().unwrap()]));
    assert_eq!(info["target"]["image_id"], v[2].1.as_str());

    // Devices.
    for (engine, host, cli) in engines() {
        let tag = format!("{r}/{repo}:3");
        for (held, expect) in [(Some(0usize), "delta"), (Some(1), "delta"), (None, "full")] {
            let what = format!("{engine}, holding {held:?}");
            if let Some(i) = held {
                ok(&docker(
                    &host,
                    &cli,
                    &["load", "-i", v[i].0.to_str().unwrap()],
                ));
            }
            let dry = json(&dd(Some(&host), &["pull", &v3, "--dry-run", "--json"]));
            assert_eq!(dry["method"], expect, "{what}: {dry}");
            assert_eq!(
                config_digest(&host, &tag),
                None,
                "{what}: a dry run loads nothing"
            );
            if held.is_none() {
                // Without fallback: its own exit code, nothing loaded.
                let o = dd(Some(&host), &["pull", &v3, "--no-fallback", "--json"]);
                assert_eq!(
                    o.status.code(),
                    Some(9),
                    "{what}: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
                let err = String::from_utf8_lossy(&o.stderr);
                let e: Value = serde_json::from_str(err.lines().last().unwrap()).unwrap();
                assert_eq!(e["kind"], "no_delta", "{e}");
                assert_eq!(e["status_name"], "no_delta", "{e}");
                common::assert_schema_valid(&[("error.schema.json", e.clone())]);
                assert_eq!(config_digest(&host, &tag), None, "{what}");
            }
            let report = json(&dd(Some(&host), &["pull", &v3, "--json"]));
            assert_eq!(report["method"], expect, "{what}: {report}");
            common::assert_schema_valid(&[
                ("pull-report.schema.json", dry.clone()),
                ("pull-report.schema.json", report.clone()),
            ]);
            let t = &report["transferred"];
            if let Some(i) = held {
                assert_eq!(report["delta"]["base_image_id"], v[i].1.as_str(), "{what}");
                // The blob bytes downloaded are the package's, nothing else.
                assert_eq!(
                    t["blobs"], report["delta"]["package_size"],
                    "{what}: {report}"
                );
                assert!(
                    t["blobs"].as_u64().unwrap() < report["full_pull_size"].as_u64().unwrap(),
                    "{what}"
                );
            } else {
                assert!(
                    report["fallback_reason"].as_str().unwrap().contains("base"),
                    "{report}"
                );
                assert!(t["blobs"].as_u64().unwrap() > 0);
            }
            assert_eq!(
                config_digest(&host, &tag).as_deref(),
                Some(v[2].1.as_str()),
                "{what}: v3's config digest under its tag"
            );
            // Clean up for the next case: the tag pulled and the version held.
            let _ = docker(&host, &cli, &["rmi", "-f", &tag]);
            if let Some(i) = held {
                let _ = docker(
                    &host,
                    &cli,
                    &["rmi", "-f", &format!("fleet-{run}/app:{}", i + 1)],
                );
            }
        }
    }
}

/// A proxy in front of the registry that holds the first write of a fallback referrers
/// index (`PUT .../manifests/sha256-...`) until another such write has been answered.
struct HoldingProxy {
    addr: String,
    held: Arc<AtomicUsize>,
}

fn holding_proxy(upstream: String) -> HoldingProxy {
    // (a write is being held, another was answered)
    let gate = Arc::new((Mutex::new((false, false)), Condvar::new()));
    let held = Arc::new(AtomicUsize::new(0));
    let h = held.clone();
    let addr = common::relay_proxy(upstream, move || {
        // Set while this connection's index write (not the held one) awaits its answer.
        let watching = Arc::new(AtomicBool::new(false));
        let (w, g, held) = (watching.clone(), gate.clone(), h.clone());
        let up = move |chunk: &mut Vec<u8>| {
            let head = String::from_utf8_lossy(&chunk[..chunk.len().min(300)]).to_string();
            if head.starts_with("PUT ") && head.contains("/manifests/sha256-") {
                let (lock, cv) = &*g;
                let mut state = lock.lock().unwrap();
                if !state.0 {
                    state.0 = true;
                    held.fetch_add(1, Ordering::SeqCst);
                    let _unused = cv
                        .wait_timeout_while(state, std::time::Duration::from_secs(60), |s| !s.1)
                        .unwrap();
                } else {
                    w.store(true, Ordering::SeqCst);
                }
            }
            Flow::Forward
        };
        let g = gate.clone();
        let down = move |chunk: &mut Vec<u8>| {
            if chunk.starts_with(b"HTTP/1.1 201") && watching.swap(false, Ordering::SeqCst) {
                let (lock, cv) = &*g;
                lock.lock().unwrap().1 = true;
                cv.notify_all();
            }
            Flow::Forward
        };
        (up, down)
    });
    HoldingProxy { addr, held }
}

#[test]
fn two_publishes_at_once_both_end_up_listed() {
    let Some(env) = env() else {
        return;
    };
    let r = env["DOCKER_DELTA_TEST_REGISTRY_PLAIN"].clone();
    let d = tempfile::tempdir().unwrap();
    let run = nonce();
    let v = versions(d.path(), &run);
    let repo = format!("fleet/race-{run}");
    push_versions(&r, &repo, &v);
    let proxy = holding_proxy(r.clone());
    let v3 = format!("docker://{}/{repo}:3", proxy.addr);
    let spawn = |base: &str| {
        Command::new(common::bin())
            .args([
                "--tls-verify=false",
                "publish",
                &v3,
                "--base",
                base,
                "--json",
                "-v",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn("1"), spawn("2"));
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    ok(&a);
    ok(&b);
    assert_eq!(
        proxy.held.load(Ordering::SeqCst),
        1,
        "one index write was held"
    );
    let stderr = format!(
        "{}{}",
        String::from_utf8_lossy(&a.stderr),
        String::from_utf8_lossy(&b.stderr)
    );
    assert!(
        stderr.contains("merging again"),
        "the overwritten run merged again: {stderr}"
    );
    // Straight from the registry: both listed.
    let list = json(&dd(
        None,
        &["list-deltas", &format!("docker://{r}/{repo}:3"), "--json"],
    ));
    let bases: Vec<&str> = list["deltas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["base_image_id"].as_str().unwrap())
        .collect();
    assert_eq!(bases.len(), 2, "{list}");
    assert!(bases.contains(&v[0].1.as_str()) && bases.contains(&v[1].1.as_str()));
}

#[test]
fn lying_foreign_and_damaged_artifacts_are_skipped_and_nothing_wrong_is_loaded() {
    let Some(env) = env() else {
        return;
    };
    let r = &env["DOCKER_DELTA_TEST_REGISTRY_PLAIN"];
    let oras = env
        .get("DOCKER_DELTA_TEST_ORAS")
        .cloned()
        .unwrap_or_else(|| "oras".into());
    let d = tempfile::tempdir().unwrap();
    let run = nonce();
    let v = versions(d.path(), &run);
    let repo = format!("fleet/lies-{run}");
    push_versions(r, &repo, &v);
    let v3 = format!("docker://{r}/{repo}:3");
    // A real v2 -> v3 package, attached by oras with annotations that lie: they say its
    // base is v1. Another one claims another platform.
    let pkg = d.path().join("v2-to-v3.ddelta");
    ok(&dd(
        None,
        &[
            "create",
            v[2].0.to_str().unwrap(),
            "--base",
            v[1].0.to_str().unwrap(),
            "-o",
            pkg.to_str().unwrap(),
        ],
    ));
    let size = std::fs::metadata(&pkg).unwrap().len().to_string();
    // The same package as a newer docker-delta would write it (its format version one
    // past this build's): its bytes say so, or its annotations too.
    let future = docker_delta::delta::format::FORMAT_VERSION + 1;
    let mut bytes = std::fs::read(&pkg).unwrap();
    bytes[8..12].copy_from_slice(&future.to_le_bytes());
    std::fs::write(d.path().join("future.ddelta"), bytes).unwrap();
    let attach = |file: &str, base: &str, platform: &str, more: &[(&str, &str)]| {
        let mut c = Command::new(&oras);
        c.current_dir(d.path()).args([
            "attach",
            "--plain-http",
            "--distribution-spec",
            "v1.1-referrers-tag",
            "--artifact-type",
            "application/vnd.docker-delta.package.v1",
        ]);
        for (k, val) in [
            ("dev.docker-delta.base.image-id", base),
            ("dev.docker-delta.new.image-id", v[2].1.as_str()),
            ("dev.docker-delta.package.size", size.as_str()),
            ("dev.docker-delta.platform", platform),
        ]
        .iter()
        .chain(more)
        {
            c.arg("--annotation").arg(format!("{k}={val}"));
        }
        c.arg(format!("{r}/{repo}:3"))
            .arg(format!("{file}:application/vnd.docker-delta.package.v1"));
        ok(&c.output().unwrap());
    };
    attach("v2-to-v3.ddelta", &v[0].1, "linux/amd64", &[]);
    attach("v2-to-v3.ddelta", &v[0].1, "linux/s390x", &[]);
    let said = future.to_string();
    let format_key = "dev.docker-delta.package.format-version";
    attach(
        "future.ddelta",
        &v[0].1,
        "linux/amd64",
        &[(format_key, &said)],
    );
    let list = json(&dd(None, &["list-deltas", &v3, "--json"]));
    assert_eq!(list["deltas"].as_array().unwrap().len(), 1, "{list}");
    let skipped = list["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 2, "{list}");
    let reasons: Vec<&str> = skipped
        .iter()
        .map(|s| s["reason"].as_str().unwrap())
        .collect();
    assert!(reasons.iter().any(|r| r.contains("s390x")), "{list}");
    assert!(
        reasons
            .iter()
            .any(|r| r.contains(&format!("package format {future}"))),
        "{list}"
    );
    // Its bytes only (no annotation): taken, refused once its header is read, skipped.
    attach("future.ddelta", &v[0].1, "linux/amd64", &[]);
    let list = json(&dd(None, &["list-deltas", &v3, "--json"]));
    assert_eq!(list["deltas"].as_array().unwrap().len(), 2, "{list}");

    // A device with v1 takes the lying one (its annotations say v1), finds the package's
    // own base is v2, which it lacks: skipped with a clear reason; without fallback
    // nothing is loaded.
    let out = d.path().join("out.tar");
    let o = dd(
        None,
        &[
            "pull",
            &v3,
            "--base",
            v[0].0.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--no-fallback",
            "--json",
        ],
    );
    assert_eq!(
        o.status.code(),
        Some(9),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("skipped"), "{err}");
    assert!(err.contains(&format!("format version {future}")), "{err}");
    assert!(!out.exists());
    // With fallback: the whole image, exact.
    let report = json(&dd(
        None,
        &[
            "pull",
            &v3,
            "--base",
            v[0].0.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--json",
        ],
    ));
    assert_eq!(report["method"], "full");
    let inspect = json(&dd(None, &["inspect", "--json", out.to_str().unwrap()]));
    assert_eq!(inspect["image_id"], v[2].1.as_str());

    // The same v2 -> v3 package pushed for real (next to the tag its new image had); a
    // device with v2 takes it, through a proxy that damages the package blob: refused by
    // its digest, nothing written.
    let pushed = json(&dd(
        None,
        &[
            "push",
            pkg.to_str().unwrap(),
            &format!("docker://{r}/{repo}"),
            "--json",
        ],
    ));
    assert_eq!(pushed["image"], v3.as_str());
    assert_eq!(pushed["referrers"], "tag");
    assert_eq!(pushed["already_published"], false);
    assert_eq!(pushed["delta"]["base_image_id"], v[1].1.as_str());
    common::assert_schema_valid(&[("push-report.schema.json", pushed.clone())]);
    let again = json(&dd(None, &["push", pkg.to_str().unwrap(), &v3, "--json"]));
    assert_eq!(again["already_published"], true, "{again}");
    // Not next to another image.
    let o = dd(
        None,
        &[
            "push",
            pkg.to_str().unwrap(),
            &format!("docker://{r}/{repo}:2"),
        ],
    );
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let list = json(&dd(None, &["list-deltas", &v3, "--json"]));
    let real = list["deltas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["base_image_id"] == v[1].1.as_str())
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let raw = Command::new("skopeo")
        .args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{r}/{repo}@{real}"),
        ])
        .output()
        .unwrap();
    ok(&raw);
    let m: Value = serde_json::from_slice(&raw.stdout).unwrap();
    let pkg_digest = m["layers"][0]["digest"].as_str().unwrap().to_string();
    let proxy = damaging_proxy(r.clone(), pkg_digest);
    let out2 = d.path().join("out2.tar");
    let o = dd(
        None,
        &[
            "pull",
            &format!("docker://{proxy}/{repo}:3"),
            "--base",
            v[1].0.to_str().unwrap(),
            "-o",
            out2.to_str().unwrap(),
            "--no-fallback",
        ],
    );
    assert_eq!(
        o.status.code(),
        Some(9),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("digest"), "{err}");
    assert!(!out2.exists());
}

/// A proxy to `upstream` that flips one byte (the 1000th of the body) of the answer to a
/// GET of blob `digest`.
fn damaging_proxy(upstream: String, digest: String) -> String {
    common::relay_proxy(upstream, move || {
        let target = Arc::new(AtomicBool::new(false));
        let (t, digest) = (target.clone(), digest.clone());
        let up = move |chunk: &mut Vec<u8>| {
            let head = String::from_utf8_lossy(&chunk[..chunk.len().min(300)]).to_string();
            if head.starts_with("GET ") && head.contains(&format!("/blobs/{digest}")) {
                t.store(true, Ordering::SeqCst);
            }
            Flow::Forward
        };
        let (mut seen, mut body_at) = (0usize, None::<usize>);
        let down = move |chunk: &mut Vec<u8>| {
            if target.load(Ordering::SeqCst) {
                if body_at.is_none() {
                    body_at = chunk
                        .windows(4)
                        .position(|w| w == b"\r\n\r\n")
                        .map(|i| seen + i + 4);
                }
                if let Some(at) = body_at.map(|b| b + 1000) {
                    if at >= seen && at < seen + chunk.len() {
                        chunk[at - seen] ^= 0xff;
                        target.store(false, Ordering::SeqCst);
                    }
                }
            }
            seen += chunk.len();
            Flow::Forward
        };
        (up, down)
    })
}

/// A small registry that follows the OCI Distribution spec 1.1 as far as these tests need,
/// referrers API included (no registry here has one): blobs (monolithic and chunked
/// uploads), manifests by tag and digest, `OCI-Subject` on a manifest with a subject, and
/// `GET /v2/<name>/referrers/<digest>`. Loopback only; one request per connection.
mod spec_registry {
    use std::collections::HashMap;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::{Arc, Mutex};

    use serde_json::{json, Value};

    #[derive(Default)]
    struct Store {
        blobs: HashMap<String, Vec<u8>>,
        /// (repository, digest) -> (media type, bytes)
        manifests: HashMap<(String, String), (String, Vec<u8>)>,
        tags: HashMap<(String, String), String>,
        uploads: HashMap<String, Vec<u8>>,
        next: u64,
        /// Referrers listed, for the test to check.
        pub referrer_gets: usize,
    }

    pub struct Server {
        pub addr: String,
        store: Arc<Mutex<Store>>,
    }

    impl Server {
        pub fn tags(&self) -> Vec<String> {
            self.store
                .lock()
                .unwrap()
                .tags
                .keys()
                .map(|(_, t)| t.clone())
                .collect()
        }
        pub fn referrer_gets(&self) -> usize {
            self.store.lock().unwrap().referrer_gets
        }
    }

    pub fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let store = Arc::new(Mutex::new(Store::default()));
        let s = store.clone();
        std::thread::spawn(move || {
            for c in listener.incoming().flatten() {
                let s = s.clone();
                std::thread::spawn(move || serve(c, &s));
            }
        });
        Server { addr, store }
    }

    fn sha256(data: &[u8]) -> String {
        super::common::sha256(data)
    }

    fn respond(mut c: &TcpStream, status: &str, headers: &[(&str, String)], body: &[u8]) {
        let mut head = format!(
            "HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let _ = c.write_all(head.as_bytes());
        let _ = c.write_all(body);
    }

    /// The answer to a HEAD: the length of what a GET would send, no body.
    fn head(mut c: &TcpStream, len: usize, headers: &[(&str, String)]) {
        let mut h = format!("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: {len}\r\n");
        for (k, v) in headers {
            h.push_str(&format!("{k}: {v}\r\n"));
        }
        h.push_str("\r\n");
        let _ = c.write_all(h.as_bytes());
    }

    fn serve(c: TcpStream, store: &Arc<Mutex<Store>>) {
        let mut r = BufReader::new(c.try_clone().unwrap());
        let mut line = String::new();
        if r.read_line(&mut line).is_err() {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, target) = (
            parts.next().unwrap_or("").to_string(),
            parts.next().unwrap_or("").to_string(),
        );
        let mut headers = HashMap::new();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).is_err() || h.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let len: usize = headers
            .get("content-length")
            .and_then(|l| l.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let q: HashMap<&str, &str> = query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .collect();
        let mut st = store.lock().unwrap();
        if path == "/v2/" {
            return respond(&c, "200 OK", &[], b"{}");
        }
        let Some(rest) = path.strip_prefix("/v2/") else {
            return respond(&c, "404 Not Found", &[], b"");
        };
        let not_found = |c: &TcpStream| {
            respond(
                c,
                "404 Not Found",
                &[],
                br#"{"errors":[{"code":"NOT_FOUND","message":"not found"}]}"#,
            )
        };
        if let Some((repo, upload)) = rest.split_once("/blobs/uploads/") {
            let repo = repo.to_string();
            match method.as_str() {
                "POST" => {
                    if let (Some(d), Some(_)) = (q.get("mount"), q.get("from")) {
                        if st.blobs.contains_key(*d) {
                            return respond(
                                &c,
                                "201 Created",
                                &[("Location", format!("/v2/{repo}/blobs/{d}"))],
                                b"",
                            );
                        }
                    }
                    st.next += 1;
                    let id = format!("u{}", st.next);
                    st.uploads.insert(id.clone(), Vec::new());
                    respond(
                        &c,
                        "202 Accepted",
                        &[
                            ("Location", format!("/v2/{repo}/blobs/uploads/{id}")),
                            ("Range", "0-0".into()),
                        ],
                        b"",
                    )
                }
                "PATCH" => {
                    let Some(u) = st.uploads.get_mut(upload) else {
                        return not_found(&c);
                    };
                    u.extend_from_slice(&body);
                    let end = u.len().saturating_sub(1);
                    respond(
                        &c,
                        "202 Accepted",
                        &[
                            ("Location", format!("/v2/{repo}/blobs/uploads/{upload}")),
                            ("Range", format!("0-{end}")),
                        ],
                        b"",
                    )
                }
                "PUT" => {
                    let Some(mut u) = st.uploads.remove(upload) else {
                        return not_found(&c);
                    };
                    u.extend_from_slice(&body);
                    let d = q
                        .get("digest")
                        .map(|d| d.replace("%3A", ":"))
                        .unwrap_or_default();
                    if sha256(&u) != d {
                        return respond(
                            &c,
                            "400 Bad Request",
                            &[],
                            br#"{"errors":[{"code":"DIGEST_INVALID","message":"digest"}]}"#,
                        );
                    }
                    st.blobs.insert(d.clone(), u);
                    respond(
                        &c,
                        "201 Created",
                        &[
                            ("Location", format!("/v2/{repo}/blobs/{d}")),
                            ("Docker-Content-Digest", d),
                        ],
                        b"",
                    )
                }
                "GET" => {
                    let Some(u) = st.uploads.get(upload) else {
                        return not_found(&c);
                    };
                    respond(
                        &c,
                        "204 No Content",
                        &[("Range", format!("0-{}", u.len().saturating_sub(1)))],
                        b"",
                    )
                }
                "DELETE" => {
                    st.uploads.remove(upload);
                    respond(&c, "204 No Content", &[], b"")
                }
                _ => respond(&c, "405 Method Not Allowed", &[], b""),
            }
        } else if let Some((_, d)) = rest.split_once("/blobs/") {
            match st.blobs.get(d) {
                Some(b) if method == "HEAD" => {
                    head(&c, b.len(), &[("Docker-Content-Digest", d.to_string())])
                }
                Some(b) => respond(&c, "200 OK", &[("Docker-Content-Digest", d.to_string())], b),
                None => not_found(&c),
            }
        } else if let Some((repo, reference)) = rest.split_once("/manifests/") {
            let repo = repo.to_string();
            match method.as_str() {
                "PUT" => {
                    let d = sha256(&body);
                    let media = headers.get("content-type").cloned().unwrap_or_default();
                    st.manifests
                        .insert((repo.clone(), d.clone()), (media, body.clone()));
                    if !reference.starts_with("sha256:") {
                        st.tags
                            .insert((repo.clone(), reference.to_string()), d.clone());
                    }
                    let mut h = vec![
                        ("Docker-Content-Digest", d.clone()),
                        ("Location", format!("/v2/{repo}/manifests/{d}")),
                    ];
                    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    if let Some(s) = v.pointer("/subject/digest").and_then(|s| s.as_str()) {
                        h.push(("OCI-Subject", s.to_string()));
                    }
                    respond(&c, "201 Created", &h, b"")
                }
                _ => {
                    let digest = if reference.starts_with("sha256:") {
                        reference.to_string()
                    } else {
                        match st.tags.get(&(repo.clone(), reference.to_string())) {
                            Some(d) => d.clone(),
                            None => return not_found(&c),
                        }
                    };
                    match st.manifests.get(&(repo, digest.clone())) {
                        Some((m, b)) => {
                            let body: &[u8] = if method == "HEAD" { &[] } else { b };
                            respond(
                                &c,
                                "200 OK",
                                &[
                                    ("Content-Type", m.clone()),
                                    ("Docker-Content-Digest", digest),
                                ],
                                body,
                            )
                        }
                        None => not_found(&c),
                    }
                }
            }
        } else if let Some((repo, subject)) = rest.split_once("/referrers/") {
            st.referrer_gets += 1;
            let wanted = q.get("artifactType").map(|t| t.to_string());
            let list: Vec<Value> = st
                .manifests
                .iter()
                .filter(|((r, _), _)| r == repo)
                .filter_map(|((_, d), (m, b))| {
                    let v: Value = serde_json::from_slice(b).ok()?;
                    (v.pointer("/subject/digest")?.as_str()? == subject).then(|| {
                        json!({"mediaType": m, "digest": d, "size": b.len(),
                               "artifactType": v.get("artifactType").cloned().unwrap_or(Value::Null),
                               "annotations": v.get("annotations").cloned().unwrap_or(json!({}))})
                    })
                })
                .filter(|e| wanted.as_deref().is_none_or(|w| e["artifactType"] == w))
                .collect();
            let mut h = vec![(
                "Content-Type",
                "application/vnd.oci.image.index.v1+json".to_string(),
            )];
            if wanted.is_some() {
                h.push(("OCI-Filters-Applied", "artifactType".into()));
            }
            let body = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": list})).unwrap();
            respond(&c, "200 OK", &h, &body)
        } else {
            not_found(&c)
        }
    }
}

#[test]
fn a_registry_with_the_referrers_api_is_used_through_it() {
    let server = spec_registry::start();
    let r = server.addr.clone();
    let d = tempfile::tempdir().unwrap();
    let run = nonce();
    let v = versions(d.path(), &run);
    let repo = "fleet/api";
    // The images go in through docker-delta's own push (full packages applied to it).
    for (i, (path, _)) in v.iter().enumerate() {
        let full = d.path().join(format!("full{i}.ddelta"));
        ok(&dd(
            None,
            &[
                "create",
                path.to_str().unwrap(),
                "-o",
                full.to_str().unwrap(),
            ],
        ));
        ok(&dd(
            None,
            &[
                "apply",
                full.to_str().unwrap(),
                "-o",
                &format!("docker://{r}/{repo}:{}", i + 1),
            ],
        ));
    }
    let v3 = format!("docker://{r}/{repo}:3");
    let report = json(&dd(
        None,
        &["publish", &v3, "--base", "1", "--base", "2", "--json"],
    ));
    assert_eq!(report["packages"].as_array().unwrap().len(), 2, "{report}");
    let pkg = d.path().join("v1-to-v3.ddelta");
    ok(&dd(
        None,
        &[
            "create",
            v[2].0.to_str().unwrap(),
            "--base",
            v[0].0.to_str().unwrap(),
            "-o",
            pkg.to_str().unwrap(),
        ],
    ));
    let pushed = json(&dd(None, &["push", pkg.to_str().unwrap(), &v3, "--json"]));
    assert_eq!(pushed["referrers"], "api", "{pushed}");
    // No fallback index was written: the registry indexes referrers itself.
    assert!(
        !server.tags().iter().any(|t| t.starts_with("sha256-")),
        "{:?}",
        server.tags()
    );
    let list = json(&dd(None, &["list-deltas", &v3, "--json"]));
    assert_eq!(list["referrers"], "api");
    // The two published, and the one pushed (made from the archives, so another package
    // for the same pair; pull takes the smaller).
    assert_eq!(list["deltas"].as_array().unwrap().len(), 3, "{list}");
    assert!(server.referrer_gets() > 0);
    let out = d.path().join("pulled-v3.tar");
    let pulled = json(&dd(
        None,
        &[
            "pull",
            &v3,
            "--base",
            v[1].0.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--json",
        ],
    ));
    assert_eq!(pulled["method"], "delta", "{pulled}");
    assert_eq!(pulled["delta"]["base_image_id"], v[1].1.as_str());
    let inspect = json(&dd(None, &["inspect", "--json", out.to_str().unwrap()]));
    assert_eq!(inspect["image_id"], v[2].1.as_str());
}
