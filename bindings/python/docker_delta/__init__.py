"""docker-delta: ship container-image updates as small deltas, rebuild the new image exactly.

Python bindings over the docker-delta C ABI: ``libdocker_delta.so``, shipped inside this
package and loaded with ctypes (see :mod:`docker_delta._native`).

>>> import docker_delta as dd
>>> report = dd.create("docker-archive:app-2.tar", "u.ddelta", old="docker-archive:app-1.tar")
>>> dd.apply("u.ddelta", "app-2-rebuilt.tar", base="docker-archive:app-1.tar")["image_id"]
'sha256:...'
"""

from ._api import (
    Image,
    Layer,
    LogCallback,
    LogLevel,
    Package,
    Phase,
    ProgressCallback,
    apply,
    create,
    format_version_supported,
    remove_temporary_files,
    version,
)
from ._fleet import list_deltas, publish, pull, push
from ._version import __version__
from .errors import (
    Cancelled,
    DaemonUnavailable,
    DeflaterMismatch,
    DeltaError,
    DigestMismatch,
    Error,
    ImageNotFound,
    InvalidArgument,
    InvalidInput,
    InvalidPackage,
    InvalidReference,
    MissingDependency,
    OperationFailed,
    OutputExists,
    Timeout,
    CredentialHelper,
    RegistryError,
    RegistryUnavailable,
    Unauthorized,
    UnsupportedFileType,
    Panic,
    SizeMismatch,
    Status,
    TagFailed,
    NoDelta,
    UnsupportedPackageVersion,
    WrongBaseImage,
)


__all__ = [
    "list_deltas",
    "publish",
    "pull",
    "push",
    "Cancelled",
    "DaemonUnavailable",
    "DeflaterMismatch",
    "DeltaError",
    "DigestMismatch",
    "Error",
    "Image",
    "ImageNotFound",
    "InvalidArgument",
    "InvalidInput",
    "InvalidPackage",
    "InvalidReference",
    "Layer",
    "LogCallback",
    "LogLevel",
    "MissingDependency",
    "OperationFailed",
    "OutputExists",
    "Timeout",
    "CredentialHelper",
    "RegistryError",
    "RegistryUnavailable",
    "Unauthorized",
    "UnsupportedFileType",
    "Package",
    "Panic",
    "Phase",
    "ProgressCallback",
    "SizeMismatch",
    "Status",
    "TagFailed",
    "NoDelta",
    "UnsupportedPackageVersion",
    "WrongBaseImage",
    "apply",
    "create",
    "format_version_supported",
    "remove_temporary_files",
    "version",
]
