//! The push half of the distribution API: whether a blob is there already, mounting one
//! from another repository of the same registry, chunked uploads that resume after a lost
//! connection, and manifests put last.

use std::fs::File;

use ureq::http::StatusCode;

use super::client::{header, read_bounded, Payload, Registry, BLOB_RETRIES};
use crate::digest::Digest;
use crate::error::{Error, Result};

/// The scope a push to `repository` needs.
pub fn push_scope(repository: &str) -> String {
    format!("repository:{repository}:pull,push")
}

impl Registry {
    /// Whether `repository` has the blob `digest` (`HEAD`), of `size` bytes.
    pub fn has_blob(&self, repository: &str, digest: &Digest, size: u64) -> Result<bool> {
        let scope = push_scope(repository);
        let resp = self.request(
            "HEAD",
            &format!("/v2/{repository}/blobs/{digest}"),
            &scope,
            &[],
            &Payload::Empty,
        )?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(false);
        }
        let resp = self.check_scoped(resp, &format!("HEAD blob {digest}"), &scope)?;
        // A registry that knows the digest with another size holds something else.
        let length = header(&resp, "content-length").and_then(|l| l.parse::<u64>().ok());
        Ok(length.is_none_or(|l| l == size))
    }

    /// Checks, writing nothing that lasts, that the credentials found may push to
    /// `repository`: an upload is started and cancelled at once. A registry that refuses
    /// is an [`Error::Unauthorized`] naming the push scope.
    pub fn check_push(&self, repository: &str) -> Result<()> {
        let location = self
            .start_upload(repository, None)?
            .ok_or_else(|| Error::Other("internal: an upload without mount was mounted".into()))?;
        let scope = push_scope(repository);
        // A registry that cannot cancel keeps an upload that expires on its own.
        if let Err(e) = self.request("DELETE", &location, &scope, &[], &Payload::Empty) {
            tracing::debug!(registry = self.name(), error = %e, "could not cancel the probe upload");
        }
        Ok(())
    }

    /// Mounts the blob `digest` of `from` (another repository of this registry) into
    /// `repository`. Returns whether the registry mounted it (it may refuse, e.g. when the
    /// credentials cannot read `from`; then nothing is left behind).
    pub fn mount_blob(&self, repository: &str, digest: &Digest, from: &str) -> Result<bool> {
        match self.start_upload(repository, Some((digest, from)))? {
            None => Ok(true),
            Some(location) => {
                let scope = push_scope(repository);
                if let Err(e) = self.request("DELETE", &location, &scope, &[], &Payload::Empty) {
                    tracing::debug!(registry = self.name(), error = %e, "could not cancel the upload a refused mount started");
                }
                Ok(false)
            }
        }
    }

    /// Starts an upload (`POST .../blobs/uploads/`), or a mount: `None` when the blob was
    /// mounted, else the upload's location.
    fn start_upload(
        &self,
        repository: &str,
        mount: Option<(&Digest, &str)>,
    ) -> Result<Option<String>> {
        let mut scope = push_scope(repository);
        let mut path = format!("/v2/{repository}/blobs/uploads/");
        if let Some((digest, from)) = mount {
            scope.push_str(&format!(" repository:{from}:pull"));
            path.push_str(&format!("?mount={digest}&from={from}"));
        }
        let operation = format!("start an upload to {}/{repository}", self.name());
        let resp = self.request("POST", &path, &scope, &[], &Payload::Bytes(&[]))?;
        let status = resp.status();
        let resp = self.check_scoped(resp, &operation, &push_scope(repository))?;
        if mount.is_some() && status == StatusCode::CREATED {
            return Ok(None);
        }
        let location = header(&resp, "location").ok_or_else(|| Error::Registry {
            registry: self.name().to_string(),
            operation: operation.clone(),
            status: status.as_u16(),
            message: "the answer has no Location".into(),
        })?;
        Ok(Some(self.absolute(&location)))
    }

    /// Uploads the blob `digest`, the first `size` bytes of `file`, to `repository` in
    /// chunks, each `PATCH` resumed from what the registry says it received when a
    /// connection fails (a bounded number of times), then closed with its digest.
    pub fn upload_blob(
        &self,
        repository: &str,
        digest: &Digest,
        file: &File,
        size: u64,
    ) -> Result<()> {
        let scope = push_scope(repository);
        let what = format!("upload of blob {digest} to {}/{repository}", self.name());
        let Some(mut location) = self.start_upload(repository, None)? else {
            return Err(Error::Other(format!("internal: {what} was mounted")));
        };
        let mut offset = 0u64;
        let mut retries = 0u32;
        let chunk = self.chunk_size().max(1);
        while offset < size {
            let len = chunk.min(size - offset);
            let range = format!("{offset}-{}", offset + len - 1);
            let sent = self.request(
                "PATCH",
                &location,
                &scope,
                &[
                    ("Content-Type", "application/octet-stream"),
                    ("Content-Range", range.as_str()),
                ],
                &Payload::File { file, offset, len },
            );
            let failure = match sent {
                Ok(resp) if resp.status().is_success() => {
                    if let Some(l) = header(&resp, "location") {
                        location = self.absolute(&l);
                    }
                    offset += len;
                    continue;
                }
                // A refusal with a status is final; a lost connection is resumed.
                Ok(resp) => {
                    return Err(self
                        .check_scoped(resp, &format!("PATCH {what}"), &scope)
                        .err()
                        .unwrap_or_else(|| Error::Other(format!("{what}: refused"))))
                }
                Err(e) => e,
            };
            if retries >= BLOB_RETRIES {
                return Err(Error::Registry {
                    registry: self.name().to_string(),
                    operation: format!("PATCH {what}"),
                    status: 0,
                    message: format!(
                        "the connection failed {} times, the last at byte {offset} of {size}: {failure}",
                        retries + 1
                    ),
                });
            }
            retries += 1;
            std::thread::sleep(std::time::Duration::from_millis(200 * u64::from(retries)));
            // Resume from what the registry holds; a registry that dropped the upload (as
            // distribution does when a cut PATCH left it at another offset than its
            // Location records) gets a new one, from the start.
            match self.upload_status(&location, &scope, &what) {
                Ok((held, next)) if held <= offset => {
                    tracing::info!(blob = %digest, offset = held, attempt = retries, error = %failure, "resuming an upload");
                    offset = held;
                    location = next.unwrap_or(location);
                }
                other => {
                    tracing::info!(blob = %digest, attempt = retries, error = %failure, status = ?other.err(), "restarting an upload");
                    let Some(fresh) = self.start_upload(repository, None)? else {
                        return Err(Error::Other(format!("internal: {what} was mounted")));
                    };
                    location = fresh;
                    offset = 0;
                }
            }
        }
        let sep = if location.contains('?') { '&' } else { '?' };
        let close = format!("{location}{sep}digest={digest}");
        let resp = self.request("PUT", &close, &scope, &[], &Payload::Bytes(&[]))?;
        self.check_scoped(resp, &format!("PUT {what}"), &scope)?;
        Ok(())
    }

    /// Uploads a small blob (a config) in one request, unless it is there already.
    pub fn put_small_blob(&self, repository: &str, digest: &Digest, bytes: &[u8]) -> Result<()> {
        if self.has_blob(repository, digest, bytes.len() as u64)? {
            return Ok(());
        }
        let scope = push_scope(repository);
        let what = format!("upload of blob {digest} to {}/{repository}", self.name());
        let Some(location) = self.start_upload(repository, None)? else {
            return Err(Error::Other(format!("internal: {what} was mounted")));
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        let close = format!("{location}{sep}digest={digest}");
        let resp = self.request(
            "PUT",
            &close,
            &scope,
            &[("Content-Type", "application/octet-stream")],
            &Payload::Bytes(bytes),
        )?;
        self.check_scoped(resp, &format!("PUT {what}"), &scope)?;
        Ok(())
    }

    /// Puts the manifest `bytes` (of `media_type`) under `reference` (a tag, or its
    /// digest) in `repository`, and checks the digest the registry says it stored.
    pub fn put_manifest(
        &self,
        repository: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<Digest> {
        let scope = push_scope(repository);
        let digest = Digest::of(bytes);
        let what = format!("manifest {}/{repository}:{reference}", self.name());
        let resp = self.request(
            "PUT",
            &format!("/v2/{repository}/manifests/{reference}"),
            &scope,
            &[("Content-Type", media_type)],
            &Payload::Bytes(bytes),
        )?;
        let resp = self.check_scoped(resp, &format!("PUT {what}"), &scope)?;
        if let Some(stored) = header(&resp, "docker-content-digest") {
            if stored != digest.to_string() {
                return Err(Error::DigestMismatch {
                    what: format!("{what} (Docker-Content-Digest of the stored manifest)"),
                    expected: digest.to_string(),
                    found: stored,
                });
            }
        }
        Ok(digest)
    }

    /// How many bytes of the upload at `location` the registry holds (`GET`, `Range: 0-N`),
    /// and where the upload goes on, if the registry says.
    fn upload_status(
        &self,
        location: &str,
        scope: &str,
        what: &str,
    ) -> Result<(u64, Option<String>)> {
        let resp = self.request("GET", location, scope, &[], &Payload::Empty)?;
        let resp = self.check_scoped(resp, &format!("GET status of {what}"), scope)?;
        let range = header(&resp, "range");
        let next = header(&resp, "location").map(|l| self.absolute(&l));
        let _ = read_bounded(resp, 64 * 1024, what);
        // `0-N`: bytes 0 to N held. distribution also says `0-0` for an empty upload,
        // read as empty: were one byte held, the next PATCH is refused, not misplaced.
        let held = match range.as_deref().and_then(|r| r.rsplit_once('-')) {
            Some((_, end)) => match end.trim().parse::<u64>() {
                Ok(0) | Err(_) => 0,
                Ok(e) => e + 1,
            },
            None => 0,
        };
        Ok((held, next))
    }
}
