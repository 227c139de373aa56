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
    let vars: HashMap<String, String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("DOCKER_DELTA_TEST_"))
        .collect();
    if vars.contains_key("DOCKER_DELTA_TEST_REGISTRY_PLAIN") {
        return Some(vars);
    }
    if std::env::var("DOCKER_DELTA_REQUIRE_REGISTRIES").as_deref() == Ok("1") {
        panic!("DOCKER_DELTA_TEST_REGISTRY_PLAIN is not set but DOCKER_DELTA_REQUIRE_REGISTRIES=1");
    }
    eprintln!(
        "skipping: the test registries are not set up (eval \"$(scripts/registries.sh env)\")"
    );
    None
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

/// A token issuer on `DOCKER_DELTA_TEST_TOKEN_LISTEN`: answers `GET /token` for the test
/// user with an ES256 JWT (key named by `kid`) granting what was asked; 401 otherwise.
struct Issuer {
    granted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    addr: String,
}

impl Issuer {
    fn start(env: &HashMap<String, String>) -> Issuer {
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
        let stop = Arc::new(AtomicBool::new(false));
        {
            let (granted, stop) = (granted.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(mut conn) = conn else { continue };
                    let mut req = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&req).to_string();
                    let line = text.lines().next().unwrap_or("").to_string();
                    let authorized = text.lines().any(|l| {
                        l.to_ascii_lowercase().starts_with("authorization:")
                            && l[14..].trim() == expected
                    });
                    let scope = line
                        .split(['?', '&', ' '])
                        .find_map(|p| p.strip_prefix("scope="))
                        .map(|s| s.replace("%3A", ":").replace("%2F", "/"))
                        .unwrap_or_default();
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
                        let body =
                            serde_json::json!({"token": token, "expires_in": 300}).to_string();
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                    };
                    let _ = conn.write_all(reply.as_bytes());
                }
            });
        }
        Issuer {
            granted,
            stop,
            addr,
        }
    }
}

impl Drop for Issuer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag and releases the port.
        let _ = TcpStream::connect(&self.addr);
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
    if let Ok(host) = std::env::var("DOCKER_DELTA_TEST_DOCKER26") {
        let cli =
            std::env::var("DOCKER_DELTA_TEST_DOCKER26_CLI").unwrap_or_else(|_| "docker".into());
        let o = std::process::Command::new(&cli)
            .args(["-H", &host, "load", "-i", out.to_str().unwrap()])
            .output()
            .unwrap();
        ok(&o);
        let o = std::process::Command::new(&cli)
            .args([
                "-H",
                &host,
                "image",
                "inspect",
                "--format",
                "{{.Id}}",
                "dd-test/app:2",
            ])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), want.to_string());
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
