//! The C ABI called from Rust, as a C caller would: raw pointers, C strings, callbacks.

use std::ffi::{c_char, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::ptr::{null, null_mut};
use std::sync::Mutex;

use super::callbacks::{dd_log_level, dd_phase};
use super::delta::*;
use super::error::*;
use super::image::*;
use super::package::*;
use super::registry::*;
use super::*;

fn sample(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../samples")
        .join(name)
        .display()
        .to_string()
}

fn c(s: &str) -> CString {
    CString::new(s).unwrap()
}

unsafe fn text(p: *const c_char) -> Option<String> {
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_str().unwrap().to_string())
}

unsafe fn take(p: *mut c_char) -> String {
    assert!(!p.is_null());
    let s = unsafe { text(p) }.unwrap();
    unsafe { dd_string_free(p) };
    s
}

fn image_id(reference: &str) -> String {
    let r = c(reference);
    let mut img = null_mut();
    let mut err = null_mut();
    let st = unsafe { dd_image_open(r.as_ptr(), null(), &mut img, &mut err) };
    assert_eq!(st, dd_status::Ok, "{:?}", unsafe {
        text(dd_error_message(err))
    });
    let id = unsafe { text(dd_image_id(img)) }.unwrap();
    unsafe { dd_image_free(img) };
    id
}

#[derive(Default)]
struct Seen {
    progress: Mutex<Vec<(dd_phase, u64, u64)>>,
    logs: Mutex<Vec<(dd_log_level, String)>>,
    cancel_in: Option<dd_phase>,
}

unsafe extern "C" fn on_progress(ud: *mut c_void, phase: dd_phase, done: u64, total: u64) -> bool {
    let seen = unsafe { &*(ud as *const Seen) };
    seen.progress.lock().unwrap().push((phase, done, total));
    seen.cancel_in != Some(phase)
}

unsafe extern "C" fn on_log(ud: *mut c_void, level: dd_log_level, msg: *const c_char) {
    let seen = unsafe { &*(ud as *const Seen) };
    let m = unsafe { text(msg) }.unwrap();
    seen.logs.lock().unwrap().push((level, m));
}

/// Phases in order, `done` non-decreasing within a phase, each phase ending at its total.
fn assert_ordered(events: &[(dd_phase, u64, u64)], phases: &[dd_phase]) {
    let mut seen_phases: Vec<dd_phase> = Vec::new();
    let mut last = 0;
    for &(p, done, total) in events {
        if seen_phases.last() != Some(&p) {
            assert!(
                !seen_phases.contains(&p),
                "phase {p:?} came back: {events:?}"
            );
            seen_phases.push(p);
            last = 0;
        }
        assert!(done >= last, "done went backwards in {p:?}: {events:?}");
        assert!(total == 0 || done <= total, "done > total: {events:?}");
        last = done;
    }
    assert_eq!(seen_phases, phases, "{events:?}");
}

fn tmp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("dd-ffi-test-")
        .tempdir()
        .unwrap()
}

fn create_delta(dir: &Path, seen: &Seen) -> PathBuf {
    let out = dir.join("d.ddelta");
    let mut opts = null_mut();
    unsafe {
        assert_eq!(dd_create_options_new(&mut opts), dd_status::Ok);
        assert_eq!(
            dd_create_options_set_compression(opts, dd_compression::Zstd as u32, 3),
            dd_status::Ok
        );
        assert_eq!(
            dd_create_options_set_progress(
                opts,
                Some(on_progress),
                seen as *const Seen as *mut c_void
            ),
            dd_status::Ok
        );
        assert_eq!(
            dd_create_options_set_log(
                opts,
                Some(on_log),
                seen as *const Seen as *mut c_void,
                dd_log_level::Debug as u32
            ),
            dd_status::Ok
        );
    }
    let (old, new, o) = (
        c(&format!("docker-archive:{}", sample("app-1.tar"))),
        c(&format!("docker-archive:{}", sample("app-2.tar"))),
        c(out.to_str().unwrap()),
    );
    let mut report = null_mut();
    let mut err = null_mut();
    let st = unsafe {
        dd_create(
            old.as_ptr(),
            new.as_ptr(),
            o.as_ptr(),
            opts,
            &mut report,
            &mut err,
        )
    };
    assert_eq!(st, dd_status::Ok, "{:?}", unsafe {
        text(dd_error_json(err))
    });
    assert!(err.is_null());
    let report: serde_json::Value = serde_json::from_str(&unsafe { take(report) }).unwrap();
    assert_eq!(report["target"]["image_id"], image_id(&sample("app-2.tar")));
    unsafe { dd_create_options_free(opts) };
    out
}

#[test]
fn round_trip_rebuilds_the_new_image_with_ordered_progress_and_logs() {
    let dir = tmp();
    let seen = Seen::default();
    let pkg = create_delta(dir.path(), &seen);
    assert_ordered(
        &seen.progress.lock().unwrap(),
        &[dd_phase::Analyze, dd_phase::Encode, dd_phase::Write],
    );
    assert!(
        seen.logs
            .lock()
            .unwrap()
            .iter()
            .any(|(l, m)| *l == dd_log_level::Info && m.contains("package written")),
        "{:?}",
        seen.logs.lock().unwrap()
    );
    assert!(seen
        .logs
        .lock()
        .unwrap()
        .iter()
        .all(|(l, _)| *l <= dd_log_level::Debug));

    let applied = Seen::default();
    let mut opts = null_mut();
    unsafe {
        dd_apply_options_new(&mut opts);
        dd_apply_options_set_progress(
            opts,
            Some(on_progress),
            &applied as *const Seen as *mut c_void,
        );
    }
    let out = dir.path().join("out.tar");
    let (p, base, o) = (
        c(pkg.to_str().unwrap()),
        c(&sample("app-1.tar")),
        c(out.to_str().unwrap()),
    );
    let mut report = null_mut();
    let mut err = null_mut();
    let st = unsafe {
        dd_apply(
            p.as_ptr(),
            base.as_ptr(),
            o.as_ptr(),
            opts,
            &mut report,
            &mut err,
        )
    };
    assert_eq!(st, dd_status::Ok, "{:?}", unsafe {
        text(dd_error_json(err))
    });
    let report: serde_json::Value = serde_json::from_str(&unsafe { take(report) }).unwrap();
    let want = image_id(&sample("app-2.tar"));
    assert_eq!(report["image_id"], want);
    assert_eq!(image_id(out.to_str().unwrap()), want);
    assert_ordered(
        &applied.progress.lock().unwrap(),
        &[dd_phase::Verify, dd_phase::Rebuild],
    );
    unsafe { dd_apply_options_free(opts) };
}

/// `dd_apply` takes a `docker-daemon:NAME:TAG` output, with no new call: it goes to the
/// daemon of the options, and one that does not answer is a missing dependency (the image
/// written nowhere), as for `dd_apply_load`.
#[test]
fn apply_to_a_docker_daemon_reference_reaches_the_options_daemon() {
    let dir = tmp();
    let pkg = create_delta(dir.path(), &Seen::default());
    let (p, base, o, host) = (
        c(pkg.to_str().unwrap()),
        c(&sample("app-1.tar")),
        c("docker-daemon:dd-ffi/app:2"),
        c("unix:///nonexistent/docker.sock"),
    );
    let mut opts = null_mut();
    let mut err = null_mut();
    let mut report = null_mut();
    let st = unsafe {
        assert_eq!(dd_apply_options_new(&mut opts), dd_status::Ok);
        assert_eq!(
            dd_apply_options_set_docker_host(opts, host.as_ptr(), null_mut()),
            dd_status::Ok
        );
        dd_apply(
            p.as_ptr(),
            base.as_ptr(),
            o.as_ptr(),
            opts,
            &mut report,
            &mut err,
        )
    };
    assert_eq!(st, dd_status::MissingDependency);
    assert!(report.is_null());
    unsafe {
        let message = text(dd_error_message(err)).unwrap();
        assert!(message.contains("nonexistent/docker.sock"), "{message}");
        dd_error_free(err);
        dd_apply_options_free(opts);
    }
}

#[test]
fn wrong_base_is_a_structured_error() {
    let dir = tmp();
    let pkg = create_delta(dir.path(), &Seen::default());
    let out = dir.path().join("out.tar");
    let (p, base, o) = (
        c(pkg.to_str().unwrap()),
        c(&sample("app-2.tar")),
        c(out.to_str().unwrap()),
    );
    let mut err = null_mut();
    let mut report = null_mut();
    let st = unsafe {
        dd_apply(
            p.as_ptr(),
            base.as_ptr(),
            o.as_ptr(),
            null(),
            &mut report,
            &mut err,
        )
    };
    assert_eq!(st, dd_status::InvalidInput);
    assert!(report.is_null());
    assert!(!out.exists());
    unsafe {
        assert_eq!(dd_error_code(err), dd_status::InvalidInput);
        assert_eq!(text(dd_error_kind(err)).unwrap(), "wrong_base_image");
        let expected = text(dd_error_expected(err)).unwrap();
        assert!(
            expected.contains(&image_id(&sample("app-1.tar"))),
            "{expected}"
        );
        let found = text(dd_error_found(err)).unwrap();
        assert!(found.contains(&image_id(&sample("app-2.tar"))), "{found}");
        let j: serde_json::Value =
            serde_json::from_str(&text(dd_error_json(err)).unwrap()).unwrap();
        assert_eq!(j["kind"], "wrong_base_image");
        assert_eq!(j["status"], 3);
        assert!(j["fields"]["reference"]
            .as_str()
            .unwrap()
            .contains("app-2.tar"));
        dd_error_free(err);
    }
}

#[test]
fn cancel_from_the_progress_callback_leaves_nothing() {
    let dir = tmp();
    let seen = Seen {
        cancel_in: Some(dd_phase::Encode),
        ..Seen::default()
    };
    let out = dir.path().join("d.ddelta");
    let mut opts = null_mut();
    unsafe {
        dd_create_options_new(&mut opts);
        dd_create_options_set_progress(
            opts,
            Some(on_progress),
            &seen as *const Seen as *mut c_void,
        );
    }
    let (old, new, o) = (
        c(&sample("app-1.tar")),
        c(&sample("app-2.tar")),
        c(out.to_str().unwrap()),
    );
    let mut err = null_mut();
    let st = unsafe {
        dd_create(
            old.as_ptr(),
            new.as_ptr(),
            o.as_ptr(),
            opts,
            null_mut(),
            &mut err,
        )
    };
    assert_eq!(st, dd_status::Cancelled);
    assert_eq!(unsafe { text(dd_error_kind(err)) }.unwrap(), "cancelled");
    assert!(!out.exists());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "left files behind"
    );
    unsafe {
        dd_error_free(err);
        dd_create_options_free(opts);
    }
}

#[test]
fn package_accessors_and_json() {
    let dir = tmp();
    let pkg = create_delta(dir.path(), &Seen::default());
    let p = c(pkg.to_str().unwrap());
    let mut h = null_mut();
    unsafe {
        assert_eq!(
            dd_package_open(p.as_ptr(), &mut h, null_mut()),
            dd_status::Ok
        );
        assert_eq!(
            dd_package_format_version(h),
            docker_delta::delta::format::FORMAT_VERSION
        );
        assert_eq!(
            text(dd_package_target_image_id(h)).unwrap(),
            image_id(&sample("app-2.tar"))
        );
        assert_eq!(
            text(dd_package_base_image_id(h)).unwrap(),
            image_id(&sample("app-1.tar"))
        );
        let n = dd_package_layer_count(h);
        assert!(n >= 2);
        assert!(text(dd_package_layer_method(h, n)).is_none());
        assert_eq!(text(dd_package_layer_method(h, 0)).unwrap(), "reference");
        assert_eq!(dd_package_verify(h, null_mut()), dd_status::Ok);
        let mut j = null_mut();
        assert_eq!(dd_package_info_json(h, &mut j, null_mut()), dd_status::Ok);
        let info: serde_json::Value = serde_json::from_str(&take(j)).unwrap();
        assert_eq!(info["payload_verified"], true);
        assert_eq!(
            info["format_version"],
            docker_delta::delta::format::FORMAT_VERSION
        );
        assert_eq!(dd_package_layers_json(h, &mut j, null_mut()), dd_status::Ok);
        let layers: serde_json::Value = serde_json::from_str(&take(j)).unwrap();
        assert_eq!(layers["layers"].as_array().unwrap().len(), n);
        dd_package_free(h);
    }
}

#[test]
fn image_accessors_match_the_inspect_json() {
    let r = c(&format!("docker-archive:{}", sample("app-2.tar")));
    let mut img = null_mut();
    unsafe {
        assert_eq!(
            dd_image_open(r.as_ptr(), null(), &mut img, null_mut()),
            dd_status::Ok
        );
        assert_eq!(text(dd_image_transport(img)).unwrap(), "docker-archive");
        assert_eq!(text(dd_image_tag(img, 0)).unwrap(), "sample/app:2");
        assert!(text(dd_image_tag(img, dd_image_tag_count(img))).is_none());
        assert_eq!(dd_image_verify(img, null_mut()), dd_status::Ok);
        let mut j = null_mut();
        assert_eq!(dd_image_json(img, &mut j, null_mut()), dd_status::Ok);
        let report: serde_json::Value = serde_json::from_str(&take(j)).unwrap();
        assert_eq!(report["layers_verified"], true);
        assert_eq!(
            report["image_id"].as_str(),
            text(dd_image_config_digest(img)).as_deref()
        );
        assert_eq!(
            report["manifest_format"].as_str(),
            text(dd_image_manifest_format(img)).as_deref()
        );
        assert_eq!(
            report["transport"].as_str(),
            text(dd_image_transport(img)).as_deref()
        );
        let layers = report["layers"].as_array().unwrap();
        assert_eq!(layers.len(), dd_image_layer_count(img));
        for (i, l) in layers.iter().enumerate() {
            assert_eq!(
                l["diff_id"].as_str(),
                text(dd_image_layer_diff_id(img, i)).as_deref()
            );
            assert_eq!(l["stored_size"].as_u64(), Some(dd_image_layer_size(img, i)));
        }
        dd_image_free(img);
    }
}

#[test]
fn bad_arguments_are_statuses_not_crashes() {
    let mut err = null_mut();
    let mut img = null_mut();
    unsafe {
        assert_eq!(
            dd_image_open(null(), null(), &mut img, &mut err),
            dd_status::InvalidArgument
        );
        assert!(img.is_null());
        assert_eq!(text(dd_error_kind(err)).unwrap(), "invalid_argument");
        assert!(text(dd_error_message(err)).unwrap().contains("reference"));
        dd_error_free(err);

        let bad = [0xffu8, 0xfe, 0];
        assert_eq!(
            dd_image_open(bad.as_ptr().cast(), null(), &mut img, &mut err),
            dd_status::InvalidArgument
        );
        assert!(text(dd_error_message(err)).unwrap().contains("UTF-8"));
        dd_error_free(err);

        let r = c("docker-archive:/nonexistent/x.tar");
        assert_eq!(
            dd_image_open(r.as_ptr(), null(), null_mut(), null_mut()),
            dd_status::InvalidArgument
        );
        let st = dd_image_open(r.as_ptr(), null(), &mut img, &mut err);
        assert_ne!(st, dd_status::Ok);
        assert!(text(dd_error_path(err))
            .unwrap()
            .contains("/nonexistent/x.tar"));
        dd_error_free(err);

        let pl = c("not a platform");
        let mut o = null_mut();
        dd_create_options_new(&mut o);
        assert_eq!(
            dd_create_options_set_platform(o, pl.as_ptr(), &mut err),
            dd_status::InvalidInput
        );
        assert_eq!(text(dd_error_kind(err)).unwrap(), "invalid_platform");
        dd_error_free(err);
        assert_eq!(
            dd_create_options_set_method(o, 99),
            dd_status::InvalidArgument
        );
        assert_eq!(
            dd_create_options_set_compression(o, dd_compression::Gzip as u32, 10),
            dd_status::InvalidArgument
        );
        assert_eq!(
            dd_create_options_set_log(o, None, null_mut(), 0),
            dd_status::InvalidArgument
        );
        dd_create_options_free(o);

        // Accessors and frees take NULL.
        assert!(dd_image_id(null()).is_null());
        assert_eq!(dd_image_layer_count(null()), 0);
        assert!(dd_error_message(null()).is_null());
        dd_image_free(null_mut());
        dd_package_free(null_mut());
        dd_error_free(null_mut());
        dd_string_free(null_mut());
        dd_create_options_free(null_mut());
        dd_apply_options_free(null_mut());
    }
}

#[test]
fn a_panic_becomes_a_status_with_its_message() {
    let mut err = null_mut();
    let st = guard(&mut err, || -> Result<(), Failure> {
        panic!("boom {}", 42)
    });
    assert_eq!(st, dd_status::Panic);
    unsafe {
        assert_eq!(text(dd_error_kind(err)).unwrap(), "panic");
        assert!(text(dd_error_message(err)).unwrap().contains("boom 42"));
        dd_error_free(err);
    }
    assert_eq!(guard_value(7, || -> i32 { panic!("x") }), 7);
}

#[test]
fn version_and_status_names() {
    unsafe {
        assert_eq!(text(dd_version()).unwrap(), docker_delta::VERSION);
        assert_eq!(
            text(dd_status_name(dd_status::TagFailed as u32)).unwrap(),
            "tag_failed"
        );
        assert_eq!(text(dd_status_name(1000)).unwrap(), "unknown");
    }
    assert_eq!(
        dd_package_format_version_supported(),
        docker_delta::delta::format::FORMAT_VERSION
    );
}

#[test]
fn build_info_is_the_commands_version_json() {
    let mut json: *mut c_char = null_mut();
    let status = unsafe { dd_build_info_json(&mut json, null_mut()) };
    assert_eq!(status, dd_status::Ok);
    let v: serde_json::Value =
        serde_json::from_str(unsafe { CStr::from_ptr(json) }.to_str().unwrap()).unwrap();
    unsafe { dd_string_free(json) };
    assert_eq!(v, serde_json::to_value(docker_delta::build_info()).unwrap());
    assert_eq!(v["schema_version"], 1);
    assert!(v["codecs"]["zstd"].as_str().unwrap().starts_with("1."));
}

#[test]
fn every_library_error_maps_to_its_exit_code_status() {
    let e = docker_delta::Error::OutputExists { path: "/x".into() };
    assert_eq!(status_of(&e), dd_status::InvalidInput);
    assert_eq!(
        status_of(&docker_delta::Error::Cancelled),
        dd_status::Cancelled
    );
    let e = docker_delta::Error::TagFailed {
        image_id: "sha256:1".into(),
        tag: "a:b".into(),
        reason: "r".into(),
    };
    assert_eq!(status_of(&e), dd_status::TagFailed);
    let d = dd_error::new(Failure::Lib(e));
    unsafe {
        let j: serde_json::Value = serde_json::from_str(&text(dd_error_json(&d)).unwrap()).unwrap();
        assert_eq!(j["fields"]["tag"], "a:b");
        assert_eq!(j["status_name"], "tag_failed");
    }
}

/// Credentials and TLS settings in the options reach the registry: the Basic test
/// registry (`scripts/registries.sh`) refuses a call without credentials (an empty
/// authfile is the only place looked in), and serves one with `USER:PASSWORD`, for
/// `dd_create` reading both images and `dd_apply` reading its base. No error and no
/// `Debug` of the options shows the password.
#[test]
fn registry_credentials_are_passed_in_the_options() {
    let Ok(addr) = std::env::var("DOCKER_DELTA_TEST_REGISTRY_BASIC") else {
        eprintln!("skipping: the test registries are not set up (scripts/registries.sh env)");
        return;
    };
    let user = std::env::var("DOCKER_DELTA_TEST_REGISTRY_BASIC_USER").unwrap();
    let pass = std::env::var("DOCKER_DELTA_TEST_REGISTRY_BASIC_PASS").unwrap();
    let dir = tmp();
    let (old, new) = (
        c(&format!("docker://{addr}/fixtures/app:1")),
        c(&format!("docker://{addr}/fixtures/app:2")),
    );
    let pkg = dir.path().join("p.ddelta");
    let out = dir.path().join("out.tar");
    let (cpkg, cout) = (c(pkg.to_str().unwrap()), c(out.to_str().unwrap()));
    let nowhere = c(dir.path().join("none.json").to_str().unwrap());
    let creds = c(&format!("{user}:{pass}"));
    unsafe {
        let mut o = null_mut();
        assert_eq!(dd_create_options_new(&mut o), dd_status::Ok);
        assert_eq!(dd_create_options_set_tls_verify(o, false), dd_status::Ok);
        let mut err = null_mut();
        assert_eq!(
            dd_create_options_set_authfile(o, nowhere.as_ptr(), &mut err),
            dd_status::Ok
        );
        let mut report = null_mut();
        let st = dd_create(
            old.as_ptr(),
            new.as_ptr(),
            cpkg.as_ptr(),
            o,
            &mut report,
            &mut err,
        );
        assert_eq!(st, dd_status::InvalidInput);
        assert_eq!(text(dd_error_kind(err)).unwrap(), "unauthorized");
        let message = text(dd_error_message(err)).unwrap();
        assert!(message.contains("none.json"), "{message}");
        dd_error_free(err);
        assert!(!pkg.exists());
        // A value that is not USER:PASSWORD is refused where it is set.
        let bad = c("no-colon");
        let mut err = null_mut();
        assert_eq!(
            dd_create_options_set_creds(o, bad.as_ptr(), &mut err),
            dd_status::InvalidInput
        );
        dd_error_free(err);
        assert_eq!(
            dd_create_options_set_creds(o, creds.as_ptr(), null_mut()),
            dd_status::Ok
        );
        assert!(!format!("{:?}", (*o).registry).contains(&pass));
        let st = dd_create(
            old.as_ptr(),
            new.as_ptr(),
            cpkg.as_ptr(),
            o,
            &mut report,
            &mut err,
        );
        assert_eq!(st, dd_status::Ok, "{:?}", text(dd_error_message(err)));
        let created: serde_json::Value = serde_json::from_str(&take(report)).unwrap();
        dd_create_options_free(o);

        // apply: the base from the registry, with the credentials of its options.
        let mut a = null_mut();
        assert_eq!(dd_apply_options_new(&mut a), dd_status::Ok);
        assert_eq!(dd_apply_options_set_tls_verify(a, false), dd_status::Ok);
        assert_eq!(
            dd_apply_options_set_authfile(a, nowhere.as_ptr(), null_mut()),
            dd_status::Ok
        );
        let mut err = null_mut();
        let st = dd_apply(
            cpkg.as_ptr(),
            old.as_ptr(),
            cout.as_ptr(),
            a,
            &mut report,
            &mut err,
        );
        assert_eq!(st, dd_status::InvalidInput);
        assert!(!text(dd_error_message(err)).unwrap().contains(&pass));
        dd_error_free(err);
        assert!(!out.exists());
        assert_eq!(
            dd_apply_options_set_creds(a, creds.as_ptr(), null_mut()),
            dd_status::Ok
        );
        let st = dd_apply(
            cpkg.as_ptr(),
            old.as_ptr(),
            cout.as_ptr(),
            a,
            &mut report,
            &mut err,
        );
        assert_eq!(st, dd_status::Ok, "{:?}", text(dd_error_message(err)));
        let applied: serde_json::Value = serde_json::from_str(&take(report)).unwrap();
        assert_eq!(applied["image_id"], created["target"]["image_id"]);
        dd_apply_options_free(a);
    }
}
