"""The Pythonic layer over the C ABI."""

from __future__ import annotations

import ctypes
import enum
import json
import os
import queue
import signal
import threading
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from . import _native as n
from .errors import DeltaError, InvalidArgument, Status, TagFailed, from_native

PathLike = Union[str, "os.PathLike[str]"]


class Phase(enum.IntEnum):
    """``dd_phase``: create goes ANALYZE (with an old image), ENCODE, WRITE; apply goes
    VERIFY, REBUILD, and LOAD when loading into the daemon; a pull starts with DOWNLOAD."""

    ANALYZE = 0
    ENCODE = 1
    WRITE = 2
    VERIFY = 3
    REBUILD = 4
    LOAD = 5
    DOWNLOAD = 6


class LogLevel(enum.IntEnum):
    """``dd_log_level``, most severe first."""

    ERROR = 1
    WARN = 2
    INFO = 3
    DEBUG = 4
    TRACE = 5


ProgressCallback = Callable[[Phase, int, int], Optional[bool]]
"""``progress(phase, done, total)``: return False to cancel (None or True go on)."""

LogCallback = Callable[[LogLevel, str], None]
"""``log(level, message)``."""

_METHODS = {"auto": 0, "xdelta3": 1, "zstd": 2, "layer": 3, "files": 4}
_COMPRESSIONS = {"xz": 0, "gzip": 1, "zstd": 2, "none": 3}
_LEVEL_DEFAULT = -1


def version() -> str:
    """The library's version, e.g. ``"0.1.0"``."""
    return n.text(n.lib.dd_version()) or ""


def remove_temporary_files() -> int:
    """Removes the temporary files the library is writing in this process and returns how
    many it removed. Call it before exiting on a signal (e.g. from a ``signal.signal``
    handler for SIGTERM): a signal that ends the process runs no cleanup, and interrupted
    work would leave hidden files beside its outputs. Operations still running then fail
    or write to removed files."""
    return int(n.lib.dd_remove_temporary_files())


def format_version_supported() -> int:
    """The newest package format version this library reads (older ones are read too)."""
    return int(n.lib.dd_package_format_version_supported())


def _check(code: int, err: ctypes.c_void_p) -> None:
    if code != Status.OK:
        raise from_native(code, err.value)


def _call(fn: Callable[..., int], *args: Any) -> None:
    """Calls a function whose last argument is ``dd_error **`` and raises on failure."""
    err = ctypes.c_void_p()
    code = fn(*args, ctypes.byref(err))
    _check(code, err)


@dataclass(frozen=True)
class Layer:
    """One layer of an image."""

    index: int
    diff_id: str
    digest: Optional[str]
    media_type: str
    stored_size: int


class Image:
    """An opened image (any transport: ``docker-archive:``, ``oci:``, ``oci-archive:``,
    ``docker-daemon:``, or a path). Use as a context manager, or call :meth:`close`.

    >>> with Image("docker-archive:app-2.tar") as img:
    ...     print(img.image_id, img.tags)
    """

    def __init__(self, reference: PathLike, platform: Optional[str] = None) -> None:
        self._h = ctypes.c_void_p()
        _call(n.lib.dd_image_open, n.arg(reference), n.arg(platform), ctypes.byref(self._h))

    def __enter__(self) -> "Image":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    def close(self) -> None:
        """Frees the handle (idempotent)."""
        h = getattr(self, "_h", None)
        if h is not None and h.value:
            n.lib.dd_image_free(h)
            self._h = ctypes.c_void_p()

    def _handle(self) -> ctypes.c_void_p:
        if not self._h.value:
            raise ValueError("the image is closed")
        return self._h

    def _str(self, fn: Callable[..., Optional[bytes]], *args: Any) -> str:
        return n.text(fn(self._handle(), *args)) or ""

    @property
    def reference(self) -> str:
        """The reference in canonical form."""
        return self._str(n.lib.dd_image_reference)

    @property
    def transport(self) -> str:
        """``docker-archive``, ``oci``, ``oci-archive`` or ``docker-daemon``."""
        return self._str(n.lib.dd_image_transport)

    @property
    def manifest_format(self) -> str:
        """``docker-archive-manifest``, ``oci-manifest``, ``docker-schema2``."""
        return self._str(n.lib.dd_image_manifest_format)

    @property
    def image_id(self) -> str:
        """The Docker image ID (= config digest), ``sha256:...``."""
        return self._str(n.lib.dd_image_id)

    @property
    def config_digest(self) -> str:
        """The config digest (= image ID)."""
        return self._str(n.lib.dd_image_config_digest)

    @property
    def platform(self) -> str:
        """``os/arch[/variant]``."""
        return self._str(n.lib.dd_image_platform)

    @property
    def tags(self) -> List[str]:
        """The tags the source gives the image."""
        h = self._handle()
        return [n.text(n.lib.dd_image_tag(h, i)) or "" for i in range(n.lib.dd_image_tag_count(h))]

    @property
    def layers(self) -> List[Layer]:
        """The layers, base first."""
        h = self._handle()
        return [
            Layer(
                index=i,
                diff_id=n.text(n.lib.dd_image_layer_diff_id(h, i)) or "",
                digest=n.text(n.lib.dd_image_layer_digest(h, i)),
                media_type=n.text(n.lib.dd_image_layer_media_type(h, i)) or "",
                stored_size=int(n.lib.dd_image_layer_size(h, i)),
            )
            for i in range(n.lib.dd_image_layer_count(h))
        ]

    def verify(self) -> None:
        """Reads every layer and verifies its digests (raises DigestMismatch...)."""
        _call(n.lib.dd_image_verify, self._handle())

    def to_dict(self) -> Dict[str, Any]:
        """The ``image`` document (docs/JSON.md), as ``docker-delta inspect --json`` prints
        it; ``layers_verified`` is true after :meth:`verify`."""
        out = ctypes.c_void_p()
        _call(n.lib.dd_image_json, self._handle(), ctypes.byref(out))
        return json.loads(n.take_string(out) or "null")


class Package:
    """An opened delta package. Use as a context manager, or call :meth:`close`."""

    def __init__(self, path: PathLike) -> None:
        self._h = ctypes.c_void_p()
        _call(n.lib.dd_package_open, n.arg(path), ctypes.byref(self._h))

    def __enter__(self) -> "Package":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    def close(self) -> None:
        """Frees the handle (idempotent)."""
        h = getattr(self, "_h", None)
        if h is not None and h.value:
            n.lib.dd_package_free(h)
            self._h = ctypes.c_void_p()

    def _handle(self) -> ctypes.c_void_p:
        if not self._h.value:
            raise ValueError("the package is closed")
        return self._h

    def verify(self) -> None:
        """Reads the whole payload and checks every checksum."""
        _call(n.lib.dd_package_verify, self._handle())

    def info(self) -> Dict[str, Any]:
        """The ``package`` document (docs/JSON.md), as ``docker-delta info --json`` prints
        it; ``payload_verified`` is true after :meth:`verify`."""
        out = ctypes.c_void_p()
        _call(n.lib.dd_package_info_json, self._handle(), ctypes.byref(out))
        return json.loads(n.take_string(out) or "null")

    def layers(self) -> List[Dict[str, Any]]:
        """How each layer of the new image is rebuilt: the ``layers`` of the
        ``package_layers`` document ``docker-delta list --json`` prints (``index``,
        ``diff_id``, ``method``, ``old_layers``, ``delta_size``, ``uncompressed_size``,
        ``stored_size``, ``media_type``; docs/JSON.md)."""
        out = ctypes.c_void_p()
        _call(n.lib.dd_package_layers_json, self._handle(), ctypes.byref(out))
        doc = json.loads(n.take_string(out) or "null")
        return doc["layers"] if doc else []

    @property
    def format_version(self) -> int:
        """The package format version."""
        return int(n.lib.dd_package_format_version(self._handle()))

    @property
    def size(self) -> int:
        """The file's size in bytes."""
        return int(n.lib.dd_package_size(self._handle()))

    @property
    def created_by(self) -> str:
        """The program that wrote it."""
        return n.text(n.lib.dd_package_created_by(self._handle())) or ""

    @property
    def target_image_id(self) -> str:
        """The ID of the image the package rebuilds."""
        return n.text(n.lib.dd_package_target_image_id(self._handle())) or ""

    @property
    def base_image_id(self) -> Optional[str]:
        """The ID of the image the delta was made against (None for a full package)."""
        return n.text(n.lib.dd_package_base_image_id(self._handle()))


class _Call:
    """Runs one create or apply on a worker thread so that Ctrl-C stays responsive.

    ctypes holds a KeyboardInterrupt until the C call returns, which for a large image is
    minutes. So the C call runs on a worker thread, and the calling thread waits on a queue
    in short intervals, running the caller's callbacks as the worker posts them: callbacks
    run on the calling thread, as when the call was made directly. On KeyboardInterrupt
    (or any exception raised by a callback) the call is cancelled the only way the C ABI
    offers: its progress callback, always installed, returns false at its next report (at
    least every MiB of work). The call then ends with ``DD_STATUS_CANCELLED``, having
    removed what it was writing, and the exception is re-raised from the call.
    """

    _POLL_SECONDS = 0.1

    def __init__(self, progress: Optional[ProgressCallback], log: Optional[LogCallback]) -> None:
        self.progress = progress
        self.log = log
        self.cancel = threading.Event()
        self.error: Optional[BaseException] = None
        self._events: "queue.SimpleQueue[Tuple[str, Any]]" = queue.SimpleQueue()
        self._answers: "queue.SimpleQueue[bool]" = queue.SimpleQueue()
        self.progress_c = n.PROGRESS_CB(self._on_progress)
        self.log_c = n.LOG_CB(self._on_log) if log is not None else None

    # -- on the worker thread, called by the library --------------------------------

    def _on_progress(self, _ud: Any, phase: int, done: int, total: int) -> bool:
        if self.cancel.is_set():
            return False
        if self.progress is None:
            return True
        self._events.put(("progress", (phase, done, total)))
        while True:
            try:
                return self._answers.get(timeout=self._POLL_SECONDS)
            except queue.Empty:
                # The calling thread may have been interrupted before it could answer.
                if self.cancel.is_set():
                    return False

    def _on_log(self, _ud: Any, level: int, message: bytes) -> None:
        if not self.cancel.is_set():
            self._events.put(("log", (level, message.decode("utf-8", "replace"))))

    # -- on the calling thread --------------------------------------------------------

    def _fail(self, e: BaseException) -> None:
        if self.error is None:
            self.error = e
        self.cancel.set()

    def _deliver(self, kind: str, args: Tuple[Any, ...]) -> None:
        if kind == "log":
            if self.log is not None and not self.cancel.is_set():
                try:
                    self.log(LogLevel(args[0]), args[1])
                except BaseException as e:  # noqa: BLE001 - re-raised after the call
                    self._fail(e)
            return
        go = False
        try:
            if self.progress is not None and not self.cancel.is_set():
                phase, done, total = args
                go = self.progress(Phase(phase), done, total) is not False
        except BaseException as e:  # noqa: BLE001 - re-raised after the call
            self._fail(e)
        finally:
            self._answers.put(go)

    def install(self, prefix: str, opts: ctypes.c_void_p, log_level: LogLevel) -> None:
        getattr(n.lib, f"{prefix}_set_progress")(opts, self.progress_c, None)
        if self.log_c is not None:
            getattr(n.lib, f"{prefix}_set_log")(opts, self.log_c, None, int(log_level))

    def run(self, fn: Callable[..., int], *args: Any) -> int:
        """Calls ``fn(*args)`` on a worker thread and returns its status once it ended.
        Never returns before the worker ended (the options and strings it uses are freed
        after this returns), whatever is raised meanwhile."""
        result: List[int] = []
        failure: List[BaseException] = []

        def work() -> None:
            try:
                result.append(fn(*args))
            except BaseException as e:  # noqa: BLE001 - e.g. a ctypes ArgumentError
                failure.append(e)
            finally:
                self._events.put(("done", ()))

        # Ctrl-C while the worker runs: Python's default handler raises KeyboardInterrupt
        # wherever the main thread is, and at a loop's back edge that is outside any try
        # (seen: the exception escaped and the worker ran on with freed options). So while
        # the call runs, SIGINT only records the interrupt and cancels; KeyboardInterrupt
        # is raised once the worker has ended.
        interrupted: List[bool] = []

        def on_sigint(_signum: int, _frame: Any) -> None:
            interrupted.append(True)
            self.cancel.set()

        previous = None
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            previous = signal.signal(signal.SIGINT, on_sigint)
        try:
            worker = threading.Thread(target=work, name="docker_delta call", daemon=True)
            worker.start()
            while True:
                try:
                    try:
                        kind, payload = self._events.get(timeout=self._POLL_SECONDS)
                    except queue.Empty:
                        continue
                    if kind == "done":
                        break
                    self._deliver(kind, payload)
                except BaseException as e:  # noqa: BLE001 - a KeyboardInterrupt not ours
                    self._fail(e)
            worker.join()
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        if interrupted:
            self._fail(KeyboardInterrupt())
        if failure:
            raise failure[0]
        return result[0]

    def check(self, err: Optional[DeltaError]) -> None:
        """Raises what the call ended with: an exception raised while it ran (Ctrl-C's
        KeyboardInterrupt, a callback's exception: they cancelled it, and are raised even
        when the call finished before it noticed), else the library's error."""
        if self.error is not None:
            raise self.error from err
        if err is not None:
            raise err


class _Options:
    """An options handle, freed on exit."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.h = ctypes.c_void_p()
        code = getattr(n.lib, f"{prefix}_new")(ctypes.byref(self.h))
        if code != Status.OK:
            raise from_native(code, None)

    def __enter__(self) -> "_Options":
        return self

    def __exit__(self, *exc: object) -> None:
        getattr(n.lib, f"{self.prefix}_free")(self.h)

    def set(self, name: str, *args: Any) -> None:
        """A setter without ``dd_error **``."""
        code = getattr(n.lib, f"{self.prefix}_set_{name}")(self.h, *args)
        if code != Status.OK:
            raise from_native(code, None)

    def set_checked(self, name: str, *args: Any) -> None:
        """A setter with ``dd_error **``."""
        _call(getattr(n.lib, f"{self.prefix}_set_{name}"), self.h, *args)


def _set_registry(o: _Options, creds: Optional[str], authfile: Optional[PathLike],
                  tls_verify: bool, cert_dir: Optional[PathLike]) -> None:
    """The registry settings of a call (skopeo's ``--creds``, ``--authfile``,
    ``--tls-verify``, ``--cert-dir``). ``creds`` is passed to the library and dropped:
    nothing here keeps or prints it."""
    o.set_checked("creds", n.arg(creds))
    o.set_checked("authfile", n.arg(authfile))
    o.set("tls_verify", bool(tls_verify))
    o.set_checked("cert_dir", n.arg(cert_dir))


def _choice(what: str, value: str, table: Dict[str, int]) -> int:
    try:
        return table[value]
    except KeyError:
        raise InvalidArgument(
            Status.INVALID_ARGUMENT,
            "invalid_argument",
            f"{what} {value!r} is not one of {', '.join(table)}",
        ) from None


def create(
    new: PathLike,
    output: PathLike,
    old: Optional[PathLike] = None,
    *,
    method: str = "auto",
    compression: str = "xz",
    level: Optional[int] = None,
    new_bytes_compression: Optional[str] = None,
    new_bytes_level: Optional[int] = None,
    platform: Optional[str] = None,
    force: bool = False,
    dry_run: bool = False,
    max_layer_memory: Optional[int] = None,
    creds: Optional[str] = None,
    authfile: Optional[PathLike] = None,
    tls_verify: bool = True,
    cert_dir: Optional[PathLike] = None,
    progress: Optional[ProgressCallback] = None,
    log: Optional[LogCallback] = None,
    log_level: LogLevel = LogLevel.INFO,
) -> Dict[str, Any]:
    """Creates a package at ``output`` that rebuilds ``new`` from ``old`` (or a full
    package when ``old`` is None). Returns the ``create_report`` document
    (``docker-delta create --json``; docs/JSON.md).

    ``method``: ``auto`` | ``files`` | ``xdelta3`` | ``zstd`` | ``layer``; ``compression``: ``xz`` |
    ``zstd`` | ``gzip`` | ``none`` with ``level`` in its range (None: the default);
    ``new_bytes_compression`` and ``new_bytes_level`` the same for the new bytes of file-aware
    layers, kept in a stream of their own (None: zstd level 18 beside xz, else ``compression``).

    ``docker://`` images are read with ``creds`` (``"USER:PASSWORD"``; None: looked up in
    ``authfile``, else ``$REGISTRY_AUTH_FILE``, ``$XDG_RUNTIME_DIR/containers/auth.json``,
    ``$DOCKER_CONFIG/config.json``, with their credential helpers), TLS verified unless
    ``tls_verify=False`` (which also allows plain HTTP), and the CAs in ``cert_dir`` besides
    the system's.
    """
    call = _Call(progress, log)
    with _Options("dd_create_options") as o:
        o.set("method", _choice("method", method, _METHODS))
        o.set("compression", _choice("compression", compression, _COMPRESSIONS),
              _LEVEL_DEFAULT if level is None else int(level))
        if new_bytes_compression is not None:
            o.set("new_bytes_compression",
                  _choice("new_bytes_compression", new_bytes_compression, _COMPRESSIONS),
                  _LEVEL_DEFAULT if new_bytes_level is None else int(new_bytes_level))
        elif new_bytes_level is not None:
            raise ValueError("new_bytes_level needs new_bytes_compression")
        o.set_checked("platform", n.arg(platform))
        o.set("force", bool(force))
        o.set("dry_run", bool(dry_run))
        o.set("max_layer_memory", int(max_layer_memory or 0))
        _set_registry(o, creds, authfile, tls_verify, cert_dir)
        call.install(o.prefix, o.h, log_level)
        report = ctypes.c_void_p()
        err = ctypes.c_void_p()
        code = call.run(n.lib.dd_create, n.arg(old), n.arg(new), n.arg(output), o.h,
                        ctypes.byref(report), ctypes.byref(err))
        text = n.take_string(report)
        call.check(None if code == Status.OK else from_native(code, err.value))
    return json.loads(text or "null")


def apply(
    package: PathLike,
    output: Optional[PathLike] = None,
    *,
    base: Optional[PathLike] = None,
    load: bool = False,
    tag: Optional[str] = None,
    docker_host: Optional[str] = None,
    platform: Optional[str] = None,
    force: bool = False,
    dry_run: bool = False,
    max_layer_memory: Optional[int] = None,
    creds: Optional[str] = None,
    authfile: Optional[PathLike] = None,
    tls_verify: bool = True,
    cert_dir: Optional[PathLike] = None,
    progress: Optional[ProgressCallback] = None,
    log: Optional[LogCallback] = None,
    log_level: LogLevel = LogLevel.INFO,
) -> Dict[str, Any]:
    """Rebuilds the package's image from ``base`` and writes it to ``output`` (a
    reference, or a path for a docker-archive), or with ``load=True`` loads it into the
    Docker daemon (``docker_host``, else ``DOCKER_HOST``) and tags it ``tag`` (else the
    image's own tag). Without ``base``, a delta's base is looked up in the daemon by the
    image ID the package records. Returns the ``apply_report`` document
    (``docker-delta apply --json``; docs/JSON.md).

    ``creds``, ``authfile``, ``tls_verify`` and ``cert_dir`` are :func:`create`'s, for a
    ``docker://`` base and a ``docker://`` output.

    Raises :class:`WrongBaseImage` when ``base`` lacks a layer the package needs, and
    :class:`TagFailed` (with ``.report``) when the image was loaded but not tagged.
    """
    if load == (output is not None):
        raise InvalidArgument(Status.INVALID_ARGUMENT, "invalid_argument",
                              "give either output or load=True")
    call = _Call(progress, log)
    with _Options("dd_apply_options") as o:
        o.set_checked("platform", n.arg(platform))
        o.set_checked("tag", n.arg(tag))
        o.set_checked("docker_host", n.arg(docker_host))
        o.set("force", bool(force))
        o.set("dry_run", bool(dry_run))
        o.set("max_layer_memory", int(max_layer_memory or 0))
        _set_registry(o, creds, authfile, tls_verify, cert_dir)
        call.install(o.prefix, o.h, log_level)
        report = ctypes.c_void_p()
        err = ctypes.c_void_p()
        if load:
            code = call.run(n.lib.dd_apply_load, n.arg(package), n.arg(base), o.h,
                            ctypes.byref(report), ctypes.byref(err))
        else:
            code = call.run(n.lib.dd_apply, n.arg(package), n.arg(base), n.arg(output), o.h,
                            ctypes.byref(report), ctypes.byref(err))
        text = n.take_string(report)
        e = None
        if code != Status.OK:
            e = from_native(code, err.value)
            if isinstance(e, TagFailed):
                e.report = json.loads(text) if text else None
        call.check(e)
    return json.loads(text or "null")
