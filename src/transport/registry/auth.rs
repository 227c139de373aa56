//! Registry credentials, found where skopeo and Docker users keep them.
//!
//! The order is skopeo's (containers-auth.json(5)), with Docker's files after it:
//!
//! 1. `--creds USER:PASS` ([`AuthSources::creds`]), for every registry a command touches;
//! 2. `--authfile FILE`, else `$REGISTRY_AUTH_FILE`: that file alone;
//! 3. otherwise `$XDG_RUNTIME_DIR/containers/auth.json`, then
//!    `$XDG_CONFIG_HOME/containers/auth.json` (`~/.config/containers/auth.json`), then
//!    `$DOCKER_CONFIG/config.json` (`~/.docker/config.json`).
//!
//! In each file, `credHelpers` naming the registry comes first, then the most specific key
//! of `auths` (`host/ns/repo`, `host/ns`, `host`; Docker's `https://index.docker.io/v1/`
//! style keys count as their host), then `credsStore`. An `auths` entry holds `auth`
//! (base64 of `user:password`) or an `identitytoken` (an OAuth2 refresh token). A helper
//! is run as `docker-credential-NAME get` with the server on stdin, Docker's protocol; a
//! `Username` of `<token>` means `Secret` is an identity token.
//!
//! Secrets are held in [`Secret`], whose `Debug` and `Display` never show them, and no
//! error built here quotes a credential.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde::Deserialize;

use crate::error::{Error, Result};

/// A password or token: shown as `<redacted>` by `Debug` and `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The secret itself, for the one place it is sent.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Credentials for one registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// A user name and password: sent as HTTP Basic, or to a token service.
    Basic {
        /// The user name.
        username: String,
        /// The password.
        password: Secret,
    },
    /// An OAuth2 refresh token (`identitytoken`), exchanged at the token service.
    IdentityToken(Secret),
}

/// What a lookup found, and where it looked (for the message when a registry refuses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The credential, if any place had one.
    pub credential: Option<Credential>,
    /// Where it came from: `--creds`, a file and key, or a helper.
    pub from: Option<String>,
    /// Every place looked at, in order.
    pub searched: Vec<String>,
}

/// Where credentials are looked for. [`AuthSources::from_env`] reads the process's
/// environment; tests and embedders fill the fields themselves.
#[derive(Debug, Clone, Default)]
pub struct AuthSources {
    /// `--creds`: used for every registry.
    pub creds: Option<Credential>,
    /// `--authfile` or `$REGISTRY_AUTH_FILE`: the only file read when set.
    pub authfile: Option<PathBuf>,
    /// The files read otherwise, in order.
    pub files: Vec<PathBuf>,
    /// Where `docker-credential-*` helpers are looked for (`$PATH` when `None`).
    pub helper_path: Option<std::ffi::OsString>,
}

impl AuthSources {
    /// The sources skopeo and Docker use in this process's environment: `creds` as
    /// `--creds USER:PASS` takes it, `authfile` as `--authfile` (else
    /// `$REGISTRY_AUTH_FILE`).
    pub fn from_env(creds: Option<&str>, authfile: Option<&Path>) -> Result<AuthSources> {
        let env = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let home = env("HOME");
        let mut files = Vec::new();
        if let Some(d) = env("XDG_RUNTIME_DIR") {
            files.push(d.join("containers/auth.json"));
        }
        match (env("XDG_CONFIG_HOME"), &home) {
            (Some(d), _) => files.push(d.join("containers/auth.json")),
            (None, Some(h)) => files.push(h.join(".config/containers/auth.json")),
            _ => {}
        }
        match (env("DOCKER_CONFIG"), &home) {
            (Some(d), _) => files.push(d.join("config.json")),
            (None, Some(h)) => files.push(h.join(".docker/config.json")),
            _ => {}
        }
        Ok(AuthSources {
            creds: creds.map(parse_creds).transpose()?,
            authfile: authfile
                .map(Path::to_path_buf)
                .or_else(|| env("REGISTRY_AUTH_FILE")),
            files,
            helper_path: None,
        })
    }

    /// The credential for `repository` (e.g. `library/alpine`) on `registry` (a host with
    /// an optional port; `docker.io` for Docker Hub), or none.
    pub fn find(&self, registry: &str, repository: &str) -> Result<Found> {
        let registry = normalize_registry(registry);
        if let Some(c) = &self.creds {
            return Ok(Found {
                credential: Some(c.clone()),
                from: Some("--creds".into()),
                searched: vec!["--creds".into()],
            });
        }
        let files: Vec<&PathBuf> = match &self.authfile {
            Some(f) => vec![f],
            None => self.files.iter().collect(),
        };
        let mut searched = Vec::new();
        for file in files {
            searched.push(file.display().to_string());
            let Some(config) = read_config(file)? else {
                continue;
            };
            if let Some(helper) = config.cred_helpers.get(&registry) {
                searched.push(format!("docker-credential-{helper}"));
                if let Some(c) = self.run_helper(helper, &registry)? {
                    return Ok(found(c, format!("docker-credential-{helper}"), searched));
                }
                continue;
            }
            for key in keys(&registry, repository) {
                let entry = config.auths.iter().find(|(k, _)| normalize_key(k) == key);
                if let Some((k, entry)) = entry {
                    if let Some(c) = entry.credential(file, k)? {
                        return Ok(found(c, format!("{} ({k:?})", file.display()), searched));
                    }
                }
            }
            if let Some(helper) = &config.creds_store {
                searched.push(format!("docker-credential-{helper}"));
                if let Some(c) = self.run_helper(helper, &registry)? {
                    return Ok(found(c, format!("docker-credential-{helper}"), searched));
                }
            }
        }
        Ok(Found {
            credential: None,
            from: None,
            searched,
        })
    }

    /// Runs `docker-credential-NAME get` for `registry`: its credential, or none when it
    /// has none for that server.
    fn run_helper(&self, name: &str, registry: &str) -> Result<Option<Credential>> {
        let program = format!("docker-credential-{name}");
        let fail = |reason: String| Error::CredentialHelper {
            helper: program.clone(),
            registry: registry.to_string(),
            reason,
        };
        if name.is_empty() || name.contains('/') {
            return Err(fail("not a helper name".into()));
        }
        let mut cmd = Command::new(&program);
        if let Some(p) = &self.helper_path {
            cmd.env("PATH", p);
        }
        let mut child = cmd
            .arg("get")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| fail(format!("cannot run it: {e}")))?;
        // Docker Hub's helpers know it by its legacy address.
        let server = if registry == "docker.io" {
            "https://index.docker.io/v1/"
        } else {
            registry
        };
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(server.as_bytes())
                .map_err(|e| fail(format!("cannot write to it: {e}")))?;
        }
        // A helper's answer is a few hundred bytes; more is not an answer.
        let mut out = Vec::new();
        if let Some(stdout) = child.stdout.take() {
            stdout
                .take(HELPER_REPLY_MAX)
                .read_to_end(&mut out)
                .map_err(|e| fail(format!("cannot read its answer: {e}")))?;
        }
        let mut err = Vec::new();
        if let Some(stderr) = child.stderr.take() {
            let _ = stderr.take(4096).read_to_end(&mut err);
        }
        let status = child
            .wait()
            .map_err(|e| fail(format!("cannot wait for it: {e}")))?;
        if !status.success() {
            // The protocol's "not found" answer, on stdout.
            let said = String::from_utf8_lossy(&out);
            if said.contains("credentials not found") {
                return Ok(None);
            }
            // What a helper prints on failure is its own message, never a secret.
            let said = String::from_utf8_lossy(if err.is_empty() { &out } else { &err });
            return Err(fail(format!("{status}: {}", said.trim())));
        }
        #[derive(Deserialize)]
        struct Reply {
            #[serde(rename = "Username", default)]
            username: String,
            #[serde(rename = "Secret", default)]
            secret: String,
        }
        let reply: Reply = serde_json::from_slice(&out).map_err(|e| {
            fail(format!(
                "its answer is not the helper protocol's JSON ({e})"
            ))
        })?;
        if reply.secret.is_empty() {
            return Ok(None);
        }
        Ok(Some(if reply.username == "<token>" {
            Credential::IdentityToken(Secret::new(reply.secret))
        } else {
            Credential::Basic {
                username: reply.username,
                password: Secret::new(reply.secret),
            }
        }))
    }
}

/// Most bytes read of a credential helper's answer.
const HELPER_REPLY_MAX: u64 = 64 * 1024;

/// Most bytes of an auth file read.
const AUTH_FILE_MAX: u64 = 4 * 1024 * 1024;

fn found(c: Credential, from: String, searched: Vec<String>) -> Found {
    Found {
        credential: Some(c),
        from: Some(from),
        searched,
    }
}

/// `--creds USER:PASS` (the password may hold colons). A user without a password is
/// refused here: the command asks for it on a terminal before calling the library.
pub fn parse_creds(s: &str) -> Result<Credential> {
    let bad = |reason: &str| Error::InvalidOption {
        option: "--creds".into(),
        reason: reason.into(),
    };
    let (user, pass) = s
        .split_once(':')
        .ok_or_else(|| bad("expected USER:PASSWORD"))?;
    if user.is_empty() {
        return Err(bad("the user name is empty"));
    }
    Ok(Credential::Basic {
        username: user.to_string(),
        password: Secret::new(pass),
    })
}

/// An auth file: only what is used is built.
#[derive(Deserialize, Default)]
struct AuthConfig {
    #[serde(default)]
    auths: std::collections::BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: std::collections::BTreeMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

impl AuthEntry {
    /// The credential this entry holds; an empty entry (Docker writes them when a
    /// `credsStore` keeps the secret) holds none.
    fn credential(&self, file: &Path, key: &str) -> Result<Option<Credential>> {
        if let Some(t) = self.identitytoken.as_deref().filter(|t| !t.is_empty()) {
            return Ok(Some(Credential::IdentityToken(Secret::new(t))));
        }
        let Some(auth) = self.auth.as_deref().filter(|a| !a.is_empty()) else {
            return Ok(None);
        };
        let bad = |reason: &str| Error::InvalidField {
            file: file.display().to_string(),
            field: format!("auths.{key:?}.auth"),
            reason: reason.into(),
        };
        let raw = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|_| bad("not base64"))?;
        let text = String::from_utf8(raw).map_err(|_| bad("not UTF-8 once decoded"))?;
        let (user, pass) = text
            .split_once(':')
            .ok_or_else(|| bad("decodes to no USER:PASSWORD"))?;
        Ok(Some(Credential::Basic {
            username: user.to_string(),
            password: Secret::new(pass),
        }))
    }
}

/// Reads an auth file; `None` when it does not exist.
fn read_config(path: &Path) -> Result<Option<AuthConfig>> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, e)),
    };
    let raw = crate::transport::read_json_file(file, path, AUTH_FILE_MAX)?;
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Ok(Some(AuthConfig::default()));
    }
    crate::manifest::parse_json(&raw, &path.display().to_string()).map(Some)
}

/// Docker Hub under its one name.
fn normalize_registry(registry: &str) -> String {
    match registry {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".into(),
        r => r.to_string(),
    }
}

/// An `auths` key as the registry (and path) it stands for: Docker's
/// `https://host/v1/` keys are their host.
fn normalize_key(key: &str) -> String {
    let stripped = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"));
    match stripped {
        Some(rest) => normalize_registry(rest.split('/').next().unwrap_or(rest)),
        None => {
            let (host, path) = key.split_once('/').unwrap_or((key, ""));
            let host = normalize_registry(host);
            if path.is_empty() {
                host
            } else {
                format!("{host}/{path}")
            }
        }
    }
}

/// The keys that may hold `registry/repository`'s credential, most specific first.
fn keys(registry: &str, repository: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut path = format!("{registry}/{repository}");
    loop {
        out.push(path.clone());
        match path.rfind('/') {
            Some(i) if i >= registry.len() => path.truncate(i),
            _ => break,
        }
    }
    if out.last().map(String::as_str) != Some(registry) {
        out.push(registry.to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn basic(u: &str, p: &str) -> Option<Credential> {
        Some(Credential::Basic {
            username: u.into(),
            password: Secret::new(p),
        })
    }

    #[test]
    fn keys_go_from_the_repository_to_the_host() {
        assert_eq!(
            keys("r.example:5000", "team/app"),
            [
                "r.example:5000/team/app",
                "r.example:5000/team",
                "r.example:5000"
            ]
        );
        assert_eq!(keys("docker.io", "library/alpine")[2], "docker.io");
        assert_eq!(normalize_key("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(normalize_key("http://r:5000"), "r:5000");
        assert_eq!(normalize_key("r:5000/team"), "r:5000/team");
    }

    #[test]
    fn files_are_read_in_order_and_the_most_specific_key_wins() {
        let d = tempfile::tempdir().unwrap();
        let first = d.path().join("auth.json");
        let second = d.path().join("config.json");
        std::fs::write(
            &first,
            format!(
                r#"{{"auths":{{"r:5000/team/app":{{"auth":"{}"}},"r:5000":{{"auth":"{}"}}}}}}"#,
                b64("app:pw:with:colons"),
                b64("host:pw")
            ),
        )
        .unwrap();
        std::fs::write(
            &second,
            format!(
                r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{}"}},"other":{{"identitytoken":"tok"}}}}}}"#,
                b64("hub:pw")
            ),
        )
        .unwrap();
        let s = AuthSources {
            files: vec![d.path().join("absent.json"), first.clone(), second.clone()],
            ..Default::default()
        };
        let f = s.find("r:5000", "team/app").unwrap();
        assert_eq!(f.credential, basic("app", "pw:with:colons"));
        assert_eq!(f.searched.len(), 2);
        assert_eq!(
            s.find("r:5000", "team/other").unwrap().credential,
            basic("host", "pw")
        );
        assert_eq!(
            s.find("index.docker.io", "library/alpine")
                .unwrap()
                .credential,
            basic("hub", "pw")
        );
        assert_eq!(
            s.find("other", "x").unwrap().credential,
            Some(Credential::IdentityToken(Secret::new("tok")))
        );
        let none = s.find("nowhere", "x").unwrap();
        assert_eq!(none.credential, None);
        assert_eq!(none.searched.len(), 3);
        // --authfile: that file alone.
        let only = AuthSources {
            authfile: Some(second),
            ..s.clone()
        };
        assert_eq!(only.find("r:5000", "team/app").unwrap().credential, None);
        // --creds: for every registry.
        let creds = AuthSources {
            creds: Some(parse_creds("u:p").unwrap()),
            ..s
        };
        assert_eq!(creds.find("x", "y").unwrap().credential, basic("u", "p"));
    }

    #[test]
    fn bad_entries_name_the_file_and_key_not_the_secret() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("auth.json");
        std::fs::write(&f, r#"{"auths":{"r":{"auth":"s3cr3t!!"}}}"#).unwrap();
        let s = AuthSources {
            files: vec![f.clone()],
            ..Default::default()
        };
        let e = s.find("r", "x").unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("auth.json") && text.contains(r#"auths."r".auth"#),
            "{text}"
        );
        assert!(!text.contains("s3cr3t"), "{text}");
        std::fs::write(&f, "{").unwrap();
        assert!(matches!(
            s.find("r", "x").unwrap_err(),
            Error::InvalidJson { .. }
        ));
        assert!(parse_creds("nopassword").is_err());
        assert_eq!(format!("{:?}", Secret::new("pw")), "<redacted>");
        assert!(!format!("{:?}", parse_creds("u:hunter2").unwrap()).contains("hunter2"));
    }

    /// A real helper program speaking Docker's protocol (a shell script).
    #[test]
    fn credential_helpers_are_asked_as_docker_asks_them() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let bin = d.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let helper = bin.join("docker-credential-test");
        std::fs::write(
            &helper,
            "#!/bin/sh\n[ \"$1\" = get ] || exit 9\nread server\n\
             case \"$server\" in\n\
             r:5000) echo '{\"ServerURL\":\"r:5000\",\"Username\":\"u\",\"Secret\":\"p\"}' ;;\n\
             https://index.docker.io/v1/) echo '{\"Username\":\"<token>\",\"Secret\":\"rt\"}' ;;\n\
             broken) echo 'keychain locked' >&2; exit 1 ;;\n\
             *) echo 'credentials not found in native keychain'; exit 1 ;;\n\
             esac\n",
        )
        .unwrap();
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let f = d.path().join("config.json");
        std::fs::write(
            &f,
            r#"{"credHelpers":{"r:5000":"test","broken":"test","gone":"missing"},"credsStore":"test","auths":{"r:5000":{"auth":"eDp5"}}}"#,
        )
        .unwrap();
        let s = AuthSources {
            files: vec![f],
            helper_path: Some(bin.into_os_string()),
            ..Default::default()
        };
        let found = s.find("r:5000", "app").unwrap();
        assert_eq!(
            found.credential,
            basic("u", "p"),
            "credHelpers before auths"
        );
        assert_eq!(found.from.as_deref(), Some("docker-credential-test"));
        assert_eq!(
            s.find("docker.io", "library/alpine").unwrap().credential,
            Some(Credential::IdentityToken(Secret::new("rt"))),
            "credsStore, asked for Docker Hub by its legacy address"
        );
        assert_eq!(s.find("elsewhere", "x").unwrap().credential, None);
        let e = s.find("broken", "x").unwrap_err();
        assert!(
            matches!(&e, Error::CredentialHelper { reason, .. } if reason.contains("keychain locked")),
            "{e:?}"
        );
        assert!(matches!(
            s.find("gone", "x").unwrap_err(),
            Error::CredentialHelper { .. }
        ));
    }
}
