//! The command against a hostile or broken Docker daemon (issue 23): a fake daemon on a
//! Unix socket in a temporary directory, driven through `DOCKER_HOST`. No hang (every
//! conversation has a timeout, and a stream that keeps moving is never cut), bounded
//! memory on an endless load reply, bounded disk on an endless export.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

/// The request line of a request the fake daemon received, with its body read.
struct Request {
    method: String,
    path: String,
}

/// A fake daemon: accepts connections for as long as the test runs and hands each request
/// to `handle` with the connection to answer on.
struct FakeDaemon {
    dir: tempfile::TempDir,
    endpoint: String,
}

impl FakeDaemon {
    fn start(handle: impl Fn(&Request, &mut UnixStream) + Send + Sync + 'static) -> FakeDaemon {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("d.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let handle = std::sync::Arc::new(handle);
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut s) = conn else { return };
                let handle = handle.clone();
                thread::spawn(move || {
                    if let Some(req) = read_request(&mut s) {
                        handle(&req, &mut s);
                    }
                });
            }
        });
        FakeDaemon {
            endpoint: format!("unix://{}", sock.display()),
            dir,
        }
    }

    /// The command, talking to this daemon, with a private TMPDIR and no timeout settings
    /// from the test's own environment.
    fn command(&self, tmp: &Path) -> Command {
        let mut c = Command::new(common::bin());
        c.env("DOCKER_HOST", &self.endpoint)
            .env("TMPDIR", tmp)
            .env_remove("DOCKER_API_VERSION")
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_DELTA_DAEMON_TIMEOUT")
            .env_remove("DOCKER_DELTA_DAEMON_REQUEST_TIMEOUT")
            .env_remove("DOCKER_DELTA_DAEMON_CONNECT_TIMEOUT")
            .env_remove("DOCKER_DELTA_MAX_ENTRY_SIZE");
        c
    }
}

fn read_request(s: &mut UnixStream) -> Option<Request> {
    let mut r = BufReader::new(s.try_clone().ok()?);
    let mut first = String::new();
    r.read_line(&mut first).ok()?;
    let mut parts = first.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut len = 0u64;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                len = value.trim().parse().ok()?;
            }
        }
    }
    std::io::copy(&mut r.by_ref().take(len), &mut std::io::sink()).ok()?;
    Some(Request { method, path })
}

/// Waits until the client hangs up (it never sends more after its request).
fn until_hung_up(s: &mut UnixStream) {
    let mut buf = [0u8; 1024];
    while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
}

const VERSION: &str = r#"{"Version":"26.1.5","ApiVersion":"1.45","MinAPIVersion":"1.24","Os":"linux","Arch":"amd64"}"#;

fn json_reply(s: &mut UnixStream, body: &str) {
    let _ = write!(
        s,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
}

/// Answers `_ping` and `version` as Docker 26 does; `false` for any other request.
fn small_talk(req: &Request, s: &mut UnixStream) -> bool {
    if req.path == "/_ping" {
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK");
        true
    } else if req.path == "/version" {
        json_reply(s, VERSION);
        true
    } else {
        false
    }
}

/// Runs `cmd` to its end, killing it (and failing the test) if it runs for more than 60 s:
/// a regression here is a hang, which must fail rather than hold the suite.
fn output(cmd: &mut Command) -> std::process::Output {
    use std::process::Stdio;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (done, wait) = std::sync::mpsc::channel::<()>();
    let watchdog = thread::spawn(move || {
        if wait.recv_timeout(Duration::from_secs(60)).is_err() {
            // SAFETY: signals our own child, which is not yet reaped (the test waits for
            // this thread before it returns).
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            return true;
        }
        false
    });
    let out = child.wait_with_output().unwrap();
    let _ = done.send(());
    assert!(
        !watchdog.join().unwrap(),
        "the command hung: killed after 60 s"
    );
    out
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_daemon_that_never_answers_is_a_timeout_named_with_its_endpoint() {
    let daemon = FakeDaemon::start(|_, s| until_hung_up(s));
    let tmp = tempfile::tempdir().unwrap();
    // The option, on inspect.
    let start = Instant::now();
    let out = output(daemon.command(tmp.path()).args([
        "inspect",
        "docker-daemon:app:1",
        "--daemon-timeout",
        "1",
    ]));
    let elapsed = start.elapsed();
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
    assert!(err.contains(&daemon.endpoint), "{err}");
    assert!(err.contains("version: waiting for the response"), "{err}");
    assert!(err.contains("within 1 s"), "{err}");
    assert!(err.contains("--daemon-timeout"), "{err}");
    // The environment variable, on create.
    let start = Instant::now();
    let out = output(
        daemon
            .command(tmp.path())
            .env("DOCKER_DELTA_DAEMON_TIMEOUT", "2")
            .args(["create", "docker-daemon:app:1", "-o"])
            .arg(tmp.path().join("p.ddelta")),
    );
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(start.elapsed() < Duration::from_secs(10));
    assert!(err.contains("within 2 s"), "{err}");
    assert!(err.contains("DOCKER_DELTA_DAEMON_TIMEOUT"), "{err}");
    assert!(!tmp.path().join("p.ddelta").exists());
}

#[test]
fn an_invalid_timeout_is_refused_as_invalid_input() {
    let daemon = FakeDaemon::start(|_, s| until_hung_up(s));
    let tmp = tempfile::tempdir().unwrap();
    let out = output(
        daemon
            .command(tmp.path())
            .env("DOCKER_DELTA_DAEMON_REQUEST_TIMEOUT", "soon")
            .args(["inspect", "docker-daemon:app:1"]),
    );
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("DOCKER_DELTA_DAEMON_REQUEST_TIMEOUT"), "{err}");
    let out = output(daemon.command(tmp.path()).args([
        "inspect",
        "docker-daemon:app:1",
        "--daemon-timeout",
        "0",
    ]));
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
}

#[test]
fn endless_100_continue_ends() {
    // Slowly, so that only the request deadline ends it.
    let slow = FakeDaemon::start(|_, s| {
        while s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").is_ok() {
            thread::sleep(Duration::from_millis(100));
        }
    });
    let tmp = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let out = output(
        slow.command(tmp.path())
            .env("DOCKER_DELTA_DAEMON_REQUEST_TIMEOUT", "1")
            .args(["inspect", "docker-daemon:app:1"]),
    );
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(start.elapsed() < Duration::from_secs(10));
    assert!(err.contains(&slow.endpoint), "{err}");
    assert!(err.contains("DOCKER_DELTA_DAEMON_REQUEST_TIMEOUT"), "{err}");
    // As fast as it can: refused after a few, whatever the timeouts.
    let fast = FakeDaemon::start(|_, s| {
        let heads = b"HTTP/1.1 100 Continue\r\n\r\n".repeat(1000);
        while s.write_all(&heads).is_ok() {}
    });
    let out = output(
        fast.command(tmp.path())
            .args(["inspect", "docker-daemon:app:1"]),
    );
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("interim responses"), "{err}");
}

/// A full package of a small untagged image, made by the command itself.
fn full_package(dir: &Path) -> PathBuf {
    let layer = common::layer(&[("app/data", &common::noise(1, 50_000))]);
    let (archive, _) = common::docker_archive(dir, "new.tar", None, &[layer]);
    let package = dir.join("full.ddelta");
    let out = Command::new(common::bin())
        .arg("create")
        .arg(&archive)
        .arg("-o")
        .arg(&package)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    package
}

/// A daemon whose `docker load` reply is `reply` written to the connection after the
/// status line and headers.
fn loading_daemon(reply: fn(&mut UnixStream) -> std::io::Result<()>) -> FakeDaemon {
    FakeDaemon::start(move |req, s| {
        if small_talk(req, s) {
            return;
        }
        assert_eq!(req.method, "POST", "{}", req.path);
        assert!(req.path.contains("/images/load"), "{}", req.path);
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n")
            .and_then(|()| reply(s));
    })
}

const LOADED: &[u8] = b"{\"stream\":\"Loaded image ID: sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\\n\"}\r\n";

#[test]
fn an_800_mb_load_reply_is_read_in_bounded_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let package = full_package(tmp.path());
    // 800 MB of well-formed messages of 64 KiB each (each under the per-message cap).
    let daemon = loading_daemon(|s| {
        let mut msg = b"{\"status\":\"".to_vec();
        msg.resize(64 * 1024 - 4, b'x');
        msg.extend_from_slice(b"\"}\r\n");
        let block = msg.repeat(16); // 1 MiB
        for _ in 0..800 {
            s.write_all(&block)?;
        }
        s.write_all(LOADED)
    });
    let start = Instant::now();
    let m = common::run_measured(
        daemon
            .command(tmp.path())
            .arg("apply")
            .arg(&package)
            .arg("--load"),
    );
    let err = m.stderr_text();
    eprintln!(
        "800 MB load reply: {:?}, peak RSS {} MiB",
        start.elapsed(),
        m.peak_rss >> 20
    );
    assert_eq!(m.status.code(), Some(0), "{err}");
    assert!(m.peak_rss < 200 << 20, "peak RSS {} MiB", m.peak_rss >> 20);

    // One message of 800 MB: refused once past the cap, not read whole.
    let daemon = loading_daemon(|s| {
        s.write_all(b"{\"stream\":\"")?;
        let block = vec![b'x'; 1 << 20];
        for _ in 0..800 {
            s.write_all(&block)?;
        }
        s.write_all(b"\"}\r\n")
    });
    let start = Instant::now();
    let m = common::run_measured(
        daemon
            .command(tmp.path())
            .arg("apply")
            .arg(&package)
            .arg("--load"),
    );
    let err = m.stderr_text();
    eprintln!(
        "one 800 MB message: {:?}, peak RSS {} MiB",
        start.elapsed(),
        m.peak_rss >> 20
    );
    assert_eq!(m.status.code(), Some(4), "{err}");
    assert!(err.contains("longer than 1048576 bytes"), "{err}");
    assert!(m.peak_rss < 200 << 20, "peak RSS {} MiB", m.peak_rss >> 20);
    assert!(start.elapsed() < Duration::from_secs(20));
}

#[test]
fn a_slow_load_that_keeps_reporting_is_not_cut() {
    let tmp = tempfile::tempdir().unwrap();
    let package = full_package(tmp.path());
    // Progress every 250 ms for 3 s: three times the 1 s idle timeout in all.
    let daemon = loading_daemon(|s| {
        for i in 0..12 {
            write!(
                s,
                "{{\"status\":\"Loading layer\",\"progressDetail\":{{\"current\":{i},\"total\":12}},\"id\":\"0123456789ab\"}}\r\n"
            )?;
            thread::sleep(Duration::from_millis(250));
        }
        s.write_all(LOADED)
    });
    let start = Instant::now();
    let out = output(
        daemon
            .command(tmp.path())
            .env("DOCKER_DELTA_DAEMON_TIMEOUT", "1")
            .arg("apply")
            .arg(&package)
            .arg("--load"),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert!(start.elapsed() >= Duration::from_secs(3));
    assert!(String::from_utf8_lossy(&out.stdout).contains("loaded sha256:"));
}

#[test]
fn an_endless_export_stops_at_the_entry_limit_and_leaves_no_spool() {
    let id = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    let daemon = FakeDaemon::start(move |req, s| {
        if small_talk(req, s) {
            return;
        }
        if req.path.ends_with("/images/app:1/json") {
            json_reply(
                s,
                &format!(
                    r#"{{"Id":"{id}","RepoTags":["app:1"],"Os":"linux","Architecture":"amd64"}}"#
                ),
            );
        } else if req.path.contains("/images/get?") {
            // A tar stream that never ends.
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-tar\r\n\r\n");
            let block = vec![0u8; 1 << 20];
            while s.write_all(&block).is_ok() {}
        } else {
            panic!("unexpected request {} {}", req.method, req.path);
        }
    });
    let tmp = tempfile::tempdir().unwrap();
    let spool_dir = tmp.path().join("tmp");
    std::fs::create_dir(&spool_dir).unwrap();
    let out_path = tmp.path().join("p.ddelta");
    let start = Instant::now();
    let out = output(
        daemon
            .command(&spool_dir)
            .env("DOCKER_DELTA_MAX_ENTRY_SIZE", (32u64 << 20).to_string())
            .args(["create", "docker-daemon:app:1", "-o"])
            .arg(&out_path),
    );
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(start.elapsed() < Duration::from_secs(20));
    assert!(err.contains("max entry size"), "{err}");
    assert!(err.contains("DOCKER_DELTA_MAX_ENTRY_SIZE"), "{err}");
    assert!(err.contains("docker-daemon:app:1 export"), "{err}");
    let left: Vec<_> = std::fs::read_dir(&spool_dir).unwrap().collect();
    assert!(left.is_empty(), "left in TMPDIR: {left:?}");
    assert!(!out_path.exists());
    drop(daemon.dir);
}
