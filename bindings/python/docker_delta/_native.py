"""ctypes declarations for libdocker_delta (include/docker_delta.h).

The library is loaded from, in order:

1. ``$DOCKER_DELTA_LIB``, when set: a path to the shared library (an explicit override,
   e.g. to try a library built from another checkout). Nothing else is tried then.
2. ``libdocker_delta.so`` in this package's directory: the wheel carries it there.
3. The system's library search path (``ctypes.util.find_library("docker_delta")``), for
   installations that ship the library separately.

Its ``dd_version()`` must be compatible with the package's version (see
:func:`compatible`), else importing raises ImportError naming both.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
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
from typing import List, Optional, Tuple

from ._version import __version__

LIB_NAME = "libdocker_delta.so"
ENV_LIB = "DOCKER_DELTA_LIB"


def _version_tuple(v: str) -> Optional[Tuple[int, int, int]]:
    m = re.match(r"(\d+)\.(\d+)\.(\d+)", v)
    return None if m is None else (int(m[1]), int(m[2]), int(m[3]))


def compatible(library: str, package: str) -> bool:
    """Whether a library of version ``library`` serves a package of version ``package``:
    the same major.minor while the major is 0 (0.x minors may change the C ABI), the same
    major from 1.0 on."""
    lv, pv = _version_tuple(library), _version_tuple(package)
    if lv is None or pv is None:
        return library == package
    if lv[0] != pv[0]:
        return False
    return lv[0] != 0 or lv[1] == pv[1]


def candidates() -> List[str]:
    """Where the library is looked for, in order (see the module's documentation)."""
    env = os.environ.get(ENV_LIB)
    if env:
        return [env]
    out = [str(Path(__file__).resolve().parent / LIB_NAME)]
    found = ctypes.util.find_library("docker_delta")
    if found:
        out.append(found)
    return out


def _load() -> Tuple[ctypes.CDLL, str]:
    tried = []
    for path in candidates():
        if os.sep in path and not os.path.exists(path):
            tried.append(f"{path} (missing)")
            continue
        try:
            return ctypes.CDLL(path), path
        except OSError as e:
            tried.append(f"{path} ({e})")
    if not os.environ.get(ENV_LIB):
        tried.append(f"{ENV_LIB} (not set)")
    raise ImportError(
        "docker_delta: cannot load the docker-delta shared library " + LIB_NAME + ". "
        "The wheel carries it inside the package; a package installed without it (e.g. "
        "from a source tree that was not built) needs " + ENV_LIB + " set to the library's "
        "path. Looked at: " + "; ".join(tried)
    )


lib, lib_path = _load()

lib.dd_version.restype = c_char_p
lib.dd_version.argtypes = []
lib_version = (lib.dd_version() or b"").decode("utf-8", "replace")
if not compatible(lib_version, __version__):
    raise ImportError(
        f"docker_delta: the library {lib_path} is docker-delta {lib_version or '(unknown)'}, "
        f"but this Python package is {__version__}; they must have the same major.minor "
        f"version (same major from 1.0). Reinstall the package, or point {ENV_LIB} at a "
        f"matching library."
    )

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
    _fn(f"{_p}_set_creds", status, handle, c_char_p, _err)
    _fn(f"{_p}_set_authfile", status, handle, c_char_p, _err)
    _fn(f"{_p}_set_tls_verify", status, handle, c_bool)
    _fn(f"{_p}_set_cert_dir", status, handle, c_char_p, _err)
_fn("dd_create_options_set_method", status, handle, c_uint32)
_fn("dd_create_options_set_compression", status, handle, c_uint32, c_int32)
_fn("dd_create_options_set_new_bytes_compression", status, handle, c_uint32, c_int32)
_fn("dd_apply_options_set_tag", status, handle, c_char_p, _err)
_fn("dd_apply_options_set_docker_host", status, handle, c_char_p, _err)

_fn("dd_create", status, c_char_p, c_char_p, c_char_p, handle, _out, _err)
_fn("dd_apply", status, c_char_p, c_char_p, c_char_p, handle, _out, _err)
_fn("dd_apply_load", status, c_char_p, c_char_p, handle, _out, _err)
_fn("dd_push", status, c_char_p, c_char_p, handle, _out, _err)
_fn("dd_publish", status, c_char_p, ctypes.POINTER(c_char_p), c_size_t, c_uint32, handle, _out, _err)
_fn("dd_pull", status, c_char_p, c_char_p, c_char_p, c_bool, handle, _out, _err)
_fn("dd_list_deltas", status, c_char_p, handle, _out, _err)


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
