#!/usr/bin/env python3
"""Writes docs/schema/*.schema.json, the JSON Schemas of docs/JSON.md (one per document).

The schemas are the contract: change a document, change this script, run it and commit
its output with the code (cli/tests/json_contract.rs validates every command against them)."""
import json, os
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "schema")
BASE = "urn:docker-delta:json-schema:"
digest = {"type": "string", "pattern": "^sha256:[0-9a-f]{64}$"}
size = {"type": "integer", "minimum": 0}
def obj(props, required=None, desc=None):
    o = {"type": "object", "additionalProperties": False,
         "required": list(props) if required is None else required, "properties": props}
    if desc: o["description"] = desc
    return o
def nullable(s):
    return {"anyOf": [s, {"type": "null"}]}
defs = {
  "digest": dict(digest, description="A content digest, sha256:<64 hex digits>."),
  "size": dict(size, description="A size in bytes."),
  "platform": obj({"os": {"type": "string"}, "architecture": {"type": "string"},
                   "variant": {"type": "string"}}, required=["os", "architecture"],
                  desc="A platform; variant only when the image has one."),
  "image_summary": obj({
      "image_id": {"$ref": "#/$defs/digest"},
      "manifest_digest": nullable({"$ref": "#/$defs/digest"}),
      "reference": {"type": "string"},
      "repo_tags": {"type": "array", "items": {"type": "string"}},
      "platform": {"$ref": "#/$defs/platform"},
      "diff_ids": {"type": "array", "items": {"$ref": "#/$defs/digest"}},
  }, desc="An image, as every report names one (base, target)."),
  "old_layer": obj({"index": {"type": "integer", "minimum": 0},
                    "diff_id": nullable({"$ref": "#/$defs/digest"})}),
  "package_layer": obj({
      "index": {"type": "integer", "minimum": 0},
      "diff_id": {"$ref": "#/$defs/digest"},
      "method": {"enum": ["reference", "xdelta3", "zstd", "files", "full"]},
      "old_layers": nullable({"type": "array", "items": {"$ref": "#/$defs/old_layer"}}),
      "delta_size": nullable({"$ref": "#/$defs/size"}),
      "uncompressed_size": {"$ref": "#/$defs/size"},
      "stored_size": {"$ref": "#/$defs/size"},
      "media_type": {"type": "string"},
  }, desc="One layer of a package's new image: how it is rebuilt."),
  "compression_spec": obj({"algorithm": {"enum": ["xz", "zstd", "gzip", "none"]},
                           "level": {"type": "integer"}}),
  "delta_artifact": obj({
      "digest": {"$ref": "#/$defs/digest"},
      "base_image_id": {"$ref": "#/$defs/digest"},
      "base_chain_id": nullable({"$ref": "#/$defs/digest"}),
      "base_manifests": {"type": "array", "items": {"$ref": "#/$defs/digest"}},
      "base_reference": nullable({"type": "string"}),
      "new_image_id": {"$ref": "#/$defs/digest"},
      "platform": nullable({"$ref": "#/$defs/platform"}),
      "package_size": {"$ref": "#/$defs/size"},
      "saves": nullable({"$ref": "#/$defs/size"}),
      "format_version": nullable({"type": "integer", "minimum": 1}),
      "created": nullable({"type": "string"}),
  }, desc="A delta package artifact in a registry, as its annotations describe it (hints: the package's own header wins)."),
  "transfer_count": obj({"manifests": {"$ref": "#/$defs/size"}, "configs": {"$ref": "#/$defs/size"},
                         "blobs": {"$ref": "#/$defs/size"}},
                        desc="Bytes downloaded from a registry, by kind."),
}
def header(name):
    return {"schema_version": {"const": 1}, "document": {"const": name}}
def doc(fname, title, name, props, used, extra=None):
    s = {"$schema": "https://json-schema.org/draft/2020-12/schema",
         "$id": BASE + fname, "title": title}
    s.update(obj(dict(header(name), **props)))
    d = {}
    # include used defs and their dependencies
    def need(k):
        if k in d: return
        d[k] = defs[k]
        txt = json.dumps(defs[k])
        for other in defs:
            if f'"#/$defs/{other}"' in txt: need(other)
    for k in used: need(k)
    if d: s["$defs"] = {k: d[k] for k in defs if k in d}
    if extra: s.update(extra)
    with open(os.path.join(OUT, fname), "w") as f:
        json.dump(s, f, indent=2); f.write("\n")
R = lambda k: {"$ref": "#/$defs/" + k}
doc("image.schema.json", "docker-delta image document (inspect --json, dd_image_json)", "image", {
  "reference": {"type": "string"},
  "transport": {"enum": ["docker-archive", "oci", "oci-archive", "docker-daemon"]},
  "manifest_format": {"enum": ["oci-index", "docker-manifest-list", "oci-manifest", "docker-schema2", "docker-archive-manifest"]},
  "index_formats": {"type": "array", "items": {"enum": ["oci-index", "docker-manifest-list"]}},
  "image_id": R("digest"),
  "manifest_digest": nullable(R("digest")),
  "config_digest": R("digest"),
  "config_size": R("size"),
  "repo_tags": {"type": "array", "items": {"type": "string"}},
  "platform": R("platform"),
  "layers_verified": {"type": "boolean"},
  "layers": {"type": "array", "items": obj({
      "index": {"type": "integer", "minimum": 0},
      "diff_id": R("digest"),
      "digest": nullable(R("digest")),
      "media_type": {"type": "string"},
      "compression": {"enum": ["none", "gzip", "zstd", "xz", "bzip2"]},
      "stored_size": R("size"),
      "uncompressed_size": nullable(R("size")),
  })},
}, ["digest", "size", "platform"])
doc("create-report.schema.json", "docker-delta create_report document (create --json, dd_create)", "create_report", {
  "dry_run": {"type": "boolean"},
  "package_path": nullable({"type": "string"}),
  "package_size": nullable(R("size")),
  "base": nullable(R("image_summary")),
  "target": R("image_summary"),
  "target_stored_size": R("size"),
  "target_uncompressed_size": R("size"),
  "layers": {"type": "array", "items": R("package_layer")},
}, ["image_summary", "package_layer"])
doc("apply-report.schema.json", "docker-delta apply_report document (apply --json, dd_apply, dd_apply_load)", "apply_report", {
  "dry_run": {"type": "boolean"},
  "output": nullable({"type": "string"}),
  "loaded_into": nullable({"type": "string"}),
  "pushed_to": nullable({"type": "string"}),
  "image_id": R("digest"),
  "manifest_digest": nullable(R("digest")),
  "name": nullable({"type": "string"}),
  "base": nullable(R("image_summary")),
  "layers": {"type": "array", "items": R("package_layer")},
}, ["image_summary", "package_layer"])
doc("package.schema.json", "docker-delta package document (info --json, dd_package_info_json)", "package", {
  "package_path": {"type": "string"},
  "package_size": R("size"),
  "format_version": {"type": "integer", "minimum": 1},
  "created_by": {"type": "string"},
  "payload_stored_size": R("size"),
  "payload_uncompressed_size": R("size"),
  "compression": R("compression_spec"),
  "lanes": {"type": "array", "minItems": 1, "items": obj({
      "compression": R("compression_spec"),
      "stored_size": R("size"),
      "uncompressed_size": R("size")})},
  "base": nullable(R("image_summary")),
  "target": R("image_summary"),
  "target_uncompressed_size": R("size"),
  "target_stored_size": R("size"),
  "methods": {"type": "array", "items": {"enum": ["reference", "xdelta3", "zstd", "files", "full"]}},
  "savings_vs_stored_percent": {"type": "number"},
  "savings_vs_uncompressed_percent": {"type": "number"},
  "payload_verified": {"type": "boolean"},
  "layers": {"type": "array", "items": R("package_layer")},
}, ["image_summary", "package_layer", "compression_spec"])
doc("package-layers.schema.json", "docker-delta package_layers document (list --json, dd_package_layers_json)", "package_layers", {
  "package_path": {"type": "string"},
  "payload_verified": {"type": "boolean"},
  "layers": {"type": "array", "items": R("package_layer")},
}, ["package_layer"])
KINDS = "invalid_reference invalid_platform invalid_digest invalid_json invalid_field unsupported_manifest unsupported_legacy_archive invalid_layout missing_file path_outside_archive ambiguous_image image_not_found digest_mismatch size_mismatch layer_count_mismatch invalid_package unsupported_package_version wrong_base_image limit_exceeded codec deflater_mismatch invalid_option output_exists unsupported_file_type timeout credential_helper registry_unavailable unauthorized registry daemon_unavailable daemon tag_failed no_delta cancelled io other invalid_argument panic".split()
FIELDS = {
 "invalid_reference": "input reason", "invalid_platform": "input",
 "invalid_digest": "input context reason", "invalid_json": "file line column message",
 "invalid_field": "file field reason", "unsupported_manifest": "file found",
 "unsupported_legacy_archive": "path", "invalid_layout": "path reason",
 "missing_file": "container what name", "path_outside_archive": "container name",
 "ambiguous_image": "path reason choices", "image_not_found": "path wanted available",
 "digest_mismatch": "what expected found", "size_mismatch": "what expected found",
 "layer_count_mismatch": "file manifest_layers diff_ids", "invalid_package": "path reason",
 "invalid_option": "option reason", "unsupported_package_version": "path found supported",
 "wrong_base_image": "expected found reference", "limit_exceeded": "what limit max found option",
 "codec": "codec reason", "deflater_mismatch": "what", "output_exists": "path",
 "unsupported_file_type": "path found expected", "timeout": "endpoint operation seconds option",
 "credential_helper": "helper registry reason",
 "registry_unavailable": "registry reason",
 "unauthorized": "registry scope status credentials searched",
 "registry": "registry operation status message",
 "daemon_unavailable": "endpoint reason", "daemon": "operation status message",
 "tag_failed": "image_id tag reason", "no_delta": "image reason", "cancelled": "", "io": "path io_kind os_error message",
 "other": "message", "invalid_argument": "", "panic": "panic",
}
assert set(FIELDS) == set(KINDS), set(FIELDS) ^ set(KINDS)
doc("error.schema.json", "docker-delta error document (stderr of a failed --json command, dd_error_json)", "error", {
  "status": {"type": "integer", "minimum": 1, "maximum": 9},
  "status_name": {"enum": ["error", "missing_dependency", "invalid_input", "operation_failed", "tag_failed", "cancelled", "invalid_argument", "panic", "no_delta"]},
  "kind": {"enum": KINDS},
  "message": {"type": "string", "minLength": 1},
  "path": nullable({"type": "string"}),
  "expected": nullable({"type": "string"}),
  "found": nullable({"type": "string"}),
  "fields": {"type": "object", "description": "the error's fields, by kind (see allOf)"},
}, [], extra={"allOf": [
  {"if": {"properties": {"kind": {"const": k}}, "required": ["kind"]},
   "then": {"properties": {"fields": obj({f: {} for f in FIELDS[k].split()})}}}
  for k in KINDS]})
doc("version.schema.json", "docker-delta version document (--version --json)", "version", {
  "version": {"type": "string", "pattern": "^[0-9]+\\.[0-9]+\\.[0-9]+"},
  "package_format": obj({
      "reads": {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 1}},
      "writes": {"type": "integer", "minimum": 1}}),
  "codecs": {"type": "object", "additionalProperties": {"type": "string"}},
}, [])
doc("push-report.schema.json", "docker-delta push_report document (push --json)", "push_report", {
  "image": {"type": "string"},
  "subject": R("digest"),
  "artifact": {"type": "string"},
  "already_published": {"type": "boolean"},
  "referrers": {"enum": ["api", "tag"]},
  "delta": R("delta_artifact"),
}, ["delta_artifact"])
doc("publish-report.schema.json", "docker-delta publish_report document (publish --json)", "publish_report", {
  "image": {"type": "string"},
  "packages": {"type": "array", "items": obj({
      "base": {"type": "string"},
      "base_image_id": nullable(R("digest")),
      "platform": R("platform"),
      "status": {"enum": ["published", "already_published", "no_platform"]},
      "package_size": nullable(R("size")),
      "saves": nullable(R("size")),
      "artifact": nullable({"type": "string"}),
  })},
}, ["digest", "size", "platform"])
doc("delta-list.schema.json", "docker-delta delta_list document (list-deltas --json)", "delta_list", {
  "image": {"type": "string"},
  "image_id": R("digest"),
  "manifest_digest": R("digest"),
  "platform": R("platform"),
  "referrers": {"enum": ["api", "tag"]},
  "full_pull_size": R("size"),
  "deltas": {"type": "array", "items": R("delta_artifact")},
  "skipped": {"type": "array", "items": obj({"digest": R("digest"), "reason": {"type": "string"}})},
}, ["delta_artifact"])
doc("pull-report.schema.json", "docker-delta pull_report document (pull --json)", "pull_report", {
  "dry_run": {"type": "boolean"},
  "image": {"type": "string"},
  "image_id": R("digest"),
  "manifest_digest": R("digest"),
  "platform": R("platform"),
  "method": {"enum": ["delta", "full"]},
  "delta": nullable(R("delta_artifact")),
  "fallback_reason": nullable({"type": "string"}),
  "deltas_listed": {"type": "integer", "minimum": 0},
  "transferred": R("transfer_count"),
  "full_pull_size": R("size"),
  "loaded_into": nullable({"type": "string"}),
  "output": nullable({"type": "string"}),
  "name": nullable({"type": "string"}),
}, ["delta_artifact", "transfer_count"])
