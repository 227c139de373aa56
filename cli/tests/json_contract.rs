//! The JSON contract (docs/JSON.md): every command's `--json` output, success and failure,
//! validates against its schema in docs/schema/ (checked by Python's `jsonschema`, an
//! implementation of JSON Schema 2020-12 that nobody here wrote); the schemas are strict
//! enough to refuse a renamed or missing field; and every place that tells which old layers
//! feed a new layer (create, its dry run, info, list, the C ABI) tells the same.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn sample(name: &str) -> String {
    repo().join("samples").join(name).display().to_string()
}

struct Run {
    code: i32,
    stdout: Vec<u8>,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {}\nstderr: {}",
                String::from_utf8_lossy(&self.stdout),
                self.stderr
            )
        })
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// The `error` document on stderr: exactly one line, nothing else.
    fn error_doc(&self) -> Value {
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "stderr is not one line: {}", self.stderr);
        serde_json::from_str(lines[0])
            .unwrap_or_else(|e| panic!("stderr is not JSON ({e}): {}", self.stderr))
    }
}

/// Runs the command with no daemon to find (DOCKER_HOST on a socket that does not exist).
fn dd(dir: &Path, args: &[&str]) -> Run {
    let o = Command::new(common::bin())
        .current_dir(dir)
        .args(args)
        .env(
            "DOCKER_HOST",
            format!("unix://{}/no-daemon.sock", dir.display()),
        )
        .env_remove("DOCKER_DELTA_LOG")
        .output()
        .unwrap();
    Run {
        code: o.status.code().unwrap_or(-1),
        stdout: o.stdout,
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn ok(dir: &Path, args: &[&str]) -> Run {
    let r = dd(dir, args);
    assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
    r
}

fn assert_valid(docs: &[(&str, Value)]) {
    common::assert_schema_valid(docs);
}

/// A delta package of the samples, made in `dir`.
fn sample_package(dir: &Path) -> String {
    let pkg = dir.join("app.ddelta").display().to_string();
    ok(
        dir,
        &[
            "create",
            &sample("app-1.tar"),
            &sample("app-2.tar"),
            "-o",
            &pkg,
        ],
    );
    pkg
}

#[test]
fn every_command_json_matches_its_schema() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let (old, new) = (sample("app-1.tar"), sample("app-2.tar"));
    let pkg = dir.join("app.ddelta").display().to_string();
    let full = dir.join("full.ddelta").display().to_string();
    let out = dir.join("out.tar").display().to_string();
    let mut docs = vec![
        (
            "image.schema.json",
            ok(dir, &["inspect", "--json", &new]).json(),
        ),
        (
            "image.schema.json",
            ok(dir, &["inspect", "--json", "--no-verify", &old]).json(),
        ),
        (
            "create-report.schema.json",
            ok(
                dir,
                &["create", &old, &new, "-o", &pkg, "--json", "--dry-run"],
            )
            .json(),
        ),
        (
            "create-report.schema.json",
            ok(dir, &["create", &old, &new, "-o", &pkg, "--json"]).json(),
        ),
        (
            "create-report.schema.json",
            ok(dir, &["create", &new, "-o", &full, "--json"]).json(),
        ),
    ];
    for p in [&pkg, &full] {
        docs.push((
            "package.schema.json",
            ok(dir, &["info", "--json", p]).json(),
        ));
        docs.push((
            "package.schema.json",
            ok(dir, &["info", "--json", "--verify", p]).json(),
        ));
        docs.push((
            "package-layers.schema.json",
            ok(dir, &["list", "--json", p]).json(),
        ));
    }
    docs.push((
        "apply-report.schema.json",
        ok(
            dir,
            &[
                "apply",
                &pkg,
                "--base",
                &old,
                "-o",
                &out,
                "--json",
                "--dry-run",
            ],
        )
        .json(),
    ));
    docs.push((
        "apply-report.schema.json",
        ok(dir, &["apply", &pkg, "--base", &old, "-o", &out, "--json"]).json(),
    ));
    docs.push((
        "apply-report.schema.json",
        ok(
            dir,
            &[
                "apply",
                &full,
                "-o",
                &dir.join("full.tar").display().to_string(),
                "--json",
            ],
        )
        .json(),
    ));
    // Every document names itself and the vocabulary's version.
    for (schema, doc) in &docs {
        assert_eq!(doc["schema_version"], 1, "{schema}: {doc}");
        let name = schema.trim_end_matches(".schema.json").replace('-', "_");
        assert_eq!(doc["document"], name.as_str(), "{schema}: {doc}");
    }
    // The facts the issue found under several names now have one, with one value.
    let create = &docs[3].1;
    let info = &docs[5].1;
    let applied = docs[docs.len() - 2].1.clone();
    assert_eq!(create["package_path"], pkg.as_str());
    assert_eq!(info["package_path"], pkg.as_str());
    assert_eq!(create["package_size"], info["package_size"]);
    assert_eq!(
        create["target_uncompressed_size"],
        info["target_uncompressed_size"]
    );
    assert_eq!(create["target_stored_size"], info["target_stored_size"]);
    assert_eq!(create["base"], info["base"]);
    assert_eq!(create["layers"], info["layers"]);
    assert_eq!(applied["output"], out.as_str());
    assert_eq!(applied["image_id"], create["target"]["image_id"]);
    assert_eq!(applied["base"]["image_id"], create["base"]["image_id"]);
    assert_eq!(applied["layers"], info["layers"]);
    assert_eq!(docs[0].1["image_id"], create["target"]["image_id"]);
    // The C ABI-free part of the version document: once `--version --json` prints JSON,
    // it validates too (until then this prints text, and there is nothing to check).
    let version = dd(dir, &["--version", "--json"]);
    if let Ok(v) = serde_json::from_slice::<Value>(&version.stdout) {
        docs.push(("version.schema.json", v));
    }
    assert_valid(&docs);
}

#[test]
fn schemas_refuse_renamed_missing_and_extra_fields() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let pkg = sample_package(dir);
    let good = ok(dir, &["list", "--json", &pkg]).json();
    let image = ok(dir, &["inspect", "--json", &sample("app-1.tar")]).json();
    let mut renamed = good.clone();
    let v = renamed["layers"][0]
        .as_object_mut()
        .unwrap()
        .remove("uncompressed_size")
        .unwrap();
    renamed["layers"][0]["size"] = v;
    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("schema_version");
    let mut extra = image.clone();
    extra["verified"] = true.into();
    let mut wrong_document = image.clone();
    wrong_document["document"] = "package".into();
    let mut bad_digest = image.clone();
    bad_digest["layers"][0]["diff_id"] = "sha256:xyz".into();
    // An error's fields are checked by its kind.
    let error = dd(
        dir,
        &[
            "apply",
            &pkg,
            "--base",
            &sample("app-2.tar"),
            "-o",
            "x.tar",
            "--json",
        ],
    )
    .error_doc();
    assert_eq!(error["kind"], "wrong_base_image");
    let mut error_without_field = error.clone();
    error_without_field["fields"]
        .as_object_mut()
        .unwrap()
        .remove("reference");
    let mut error_of_another_kind = error.clone();
    error_of_another_kind["kind"] = "io".into();
    // The version document is written by `--version --json`; its example in docs/JSON.md
    // is what that implements, and it must validate.
    let docs = std::fs::read_to_string(repo().join("docs/JSON.md")).unwrap();
    let example = docs
        .split("## `version`")
        .nth(1)
        .and_then(|v| v.split("```json").nth(1))
        .and_then(|v| v.split("```").next())
        .expect("a version example in docs/JSON.md");
    let version: Value = serde_json::from_str(example).unwrap();
    let mut version_without_codecs = version.clone();
    version_without_codecs
        .as_object_mut()
        .unwrap()
        .remove("codecs");
    let failures = common::schema_failures(&[
        ("package-layers.schema.json", good),
        ("package-layers.schema.json", renamed),
        ("package-layers.schema.json", missing),
        ("image.schema.json", image),
        ("image.schema.json", extra),
        ("image.schema.json", wrong_document),
        ("image.schema.json", bad_digest),
        ("error.schema.json", error),
        ("error.schema.json", error_without_field),
        ("error.schema.json", error_of_another_kind),
        ("version.schema.json", version),
        ("version.schema.json", version_without_codecs),
    ]);
    let failed: Vec<usize> = failures
        .iter()
        .map(|f| f.split(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(failed, [1, 2, 4, 5, 6, 8, 9, 11], "{failures:#?}");
}

/// One error case: the arguments, what to prepare, the kind and exit code expected.
struct ErrorCase {
    args: Vec<String>,
    kind: &'static str,
    code: i32,
}

#[test]
fn json_errors_are_one_error_document_with_the_documented_exit_code() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let s = |p: &Path| p.display().to_string();
    let (old, new) = (sample("app-1.tar"), sample("app-2.tar"));
    let pkg = sample_package(dir);
    // A package whose payload is damaged (the header, and its checksum, intact).
    let mut bytes = std::fs::read(&pkg).unwrap();
    let n = bytes.len();
    bytes[n - 40] ^= 0xff;
    let damaged = dir.join("damaged.ddelta");
    std::fs::write(&damaged, &bytes).unwrap();
    let not_a_package = dir.join("text.ddelta");
    std::fs::write(&not_a_package, b"hello, not a package\n").unwrap();
    let out_dir = dir.join("a-directory");
    std::fs::create_dir(&out_dir).unwrap();
    // A package of a newer format version, and one whose header claims a 1 TiB blob.
    let mut newer = std::fs::read(&pkg).unwrap();
    newer[8] ^= 0x20;
    let newer_pkg = common::write_then(&dir.join("newer.ddelta"), &newer);
    let huge = common::edit_package(&std::fs::read(&pkg).unwrap(), |h| {
        h["blobs"][1]["size"] = (1u64 << 40).into()
    });
    let huge_pkg = common::write_then(&dir.join("huge.ddelta"), &huge);
    // docker-archives: manifest.json cut short, naming an absent config, with two images.
    let archive = |name: &str, manifest: &[u8]| {
        let path = dir.join(name);
        common::Members::new()
            .add("manifest.json", manifest)
            .write(&path);
        s(&path)
    };
    let cut = archive("cut.tar", br#"[{"Config": oops"#);
    let no_config = archive(
        "no-config.tar",
        br#"[{"Config": "c.json", "RepoTags": ["a:1"], "Layers": []}]"#,
    );
    let two = archive(
        "two.tar",
        br#"[{"Config": "c.json", "RepoTags": ["a:1"], "Layers": []},
             {"Config": "d.json", "RepoTags": ["b:1"], "Layers": []}]"#,
    );
    let case = |args: &[&str], kind, code| ErrorCase {
        args: args.iter().map(|a| a.to_string()).collect(),
        kind,
        code,
    };
    let cases = [
        // Usage errors are invalid input (3), as without --json.
        case(&["info", "--json", "--bogus", &pkg], "invalid_option", 3),
        case(&["create", "--json", &new], "invalid_option", 3),
        case(
            &["inspect", "--json", "--platform", "nonsense", &new],
            "invalid_option",
            3,
        ),
        case(
            &["inspect", "--json", "docker-archive:"],
            "invalid_reference",
            3,
        ),
        case(
            &[
                "inspect",
                "--json",
                &format!("docker-archive:{new}:nope/app:9"),
            ],
            "image_not_found",
            3,
        ),
        case(&["info", "--json", &s(&dir.join("absent.ddelta"))], "io", 1),
        case(
            &["info", "--json", &s(&not_a_package)],
            "invalid_package",
            3,
        ),
        case(
            &["list", "--json", "--verify", &s(&damaged)],
            "digest_mismatch",
            3,
        ),
        case(
            &["create", &old, &new, "-o", &pkg, "--json"],
            "output_exists",
            3,
        ),
        case(
            &["create", &old, &new, "-o", &s(&out_dir), "--json"],
            "invalid_layout",
            3,
        ),
        case(
            &[
                "apply",
                &pkg,
                "--base",
                &new,
                "-o",
                &s(&dir.join("o.tar")),
                "--json",
            ],
            "wrong_base_image",
            3,
        ),
        case(&["info", "--json", "/dev/null"], "unsupported_file_type", 3),
        case(
            &["list", "--json", &s(&newer_pkg)],
            "unsupported_package_version",
            3,
        ),
        case(&["info", "--json", &s(&huge_pkg)], "limit_exceeded", 3),
        case(&["inspect", "--json", &cut], "invalid_json", 3),
        case(&["inspect", "--json", &no_config], "missing_file", 3),
        case(&["inspect", "--json", &two], "ambiguous_image", 3),
        case(
            &["inspect", "--json", "docker-daemon:app:1"],
            "daemon_unavailable",
            2,
        ),
        case(
            &["apply", &pkg, "--load", "--json"],
            "daemon_unavailable",
            2,
        ),
    ];
    let mut docs = Vec::new();
    for c in &cases {
        let args: Vec<&str> = c.args.iter().map(String::as_str).collect();
        let r = dd(dir, &args);
        let doc = r.error_doc();
        assert_eq!(r.code, c.code, "{args:?}: {doc}");
        assert_eq!(doc["kind"], c.kind, "{args:?}: {doc}");
        assert_eq!(doc["status"], c.code, "{args:?}: {doc}");
        assert!(r.stdout.is_empty(), "{args:?}: {}", r.text());
        // The same document without --json is the text message.
        let plain: Vec<&str> = args.iter().copied().filter(|a| *a != "--json").collect();
        let text = dd(dir, &plain);
        assert_eq!(text.code, c.code, "{plain:?}: {}", text.stderr);
        assert!(
            text.stderr.contains(doc["message"].as_str().unwrap()) || c.kind == "invalid_option",
            "{plain:?}: {} vs {doc}",
            text.stderr
        );
        docs.push(("error.schema.json", doc));
    }
    assert_valid(&docs);
}

/// The old layers each layer of the package at `pkg` is rebuilt from, as the C ABI's
/// `dd_package_layers_json` tells them (the library built as the C library, loaded with
/// dlopen).
fn c_abi_layers(pkg: &str) -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join("target"));
    let status = Command::new(cargo)
        .current_dir(repo())
        .args(["build", "--quiet", "-p", "docker-delta-ffi"])
        .status()
        .unwrap();
    assert!(status.success(), "cargo build -p docker-delta-ffi");
    // The library sits in the profile directory beside this test's deps directory.
    let exe = std::env::current_exe().unwrap();
    let profile = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    let lib = [
        profile.join("libdocker_delta_ffi.so"),
        target.join("debug/libdocker_delta_ffi.so"),
    ]
    .into_iter()
    .find(|p| p.is_file())
    .expect("libdocker_delta_ffi.so");
    type Open = unsafe extern "C" fn(
        *const libc::c_char,
        *mut *mut libc::c_void,
        *mut *mut libc::c_void,
    ) -> u32;
    type Json = unsafe extern "C" fn(
        *const libc::c_void,
        *mut *mut libc::c_char,
        *mut *mut libc::c_void,
    ) -> u32;
    type Free = unsafe extern "C" fn(*mut libc::c_void);
    type FreeStr = unsafe extern "C" fn(*mut libc::c_char);
    let c = |s: &str| std::ffi::CString::new(s).unwrap();
    // SAFETY: the functions are looked up by the names and signatures include/docker_delta.h
    // declares, and called by its contract (live handle, writable out-parameters).
    unsafe {
        let h = libc::dlopen(c(&lib.display().to_string()).as_ptr(), libc::RTLD_NOW);
        assert!(!h.is_null(), "dlopen {}", lib.display());
        let sym = |name: &str| {
            let p = libc::dlsym(h, c(name).as_ptr());
            assert!(!p.is_null(), "no symbol {name}");
            p
        };
        let open: Open = std::mem::transmute(sym("dd_package_open"));
        let layers: Json = std::mem::transmute(sym("dd_package_layers_json"));
        let free: Free = std::mem::transmute(sym("dd_package_free"));
        let free_str: FreeStr = std::mem::transmute(sym("dd_string_free"));
        let mut package = std::ptr::null_mut();
        assert_eq!(open(c(pkg).as_ptr(), &mut package, std::ptr::null_mut()), 0);
        let mut json = std::ptr::null_mut();
        assert_eq!(layers(package, &mut json, std::ptr::null_mut()), 0);
        let doc: Value = serde_json::from_slice(std::ffi::CStr::from_ptr(json).to_bytes()).unwrap();
        free_str(json);
        free(package);
        doc
    }
}

#[test]
fn every_report_of_old_layers_agrees() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let one = common::noise(1, 200_000);
    let two = common::noise(2, 200_000);
    let base = common::layer(&[("etc/base.txt", b"base layer\n")]);
    let (old, _) = common::docker_archive(
        dir,
        "old.tar",
        Some("t/app:1"),
        &[
            base.clone(),
            common::layer(&[("app/one.bin", &one)]),
            common::layer(&[("app/two.bin", &two)]),
        ],
    );
    // Layer 1 changes a few bytes of files from old layers 1 and 2; layer 2 is all new.
    let (mut one2, mut two2) = (one.clone(), two.clone());
    one2[1000..1010].copy_from_slice(b"CHANGED-01");
    two2[5000..5010].copy_from_slice(b"CHANGED-02");
    let (new, _) = common::docker_archive(
        dir,
        "new.tar",
        Some("t/app:2"),
        &[
            base,
            common::layer(&[("app/one.bin", &one2), ("app/two.bin", &two2)]),
            common::layer(&[("data/fresh.bin", &common::noise(3, 50_000))]),
        ],
    );
    let (old, new) = (old.display().to_string(), new.display().to_string());
    let pkg = dir.join("p.ddelta").display().to_string();
    let created = ok(dir, &["create", &old, &new, "-o", &pkg, "--json"]).json();
    let sources = |doc: &Value| -> Vec<Value> {
        doc["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["old_layers"].clone())
            .collect()
    };
    let indexes = |v: &Value| -> Vec<u64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|o| o["index"].as_u64().unwrap())
            .collect()
    };
    let want = sources(&created);
    // The case this test is for: a files layer from several old layers, one from none.
    assert_eq!(created["layers"][1]["method"], "files", "{created}");
    assert_eq!(indexes(&want[0]), [0]);
    assert_eq!(indexes(&want[1]), [1, 2], "{created}");
    assert_eq!(indexes(&want[2]), Vec::<u64>::new(), "{created}");
    assert_eq!(
        want[1][1]["diff_id"], created["base"]["diff_ids"][2],
        "each old layer named with its diff_id"
    );
    assert_eq!(sources(&ok(dir, &["info", "--json", &pkg]).json()), want);
    assert_eq!(sources(&ok(dir, &["list", "--json", &pkg]).json()), want);
    assert_eq!(sources(&c_abi_layers(&pkg)), want);
    // People read the same: list's table and create's lines.
    let table = ok(dir, &["list", &pkg]).text();
    let human = ok(dir, &["create", &old, &new, "-o", &pkg, "--force"]).text();
    for (i, said) in [
        "reference to old layer 0",
        "files from old layers 1, 2",
        "files (no old layer)",
    ]
    .iter()
    .enumerate()
    {
        let row = table.lines().nth(i + 1).unwrap();
        assert!(
            row.contains(said),
            "list row {i}: {row:?} should say {said:?}\n{table}"
        );
        let line = human.lines().nth(i).unwrap();
        assert!(
            line.contains(said),
            "create line {i}: {line:?} should say {said:?}\n{human}"
        );
    }
    // A dry run knows the sources of references (and whole-layer deltas) and says that a
    // files layer's are chosen while encoding, never a guess.
    let dry = ok(
        dir,
        &[
            "create",
            &old,
            &new,
            "-o",
            &pkg,
            "--dry-run",
            "--json",
            "--force",
        ],
    )
    .json();
    let planned = sources(&dry);
    assert_eq!(planned[0], want[0]);
    assert!(planned[1].is_null() && planned[2].is_null(), "{dry}");
    let dry_text = ok(
        dir,
        &["create", &old, &new, "-o", &pkg, "--dry-run", "--force"],
    )
    .text();
    assert!(
        dry_text
            .lines()
            .next()
            .unwrap()
            .contains("reference to old layer 0"),
        "{dry_text}"
    );
    assert!(
        dry_text
            .lines()
            .nth(1)
            .unwrap()
            .contains("files (old layers chosen while encoding)"),
        "{dry_text}"
    );
    // Whole-layer methods: planned and made agree, the dry run included.
    let x = dir.join("x.ddelta").display().to_string();
    let made = ok(
        dir,
        &["create", &old, &new, "-o", &x, "--method", "zstd", "--json"],
    )
    .json();
    let planned = ok(
        dir,
        &[
            "create",
            &old,
            &new,
            "-o",
            &x,
            "--method",
            "zstd",
            "--json",
            "--dry-run",
            "--force",
        ],
    )
    .json();
    for (i, (m, p)) in sources(&made).iter().zip(sources(&planned)).enumerate() {
        if made["layers"][i]["method"] == planned["layers"][i]["method"] {
            assert_eq!(*m, p, "layer {i}: {made} vs {planned}");
        }
    }
    assert_eq!(
        sources(&ok(dir, &["list", "--json", &x]).json()),
        sources(&made)
    );
}

#[test]
fn inspect_and_info_say_whether_they_verified() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let img = sample("app-2.tar");
    let pkg = sample_package(dir);
    let verified = |args: &[&str]| ok(dir, args).json()["layers_verified"].clone();
    // inspect: layers verified by default (local sources), --no-verify skips, the last wins.
    assert_eq!(verified(&["inspect", "--json", &img]), true);
    assert_eq!(verified(&["inspect", "--json", "--verify", &img]), true);
    assert_eq!(verified(&["inspect", "--json", "--no-verify", &img]), false);
    assert_eq!(
        verified(&["inspect", "--json", "--no-verify", "--verify", &img]),
        true
    );
    assert_eq!(
        verified(&["inspect", "--json", "--verify", "--no-verify", &img]),
        false
    );
    assert!(ok(dir, &["inspect", &img]).text().contains("all verified"));
    assert!(ok(dir, &["inspect", "--no-verify", &img])
        .text()
        .contains("not verified"));
    // info and list: the payload is read only with --verify.
    let payload = |args: &[&str]| ok(dir, args).json()["payload_verified"].clone();
    assert_eq!(payload(&["info", "--json", &pkg]), false);
    assert_eq!(payload(&["info", "--json", "--verify", &pkg]), true);
    assert_eq!(
        payload(&["info", "--json", "--verify", "--no-verify", &pkg]),
        false
    );
    assert_eq!(payload(&["list", "--json", "--verify", &pkg]), true);
    assert!(ok(dir, &["info", &pkg])
        .text()
        .contains("Payload:        not verified"));
    assert!(ok(dir, &["info", "--verify", &pkg])
        .text()
        .contains("Payload:        checksum verified"));
}
