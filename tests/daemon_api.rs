//! Integration tests of `docker_delta::daemon` against real Docker engines.
//!
//! The engines are given by socket path (or `unix://` URL) in the environment:
//! - `DOCKER_DELTA_TEST_DOCKER20`: a Docker 20.10 engine (API 1.41);
//! - `DOCKER_DELTA_TEST_DOCKER26`: a Docker 26 engine (API 1.45), optional.
//!
//! When a variable is unset the test prints a skip message and passes, except that
//! `DOCKER_DELTA_REQUIRE_ENGINES=1` makes a missing Docker 20.10 engine a failure (and a
//! missing Docker 26 engine too if it is `all`).
//!
//! Test images are built with the docker CLI (`DOCKER_DELTA_TEST_DOCKER_CLI`, default
//! `docker`) using `-H` explicitly, with the legacy builder and `FROM scratch`, so no
//! registry is needed. Every image this test creates has a unique name and is removed.

use std::path::Path;
use std::process::Command;

use docker_delta::daemon::{DockerClient, ImageName};
use docker_delta::{Digest, Error};

fn engine(var: &str, required_when: &[&str]) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => {
            let v = v.trim();
            Some(if v.contains("://") {
                v.to_string()
            } else {
                format!("unix://{v}")
            })
        }
        _ => {
            let require = std::env::var("DOCKER_DELTA_REQUIRE_ENGINES").unwrap_or_default();
            if required_when.contains(&require.as_str()) {
                panic!("{var} is not set but DOCKER_DELTA_REQUIRE_ENGINES={require}");
            }
            eprintln!("skipping: {var} is not set (path of a Docker engine socket)");
            None
        }
    }
}

fn docker_cli() -> String {
    std::env::var("DOCKER_DELTA_TEST_DOCKER_CLI").unwrap_or_else(|_| "docker".to_string())
}

/// Runs the docker CLI against `endpoint`; panics with its output on failure.
fn docker(endpoint: &str, args: &[&str]) -> String {
    let out = Command::new(docker_cli())
        .arg("-H")
        .arg(endpoint)
        .args(args)
        .env("DOCKER_BUILDKIT", "0")
        .env_remove("DOCKER_HOST")
        .env_remove("DOCKER_CONTEXT")
        .output()
        .expect("run the docker CLI");
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Removes images on drop, ignoring errors.
struct Cleanup<'a> {
    endpoint: &'a str,
    names: Vec<String>,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = Command::new(docker_cli())
                .args(["-H", self.endpoint, "rmi", "-f", n])
                .output();
        }
    }
}

/// Builds a two-layer FROM-scratch image tagged `tag`.
fn build_image(endpoint: &str, dir: &Path, tag: &str) {
    std::fs::write(dir.join("a.txt"), format!("first layer of {tag}\n")).unwrap();
    // A few MiB of incompressible-looking data, so streams span many reads and chunks.
    let mut x = 0x9e37_79b9_u32;
    let data: Vec<u8> = (0..3_000_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    std::fs::write(dir.join("b.bin"), data).unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM scratch\nCOPY a.txt /a.txt\nCOPY b.bin /data/b.bin\nCMD [\"/nothing\"]\n",
    )
    .unwrap();
    docker(endpoint, &["build", "-q", "-t", tag, dir.to_str().unwrap()]);
}

fn tar_names(path: &Path) -> Vec<String> {
    let mut archive = tar::Archive::new(std::fs::File::open(path).unwrap());
    archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect()
}

fn exercise(endpoint: &str, expect_api: &str) {
    let client = DockerClient::new(endpoint).unwrap();
    client.ping().unwrap();
    let version = client.version().unwrap();
    eprintln!(
        "engine {} API {} {}/{}",
        version.version, version.api_version, version.os, version.arch
    );
    assert_eq!(client.api_version().unwrap(), expect_api);

    let unique = format!("{}-{}", std::process::id(), expect_api.replace('.', "-"));
    let src_tag = format!("dd-test/src:{unique}");
    let loaded_tag = format!("dd-test/loaded:{unique}");
    let retag = format!("localhost:5000/dd-test/again:{unique}");
    let mut cleanup = Cleanup {
        endpoint,
        names: vec![src_tag.clone(), loaded_tag.clone(), retag.clone()],
    };
    let dir = tempfile::tempdir().unwrap();
    build_image(endpoint, dir.path(), &src_tag);

    // Inspect.
    let info = client
        .inspect_image(&src_tag)
        .unwrap()
        .expect("built image");
    assert_eq!(info.rootfs_layers.len(), 2, "{:#?}", info.raw);
    assert!(info.repo_tags.contains(&src_tag), "{:?}", info.repo_tags);
    assert_eq!(info.os, "linux");
    assert!(!info.architecture.is_empty());
    let image_id = info.id.clone();
    cleanup.names.push(image_id.to_string());
    let by_id = client
        .inspect_image(&image_id.to_string())
        .unwrap()
        .expect("inspect by ID");
    assert_eq!(by_id.id, image_id);

    // Export by tag and by ID, streamed to files.
    let by_tag_path = dir.path().join("by-tag.tar");
    let mut f = std::fs::File::create(&by_tag_path).unwrap();
    let n = client.export_image(&src_tag, &mut f).unwrap();
    drop(f);
    assert_eq!(n, std::fs::metadata(&by_tag_path).unwrap().len());
    let names = tar_names(&by_tag_path);
    assert!(
        names.iter().any(|n| n == "manifest.json"),
        "no manifest.json in {names:?}"
    );
    let by_id_path = dir.path().join("by-id.tar");
    let mut f = std::fs::File::create(&by_id_path).unwrap();
    client.export_image(&image_id.to_string(), &mut f).unwrap();
    drop(f);
    assert!(tar_names(&by_id_path).iter().any(|n| n == "manifest.json"));

    // Remove the image, then load it back: with a known length (Content-Length)...
    docker(endpoint, &["rmi", "-f", &src_tag]);
    assert!(client.inspect_image(&src_tag).unwrap().is_none());
    let len = std::fs::metadata(&by_tag_path).unwrap().len();
    let loaded = client
        .load_image(std::fs::File::open(&by_tag_path).unwrap(), Some(len))
        .unwrap();
    assert_eq!(loaded.names, vec![src_tag.clone()], "{loaded:?}");
    assert_eq!(
        client.inspect_image(&src_tag).unwrap().map(|i| i.id),
        Some(image_id.clone())
    );

    // ... and the untagged (by-ID) archive with a chunked body, after removing it again.
    docker(endpoint, &["rmi", "-f", &src_tag]);
    let loaded = client
        .load_image(std::fs::File::open(&by_id_path).unwrap(), None)
        .unwrap();
    assert!(loaded.names.is_empty(), "{loaded:?}");
    assert_eq!(loaded.ids, vec![image_id.clone()], "{loaded:?}");

    // Tag under a different name and verify, including a registry-port name.
    let name = client.tag_and_verify(&image_id, &[], &loaded_tag).unwrap();
    assert_eq!(name.to_string(), loaded_tag);
    let name = client.tag_and_verify(&image_id, &[], &retag).unwrap();
    assert_eq!(name.domain(), Some("localhost:5000"));
    let info = client.inspect_image(&loaded_tag).unwrap().unwrap();
    assert_eq!(info.id, image_id);
    assert!(info.repo_tags.contains(&retag), "{:?}", info.repo_tags);

    // Plain tag_image with a default tag.
    client.tag_image(&loaded_tag, "dd-test/plain", "").unwrap();
    cleanup.names.push("dd-test/plain:latest".into());
    assert_eq!(
        client.inspect_image("dd-test/plain").unwrap().map(|i| i.id),
        Some(image_id.clone())
    );

    // Missing image.
    assert!(client
        .inspect_image(&format!("dd-test/missing:{unique}"))
        .unwrap()
        .is_none());
    let e = client
        .export_image(&format!("dd-test/missing:{unique}"), &mut Vec::new())
        .unwrap_err();
    assert!(matches!(e, Error::Daemon { status: 404, .. }), "{e:?}");

    // Tagging an image that does not exist.
    let ghost = Digest::of(b"no such image config");
    let e = client
        .tag_and_verify(&ghost, &[], &format!("dd-test/ghost:{unique}"))
        .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::TagFailed { .. }), "{e:?}");
    assert!(
        msg.contains(&format!("docker tag {ghost} dd-test/ghost:{unique}")),
        "{msg}"
    );
    // An invalid target is reported the same way.
    let e = client
        .tag_and_verify(&image_id, &[], "Bad/Name")
        .unwrap_err();
    assert!(matches!(e, Error::TagFailed { .. }), "{e:?}");
    assert!(e.to_string().contains("lowercase"), "{e}");

    // A corrupt archive: the daemon's in-stream error becomes Error::Daemon.
    let e = client
        .load_image(&b"not a tar at all"[..], Some(16))
        .unwrap_err();
    assert!(matches!(e, Error::Daemon { .. }), "{e:?}");
    eprintln!("corrupt load reported: {e}");

    assert!(ImageName::parse(&loaded_tag).is_ok());
}

#[test]
fn docker20_engine() {
    if let Some(endpoint) = engine("DOCKER_DELTA_TEST_DOCKER20", &["1", "all"]) {
        exercise(&endpoint, "1.41");
    }
}

#[test]
fn docker26_engine() {
    if let Some(endpoint) = engine("DOCKER_DELTA_TEST_DOCKER26", &["all"]) {
        exercise(&endpoint, "1.45");
    }
}

#[test]
fn unreachable_socket_is_daemon_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("unix://{}", dir.path().join("no-daemon.sock").display());
    let client = DockerClient::new(&endpoint).unwrap();
    for e in [
        client.ping().unwrap_err(),
        client.inspect_image("x").unwrap_err(),
        client.load_image(&b""[..], None).unwrap_err(),
    ] {
        assert!(matches!(e, Error::DaemonUnavailable { .. }), "{e:?}");
        assert!(e.to_string().contains(&endpoint), "{e}");
        assert_eq!(e.exit_code(), docker_delta::ExitCode::MissingDependency);
    }
    // A socket file with no listener behind it.
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let e = DockerClient::new(stale.to_str().unwrap())
        .unwrap()
        .ping()
        .unwrap_err();
    assert!(matches!(e, Error::DaemonUnavailable { .. }), "{e:?}");
}
