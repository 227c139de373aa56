//! Property tests: manifest detection never panics on arbitrary JSON; references print to
//! a string that parses back to the same reference; create -> apply rebuilds byte-identical
//! layers for generated pairs of layer tars.

mod common;

use std::path::PathBuf;

use docker_delta::delta::apply::{apply, ApplyOptions};
use docker_delta::delta::create::{create, CreateOptions};
use docker_delta::delta::format::{CompressionSpec, Package, PayloadCompression};
use docker_delta::delta::plan::Method;
use docker_delta::manifest::{detect, ConfigView, Document};
use docker_delta::reference::ArchiveSelector;
use docker_delta::{open, ImageReference, OpenOptions};
use proptest::prelude::*;
use serde_json::Value;

/// JSON values biased towards the keys and values manifests use, so that detection goes
/// down every branch (index, manifest, archive, config, schema1) and parsing is reached.
fn json() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("schemaVersion".to_string()),
        Just("mediaType".to_string()),
        Just("manifests".to_string()),
        Just("layers".to_string()),
        Just("config".to_string()),
        Just("digest".to_string()),
        Just("size".to_string()),
        Just("platform".to_string()),
        Just("annotations".to_string()),
        Just("Layers".to_string()),
        Just("Config".to_string()),
        Just("RepoTags".to_string()),
        Just("rootfs".to_string()),
        Just("diff_ids".to_string()),
        Just("type".to_string()),
        Just("fsLayers".to_string()),
        Just("os".to_string()),
        Just("architecture".to_string()),
        "[a-zA-Z.]{0,8}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        Just(Value::from(2)),
        Just(Value::from("application/vnd.oci.image.index.v1+json")),
        Just(Value::from("application/vnd.oci.image.manifest.v1+json")),
        Just(Value::from(
            "application/vnd.docker.distribution.manifest.v2+json"
        )),
        Just(Value::from(
            "application/vnd.docker.distribution.manifest.list.v2+json"
        )),
        Just(Value::from(
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        )),
        Just(Value::from("layers")),
        "\\PC{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn detection_never_panics_and_agrees_with_parsing(v in json()) {
        let raw = serde_json::to_vec(&v).unwrap();
        let detected = detect(&raw, "p.json");
        if let Ok(doc) = Document::parse(&raw, "p.json") {
            prop_assert_eq!(detected.unwrap(), doc.kind());
        }
        let _ = ConfigView::parse(&raw, "p.json");
    }

    #[test]
    fn detection_never_panics_on_bytes(raw in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = detect(&raw, "p.json");
        let _ = Document::parse(&raw, "p.json");
        let _ = ConfigView::parse(&raw, "p.json");
    }
}

/// References to paths that do not exist (so parsing never looks at the disk), with
/// colons, backslashes and spaces in the paths.
fn reference() -> impl Strategy<Value = ImageReference> {
    let path = "[a-z0-9 :\\\\._-]{1,12}(/[a-z0-9 :\\\\._-]{1,8}){0,2}"
        .prop_map(|p| PathBuf::from(format!("/nonexistent-dd-prop/{p}")));
    let name = "[a-zA-Z0-9][a-zA-Z0-9:._/-]{0,15}";
    // What the OCI image spec allows as a ref name.
    let ref_name = "[a-zA-Z0-9]{1,4}(([-._:@+]|--)[a-zA-Z0-9]{1,4}){0,3}(/[a-zA-Z0-9]{1,4}){0,2}";
    prop_oneof![
        (path.clone(), prop::option::of(name)).prop_map(|(path, n)| {
            ImageReference::DockerArchive {
                path,
                selector: n.map(ArchiveSelector::Name),
            }
        }),
        (path.clone(), 0usize..1000).prop_map(|(path, i)| ImageReference::DockerArchive {
            path,
            selector: Some(ArchiveSelector::Index(i)),
        }),
        (path.clone(), prop::option::of(ref_name))
            .prop_map(|(path, name)| ImageReference::Oci { path, name }),
        (path, prop::option::of(ref_name))
            .prop_map(|(path, name)| ImageReference::OciArchive { path, name }),
        name.prop_map(|name| ImageReference::DockerDaemon { name }),
        (
            "[a-z0-9]{1,8}\\.[a-z]{2,3}(:[0-9]{2,5})?",
            "[a-z0-9]{1,6}(/[a-z0-9]{1,6}){0,2}",
            "[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,10}",
            prop::option::of("[0-9a-f]{64}"),
        )
            .prop_map(
                |(registry, repository, tag, digest)| ImageReference::Docker {
                    registry,
                    repository,
                    tag: Some(tag),
                    digest: digest.map(|d| docker_delta::digest::Digest::from_hex(&d).unwrap()),
                }
            ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn references_round_trip(r in reference()) {
        let printed = r.to_string();
        let back = ImageReference::parse(&printed);
        prop_assert!(back.is_ok(), "{:?} printed as {:?}: {:?}", r, printed, back);
        prop_assert_eq!(back.unwrap(), r, "printed as {:?}", printed);
    }
}

/// A layer's files: a few names with contents.
fn files() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    prop::collection::btree_map(
        "[a-z]{1,6}(/[a-z]{1,6}){0,2}",
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..3000),
            (any::<u8>(), 0usize..20_000).prop_map(|(b, n)| vec![b; n]),
        ],
        1..6,
    )
    .prop_map(|m| m.into_iter().collect())
}

/// Edits that turn an old file set into a new one: changed bytes, an inserted run, a
/// removed file and an added one.
#[derive(Debug, Clone)]
struct Edit {
    file: usize,
    at: usize,
    byte: u8,
    insert: Vec<u8>,
    remove: bool,
    add: Option<(String, Vec<u8>)>,
}

fn edit() -> impl Strategy<Value = Edit> {
    (
        any::<usize>(),
        any::<usize>(),
        any::<u8>(),
        prop::collection::vec(any::<u8>(), 0..200),
        any::<bool>(),
        prop::option::of(("new/[a-z]{1,6}", prop::collection::vec(any::<u8>(), 0..500))),
    )
        .prop_map(|(file, at, byte, insert, remove, add)| Edit {
            file,
            at,
            byte,
            insert,
            remove,
            add,
        })
}

fn apply_edit(old: &[(String, Vec<u8>)], e: &Edit) -> Vec<(String, Vec<u8>)> {
    let mut new = old.to_vec();
    let i = e.file % new.len();
    let data = &mut new[i].1;
    if !data.is_empty() {
        let at = e.at % data.len();
        data[at] ^= e.byte | 1;
        data.splice(at..at, e.insert.iter().copied());
    }
    if e.remove && new.len() > 1 {
        new.remove((i + 1) % new.len());
    }
    if let Some(a) = &e.add {
        new.retain(|(n, _)| *n != a.0);
        new.push(a.clone());
    }
    new
}

fn tar_of(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, d)| (n.as_str(), &d[..])).collect();
    common::layer(&refs)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn create_then_apply_rebuilds_identical_layers(
        shared in files(),
        old_files in files(),
        e in edit(),
        method in prop_oneof![Just(Method::Auto), Just(Method::Files), Just(Method::Xdelta3), Just(Method::Zstd), Just(Method::Layer)],
        algorithm in prop_oneof![Just(PayloadCompression::Zstd), Just(PayloadCompression::Gzip), Just(PayloadCompression::Xz), Just(PayloadCompression::None)],
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let base = tar_of(&shared);
        let old_layer = tar_of(&old_files);
        let new_layer = tar_of(&apply_edit(&old_files, &e));
        let (old, _) = common::docker_archive(d, "old.tar", Some("p/app:1"), &[base.clone(), old_layer]);
        let new_layers = vec![base, new_layer];
        let (new, new_id) = common::docker_archive(d, "new.tar", Some("p/app:2"), &new_layers);
        let src = |p: &std::path::Path| {
            open(&ImageReference::DockerArchive { path: p.to_path_buf(), selector: None }, &OpenOptions::default()).unwrap()
        };
        let pkg = d.join("p.ddelta");
        let options = CreateOptions {
            method,
            compression: CompressionSpec { algorithm, level: algorithm.default_level().min(3) },
            ..CreateOptions::default()
        };
        create(Some(src(&old).as_ref()), src(&new).as_ref(), &pkg, &options).unwrap();
        let out = d.join("out.tar");
        let dest = ImageReference::DockerArchive { path: out.clone(), selector: None };
        let report = apply(&Package::open(&pkg).unwrap(), Some(src(&old).as_ref()), &dest, &ApplyOptions::default()).unwrap();
        prop_assert_eq!(report.image_id.to_string(), new_id);
        let rebuilt = src(&out);
        for (i, want) in new_layers.iter().enumerate() {
            prop_assert_eq!(&rebuilt.read_layer(i, u64::MAX).unwrap(), want, "layer {}", i);
        }
    }
}
