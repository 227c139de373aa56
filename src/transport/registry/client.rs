//! A client of one registry: the OCI Distribution API v2 over ureq (rustls with `ring`),
//! with the authentication Docker and skopeo users have (anonymous, Basic, and the
//! `WWW-Authenticate: Bearer` token flow with tokens cached for their life).
//!
//! Redirects (blob storage behind a 307) are followed, but the registry's
//! `Authorization` is only sent to the registry's own origin (scheme, host and port).
//! Blobs are streamed and verified as they arrive ([`BlobReader`]); a connection lost
//! midway is resumed with `Range` from the bytes already hashed, a bounded number of
//! times.

use std::collections::HashMap;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use ureq::http::{Response, StatusCode};
use ureq::Body;

use super::auth::{AuthSources, Credential};
use crate::digest::{Digest, HashingWriter};
use crate::error::{Error, Result};

/// The manifest media types asked for, best first: OCI and Docker schema2 manifests and
/// their indexes (manifest lists).
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// Most bytes of a registry's error body or token answer read.
const SMALL_BODY: u64 = 1024 * 1024;

/// How many times a blob download is resumed after a lost connection.
pub const BLOB_RETRIES: u32 = 5;

/// How a registry is reached.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Where credentials are found.
    pub auth: AuthSources,
    /// Verify TLS (skopeo's `--tls-verify`, default true). When false, HTTPS is tried
    /// without verification, then plain HTTP, as skopeo does.
    pub tls_verify: bool,
    /// A directory of extra CA certificates (`*.crt`), skopeo's `--cert-dir`.
    pub cert_dir: Option<PathBuf>,
    /// Give up connecting after this long.
    pub connect_timeout: Duration,
    /// Give up when nothing arrives for this long (a long download that keeps moving is
    /// never cut).
    pub idle_timeout: Duration,
    /// The size of each `PATCH` of a chunked blob upload (16 MiB by default): smaller
    /// for proxies that limit request bodies, larger for fewer round trips.
    pub upload_chunk_size: u64,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            auth: AuthSources::default(),
            tls_verify: true,
            cert_dir: None,
            connect_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(300),
            upload_chunk_size: 16 << 20,
        }
    }
}

/// An authentication challenge (`WWW-Authenticate`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Challenge {
    None,
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// A client of one registry.
pub struct Registry {
    /// The registry as named in references (`host[:port]`, `docker.io`).
    name: String,
    /// `https://host` or `http://host` (Docker Hub's API host for `docker.io`).
    base: String,
    agent: ureq::Agent,
    auth: AuthSources,
    challenge: Mutex<Challenge>,
    /// Bearer tokens by scope, with the instant they stop being used.
    tokens: Mutex<HashMap<String, (Arc<String>, Instant)>>,
    /// The connect and idle timeouts, for messages.
    timeouts: (Duration, Duration),
    /// The size of each part of a chunked upload.
    chunk_size: u64,
    /// What was downloaded so far.
    transferred: Transferred,
}

/// Bytes downloaded from a registry, by kind: what a fleet update reports against a full
/// pull.
#[derive(Debug, Default)]
pub struct Transferred {
    manifests: std::sync::atomic::AtomicU64,
    configs: std::sync::atomic::AtomicU64,
    blobs: std::sync::atomic::AtomicU64,
}

/// A snapshot of [`Transferred`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct TransferCount {
    /// Manifests, indexes and referrers lists.
    pub manifests: u64,
    /// Configs (small blobs read whole).
    pub configs: u64,
    /// Other blobs (layers, packages), resumed parts counted once.
    pub blobs: u64,
}

impl Transferred {
    fn add(counter: &std::sync::atomic::AtomicU64, n: u64) {
        counter.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("name", &self.name)
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// The host to speak to for a registry name.
fn api_host(name: &str) -> &str {
    if name == "docker.io" {
        "registry-1.docker.io"
    } else {
        name
    }
}

impl Registry {
    /// Connects to the registry `name` (`host[:port]`): finds its scheme (HTTPS; plain HTTP
    /// too when `tls_verify` is off) and how it wants to be authenticated.
    pub fn connect(name: &str, options: &RegistryOptions) -> Result<Registry> {
        let host = api_host(name);
        let mut tried = Vec::new();
        let mut last_timeout = None;
        let schemes: &[&str] = if options.tls_verify {
            &["https"]
        } else {
            &["https", "http"]
        };
        for scheme in schemes {
            let agent = agent(name, options, *scheme == "https")?;
            let base = format!("{scheme}://{host}");
            let url = format!("{base}/v2/");
            tracing::debug!(registry = name, url = %url, "pinging");
            match agent.get(&url).call() {
                Ok(resp) => {
                    let challenge = challenge_of(&resp, name)?;
                    tracing::debug!(registry = name, url = %url, status = resp.status().as_u16(), challenge = ?challenge, "registry answered");
                    return Ok(Registry {
                        name: name.to_string(),
                        base,
                        agent,
                        auth: options.auth.clone(),
                        challenge: Mutex::new(challenge),
                        tokens: Mutex::new(HashMap::new()),
                        timeouts: (options.connect_timeout, options.idle_timeout),
                        chunk_size: options.upload_chunk_size,
                        transferred: Transferred::default(),
                    });
                }
                // A registry that accepts the connection but never answers: name the
                // setting that gave up, not just that it failed.
                Err(ureq::Error::Timeout(t)) => {
                    let timeouts = (options.connect_timeout, options.idle_timeout);
                    last_timeout = Some(timeout_error(&url, t, timeouts));
                    tried.push(format!("{url}: timed out"));
                }
                Err(e) => tried.push(format!("{url}: {e}")),
            }
        }
        if let Some(e) = last_timeout {
            return Err(e);
        }
        let hint = if options.tls_verify {
            " (a plain-HTTP registry needs --tls-verify=false)"
        } else {
            ""
        };
        Err(Error::RegistryUnavailable {
            registry: name.to_string(),
            reason: format!("{}{hint}", tried.join("; ")),
        })
    }

    /// The registry's name, as in references.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bytes downloaded from this registry so far (response bodies: manifests,
    /// configs, blobs).
    pub fn transferred(&self) -> TransferCount {
        use std::sync::atomic::Ordering::Relaxed;
        let t = &self.transferred;
        TransferCount {
            manifests: t.manifests.load(Relaxed),
            configs: t.configs.load(Relaxed),
            blobs: t.blobs.load(Relaxed),
        }
    }

    /// Counts `n` bytes of manifests read outside [`Registry::manifest`] (referrers lists).
    pub(super) fn count_manifest_bytes(&self, n: u64) {
        Transferred::add(&self.transferred.manifests, n);
    }

    /// The size of each part of a chunked upload ([`RegistryOptions::upload_chunk_size`]).
    pub fn chunk_size(&self) -> u64 {
        self.chunk_size
    }

    /// A `Location` the registry sent, made absolute (it may be a path on the registry).
    pub(super) fn absolute(&self, location: &str) -> String {
        if location.starts_with("https://") || location.starts_with("http://") {
            location.to_string()
        } else if location.starts_with('/') {
            format!("{}{location}", self.base)
        } else {
            format!("{}/{location}", self.base)
        }
    }

    /// Fetches the manifest (or index) `reference` (a tag or a digest) of `repository`:
    /// its bytes, media type and digest. A digest reference must match the bytes; a
    /// `Docker-Content-Digest` the registry sends must too.
    pub fn manifest(
        &self,
        repository: &str,
        reference: &str,
        max: u64,
    ) -> Result<(Vec<u8>, Option<String>, Digest)> {
        let what = format!("{}/{repository}:{reference}", self.name);
        let path = format!("/v2/{repository}/manifests/{reference}");
        let resp = self.send("GET", &path, repository, &[("Accept", MANIFEST_ACCEPT)])?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Err(Error::ImageNotFound {
                path: PathBuf::from(format!("docker://{}/{repository}", self.name)),
                wanted: reference.to_string(),
                available: vec![],
            });
        }
        let resp = self.check(resp, &format!("GET manifest {what}"), repository)?;
        let media_type = header(&resp, "content-type")
            .map(|m| m.split(';').next().unwrap_or_default().trim().to_string());
        let sent_digest = header(&resp, "docker-content-digest");
        let raw = read_bounded(resp, max, &what)?;
        Transferred::add(&self.transferred.manifests, raw.len() as u64);
        let digest = Digest::of(&raw);
        for (claimed, by) in [
            (Digest::parse(reference).ok(), "the reference"),
            (
                sent_digest.and_then(|d| Digest::parse(&d).ok()),
                "Docker-Content-Digest",
            ),
        ] {
            if let Some(c) = claimed {
                if c != digest {
                    return Err(Error::DigestMismatch {
                        what: format!("manifest {what} (digest from {by})"),
                        expected: c.to_string(),
                        found: digest.to_string(),
                    });
                }
            }
        }
        Ok((raw, media_type, digest))
    }

    /// Reads a small blob (a config) whole, verified.
    pub fn small_blob(
        &self,
        repository: &str,
        digest: &Digest,
        size: u64,
        max: u64,
    ) -> Result<Vec<u8>> {
        if size > max {
            return Err(Error::LimitExceeded {
                what: format!("blob {digest} in {}/{repository}", self.name),
                limit: "max JSON document size".into(),
                max,
                found: size,
                option: crate::transport::ENV_MAX_JSON_SIZE.into(),
            });
        }
        let mut out = Vec::with_capacity(size as usize);
        let mut r = self.blob(repository, digest, size)?;
        r.config = true;
        r.read_to_end(&mut out)
            .map_err(|e| Error::io(format!("blob {digest} in {}/{repository}", self.name), e))?;
        Ok(out)
    }

    /// Opens the blob `digest` (`size` bytes) of `repository` as a stream that verifies
    /// size and digest at its end and resumes a lost connection with `Range`.
    pub fn blob(&self, repository: &str, digest: &Digest, size: u64) -> Result<BlobReader<'_>> {
        let mut r = BlobReader {
            registry: self,
            repository: repository.to_string(),
            digest: digest.clone(),
            size,
            body: None,
            hasher: HashingWriter::new(io::sink()),
            offset: 0,
            retries: 0,
            config: false,
            verified: false,
        };
        r.body = Some(r.request(0)?);
        Ok(r)
    }

    /// Sends a request for `repository` with pull access, authenticated as the registry
    /// asks ([`Registry::request`]).
    fn send(
        &self,
        method: &str,
        path: &str,
        repository: &str,
        headers: &[(&str, &str)],
    ) -> Result<Response<Body>> {
        let scope = format!("repository:{repository}:pull");
        self.request(method, path, &scope, headers, &Payload::Empty)
    }

    /// Sends a request to `target` (a path on the registry, or an absolute URL such as an
    /// upload's `Location`) with the access `scope` asks (`repository:NAME:pull,push`,
    /// several separated by spaces), authenticated as the registry asks: once again with a
    /// fresh token (or the credentials) when it answers 401. The registry's
    /// `Authorization` goes only to the registry's own origin.
    pub(super) fn request(
        &self,
        method: &str,
        target: &str,
        scope: &str,
        headers: &[(&str, &str)],
        payload: &Payload<'_>,
    ) -> Result<Response<Body>> {
        let mut url = if target.starts_with("https://") || target.starts_with("http://") {
            target.to_string()
        } else {
            format!("{}{target}", self.base)
        };
        let mut fresh = false;
        let mut redirects = 0;
        loop {
            // The registry's own origin (scheme, host and port), not merely its host: a
            // redirect to another port of the same host is another service.
            let own = url
                .strip_prefix(&self.base)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
            let authorization = if own {
                self.authorization(scope, fresh)?
            } else {
                None
            };
            let mut req = ureq::http::Request::builder().method(method).uri(&url);
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            if let Some(a) = &authorization {
                req = req.header("Authorization", a.as_str());
            }
            let mut reader = payload.reader();
            let resp = match reader.as_mut() {
                None => req
                    .body(())
                    .map_err(|e| Error::Other(format!("{url}: {e}")))
                    .and_then(|r| self.agent.run(r).map_err(|e| self.unavailable(&url, &e))),
                Some(r) => req
                    .header("Content-Length", payload.len())
                    .body(ureq::SendBody::from_reader(r))
                    .map_err(|e| Error::Other(format!("{url}: {e}")))
                    .and_then(|r| self.agent.run(r).map_err(|e| self.unavailable(&url, &e))),
            }?;
            if resp.status() == StatusCode::UNAUTHORIZED && !fresh && own {
                // A new challenge (another realm or scope), or an expired token.
                let challenge = challenge_of(&resp, &self.name)?;
                if let Ok(mut c) = self.challenge.lock() {
                    *c = challenge;
                }
                fresh = true;
                continue;
            }
            // Redirects (a blob in object storage) are followed here, not by ureq, whose
            // rule keeps `Authorization` for the same host on any port: the next URL gets
            // the registry's credentials only if it is the registry's origin.
            if matches!(method, "GET" | "HEAD") && resp.status().is_redirection() {
                if let Some(location) = header(&resp, "location") {
                    if redirects >= MAX_REDIRECTS {
                        return Err(Error::Registry {
                            registry: self.name.clone(),
                            operation: format!("{method} {}", without_query(&url)),
                            status: resp.status().as_u16(),
                            message: format!("more than {MAX_REDIRECTS} redirects"),
                        });
                    }
                    let next = resolve_location(&url, &location);
                    // A signed URL's query is a credential of its own: not for logs.
                    tracing::debug!(registry = %self.name, from = without_query(&url), to = without_query(&next), status = resp.status().as_u16(), "following a redirect");
                    url = next;
                    redirects += 1;
                    continue;
                }
            }
            return Ok(resp);
        }
    }

    /// The `Authorization` header for `scope`, per the last challenge.
    fn authorization(&self, scope: &str, fresh: bool) -> Result<Option<String>> {
        let challenge = self
            .challenge
            .lock()
            .map(|c| c.clone())
            .unwrap_or(Challenge::None);
        match challenge {
            Challenge::None => Ok(None),
            Challenge::Basic => {
                let found = self.auth.find(&self.name, repository_of(scope))?;
                Ok(match found.credential {
                    Some(Credential::Basic { username, password }) => Some(format!(
                        "Basic {}",
                        base64::engine::general_purpose::STANDARD
                            .encode(format!("{username}:{}", password.expose()))
                    )),
                    _ => None,
                })
            }
            Challenge::Bearer { realm, service } => {
                if !fresh {
                    if let Ok(tokens) = self.tokens.lock() {
                        if let Some((t, until)) = tokens.get(scope) {
                            if Instant::now() < *until {
                                return Ok(Some(format!("Bearer {t}")));
                            }
                        }
                    }
                }
                let token = self.token(&realm, service.as_deref(), scope)?;
                Ok(Some(format!("Bearer {token}")))
            }
        }
    }

    /// Asks the token service `realm` for a token for `scope`, with the credentials found
    /// for this registry (anonymously without), and caches it for its life.
    fn token(&self, realm: &str, service: Option<&str>, scope: &str) -> Result<Arc<String>> {
        let found = self.auth.find(&self.name, repository_of(scope))?;
        tracing::debug!(registry = %self.name, realm, scope, credentials = ?found.from, "asking for a token");
        let resp = match &found.credential {
            Some(Credential::IdentityToken(t)) => {
                let mut form = vec![
                    ("grant_type", "refresh_token"),
                    ("client_id", "docker-delta"),
                    ("refresh_token", t.expose()),
                    ("scope", scope),
                ];
                if let Some(s) = service {
                    form.push(("service", s));
                }
                self.agent.post(realm).send_form(form)
            }
            other => {
                let mut req = self.agent.get(realm);
                for one in scope.split(' ') {
                    req = req.query("scope", one);
                }
                if let Some(s) = service {
                    req = req.query("service", s);
                }
                if let Some(Credential::Basic { username, password }) = other {
                    req = req.header(
                        "Authorization",
                        format!(
                            "Basic {}",
                            base64::engine::general_purpose::STANDARD
                                .encode(format!("{username}:{}", password.expose()))
                        ),
                    );
                }
                req.call()
            }
        }
        .map_err(|e| self.unavailable(realm, &e))?;
        let status = resp.status().as_u16();
        if status == 401 || status == 403 {
            return Err(Error::Unauthorized {
                registry: self.name.clone(),
                scope: scope.to_string(),
                status,
                credentials: found.from.unwrap_or_else(|| "none".into()),
                searched: found.searched,
            });
        }
        let resp = self.check(resp, &format!("token from {realm}"), repository_of(scope))?;
        #[derive(serde::Deserialize)]
        struct Answer {
            #[serde(default)]
            token: Option<String>,
            #[serde(default)]
            access_token: Option<String>,
            #[serde(default)]
            expires_in: Option<u64>,
        }
        let raw = read_bounded(resp, SMALL_BODY, realm)?;
        let answer: Answer = serde_json::from_slice(&raw).map_err(|e| Error::InvalidJson {
            file: format!("token from {realm}"),
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })?;
        let token = answer
            .token
            .or(answer.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Error::InvalidField {
                file: format!("token from {realm}"),
                field: "token".into(),
                reason: "missing or empty".into(),
            })?;
        let token = Arc::new(token);
        // The distribution spec's default life is 60 s; renew a little early.
        let life = Duration::from_secs(answer.expires_in.unwrap_or(60).max(60));
        let until = Instant::now() + life - Duration::from_secs(10);
        if let Ok(mut tokens) = self.tokens.lock() {
            tokens.insert(scope.to_string(), (token.clone(), until));
        }
        Ok(token)
    }

    /// Turns an error status into an error naming the registry and what was asked.
    fn check(
        &self,
        resp: Response<Body>,
        operation: &str,
        repository: &str,
    ) -> Result<Response<Body>> {
        self.check_scoped(resp, operation, &format!("repository:{repository}:pull"))
    }

    /// [`Registry::check`] for a request that asked for the access `scope`.
    pub(super) fn check_scoped(
        &self,
        resp: Response<Body>,
        operation: &str,
        scope: &str,
    ) -> Result<Response<Body>> {
        let status = resp.status().as_u16();
        if resp.status().is_success() {
            return Ok(resp);
        }
        if status == 401 || status == 403 {
            let found = self.auth.find(&self.name, repository_of(scope))?;
            return Err(Error::Unauthorized {
                registry: self.name.clone(),
                scope: scope.to_string(),
                status,
                credentials: found.from.unwrap_or_else(|| "none".into()),
                searched: found.searched,
            });
        }
        let body = read_bounded(resp, 64 * 1024, operation).unwrap_or_default();
        Err(Error::Registry {
            registry: self.name.clone(),
            operation: operation.to_string(),
            status,
            message: error_message(&body),
        })
    }

    fn unavailable(&self, url: &str, e: &ureq::Error) -> Error {
        // An upload's or a redirect's query may carry signed state: not for messages.
        let url = url.split('?').next().unwrap_or(url);
        match e {
            ureq::Error::Timeout(t) => timeout_error(url, *t, self.timeouts),
            e => Error::RegistryUnavailable {
                registry: self.name.clone(),
                reason: format!("{url}: {e}"),
            },
        }
    }
}

/// The body of a request: none, bytes, or a part of a file (read anew for each attempt).
pub(super) enum Payload<'a> {
    /// No body.
    Empty,
    /// These bytes.
    Bytes(&'a [u8]),
    /// `len` bytes of `file` from `offset`.
    File {
        /// The file.
        file: &'a std::fs::File,
        /// Where the part starts.
        offset: u64,
        /// How long it is.
        len: u64,
    },
}

impl Payload<'_> {
    fn len(&self) -> u64 {
        match self {
            Payload::Empty => 0,
            Payload::Bytes(b) => b.len() as u64,
            Payload::File { len, .. } => *len,
        }
    }

    /// A reader of the body from its start; `None` for no body.
    fn reader(&self) -> Option<Box<dyn Read + '_>> {
        match self {
            Payload::Empty => None,
            Payload::Bytes(b) => Some(Box::new(*b)),
            Payload::File { file, offset, len } => Some(Box::new(FilePart {
                file,
                pos: *offset,
                end: offset.saturating_add(*len),
            })),
        }
    }
}

/// A part of a file read with positioned reads (the file's offset is left alone).
struct FilePart<'a> {
    file: &'a std::fs::File,
    pos: u64,
    end: u64,
}

impl Read for FilePart<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let want = usize::try_from(self.end - self.pos)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the spooled blob ended early",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// The error for a timeout of a request to `url` (without its query): which of the
/// `(connect, idle)` timeouts ran out, and the option and variable that raise it.
fn timeout_error(url: &str, t: ureq::Timeout, timeouts: (Duration, Duration)) -> Error {
    use crate::timeouts::{ENV_REGISTRY_CONNECT_TIMEOUT, ENV_REGISTRY_TIMEOUT};
    let (operation, limit, option) = match t {
        ureq::Timeout::Connect | ureq::Timeout::Resolve => (
            "connect",
            timeouts.0,
            format!(
                "--registry-connect-timeout or {ENV_REGISTRY_CONNECT_TIMEOUT} \
                 (seconds; RegistryOptions::connect_timeout in the library)"
            ),
        ),
        _ => (
            "waiting for data (nothing arrived)",
            timeouts.1,
            format!(
                "--registry-timeout or {ENV_REGISTRY_TIMEOUT} \
                 (seconds; RegistryOptions::idle_timeout in the library)"
            ),
        ),
    };
    Error::Timeout {
        endpoint: without_query(url).to_string(),
        operation: operation.into(),
        seconds: limit.as_secs(),
        option,
    }
}

/// Most redirects followed for one request.
const MAX_REDIRECTS: u32 = 5;

/// A URL without its query (which may carry a signature).
fn without_query(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

/// A redirect's `Location` made absolute against the URL that answered it.
fn resolve_location(current: &str, location: &str) -> String {
    if location.starts_with("https://") || location.starts_with("http://") {
        return location.to_string();
    }
    let (scheme, rest) = current.split_once("://").unwrap_or(("https", current));
    if let Some(authority_and_path) = location.strip_prefix("//") {
        return format!("{scheme}://{authority_and_path}");
    }
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    if location.starts_with('/') {
        return format!("{scheme}://{authority}{location}");
    }
    let path = without_query(rest);
    let dir = path.rfind('/').map_or(path, |i| &path[..=i]);
    let dir = if dir.contains('/') {
        dir.to_string()
    } else {
        format!("{dir}/")
    };
    format!("{scheme}://{dir}{location}")
}

/// The repository of a `repository:NAME:ACTIONS` scope (the first, of several).
fn repository_of(scope: &str) -> &str {
    let scope = scope.split(' ').next().unwrap_or(scope);
    scope
        .strip_prefix("repository:")
        .and_then(|s| s.rsplit_once(':').map(|(r, _)| r))
        .unwrap_or(scope)
}

/// The agent for one registry: no automatic error statuses, no redirects followed (see
/// [`Registry::request`]), the TLS roots the options ask for.
fn agent(name: &str, options: &RegistryOptions, https: bool) -> Result<ureq::Agent> {
    let mut tls = ureq::tls::TlsConfig::builder();
    if https {
        if !options.tls_verify {
            tls = tls.disable_verification(true);
        } else {
            let mut roots = Vec::new();
            for file in [
                "/etc/ssl/certs/ca-certificates.crt",
                "/etc/pki/tls/certs/ca-bundle.crt",
            ] {
                if let Ok(pem) = std::fs::read(file) {
                    roots.extend(certificates(&pem));
                    break;
                }
            }
            if let Some(dir) = &options.cert_dir {
                let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
                for entry in entries.flatten() {
                    let p = entry.path();
                    if p.extension().is_some_and(|x| x == "crt") {
                        let pem = std::fs::read(&p).map_err(|e| Error::io(&p, e))?;
                        roots.extend(certificates(&pem));
                    }
                }
            }
            if roots.is_empty() {
                tracing::debug!(
                    registry = name,
                    "no system CA bundle found; using the built-in roots"
                );
            } else {
                tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&roots));
            }
        }
    }
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        // Registry requests follow redirects themselves (`Registry::request`), to keep the
        // registry's `Authorization` to its own origin.
        .max_redirects(0)
        .user_agent(format!("docker-delta/{}", crate::VERSION))
        .timeout_connect(Some(options.connect_timeout))
        .timeout_per_read(Some(options.idle_timeout))
        .timeout_per_write(Some(options.idle_timeout))
        .tls_config(tls.build())
        .build();
    Ok(config.into())
}

/// The certificates of a PEM bundle (other items are skipped).
fn certificates(pem: &[u8]) -> Vec<ureq::tls::Certificate<'static>> {
    ureq::tls::parse_pem(pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect()
}

pub(super) fn header(resp: &Response<Body>, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Reads a body of at most `max` bytes.
pub(super) fn read_bounded(resp: Response<Body>, max: u64, what: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let n = resp
        .into_body()
        .into_reader()
        .take(max.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| Error::io(what, e))?;
    if n as u64 > max {
        return Err(Error::LimitExceeded {
            what: what.to_string(),
            limit: "max JSON document size".into(),
            max,
            found: n as u64,
            option: crate::transport::ENV_MAX_JSON_SIZE.into(),
        });
    }
    Ok(out)
}

/// The message of a distribution error body (`{"errors":[{"code","message"}]}`), else
/// its first line.
fn error_message(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<Item>,
    }
    #[derive(serde::Deserialize)]
    struct Item {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    if let Ok(e) = serde_json::from_slice::<Errors>(body) {
        let parts: Vec<String> = e
            .errors
            .iter()
            .map(|i| format!("{}: {}", i.code, i.message))
            .collect();
        if !parts.is_empty() {
            return parts.join("; ");
        }
    }
    let text = String::from_utf8_lossy(body);
    text.lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(200)
        .collect()
}

/// Parses a `WWW-Authenticate` answer to `GET /v2/`.
fn challenge_of(resp: &Response<Body>, name: &str) -> Result<Challenge> {
    if resp.status() != StatusCode::UNAUTHORIZED {
        return Ok(Challenge::None);
    }
    let Some(value) = header(resp, "www-authenticate") else {
        return Err(Error::Registry {
            registry: name.to_string(),
            operation: "GET /v2/".into(),
            status: 401,
            message: "refused with no WWW-Authenticate challenge".into(),
        });
    };
    parse_challenge(&value).ok_or_else(|| Error::Registry {
        registry: name.to_string(),
        operation: "GET /v2/".into(),
        status: 401,
        message: format!("an authentication challenge this client does not speak: {value}"),
    })
}

/// `Bearer realm="...",service="...",scope="..."` or `Basic realm="..."`.
fn parse_challenge(value: &str) -> Option<Challenge> {
    let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    let params = parse_params(rest);
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => Some(Challenge::Bearer {
            realm: params.get("realm")?.clone(),
            service: params.get("service").cloned(),
        }),
        _ => None,
    }
}

/// `key="value", key=value` pairs (quoted strings may hold commas and `\"`).
fn parse_params(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            value.push(n);
                        }
                    }
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek() {
                if *c == ',' {
                    break;
                }
                value.push(*c);
                chars.next();
            }
        }
        out.insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    out
}

/// A blob being downloaded: verified at its end, resumed after a lost connection.
pub struct BlobReader<'a> {
    registry: &'a Registry,
    repository: String,
    digest: Digest,
    size: u64,
    body: Option<ureq::BodyReader<'static>>,
    hasher: HashingWriter<io::Sink>,
    offset: u64,
    retries: u32,
    /// Counted as a config, not a blob ([`Registry::transferred`]).
    config: bool,
    /// Whether the digest was checked (when the last byte arrived).
    verified: bool,
}

impl BlobReader<'_> {
    fn what(&self) -> String {
        format!(
            "blob {} in {}/{}",
            self.digest,
            self.registry.name(),
            self.repository
        )
    }

    /// Starts (or resumes at `offset`) the download.
    fn request(&self, offset: u64) -> Result<ureq::BodyReader<'static>> {
        let path = format!("/v2/{}/blobs/{}", self.repository, self.digest);
        let range = format!("bytes={offset}-");
        let headers: &[(&str, &str)] = if offset > 0 {
            &[("Range", range.as_str())]
        } else {
            &[]
        };
        let resp = self
            .registry
            .send("GET", &path, &self.repository, headers)?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Err(Error::MissingFile {
                container: PathBuf::from(format!(
                    "docker://{}/{}",
                    self.registry.name(),
                    self.repository
                )),
                what: "blob".into(),
                name: self.digest.to_string(),
            });
        }
        let partial = resp.status() == StatusCode::PARTIAL_CONTENT;
        let resp = self
            .registry
            .check(resp, &format!("GET {}", self.what()), &self.repository)?;
        let mut body = resp.into_body().into_reader();
        if offset > 0 && !partial {
            // The server ignored Range: skip what was already read.
            io::copy(&mut (&mut body).take(offset), &mut io::sink())
                .map_err(|e| Error::io(self.what(), e))?;
        }
        Ok(body)
    }

    fn fail(&self, e: Error) -> io::Error {
        e.into_io()
    }

    /// Checks the digest of everything read (all `size` bytes).
    fn verify(&mut self) -> io::Result<()> {
        let hasher = std::mem::replace(&mut self.hasher, HashingWriter::new(io::sink()));
        let (found, _, _) = hasher.finish();
        self.verified = true;
        if found != self.digest {
            return Err(self.fail(Error::DigestMismatch {
                what: self.what(),
                expected: self.digest.to_string(),
                found: found.to_string(),
            }));
        }
        Ok(())
    }
}

impl Read for BlobReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let Some(body) = self.body.as_mut() else {
                return Ok(0);
            };
            match body.read(buf) {
                Ok(0) => {
                    self.body = None;
                    if self.offset != self.size {
                        return Err(self.fail(Error::SizeMismatch {
                            what: self.what(),
                            expected: self.size,
                            found: self.offset,
                        }));
                    }
                    if !self.verified {
                        // An empty blob: no byte arrived to check it.
                        self.verify()?;
                    }
                    return Ok(0);
                }
                Ok(n) => {
                    if self.offset + n as u64 > self.size {
                        return Err(self.fail(Error::SizeMismatch {
                            what: self.what(),
                            expected: self.size,
                            found: self.offset + n as u64,
                        }));
                    }
                    io::Write::write_all(&mut self.hasher, &buf[..n])?;
                    self.offset += n as u64;
                    let t = &self.registry.transferred;
                    Transferred::add(if self.config { &t.configs } else { &t.blobs }, n as u64);
                    if self.offset == self.size {
                        // Check the digest before the last bytes are handed over: a
                        // decompressor reading them would otherwise report a damaged
                        // trailer (a gzip checksum) instead of the blob's wrong digest.
                        self.verify()?;
                    }
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    if self.retries >= BLOB_RETRIES {
                        return Err(self.fail(Error::Registry {
                            registry: self.registry.name().to_string(),
                            operation: format!("GET {}", self.what()),
                            status: 0,
                            message: format!(
                                "the connection failed {} times, the last at byte {} of {}: {e}",
                                self.retries + 1,
                                self.offset,
                                self.size
                            ),
                        }));
                    }
                    self.retries += 1;
                    tracing::info!(blob = %self.digest, offset = self.offset, attempt = self.retries, error = %e, "resuming a blob download");
                    std::thread::sleep(Duration::from_millis(200 * u64::from(self.retries)));
                    self.body = Some(self.request(self.offset).map_err(|e| self.fail(e))?);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_are_parsed_as_registries_send_them() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="docker-delta-test""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge(r#"bearer realm="http://h/t?a=1,b=2", service=svc"#),
            Some(Challenge::Bearer {
                realm: "http://h/t?a=1,b=2".into(),
                service: Some("svc".into()),
            })
        );
        assert_eq!(parse_challenge("Bearer service=x"), None, "no realm");
        assert_eq!(parse_challenge("Negotiate abc"), None);
        assert_eq!(repository_of("repository:a/b:pull"), "a/b");
        let here = "http://r:5000/v2/a/blobs/sha256:1?x=1";
        for (location, want) in [
            ("https://s3.example/b?sig=2", "https://s3.example/b?sig=2"),
            ("//cdn.example/b", "http://cdn.example/b"),
            ("/other/b", "http://r:5000/other/b"),
            ("b2", "http://r:5000/v2/a/blobs/b2"),
        ] {
            assert_eq!(resolve_location(here, location), want, "{location}");
        }
        assert_eq!(resolve_location("http://r:5000", "b"), "http://r:5000/b");
        assert_eq!(
            error_message(
                br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#
            ),
            "MANIFEST_UNKNOWN: manifest unknown"
        );
    }
}
