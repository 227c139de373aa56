//! How `docker://` references are reached by a call: the setters for credentials and TLS
//! on `dd_create_options` and `dd_apply_options` (skopeo's `--creds`, `--authfile`,
//! `--tls-verify`, `--cert-dir`). They apply to every registry the call touches: the
//! images read and, for `dd_apply`, a `docker://` output.

use std::ffi::c_char;
use std::path::PathBuf;

use super::delta::{dd_apply_options, dd_create_options};
use super::error::{dd_error, Failure};
use super::{dd_status, guard, handle_mut, opt_str_arg};
use docker_delta::transport::registry::auth::{parse_creds, AuthSources, Credential};
use docker_delta::transport::registry::RegistryOptions;

/// The registry settings of an options object. `Debug` shows no secret (a [`Credential`]
/// prints its password as `<redacted>`).
#[derive(Debug, Clone)]
pub(crate) struct RegistrySettings {
    creds: Option<Credential>,
    authfile: Option<PathBuf>,
    tls_verify: bool,
    cert_dir: Option<PathBuf>,
}

impl Default for RegistrySettings {
    fn default() -> Self {
        RegistrySettings {
            creds: None,
            authfile: None,
            tls_verify: true,
            cert_dir: None,
        }
    }
}

impl RegistrySettings {
    /// The options for the call: the credentials set here, else those found where skopeo
    /// and Docker keep them in this process's environment (`$REGISTRY_AUTH_FILE`,
    /// `$XDG_RUNTIME_DIR/containers/auth.json`, `$DOCKER_CONFIG/config.json`, ...), and
    /// the registry timeouts of the environment.
    pub(crate) fn options(&self) -> Result<RegistryOptions, Failure> {
        let mut auth = AuthSources::from_env(None, self.authfile.as_deref())?;
        auth.creds = self.creds.clone();
        let mut o = RegistryOptions {
            auth,
            tls_verify: self.tls_verify,
            cert_dir: self.cert_dir.clone(),
            ..RegistryOptions::default()
        };
        for (var, field) in [
            (
                docker_delta::timeouts::ENV_REGISTRY_CONNECT_TIMEOUT,
                &mut o.connect_timeout,
            ),
            (
                docker_delta::timeouts::ENV_REGISTRY_TIMEOUT,
                &mut o.idle_timeout,
            ),
        ] {
            if let Some(v) = std::env::var(var).ok().filter(|v| !v.trim().is_empty()) {
                *field = docker_delta::timeouts::parse_seconds(var, &v)?;
            }
        }
        Ok(o)
    }
}

/// Something that holds registry settings.
pub(crate) trait HasRegistry {
    fn registry_settings(&mut self) -> &mut RegistrySettings;
}

impl HasRegistry for dd_create_options {
    fn registry_settings(&mut self) -> &mut RegistrySettings {
        &mut self.registry
    }
}

impl HasRegistry for dd_apply_options {
    fn registry_settings(&mut self) -> &mut RegistrySettings {
        &mut self.registry
    }
}

/// Runs `f` on the registry settings of a live options object.
///
/// # Safety
///
/// `options` must be NULL or a live options object not used elsewhere during the call.
unsafe fn with<T: HasRegistry>(
    options: *mut T,
    err: *mut *mut dd_error,
    f: impl FnOnce(&mut RegistrySettings) -> Result<(), Failure>,
) -> dd_status {
    guard(err, || {
        // SAFETY: caller's contract.
        let o = unsafe { handle_mut(options, "options") }?;
        f(o.registry_settings())
    })
}

/// # Safety
///
/// As [`with`]; `creds` NULL or a NUL-terminated string.
unsafe fn set_creds<T: HasRegistry>(
    options: *mut T,
    creds: *const c_char,
    err: *mut *mut dd_error,
) -> dd_status {
    // SAFETY: caller's contract.
    unsafe {
        with(options, err, |r| {
            r.creds = opt_str_arg(creds, "creds")?.map(parse_creds).transpose()?;
            Ok(())
        })
    }
}

/// # Safety
///
/// As [`with`]; `path` NULL or a NUL-terminated string.
unsafe fn set_path<T: HasRegistry>(
    options: *mut T,
    path: *const c_char,
    name: &str,
    field: fn(&mut RegistrySettings) -> &mut Option<PathBuf>,
    err: *mut *mut dd_error,
) -> dd_status {
    // SAFETY: caller's contract.
    unsafe {
        with(options, err, |r| {
            *field(r) = opt_str_arg(path, name)?.map(PathBuf::from);
            Ok(())
        })
    }
}

/// Credentials for the registries the call touches, `USER:PASSWORD` (skopeo's
/// `--creds`); NULL (the default) to look them up as `dd_create_options_set_authfile`
/// says. The password is kept in memory only for the calls and never appears in errors or
/// logs. A value without `:` gives `DD_STATUS_INVALID_INPUT` (kind `invalid_option`).
///
/// # Safety
///
/// `options` must be NULL or live options; `creds` NULL or a NUL-terminated string; `err`
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dd_create_options_set_creds(
    options: *mut dd_create_options,
    creds: *const c_char,
    err: *mut *mut dd_error,
) -> dd_status {
    // SAFETY: caller's contract.
    unsafe { set_creds(options, creds, err) }
}

/// The only auth file credentials are read from (skopeo's `--authfile`). NULL (the
/// default): `$REGISTRY_AUTH_FILE` alone when set, else
/// `$XDG_RUNTIME_DIR/containers/auth.json`, `$XDG_CONFIG_HOME/containers/auth.json`
/// (`~/.config/...`) and `$DOCKER_CONFIG/config.json` (`~/.docker/config.json`), with
/// their `credHelpers`/`credsStore` helpers, read when the call runs.
///
/// # Safety
///
/// `options` must be NULL or live options; `path` NULL or a NUL-terminated string; `err`
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dd_create_options_set_authfile(
    options: *mut dd_create_options,
    path: *const c_char,
    err: *mut *mut dd_error,
) -> dd_status {
    // SAFETY: caller's contract.
    unsafe { set_path(options, path, "authfile", |r| &mut r.authfile, err) }
}

/// Verify registries' TLS certificates (default true, skopeo's `--tls-verify`); false also
/// allows plain HTTP, which a registry on 127.0.0.1 usually speaks.
///
/// # Safety
///
/// `options` must be NULL or live options.
#[no_mangle]
pub unsafe extern "C" fn dd_create_options_set_tls_verify(
    options: *mut dd_create_options,
    tls_verify: bool,
) -> dd_status {
    // SAFETY: caller's contract.
    unsafe {
        with(options, std::ptr::null_mut(), |r| {
            r.tls_verify = tls_verify;
            Ok(())
        })
    }
}

/// A directory of CA certificates (`*.crt`) trusted besides the system's (skopeo's
/// `--cert-dir`); NULL (the default) for none.
///
/// # Safety
///
/// `options` must be NULL or live options; `path` NULL or a NUL-terminated string; `err`
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dd_create_options_set_cert_dir(
    options: *mut dd_create_options,
    path: *const c_char,
    err: *mut *mut dd_error,
) -> dd_status {
    // SAFETY: caller's contract.
    unsafe { set_path(options, path, "cert_dir", |r| &mut r.cert_dir, err) }
}

/// As `dd_create_options_set_creds`: for the base image's registry and a `docker://`
/// output's.
///
/// # Safety
///
/// `options` must be NULL or live options; `creds` NULL or a NUL-terminated string; `err`
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dd_apply_options_set_creds(
    options: *mut dd_apply_options,
    creds: *const c_char,
    err: *mut *mut dd_error,
) -> dd_status {
    // SAFETY: caller's contract.
    unsafe { set_creds(options, creds, err) }
}

/// As `dd_create_options_set_authfile`.
///
/// # Safety
///
/// `options` must be NULL or live options; `path` NULL or a NUL-terminated string; `err`
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dd_apply_options_set_authfile(
    options: *mut dd_apply_options,
    path: *const c_char,
    err: *mut *mut dd_error,
) -> dd_status {
    // SAFETY: caller's contract.
    unsafe { set_path(options, path, "authfile", |r| &mut r.authfile, err) }
}

/// As `dd_create_options_set_tls_verify`.
///
/// # Safety
///
/// `options` must be NULL or live options.
#[no_mangle]
pub unsafe extern "C" fn dd_apply_options_set_tls_verify(
    options: *mut dd_apply_options,
    tls_verify: bool,
) -> dd_status {
    // SAFETY: caller's contract.
    unsafe {
        with(options, std::ptr::null_mut(), |r| {
            r.tls_verify = tls_verify;
            Ok(())
        })
    }
}

/// As `dd_create_options_set_cert_dir`.
///
/// # Safety
///
/// `options` must be NULL or live options; `path` NULL or a NUL-terminated string; `err`
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dd_apply_options_set_cert_dir(
    options: *mut dd_apply_options,
    path: *const c_char,
    err: *mut *mut dd_error,
) -> dd_status {
    // SAFETY: caller's contract.
    unsafe { set_path(options, path, "cert_dir", |r| &mut r.cert_dir, err) }
}
