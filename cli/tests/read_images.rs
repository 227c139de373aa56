//! Reading images: every fixture made by real tools agrees with skopeo (the oracle), and
//! every malformed input gets the error that names what is wrong.

mod common;

use std::process::Command;

use docker_delta::{open, Error, ImageReference, OpenOptions, Platform};

fn open_ref(
    r: &str,
    platform: Option<&str>,
) -> docker_delta::Result<Box<dyn docker_delta::ImageSource>> {
    let reference = ImageReference::parse(r)?;
    let options = OpenOptions {
        platform: platform.map(|p| Platform::parse(p).unwrap()),
        ..OpenOptions::default()
    };
    open(&reference, &options)
}

#[test]
fn every_fixture_agrees_with_skopeo() {
    let Some(dir) = common::fixtures() else {
        return;
    };
    let mut checked = 0;
    for e in common::expected(&dir) {
        let r = e["ref"].as_str().unwrap();
        let platform = e["platform"].as_str();
        let result = open_ref(r, platform).and_then(|s| {
            let checks = s.verify_layers()?;
            Ok((s.image().clone(), checks))
        });
        match (e.get("expect_error"), e.get("config_digest"), result) {
            // Error cases skopeo fails on and we must refuse too.
            (Some(_), None, Err(_)) => {}
            (Some(_), None, Ok(_)) => panic!("{r}: expected an error"),
            (Some(why), Some(_), Err(err)) => {
                // pre-1.10 archives: refused with a clear message.
                assert!(
                    matches!(err, Error::UnsupportedLegacyArchive { .. }),
                    "{r} ({why}): {err}"
                );
            }
            (_, Some(cfg), Ok((image, checks))) => {
                assert_eq!(
                    image.config_digest.to_string(),
                    cfg.as_str().unwrap(),
                    "{r} config digest"
                );
                let diff_ids: Vec<String> =
                    image.diff_ids().iter().map(ToString::to_string).collect();
                let want: Vec<String> = serde_json::from_value(e["diff_ids"].clone()).unwrap();
                assert_eq!(diff_ids, want, "{r} diff_ids");
                assert_eq!(
                    image.platform.architecture,
                    e["architecture"].as_str().unwrap(),
                    "{r} arch"
                );
                assert_eq!(checks.len(), want.len());
                // OCI layouts: blob digests and sizes match the manifest skopeo read.
                if e["transport"] != "docker-archive" {
                    let layers = e["layers"].as_array().unwrap();
                    for (l, c) in layers.iter().zip(&checks) {
                        assert_eq!(
                            c.digest.to_string(),
                            l["digest"].as_str().unwrap(),
                            "{r} blob digest"
                        );
                        assert_eq!(c.size, l["size"].as_u64().unwrap(), "{r} blob size");
                    }
                }
                if let Some(tags) = e["repo_tags"].as_array() {
                    let tags: Vec<&str> = tags.iter().map(|t| t.as_str().unwrap()).collect();
                    if e["transport"] == "docker-archive" {
                        assert_eq!(image.repo_tags, tags, "{r} tags");
                    }
                }
                checked += 1;
            }
            (None, None, Ok(_)) => {
                panic!("{r}: expected.json has neither config_digest nor expect_error")
            }
            (_, _, Err(err)) => panic!("{r}: {err}"),
        }
    }
    assert!(checked >= 20, "only {checked} fixtures checked");
}

#[test]
fn inspect_cli_json_matches_library() {
    let Some(dir) = common::fixtures() else {
        return;
    };
    let inspect = |args: &[&str]| {
        Command::new(common::bin())
            .arg("inspect")
            .args(args)
            .output()
            .unwrap()
    };
    let stdout = |out: std::process::Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let r = format!("docker-archive:{}/d26/new.tar", dir.display());
    let v: serde_json::Value = serde_json::from_slice(&stdout(inspect(&["--json", &r]))).unwrap();
    let src = open_ref(&r, None).unwrap();
    assert_eq!(v["image_id"], src.image().config_digest.to_string());
    assert_eq!(v["transport"], "docker-archive");
    assert_eq!(v["manifest_format"], "docker-archive-manifest");
    assert_eq!(
        v["layers"].as_array().unwrap().len(),
        src.image().layers.len()
    );
    assert!(v["layers"][0]["uncompressed_size"].as_u64().unwrap() > 0);
    // Bare path: transport detected from content.
    let bare = format!("{}/oci-archive/new.tar", dir.display());
    let v: serde_json::Value =
        serde_json::from_slice(&stdout(inspect(&["--json", &bare]))).unwrap();
    assert_eq!(v["transport"], "oci-archive");
    // Several images and no selector: exit code 3 and the choices listed.
    let out = inspect(&[&format!("docker-archive:{}/d20/multi.tar", dir.display())]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(":@1") && err.contains("dd-test/app:2"),
        "{err}"
    );
    // Text output: the indexes walked to the manifest, outermost first, once each.
    let multiarch = format!("oci:{}/multiarch:new", dir.display());
    let out = stdout(inspect(&[
        "--no-verify",
        "--platform",
        "linux/arm64",
        &multiarch,
    ]));
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.contains("Manifest:    OCI image manifest (via OCI image index > OCI image index)\n"),
        "{text}"
    );
}

#[test]
fn multiarch_platform_choice_and_missing_blobs() {
    let Some(dir) = common::fixtures() else {
        return;
    };
    let r = format!("oci:{}/multiarch:new", dir.display());
    let amd = open_ref(&r, Some("linux/amd64")).unwrap();
    let arm = open_ref(&r, Some("linux/arm64")).unwrap();
    assert_eq!(arm.image().platform.architecture, "arm64");
    assert_ne!(amd.image().config_digest, arm.image().config_digest);
    let e = open_ref(&r, Some("linux/arm/v7")).err().unwrap();
    assert!(matches!(e, Error::MissingFile { .. }), "{e}");
    let e = open_ref(&r, Some("linux/s390x")).err().unwrap();
    let msg = e.to_string();
    assert!(
        msg.contains("platform linux/s390x") && msg.contains("linux/arm64"),
        "{msg}"
    );
}

/// Malformed archives, each with the error it must produce.
#[test]
fn bad_docker_archives_are_refused_with_precise_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let l1 = common::layer(&[("a.txt", b"hello")]);
    let l2 = common::layer(&[("b.txt", b"world")]);
    let cfg = common::config(&[l1.clone(), l2.clone()], "amd64");
    let cfg_hex = common::sha256(&cfg)[7..].to_string();
    let ok_manifest = |layers: serde_json::Value| {
        serde_json::to_vec(&serde_json::json!([{ "Config": format!("{cfg_hex}.json"), "RepoTags": ["x:1"], "Layers": layers }])).unwrap()
    };
    let base = || {
        common::Members::new()
            .add(&format!("{cfg_hex}.json"), cfg.clone())
            .add("l1/layer.tar", l1.clone())
            .add("l2/layer.tar", l2.clone())
    };
    let mut altered = l2.clone();
    let n = altered.len();
    altered[600] ^= 0x01;
    assert!(n > 600);
    type Case = (
        &'static str,
        common::Members,
        &'static str,
        fn(&Error) -> bool,
    );
    let cases: Vec<Case> = vec![
        (
            "invalid json",
            base().add("manifest.json", &b"[{\"Config\": \n  oops}]"[..]),
            "manifest.json: invalid JSON at line 2, column 3",
            |e| matches!(e, Error::InvalidJson { .. }),
        ),
        (
            "missing Config",
            base().add("manifest.json", &br#"[{"RepoTags":null,"Layers":[]}]"#[..]),
            "[0]: missing field `Config`",
            |e| matches!(e, Error::InvalidField { .. }),
        ),
        (
            "not an archive manifest",
            base().add("manifest.json", &br#"{"schemaVersion":2,"manifests":[]}"#[..]),
            "OCI image index where a docker-archive manifest.json was expected",
            |e| matches!(e, Error::UnsupportedManifest { .. }),
        ),
        (
            "layer count",
            base().add("manifest.json", ok_manifest(serde_json::json!(["l1/layer.tar"]))),
            "lists 1 layers but the config's rootfs.diff_ids has 2",
            |e| matches!(e, Error::LayerCountMismatch { .. }),
        ),
        (
            "missing layer",
            base().add("manifest.json", ok_manifest(serde_json::json!(["l1/layer.tar", "l3/layer.tar"]))),
            "missing layer 1 \"l3/layer.tar\"",
            |e| matches!(e, Error::MissingFile { .. }),
        ),
        (
            "outside",
            base().add("manifest.json", ok_manifest(serde_json::json!(["l1/layer.tar", "../../etc/passwd"]))),
            "path \"../../etc/passwd\" points outside the archive",
            |e| matches!(e, Error::PathOutsideArchive { .. }),
        ),
        (
            "legacy",
            common::Members::new().add("repositories", &b"{}"[..]).add("l1/layer.tar", l1.clone()),
            "unsupported legacy archive",
            |e| matches!(e, Error::UnsupportedLegacyArchive { .. }),
        ),
        (
            "oci archive given as docker-archive",
            common::Members::new().add("oci-layout", &b"{}"[..]).add("index.json", &b"{}"[..]),
            "read it as oci-archive:",
            |e| matches!(e, Error::InvalidLayout { .. }),
        ),
        (
            "config named by another digest",
            common::Members::new()
                .add(&format!("{}.json", "0".repeat(64)), cfg.clone())
                .add("l1/layer.tar", l1.clone())
                .add("l2/layer.tar", l2.clone())
                .add(
                    "manifest.json",
                    serde_json::to_vec(&serde_json::json!([{ "Config": format!("{}.json", "0".repeat(64)), "Layers": ["l1/layer.tar", "l2/layer.tar"] }])).unwrap(),
                ),
            "config: digest mismatch: expected sha256:0000",
            |e| matches!(e, Error::DigestMismatch { .. }),
        ),
    ];
    for (name, members, want, kind) in cases {
        let path = d.join(format!("{}.tar", name.replace(' ', "_")));
        members.write(&path);
        let e = open_ref(&format!("docker-archive:{}", path.display()), None)
            .err()
            .unwrap_or_else(|| panic!("{name}: opened"));
        assert!(e.to_string().contains(want), "{name}: {e}");
        assert!(kind(&e), "{name}: wrong kind {e:?}");
    }

    // A layer altered after the config was written: refused when read, naming the layer.
    let path = d.join("altered.tar");
    common::Members::new()
        .add(&format!("{cfg_hex}.json"), cfg.clone())
        .add("l1/layer.tar", l1.clone())
        .add("l2/layer.tar", altered)
        .add(
            "manifest.json",
            ok_manifest(serde_json::json!(["l1/layer.tar", "l2/layer.tar"])),
        )
        .write(&path);
    let src = open_ref(&format!("docker-archive:{}", path.display()), None).unwrap();
    let e = src.verify_layers().unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::DigestMismatch { .. }), "{e:?}");
    assert!(
        msg.contains("layer 1 (l2/layer.tar)") && msg.contains("diff_id"),
        "{msg}"
    );

    // Multi-image archive: selection by tag, by index, and the errors listing choices.
    let cfg_b = common::config(std::slice::from_ref(&l1), "arm64");
    let cfg_b_hex = common::sha256(&cfg_b)[7..].to_string();
    // Two images (amd64 with two layers, arm64 with one), tagged as given.
    let two_images = |name: &str, tags_a: serde_json::Value, tags_b: serde_json::Value| {
        let path = d.join(name);
        common::Members::new()
            .add(&format!("{cfg_hex}.json"), cfg.clone())
            .add(&format!("{cfg_b_hex}.json"), cfg_b.clone())
            .add("l1/layer.tar", l1.clone())
            .add("l2/layer.tar", l2.clone())
            .add(
                "manifest.json",
                serde_json::to_vec(&serde_json::json!([
                    { "Config": format!("{cfg_hex}.json"), "RepoTags": tags_a, "Layers": ["l1/layer.tar", "l2/layer.tar"] },
                    { "Config": format!("{cfg_b_hex}.json"), "RepoTags": tags_b, "Layers": ["l1/layer.tar"] },
                ]))
                .unwrap(),
            )
            .write(&path);
        path
    };
    let multi = two_images(
        "multi.tar",
        serde_json::json!(["docker.io/library/app:1"]),
        serde_json::Value::Null,
    );
    let m = multi.display();
    assert_eq!(
        open_ref(&format!("docker-archive:{m}:app:1"), None)
            .unwrap()
            .image()
            .layers
            .len(),
        2
    );
    assert_eq!(
        open_ref(&format!("docker-archive:{m}:@1"), None)
            .unwrap()
            .image()
            .platform
            .architecture,
        "arm64"
    );
    let e = open_ref(&format!("docker-archive:{m}"), None)
        .err()
        .unwrap();
    assert!(
        matches!(&e, Error::AmbiguousImage { choices, .. } if choices.len() == 3),
        "{e}"
    );
    let e = open_ref(&format!("docker-archive:{m}:app:2"), None)
        .err()
        .unwrap();
    let msg = e.to_string();
    assert!(
        msg.contains("no image matches app:2") && msg.contains("@1 (untagged"),
        "{msg}"
    );
    let e = open_ref(&format!("docker-archive:{m}:@5"), None)
        .err()
        .unwrap();
    assert!(matches!(e, Error::ImageNotFound { .. }), "{e}");
    let arch = |r: &str, platform: Option<&str>| {
        open_ref(r, platform).map(|s| s.image().platform.architecture.clone())
    };
    // Two different images stay ambiguous without --platform (above); --platform picks.
    assert_eq!(
        arch(&format!("docker-archive:{m}"), Some("linux/arm64")).unwrap(),
        "arm64"
    );

    // One image's platforms (the same tags, as Docker's containerd image store saves a
    // multi-platform image): the platform chooses, the host's by default.
    let plat = two_images(
        "platforms.tar",
        serde_json::json!(["app:1"]),
        serde_json::json!(["docker.io/library/app:1"]),
    );
    let p = plat.display();
    assert_eq!(
        arch(&format!("docker-archive:{p}"), Some("linux/arm64")).unwrap(),
        "arm64"
    );
    assert_eq!(
        arch(&format!("docker-archive:{p}:app:1"), Some("linux/amd64")).unwrap(),
        "amd64"
    );
    let host = Platform::host();
    if host.os == "linux" && ["amd64", "arm64"].contains(&host.architecture.as_str()) {
        assert_eq!(
            arch(&format!("docker-archive:{p}"), None).unwrap(),
            host.architecture
        );
    }
    let e = open_ref(&format!("docker-archive:{p}"), Some("linux/s390x"))
        .err()
        .unwrap();
    let msg = e.to_string();
    assert!(
        matches!(e, Error::ImageNotFound { .. })
            && msg.contains("@0 (linux/amd64)")
            && msg.contains("@1 (linux/arm64)"),
        "{msg}"
    );
}

/// Malformed OCI layouts.
#[test]
fn bad_oci_layouts_are_refused_with_precise_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("layout");
    std::fs::create_dir_all(root.join("blobs/sha256")).unwrap();
    let put = |data: &[u8]| -> String {
        let d = common::sha256(data);
        common::write_file(&root.join("blobs/sha256").join(&d[7..]), data);
        d
    };
    let l1 = common::layer(&[("a", b"1")]);
    let cfg = common::config(std::slice::from_ref(&l1), "amd64");
    let l1d = put(&l1);
    let cfgd = put(&cfg);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfgd, "size": cfg.len() },
        "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": l1d, "size": l1.len() }],
    }))
    .unwrap();
    let md = put(&manifest);
    common::write_file(
        &root.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    );
    let index = |entries: serde_json::Value| {
        common::write_file(
            &root.join("index.json"),
            &serde_json::to_vec(&serde_json::json!({ "schemaVersion": 2, "manifests": entries }))
                .unwrap(),
        );
    };
    let r = format!("oci:{}", root.display());

    index(
        serde_json::json!([{ "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": manifest.len(), "annotations": { "org.opencontainers.image.ref.name": "v1" } }]),
    );
    assert_eq!(
        open_ref(&format!("{r}:v1"), None)
            .unwrap()
            .image()
            .config_digest
            .to_string(),
        cfgd
    );
    let e = open_ref(&format!("{r}:v9"), None).err().unwrap();
    assert!(
        e.to_string()
            .contains("no image matches ref name \"v9\"; available: v1"),
        "{e}"
    );

    // Wrong size recorded for the manifest.
    index(
        serde_json::json!([{ "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": 3 }]),
    );
    let e = open_ref(&r, None).err().unwrap();
    assert!(matches!(e, Error::SizeMismatch { .. }), "{e}");

    // A digest of the wrong length or algorithm.
    index(
        serde_json::json!([{ "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:abcd", "size": 3 }]),
    );
    let e = open_ref(&r, None).err().unwrap();
    assert!(e.to_string().contains("manifests[0]"), "{e}");
    index(
        serde_json::json!([{ "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": format!("sha512:{}", "a".repeat(128)), "size": 3 }]),
    );
    let e = open_ref(&r, None).err().unwrap();
    assert!(e.to_string().contains("sha512"), "{e}");

    // Index nesting deeper than the limit (a true cycle cannot be built: a blob cannot
    // contain its own digest).
    let mut prev = md.clone();
    let mut prev_len = manifest.len();
    for _ in 0..12 {
        let doc = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{ "mediaType": "application/vnd.oci.image.index.v1+json", "digest": prev, "size": prev_len }],
        })).unwrap();
        prev = put(&doc);
        prev_len = doc.len();
    }
    index(
        serde_json::json!([{ "mediaType": "application/vnd.oci.image.index.v1+json", "digest": prev, "size": prev_len }]),
    );
    let e = open_ref(&r, None).err().unwrap();
    assert!(
        matches!(e, Error::LimitExceeded { .. }) && e.to_string().contains("nesting depth"),
        "{e}"
    );

    // Two untagged images: ambiguous.
    index(serde_json::json!([
        { "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": manifest.len() },
        { "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": manifest.len() },
    ]));
    let e = open_ref(&r, None).err().unwrap();
    assert!(matches!(e, Error::AmbiguousImage { .. }), "{e}");

    // A schema1 manifest.
    let s1 = br#"{"schemaVersion":1,"name":"x","fsLayers":[]}"#;
    let s1d = put(s1);
    index(
        serde_json::json!([{ "digest": s1d, "size": s1.len(), "mediaType": "application/vnd.oci.image.manifest.v1+json" }]),
    );
    let e = open_ref(&r, None).err().unwrap();
    assert!(
        e.to_string()
            .contains("Docker schema1 manifest (schemaVersion 1"),
        "{e}"
    );

    // A layer blob missing.
    index(
        serde_json::json!([{ "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": manifest.len() }]),
    );
    std::fs::remove_file(root.join("blobs/sha256").join(&l1d[7..])).unwrap();
    let e = open_ref(&r, None).err().unwrap();
    assert!(e.to_string().contains("missing layer 0 blob"), "{e}");
}
