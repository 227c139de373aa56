//! End to end against real Docker engines (20.10, 26, and 26 with the containerd image
//! store, started by scripts/test.sh): deltas made from every source transport are applied,
//! loaded with the real `docker load` (and with `apply --load`), and the target tag must
//! resolve to exactly the new image: `docker image inspect` shows its ID (the config
//! digest) on the classic image store; on the containerd store, where `Id` is the manifest
//! digest, it shows the manifest we wrote, and the image exported back holds the config.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};

struct Engine {
    name: &'static str,
    host: String,
    cli: String,
    /// The containerd image store: `Id` is the manifest digest.
    c8d: bool,
}

fn engines() -> Vec<Engine> {
    let mut out = Vec::new();
    for (name, var) in [
        ("d20", "DOCKER_DELTA_TEST_DOCKER20"),
        ("d26", "DOCKER_DELTA_TEST_DOCKER26"),
        ("c8d", "DOCKER_DELTA_TEST_C8D"),
    ] {
        match std::env::var(var) {
            Ok(host) => out.push(Engine {
                name,
                host,
                cli: std::env::var(format!("{var}_CLI")).unwrap_or_else(|_| "docker".into()),
                c8d: name == "c8d",
            }),
            Err(_) if std::env::var("DOCKER_DELTA_REQUIRE_ENGINES").as_deref() == Ok("1") => {
                panic!("{var} is not set but DOCKER_DELTA_REQUIRE_ENGINES=1")
            }
            Err(_) => eprintln!("skipping engine {name}: {var} not set"),
        }
    }
    out
}

fn run(cmd: &mut Command) -> Output {
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "{cmd:?} failed ({:?}):\n{}\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn dd(engine: Option<&Engine>) -> Command {
    let mut c = Command::new(common::bin());
    if let Some(e) = engine {
        c.env("DOCKER_HOST", &e.host);
    }
    c
}

fn docker(e: &Engine) -> Command {
    let mut c = Command::new(&e.cli);
    c.args(["-H", &e.host]);
    c
}

/// The image `Id` docker reports for `name`.
fn docker_id(e: &Engine, name: &str) -> String {
    let o = run(docker(e).args(["image", "inspect", "--format", "{{.Id}}", name]));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// The config digest of the image `name` resolves to: docker's `Id` on the classic image
/// store; on the containerd store, the config of the image exported back from the daemon
/// (`docker-delta inspect docker-daemon:NAME`, which checks the export against the `Id`).
fn image_id(e: &Engine, name: &str) -> String {
    if !e.c8d {
        return docker_id(e, name);
    }
    let o = run(dd(Some(e)).args(["inspect", "--json", &format!("docker-daemon:{name}")]));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v["image_id"].as_str().unwrap().to_string()
}

fn images_env(dir: &Path) -> HashMap<String, String> {
    std::fs::read_to_string(dir.join("images.env"))
        .unwrap()
        .lines()
        .filter_map(|l| l.trim_start_matches("export ").split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
        .collect()
}

/// Every file transport as a source: create, apply to a docker-archive, `docker load` on
/// both engines, check the tag's image ID.
#[test]
fn deltas_from_every_file_transport_load_into_both_engines() {
    let Some(fx) = common::fixtures() else { return };
    let engines = engines();
    if engines.is_empty() {
        return;
    }
    let f = fx.display();
    let cases = [
        (
            "legacy",
            format!("docker-archive:{f}/d20/old.tar"),
            format!("docker-archive:{f}/d20/new.tar"),
        ),
        (
            "hybrid",
            format!("docker-archive:{f}/d26/old.tar"),
            format!("docker-archive:{f}/d26/new.tar"),
        ),
        (
            "skopeo",
            format!("docker-archive:{f}/skopeo/old.docker.tar"),
            format!("{f}/crane/new.tar"),
        ),
        (
            "oci",
            format!("oci:{f}/oci/gzip:old"),
            format!("oci:{f}/oci/gzip:new"),
        ),
        (
            "ociarchive",
            format!("oci-archive:{f}/oci-archive/old.tar:old"),
            format!("oci-archive:{f}/oci-archive/new.tar:new"),
        ),
        (
            "mixed",
            format!("oci:{f}/oci/zstd:old"),
            format!("oci:{f}/oci/plain:new"),
        ),
    ];
    let tmp = tempfile::tempdir().unwrap();
    for (name, old, new) in cases {
        let pkg = tmp.path().join(format!("{name}.ddelta"));
        run(dd(None).args(["create", &old, &new, "-o", pkg.to_str().unwrap()]));
        let want: serde_json::Value = serde_json::from_slice(
            &run(dd(None).args(["inspect", "--no-verify", "--json", &new])).stdout,
        )
        .unwrap();
        let want_id = want["image_id"].as_str().unwrap().to_string();
        let info: serde_json::Value = serde_json::from_slice(
            &run(dd(None).args(["list", "--json", pkg.to_str().unwrap()])).stdout,
        )
        .unwrap();
        assert!(
            info["layers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|l| l["method"] == "reference"),
            "{name}: no layer referenced"
        );
        let out = tmp.path().join(format!("{name}.tar"));
        let tag = format!("dd-e2e/{name}:2");
        let report: serde_json::Value = serde_json::from_slice(
            &run(dd(None).args([
                "apply",
                pkg.to_str().unwrap(),
                "--base",
                &old,
                "-o",
                out.to_str().unwrap(),
                "--tag",
                &tag,
                "--json",
            ]))
            .stdout,
        )
        .unwrap();
        let manifest = report["manifest_digest"].as_str().unwrap().to_string();
        // Each rebuilt layer equals the original uncompressed layer.
        let rebuilt: serde_json::Value = serde_json::from_slice(
            &run(dd(None).args(["inspect", "--json", out.to_str().unwrap()])).stdout,
        )
        .unwrap();
        assert_eq!(rebuilt["image_id"], want_id, "{name}");
        let ids = |v: &serde_json::Value| -> Vec<String> {
            v["layers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["diff_id"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(ids(&rebuilt), ids(&want), "{name}");
        // (No `docker rmi` here or below: removing a tag deletes the image when it is the
        // last one, and these image IDs are the fixtures' own. Loading moves the tag.)
        for e in &engines {
            run(docker(e).args(["load", "-i", out.to_str().unwrap()]));
            assert_eq!(image_id(e, &tag), want_id, "{name} on {}", e.name);
            if e.c8d {
                assert_eq!(docker_id(e, &tag), manifest, "{name} on {}", e.name);
            }
        }
    }
}

/// docker-daemon as source and destination: create from the daemon, `apply --load` with
/// the base looked up in the daemon by its recorded ID (on the containerd store, where
/// IDs are manifest digests, by its layers and then its exported config), tag checked.
#[test]
fn daemon_to_daemon_with_apply_load() {
    let Some(fx) = common::fixtures() else { return };
    let env = images_env(&fx);
    let tmp = tempfile::tempdir().unwrap();
    for e in engines() {
        // The containerd-store engine gets the Docker 26 fixtures.
        let (prefix, dir) = if e.name == "d20" {
            ("D20", "d20")
        } else {
            ("D26", "d26")
        };
        let old = env[&format!("{prefix}_OLD_ID")].clone();
        let new = env[&format!("{prefix}_NEW_ID")].clone();
        // Make sure the engine has both images, whatever earlier runs did to its tags.
        for which in ["old", "new"] {
            run(docker(&e).args([
                "load",
                "-i",
                fx.join(dir).join(format!("{which}.tar")).to_str().unwrap(),
            ]));
        }
        // By image ID: the config digest on the classic store. The containerd store
        // knows images by manifest digest: name the old image by tag and the new one by
        // the ID docker shows there.
        let (old_ref, new_ref) = if e.c8d {
            (
                "docker-daemon:dd-test/app:1".to_string(),
                format!("docker-daemon:{}", docker_id(&e, "dd-test/app:2")),
            )
        } else {
            (
                format!("docker-daemon:{old}"),
                format!("docker-daemon:{new}"),
            )
        };
        let pkg = tmp.path().join(format!("{}.ddelta", e.name));
        run(dd(Some(&e)).args(["create", &old_ref, &new_ref, "-o", pkg.to_str().unwrap()]));
        let tag = format!("dd-e2e/loaded-{}:2", e.name);
        let o = run(dd(Some(&e)).args(["apply", pkg.to_str().unwrap(), "--load", "--tag", &tag]));
        assert!(String::from_utf8_lossy(&o.stdout).contains(&tag));
        assert_eq!(image_id(&e, &tag), new, "{}", e.name);
        // A full package (no old image) also loads, under the new image's own name
        // when none is given: here, an explicit one.
        let full = tmp.path().join(format!("{}-full.ddelta", e.name));
        run(dd(Some(&e)).args(["create", &new_ref, "-o", full.to_str().unwrap()]));
        let full_tag = format!("dd-e2e/full-{}:2", e.name);
        let report: serde_json::Value = serde_json::from_slice(
            &run(dd(Some(&e)).args([
                "apply",
                full.to_str().unwrap(),
                "--load",
                "--tag",
                &full_tag,
                "--json",
            ]))
            .stdout,
        )
        .unwrap();
        assert_eq!(image_id(&e, &full_tag), new);
        // The loaded archive was temporary: the report names the daemon instead.
        assert!(report["output"].is_null(), "{report}");
        assert_eq!(report["loaded_into"], e.host.as_str(), "{report}");
        assert_eq!(report["image_id"], new.as_str());
        // The base image missing from the daemon: refused, nothing loaded.
        let absent = format!("dd-e2e/never-{}:1", e.name);
        let o = dd(Some(&e))
            .args([
                "apply",
                pkg.to_str().unwrap(),
                "--base",
                &format!("docker-daemon:sha256:{}", "0".repeat(64)),
                "--load",
                "--tag",
                &absent,
            ])
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(3),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(!docker(&e)
            .args(["image", "inspect", &absent])
            .output()
            .unwrap()
            .status
            .success());
    }
}

/// The daemon is an output like any other (as in skopeo): `apply -o docker-daemon:NAME:TAG`
/// loads the image and tags it NAME:TAG, with the report `--load` gives; an output named by
/// an image ID or a digest is refused before anything is loaded, and an unreachable
/// daemon is a missing dependency.
#[test]
fn apply_to_a_docker_daemon_reference() {
    let Some(fx) = common::fixtures() else { return };
    let env = images_env(&fx);
    let tmp = tempfile::tempdir().unwrap();
    for e in engines() {
        let (prefix, dir) = if e.name == "d20" {
            ("D20", "d20")
        } else {
            ("D26", "d26")
        };
        let new = env[&format!("{prefix}_NEW_ID")].clone();
        let archive = |which: &str| {
            format!(
                "docker-archive:{}",
                fx.join(dir).join(format!("{which}.tar")).display()
            )
        };
        let pkg = tmp.path().join(format!("{}.ddelta", e.name));
        run(dd(None).args([
            "create",
            &archive("old"),
            &archive("new"),
            "-o",
            pkg.to_str().unwrap(),
        ]));
        let tag = format!("dd-e2e/output-ref-{}:2", e.name);
        let _ = docker(&e).args(["rmi", &tag]).output();
        let o = run(dd(Some(&e)).args([
            "apply",
            pkg.to_str().unwrap(),
            "--base",
            &archive("old"),
            "-o",
            &format!("docker-daemon:{tag}"),
            "--json",
        ]));
        let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(image_id(&e, &tag), new, "{}", e.name);
        assert!(report["output"].is_null(), "{report}");
        assert_eq!(report["loaded_into"], e.host.as_str(), "{report}");
        assert_eq!(report["name"], tag.as_str(), "{report}");
        assert_eq!(report["image_id"], new.as_str(), "{report}");
        // Not a name to tag with: refused, nothing loaded.
        for bad in [
            format!("docker-daemon:sha256:{}", "0".repeat(64)),
            format!("docker-daemon:dd-e2e/bad@sha256:{}", "0".repeat(64)),
        ] {
            let o = dd(Some(&e))
                .args([
                    "apply",
                    pkg.to_str().unwrap(),
                    "--base",
                    &archive("old"),
                    "-o",
                    &bad,
                ])
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(3), "{bad}: {err}");
            assert!(
                err.contains("NAME:TAG") || err.contains("name:tag"),
                "{bad}: {err}"
            );
        }
    }
    // No daemon there: a missing dependency, as with --load.
    let full = tmp.path().join("full.ddelta");
    let new_tar = fx.join("d26").join("new.tar");
    run(dd(None).args([
        "create",
        &format!("docker-archive:{}", new_tar.display()),
        "-o",
        full.to_str().unwrap(),
    ]));
    let o = dd(None)
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .args([
            "apply",
            full.to_str().unwrap(),
            "-o",
            "docker-daemon:dd-e2e/x:1",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("cannot reach the Docker daemon"), "{err}");
}

/// No daemon reachable: exit code 2.
#[test]
fn unreachable_daemon_is_a_missing_dependency() {
    let o = dd(None)
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .args(["inspect", "docker-daemon:busybox:latest"])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot reach the Docker daemon"));
}

/// A multi-platform image in Docker's containerd image store: its export's manifest.json
/// names only the host's platform, and `--platform` reaches the others through the
/// export's OCI index. On the classic store (one platform per image) another platform is
/// refused, naming the one there is.
/// Writes an OCI archive of a two-platform image (linux/amd64 and linux/arm64, one layer
/// each holding `hello.txt` with `content(arch)`) named `name` for the containerd store;
/// returns the index digest and each platform's config digest.
fn multiplatform_archive(
    path: &std::path::Path,
    name: &str,
    content: &dyn Fn(&str) -> String,
) -> (String, HashMap<&'static str, String>) {
    let mut blobs = common::Members::new();
    let mut put = |data: Vec<u8>| -> (String, usize) {
        let d = common::sha256(&data);
        let n = data.len();
        blobs = std::mem::replace(&mut blobs, common::Members::new())
            .add(&format!("blobs/sha256/{}", &d[7..]), data);
        (d, n)
    };
    let mut manifests = Vec::new();
    let mut configs = HashMap::new();
    for arch in ["amd64", "arm64"] {
        let layer = common::layer(&[("hello.txt", content(arch).as_bytes())]);
        let config = common::config(std::slice::from_ref(&layer), arch);
        let (ld, ls) = put(layer);
        let (cd, cs) = put(config);
        configs.insert(arch, cd.clone());
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs },
            "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": ls }],
        }))
        .unwrap();
        let (md, ms) = put(manifest);
        manifests.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
            "platform": { "os": "linux", "architecture": arch },
        }));
    }
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    }))
    .unwrap();
    let (id, is) = put(index);
    blobs
        .add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec())
        .add(
            "index.json",
            serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2,
                "manifests": [{
                    "mediaType": "application/vnd.oci.image.index.v1+json", "digest": id, "size": is,
                    "annotations": { "io.containerd.image.name": format!("docker.io/{name}") },
                }],
            }))
            .unwrap(),
        )
        .write(path);
    (id, configs)
}

#[test]
fn docker_daemon_sources_honour_platform() {
    let tmp = tempfile::tempdir().unwrap();
    let name = "dd-e2e/multiplatform:1";
    let archive = tmp.path().join("multiplatform.tar");
    let (id, configs) = multiplatform_archive(&archive, name, &|arch| format!("hello from {arch}"));
    let inspect = |e: &Engine, platform: &str| {
        dd(Some(e))
            .args(["inspect", "--json", "--platform", platform])
            .arg(format!("docker-daemon:{name}"))
            .output()
            .unwrap()
    };
    for e in engines() {
        if !e.c8d {
            // The classic store keeps one platform: load the host's, ask for the other.
            let (other, _) = common::docker_archive(
                tmp.path(),
                "classic.tar",
                Some(name),
                &[common::layer(&[("x", b"classic")])],
            );
            run(docker(&e).arg("load").arg("-i").arg(&other));
            let o = inspect(&e, "linux/arm64");
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(
                !o.status.success()
                    && err.contains("platform linux/arm64")
                    && err.contains("linux/amd64"),
                "{}: {err}",
                e.name
            );
            continue;
        }
        run(docker(&e).arg("load").arg("-i").arg(&archive));
        assert_eq!(docker_id(&e, name), id, "{}", e.name);
        for arch in ["amd64", "arm64"] {
            let o = inspect(&e, &format!("linux/{arch}"));
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            assert_eq!(v["image_id"], configs[arch].as_str(), "{arch}");
            assert_eq!(v["platform"]["architecture"], arch);
        }
        let o = inspect(&e, "linux/s390x");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && err.contains("linux/amd64, linux/arm64"),
            "{err}"
        );
        // A delta between two versions of the arm64 image, applied with no --base: the
        // daemon lists the base's tag with the host's layers, and the base is found anyway.
        let v2 = tmp.path().join("multiplatform-2.tar");
        let (_, configs2) = multiplatform_archive(&v2, "dd-e2e/multiplatform:2", &|arch| {
            format!("hello again from {arch}, with more to say")
        });
        let pkg = tmp.path().join("arm64.ddelta");
        let out = tmp.path().join("arm64-2.tar");
        run(dd(Some(&e))
            .args(["create", "--platform", "linux/arm64"])
            .arg(format!("docker-daemon:{name}"))
            .arg(format!("oci-archive:{}", v2.display()))
            .arg("-o")
            .arg(&pkg));
        run(dd(Some(&e)).arg("apply").arg(&pkg).arg("-o").arg(&out));
        let o = run(dd(None)
            .args(["inspect", "--json"])
            .arg(format!("docker-archive:{}", out.display())));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["image_id"], configs2["arm64"].as_str());
        assert_eq!(v["platform"]["architecture"], "arm64");
    }
}

/// With no --base, a base image the daemon does not have is named in the error, with what
/// to do about it.
#[test]
fn a_base_missing_from_the_daemon_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let base = common::layer(&[("base.txt", b"never loaded anywhere".as_slice())]);
    let (old, _) = common::docker_archive(
        tmp.path(),
        "old.tar",
        Some("dd-e2e/absent-base:1"),
        std::slice::from_ref(&base),
    );
    let (new, _) = common::docker_archive(
        tmp.path(),
        "new.tar",
        Some("dd-e2e/absent-base:2"),
        &[
            base.clone(),
            common::layer(&[("app.txt", b"v2".as_slice())]),
        ],
    );
    let pkg = tmp.path().join("p.ddelta");
    run(dd(None)
        .arg("create")
        .arg(format!("docker-archive:{}", old.display()))
        .arg(format!("docker-archive:{}", new.display()))
        .arg("-o")
        .arg(&pkg));
    for e in engines() {
        let o = dd(Some(&e))
            .arg("apply")
            .arg(&pkg)
            .arg("-o")
            .arg(tmp.path().join("out.tar"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(3), "{}: {err}", e.name);
        assert!(
            err.contains("the package's base image, tagged dd-e2e/absent-base:1 for linux/amd64")
                && err.contains("name it with --base"),
            "{}: {err}",
            e.name
        );
        assert!(!tmp.path().join("out.tar").exists());
    }
}

/// A copy of the docker-archive `src` whose old layer `n` (in manifest order) has one
/// byte changed in the middle, its size kept: the base image is damaged where only
/// reading that layer finds it.
fn damage_layer(src: &Path, n: usize, dst: &Path) {
    let manifest: serde_json::Value = {
        let mut a = tar::Archive::new(std::fs::File::open(src).unwrap());
        let mut e = a
            .entries()
            .unwrap()
            .map(|e| e.unwrap())
            .find(|e| e.path().unwrap().as_os_str() == "manifest.json")
            .unwrap();
        serde_json::from_reader(&mut e).unwrap()
    };
    let layer = manifest[0]["Layers"][n].as_str().unwrap().to_string();
    let (offset, size) = {
        let mut a = tar::Archive::new(std::fs::File::open(src).unwrap());
        let e = a
            .entries()
            .unwrap()
            .map(|e| e.unwrap())
            .find(|e| e.path().unwrap().to_str() == Some(layer.as_str()))
            .unwrap();
        (e.raw_file_position(), e.size())
    };
    let mut bytes = std::fs::read(src).unwrap();
    bytes[(offset + size / 2) as usize] ^= 0x55;
    std::fs::write(dst, bytes).unwrap();
}

/// `apply -o - | docker load`: the streamed archive loads as the new image on every
/// engine. With a base whose second layer is damaged, the failure comes after the first
/// layer went down the pipe: the pipeline fails (pipefail), `docker load` fails too, and
/// nothing is tagged.
#[test]
fn apply_streams_into_docker_load() {
    let Some(fx) = common::fixtures() else { return };
    let env = images_env(&fx);
    let tmp = tempfile::tempdir().unwrap();
    for e in engines() {
        let (prefix, dir) = if e.name == "d20" {
            ("D20", "d20")
        } else {
            ("D26", "d26")
        };
        let new = env[&format!("{prefix}_NEW_ID")].clone();
        let old_tar = fx.join(dir).join("old.tar");
        let new_tar = fx.join(dir).join("new.tar");
        let pkg = tmp.path().join(format!("{}-stream.ddelta", e.name));
        run(dd(None).args([
            "create",
            &format!("docker-archive:{}", old_tar.display()),
            &format!("docker-archive:{}", new_tar.display()),
            "-o",
            pkg.to_str().unwrap(),
        ]));
        let pipe = |base: &Path, tag: &str| {
            let script = format!(
                "set -o pipefail; '{}' apply '{}' --base 'docker-archive:{}' --tag '{tag}' -o - \
                 | '{}' -H '{}' load; s=$? ps=\"${{PIPESTATUS[*]}}\"; \
                 echo \"statuses $ps\" >&2; exit $s",
                common::bin().display(),
                pkg.display(),
                base.display(),
                e.cli,
                e.host,
            );
            Command::new("bash").args(["-c", &script]).output().unwrap()
        };
        let tag = format!("dd-e2e/stream-{}:2", e.name);
        let o = pipe(&old_tar, &tag);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{}: {err}", e.name);
        assert!(err.contains("statuses 0 0"), "{}: {err}", e.name);
        assert!(err.contains("wrote the image to standard output"), "{err}");
        assert_eq!(image_id(&e, &tag), new, "{}", e.name);

        // The new image's second layer is rebuilt from the old image's second: damaging
        // that fails the rebuild after the first layer was streamed.
        let info: serde_json::Value = serde_json::from_slice(
            &run(dd(None).args(["list", "--json", pkg.to_str().unwrap()])).stdout,
        )
        .unwrap();
        let old_layers = &info["layers"][1]["old_layers"];
        assert_eq!(old_layers.as_array().map(Vec::len), Some(1), "{info}");
        assert_eq!(old_layers[0]["index"], 1, "{info}");
        let damaged = tmp.path().join(format!("{}-damaged.tar", e.name));
        damage_layer(&old_tar, 1, &damaged);
        let bad_tag = format!("dd-e2e/stream-damaged-{}:2", e.name);
        let o = pipe(&damaged, &bad_tag);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{}: {err}", e.name);
        let statuses: Vec<&str> = err
            .lines()
            .find_map(|l| l.strip_prefix("statuses "))
            .unwrap()
            .split(' ')
            .collect();
        assert_eq!(statuses[0], "3", "{}: docker-delta: {err}", e.name);
        assert_ne!(statuses[1], "0", "{}: docker load took it: {err}", e.name);
        assert!(
            err.contains(&format!("{}-damaged.tar layer 1", e.name)),
            "the damaged layer is named: {err}"
        );
        assert!(
            !docker(&e)
                .args(["image", "inspect", &bad_tag])
                .output()
                .unwrap()
                .status
                .success(),
            "{}: a cut stream was tagged",
            e.name
        );
    }
    // A terminal is no place for an archive; --json has nowhere to go.
    let o = dd(None)
        .args(["apply", "x.ddelta", "-o", "-", "--json"])
        .output()
        .unwrap();
    assert_ne!(o.status.code(), Some(0));
}
