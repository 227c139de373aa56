//! The registry client (`docker_delta::transport::registry`) against real CNCF
//! distribution 2.8 registries on loopback, started and seeded by
//! `scripts/registries.sh` (docs/TESTING.md, "Registries"): plain HTTP, Basic auth, the
//! bearer-token flow with an issuer run here (JWTs signed with the test key the registry
//! trusts), and TLS with a test CA. A proxy in the test cuts a blob download once to show
//! it is resumed.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use base64::Engine as _;
use docker_delta::digest::Digest;
use docker_delta::transport::registry::auth::{parse_creds, AuthSources};
use docker_delta::transport::registry::{Registry, RegistryOptions};
use docker_delta::Error;

/// The `DOCKER_DELTA_TEST_*` variables of `scripts/registries.sh env`, or `None` (skip)
/// when the registries are not set up (a panic under DOCKER_DELTA_REQUIRE_REGISTRIES=1).
fn env() -> Option<HashMap<String, String>> {
    common::registries()
}

/// The new image's config digest of the Docker 26 fixtures (`fixtures/app:2`).
fn new_image_id() -> Option<Digest> {
    let fx = common::fixtures()?;
    let text = std::fs::read_to_string(fx.join("images.env")).ok()?;
    text.lines()
        .filter_map(|l| l.trim_start_matches("export ").split_once('='))
        .find(|(k, _)| *k == "D26_NEW_ID")
        .map(|(_, v)| Digest::parse(v.trim_matches('"')).unwrap())
}

fn insecure(auth: AuthSources) -> RegistryOptions {
    RegistryOptions {
        auth,
        tls_verify: false,
        ..RegistryOptions::default()
    }
}

/// Pulls `fixtures/app:2` through `r`: the manifest, the config (whose digest is the image
/// ID) and every layer, each streamed and verified. Returns the config digest.
fn pull(r: &Registry) -> Result<Digest, Error> {
    let (raw, media_type, _) = r.manifest("fixtures/app", "2", 4 << 20)?;
    assert_eq!(
        media_type.as_deref(),
        Some("application/vnd.docker.distribution.manifest.v2+json")
    );
    let m: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    let config = Digest::parse(m["config"]["digest"].as_str().unwrap()).unwrap();
    let bytes = r.small_blob(
        "fixtures/app",
        &config,
        m["config"]["size"].as_u64().unwrap(),
        4 << 20,
    )?;
    assert_eq!(Digest::of(&bytes), config);
    for layer in m["layers"].as_array().unwrap() {
        let d = Digest::parse(layer["digest"].as_str().unwrap()).unwrap();
        let mut blob = r.blob("fixtures/app", &d, layer["size"].as_u64().unwrap())?;
        std::io::copy(&mut blob, &mut std::io::sink()).map_err(|e| Error::io("blob", e))?;
    }
    Ok(config)
}

#[test]
fn plain_http_needs_tls_verify_off_and_pulls_exactly() {
    let (Some(env), Some(want)) = (env(), new_image_id()) else {
        return;
    };
    let plain = &env["DOCKER_DELTA_TEST_REGISTRY_PLAIN"];
    let e = Registry::connect(plain, &RegistryOptions::default()).unwrap_err();
    assert!(
        matches!(&e, Error::RegistryUnavailable { reason, .. } if reason.contains("--tls-verify=false")),
        "{e}"
    );
    let r = Registry::connect(plain, &insecure(AuthSources::default())).unwrap();
    assert_eq!(pull(&r).unwrap(), want);
    // A tag that does not exist; a manifest asked for by a digest it does not have.
    let e = r
        .manifest("fixtures/app", "no-such-tag", 1 << 20)
        .unwrap_err();
    assert!(matches!(e, Error::ImageNotFound { .. }), "{e:?}");
    let wrong = Digest::of(b"not a manifest");
    let e = r.blob("fixtures/app", &wrong, 14).err().unwrap();
    assert!(matches!(e, Error::MissingFile { .. }), "{e:?}");
    // A blob that does not match the digest asked for: the config under the size and
    // digest of another blob is refused at its end.
    let (raw, _, _) = r.manifest("fixtures/app", "2", 1 << 20).unwrap();
    let m: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    let config = Digest::parse(m["config"]["digest"].as_str().unwrap()).unwrap();
    let size = m["config"]["size"].as_u64().unwrap();
    let mut short = Vec::new();
    let e = r
        .blob("fixtures/app", &config, size - 1)
        .unwrap()
        .read_to_end(&mut short)
        .unwrap_err();
    assert!(e.to_string().contains("size"), "{e}");
}

#[test]
fn basic_auth_uses_the_credentials_found_and_names_where_it_looked() {
    let (Some(env), Some(want)) = (env(), new_image_id()) else {
        return;
    };
    let addr = &env["DOCKER_DELTA_TEST_REGISTRY_BASIC"];
    let user = &env["DOCKER_DELTA_TEST_REGISTRY_BASIC_USER"];
    let pass = &env["DOCKER_DELTA_TEST_REGISTRY_BASIC_PASS"];
    let d = tempfile::tempdir().unwrap();
    let nowhere = AuthSources {
        files: vec![d.path().join("auth.json")],
        ..AuthSources::default()
    };
    let r = Registry::connect(addr, &insecure(nowhere)).unwrap();
    let e = pull(&r).unwrap_err();
    assert!(
        matches!(&e, Error::Unauthorized { credentials, searched, .. }
            if credentials == "none" && searched[0].ends_with("auth.json")),
        "{e:?}"
    );
    let wrong = AuthSources {
        creds: Some(parse_creds(&format!("{user}:wrong-secret")).unwrap()),
        ..AuthSources::default()
    };
    let r = Registry::connect(addr, &insecure(wrong)).unwrap();
    let e = pull(&r).unwrap_err();
    assert!(matches!(e, Error::Unauthorized { .. }), "{e:?}");
    assert!(!e.to_string().contains("wrong-secret"), "{e}");
    // From an auth file, as `docker login` writes it.
    let file = d.path().join("config.json");
    let auth = base64_encode(&format!("{user}:{pass}"));
    std::fs::write(
        &file,
        format!(r#"{{"auths":{{"{addr}":{{"auth":"{auth}"}}}}}}"#),
    )
    .unwrap();
    let from_file = AuthSources {
        files: vec![file],
        ..AuthSources::default()
    };
    let r = Registry::connect(addr, &insecure(from_file)).unwrap();
    assert_eq!(pull(&r).unwrap(), want);
}

#[test]
fn tls_is_verified_against_the_system_roots_and_cert_dir() {
    let (Some(env), Some(want)) = (env(), new_image_id()) else {
        return;
    };
    let addr = &env["DOCKER_DELTA_TEST_REGISTRY_TLS"];
    let e = Registry::connect(addr, &RegistryOptions::default()).unwrap_err();
    assert!(matches!(e, Error::RegistryUnavailable { .. }), "{e:?}");
    let with_ca = RegistryOptions {
        cert_dir: Some(PathBuf::from(
            &env["DOCKER_DELTA_TEST_REGISTRY_TLS_CERT_DIR"],
        )),
        ..RegistryOptions::default()
    };
    let r = Registry::connect(addr, &with_ca).unwrap();
    assert_eq!(pull(&r).unwrap(), want);
}

/// The token flow with an issuer run here: anonymous and wrong credentials are refused
/// by the issuer, right ones get a token that the registry takes, and it is asked for
/// once per scope while it lives.
#[test]
fn bearer_tokens_are_fetched_once_and_refusals_are_named() {
    let (Some(env), Some(want)) = (env(), new_image_id()) else {
        return;
    };
    let issuer = Issuer::start(&env);
    let addr = &env["DOCKER_DELTA_TEST_REGISTRY_TOKEN"];
    let user = &env["DOCKER_DELTA_TEST_TOKEN_USER"];
    let pass = &env["DOCKER_DELTA_TEST_TOKEN_PASS"];
    let anonymous = AuthSources::default();
    let r = Registry::connect(addr, &insecure(anonymous)).unwrap();
    let e = pull(&r).unwrap_err();
    assert!(
        matches!(&e, Error::Unauthorized { scope, status: 401, .. } if scope == "repository:fixtures/app:pull"),
        "{e:?}"
    );
    let creds = AuthSources {
        creds: Some(parse_creds(&format!("{user}:{pass}")).unwrap()),
        ..AuthSources::default()
    };
    let r = Registry::connect(addr, &insecure(creds)).unwrap();
    let before = issuer.granted.load(Ordering::SeqCst);
    assert_eq!(pull(&r).unwrap(), want);
    assert_eq!(
        issuer.granted.load(Ordering::SeqCst) - before,
        1,
        "one token for every request of the scope"
    );
}

/// A proxy in front of the plain registry cuts the first blob download after 4 KiB of its
/// body; the client resumes it with `Range` and the blob verifies.
#[test]
fn a_blob_download_cut_midway_is_resumed() {
    let (Some(env), Some(want)) = (env(), new_image_id()) else {
        return;
    };
    let upstream = env["DOCKER_DELTA_TEST_REGISTRY_PLAIN"].clone();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let cut = Arc::new(AtomicBool::new(false));
    let ranges = Arc::new(AtomicUsize::new(0));
    {
        let (cut, ranges) = (cut.clone(), ranges.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { break };
                let (upstream, cut, ranges) = (upstream.clone(), cut.clone(), ranges.clone());
                std::thread::spawn(move || proxy(client, &upstream, &cut, &ranges));
            }
        });
    }
    let r = Registry::connect(&addr, &insecure(AuthSources::default())).unwrap();
    assert_eq!(pull(&r).unwrap(), want);
    assert!(cut.load(Ordering::SeqCst), "no download was cut");
    assert!(ranges.load(Ordering::SeqCst) >= 1, "no Range request");
}

/// Forwards one connection; the first response to a blob request without `Range` is cut
/// 4 KiB into its body (the connection closed).
fn proxy(mut client: TcpStream, upstream: &str, cut: &AtomicBool, ranges: &Arc<AtomicUsize>) {
    let Ok(mut server) = TcpStream::connect(upstream) else {
        return;
    };
    let mut to_server = client.try_clone().unwrap();
    let mut from_server = server.try_clone().unwrap();
    // Requests: read them to see what is asked (one request at a time per connection).
    let cut_next = Arc::new(AtomicBool::new(false));
    let cut_flag = cut_next.clone();
    let seen_ranges = ranges.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 16384];
        loop {
            let n = match to_server.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let text = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
            if text.contains("/blobs/") && !text.contains("range:") {
                cut_flag.store(true, Ordering::SeqCst);
            }
            if text.contains("range: bytes=") {
                seen_ranges.fetch_add(1, Ordering::SeqCst);
            }
            if server.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = server.shutdown(std::net::Shutdown::Write);
    });
    let mut buf = [0u8; 1024];
    let mut body_seen = 0usize;
    let mut in_body = false;
    let mut head = Vec::new();
    loop {
        let n = match from_server.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut chunk = &buf[..n];
        if cut_next.load(Ordering::SeqCst) && !cut.load(Ordering::SeqCst) {
            if !in_body {
                head.extend_from_slice(chunk);
                if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                    in_body = true;
                    body_seen = head.len() - (i + 4);
                }
            } else {
                body_seen += n;
            }
            if in_body && body_seen > 4096 && head.starts_with(b"HTTP/1.1 200") {
                let keep = n - (body_seen - 4096);
                chunk = &buf[..keep];
                let _ = client.write_all(chunk);
                cut.store(true, Ordering::SeqCst);
                let _ = client.shutdown(std::net::Shutdown::Both);
                return;
            }
        }
        if client.write_all(chunk).is_err() {
            break;
        }
    }
    let _ = reader.join();
}

fn base64_encode(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn b64url(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

/// The identity token (OAuth2 refresh token) the issuer takes, as `docker login` to a
/// registry with an identity provider leaves in `auths.*.identitytoken`.
const REFRESH_TOKEN: &str = "dd-refresh-token-19-do-not-print";

/// Held by a running [`Issuer`]: tests run on threads, and the realm's port is fixed.
static ISSUER_PORT: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A token issuer on `DOCKER_DELTA_TEST_TOKEN_LISTEN`: answers `GET /token` for the test
/// user (Basic) and `POST /token` with `grant_type=refresh_token` and [`REFRESH_TOKEN`]
/// (the OAuth2 form Docker uses for identity tokens) with an ES256 JWT (key named by
/// `kid`) granting what was asked; 401 otherwise. Every token it issued is kept in
/// `issued`, so that tests can look for them where they must not be.
struct Issuer {
    granted: Arc<AtomicUsize>,
    issued: Arc<std::sync::Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    addr: String,
    thread: Option<std::thread::JoinHandle<()>>,
    _port: std::sync::MutexGuard<'static, ()>,
}

/// `a%3Ab+c` as `a:b c`.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

/// `k=v&k=v` (a query or a form body) as pairs, decoded.
fn form(s: &str) -> HashMap<String, String> {
    s.split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (percent_decode(k), percent_decode(v)))
        .collect()
}

/// Reads one HTTP/1.1 request: the head's lines and the body (by `Content-Length`).
fn read_request(conn: &mut TcpStream) -> (Vec<String>, Vec<u8>) {
    let mut req = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        if let Some(i) = req.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return (Vec::new(), Vec::new()),
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
        // A TLS handshake (the client tries HTTPS first): not HTTP, close at once.
        if req.first() == Some(&0x16) {
            return (Vec::new(), Vec::new());
        }
    };
    let head = String::from_utf8_lossy(&req[..end]).to_string();
    let lines: Vec<String> = head.split("\r\n").map(str::to_string).collect();
    let len = lines
        .iter()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = req[end + 4..].to_vec();
    while body.len() < len {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&buf[..n]),
        }
    }
    (lines, body)
}

/// The value of header `name` in a request's head lines.
fn header_of<'a>(lines: &'a [String], name: &str) -> Option<&'a str> {
    lines.iter().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

impl Issuer {
    fn start(env: &HashMap<String, String>) -> Issuer {
        let port = ISSUER_PORT.lock().unwrap_or_else(|e| e.into_inner());
        let key_der = std::fs::read(&env["DOCKER_DELTA_TEST_TOKEN_KEY_DER"]).unwrap();
        let rng = ring::rand::SystemRandom::new();
        let key = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &key_der,
            &rng,
        )
        .unwrap();
        let addr = env["DOCKER_DELTA_TEST_TOKEN_LISTEN"].clone();
        let listener = TcpListener::bind(&addr).expect("the token realm's port is free");
        let expected = format!(
            "Basic {}",
            base64_encode(&format!(
                "{}:{}",
                env["DOCKER_DELTA_TEST_TOKEN_USER"], env["DOCKER_DELTA_TEST_TOKEN_PASS"]
            ))
        );
        let (kid, iss, service) = (
            env["DOCKER_DELTA_TEST_TOKEN_KID"].clone(),
            env["DOCKER_DELTA_TEST_TOKEN_ISSUER"].clone(),
            env["DOCKER_DELTA_TEST_TOKEN_SERVICE"].clone(),
        );
        let granted = Arc::new(AtomicUsize::new(0));
        let issued = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (granted, issued, stop) = (granted.clone(), issued.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(mut conn) = conn else { continue };
                    let (lines, body) = read_request(&mut conn);
                    let line = lines.first().cloned().unwrap_or_default();
                    let (authorized, scope, oauth) = if line.starts_with("POST ") {
                        // Docker's identity-token exchange: a form, no Authorization.
                        let f = form(&String::from_utf8_lossy(&body));
                        let ok = f.get("grant_type").map(String::as_str) == Some("refresh_token")
                            && f.get("refresh_token").map(String::as_str) == Some(REFRESH_TOKEN)
                            && f.get("service") == Some(&service);
                        (ok, f.get("scope").cloned().unwrap_or_default(), true)
                    } else {
                        let query = line
                            .split(' ')
                            .nth(1)
                            .and_then(|t| t.split_once('?'))
                            .map(|(_, q)| form(q))
                            .unwrap_or_default();
                        let ok = header_of(&lines, "authorization") == Some(expected.as_str());
                        (ok, query.get("scope").cloned().unwrap_or_default(), false)
                    };
                    let reply = if !authorized {
                        "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_string()
                    } else {
                        let mut parts = scope.splitn(3, ':');
                        let (_, name, actions) = (
                            parts.next(),
                            parts.next().unwrap_or(""),
                            parts.next().unwrap_or(""),
                        );
                        let now = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .unwrap()
                            .as_secs();
                        let header = format!(r#"{{"typ":"JWT","alg":"ES256","kid":"{kid}"}}"#);
                        let claims = serde_json::json!({
                            "iss": iss, "sub": "dd-token", "aud": service,
                            "exp": now + 300, "nbf": now - 10, "iat": now,
                            "jti": format!("{now}-{}", granted.load(Ordering::SeqCst)),
                            "access": [{"type": "repository", "name": name,
                                "actions": actions.split(',').collect::<Vec<_>>()}],
                        });
                        let signing = format!(
                            "{}.{}",
                            b64url(header.as_bytes()),
                            b64url(claims.to_string().as_bytes())
                        );
                        let sig = key.sign(&rng, signing.as_bytes()).unwrap();
                        let token = format!("{signing}.{}", b64url(sig.as_ref()));
                        granted.fetch_add(1, Ordering::SeqCst);
                        issued.lock().unwrap().push(token.clone());
                        // The OAuth2 answer names it access_token; the GET one, token.
                        let key = if oauth { "access_token" } else { "token" };
                        let body = serde_json::json!({key: token, "expires_in": 300}).to_string();
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                    };
                    let _ = conn.write_all(reply.as_bytes());
                }
            })
        };
        Issuer {
            granted,
            issued,
            stop,
            addr,
            thread: Some(thread),
            _port: port,
        }
    }

    /// The tokens issued so far.
    fn issued(&self) -> Vec<String> {
        self.issued.lock().unwrap().clone()
    }
}

impl Drop for Issuer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag, then wait until it has closed the
        // port, before the next test may bind it.
        let _ = TcpStream::connect(&self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The command with `docker://` on both sides: `create` from the registry, `apply` with
/// the base from the registry, the archive loaded into Docker 26 (when its engine is set
/// up) under the new image's ID; `inspect` reads manifest and config only unless
/// `--verify`; a platform the index lacks and plain HTTP without `--tls-verify=false`
/// are refused with their exit codes.
#[test]
fn create_and_apply_read_images_from_a_registry() {
    let (Some(env), Some(want)) = (env(), new_image_id()) else {
        return;
    };
    let r = &env["DOCKER_DELTA_TEST_REGISTRY_PLAIN"];
    let d = tempfile::tempdir().unwrap();
    let dd = |args: &[&str]| {
        std::process::Command::new(common::bin())
            .args(args)
            .output()
            .unwrap()
    };
    let ok = |o: &std::process::Output| {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    let old = format!("docker://{r}/fixtures/app:1");
    let new = format!("docker://{r}/fixtures/app:2");
    let pkg = d.path().join("p.ddelta");
    let out = d.path().join("out.tar");
    let o = dd(&["create", &new, "--base", &old, "-o", pkg.to_str().unwrap()]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "plain HTTP needs --tls-verify=false"
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("--tls-verify=false"));
    ok(&dd(&[
        "create",
        "--tls-verify=false",
        &new,
        "--base",
        &old,
        "-o",
        pkg.to_str().unwrap(),
    ]));
    ok(&dd(&[
        "apply",
        "--tls-verify=false",
        pkg.to_str().unwrap(),
        "--base",
        &old,
        "-o",
        out.to_str().unwrap(),
    ]));
    let report: serde_json::Value =
        serde_json::from_slice(&dd(&["inspect", "--json", out.to_str().unwrap()]).stdout).unwrap();
    assert_eq!(report["image_id"], want.to_string());
    // Docker 20.10 and 26 load it with the new image ID.
    let mut loaded = 0;
    for engine in ["DOCKER20", "DOCKER26"] {
        let Ok(host) = std::env::var(format!("DOCKER_DELTA_TEST_{engine}")) else {
            continue;
        };
        let cli = std::env::var(format!("DOCKER_DELTA_TEST_{engine}_CLI"))
            .unwrap_or_else(|_| "docker".into());
        let docker = |args: &[&str]| {
            std::process::Command::new(&cli)
                .arg("-H")
                .arg(&host)
                .args(args)
                .output()
                .unwrap()
        };
        ok(&docker(&["load", "-i", out.to_str().unwrap()]));
        // Named as the new image was where it was read: in the registry.
        let name = format!("{r}/fixtures/app:2");
        let o = docker(&["image", "inspect", "--format", "{{.Id}}", &name]);
        assert_eq!(
            String::from_utf8_lossy(&o.stdout).trim(),
            want.to_string(),
            "{engine}"
        );
        loaded += 1;
    }
    if std::env::var("DOCKER_DELTA_REQUIRE_ENGINES").as_deref() == Ok("1") {
        assert_eq!(loaded, 2, "Docker 20.10 and 26 loaded it");
    }
    // inspect: manifest and config only, unless asked.
    let o = dd(&["inspect", "--tls-verify=false", "--json", &new]);
    ok(&o);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["layers_verified"], false, "{v}");
    assert_eq!(v["image_id"], want.to_string());
    let o = dd(&["inspect", "--tls-verify=false", "--verify", "--json", &new]);
    ok(&o);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["layers_verified"], true, "{v}");
    // An index: the platform asked for, or a refusal naming what it has.
    let multi = format!("docker://{r}/fixtures/multi:2");
    ok(&dd(&[
        "inspect",
        "--tls-verify=false",
        "--platform",
        "linux/arm64",
        &multi,
    ]));
    let o = dd(&[
        "inspect",
        "--tls-verify=false",
        "--platform",
        "linux/s390x",
        &multi,
    ]);
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("linux/arm64"));
    // A tag the registry lacks.
    let o = dd(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{r}/fixtures/app:nope"),
    ]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The command with the environment of a clean account: `HOME` in `home`, none of the
/// variables that point at auth files, then `vars`.
fn dd_in(home: &std::path::Path, args: &[&str], vars: &[(&str, String)]) -> std::process::Output {
    let mut cmd = std::process::Command::new(common::bin());
    cmd.args(args)
        .env("HOME", home)
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("DOCKER_CONFIG")
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("DOCKER_DELTA_REGISTRY_TIMEOUT")
        .env_remove("DOCKER_DELTA_REGISTRY_CONNECT_TIMEOUT");
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// Fails when any of `secrets` is in the command's standard output or error.
fn assert_hidden(o: &std::process::Output, secrets: &[&str], case: &str) {
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    for (i, s) in secrets.iter().enumerate() {
        assert!(!s.is_empty());
        for (name, text) in [("stdout", &out), ("stderr", &err)] {
            let lines: Vec<String> = text
                .lines()
                .filter(|l| l.contains(s))
                .map(|l| l.replace(s, "<SECRET>"))
                .collect();
            assert!(
                lines.is_empty(),
                "{case}: secret #{i} on {name}:\n{}",
                lines.join("\n")
            );
        }
    }
}

/// `inspect --json` succeeded and read the image `want`.
fn assert_read(o: &std::process::Output, want: &Digest, case: &str) {
    assert!(
        o.status.success(),
        "{case}: exit {:?}: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["image_id"], want.to_string(), "{case}");
}

/// The error document `--json` printed (the last line of stderr, after any logs).
fn json_error(o: &std::process::Output) -> serde_json::Value {
    let err = String::from_utf8_lossy(&o.stderr);
    let last = err.lines().last().unwrap_or("");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {err}"))
}

/// A `docker-credential-test` helper in `dir`, speaking Docker's protocol: it has
/// `user`/`pass` for `server` alone.
fn credential_helper(dir: &std::path::Path, server: &str, user: &str, pass: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("docker-credential-test");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 9\nread server\n\
             if [ \"$server\" = '{server}' ]; then\n\
             printf '{{\"ServerURL\":\"%s\",\"Username\":\"{user}\",\"Secret\":\"{pass}\"}}\\n' \"$server\"\n\
             else echo 'credentials not found in native keychain'; exit 1; fi\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Every place the issue lists, each alone, through the command against the Basic
/// registry, with `-vv`: the image is read, and neither the password nor its base64 form
/// is printed. Without credentials, or with wrong ones, the refusal (exit 3,
/// `unauthorized`) names the registry, the scope and where credentials were looked for.
#[test]
fn the_command_finds_credentials_in_every_place_and_never_prints_them() {
    let (Some(env), Some(want)) = (env(), new_image_id()) else {
        return;
    };
    let addr = &env["DOCKER_DELTA_TEST_REGISTRY_BASIC"];
    let user = &env["DOCKER_DELTA_TEST_REGISTRY_BASIC_USER"];
    let pass = &env["DOCKER_DELTA_TEST_REGISTRY_BASIC_PASS"];
    let encoded = base64_encode(&format!("{user}:{pass}"));
    let secrets = [pass.as_str(), encoded.as_str()];
    let d = tempfile::tempdir().unwrap();
    let home = d.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let image = format!("docker://{addr}/fixtures/app:2");
    let auths = format!(r#"{{"auths":{{"{addr}":{{"auth":"{encoded}"}}}}}}"#);
    let write = |rel: &str, text: &str| {
        let p = d.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    };
    let authfile = write("authfile/auth.json", &auths);
    write("xdg/containers/auth.json", &auths);
    write("docker/config.json", &auths);
    write(
        "helpers/config.json",
        &format!(r#"{{"credHelpers":{{"{addr}":"test"}}}}"#),
    );
    write("store/config.json", r#"{"credsStore":"test"}"#);
    let bin = d.path().join("bin");
    credential_helper(&bin, addr, user, pass);
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let at = |rel: &str| d.path().join(rel).display().to_string();
    let creds = format!("{user}:{pass}");
    let authfile = authfile.display().to_string();
    type Case<'a> = (&'a str, Vec<&'a str>, Vec<(&'a str, String)>);
    let cases: Vec<Case> = vec![
        ("--creds", vec!["--creds", &creds], vec![]),
        ("--authfile", vec!["--authfile", &authfile], vec![]),
        (
            "$REGISTRY_AUTH_FILE",
            vec![],
            vec![("REGISTRY_AUTH_FILE", authfile.clone())],
        ),
        (
            "$XDG_RUNTIME_DIR/containers/auth.json",
            vec![],
            vec![("XDG_RUNTIME_DIR", at("xdg"))],
        ),
        (
            "$DOCKER_CONFIG/config.json auths",
            vec![],
            vec![("DOCKER_CONFIG", at("docker"))],
        ),
        (
            "credHelpers",
            vec![],
            vec![("DOCKER_CONFIG", at("helpers")), ("PATH", path.clone())],
        ),
        (
            "credsStore",
            vec![],
            vec![("DOCKER_CONFIG", at("store")), ("PATH", path.clone())],
        ),
    ];
    for (case, extra, vars) in &cases {
        let mut args = vec!["inspect", "-vv", "--tls-verify=false", "--json"];
        args.extend(extra);
        args.push(&image);
        let o = dd_in(&home, &args, vars);
        assert_read(&o, &want, case);
        assert_hidden(&o, &secrets, case);
    }
    // None anywhere: refused, naming the registry, the scope and every place looked at.
    let o = dd_in(
        &home,
        &["inspect", "-vv", "--tls-verify=false", "--json", &image],
        &[("XDG_RUNTIME_DIR", at("nowhere"))],
    );
    assert_eq!(o.status.code(), Some(3));
    let e = json_error(&o);
    assert_eq!(e["kind"], "unauthorized", "{e}");
    let message = e["message"].as_str().unwrap();
    for part in [
        addr.as_str(),
        "repository:fixtures/app:pull",
        "nowhere/containers/auth.json",
        ".docker/config.json",
    ] {
        assert!(message.contains(part), "{part} not in {message}");
    }
    // Wrong credentials, from --creds and from a file: refused, the secret not shown.
    let wrong = format!("{user}:wrong-secret-19");
    let o = dd_in(
        &home,
        &[
            "inspect",
            "-vv",
            "--tls-verify=false",
            "--json",
            "--creds",
            &wrong,
            &image,
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(3));
    let e = json_error(&o);
    assert_eq!(e["kind"], "unauthorized", "{e}");
    assert!(e["message"].as_str().unwrap().contains("--creds"), "{e}");
    assert_hidden(&o, &["wrong-secret-19"], "wrong --creds");
    let bad = base64_encode(&format!("{user}:wrong-secret-19"));
    let bad_file = write(
        "bad/auth.json",
        &format!(r#"{{"auths":{{"{addr}":{{"auth":"{bad}"}}}}}}"#),
    );
    let o = dd_in(
        &home,
        &["inspect", "-vv", "--tls-verify=false", &image],
        &[("REGISTRY_AUTH_FILE", bad_file.display().to_string())],
    );
    assert_eq!(o.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("bad/auth.json"),
        "the file the credentials came from is named"
    );
    assert_hidden(&o, &["wrong-secret-19", &bad], "wrong auth file");
}

/// An `identitytoken` in `$DOCKER_CONFIG/config.json` is exchanged at the token service
/// with the OAuth2 form Docker uses (`POST`, `grant_type=refresh_token`); the image is
/// read, and neither the identity token nor a bearer token the issuer gave is printed
/// with `-vv`. A wrong identity token is refused with exit 3, and not printed either.
#[test]
fn identity_tokens_are_exchanged_at_the_token_service_and_never_printed() {
    let (Some(env), Some(want)) = (env(), new_image_id()) else {
        return;
    };
    let issuer = Issuer::start(&env);
    let addr = &env["DOCKER_DELTA_TEST_REGISTRY_TOKEN"];
    let d = tempfile::tempdir().unwrap();
    let image = format!("docker://{addr}/fixtures/app:2");
    let config = |token: &str| {
        // A directory not named after the token: the path is printed.
        let dir = d.path().join(format!("cfg{}", token.len()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("config.json"),
            format!(r#"{{"auths":{{"{addr}":{{"auth":"","identitytoken":"{token}"}}}}}}"#),
        )
        .unwrap();
        dir.display().to_string()
    };
    let o = dd_in(
        d.path(),
        &["inspect", "-vv", "--tls-verify=false", "--json", &image],
        &[("DOCKER_CONFIG", config(REFRESH_TOKEN))],
    );
    assert_read(&o, &want, "identitytoken");
    let issued = issuer.issued();
    assert!(!issued.is_empty(), "no token was issued");
    let mut secrets: Vec<&str> = issued.iter().map(String::as_str).collect();
    secrets.push(REFRESH_TOKEN);
    assert_hidden(&o, &secrets, "identitytoken");
    let o = dd_in(
        d.path(),
        &["inspect", "-vv", "--tls-verify=false", "--json", &image],
        &[("DOCKER_CONFIG", config("dd-wrong-refresh-token-19"))],
    );
    assert_eq!(o.status.code(), Some(3));
    assert_eq!(json_error(&o)["kind"], "unauthorized");
    assert_hidden(&o, &["dd-wrong-refresh-token-19"], "wrong identitytoken");
}

/// What a test proxy does with one request.
enum Act {
    /// Pass it to the registry, and its answer back.
    Forward,
    /// Pass it on, and its answer back with the last byte of the body changed.
    Corrupt,
    /// Answer this instead.
    Answer(String),
}

/// Sends a request (head lines and body) to `upstream` asking it to close the connection
/// after its answer, with `extra` header lines added; returns the whole answer.
fn forward(upstream: &str, lines: &[String], body: &[u8], extra: &[String]) -> Vec<u8> {
    let mut server = TcpStream::connect(upstream).unwrap();
    let mut head = String::new();
    for l in lines.iter().chain(extra) {
        if !l.to_ascii_lowercase().starts_with("connection:") {
            head.push_str(l);
            head.push_str("\r\n");
        }
    }
    head.push_str("Connection: close\r\n\r\n");
    server.write_all(head.as_bytes()).unwrap();
    server.write_all(body).unwrap();
    let mut reply = Vec::new();
    let _ = server.read_to_end(&mut reply);
    reply
}

/// A loopback HTTP proxy in front of `upstream`, one request per connection (both sides
/// are asked to close after it): `decide` chooses from each request's first line.
fn http_proxy(upstream: String, decide: impl Fn(&str) -> Act + Send + Sync + 'static) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let decide = Arc::new(decide);
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { break };
            let (upstream, decide) = (upstream.clone(), decide.clone());
            std::thread::spawn(move || {
                let (lines, body) = read_request(&mut client);
                let Some(first) = lines.first() else { return };
                let reply = match decide(first) {
                    Act::Answer(text) => text.into_bytes(),
                    Act::Forward => forward(&upstream, &lines, &body, &[]),
                    Act::Corrupt => {
                        let mut reply = forward(&upstream, &lines, &body, &[]);
                        if let Some(last) = reply.last_mut() {
                            *last ^= 0x01;
                        }
                        reply
                    }
                };
                let _ = client.write_all(&reply);
                let _ = client.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    addr
}

/// A proxy in front of the Basic registry answers every blob GET with a 307 to "blob
/// storage": another listener on another port of the same host (so another origin),
/// which serves the blob from the registry with credentials of its own. The command
/// reads the image, layers verified, and the storage never sees an `Authorization`
/// header, nor does the signed query of the redirect appear in `-vv` output.
#[test]
fn blob_redirects_are_followed_without_the_registry_authorization() {
    let (Some(env), Some(want)) = (env(), new_image_id()) else {
        return;
    };
    let registry = env["DOCKER_DELTA_TEST_REGISTRY_BASIC"].clone();
    let user = &env["DOCKER_DELTA_TEST_REGISTRY_BASIC_USER"];
    let pass = &env["DOCKER_DELTA_TEST_REGISTRY_BASIC_PASS"];
    let storage_auth = format!(
        "Authorization: Basic {}",
        base64_encode(&format!("{user}:{pass}"))
    );
    let storage = TcpListener::bind("127.0.0.1:0").unwrap();
    let storage_addr = storage.local_addr().unwrap().to_string();
    let served = Arc::new(AtomicUsize::new(0));
    let leaked = Arc::new(AtomicUsize::new(0));
    {
        let (served, leaked, registry) = (served.clone(), leaked.clone(), registry.clone());
        std::thread::spawn(move || {
            for conn in storage.incoming() {
                let Ok(mut conn) = conn else { break };
                let (mut lines, body) = read_request(&mut conn);
                if lines.is_empty() {
                    continue;
                }
                if header_of(&lines, "authorization").is_some() {
                    leaked.fetch_add(1, Ordering::SeqCst);
                }
                lines.retain(|l| !l.to_ascii_lowercase().starts_with("authorization:"));
                // GET /storage/<digest>?sig=... -> the registry's blob.
                let digest = lines[0]
                    .split(' ')
                    .nth(1)
                    .and_then(|t| t.strip_prefix("/storage/"))
                    .and_then(|t| t.split('?').next())
                    .unwrap_or("")
                    .to_string();
                lines[0] = format!("GET /v2/fixtures/app/blobs/{digest} HTTP/1.1");
                let reply = forward(
                    &registry,
                    &lines,
                    &body,
                    std::slice::from_ref(&storage_auth),
                );
                served.fetch_add(1, Ordering::SeqCst);
                let _ = conn.write_all(&reply);
            }
        });
    }
    let proxy = http_proxy(registry, move |line| {
        let target = line.split(' ').nth(1).unwrap_or("");
        match target.split_once("/blobs/") {
            Some((_, digest)) if line.starts_with("GET ") => Act::Answer(format!(
                "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://{storage_addr}/storage/{digest}?sig=dd-signed-19\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )),
            _ => Act::Forward,
        }
    });
    let d = tempfile::tempdir().unwrap();
    let creds = format!("{user}:{pass}");
    let o = dd_in(
        d.path(),
        &[
            "inspect",
            "-vv",
            "--tls-verify=false",
            "--verify",
            "--json",
            "--creds",
            &creds,
            &format!("docker://{proxy}/fixtures/app:2"),
        ],
        &[],
    );
    assert_read(&o, &want, "redirected blobs");
    assert!(
        served.load(Ordering::SeqCst) >= 2,
        "config and layers came from the storage"
    );
    assert_eq!(
        leaked.load(Ordering::SeqCst),
        0,
        "the registry's Authorization went to another origin"
    );
    assert_hidden(&o, &[pass.as_str(), "dd-signed-19"], "redirected blobs");
}

/// Refusals through the command, each with its exit code and kind, and no `-o` file
/// after: wrong credentials, a registry that is down, a manifest (fetched by digest) and
/// a layer blob altered by a proxy, a tag that does not exist, a platform the index
/// lacks.
#[test]
fn refusals_name_the_cause_and_write_nothing() {
    let (Some(env), Some(_)) = (env(), new_image_id()) else {
        return;
    };
    let plain = env["DOCKER_DELTA_TEST_REGISTRY_PLAIN"].clone();
    let basic = &env["DOCKER_DELTA_TEST_REGISTRY_BASIC"];
    let user = &env["DOCKER_DELTA_TEST_REGISTRY_BASIC_USER"];
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("p.ddelta");
    let out_s = out.display().to_string();
    // The manifest of fixtures/app:2 and its config, to name them by digest.
    let r = Registry::connect(&plain, &insecure(AuthSources::default())).unwrap();
    let (raw, _, manifest_digest) = r.manifest("fixtures/app", "2", 4 << 20).unwrap();
    let m: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    let config = m["config"]["digest"].as_str().unwrap().to_string();
    let corrupting = |what: &'static str| {
        let config = config.clone();
        http_proxy(plain.clone(), move |line| {
            let is = |kind: &str| line.starts_with("GET ") && line.contains(kind);
            match what {
                "manifest" if is("/manifests/sha256:") => Act::Corrupt,
                "layer" if is("/blobs/") && !line.contains(&config) => Act::Corrupt,
                _ => Act::Forward,
            }
        })
    };
    let down = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let wrong = format!("{user}:wrong-secret-19");
    let manifest_proxy = corrupting("manifest");
    let layer_proxy = corrupting("layer");
    // (what, arguments, exit code, kind, what the message names)
    type Case<'a> = (&'a str, Vec<String>, i32, &'a str, Vec<&'a str>);
    let cases: Vec<Case> = vec![
        (
            "wrong credentials",
            vec![
                "--creds".into(),
                wrong.clone(),
                format!("docker://{basic}/fixtures/app:2"),
            ],
            3,
            "unauthorized",
            vec![basic.as_str(), "repository:fixtures/app:pull", "--creds"],
        ),
        (
            "registry down",
            vec![format!("docker://{down}/fixtures/app:2")],
            2,
            "registry_unavailable",
            vec![down.as_str()],
        ),
        (
            "manifest altered",
            vec![format!(
                "docker://{manifest_proxy}/fixtures/app@{manifest_digest}"
            )],
            3,
            "digest_mismatch",
            vec!["manifest", manifest_digest.to_string().leak()],
        ),
        (
            "layer blob altered",
            vec![format!("docker://{layer_proxy}/fixtures/app:2")],
            3,
            "digest_mismatch",
            vec!["blob"],
        ),
        (
            "no such tag",
            vec![format!("docker://{plain}/fixtures/app:no-such-tag")],
            3,
            "image_not_found",
            vec!["no-such-tag"],
        ),
        (
            "platform the index lacks",
            vec![
                "--platform".into(),
                "linux/arm/v7".into(),
                format!("docker://{plain}/fixtures/multi:2"),
            ],
            3,
            "",
            vec!["linux/arm64", "linux/amd64"],
        ),
    ];
    for (case, args, code, kind, names) in &cases {
        let mut all = vec!["create", "--tls-verify=false", "--json", "-o", &out_s];
        all.extend(args.iter().map(String::as_str));
        let o = dd_in(d.path(), &all, &[]);
        assert_eq!(
            o.status.code(),
            Some(*code),
            "{case}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let e = json_error(&o);
        if !kind.is_empty() {
            assert_eq!(e["kind"], *kind, "{case}: {e}");
        }
        let message = e["message"].as_str().unwrap();
        for n in names {
            assert!(message.contains(n), "{case}: {n} not in {message}");
        }
        assert!(!out.exists(), "{case}: the output was written");
        assert_hidden(&o, &["wrong-secret-19"], case);
        let left: Vec<_> = std::fs::read_dir(d.path()).unwrap().flatten().collect();
        assert!(left.is_empty(), "{case}: left {left:?}");
    }
}

/// Runs the command, killing it after `limit` (so that a missing timeout fails the test
/// instead of hanging it).
fn dd_within(
    limit: std::time::Duration,
    args: &[&str],
    vars: &[(&str, &str)],
) -> std::process::Output {
    let d = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(common::bin());
    cmd.args(args)
        .env("HOME", d.path())
        .env_remove("DOCKER_DELTA_REGISTRY_TIMEOUT")
        .env_remove("DOCKER_DELTA_REGISTRY_CONNECT_TIMEOUT")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// `--registry-timeout` (and `DOCKER_DELTA_REGISTRY_TIMEOUT`) bound the wait for a
/// registry that accepts connections and never answers (the default would wait 300 s):
/// exit 2, `timeout`, naming the option. Bad values are refused naming the option and
/// its variable.
#[test]
fn registry_timeouts_are_settings_of_the_command() {
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in silent.incoming().flatten() {
            held.push(conn);
        }
    });
    let image = format!("docker://{addr}/app:1");
    let limit = std::time::Duration::from_secs(60);
    for (args, vars) in [
        (
            vec![
                "inspect",
                "--json",
                "--tls-verify=false",
                "--registry-timeout",
                "1",
                &image,
            ],
            vec![],
        ),
        (
            vec!["inspect", "--json", "--tls-verify=false", &image],
            vec![("DOCKER_DELTA_REGISTRY_TIMEOUT", "1")],
        ),
    ] {
        let o = dd_within(limit, &args, &vars);
        assert_eq!(
            o.status.code(),
            Some(2),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let e = json_error(&o);
        assert_eq!(e["kind"], "timeout", "{e}");
        let message = e["message"].as_str().unwrap();
        assert!(
            message.contains("--registry-timeout")
                && message.contains("DOCKER_DELTA_REGISTRY_TIMEOUT"),
            "{message}"
        );
        assert!(message.contains(&addr), "{message}");
    }
    for (args, vars, names) in [
        (
            vec![
                "inspect",
                "--json",
                "--registry-connect-timeout",
                "0",
                &image,
            ],
            vec![],
            "DOCKER_DELTA_REGISTRY_CONNECT_TIMEOUT",
        ),
        (
            vec!["inspect", "--json", &image],
            vec![("DOCKER_DELTA_REGISTRY_TIMEOUT", "soon")],
            "--registry-timeout",
        ),
    ] {
        let o = dd_within(limit, &args, &vars);
        assert_eq!(
            o.status.code(),
            Some(3),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let e = json_error(&o);
        assert_eq!(e["kind"], "invalid_option", "{e}");
        assert!(e["message"].as_str().unwrap().contains(names), "{e}");
    }
}
