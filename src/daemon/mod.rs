//! A small blocking client for the Docker Engine API.
//!
//! It speaks HTTP/1.1 through ureq, the crate's one HTTP stack, over the daemon's Unix
//! socket (a ureq transport of our own, in `unix.rs`) or plain TCP (ureq's), one connection per
//! request, with no async runtime. Image archives are streamed in both directions:
//! [`DockerClient::export_image`] copies `docker save` output to any writer, and
//! [`DockerClient::load_image`] sends any reader as the `docker load` body, so whole
//! images never sit in memory.
//!
//! The API version is negotiated on first use: the client asks the daemon for its
//! `ApiVersion` (`GET /version`) and uses the lower of that and [`MAX_API_VERSION`], so it
//! works with Docker 20.10 (API 1.41) as well as Docker 26 (API 1.45) and later.
//!
//! Note on image IDs: with the classic image store an image's `Id` is the digest of its
//! config (what this crate calls the image ID). With the containerd image store (opt-in
//! in Docker 24-28, default for new installs of Docker 29) `Id` is the digest of the
//! manifest or index instead.

mod guard;
mod name;
mod unix;
mod url;

pub use name::ImageName;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::timeouts::{TimeoutKind, Timeouts};
use guard::{BodySource, CallState, GuardConnector};
use ureq::unversioned::transport::{Connector, TcpConnector};

/// The endpoint used when `DOCKER_HOST` is not set.
pub const DEFAULT_ENDPOINT: &str = "unix:///var/run/docker.sock";

/// The highest Engine API version this client asks for (Docker 26). Older daemons are
/// spoken to at their own version.
pub const MAX_API_VERSION: (u32, u32) = (1, 45);

/// The lowest Engine API version this client supports (Docker 1.12).
pub const MIN_API_VERSION: (u32, u32) = (1, 24);

/// Port used for `tcp://host` without a port (the daemon's plain-HTTP port).
const DEFAULT_TCP_PORT: u16 = 2375;
/// Largest `version` response we read (a real one is a few hundred bytes).
const MAX_SMALL_BODY: u64 = 1024 * 1024;
/// Largest image inspect document we read: it is kept whole (as [`ImageInspect::raw`]),
/// and a JSON tree takes up to about 16 times its text. A real one is a few KiB (tens with
/// a thousand layers).
const MAX_INSPECT_BODY: u64 = 4 * 1024 * 1024;
/// Largest image list we read (about 500 bytes an image: some 30 000 images). Only the IDs
/// and tags are kept.
const MAX_LIST_BODY: u64 = 16 * 1024 * 1024;
/// Largest message of a `docker load` reply stream (a real one is a line of text, or a
/// progress report of a few hundred bytes).
pub const MAX_LOAD_MESSAGE: usize = 1024 * 1024;
/// How many of the last message texts of a `docker load` reply [`LoadResult::messages`]
/// keeps, and how long each may be.
const LOAD_MESSAGES_KEPT: usize = 64;
const LOAD_MESSAGE_TEXT: usize = 4096;
/// Most names and IDs of loaded images [`LoadResult`] keeps (one load loads one image).
const LOAD_RESULTS_KEPT: usize = 256;
/// Largest error body we read.
const MAX_ERROR_BODY: u64 = 64 * 1024;
/// How much of the end of an export stream we keep to look for an in-band error.
const EXPORT_TAIL: usize = 8 * 1024;
/// Buffer size for streaming bodies.
const COPY_BUF: usize = 64 * 1024;

/// A request body.
enum RequestBody<'a> {
    /// No body.
    Empty,
    /// A body of exactly this many bytes, sent with `Content-Length`.
    Sized(&'a mut dyn Read, u64),
    /// A body of unknown length, sent with `Transfer-Encoding: chunked`.
    Chunked(&'a mut dyn Read),
}

/// Where the daemon listens.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Unix(PathBuf),
    Tcp { host: String, port: u16 },
}

/// What `GET /version` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    /// The engine version, e.g. `20.10.24+dfsg1`.
    pub version: String,
    /// The highest API version the daemon speaks, e.g. `1.41`.
    pub api_version: String,
    /// The lowest API version the daemon accepts, if it says.
    pub min_api_version: Option<String>,
    /// The daemon's operating system, e.g. `linux`.
    pub os: String,
    /// The daemon's architecture, e.g. `amd64`.
    pub arch: String,
}

/// What `GET /images/{name}/json` reports, with the fields this crate uses extracted.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageInspect {
    /// The image `Id`: the config digest with the classic image store (see the module
    /// documentation for the containerd image store).
    pub id: Digest,
    /// The image's tags (`RepoTags`), e.g. `["app:v1"]`.
    pub repo_tags: Vec<String>,
    /// The image's registry digests (`RepoDigests`).
    pub repo_digests: Vec<String>,
    /// `Os`, e.g. `linux`.
    pub os: String,
    /// `Architecture`, e.g. `amd64`.
    pub architecture: String,
    /// `Variant`, e.g. `v7`, if any.
    pub variant: Option<String>,
    /// `RootFS.Layers`: the layers' diff_ids, bottom first.
    pub rootfs_layers: Vec<Digest>,
    /// The whole inspect document.
    pub raw: Value,
}

/// One image of [`DockerClient::list_images`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSummary {
    /// The image `Id` (config digest with the classic image store, manifest or index
    /// digest with the containerd image store).
    pub id: Digest,
    /// Its tags.
    pub repo_tags: Vec<String>,
}

/// What `POST /images/load` reported.
///
/// The reply is read message by message and only this is kept, so a daemon cannot make it
/// large: at most 256 names and 256 IDs, and the last 64 message texts, each cut at 4 KiB.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadResult {
    /// Names reported as `Loaded image: NAME` (archives with tags).
    pub names: Vec<String>,
    /// IDs reported as `Loaded image ID: sha256:...` (archives without tags).
    pub ids: Vec<Digest>,
    /// The texts (`stream` or `status`) of the last messages of the response stream,
    /// trimmed, in order; progress reports are left out.
    pub messages: Vec<String>,
}

/// A blocking Docker Engine API client. Cheap to create; opens one connection per request.
#[derive(Debug)]
pub struct DockerClient {
    endpoint: String,
    target: Target,
    timeouts: Timeouts,
    api_prefix: OnceLock<String>,
}

impl DockerClient {
    /// A client for the daemon named by `DOCKER_HOST` (default [`DEFAULT_ENDPOINT`]).
    ///
    /// `DOCKER_API_VERSION`, if set, pins the API version instead of negotiating it.
    /// A `tcp://` endpoint with `DOCKER_TLS_VERIFY` set is refused: TLS is not supported.
    /// The timeouts are [`Timeouts::from_env`].
    pub fn from_env() -> Result<DockerClient> {
        DockerClient::from_env_with(Timeouts::from_env()?)
    }

    /// As [`DockerClient::from_env`], with `timeouts` instead of the environment's (whose
    /// variables are then not read: a caller's options override them).
    pub fn from_env_with(timeouts: Timeouts) -> Result<DockerClient> {
        let host = std::env::var("DOCKER_HOST").unwrap_or_default();
        let endpoint = if host.trim().is_empty() {
            DEFAULT_ENDPOINT.to_string()
        } else {
            host.trim().to_string()
        };
        let client = DockerClient::new(&endpoint)?.with_timeouts(timeouts);
        let tls = std::env::var("DOCKER_TLS_VERIFY").unwrap_or_default();
        if matches!(client.target, Target::Tcp { .. }) && !tls.is_empty() {
            return Err(Error::DaemonUnavailable {
                endpoint,
                reason: "DOCKER_TLS_VERIFY is set but TLS connections are not supported; \
                         use the daemon's Unix socket (e.g. through an SSH tunnel)"
                    .into(),
            });
        }
        match std::env::var("DOCKER_API_VERSION") {
            Ok(v) if !v.trim().is_empty() => client.with_api_version(v.trim()),
            _ => Ok(client),
        }
    }

    /// A client for `endpoint`: `unix:///path/to/docker.sock`, `/path/to/docker.sock`, or
    /// `tcp://host[:port]` (plain HTTP, port 2375 by default). `https://`, `ssh://` and
    /// `npipe://` endpoints are refused with [`Error::DaemonUnavailable`].
    ///
    /// No connection is made until the first request. The timeouts are
    /// [`Timeouts::DEFAULT`] (see [`DockerClient::with_timeouts`]).
    pub fn new(endpoint: &str) -> Result<DockerClient> {
        Ok(DockerClient {
            endpoint: endpoint.to_string(),
            target: parse_endpoint(endpoint)?,
            timeouts: Timeouts::DEFAULT,
            api_prefix: OnceLock::new(),
        })
    }

    /// Sets the timeouts of every request: connecting, the longest silence, and the whole
    /// of a small request (everything but [`export_image`](Self::export_image) and
    /// [`load_image`](Self::load_image), which only the silence bounds). When one runs
    /// out, the request fails with [`Error::Timeout`].
    pub fn with_timeouts(mut self, timeouts: Timeouts) -> DockerClient {
        self.timeouts = timeouts;
        self
    }

    /// The timeouts in use.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// Uses API version `version` (`1.41` or `v1.41`) instead of negotiating one.
    pub fn with_api_version(self, version: &str) -> Result<DockerClient> {
        let parsed = parse_api_version(version.trim_start_matches('v')).ok_or_else(|| {
            Error::DaemonUnavailable {
                endpoint: self.endpoint.clone(),
                reason: format!("invalid API version {version:?}; expected e.g. 1.41"),
            }
        })?;
        let client = DockerClient {
            api_prefix: OnceLock::new(),
            ..self
        };
        let _ = client
            .api_prefix
            .set(format!("/v{}.{}", parsed.0, parsed.1));
        Ok(client)
    }

    /// The endpoint as given.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The API version in use (negotiating it if not done yet), e.g. `1.41`.
    pub fn api_version(&self) -> Result<String> {
        Ok(self.api()?.trim_start_matches("/v").to_string())
    }

    /// Checks that the daemon answers (`GET /_ping`).
    pub fn ping(&self) -> Result<()> {
        let resp = self.send("GET", "/_ping", None, RequestBody::Empty, "ping", true)?;
        self.check(resp, "ping").map(drop)
    }

    /// The daemon's version (`GET /version`).
    pub fn version(&self) -> Result<VersionInfo> {
        let op = "version";
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Version {
            version: Option<String>,
            api_version: Option<String>,
            #[serde(rename = "MinAPIVersion")]
            min_api_version: Option<String>,
            os: Option<String>,
            arch: Option<String>,
        }
        let resp = self.send("GET", "/version", None, RequestBody::Empty, op, true)?;
        let v: Version = self.json_body(self.check(resp, op)?, op, MAX_SMALL_BODY)?;
        let api_version = v.api_version.ok_or_else(|| Error::Daemon {
            operation: op.into(),
            status: 200,
            message: "the response has no ApiVersion".into(),
        })?;
        Ok(VersionInfo {
            version: v.version.unwrap_or_default(),
            api_version,
            min_api_version: v.min_api_version,
            os: v.os.unwrap_or_default(),
            arch: v.arch.unwrap_or_default(),
        })
    }

    /// Inspects an image by name (`name:tag`), ID (`sha256:...`) or short ID. `None` if the
    /// daemon has no such image.
    pub fn inspect_image(&self, name: &str) -> Result<Option<ImageInspect>> {
        let op = format!("inspect image {name}");
        check_name_arg(name)?;
        let path = format!("{}/images/{}/json", self.api()?, url::encode_path(name));
        let resp = self.send("GET", &path, None, RequestBody::Empty, &op, true)?;
        if resp.status == 404 {
            return Ok(None);
        }
        let v = self.json_body(self.check(resp, &op)?, &op, MAX_INSPECT_BODY)?;
        parse_inspect(v).map(Some)
    }

    /// Lists the daemon's images (`GET /images/json`, like `docker images`; intermediate
    /// images of the legacy builder are left out).
    pub fn list_images(&self) -> Result<Vec<ImageSummary>> {
        let op = "list images";
        // Only the fields used are built; the others are skipped as they are parsed.
        #[derive(Deserialize)]
        struct Item {
            #[serde(rename = "Id")]
            id: String,
            #[serde(rename = "RepoTags", default)]
            repo_tags: Option<Vec<String>>,
        }
        let path = format!("{}/images/json", self.api()?);
        let resp = self.send("GET", &path, None, RequestBody::Empty, op, true)?;
        let items: Vec<Item> = self.json_body(self.check(resp, op)?, op, MAX_LIST_BODY)?;
        items
            .into_iter()
            .map(|item| {
                Ok(ImageSummary {
                    id: Digest::parse_in(&item.id, Some("image list Id"))?,
                    repo_tags: item
                        .repo_tags
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|t| t != "<none>:<none>")
                        .collect(),
                })
            })
            .collect()
    }

    /// Streams `docker save NAME` (`GET /images/get?names=NAME`) into `dest`; returns the
    /// number of bytes written. `name` may be `name:tag` or an image ID.
    ///
    /// The daemon reports errors that happen mid-export inside the stream; they are
    /// detected at the end and returned as [`Error::Daemon`] (the bytes already written to
    /// `dest` are then garbage).
    pub fn export_image(&self, name: &str, dest: &mut impl Write) -> Result<u64> {
        let op = format!("export image {name}");
        check_name_arg(name)?;
        let path = url::with_query(&format!("{}/images/get", self.api()?), &[("names", name)]);
        let resp = self.send("GET", &path, None, RequestBody::Empty, &op, false)?;
        let mut resp = self.check(resp, &op)?;
        let mut buf = vec![0u8; COPY_BUF];
        let mut tail: Vec<u8> = Vec::with_capacity(2 * EXPORT_TAIL);
        let mut total = 0u64;
        loop {
            let n = match resp.body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if guard::is_eintr(&e) => continue,
                Err(e) => return Err(self.connection_error(&op, "reading the image stream", &e)),
            };
            dest.write_all(&buf[..n])
                .map_err(|e| Error::io(format!("<{op} destination>"), e))?;
            total += n as u64;
            tail.extend_from_slice(&buf[..n]);
            if tail.len() > 2 * EXPORT_TAIL {
                tail.drain(..tail.len() - EXPORT_TAIL);
            }
        }
        dest.flush()
            .map_err(|e| Error::io(format!("<{op} destination>"), e))?;
        if let Some(message) = trailing_stream_error(&tail) {
            return Err(Error::Daemon {
                operation: op,
                status: 0,
                message,
            });
        }
        if total == 0 || total % 512 != 0 {
            return Err(Error::Daemon {
                operation: op,
                status: 0,
                message: format!(
                    "the daemon sent {total} bytes, which is not a tar archive (not a whole number of 512-byte blocks)"
                ),
            });
        }
        Ok(total)
    }

    /// Loads an image archive (`docker load`, `POST /images/load?quiet=0`), streaming `src`
    /// as the request body: with `Content-Length` if `len` is given (then `src` must hold
    /// exactly `len` bytes), chunked otherwise.
    ///
    /// Errors the daemon reports inside the response stream become [`Error::Daemon`] with
    /// status 0. Errors from `src` itself are returned as they are (our own errors carried
    /// in an `io::Error` are unwrapped).
    pub fn load_image(&self, src: impl Read, len: Option<u64>) -> Result<LoadResult> {
        let op = "load image";
        let mut src = src;
        let body = match len {
            Some(n) => RequestBody::Sized(&mut src, n),
            None => RequestBody::Chunked(&mut src),
        };
        // Not quiet: with the classic image store the daemon then reports its progress
        // while it registers each layer, which keeps the idle timeout from cutting a long
        // load (quiet, it says nothing until the end).
        let path = format!("{}/images/load?quiet=0", self.api()?);
        let resp = self.send("POST", &path, Some("application/x-tar"), body, op, false)?;
        let resp = self.check(resp, op)?;
        let mut reader = BufReader::with_capacity(COPY_BUF, resp.body);
        let mut result = LoadResult::default();
        let mut line = Vec::new();
        loop {
            let more = read_message(&mut reader, &mut line, MAX_LOAD_MESSAGE)
                .map_err(|e| self.connection_error(op, "reading the load reply", &e))?;
            let Some(complete) = more else { break };
            if !complete {
                return Err(Error::Daemon {
                    operation: op.into(),
                    status: 0,
                    message: format!(
                        "a message of the daemon's reply is longer than {MAX_LOAD_MESSAGE} bytes \
                         (the largest accepted); the daemon is not answering as Docker does"
                    ),
                });
            }
            // Docker ends each message with a newline; values written back to back on one
            // line are read one after the other too. Only the fields used are built.
            let stream = serde_json::Deserializer::from_slice(&line).into_iter::<LoadMessage>();
            for msg in stream {
                let msg = msg.map_err(|e| Error::InvalidJson {
                    file: format!("{op} response from {}", self.endpoint),
                    line: e.line(),
                    column: e.column(),
                    message: e.to_string(),
                })?;
                msg.record(&mut result).map_err(|message| Error::Daemon {
                    operation: op.into(),
                    status: 0,
                    message,
                })?;
            }
        }
        Ok(result)
    }

    /// Tags `source` (a name or image ID) as `repo:tag` (`POST /images/{source}/tag`).
    /// An empty `tag` means `latest`.
    pub fn tag_image(&self, source: &str, repo: &str, tag: &str) -> Result<()> {
        let target = ImageName::new(repo, tag)?;
        check_name_arg(source)?;
        let op = format!("tag {source} as {target}");
        let path = url::with_query(
            &format!("{}/images/{}/tag", self.api()?, url::encode_path(source)),
            &[("repo", target.repo()), ("tag", target.tag())],
        );
        let resp = self.send("POST", &path, None, RequestBody::Empty, &op, true)?;
        self.check(resp, &op).map(drop)
    }

    /// Tags the image `image_id` as `target` (`name[:tag]`), then inspects `target` and
    /// checks that it resolves to that image. Returns the normalised name.
    ///
    /// `aliases` are other IDs the same image may have in the daemon: Docker's containerd
    /// image store names an image by its manifest digest, not by its config digest
    /// (`image_id`), so pass the manifest digest of the loaded archive there. The image is
    /// tagged through the first of `image_id` and `aliases` the daemon knows, and the tag
    /// must resolve to one of them.
    ///
    /// Every failure (invalid name, daemon error, tag resolving elsewhere) is returned as
    /// [`Error::TagFailed`], whose message shows the `docker tag` command to run by hand.
    pub fn tag_and_verify(
        &self,
        image_id: &Digest,
        aliases: &[Digest],
        target: &str,
    ) -> Result<ImageName> {
        let failed = |source: &Digest, tag: String, reason: String| Error::TagFailed {
            image_id: source.to_string(),
            tag,
            reason,
        };
        let name = ImageName::parse(target)
            .map_err(|e| failed(image_id, target.to_string(), e.to_string()))?;
        let shown = name.to_string();
        let ids: Vec<&Digest> = std::iter::once(image_id).chain(aliases).collect();
        // The ID the daemon knows the image by: the config digest (classic store) or the
        // manifest digest (containerd store).
        let mut source = image_id;
        for id in &ids {
            match self.inspect_image(&id.to_string()) {
                Ok(Some(_)) => {
                    source = id;
                    break;
                }
                Ok(None) => continue,
                Err(e) => return Err(failed(id, shown.clone(), format!("finding the image: {e}"))),
            }
        }
        self.tag_image(&source.to_string(), name.repo(), name.tag())
            .map_err(|e| failed(source, shown.clone(), e.to_string()))?;
        match self.inspect_image(&shown) {
            Ok(Some(info)) if ids.contains(&&info.id) => Ok(name),
            Ok(Some(info)) => Err(failed(
                source,
                shown.clone(),
                format!("after tagging, {shown} resolves to {} instead", info.id),
            )),
            Ok(None) => Err(failed(
                source,
                shown.clone(),
                format!("after tagging, the daemon has no image {shown}"),
            )),
            Err(e) => Err(failed(source, shown, format!("verifying the tag: {e}"))),
        }
    }

    // ----- plumbing -----

    /// The `/vX.Y` path prefix, negotiated on first use.
    fn api(&self) -> Result<&str> {
        if let Some(p) = self.api_prefix.get() {
            return Ok(p);
        }
        let info = self.version()?;
        let server = parse_api_version(&info.api_version).ok_or_else(|| Error::Daemon {
            operation: "version".into(),
            status: 200,
            message: format!("unparseable ApiVersion {:?}", info.api_version),
        })?;
        if server < MIN_API_VERSION {
            return Err(Error::DaemonUnavailable {
                endpoint: self.endpoint.clone(),
                reason: format!(
                    "the daemon (Docker {}) speaks API {}, older than the minimum supported {}.{}",
                    info.version, info.api_version, MIN_API_VERSION.0, MIN_API_VERSION.1
                ),
            });
        }
        let chosen = server.min(MAX_API_VERSION);
        Ok(self
            .api_prefix
            .get_or_init(|| format!("/v{}.{}", chosen.0, chosen.1)))
    }

    /// A ureq agent for one request: its transport (the Unix socket, or ureq's TCP
    /// connector) wrapped in a [`guard::Guard`] that reports to `state`. A `small` request
    /// must be over, response read, within [`Timeouts::request`]; every read and write
    /// waits at most [`Timeouts::idle`].
    fn agent(&self, small: bool, state: &Arc<CallState>) -> ureq::Agent {
        let t = self.timeouts;
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            // The daemon is spoken to directly: no HTTP_PROXY from the environment.
            .proxy(None)
            // One connection per request: nothing is pooled.
            .max_idle_connections(0)
            .max_idle_connections_per_host(0)
            .user_agent(format!("docker-delta/{}", crate::VERSION))
            .timeout_connect(Some(t.connect))
            .timeout_per_read(Some(t.idle))
            .timeout_per_write(Some(t.idle))
            .timeout_global(small.then_some(t.request))
            .build();
        let guard = GuardConnector(state.clone());
        match &self.target {
            Target::Unix(path) => ureq::Agent::with_parts(
                config,
                unix::UnixConnector::new(path).chain(guard),
                unix::NoResolver,
            ),
            Target::Tcp { .. } => ureq::Agent::with_parts(
                config,
                TcpConnector::default().chain(guard),
                ureq::unversioned::resolver::DefaultResolver::default(),
            ),
        }
    }

    /// The request URI's authority (it fills the `Host` header).
    fn authority(&self) -> String {
        match &self.target {
            Target::Unix(_) => "docker".to_string(),
            Target::Tcp { host, port } if host.contains(':') => format!("[{host}]:{port}"),
            Target::Tcp { host, port } => format!("{host}:{port}"),
        }
    }

    /// Sends one request and reads the response head (see [`DockerClient::agent`] for
    /// `small`).
    fn send(
        &self,
        method: &str,
        target: &str,
        content_type: Option<&str>,
        body: RequestBody<'_>,
        operation: &str,
        small: bool,
    ) -> Result<Response> {
        let state = Arc::new(CallState::default());
        let agent = self.agent(small, &state);
        let uri = format!("http://{}{target}", self.authority());
        // `identity`: nothing is to be compressed on the way (an export is hashed as sent).
        let mut request = ureq::http::Request::builder()
            .method(method)
            .uri(&uri)
            .header("Accept-Encoding", "identity")
            .header("Connection", "close");
        if let Some(ct) = content_type {
            request = request.header("Content-Type", ct);
        }
        let mut source = match body {
            RequestBody::Empty => None,
            RequestBody::Sized(src, len) => {
                request = request.header("Content-Length", len.to_string());
                Some(BodySource::new(src, Some(len), state.clone()))
            }
            RequestBody::Chunked(src) => Some(BodySource::new(src, None, state.clone())),
        };
        let result = match source.as_mut() {
            Some(s) => request
                .body(ureq::SendBody::from_reader(s))
                .map(|r| agent.run(r)),
            None => request.body(ureq::SendBody::none()).map(|r| agent.run(r)),
        }
        .map_err(|e| Error::Daemon {
            operation: operation.to_string(),
            status: 0,
            message: format!("cannot build the request {method} {uri}: {e}"),
        })?;
        if let Some(e) = source.as_mut().and_then(BodySource::take_error) {
            return Err(Error::io(format!("<{operation} request body>"), e));
        }
        let resp = match result {
            Ok(resp) => resp,
            Err(e) => return Err(self.call_error(operation, e, &state)),
        };
        let resp = Response {
            status: resp.status().as_u16(),
            reason: resp.status().canonical_reason().unwrap_or("").to_string(),
            body: resp.into_body().into_reader(),
        };
        if let Some(e) = state.send_failed() {
            // The daemon answered early (e.g. rejected the body) and closed the
            // connection: its answer wins over the broken-pipe error.
            if resp.status >= 400 {
                return Err(self.error_from(resp, operation));
            }
            return Err(self.connection_error(operation, "sending the request", e));
        }
        Ok(resp)
    }

    /// The error for a request that got no response.
    fn call_error(&self, operation: &str, e: ureq::Error, state: &CallState) -> Error {
        let doing = if !state.connected() {
            "connecting"
        } else if state.sending() {
            "sending the request"
        } else {
            "waiting for the response"
        };
        if let ureq::Error::Timeout(t) = e {
            return self.timeout_error(operation, doing, timeout_kind(t));
        }
        if !state.connected() {
            let reason = match e {
                ureq::Error::Io(e) => {
                    let hint = match (&self.target, e.kind()) {
                        (Target::Unix(_), io::ErrorKind::NotFound) => {
                            " (is the Docker daemon running?)"
                        }
                        (Target::Unix(_), io::ErrorKind::PermissionDenied) => {
                            " (run as root or as a member of the docker group)"
                        }
                        (Target::Unix(_), io::ErrorKind::ConnectionRefused) => {
                            " (the socket exists but no daemon is listening)"
                        }
                        _ => "",
                    };
                    format!("{e}{hint}")
                }
                other => other.to_string(),
            };
            return Error::DaemonUnavailable {
                endpoint: self.endpoint.clone(),
                reason,
            };
        }
        if let Some(sent) = state.send_failed() {
            return self.connection_error(operation, "sending the request", sent);
        }
        self.connection_error(operation, doing, &e.into_io())
    }

    /// Passes a successful response through; turns an error status into [`Error::Daemon`].
    fn check(&self, resp: Response, operation: &str) -> Result<Response> {
        if resp.status < 400 {
            Ok(resp)
        } else {
            Err(self.error_from(resp, operation))
        }
    }

    fn error_from(&self, resp: Response, operation: &str) -> Error {
        let mut body = Vec::new();
        // A partial error body is still worth showing.
        let _ = resp.body.take(MAX_ERROR_BODY).read_to_end(&mut body);
        Error::Daemon {
            operation: operation.to_string(),
            status: resp.status,
            message: error_message(&body, &resp.reason),
        }
    }

    /// The error for a failed read or write on the connection: [`Error::Timeout`] when a
    /// timeout ran out, else [`Error::Daemon`].
    fn connection_error(&self, operation: &str, doing: &str, e: &io::Error) -> Error {
        let inner = e.get_ref().and_then(|i| i.downcast_ref::<ureq::Error>());
        if let Some(ureq::Error::Timeout(t)) = inner {
            return self.timeout_error(operation, doing, timeout_kind(*t));
        }
        Error::Daemon {
            operation: operation.to_string(),
            status: 0,
            message: format!("connection to {} failed while {doing}: {e}", self.endpoint),
        }
    }

    fn timeout_error(&self, operation: &str, doing: &str, kind: TimeoutKind) -> Error {
        let d = self.timeouts.get(kind);
        let what = match kind {
            TimeoutKind::Connect => "connect timeout",
            TimeoutKind::Idle => "idle timeout: nothing received or taken",
            TimeoutKind::Request => "request timeout: the whole request",
        };
        Error::Timeout {
            endpoint: self.endpoint.clone(),
            operation: format!("{operation}: {doing} ({what})"),
            seconds: d.as_secs() + u64::from(d.subsec_nanos() > 0),
            option: kind.option().to_string(),
        }
    }

    /// Reads a JSON response body of at most `max` bytes and parses it as a `T`.
    fn json_body<T: DeserializeOwned>(
        &self,
        resp: Response,
        operation: &str,
        max: u64,
    ) -> Result<T> {
        let mut body = Vec::new();
        resp.body
            .take(max + 1)
            .read_to_end(&mut body)
            .map_err(|e| self.connection_error(operation, "reading the response", &e))?;
        if body.len() as u64 > max {
            return Err(Error::Daemon {
                operation: operation.to_string(),
                status: 0,
                message: format!("the response is larger than {max} bytes (the largest accepted)"),
            });
        }
        let file = format!("{operation} response from {}", self.endpoint);
        crate::manifest::check_json_values(&body, &file, crate::manifest::max_json_values())?;
        serde_json::from_slice(&body).map_err(|e| Error::InvalidJson {
            file,
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })
    }
}

/// One message of a `docker load` reply: only the fields used are built, the others are
/// skipped as they are parsed.
#[derive(Deserialize)]
struct LoadMessage {
    #[serde(default)]
    stream: Option<Value>,
    #[serde(default)]
    status: Option<Value>,
    #[serde(default)]
    error: Option<Value>,
    #[serde(default, rename = "errorDetail")]
    error_detail: Option<Value>,
    #[serde(default, rename = "progressDetail")]
    progress_detail: Option<serde::de::IgnoredAny>,
}

impl LoadMessage {
    /// Adds what this message says to `result`; the daemon's error message if it reports
    /// one.
    fn record(self, result: &mut LoadResult) -> std::result::Result<(), String> {
        let as_text = |v: &Option<Value>| v.as_ref().and_then(Value::as_str).map(str::to_string);
        let detail = self
            .error_detail
            .as_ref()
            .and_then(|d| d.get("message"))
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
            .map(str::to_string);
        let plain = as_text(&self.error).filter(|s| !s.trim().is_empty());
        if let Some(message) = detail.or(plain) {
            return Err(message.trim().to_string());
        }
        if self.progress_detail.is_some() {
            return Ok(());
        }
        let Some(text) = as_text(&self.stream).or_else(|| as_text(&self.status)) else {
            return Ok(());
        };
        let text = text.trim();
        if text.is_empty() {
            return Ok(());
        }
        if let Some(id) = text.strip_prefix("Loaded image ID:") {
            if let Ok(d) = Digest::parse(id.trim()) {
                if result.ids.len() < LOAD_RESULTS_KEPT {
                    result.ids.push(d);
                }
            }
        } else if let Some(name) = text.strip_prefix("Loaded image:") {
            let name = name.trim();
            if result.names.len() < LOAD_RESULTS_KEPT && name.len() <= LOAD_MESSAGE_TEXT {
                result.names.push(name.to_string());
            }
        }
        if result.messages.len() == LOAD_MESSAGES_KEPT {
            result.messages.remove(0);
        }
        let mut end = text.len().min(LOAD_MESSAGE_TEXT);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        result.messages.push(text[..end].to_string());
        Ok(())
    }
}

/// Reads the next message of a newline-delimited stream into `line` (without the line
/// end), holding at most `max` bytes: `Some(true)` for a message, `Some(false)` for one
/// longer than `max` (what was read of it is discarded), `None` at the end of the stream.
/// Blank lines are skipped.
fn read_message(r: &mut dyn BufRead, line: &mut Vec<u8>, max: usize) -> io::Result<Option<bool>> {
    loop {
        line.clear();
        let mut seen = false;
        loop {
            let available = match r.fill_buf() {
                Ok(b) => b,
                Err(e) if guard::is_eintr(&e) => continue,
                Err(e) => return Err(e),
            };
            if available.is_empty() {
                if !seen {
                    return Ok(None);
                }
                break;
            }
            seen = true;
            let (taken, done) = match available.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (available.len(), false),
            };
            if line.len() + taken > max + 2 {
                return Ok(Some(false));
            }
            line.extend_from_slice(&available[..taken]);
            r.consume(taken);
            if done {
                break;
            }
        }
        while line.last().is_some_and(|b| b.is_ascii_whitespace()) {
            line.pop();
        }
        if line.len() > max {
            return Ok(Some(false));
        }
        if !line.iter().all(u8::is_ascii_whitespace) {
            return Ok(Some(true));
        }
    }
}

/// A response whose head has been read; the body is read on demand.
struct Response {
    status: u16,
    /// The standard reason phrase of `status` (empty if none).
    reason: String,
    body: ureq::BodyReader<'static>,
}

/// Which of our timeouts a ureq timeout is: ureq's per-read and per-write timeouts are the
/// idle timeout, its global one the request timeout.
fn timeout_kind(t: ureq::Timeout) -> TimeoutKind {
    match t {
        ureq::Timeout::Connect => TimeoutKind::Connect,
        ureq::Timeout::PerRead | ureq::Timeout::PerWrite => TimeoutKind::Idle,
        _ => TimeoutKind::Request,
    }
}

/// Parses a `DOCKER_HOST`-style endpoint.
fn parse_endpoint(endpoint: &str) -> Result<Target> {
    let err = |reason: String| Error::DaemonUnavailable {
        endpoint: endpoint.to_string(),
        reason,
    };
    let bad_setting = |reason: &str| Error::InvalidOption {
        option: "DOCKER_HOST".into(),
        reason: format!("{endpoint:?}: {reason}"),
    };
    if let Some(path) = endpoint.strip_prefix("unix://") {
        if path.is_empty() {
            return Err(bad_setting("the unix:// endpoint has no socket path"));
        }
        return Ok(Target::Unix(PathBuf::from(path)));
    }
    if endpoint.starts_with('/') {
        return Ok(Target::Unix(PathBuf::from(endpoint)));
    }
    let rest = endpoint
        .strip_prefix("tcp://")
        .or_else(|| endpoint.strip_prefix("http://"));
    let Some(rest) = rest else {
        let scheme = endpoint.split_once("://").map_or("", |(s, _)| s);
        let reason = match scheme {
            "https" => "https (TLS) endpoints are not supported; use the daemon's Unix socket or plain tcp://".to_string(),
            "ssh" => "ssh:// endpoints are not supported; forward the socket instead, e.g. `ssh -L /tmp/docker.sock:/var/run/docker.sock host` and use unix:///tmp/docker.sock".to_string(),
            "npipe" => "Windows named pipes are not supported".to_string(),
            // Not an endpoint at all: a mistake in the setting, not a missing daemon.
            "" => return Err(bad_setting("expected unix:///path/to/docker.sock or tcp://host:port")),
            other => {
                return Err(bad_setting(&format!(
                    "unknown scheme {other}://; expected unix:// or tcp://"
                )))
            }
        };
        return Err(err(reason));
    };
    let authority = rest.split('/').next().unwrap_or("");
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        match v6.split_once(']') {
            Some((h, "")) => (h, None),
            Some((h, p)) => match p.strip_prefix(':') {
                Some(p) => (h, Some(p)),
                None => return Err(err(format!("invalid address {authority:?}"))),
            },
            None => return Err(err(format!("invalid address {authority:?}"))),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(err("the tcp:// endpoint has no host".into()));
    }
    let port = match port {
        None => DEFAULT_TCP_PORT,
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| err(format!("invalid port {p:?}")))?,
    };
    Ok(Target::Tcp {
        host: host.to_string(),
        port,
    })
}

/// Parses `1.41` into `(1, 41)`.
fn parse_api_version(v: &str) -> Option<(u32, u32)> {
    let (major, minor) = v.trim().split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// Rejects image names or IDs that cannot be put in a URL path safely (empty, with
/// whitespace or control characters, or with `.`/`..` segments the daemon's router would
/// collapse).
fn check_name_arg(name: &str) -> Result<()> {
    let err = |reason: &str| Error::InvalidReference {
        input: name.to_string(),
        reason: reason.to_string(),
    };
    if name.is_empty() {
        return Err(err("the image name is empty"));
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(err(
            "the image name contains whitespace or control characters",
        ));
    }
    if name
        .split('/')
        .any(|seg| seg == "." || seg == ".." || seg.is_empty())
    {
        return Err(err(
            "the image name has an empty, '.' or '..' path component",
        ));
    }
    Ok(())
}

/// The message of a Docker error body: `{"message": "..."}`, else the text, else the
/// reason phrase.
fn error_message(body: &[u8], reason: &str) -> String {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        if let Some(m) = v.get("message").and_then(Value::as_str) {
            return m.trim().to_string();
        }
        if let Some(m) = stream_error(&v) {
            return m;
        }
    }
    let text = String::from_utf8_lossy(body).trim().to_string();
    if !text.is_empty() {
        text
    } else if !reason.is_empty() {
        reason.to_string()
    } else {
        "no error message".to_string()
    }
}

/// The error of a JSON-message stream item (`{"errorDetail":{"message":..},"error":..}`).
fn stream_error(msg: &Value) -> Option<String> {
    let detail = msg
        .get("errorDetail")
        .and_then(|d| d.get("message"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    let plain = msg
        .get("error")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    detail.or(plain).map(|s| s.trim().to_string())
}

/// Finds a JSON error message the daemon appended to an export stream that failed after
/// it had started (moby writes `streamformatter.FormatError` into the body).
fn trailing_stream_error(tail: &[u8]) -> Option<String> {
    let end = tail.iter().rposition(|b| !b.is_ascii_whitespace())? + 1;
    if tail[end - 1] != b'}' {
        return None;
    }
    for marker in [&b"{\"errorDetail\""[..], b"{\"error\""] {
        let start = tail[..end].windows(marker.len()).rposition(|w| w == marker);
        if let Some(start) = start {
            if let Ok(v) = serde_json::from_slice::<Value>(&tail[start..end]) {
                if let Some(m) = stream_error(&v) {
                    return Some(m);
                }
            }
        }
    }
    None
}

fn parse_inspect(raw: Value) -> Result<ImageInspect> {
    const DOC: &str = "image inspect";
    let field_err = |field: &str, reason: &str| Error::InvalidField {
        file: DOC.into(),
        field: field.into(),
        reason: reason.into(),
    };
    let id = raw
        .get("Id")
        .and_then(Value::as_str)
        .ok_or_else(|| field_err("Id", "missing"))?;
    let id = Digest::parse_in(id, Some("image inspect Id"))?;
    let strings = |key: &str| -> Vec<String> {
        raw.get(key)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    let string = |key: &str| -> Option<String> {
        raw.get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let mut rootfs_layers = Vec::new();
    if let Some(layers) = raw.get("RootFS").and_then(|r| r.get("Layers")) {
        let layers = layers
            .as_array()
            .ok_or_else(|| field_err("RootFS.Layers", "not an array"))?;
        for (i, l) in layers.iter().enumerate() {
            let field = format!("RootFS.Layers[{i}]");
            let s = l
                .as_str()
                .ok_or_else(|| field_err(&field, "not a string"))?;
            rootfs_layers.push(Digest::parse_in(s, Some(&format!("{DOC} {field}")))?);
        }
    }
    Ok(ImageInspect {
        id,
        repo_tags: strings("RepoTags"),
        repo_digests: strings("RepoDigests"),
        os: string("Os").unwrap_or_default(),
        architecture: string("Architecture").unwrap_or_default(),
        variant: string("Variant"),
        rootfs_layers,
        raw,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::os::unix::net::{UnixListener, UnixStream};
    use std::thread;
    use std::time::{Duration, Instant};
    use unix::{connect_unix, is_timeout};

    /// The value of header `name` in a request head, its name in any case.
    fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
        head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    #[test]
    fn endpoints() {
        assert_eq!(
            parse_endpoint("unix:///var/run/docker.sock").unwrap(),
            Target::Unix("/var/run/docker.sock".into())
        );
        assert_eq!(
            parse_endpoint("/tmp/d.sock").unwrap(),
            Target::Unix("/tmp/d.sock".into())
        );
        assert_eq!(
            parse_endpoint("tcp://127.0.0.1:2375").unwrap(),
            Target::Tcp {
                host: "127.0.0.1".into(),
                port: 2375
            }
        );
        assert_eq!(
            parse_endpoint("tcp://dockerhost").unwrap(),
            Target::Tcp {
                host: "dockerhost".into(),
                port: 2375
            }
        );
        assert_eq!(
            parse_endpoint("tcp://[::1]:2000/").unwrap(),
            Target::Tcp {
                host: "::1".into(),
                port: 2000
            }
        );
        for (bad, want) in [
            ("https://h:2376", "TLS"),
            ("ssh://user@host", "ssh -L"),
            ("npipe:////./pipe/docker_engine", "named pipes"),
            ("tcp://:2375", "no host"),
            ("tcp://h:99999", "invalid port"),
        ] {
            let e = DockerClient::new(bad).unwrap_err();
            assert!(matches!(e, Error::DaemonUnavailable { .. }), "{bad}: {e:?}");
            assert!(e.to_string().contains(want), "{bad}: {e}");
            assert!(e.to_string().contains(bad), "{bad}: {e}");
        }
        // Not an endpoint at all: the setting is wrong (invalid input, exit 3), no daemon
        // is missing.
        for (bad, want) in [
            ("unix://", "no socket path"),
            ("docker.sock", "expected unix://"),
            ("fd://", "unknown scheme fd://"),
            ("bogus://x", "unknown scheme bogus://"),
        ] {
            let e = DockerClient::new(bad).unwrap_err();
            assert!(matches!(e, Error::InvalidOption { .. }), "{bad}: {e:?}");
            assert_eq!(e.exit_code(), crate::ExitCode::InvalidInput);
            assert!(e.to_string().contains("DOCKER_HOST"), "{bad}: {e}");
            assert!(e.to_string().contains(want), "{bad}: {e}");
            assert!(e.to_string().contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn api_versions() {
        assert_eq!(parse_api_version("1.41"), Some((1, 41)));
        assert_eq!(parse_api_version("1.9"), Some((1, 9)));
        assert!((1, 9) < (1, 41));
        assert_eq!(parse_api_version("x"), None);
        let c = DockerClient::new("unix:///nonexistent")
            .unwrap()
            .with_api_version("v1.40")
            .unwrap();
        assert_eq!(c.api_version().unwrap(), "1.40");
    }

    #[test]
    fn error_messages() {
        assert_eq!(
            error_message(br#"{"message":"No such image: x:latest"}"#, "Not Found"),
            "No such image: x:latest"
        );
        assert_eq!(
            error_message(b"page not found\n", "Not Found"),
            "page not found"
        );
        assert_eq!(error_message(b"", "Not Found"), "Not Found");
        assert_eq!(
            error_message(br#"{"errorDetail":{"message":"bad"},"error":"bad"}"#, ""),
            "bad"
        );
    }

    #[test]
    fn export_tail_errors() {
        let mut tail = vec![0u8; 1024];
        assert_eq!(trailing_stream_error(&tail), None);
        tail.extend_from_slice(
            b"{\"errorDetail\":{\"message\":\"layer does not exist\"},\"error\":\"layer does not exist\"}\r\n",
        );
        assert_eq!(
            trailing_stream_error(&tail).as_deref(),
            Some("layer does not exist")
        );
        assert_eq!(trailing_stream_error(b"{\"stream\":\"x\"}"), None);
    }

    #[test]
    fn name_arguments() {
        for ok in ["a:b", "sha256:abcd", "localhost:5000/a/b:t", "abc123"] {
            check_name_arg(ok).unwrap();
        }
        for bad in ["", "a b", "../containers", "a/./b", "a//b", "x\n"] {
            assert!(check_name_arg(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn inspect_parsing() {
        let raw = serde_json::json!({
            "Id": "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "RepoTags": ["a:b"],
            "RepoDigests": null,
            "Os": "linux",
            "Architecture": "arm",
            "Variant": "v7",
            "RootFS": {"Type": "layers", "Layers": [
                "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            ]}
        });
        let i = parse_inspect(raw).unwrap();
        assert_eq!(i.repo_tags, vec!["a:b"]);
        assert!(i.repo_digests.is_empty());
        assert_eq!(i.variant.as_deref(), Some("v7"));
        assert_eq!(i.rootfs_layers.len(), 1);
        let bad = serde_json::json!({"Id": "sha256:zz"});
        assert!(matches!(
            parse_inspect(bad).unwrap_err(),
            Error::InvalidDigest { .. }
        ));
    }

    /// A fake daemon on a Unix socket: for each connection, reads the request head (and
    /// a body, if `read_body`), then writes `reply`.
    fn fake_daemon(
        replies: Vec<&'static [u8]>,
        read_body: bool,
    ) -> (tempfile::TempDir, String, thread::JoinHandle<Vec<String>>) {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("d.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let handle = thread::spawn(move || {
            let mut heads = Vec::new();
            for reply in replies {
                let (s, _) = listener.accept().unwrap();
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut head = String::new();
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                        break;
                    }
                    head.push_str(&line);
                }
                if read_body {
                    let len = header(&head, "Content-Length")
                        .map(|v| v.parse::<usize>().unwrap())
                        .unwrap_or(0);
                    let mut body = vec![0u8; len];
                    r.read_exact(&mut body).unwrap();
                }
                heads.push(head);
                // The client may have gone away already; that is part of some tests.
                let _ = (&s).write_all(reply);
            }
            heads
        });
        (dir, format!("unix://{}", sock.display()), handle)
    }

    #[test]
    fn negotiates_and_reports_daemon_errors() {
        let body = r#"{"Version":"99.0","ApiVersion":"1.99","Os":"linux","Arch":"x"}"#;
        let version = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let version: &'static [u8] = Box::leak(version.into_bytes().into_boxed_slice());
        let not_found: &'static [u8] =
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 41\r\n\r\n{\"message\":\"No such image: nope:latest\"}";
        let conflict: &'static [u8] = b"HTTP/1.1 409 Conflict\r\nTransfer-Encoding: chunked\r\n\r\n13;x=y\r\n{\"message\":\"busy\"}\n\r\n0\r\nTrailer: 1\r\n\r\n";
        let (_dir, endpoint, handle) = fake_daemon(vec![version, not_found, conflict], false);
        let c = DockerClient::new(&endpoint).unwrap();
        assert_eq!(c.api_version().unwrap(), "1.45");
        assert!(c.inspect_image("nope").unwrap().is_none());
        let e = c.tag_image("x", "repo", "t").unwrap_err();
        match e {
            Error::Daemon {
                status, message, ..
            } => {
                assert_eq!(status, 409);
                assert_eq!(message, "busy");
            }
            other => panic!("{other:?}"),
        }
        let heads = handle.join().unwrap();
        assert!(
            heads[0].starts_with("GET /version HTTP/1.1\r\n"),
            "{}",
            heads[0]
        );
        assert_eq!(header(&heads[0], "Host"), Some("docker"));
        assert!(heads[1].starts_with("GET /v1.45/images/nope/json HTTP/1.1"));
        assert!(
            heads[2].starts_with("POST /v1.45/images/x/tag?repo=repo&tag=t HTTP/1.1"),
            "{}",
            heads[2]
        );
    }

    #[test]
    fn load_stream_errors_and_results() {
        // Docker frames each JSON message with "\r\n" and sends one chunk per message.
        let mut ok = String::from("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        for msg in [
            "{\"stream\":\"Loaded image: a/b:t\\n\"}\r\n",
            "{\"stream\":\"Loaded image ID: sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\\n\"}\r\n",
        ] {
            ok.push_str(&format!("{:x}\r\n{msg}\r\n", msg.len()));
        }
        ok.push_str("0\r\n\r\n");
        let ok: &'static [u8] = Box::leak(ok.into_bytes().into_boxed_slice());
        let failed: &'static [u8] = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n\
            {\"errorDetail\":{\"message\":\"unexpected EOF\"},\"error\":\"unexpected EOF\"}\r\n";
        let (_dir, endpoint, handle) = fake_daemon(vec![ok, failed], true);
        let c = DockerClient::new(&endpoint)
            .unwrap()
            .with_api_version("1.41")
            .unwrap();
        let r = c.load_image(&b"0123456789"[..], Some(10)).unwrap();
        assert_eq!(r.names, vec!["a/b:t"]);
        assert_eq!(r.ids, vec![Digest::of(b"")]);
        let e = c.load_image(&b"x"[..], Some(1)).unwrap_err();
        assert!(
            matches!(&e, Error::Daemon { status: 0, message, .. } if message == "unexpected EOF"),
            "{e:?}"
        );
        let heads = handle.join().unwrap();
        assert!(heads[0].starts_with("POST /v1.41/images/load?quiet=0 HTTP/1.1\r\n"));
        assert_eq!(header(&heads[0], "Content-Type"), Some("application/x-tar"));
        assert_eq!(header(&heads[0], "Content-Length"), Some("10"));
    }

    #[test]
    fn load_replies_and_json_bodies_are_bounded() {
        let leak = |v: Vec<u8>| -> &'static [u8] { Box::leak(v.into_boxed_slice()) };
        // One message as one long line (no newline in 2 MiB).
        let mut long = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{\"stream\":\"".to_vec();
        long.extend(std::iter::repeat_n(b'a', 2 << 20));
        long.extend_from_slice(b"\"}\r\n");
        // Many short messages, more than the kept budget.
        let mut many = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_vec();
        for i in 0..40_000 {
            many.extend_from_slice(
                format!("{{\"stream\":\"Loaded image: x/y:{i}\"}}\r\n").as_bytes(),
            );
        }
        // An inspect reply under the byte cap with more values than the value budget.
        let mut body = b"{\"Id\":\"x\",\"Junk\":[".to_vec();
        body.extend(std::iter::repeat_n(&b"0,"[..], 3 << 19).flatten());
        body.extend_from_slice(b"0]}");
        let mut inspect = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        inspect.extend_from_slice(&body);
        let (_dir, endpoint, handle) =
            fake_daemon(vec![leak(long), leak(many), leak(inspect)], true);
        let c = DockerClient::new(&endpoint)
            .unwrap()
            .with_api_version("1.41")
            .unwrap();
        let e = c.load_image(&b"x"[..], Some(1)).unwrap_err();
        assert!(
            matches!(&e, Error::Daemon { message, .. } if message.contains("longer than")),
            "{e:?}"
        );
        let loaded = c.load_image(&b"x"[..], Some(1)).unwrap();
        assert_eq!(loaded.names.len(), LOAD_RESULTS_KEPT);
        assert_eq!(loaded.messages.len(), LOAD_MESSAGES_KEPT);
        assert_eq!(loaded.messages.last().unwrap(), "Loaded image: x/y:39999");
        let e = c.inspect_image("x").unwrap_err();
        assert!(
            matches!(&e, Error::LimitExceeded { option, .. } if option == crate::manifest::ENV_MAX_JSON_VALUES),
            "{e:?}"
        );
        handle.join().unwrap();
    }

    #[test]
    fn export_detects_in_band_errors_and_truncation() {
        let in_band: &'static [u8] =
            b"HTTP/1.1 200 OK\r\nContent-Type: application/x-tar\r\nConnection: close\r\n\r\n\
            partial tar bytes{\"errorDetail\":{\"message\":\"boom\"},\"error\":\"boom\"}\r\n";
        let truncated: &'static [u8] =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nonly some";
        let (_dir, endpoint, handle) = fake_daemon(vec![in_band, truncated], false);
        let c = DockerClient::new(&endpoint)
            .unwrap()
            .with_api_version("1.41")
            .unwrap();
        let mut out = Vec::new();
        let e = c.export_image("a:b", &mut out).unwrap_err();
        assert!(
            matches!(&e, Error::Daemon { message, .. } if message == "boom"),
            "{e:?}"
        );
        let e = c.export_image("a:b", &mut Vec::new()).unwrap_err();
        assert!(
            e.to_string()
                .contains("failed while reading the image stream"),
            "{e}"
        );
        let heads = handle.join().unwrap();
        assert!(heads[0].starts_with("GET /v1.41/images/get?names=a%3Ab HTTP/1.1"));
    }

    #[test]
    fn early_error_reply_wins_over_broken_pipe() {
        // The fake daemon answers without reading the body and closes the connection.
        let reply: &'static [u8] =
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 25\r\n\r\n{\"message\":\"not a tar!\"}";
        let (_dir, endpoint, handle) = fake_daemon(vec![reply], false);
        let c = DockerClient::new(&endpoint)
            .unwrap()
            .with_api_version("1.41")
            .unwrap();
        let big = io::repeat(7).take(64 * 1024 * 1024);
        let e = c.load_image(big, None).unwrap_err();
        handle.join().unwrap();
        match e {
            Error::Daemon {
                status, message, ..
            } => {
                assert_eq!(status, 400, "{message}");
                assert_eq!(message, "not a tar!");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unreachable_socket_is_daemon_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("nothing.sock");
        let endpoint = format!("unix://{}", sock.display());
        let c = DockerClient::new(&endpoint).unwrap();
        let e = c.ping().unwrap_err();
        assert!(matches!(e, Error::DaemonUnavailable { .. }), "{e:?}");
        assert!(e.to_string().contains(&endpoint), "{e}");
        assert!(
            e.to_string().contains("is the Docker daemon running"),
            "{e}"
        );
    }

    #[test]
    fn source_errors_are_returned_unwrapped() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(Error::Cancelled.into_io())
            }
        }
        let (_dir, endpoint, handle) = fake_daemon(vec![b"HTTP/1.1 200 OK\r\n\r\n"], false);
        let c = DockerClient::new(&endpoint)
            .unwrap()
            .with_api_version("1.41")
            .unwrap();
        let e = c.load_image(Failing, None).unwrap_err();
        assert!(matches!(e, Error::Cancelled), "{e:?}");
        drop(c);
        handle.join().unwrap();
    }

    /// A daemon on a Unix socket that accepts one connection, reads the request head (and
    /// a `Content-Length` body), then hands the connection to `reply`.
    fn serve_one(
        reply: impl FnOnce(UnixStream) + Send + 'static,
    ) -> (tempfile::TempDir, String, thread::JoinHandle<()>) {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("d.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let handle = thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = header(&line, "Content-Length") {
                    len = v.parse().unwrap();
                }
            }
            let mut body = vec![0u8; len];
            r.read_exact(&mut body).unwrap();
            reply(s);
        });
        (dir, format!("unix://{}", sock.display()), handle)
    }

    fn client(endpoint: &str, idle_ms: u64, request_ms: u64) -> DockerClient {
        DockerClient::new(endpoint)
            .unwrap()
            .with_api_version("1.41")
            .unwrap()
            .with_timeouts(Timeouts {
                connect: Duration::from_millis(500),
                idle: Duration::from_millis(idle_ms),
                request: Duration::from_millis(request_ms),
            })
    }

    #[test]
    fn a_daemon_that_never_answers_times_out() {
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let (_dir, endpoint, handle) = serve_one(move |s| {
            // Hold the connection open, silent, until the client gave up.
            let _ = wait.recv();
            drop(s);
        });
        let c = client(&endpoint, 300, 60_000);
        let start = Instant::now();
        let e = c.inspect_image("app:1").unwrap_err();
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        match &e {
            Error::Timeout {
                endpoint: ep,
                operation,
                option,
                ..
            } => {
                assert_eq!(ep, &endpoint);
                assert!(operation.contains("inspect image app:1"), "{operation}");
                assert!(
                    operation.contains("waiting for the response"),
                    "{operation}"
                );
                assert!(option.contains("DOCKER_DELTA_DAEMON_TIMEOUT"), "{option}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(e.exit_code(), crate::ExitCode::MissingDependency);
        release.send(()).unwrap();
        handle.join().unwrap();
    }

    #[test]
    fn interim_heads_sent_slowly_forever_end_at_the_request_deadline() {
        let (_dir, endpoint, handle) = serve_one(|mut s| {
            // One `100 Continue` every 50 ms: never idle, never done, until the client
            // hangs up.
            while s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").is_ok() {
                thread::sleep(Duration::from_millis(50));
            }
        });
        let c = client(&endpoint, 10_000, 400);
        let start = Instant::now();
        let e = c.tag_image("app:1", "app", "2").unwrap_err();
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        assert!(
            matches!(&e, Error::Timeout { option, .. } if option.contains("DOCKER_DELTA_DAEMON_REQUEST_TIMEOUT")),
            "{e:?}"
        );
        assert!(e.to_string().contains("tag app:1 as app:2"), "{e}");
        handle.join().unwrap();
    }

    #[test]
    fn a_daemon_that_accepts_no_connection_times_out_connecting() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("d.sock");
        // Listening, never accepting: once the listen queue is full, connect blocks.
        let _listener = UnixListener::bind(&sock).unwrap();
        let mut queued = Vec::new();
        loop {
            match connect_unix(&sock, Some(Duration::from_millis(50))) {
                Ok(s) => queued.push(s),
                Err(e) if is_timeout(&e) => break,
                Err(e) => panic!("{e}"),
            }
            assert!(queued.len() < 100_000, "the listen queue never filled");
        }
        let endpoint = format!("unix://{}", sock.display());
        let c = client(&endpoint, 10_000, 60_000);
        let start = Instant::now();
        let e = c.ping().unwrap_err();
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        assert!(
            matches!(&e, Error::Timeout { operation, option, .. }
                if operation.contains("ping: connecting")
                    && option.contains("DOCKER_DELTA_DAEMON_CONNECT_TIMEOUT")),
            "{e:?}"
        );
    }

    #[test]
    fn a_load_that_keeps_reporting_is_not_cut() {
        let (_dir, endpoint, handle) = serve_one(|mut s| {
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n")
                .unwrap();
            // 20 progress reports 100 ms apart: 2 s in all, far past the 1 s idle timeout.
            for i in 0..20 {
                let m = format!(
                    "{{\"status\":\"Loading layer\",\"progressDetail\":{{\"current\":{i},\"total\":20}},\"id\":\"abc\"}}\r\n"
                );
                s.write_all(m.as_bytes()).unwrap();
                thread::sleep(Duration::from_millis(100));
            }
            s.write_all(b"{\"stream\":\"Loaded image: app:2\\n\"}\r\n")
                .unwrap();
        });
        let c = client(&endpoint, 1000, 1000);
        let start = Instant::now();
        let r = c.load_image(&b"tar"[..], Some(3)).unwrap();
        assert!(start.elapsed() > Duration::from_millis(1500));
        assert_eq!(r.names, vec!["app:2"]);
        // Progress reports are not kept.
        assert_eq!(r.messages, vec!["Loaded image: app:2"]);
        handle.join().unwrap();
    }

    #[test]
    fn a_load_reply_is_read_message_by_message_and_bounded() {
        let (_dir, endpoint, handle) = serve_one(|mut s| {
            s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                .unwrap();
            let mut chunk = String::new();
            for i in 0..1000 {
                chunk.push_str(&format!("{{\"stream\":\"step {i}\\n\"}}\r\n"));
            }
            // Two values on one line, and one cut across chunks.
            chunk.push_str("{\"stream\":\"Loaded image: a:1\\n\"}{\"stream\":\"Loaded im");
            let rest = "age ID: sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\\n\"}\r\n";
            for part in [chunk.as_str(), rest] {
                s.write_all(format!("{:x}\r\n{part}\r\n", part.len()).as_bytes())
                    .unwrap();
            }
            s.write_all(b"0\r\n\r\n").unwrap();
        });
        let c = client(&endpoint, 5000, 5000);
        let r = c.load_image(&b"tar"[..], Some(3)).unwrap();
        assert_eq!(r.names, vec!["a:1"]);
        assert_eq!(r.ids, vec![Digest::of(b"")]);
        assert_eq!(r.messages.len(), LOAD_MESSAGES_KEPT);
        assert_eq!(r.messages[LOAD_MESSAGES_KEPT - 3], "step 999");
        handle.join().unwrap();

        // One message longer than the cap: refused after reading the cap, not kept whole.
        let (_dir, endpoint, handle) = serve_one(|mut s| {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\n\r\n{\"stream\":\"");
            let block = vec![b'x'; 64 * 1024];
            for _ in 0..(4 * MAX_LOAD_MESSAGE / block.len()) {
                if s.write_all(&block).is_err() {
                    return;
                }
            }
        });
        let e = c_for(&endpoint)
            .load_image(&b"tar"[..], Some(3))
            .unwrap_err();
        assert!(
            matches!(&e, Error::Daemon { message, .. } if message.contains("longer than 1048576 bytes")),
            "{e:?}"
        );
        handle.join().unwrap();
    }

    #[test]
    fn nothing_is_decompressed() {
        // A daemon (or a proxy in front of it) that labels the export as gzip: the
        // bytes are passed on as sent, not decoded (ureq has no gzip feature here).
        let mut reply = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-tar\r\n\
            Content-Encoding: gzip\r\nContent-Length: 1024\r\n\r\n"
            .to_vec();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&[7u8; 4096]).unwrap();
        let mut body = gz.finish().unwrap();
        body.resize(1024, 0);
        reply.extend_from_slice(&body);
        let (_dir, endpoint, handle) =
            fake_daemon(vec![Box::leak(reply.into_boxed_slice())], false);
        let c = DockerClient::new(&endpoint)
            .unwrap()
            .with_api_version("1.41")
            .unwrap();
        let mut out = Vec::new();
        assert_eq!(c.export_image("a:b", &mut out).unwrap(), 1024);
        assert_eq!(out, body);
        let heads = handle.join().unwrap();
        assert_eq!(header(&heads[0], "Accept-Encoding"), Some("identity"));
    }

    #[test]
    fn fast_interim_heads_end_a_long_request_too() {
        // A long request (export) has no request deadline: the interim head limit ends it.
        let (_dir, endpoint, handle) = serve_one(|mut s| {
            let heads = b"HTTP/1.1 100 Continue\r\n\r\n".repeat(1000);
            while s.write_all(&heads).is_ok() {}
        });
        let c = client(&endpoint, 60_000, 60_000);
        let e = c.export_image("a:b", &mut Vec::new()).unwrap_err();
        assert!(
            matches!(&e, Error::Daemon { message, .. }
                if message.contains("more than 16 interim responses (HTTP/1.1 100 Continue)")
                    && message.contains(&endpoint)),
            "{e:?}"
        );
        handle.join().unwrap();
        // Sixteen are accepted.
        let (_dir, endpoint, handle) = serve_one(|mut s| {
            let mut reply = b"HTTP/1.1 100 Continue\r\n\r\n".repeat(MAX_INTERIM);
            reply.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 1024\r\n\r\n");
            reply.extend_from_slice(&[0u8; 1024]);
            s.write_all(&reply).unwrap();
        });
        assert_eq!(
            client(&endpoint, 5000, 5000)
                .export_image("a:b", &mut Vec::new())
                .unwrap(),
            1024
        );
        handle.join().unwrap();
    }

    const MAX_INTERIM: usize = guard::MAX_INTERIM_RESPONSES;

    #[test]
    fn tcp_endpoints_go_through_ureqs_connector_with_the_same_timeouts() {
        use std::net::TcpListener;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = thread::spawn(move || {
            let mut heads = Vec::new();
            // An answer, then silence until the client hangs up.
            for silent in [false, true] {
                let (s, _) = listener.accept().unwrap();
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut head = String::new();
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                        break;
                    }
                    head.push_str(&line);
                }
                heads.push(head);
                if silent {
                    let mut sink = Vec::new();
                    let _ = r.read_to_end(&mut sink);
                } else {
                    let _ =
                        (&s).write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}");
                }
            }
            heads
        });
        let endpoint = format!("tcp://127.0.0.1:{port}");
        let c = client(&endpoint, 300, 60_000);
        assert!(c.inspect_image("app:1").unwrap().is_none());
        let e = c.inspect_image("app:1").unwrap_err();
        assert!(
            matches!(&e, Error::Timeout { endpoint: ep, operation, option, .. }
                if ep == &endpoint
                    && operation.contains("waiting for the response")
                    && option.contains("DOCKER_DELTA_DAEMON_TIMEOUT")),
            "{e:?}"
        );
        drop(c);
        let heads = handle.join().unwrap();
        assert_eq!(
            header(&heads[0], "Host"),
            Some(format!("127.0.0.1:{port}").as_str())
        );
        // Nothing listens here any more.
        let e = DockerClient::new(&endpoint).unwrap().ping().unwrap_err();
        assert!(matches!(e, Error::DaemonUnavailable { .. }), "{e:?}");
    }

    fn c_for(endpoint: &str) -> DockerClient {
        client(endpoint, 5000, 5000)
    }
}
