//! Referrers: the artifacts whose `subject` is a manifest (OCI Distribution 1.1). Listed
//! with the referrers API (`GET /v2/<name>/referrers/<digest>`) where the registry has it,
//! else with the tag schema that spec gives as its fallback: an image index tagged
//! `sha256-<hex of the subject digest>` that clients keep themselves.
//!
//! A registry without conditional writes (CNCF distribution) cannot keep two clients from
//! writing that index at once, so [`Registry::add_referrer`] reads, merges, writes, waits
//! for writes in flight to land, and reads again, merging once more whenever its entry is
//! gone, a bounded number of times.

use std::collections::BTreeMap;
use std::time::Duration;

use ureq::http::StatusCode;

use super::client::{header, read_bounded, Payload, Registry};
use super::push::push_scope;
use crate::digest::Digest;
use crate::error::{Error, Result};

/// The media type of an OCI image index (the referrers list and the fallback index).
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";

/// How many times the fallback index is merged again after another client's write.
pub const FALLBACK_RETRIES: u32 = 8;

/// One referrer: the descriptor of an artifact manifest, with what it says of itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Referrer {
    /// The artifact manifest's media type.
    pub media_type: String,
    /// The artifact manifest's digest.
    pub digest: Digest,
    /// The artifact manifest's size.
    pub size: u64,
    /// Its `artifactType`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Its annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Where a registry's referrers were found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReferrersFrom {
    /// The referrers API.
    Api,
    /// The `sha256-<hex>` tag of the fallback schema.
    Tag,
}

impl ReferrersFrom {
    /// `api` or `tag`.
    pub fn name(self) -> &'static str {
        match self {
            ReferrersFrom::Api => "api",
            ReferrersFrom::Tag => "tag",
        }
    }
}

/// The fallback tag for `subject`: `sha256-<hex>`.
pub fn fallback_tag(subject: &Digest) -> String {
    format!("{}-{}", subject.algorithm(), subject.hex())
}

impl Registry {
    /// The referrers of `subject` in `repository` (of `artifact_type` only, if given): from
    /// the referrers API, or from the fallback tag where the registry has no such API.
    pub fn referrers(
        &self,
        repository: &str,
        subject: &Digest,
        artifact_type: Option<&str>,
        max: u64,
    ) -> Result<(Vec<Referrer>, ReferrersFrom)> {
        let mut path = format!("/v2/{repository}/referrers/{subject}");
        if let Some(t) = artifact_type {
            path.push_str(&format!("?artifactType={t}"));
        }
        let scope = format!("repository:{repository}:pull");
        let resp = self.request(
            "GET",
            &path,
            &scope,
            &[("Accept", INDEX_MEDIA_TYPE)],
            &Payload::Empty,
        )?;
        let what = format!("referrers of {subject} in {}/{repository}", self.name());
        let (list, from) = if resp.status() == StatusCode::NOT_FOUND {
            // No referrers API (a registry that has one answers 200, empty or not).
            let _ = read_bounded(resp, 64 * 1024, &what);
            (
                self.fallback_index(repository, subject, max)?.1,
                ReferrersFrom::Tag,
            )
        } else {
            let resp = self.check_scoped(resp, &format!("GET {what}"), &scope)?;
            let filtered = header(&resp, "oci-filters-applied")
                .is_some_and(|f| f.split(',').any(|x| x.trim() == "artifactType"));
            let raw = read_bounded(resp, max, &what)?;
            self.count_manifest_bytes(raw.len() as u64);
            let mut list = entries(&parse_index(&raw, &what)?, &what)?;
            if !filtered {
                if let Some(t) = artifact_type {
                    list.retain(|r| r.artifact_type.as_deref() == Some(t));
                }
            }
            return Ok((list, ReferrersFrom::Api));
        };
        let list = match artifact_type {
            Some(t) => list
                .into_iter()
                .filter(|r| r.artifact_type.as_deref() == Some(t))
                .collect(),
            None => list,
        };
        Ok((list, from))
    }

    /// The fallback index of `subject` (an empty one when the tag does not exist) as JSON,
    /// and its entries.
    fn fallback_index(
        &self,
        repository: &str,
        subject: &Digest,
        max: u64,
    ) -> Result<(serde_json::Value, Vec<Referrer>)> {
        let tag = fallback_tag(subject);
        let what = format!(
            "{}/{repository}:{tag} (referrers of {subject})",
            self.name()
        );
        match self.manifest(repository, &tag, max) {
            Ok((raw, _, _)) => {
                let index = parse_index(&raw, &what)?;
                let list = entries(&index, &what)?;
                Ok((index, list))
            }
            Err(Error::ImageNotFound { .. }) => Ok((
                serde_json::json!({
                    "schemaVersion": 2,
                    "mediaType": INDEX_MEDIA_TYPE,
                    "manifests": [],
                }),
                Vec::new(),
            )),
            Err(e) => Err(e),
        }
    }

    /// Lists `referrer` among the referrers of `subject` in `repository`'s fallback index,
    /// keeping every other entry as it is: read, merge, write, wait `settle` for writes in
    /// flight, read again; merged again while the entry is missing (another client wrote
    /// over it), at most [`FALLBACK_RETRIES`] times.
    pub fn add_referrer(
        &self,
        repository: &str,
        subject: &Digest,
        referrer: &Referrer,
        settle: Duration,
        max: u64,
    ) -> Result<()> {
        let tag = fallback_tag(subject);
        let what = format!("{}/{repository}:{tag}", self.name());
        let mut attempts = 0u32;
        loop {
            let (mut index, list) = self.fallback_index(repository, subject, max)?;
            if !list.iter().any(|r| r.digest == referrer.digest) {
                let entry = serde_json::to_value(referrer).map_err(|e| {
                    Error::Other(format!("internal: a referrer did not serialize: {e}"))
                })?;
                match index.get_mut("manifests").and_then(|m| m.as_array_mut()) {
                    Some(m) => m.push(entry),
                    None => {
                        return Err(Error::InvalidField {
                            file: what,
                            field: "manifests".into(),
                            reason: "not an array".into(),
                        })
                    }
                }
                let bytes = serde_json::to_vec(&index).map_err(|e| {
                    Error::Other(format!("internal: an index did not serialize: {e}"))
                })?;
                tracing::debug!(index = %what, entries = list.len() + 1, "writing the referrers index");
                self.put_manifest(repository, &tag, INDEX_MEDIA_TYPE, &bytes)?;
            }
            std::thread::sleep(settle);
            let (_, now) = self.fallback_index(repository, subject, max)?;
            if now.iter().any(|r| r.digest == referrer.digest) {
                return Ok(());
            }
            attempts += 1;
            if attempts > FALLBACK_RETRIES {
                return Err(Error::Registry {
                    registry: self.name().to_string(),
                    operation: format!("PUT referrers index {what}"),
                    status: 0,
                    message: format!(
                        "other clients wrote over this entry {attempts} times; try again"
                    ),
                });
            }
            tracing::info!(index = %what, attempt = attempts, "another client wrote the referrers index: merging again");
        }
    }

    /// The tags of `repository` (`GET /v2/<name>/tags/list`, following `Link` pages).
    pub fn tags(&self, repository: &str, max: u64) -> Result<Vec<String>> {
        #[derive(serde::Deserialize)]
        struct Page {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let scope = format!("repository:{repository}:pull");
        let mut target = format!("/v2/{repository}/tags/list");
        let mut tags = Vec::new();
        for _ in 0..1000 {
            let resp = self.request("GET", &target, &scope, &[], &Payload::Empty)?;
            let what = format!("tags of {}/{repository}", self.name());
            let resp = self.check_scoped(resp, &format!("GET {what}"), &scope)?;
            let next = header(&resp, "link").and_then(|l| {
                l.split(';').next().map(|u| {
                    u.trim()
                        .trim_start_matches('<')
                        .trim_end_matches('>')
                        .to_string()
                })
            });
            let raw = read_bounded(resp, max, &what)?;
            let page: Page = serde_json::from_slice(&raw).map_err(|e| Error::InvalidJson {
                file: what.clone(),
                line: e.line(),
                column: e.column(),
                message: e.to_string(),
            })?;
            tags.extend(page.tags.unwrap_or_default());
            match next {
                Some(n) if !n.is_empty() => target = self.absolute(&n),
                _ => return Ok(tags),
            }
        }
        Ok(tags)
    }

    /// Puts a manifest with a `subject` by its digest, and says whether the registry
    /// indexed it as a referrer itself (`OCI-Subject` in its answer).
    pub fn put_referrer_manifest(
        &self,
        repository: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<(Digest, bool)> {
        let digest = Digest::of(bytes);
        let scope = push_scope(repository);
        let what = format!("manifest {}/{repository}@{digest}", self.name());
        let resp = self.request(
            "PUT",
            &format!("/v2/{repository}/manifests/{digest}"),
            &scope,
            &[("Content-Type", media_type)],
            &Payload::Bytes(bytes),
        )?;
        let resp = self.check_scoped(resp, &format!("PUT {what}"), &scope)?;
        let indexed = header(&resp, "oci-subject").is_some();
        Ok((digest, indexed))
    }
}

/// The referrers an image index lists (a referrers API answer or a fallback index), as
/// [`Registry::referrers`] reads them: entries that are not descriptors are skipped; an
/// index that is not JSON, or has no `manifests` array, is an error naming `what`.
pub fn parse_referrers(raw: &[u8], what: &str) -> Result<Vec<Referrer>> {
    entries(&parse_index(raw, what)?, what)
}

fn parse_index(raw: &[u8], what: &str) -> Result<serde_json::Value> {
    serde_json::from_slice(raw).map_err(|e| Error::InvalidJson {
        file: what.to_string(),
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })
}

/// The entries of an index; entries that are not descriptors are skipped.
fn entries(index: &serde_json::Value, what: &str) -> Result<Vec<Referrer>> {
    let Some(list) = index.get("manifests").and_then(|m| m.as_array()) else {
        return Err(Error::InvalidField {
            file: what.to_string(),
            field: "manifests".into(),
            reason: "missing or not an array".into(),
        });
    };
    Ok(list
        .iter()
        .filter_map(|e| match serde_json::from_value::<Referrer>(e.clone()) {
            Ok(r) => Some(r),
            Err(err) => {
                tracing::debug!(index = what, error = %err, "skipping an index entry that is not a descriptor");
                None
            }
        })
        .collect())
}
