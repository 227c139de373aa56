"""Fleets through a registry: delta packages stored next to their images as OCI artifacts
(``push``, ``publish``), found and applied by devices (``pull``, ``list_deltas``)."""

from __future__ import annotations

import ctypes
import json
from typing import Any, Dict, Optional, Sequence

from . import _native as n
from ._api import (
    LogCallback,
    LogLevel,
    PathLike,
    ProgressCallback,
    _Call,
    _Options,
    _set_registry,
)
from .errors import Status, TagFailed, from_native


def _run(call: _Call, fn: Any, *args: Any) -> Dict[str, Any]:
    report = ctypes.c_void_p()
    err = ctypes.c_void_p()
    code = call.run(fn, *args, ctypes.byref(report), ctypes.byref(err))
    text = n.take_string(report)
    e = None
    if code != Status.OK:
        e = from_native(code, err.value)
        if isinstance(e, TagFailed):
            e.report = json.loads(text) if text else None
    call.check(e)
    return json.loads(text or "null")


def push(
    package: PathLike,
    image: str,
    *,
    creds: Optional[str] = None,
    authfile: Optional[PathLike] = None,
    tls_verify: bool = True,
    cert_dir: Optional[PathLike] = None,
    progress: Optional[ProgressCallback] = None,
    log: Optional[LogCallback] = None,
    log_level: LogLevel = LogLevel.INFO,
) -> Dict[str, Any]:
    """Stores the package in the registry next to the image it rebuilds, ``image``
    (``docker://HOST/NAME[:TAG|@DIGEST]``; without a tag, the package's own), as an OCI
    artifact. Returns the ``push_report`` document (``docker-delta push --json``).
    ``creds``, ``authfile``, ``tls_verify`` and ``cert_dir`` are :func:`create`'s."""
    call = _Call(progress, log)
    with _Options("dd_create_options") as o:
        _set_registry(o, creds, authfile, tls_verify, cert_dir)
        call.install(o.prefix, o.h, log_level)
        return _run(call, n.lib.dd_push, n.arg(package), n.arg(image), o.h)


def publish(
    image: str,
    bases: Sequence[str] = (),
    *,
    last: int = 0,
    platform: Optional[str] = None,
    creds: Optional[str] = None,
    authfile: Optional[PathLike] = None,
    tls_verify: bool = True,
    cert_dir: Optional[PathLike] = None,
    progress: Optional[ProgressCallback] = None,
    log: Optional[LogCallback] = None,
    log_level: LogLevel = LogLevel.INFO,
) -> Dict[str, Any]:
    """Makes a package from each old version in ``bases`` (tags or digests of the same
    repository, or ``docker://`` references; or, with none, the ``last`` newest other tags)
    to ``image``, for every platform both have, and pushes it next to ``image``; pairs
    already published are skipped. Returns the ``publish_report`` document."""
    call = _Call(progress, log)
    with _Options("dd_create_options") as o:
        o.set_checked("platform", n.arg(platform))
        _set_registry(o, creds, authfile, tls_verify, cert_dir)
        call.install(o.prefix, o.h, log_level)
        arr = (ctypes.c_char_p * max(len(bases), 1))(*[n.arg(b) for b in bases])
        return _run(call, n.lib.dd_publish, n.arg(image),
                    arr if bases else None, len(bases), int(last), o.h)


def pull(
    image: str,
    output: Optional[PathLike] = None,
    *,
    base: Optional[str] = None,
    tag: Optional[str] = None,
    docker_host: Optional[str] = None,
    platform: Optional[str] = None,
    no_fallback: bool = False,
    dry_run: bool = False,
    force: bool = False,
    creds: Optional[str] = None,
    authfile: Optional[PathLike] = None,
    tls_verify: bool = True,
    cert_dir: Optional[PathLike] = None,
    progress: Optional[ProgressCallback] = None,
    log: Optional[LogCallback] = None,
    log_level: LogLevel = LogLevel.INFO,
) -> Dict[str, Any]:
    """Updates to ``image`` (``docker://HOST/NAME[:TAG|@DIGEST]``) like ``docker-delta
    pull``: through the smallest published delta whose base is at hand (``base``, else the
    Docker daemon's images), else by pulling its layers (unless ``no_fallback``, which
    raises :class:`NoDelta`). The image is loaded into the daemon (``docker_host``, else
    ``DOCKER_HOST``) and tagged ``tag`` (default ``HOST/NAME:TAG``), or written to
    ``output``. Returns the ``pull_report`` document."""
    call = _Call(progress, log)
    with _Options("dd_apply_options") as o:
        o.set_checked("platform", n.arg(platform))
        o.set_checked("tag", n.arg(tag))
        o.set_checked("docker_host", n.arg(docker_host))
        o.set("force", bool(force))
        o.set("dry_run", bool(dry_run))
        _set_registry(o, creds, authfile, tls_verify, cert_dir)
        call.install(o.prefix, o.h, log_level)
        return _run(call, n.lib.dd_pull, n.arg(image), n.arg(base), n.arg(output),
                    bool(no_fallback), o.h)


def list_deltas(
    image: str,
    *,
    platform: Optional[str] = None,
    creds: Optional[str] = None,
    authfile: Optional[PathLike] = None,
    tls_verify: bool = True,
    cert_dir: Optional[PathLike] = None,
) -> Dict[str, Any]:
    """The delta packages published for ``image``: the ``delta_list`` document."""
    call = _Call(None, None)
    with _Options("dd_apply_options") as o:
        o.set_checked("platform", n.arg(platform))
        _set_registry(o, creds, authfile, tls_verify, cert_dir)
        return _run(call, n.lib.dd_list_deltas, n.arg(image), o.h)
