"""Exceptions carrying docker-delta's structured errors.

Every failure raises a :class:`DeltaError` subclass chosen first by the error's kind
(``WrongBaseImage``, ``DigestMismatch``...) and otherwise by its status
(``InvalidInput``, ``OperationFailed``...). The attributes mirror the C ``dd_error``:
``status``/``code`` (the command-line exit code for 0-5), ``kind``, ``message``, ``path``,
``expected``, ``found`` and ``fields`` (every field of the library's error variant).
"""

from __future__ import annotations

import enum
import json
from typing import Any, Dict, Optional, Type

from . import _native as n


class Status(enum.IntEnum):
    """``dd_status``: what a call did. 0-5 are the command-line tool's exit codes."""

    OK = 0
    ERROR = 1
    MISSING_DEPENDENCY = 2
    INVALID_INPUT = 3
    OPERATION_FAILED = 4
    TAG_FAILED = 5
    CANCELLED = 6
    INVALID_ARGUMENT = 7
    PANIC = 8
    NO_DELTA = 9


class DeltaError(Exception):
    """A docker-delta error."""

    status: Status
    kind: str
    message: str
    path: Optional[str]
    expected: Optional[str]
    found: Optional[str]
    fields: Dict[str, Any]

    def __init__(
        self,
        status: Status,
        kind: str,
        message: str,
        path: Optional[str] = None,
        expected: Optional[str] = None,
        found: Optional[str] = None,
        fields: Optional[Dict[str, Any]] = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
        self.path = path
        self.expected = expected
        self.found = found
        self.fields = fields or {}

    @property
    def code(self) -> int:
        """The numeric status (the CLI's exit code for 0-5)."""
        return int(self.status)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kind={self.kind!r}, message={self.message!r})"


class Error(DeltaError):
    """An unexpected or internal error (I/O failure, a bug)."""


class MissingDependency(DeltaError):
    """A dependency is missing: no Docker daemon reachable."""


class DaemonUnavailable(MissingDependency):
    """The Docker daemon cannot be reached."""


class Timeout(MissingDependency):
    """The Docker daemon (or a registry) did not answer within its timeout;
    ``fields["endpoint"]``, ``fields["operation"]`` and ``fields["option"]`` say which and
    how to raise it."""


class CredentialHelper(MissingDependency):
    """A ``docker-credential-*`` helper could not be run or failed; ``fields["helper"]``,
    ``fields["registry"]`` and ``fields["reason"]`` say which and why."""


class RegistryUnavailable(MissingDependency):
    """A registry cannot be reached; ``fields["registry"]`` and ``fields["reason"]``."""


class DeflaterMismatch(MissingDependency):
    """The package ships gzip members to re-deflate, and the library's zlib is not stock
    zlib (zlib-ng, say), which would not re-make them byte for byte."""


class InvalidInput(DeltaError):
    """Bad reference, malformed image, corrupted package, wrong base image, output exists."""


class WrongBaseImage(InvalidInput):
    """The base image lacks a layer the package needs. ``expected``: the recorded base
    (and the layer it needs); ``found``: the offered image; ``fields["reference"]``."""


class DigestMismatch(InvalidInput):
    """Content did not hash to its recorded digest (``expected``/``found``)."""


class SizeMismatch(InvalidInput):
    """Content did not have its recorded size (``expected``/``found``)."""


class InvalidPackage(InvalidInput):
    """A damaged, truncated or foreign package file (``path``)."""


class UnsupportedPackageVersion(InvalidInput):
    """A package written by a newer docker-delta."""


class OutputExists(InvalidInput):
    """The output exists; pass ``force=True`` to overwrite it."""


class UnsupportedFileType(InvalidInput):
    """A path is a FIFO, socket or device (or a symbolic link inside an image layout) where
    a regular file or directory is expected; nothing was read from it or written to it."""


class InvalidReference(InvalidInput):
    """An image reference that cannot be parsed."""


class ImageNotFound(InvalidInput):
    """No image matches the reference (tag, index or platform)."""


class Unauthorized(InvalidInput):
    """A registry refused the credentials (or their absence); ``fields["scope"]``,
    ``fields["credentials"]`` (where they came from) and ``fields["searched"]``."""


class OperationFailed(DeltaError):
    """The operation was valid but failed: the daemon refused a load, a codec failed."""



class RegistryError(OperationFailed):
    """A registry answered with an error; ``fields["operation"]``, ``fields["status"]``
    and ``fields["message"]``."""

class TagFailed(DeltaError):
    """The image was loaded but tagging it failed. ``report`` holds the apply report;
    ``fields["image_id"]`` and ``fields["tag"]`` say what to tag by hand."""

    report: Optional[Dict[str, Any]] = None


class NoDelta(DeltaError):
    """A pull without fallback found no published delta whose base is at hand;
    ``fields["image"]`` and ``fields["reason"]``."""


class Cancelled(DeltaError):
    """The progress callback returned False (or raised); nothing was left behind."""


class InvalidArgument(DeltaError, ValueError):
    """An argument the library refused before doing anything (None, not UTF-8, out of range)."""


class Panic(DeltaError):
    """A bug in docker-delta was caught at the library boundary."""


_BY_KIND: Dict[str, Type[DeltaError]] = {
    "wrong_base_image": WrongBaseImage,
    "digest_mismatch": DigestMismatch,
    "size_mismatch": SizeMismatch,
    "invalid_package": InvalidPackage,
    "unsupported_package_version": UnsupportedPackageVersion,
    "output_exists": OutputExists,
    "invalid_reference": InvalidReference,
    "image_not_found": ImageNotFound,
    "daemon_unavailable": DaemonUnavailable,
    "timeout": Timeout,
    "credential_helper": CredentialHelper,
    "registry_unavailable": RegistryUnavailable,
    "unauthorized": Unauthorized,
    "registry": RegistryError,
    "unsupported_file_type": UnsupportedFileType,
    "deflater_mismatch": DeflaterMismatch,
    "tag_failed": TagFailed,
    "no_delta": NoDelta,
    "cancelled": Cancelled,
    "invalid_argument": InvalidArgument,
    "panic": Panic,
}

_BY_STATUS: Dict[Status, Type[DeltaError]] = {
    Status.ERROR: Error,
    Status.MISSING_DEPENDENCY: MissingDependency,
    Status.INVALID_INPUT: InvalidInput,
    Status.OPERATION_FAILED: OperationFailed,
    Status.TAG_FAILED: TagFailed,
    Status.NO_DELTA: NoDelta,
    Status.CANCELLED: Cancelled,
    Status.INVALID_ARGUMENT: InvalidArgument,
    Status.PANIC: Panic,
}


def from_native(code: int, err: Any) -> DeltaError:
    """Builds the exception for a failed call and frees the ``dd_error``."""
    try:
        status = Status(code) if code in Status._value2member_map_ else Status.ERROR
        if not err:
            name = n.text(n.lib.dd_status_name(code)) or "error"
            return _BY_STATUS.get(status, DeltaError)(status, name, f"docker-delta: {name}")
        doc = json.loads(n.text(n.lib.dd_error_json(err)) or "{}")
        kind = doc.get("kind", "other")
        cls = _BY_KIND.get(kind) or _BY_STATUS.get(status, DeltaError)
        return cls(
            status,
            kind,
            doc.get("message", ""),
            path=doc.get("path"),
            expected=doc.get("expected"),
            found=doc.get("found"),
            fields=doc.get("fields") or {},
        )
    finally:
        if err:
            n.lib.dd_error_free(err)
