//! The command line's habits (issue 22): `create NEW --base OLD`, every environment
//! variable also an option with sizes in K/M/G/T, bad values refused naming them,
//! `--version` with the format and codec versions, shell completions and man pages
//! installed by `scripts/install-cli.sh`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples")
}

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(common::bin());
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Every variable the library and the command read, with a bad value for it.
const SETTINGS: &[(&str, &str, &str)] = &[
    ("DOCKER_DELTA_MAX_MEMORY", "--max-memory", "4X"),
    ("DOCKER_DELTA_MAX_JSON_SIZE", "--max-json-size", "1.5M"),
    ("DOCKER_DELTA_MAX_JSON_VALUES", "--max-json-values", "1K"),
    (
        "DOCKER_DELTA_MAX_ARCHIVE_INDEX",
        "--max-archive-index",
        "big",
    ),
    ("DOCKER_DELTA_MAX_LAYERS", "--max-layers", "-1"),
    ("DOCKER_DELTA_MAX_INDEX_DEPTH", "--max-index-depth", "eight"),
    ("DOCKER_DELTA_MAX_ENTRY_SIZE", "--max-entry-size", "64Q"),
    (
        "DOCKER_DELTA_MAX_EXPANSION_RATIO",
        "--max-expansion-ratio",
        "2e3",
    ),
    ("DOCKER_DELTA_THREADS", "--threads", "abc"),
    ("DOCKER_DELTA_DAEMON_TIMEOUT", "--daemon-timeout", "0"),
    (
        "DOCKER_DELTA_DAEMON_REQUEST_TIMEOUT",
        "--daemon-request-timeout",
        "2m",
    ),
    (
        "DOCKER_DELTA_DAEMON_CONNECT_TIMEOUT",
        "--daemon-connect-timeout",
        "x",
    ),
    ("DOCKER_DELTA_REGISTRY_TIMEOUT", "--registry-timeout", "0"),
    (
        "DOCKER_DELTA_REGISTRY_CONNECT_TIMEOUT",
        "--registry-connect-timeout",
        "1h",
    ),
    ("DOCKER_DELTA_LOG", "--log-filter", "a=[[["),
];

#[test]
fn create_takes_new_with_base_or_old_then_new() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (samples().join("app-1.tar"), samples().join("app-2.tar"));
    let (old, new) = (old.to_str().unwrap(), new.to_str().unwrap());
    let a = dir.path().join("a.ddelta");
    let b = dir.path().join("b.ddelta");
    let full = dir.path().join("full.ddelta");
    let o = run(
        &["create", new, "--base", old, "-o", a.to_str().unwrap()],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = run(&["create", old, new, "-o", b.to_str().unwrap()], &[]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = run(&["create", new, "-o", full.to_str().unwrap()], &[]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    // The same delta either way; NEW alone is a full package (no base).
    let info = |p: &Path| {
        let o = run(&["info", p.to_str().unwrap(), "--json"], &[]);
        assert!(o.status.success(), "{}", text(&o.stderr));
        let mut v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v.as_object_mut()
            .unwrap()
            .retain(|k, _| k != "package_path");
        v
    };
    assert_eq!(info(&a), info(&b));
    assert_ne!(info(&a), info(&full));
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    let text_of = |p: &Path| text(&run(&["info", p.to_str().unwrap()], &[]).stdout);
    assert!(text_of(&full).contains("none") || !text_of(&full).contains("app-1"));

    // Both forms at once: invalid input, saying so, nothing written.
    let c = dir.path().join("c.ddelta");
    let o = run(
        &["create", old, new, "--base", old, "-o", c.to_str().unwrap()],
        &[],
    );
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(err.contains("--base") && err.contains("not both"), "{err}");
    assert!(!c.exists());
}

#[test]
fn usage_says_what_the_arguments_are_and_every_command_has_examples() {
    let o = run(&["create", "--help"], &[]);
    let help = text(&o.stdout);
    assert!(
        help.contains("create [OPTIONS] --output <OUTPUT> <NEW> [--base <OLD>]"),
        "{help}"
    );
    assert!(
        help.contains("create [OPTIONS] --output <OUTPUT> <OLD> <NEW>"),
        "{help}"
    );
    assert!(!help.contains("<OLD> [NEW]..."), "{help}");
    for cmd in ["create", "apply", "info", "list", "inspect", "completion"] {
        let o = run(&[cmd, "--help"], &[]);
        assert!(o.status.success());
        let help = text(&o.stdout);
        assert!(help.contains("Examples:"), "{cmd}: {help}");
        // Each example runs this command.
        for line in help.lines().skip_while(|l| *l != "Examples:").skip(1) {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("docker-delta ") {
                assert!(rest.starts_with(cmd), "{cmd}: {line}");
            }
        }
    }
    // No command: the help on stderr, exit 3 (not clap's 2, a missing daemon's code).
    let o = run(&[], &[]);
    assert_eq!(o.status.code(), Some(3));
    assert!(text(&o.stderr).contains("Usage:"));
}

#[test]
fn every_setting_is_an_option_shown_with_its_variable() {
    for cmd in [&["--help"][..], &["create", "--help"], &["apply", "--help"]] {
        // Wrapped lines joined: `[env: NAME=]` may be split at its space.
        let help = text(&run(cmd, &[]).stdout)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        for (env, option, _) in SETTINGS {
            assert!(help.contains(option), "{cmd:?}: {option}");
            assert!(help.contains(&format!("[env: {env}=")), "{cmd:?}: {env}");
        }
        assert!(help.contains("K = 1024"), "{cmd:?}");
    }
}

#[test]
fn a_bad_setting_is_an_error_naming_it_and_its_value() {
    let package = samples().join("app-2.tar");
    let package = package.to_str().unwrap();
    for (env, option, bad) in SETTINGS {
        // From the environment, and as the option.
        for o in [
            run(&["inspect", package], &[(env, bad)]),
            run(&["inspect", package, &format!("{option}={bad}")], &[]),
        ] {
            let err = text(&o.stderr);
            assert_eq!(o.status.code(), Some(3), "{env}={bad}: {err}");
            assert!(err.contains(option), "{env}={bad}: {err}");
            assert!(err.contains(env), "{env}={bad}: {err}");
            assert!(err.contains(bad), "{env}={bad}: {err}");
        }
    }
    // Set but empty is unset, as for most tools.
    let o = run(&["inspect", package], &[("DOCKER_DELTA_THREADS", "")]);
    assert!(o.status.success(), "{}", text(&o.stderr));
}

#[test]
fn sizes_take_units_and_options_override_the_environment() {
    let image = samples().join("app-2.tar");
    let image = image.to_str().unwrap();
    // A 1 KiB entry limit stops the inspect of the sample (its layers are larger).
    for o in [
        run(
            &["inspect", image],
            &[("DOCKER_DELTA_MAX_ENTRY_SIZE", "1K")],
        ),
        run(&["inspect", image, "--max-entry-size", "1Ki"], &[]),
    ] {
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(3), "{err}");
        assert!(err.contains("limit of 1024 exceeded"), "{err}");
    }
    // The option wins over the environment; 4G is four GiB, not an error or the default.
    let o = run(
        &["inspect", image, "--max-entry-size", "4G"],
        &[("DOCKER_DELTA_MAX_ENTRY_SIZE", "1K")],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    // The memory bound reaches create: a whole-layer method is refused under 1 MiB.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.ddelta");
    let old = samples().join("app-1.tar");
    let args = [
        "create",
        image,
        "--base",
        old.to_str().unwrap(),
        "--method",
        "xdelta3",
        "-o",
        out.to_str().unwrap(),
    ];
    for o in [
        run(&args, &[("DOCKER_DELTA_MAX_MEMORY", "1M")]),
        run(&[&args[..], &["--max-memory", "1Mi"]].concat(), &[]),
    ] {
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(3), "{err}");
        assert!(err.contains("DOCKER_DELTA_MAX_MEMORY"), "{err}");
    }
    let o = run(&args, &[("DOCKER_DELTA_MAX_MEMORY", "4G")]);
    assert!(o.status.success(), "{}", text(&o.stderr));
}

#[test]
fn version_lists_formats_and_codec_libraries() {
    let o = run(&["--version"], &[]);
    assert!(o.status.success());
    let v = text(&o.stdout);
    assert!(
        v.starts_with(&format!("docker-delta {}\n", env!("CARGO_PKG_VERSION"))),
        "{v}"
    );
    assert!(v.contains("package format: reads 1 to"), "{v}");
    let o = run(&["--version", "--json"], &[]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["schema_version"], 1);
    assert_eq!(j["version"], env!("CARGO_PKG_VERSION"));
    let writes = docker_delta::delta::format::FORMAT_VERSION;
    assert_eq!(j["package_format"]["writes"], writes);
    let reads: Vec<u64> = serde_json::from_value(j["package_format"]["reads"].clone()).unwrap();
    assert_eq!(reads, (1..=u64::from(writes)).collect::<Vec<_>>());
    let codecs = j["codecs"].as_object().unwrap();
    for name in ["zstd", "xz", "zlib"] {
        let version = codecs[name].as_str().unwrap();
        assert!(
            version.starts_with(|c: char| c.is_ascii_digit()),
            "{name}: {version}"
        );
        assert!(v.contains(version), "{name} {version} not in\n{v}");
    }
    assert_eq!(j, serde_json::to_value(docker_delta::build_info()).unwrap());
    // --json alone is not --version.
    assert_eq!(run(&["--json"], &[]).status.code(), Some(3));
}

#[test]
fn completion_scripts_load() {
    let o = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source <('{}' completion bash) && complete -p docker-delta",
            common::bin().display()
        ))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).starts_with("complete "),
        "{}",
        text(&o.stdout)
    );
    for shell in ["zsh", "fish"] {
        let o = run(&["completion", shell], &[]);
        assert!(o.status.success());
        let script = text(&o.stdout);
        assert!(
            script.contains("max-memory") && script.contains("create"),
            "{shell}"
        );
    }
    assert_eq!(run(&["completion", "tcsh"], &[]).status.code(), Some(3));
}

#[test]
fn install_puts_man_pages_and_completions_under_the_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("usr");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/install-cli.sh");
    let install = || {
        let o = Command::new(&script)
            .arg("--prefix")
            .arg(&prefix)
            .arg("--bin")
            .arg(common::bin())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o.stderr));
        common::snapshot(&prefix)
    };
    let first = install();
    assert_eq!(install(), first, "a second install changed something");
    let names: Vec<String> = first
        .keys()
        .map(|p| p.strip_prefix(&prefix).unwrap_or(p).display().to_string())
        .collect();
    for want in [
        "bin/docker-delta",
        "share/bash-completion/completions/docker-delta",
        "share/zsh/site-functions/_docker-delta",
        "share/fish/vendor_completions.d/docker-delta.fish",
        "share/man/man1/docker-delta.1",
        "share/man/man1/docker-delta-create.1",
        "share/man/man1/docker-delta-apply.1",
        "share/man/man1/docker-delta-info.1",
        "share/man/man1/docker-delta-list.1",
        "share/man/man1/docker-delta-inspect.1",
        "share/man/man1/docker-delta-completion.1",
    ] {
        assert!(
            names.iter().any(|n| n.ends_with(want)),
            "{want} not in {names:?}"
        );
    }
    if !common::tool_available("man") {
        return;
    }
    for (path, _) in first
        .iter()
        .filter(|(p, _)| p.extension().is_some_and(|e| e == "1"))
    {
        let path = &prefix.join(path);
        let o = Command::new("man")
            .args(["--warnings", "-l"])
            .arg(path)
            .env("MANWIDTH", "100")
            .env("MANPAGER", "cat")
            .output()
            .unwrap();
        let out = text(&o.stdout);
        assert!(
            o.status.success(),
            "{}: {}",
            path.display(),
            text(&o.stderr)
        );
        assert!(
            text(&o.stderr).trim().is_empty(),
            "{}: {}",
            path.display(),
            text(&o.stderr)
        );
        assert!(
            out.contains("SYNOPSIS") && out.contains("docker-delta"),
            "{out}"
        );
        if path.ends_with("docker-delta-create.1") {
            assert!(out.contains("--base") && out.contains("Examples:"), "{out}");
            // The global settings are on each command's page too.
            assert!(out.contains("--max-memory"), "{out}");
        }
    }
}

#[test]
fn a_timeout_option_overrides_a_bad_variable() {
    // No daemon at DOCKER_HOST: with the option given, the bad variable is not read, and
    // the run gets as far as the daemon (exit 2, not 3).
    let dir = tempfile::tempdir().unwrap();
    let host = format!("unix://{}", dir.path().join("no.sock").display());
    let env = [
        ("DOCKER_HOST", host.as_str()),
        ("DOCKER_DELTA_DAEMON_CONNECT_TIMEOUT", "soon"),
    ];
    let o = run(&["inspect", "docker-daemon:x:1"], &env);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));
    let o = run(
        &[
            "inspect",
            "docker-daemon:x:1",
            "--daemon-connect-timeout",
            "1",
        ],
        &env,
    );
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(!err.contains("soon"), "{err}");
}
