"""ctypes declarations for libdocker_delta (include/docker_delta.h).

The library is found, in order, at:

1. ``$DOCKER_DELTA_LIB`` (a path to the shared library);
2. ``target/release/libdocker_delta.so`` then ``target/debug/libdocker_delta.so`` in the
   docker-delta source tree this package sits in (``bindings/python/../../target``);
3. the system's library search path (``ctypes.util.find_library("docker_delta")``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from ctypes import (
    CFUNCTYPE,
    POINTER,
    c_bool,
    c_char_p,
    c_int32,
    c_size_t,
    c_uint32,
    c_uint64,
    c_void_p,
)
from pathlib import Path
from typing import List, Optional

_LIB_NAME = "libdocker_delta.so"


def _candidates() -> List[str]:
    env = os.environ.get("DOCKER_DELTA_LIB")
    if env:
        return [env]
    repo = Path(__file__).resolve().parent.parent.parent.parent
    out = [str(repo / "target" / p / _LIB_NAME) for p in ("release", "debug")]
    found = ctypes.util.find_library("docker_delta")
    if found:
        out.append(found)
    return out


def _load() -> ctypes.CDLL:
    tried = []
    for path in _candidates():
        if os.sep in path and not os.path.exists(path):
            tried.append(f"{path} (missing)")
            continue
        try:
            return ctypes.CDLL(path)
        except OSError as e:
            tried.append(f"{path} ({e})")
    raise ImportError(
        "docker_delta: cannot load the docker-delta shared library; build it with "
        "`cargo build --release --lib` or set DOCKER_DELTA_LIB. Tried: " + "; ".join(tried)
    )


lib = _load()

# Opaque handles are void pointers on this side.
handle = c_void_p
status = c_uint32  # dd_status

PROGRESS_CB = CFUNCTYPE(c_bool, c_void_p, c_uint32, c_uint64, c_uint64)
LOG_CB = CFUNCTYPE(None, c_void_p, c_uint32, c_char_p)


def _fn(name: str, restype, *argtypes) -> None:
    f = getattr(lib, name)
    f.restype = restype
    f.argtypes = list(argtypes)


_err = POINTER(handle)  # dd_error **
_out = POINTER(handle)  # T ** / char **

_fn("dd_version", c_char_p)
_fn("dd_status_name", c_char_p, c_uint32)
_fn("dd_package_format_version_supported", c_uint32)
_fn("dd_remove_temporary_files", c_uint32)
_fn("dd_string_free", None, c_void_p)

for _n in ("dd_error_kind", "dd_error_message", "dd_error_path", "dd_error_expected",
           "dd_error_found", "dd_error_json"):
    _fn(_n, c_char_p, handle)
_fn("dd_error_code", status, handle)
_fn("dd_error_free", None, handle)

_fn("dd_image_open", status, c_char_p, c_char_p, _out, _err)
_fn("dd_image_free", None, handle)
for _n in ("dd_image_reference", "dd_image_transport", "dd_image_manifest_format",
           "dd_image_config_digest", "dd_image_id", "dd_image_platform"):
    _fn(_n, c_char_p, handle)
_fn("dd_image_tag_count", c_size_t, handle)
_fn("dd_image_tag", c_char_p, handle, c_size_t)
_fn("dd_image_layer_count", c_size_t, handle)
_fn("dd_image_layer_diff_id", c_char_p, handle, c_size_t)
_fn("dd_image_layer_digest", c_char_p, handle, c_size_t)
_fn("dd_image_layer_media_type", c_char_p, handle, c_size_t)
_fn("dd_image_layer_size", c_uint64, handle, c_size_t)
_fn("dd_image_verify", status, handle, _err)
_fn("dd_image_json", status, handle, _out, _err)

_fn("dd_package_open", status, c_char_p, _out, _err)
_fn("dd_package_free", None, handle)
_fn("dd_package_verify", status, handle, _err)
_fn("dd_package_info_json", status, handle, _out, _err)
_fn("dd_package_layers_json", status, handle, _out, _err)
_fn("dd_package_format_version", c_uint32, handle)
_fn("dd_package_size", c_uint64, handle)
for _n in ("dd_package_created_by", "dd_package_target_image_id", "dd_package_base_image_id"):
    _fn(_n, c_char_p, handle)
_fn("dd_package_layer_count", c_size_t, handle)
_fn("dd_package_layer_diff_id", c_char_p, handle, c_size_t)
_fn("dd_package_layer_method", c_char_p, handle, c_size_t)
_fn("dd_package_layer_size", c_uint64, handle, c_size_t)
_fn("dd_package_layer_delta_size", c_uint64, handle, c_size_t)

for _kind in ("create", "apply"):
    _p = f"dd_{_kind}_options"
    _fn(f"{_p}_new", status, _out)
    _fn(f"{_p}_free", None, handle)
    _fn(f"{_p}_set_platform", status, handle, c_char_p, _err)
    _fn(f"{_p}_set_force", status, handle, c_bool)
    _fn(f"{_p}_set_dry_run", status, handle, c_bool)
    _fn(f"{_p}_set_max_layer_memory", status, handle, c_uint64)
    _fn(f"{_p}_set_progress", status, handle, PROGRESS_CB, c_void_p)
    _fn(f"{_p}_set_log", status, handle, LOG_CB, c_void_p, c_uint32)
_fn("dd_create_options_set_method", status, handle, c_uint32)
_fn("dd_create_options_set_compression", status, handle, c_uint32, c_int32)
_fn("dd_create_options_set_new_bytes_compression", status, handle, c_uint32, c_int32)
_fn("dd_apply_options_set_tag", status, handle, c_char_p, _err)
_fn("dd_apply_options_set_docker_host", status, handle, c_char_p, _err)

_fn("dd_create", status, c_char_p, c_char_p, c_char_p, handle, _out, _err)
_fn("dd_apply", status, c_char_p, c_char_p, c_char_p, handle, _out, _err)
_fn("dd_apply_load", status, c_char_p, c_char_p, handle, _out, _err)


def take_string(ptr: c_void_p) -> Optional[str]:
    """Copies an owned ``char *`` from the library and frees it."""
    if not ptr.value:
        return None
    try:
        return ctypes.string_at(ptr.value).decode("utf-8")
    finally:
        lib.dd_string_free(ptr)


def text(b: Optional[bytes]) -> Optional[str]:
    """A borrowed ``const char *`` (ctypes gives bytes) as str."""
    return None if b is None else b.decode("utf-8")


def arg(s) -> Optional[bytes]:
    """A str or os.PathLike argument as UTF-8 bytes (None stays NULL). File names that are
    not valid UTF-8 (surrogate escapes) are passed through and refused by the library."""
    if s is None:
        return None
    if isinstance(s, bytes):
        return s
    return os.fspath(s).encode("utf-8", "surrogateescape")
