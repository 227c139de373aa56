//! Manifest documents, detected from their content.
//!
//! A document's kind is decided by its shape, never by the file it came from:
//!
//! * a top-level array whose objects have `Layers` is a Docker archive `manifest.json`;
//! * an object with `manifests` is an OCI image index, or a Docker manifest list when its
//!   `mediaType` says so;
//! * an object with `layers` is an OCI image manifest, or a Docker schema2 manifest when its
//!   `mediaType` says so;
//! * anything else is refused with what was seen (`schemaVersion`, `mediaType`, shape).
//!
//! The raw bytes are kept next to the parsed view: digests are always computed on the raw
//! bytes, and documents that travel (configs, manifests) are re-emitted byte for byte.

use std::fmt;

use serde::de::{DeserializeOwned, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::platform::Platform;

/// OCI image index media type.
pub const MEDIA_TYPE_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image manifest media type.
pub const MEDIA_TYPE_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image config media type.
pub const MEDIA_TYPE_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker manifest list media type.
pub const MEDIA_TYPE_DOCKER_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker schema2 manifest media type.
pub const MEDIA_TYPE_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker image config media type.
pub const MEDIA_TYPE_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// The kinds of manifest document we read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ManifestKind {
    /// OCI image index (`index.json` or a nested index blob).
    OciIndex,
    /// Docker manifest list (schema2 "fat manifest").
    DockerManifestList,
    /// OCI image manifest.
    OciManifest,
    /// Docker image manifest, schema 2.
    DockerSchema2,
    /// The `manifest.json` of a `docker save` archive.
    DockerArchiveManifest,
}

impl ManifestKind {
    /// Whether this kind lists other manifests (index or list).
    pub fn is_index(self) -> bool {
        matches!(
            self,
            ManifestKind::OciIndex | ManifestKind::DockerManifestList
        )
    }

    /// A human name.
    pub fn name(self) -> &'static str {
        match self {
            ManifestKind::OciIndex => "OCI image index",
            ManifestKind::DockerManifestList => "Docker manifest list",
            ManifestKind::OciManifest => "OCI image manifest",
            ManifestKind::DockerSchema2 => "Docker schema2 manifest",
            ManifestKind::DockerArchiveManifest => "Docker archive manifest.json",
        }
    }
}

impl fmt::Display for ManifestKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Parses JSON bytes, reporting syntax errors with line and column and data errors with the
/// JSON path of the offending field.
///
/// Every document is first held to [`max_json_values`] values (see [`check_json_values`]),
/// so that what a parse builds stays in proportion to that limit, not to the document's
/// bytes alone.
pub fn parse_json<T: DeserializeOwned>(raw: &[u8], file: &str) -> Result<T> {
    check_json_values(raw, file, max_json_values())?;
    let mut de = serde_json::Deserializer::from_slice(raw);
    let parsed: std::result::Result<T, serde_path_to_error::Error<serde_json::Error>> =
        serde_path_to_error::deserialize(&mut de);
    match parsed {
        Ok(v) => {
            de.end().map_err(|e| json_syntax_error(file, &e))?;
            Ok(v)
        }
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if inner.is_data() {
                let field = if path == "." {
                    "(document)".to_string()
                } else {
                    path
                };
                Err(Error::InvalidField {
                    file: file.to_string(),
                    field,
                    reason: strip_position(&inner.to_string()),
                })
            } else {
                Err(json_syntax_error(file, &inner))
            }
        }
    }
}

/// Environment variable for [`max_json_values`].
pub const ENV_MAX_JSON_VALUES: &str = "DOCKER_DELTA_MAX_JSON_VALUES";

/// Most values (array elements, object members, the document itself) a JSON document from
/// outside may hold: `DOCKER_DELTA_MAX_JSON_VALUES`, default 1 048 576.
///
/// A document of 64 MiB (`DOCKER_DELTA_MAX_JSON_SIZE`) can hold 30 million values, which
/// as a `serde_json::Value` or as typed collections take some 40 bytes each and more: a
/// gigabyte. Real documents hold a few thousand (an image with 1024 layers, a config with
/// a long history), so the default bounds a parse at some 100 MiB and refuses no image.
///
/// Read from [`Limits::default`](crate::transport::Limits): the process's limits when
/// set, else the environment.
pub fn max_json_values() -> u64 {
    crate::transport::Limits::default().max_json_values
}

/// Refuses a document holding more than `max` values, counted by one pass over its bytes
/// before anything is parsed: each `[`, `{` and `,` outside strings starts a value (an
/// upper bound; a malformed document is left to the parser to report with its position).
pub fn check_json_values(raw: &[u8], file: &str, max: u64) -> Result<()> {
    let found = count_json_values(raw);
    if found > max {
        return Err(Error::LimitExceeded {
            what: file.to_string(),
            limit: "JSON values".into(),
            max,
            found,
            option: ENV_MAX_JSON_VALUES.into(),
        });
    }
    Ok(())
}

/// The number of values in a JSON text, as [`check_json_values`] counts them.
fn count_json_values(raw: &[u8]) -> u64 {
    let (mut count, mut in_string, mut escaped) = (1u64, false, false);
    for &b in raw {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else {
            match b {
                b'"' => in_string = true,
                b'[' | b'{' | b',' => count += 1,
                _ => {}
            }
        }
    }
    count
}

fn json_syntax_error(file: &str, e: &serde_json::Error) -> Error {
    Error::InvalidJson {
        file: file.to_string(),
        line: e.line(),
        column: e.column(),
        message: strip_position(&e.to_string()),
    }
}

/// serde_json appends " at line L column C"; we report those as fields.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// Detects the kind of a manifest document from its content.
pub fn detect(raw: &[u8], file: &str) -> Result<ManifestKind> {
    let shape: Shape = parse_json(raw, file)?;
    detect_shape(&shape, file)
}

/// What kind detection needs of a document, read without building it: the top-level
/// type, an array's entries' `Layers` key, an object's keys and its `schemaVersion` and
/// `mediaType`. Every other value is skipped ([`Skip`]), so that detecting a large
/// document allocates nothing in proportion to it.
enum Shape {
    Array {
        len: usize,
        all_have_layers: bool,
    },
    Object {
        schema: Option<i64>,
        media_type: Option<String>,
        has_manifests: bool,
        has_layers: bool,
        has_fs_layers: bool,
        has_rootfs: bool,
    },
    Other(&'static str),
}

impl<'de> Deserialize<'de> for Shape {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Shape, D::Error> {
        d.deserialize_any(ShapeVisitor)
    }
}

struct ShapeVisitor;

impl<'de> Visitor<'de> for ShapeVisitor {
    type Value = Shape;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON document")
    }
    fn visit_bool<E>(self, _: bool) -> std::result::Result<Shape, E> {
        Ok(Shape::Other("boolean"))
    }
    fn visit_i64<E>(self, _: i64) -> std::result::Result<Shape, E> {
        Ok(Shape::Other("number"))
    }
    fn visit_u64<E>(self, _: u64) -> std::result::Result<Shape, E> {
        Ok(Shape::Other("number"))
    }
    fn visit_f64<E>(self, _: f64) -> std::result::Result<Shape, E> {
        Ok(Shape::Other("number"))
    }
    fn visit_str<E>(self, _: &str) -> std::result::Result<Shape, E> {
        Ok(Shape::Other("string"))
    }
    fn visit_unit<E>(self) -> std::result::Result<Shape, E> {
        Ok(Shape::Other("null"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Shape, A::Error> {
        let (mut len, mut all_have_layers) = (0, true);
        while let Some(HasLayers(has)) = seq.next_element()? {
            len += 1;
            all_have_layers &= has;
        }
        Ok(Shape::Array {
            len,
            all_have_layers,
        })
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Shape, A::Error> {
        let (mut schema, mut media_type) = (None, None);
        let (mut has_manifests, mut has_layers, mut has_fs_layers, mut has_rootfs) =
            (false, false, false, false);
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match &*key {
                "schemaVersion" => schema = map.next_value::<Scalar>()?.int(),
                "mediaType" => media_type = map.next_value::<Scalar>()?.string(),
                other => {
                    match other {
                        "manifests" => has_manifests = true,
                        "layers" => has_layers = true,
                        "fsLayers" => has_fs_layers = true,
                        "rootfs" => has_rootfs = true,
                        _ => {}
                    }
                    map.next_value::<Skip>()?;
                }
            }
        }
        Ok(Shape::Object {
            schema,
            media_type,
            has_manifests,
            has_layers,
            has_fs_layers,
            has_rootfs,
        })
    }
}

/// Whether a value is an object with a `Layers` key (its values skipped).
struct HasLayers(bool);

impl<'de> Deserialize<'de> for HasLayers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<HasLayers, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = HasLayers;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<HasLayers, A::Error> {
                let mut has = false;
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    has |= key == "Layers";
                    map.next_value::<Skip>()?;
                }
                Ok(HasLayers(has))
            }
            fn visit_seq<A: SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<HasLayers, A::Error> {
                while seq.next_element::<Skip>()?.is_some() {}
                Ok(HasLayers(false))
            }
            fn visit_bool<E>(self, _: bool) -> std::result::Result<HasLayers, E> {
                Ok(HasLayers(false))
            }
            fn visit_i64<E>(self, _: i64) -> std::result::Result<HasLayers, E> {
                Ok(HasLayers(false))
            }
            fn visit_u64<E>(self, _: u64) -> std::result::Result<HasLayers, E> {
                Ok(HasLayers(false))
            }
            fn visit_f64<E>(self, _: f64) -> std::result::Result<HasLayers, E> {
                Ok(HasLayers(false))
            }
            fn visit_str<E>(self, _: &str) -> std::result::Result<HasLayers, E> {
                Ok(HasLayers(false))
            }
            fn visit_unit<E>(self) -> std::result::Result<HasLayers, E> {
                Ok(HasLayers(false))
            }
        }
        d.deserialize_any(V)
    }
}

/// Any JSON value, checked and dropped as it is read: unlike `serde::de::IgnoredAny`,
/// strings are read as strings, so a document that is not UTF-8 is refused as a
/// `Value` parse refuses it, and nothing is kept.
struct Skip;

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Skip, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Skip;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Skip, A::Error> {
                while map.next_entry::<Skip, Skip>()?.is_some() {}
                Ok(Skip)
            }
            fn visit_seq<A: SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<Skip, A::Error> {
                while seq.next_element::<Skip>()?.is_some() {}
                Ok(Skip)
            }
            fn visit_bool<E>(self, _: bool) -> std::result::Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_i64<E>(self, _: i64) -> std::result::Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_u64<E>(self, _: u64) -> std::result::Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_f64<E>(self, _: f64) -> std::result::Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_str<E>(self, _: &str) -> std::result::Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_unit<E>(self) -> std::result::Result<Skip, E> {
                Ok(Skip)
            }
        }
        d.deserialize_any(V)
    }
}

/// A scalar kept when it is an integer or a string (what `Value::as_i64`/`as_str` give);
/// any other value, a container included, is skipped without being built.
enum Scalar {
    Int(i64),
    Str(String),
    Other,
}

impl Scalar {
    fn int(self) -> Option<i64> {
        match self {
            Scalar::Int(i) => Some(i),
            _ => None,
        }
    }
    fn string(self) -> Option<String> {
        match self {
            Scalar::Str(s) => Some(s),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Scalar, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Scalar, A::Error> {
                while map.next_entry::<Skip, Skip>()?.is_some() {}
                Ok(Scalar::Other)
            }
            fn visit_seq<A: SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<Scalar, A::Error> {
                while seq.next_element::<Skip>()?.is_some() {}
                Ok(Scalar::Other)
            }
            fn visit_bool<E>(self, _: bool) -> std::result::Result<Scalar, E> {
                Ok(Scalar::Other)
            }
            fn visit_i64<E>(self, v: i64) -> std::result::Result<Scalar, E> {
                Ok(Scalar::Int(v))
            }
            fn visit_u64<E>(self, v: u64) -> std::result::Result<Scalar, E> {
                Ok(i64::try_from(v).map_or(Scalar::Other, Scalar::Int))
            }
            fn visit_f64<E>(self, _: f64) -> std::result::Result<Scalar, E> {
                Ok(Scalar::Other)
            }
            fn visit_str<E>(self, v: &str) -> std::result::Result<Scalar, E> {
                Ok(Scalar::Str(v.to_string()))
            }
            fn visit_unit<E>(self) -> std::result::Result<Scalar, E> {
                Ok(Scalar::Other)
            }
        }
        d.deserialize_any(V)
    }
}

fn detect_shape(shape: &Shape, file: &str) -> Result<ManifestKind> {
    let unsupported = |found: String| Error::UnsupportedManifest {
        file: file.to_string(),
        found,
    };
    match shape {
        Shape::Array {
            len,
            all_have_layers,
        } => {
            if *len > 0 && *all_have_layers {
                Ok(ManifestKind::DockerArchiveManifest)
            } else if *len == 0 {
                Err(unsupported(
                    "an empty JSON array (a docker-archive manifest.json lists at least one image)"
                        .into(),
                ))
            } else {
                Err(unsupported("a JSON array whose entries have no \"Layers\" (not a docker-archive manifest.json)".into()))
            }
        }
        Shape::Object {
            schema,
            media_type,
            has_manifests,
            has_layers,
            has_fs_layers,
            has_rootfs,
        } => {
            let media_type = media_type.as_deref();
            let seen = || {
                format!(
                    "schemaVersion {}, mediaType {}",
                    schema.map_or("absent".to_string(), |s| s.to_string()),
                    media_type.map_or("absent".to_string(), |m| format!("{m:?}"))
                )
            };
            if *schema == Some(1) || *has_fs_layers {
                return Err(unsupported(format!(
                    "a Docker schema1 manifest ({}); only schema2 and OCI manifests are supported",
                    seen()
                )));
            }
            if *has_manifests {
                return match media_type {
                    Some(MEDIA_TYPE_DOCKER_LIST) => Ok(ManifestKind::DockerManifestList),
                    None | Some(MEDIA_TYPE_OCI_INDEX) => Ok(ManifestKind::OciIndex),
                    Some(_) => Err(unsupported(format!(
                        "an index with an unknown media type ({})",
                        seen()
                    ))),
                };
            }
            if *has_layers {
                return match media_type {
                    Some(MEDIA_TYPE_DOCKER_MANIFEST) => Ok(ManifestKind::DockerSchema2),
                    None | Some(MEDIA_TYPE_OCI_MANIFEST) => Ok(ManifestKind::OciManifest),
                    Some(_) => Err(unsupported(format!(
                        "a manifest with an unknown media type ({})",
                        seen()
                    ))),
                };
            }
            if *has_rootfs {
                return Err(unsupported(format!(
                    "an image config, not a manifest ({})",
                    seen()
                )));
            }
            Err(unsupported(format!(
                "a JSON object with neither \"manifests\" nor \"layers\" ({})",
                seen()
            )))
        }
        Shape::Other(kind) => Err(unsupported(format!("a JSON {kind}"))),
    }
}

/// A content descriptor (the part of OCI descriptors we use), validated.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Descriptor {
    /// The media type, as written.
    pub media_type: Option<String>,
    /// The content digest.
    pub digest: Digest,
    /// The content size in bytes.
    pub size: u64,
    /// The platform, for index entries.
    pub platform: Option<Platform>,
    /// Annotations (e.g. `org.opencontainers.image.ref.name`).
    pub annotations: std::collections::BTreeMap<String, String>,
}

/// The annotation naming a manifest in an OCI layout.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The annotation containerd uses for the full image name.
pub const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";

impl Descriptor {
    fn from_oci(d: &oci_spec::image::Descriptor, file: &str, field: &str) -> Result<Descriptor> {
        let digest =
            Digest::parse_in(d.digest().as_ref(), Some(&format!("{file} {field}.digest")))?;
        let platform = d.platform().as_ref().map(|p| Platform {
            os: p.os().to_string(),
            architecture: p.architecture().to_string(),
            variant: p.variant().clone(),
        });
        Ok(Descriptor {
            media_type: Some(d.media_type().to_string()).filter(|m| !m.is_empty()),
            digest,
            size: d.size(),
            platform,
            annotations: d
                .annotations()
                .as_ref()
                .map(|a| a.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default(),
        })
    }

    /// The `org.opencontainers.image.ref.name` annotation, if any.
    pub fn ref_name(&self) -> Option<&str> {
        self.annotations
            .get(ANNOTATION_REF_NAME)
            .map(String::as_str)
    }
}

/// A parsed image index or manifest list.
#[derive(Debug, Clone)]
pub struct Index {
    /// OCI index or Docker list.
    pub kind: ManifestKind,
    /// The entries.
    pub manifests: Vec<Descriptor>,
}

/// A parsed image manifest (OCI or Docker schema2).
#[derive(Debug, Clone)]
pub struct Manifest {
    /// OCI manifest or Docker schema2.
    pub kind: ManifestKind,
    /// The config descriptor.
    pub config: Descriptor,
    /// The layer descriptors, base first.
    pub layers: Vec<Descriptor>,
}

/// One entry of a docker-archive `manifest.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct ArchiveEntry {
    /// Path of the config file inside the archive.
    #[serde(rename = "Config")]
    pub config: String,
    /// Tags of the image; absent or null when saved by ID.
    #[serde(rename = "RepoTags", default)]
    pub repo_tags: Option<Vec<String>>,
    /// Paths of the layer tars inside the archive, base first.
    #[serde(rename = "Layers")]
    pub layers: Vec<String>,
}

/// A parsed manifest document of any supported kind.
#[derive(Debug, Clone)]
pub enum Document {
    /// An index or manifest list.
    Index(Index),
    /// An image manifest.
    Manifest(Manifest),
    /// A docker-archive `manifest.json`.
    Archive(Vec<ArchiveEntry>),
}

impl Document {
    /// Detects the kind of `raw` and parses it.
    pub fn parse(raw: &[u8], file: &str) -> Result<Document> {
        let kind = detect(raw, file)?;
        tracing::debug!(file, kind = %kind, "detected manifest kind from content");
        Ok(match kind {
            ManifestKind::OciIndex | ManifestKind::DockerManifestList => {
                let idx: oci_spec::image::ImageIndex = parse_json(raw, file)?;
                check_schema_version(idx.schema_version(), file)?;
                let manifests = idx
                    .manifests()
                    .iter()
                    .enumerate()
                    .map(|(i, d)| Descriptor::from_oci(d, file, &format!("manifests[{i}]")))
                    .collect::<Result<_>>()?;
                Document::Index(Index { kind, manifests })
            }
            ManifestKind::OciManifest | ManifestKind::DockerSchema2 => {
                let m: oci_spec::image::ImageManifest = parse_json(raw, file)?;
                check_schema_version(m.schema_version(), file)?;
                let config = Descriptor::from_oci(m.config(), file, "config")?;
                let layers = m
                    .layers()
                    .iter()
                    .enumerate()
                    .map(|(i, d)| Descriptor::from_oci(d, file, &format!("layers[{i}]")))
                    .collect::<Result<_>>()?;
                Document::Manifest(Manifest {
                    kind,
                    config,
                    layers,
                })
            }
            ManifestKind::DockerArchiveManifest => Document::Archive(parse_json(raw, file)?),
        })
    }

    /// The kind of this document.
    pub fn kind(&self) -> ManifestKind {
        match self {
            Document::Index(i) => i.kind,
            Document::Manifest(m) => m.kind,
            Document::Archive(_) => ManifestKind::DockerArchiveManifest,
        }
    }
}

fn check_schema_version(v: u32, file: &str) -> Result<()> {
    if v == 2 {
        Ok(())
    } else {
        Err(Error::UnsupportedManifest {
            file: file.to_string(),
            found: format!("schemaVersion {v} (expected 2)"),
        })
    }
}

/// The parts of an image config we need. The config itself always travels as raw bytes.
#[derive(Debug, Clone)]
pub struct ConfigView {
    /// The image's platform.
    pub platform: Platform,
    /// `rootfs.diff_ids`: the sha256 of each uncompressed layer, base first.
    pub diff_ids: Vec<Digest>,
}

#[derive(Deserialize)]
struct RawConfig {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    variant: Option<String>,
    rootfs: RawRootFs,
}

#[derive(Deserialize)]
struct RawRootFs {
    #[serde(rename = "type")]
    kind: String,
    diff_ids: Vec<String>,
}

impl ConfigView {
    /// Parses an image config (OCI or Docker; they agree on the fields we read).
    pub fn parse(raw: &[u8], file: &str) -> Result<ConfigView> {
        let shape: Shape = parse_json(raw, file)?;
        let (has_layers, has_manifests) = match shape {
            Shape::Object {
                has_layers,
                has_manifests,
                ..
            } => (has_layers, has_manifests),
            Shape::Array { .. } | Shape::Other(_) => {
                let found = match shape {
                    Shape::Other(kind) => kind,
                    _ => "array",
                };
                return Err(Error::InvalidField {
                    file: file.to_string(),
                    field: "(document)".into(),
                    reason: format!("an image config is a JSON object, found a JSON {found}"),
                });
            }
        };
        if has_layers || has_manifests {
            return Err(Error::InvalidField {
                file: file.to_string(),
                field: "(document)".into(),
                reason: "this is a manifest, not an image config".into(),
            });
        }
        let c: RawConfig = parse_json(raw, file)?;
        if c.rootfs.kind != "layers" {
            return Err(Error::InvalidField {
                file: file.to_string(),
                field: "rootfs.type".into(),
                reason: format!("expected \"layers\", found {:?}", c.rootfs.kind),
            });
        }
        let diff_ids = c
            .rootfs
            .diff_ids
            .iter()
            .enumerate()
            .map(|(i, d)| Digest::parse_in(d, Some(&format!("{file} rootfs.diff_ids[{i}]"))))
            .collect::<Result<_>>()?;
        Ok(ConfigView {
            platform: Platform {
                os: c.os,
                architecture: c.architecture,
                variant: c.variant.filter(|v| !v.is_empty()),
            },
            diff_ids,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn oci_manifest(media_type: Option<&str>) -> String {
        let mt = media_type
            .map(|m| format!("\"mediaType\":\"{m}\","))
            .unwrap_or_default();
        format!(
            r#"{{"schemaVersion":2,{mt}"config":{{"mediaType":"{MEDIA_TYPE_OCI_CONFIG}","digest":"{D}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{D}","size":10}}]}}"#
        )
    }

    #[test]
    fn json_values_are_counted_outside_strings() {
        assert_eq!(count_json_values(b"0"), 1);
        assert_eq!(count_json_values(br#"{"a":[1,2,3],"b":{}}"#), 7);
        // Brackets, commas and escaped quotes inside strings do not count.
        assert_eq!(count_json_values(br#"["[,{\",]", ","]"#), 3);
        let many = format!("[{}0]", "0,".repeat(100));
        assert!(check_json_values(many.as_bytes(), "f.json", 102).is_ok());
        let e = check_json_values(many.as_bytes(), "f.json", 101).unwrap_err();
        assert!(
            matches!(&e, Error::LimitExceeded { what, max: 101, found: 102, option, .. }
                if what == "f.json" && option == ENV_MAX_JSON_VALUES),
            "{e:?}"
        );
        // parse_json applies it (default limit) before building anything.
        let huge = format!("{{\"layers\":[],\"x\":[{}0]}}", "0,".repeat(1 << 20));
        assert!(matches!(
            detect(huge.as_bytes(), "m.json"),
            Err(Error::LimitExceeded { .. })
        ));
    }

    #[test]
    fn detection_skips_values_but_still_checks_them() {
        // Unknown fields of every shape are skipped; the kind is still found.
        let doc = br#"{"x":{"y":[1,"s",null,true,1.5,{"z":[]}]},"layers":[],"mediaType":"application/vnd.oci.image.manifest.v1+json","schemaVersion":2}"#;
        assert_eq!(detect(doc, "m.json").unwrap(), ManifestKind::OciManifest);
        // A string that is not UTF-8, even in a skipped value, is invalid JSON as before.
        let e = detect(b"[{\"Config\":\"\xff\xfe\",\"Layers\":[]}]", "m.json").unwrap_err();
        assert!(matches!(e, Error::InvalidJson { line: 1, .. }), "{e:?}");
    }

    #[test]
    fn detects_each_kind_from_content() {
        let cases: Vec<(String, ManifestKind)> = vec![
            (oci_manifest(None), ManifestKind::OciManifest),
            (
                oci_manifest(Some(MEDIA_TYPE_OCI_MANIFEST)),
                ManifestKind::OciManifest,
            ),
            (
                oci_manifest(Some(MEDIA_TYPE_DOCKER_MANIFEST)),
                ManifestKind::DockerSchema2,
            ),
            (
                r#"{"schemaVersion":2,"manifests":[]}"#.into(),
                ManifestKind::OciIndex,
            ),
            (
                format!(
                    r#"{{"schemaVersion":2,"mediaType":"{MEDIA_TYPE_DOCKER_LIST}","manifests":[]}}"#
                ),
                ManifestKind::DockerManifestList,
            ),
            (
                r#"[{"Config":"a.json","RepoTags":null,"Layers":["x/layer.tar"]}]"#.into(),
                ManifestKind::DockerArchiveManifest,
            ),
        ];
        for (doc, want) in cases {
            assert_eq!(detect(doc.as_bytes(), "t.json").unwrap(), want, "{doc}");
            assert_eq!(
                Document::parse(doc.as_bytes(), "t.json").unwrap().kind(),
                want
            );
        }
    }

    #[test]
    fn errors_name_file_position_and_field() {
        let cases: Vec<(&str, String, &str)> = vec![
            (
                "bad syntax",
                "{\n  \"layers\": [,]\n}".into(),
                "t.json: invalid JSON at line 2, column 14",
            ),
            (
                "missing config",
                r#"{"schemaVersion":2,"layers":[]}"#.to_string(),
                "missing field `config`",
            ),
            (
                "missing digest",
                r#"{"schemaVersion":2,"config":{"mediaType":"x","size":1},"layers":[]}"#
                    .to_string(),
                "config: missing field `digest`",
            ),
            (
                "schema1",
                r#"{"schemaVersion":1,"fsLayers":[]}"#.into(),
                "Docker schema1 manifest (schemaVersion 1",
            ),
            (
                "unknown media type",
                r#"{"schemaVersion":2,"mediaType":"application/x-foo","layers":[]}"#.into(),
                "mediaType \"application/x-foo\"",
            ),
            (
                "config",
                r#"{"rootfs":{"type":"layers","diff_ids":[]}}"#.into(),
                "an image config, not a manifest",
            ),
            ("empty array", "[]".into(), "empty JSON array"),
            ("string", "\"x\"".into(), "a JSON string"),
            (
                "trailing",
                "{\"manifests\":[]} x".into(),
                "trailing characters",
            ),
            (
                "bad digest",
                format!(
                    r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{MEDIA_TYPE_OCI_MANIFEST}","digest":"sha256:abc","size":1}}]}}"#
                ),
                "manifests[0]",
            ),
        ];
        for (name, doc, want) in cases {
            let e = Document::parse(doc.as_bytes(), "t.json").expect_err(name);
            let msg = e.to_string();
            assert!(msg.contains(want), "{name}: {msg}");
            assert!(
                msg.starts_with("t.json") || msg.contains("t.json"),
                "{name}: {msg}"
            );
        }
    }

    #[test]
    fn config_view() {
        let raw = format!(
            r#"{{"architecture":"arm","os":"linux","variant":"v7","rootfs":{{"type":"layers","diff_ids":["{D}"]}},"config":{{"Env":null}}}}"#
        );
        let c = ConfigView::parse(raw.as_bytes(), "c.json").unwrap();
        assert_eq!(c.platform.to_string(), "linux/arm/v7");
        assert_eq!(c.diff_ids, vec![Digest::parse(D).unwrap()]);
        let bad = r#"{"os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:zz"]}}"#;
        let e = ConfigView::parse(bad.as_bytes(), "c.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("c.json rootfs.diff_ids[0]"), "{e}");
        let missing = r#"{"os":"linux"}"#;
        let e = ConfigView::parse(missing.as_bytes(), "c.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing field `rootfs`"), "{e}");
    }
}
