"""Ctrl-C during a long create: a program running docker_delta.create gets SIGINT while the
library is encoding; it must end promptly with KeyboardInterrupt (the call cancelled
through the C ABI's progress callback) and leave nothing in the output directory. And the
worker thread that makes this possible stays invisible to callbacks."""

from __future__ import annotations

import hashlib
import io
import json
import os
import select
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path
from typing import Set

import pytest

import docker_delta as dd

# Run in a child process: creates a full package of the image in argv[1] at argv[2], with a
# progress callback when argv[3] is "1" (it prints one line once the encoding is under way).
CHILD = r"""
import signal
import sys
import docker_delta as dd

# Ctrl-C as a terminal delivers it, whatever this test was started under: a shell's
# background job (`cmd &`, nohup) starts with SIGINT ignored, and Python then installs no
# KeyboardInterrupt handler.
signal.signal(signal.SIGINT, signal.default_int_handler)

image, output, with_progress = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
said = []

def progress(phase, done, total):
    if phase == dd.Phase.ENCODE and done > 0 and not said:
        said.append(1)
        print("encoding", flush=True)

print("started", flush=True)
try:
    dd.create("docker-archive:" + image, output, method="layer", compression="xz", level=9,
              progress=progress if with_progress else None)
except KeyboardInterrupt as e:
    print("interrupted, cause:", type(e.__cause__).__name__, flush=True)
    raise
print("finished", flush=True)
"""

LAYER_MIB = 32  # about 45 s of xz -9 here; interrupted within a second
PROMPT_SECONDS = 5.0


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _member(t: tarfile.TarFile, name: str, data: bytes) -> None:
    ti = tarfile.TarInfo(name)
    ti.size, ti.mode, ti.mtime = len(data), 0o644, 0
    t.addfile(ti, io.BytesIO(data))


@pytest.fixture(scope="module")
def big_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A docker-archive with one layer of random bytes: slow to compress with xz -9."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        _member(t, "data/random.bin", os.urandom(LAYER_MIB << 20))
    layer = buf.getvalue()
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + _sha(layer)]},
    }).encode()
    manifest = json.dumps([{"Config": "blobs/sha256/" + _sha(config), "RepoTags": ["big:1"],
                            "Layers": ["blobs/sha256/" + _sha(layer)]}]).encode()
    path = tmp_path_factory.mktemp("big") / "big.tar"
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as t:
        _member(t, "blobs/sha256/" + _sha(layer), layer)
        _member(t, "blobs/sha256/" + _sha(config), config)
        _member(t, "manifest.json", manifest)
    return path


class _Output:
    """A child's stdout read as it comes (unbuffered: select sees every byte)."""

    def __init__(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        self.fd = proc.stdout.fileno()
        self.text = b""

    def wait_for(self, line: str, timeout: float) -> bool:
        want = line.encode() + b"\n"
        deadline = time.monotonic() + timeout
        while want not in self.text:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                return False
            chunk = os.read(self.fd, 4096)
            if not chunk:
                return False
            self.text += chunk
        return True


def _writing_in(pid: int, directory: Path) -> bool:
    """Whether process `pid` has a file in `directory` open (named or not)."""
    prefix = str(directory) + "/"
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(prefix):
                return True
        except OSError:
            continue
    return False


@pytest.mark.parametrize("with_progress", [True, False], ids=["progress", "no-progress"])
def test_ctrl_c_cancels_a_long_create(tmp_path: Path, big_image: Path, with_progress: bool) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(big_image), str(out_dir / "big.ddelta"),
         "1" if with_progress else "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0, cwd=tmp_path)
    out = _Output(proc)
    try:
        assert out.wait_for("started", 60), out.text
        # Interrupt once the library is at work: the progress callback's line, or (without
        # a callback) the payload spools it opens beside the output (they have no name:
        # /proc shows them as open files in that directory).
        if with_progress:
            running = out.wait_for("encoding", 120)
        else:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and proc.poll() is None:
                if _writing_in(proc.pid, out_dir):
                    break
                time.sleep(0.05)
            running = _writing_in(proc.pid, out_dir)
        assert running, f"the create never got going (exit {proc.poll()}, {out.text!r})"
        time.sleep(0.2)  # well inside the encoding
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        try:
            rest, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail("the process did not end within 60 s of SIGINT")
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stdout, stderr = (out.text + rest).decode(), err.decode()
    assert "finished" not in stdout, "the create ended before SIGINT: make the image bigger"
    assert took < PROMPT_SECONDS, f"the process took {took:.1f} s to end after SIGINT"
    assert "interrupted, cause: Cancelled" in stdout, (stdout, stderr)
    assert stderr.rstrip().endswith("KeyboardInterrupt"), stderr
    assert proc.returncode == -signal.SIGINT, (proc.returncode, stderr)
    assert list(out_dir.iterdir()) == []


def test_callbacks_run_on_the_calling_thread(tmp_path: Path, old_ref: str, new_ref: str) -> None:
    # The C call runs on a worker thread (for Ctrl-C); callbacks come back to the caller.
    threads: Set[int] = set()
    dd.create(new_ref, tmp_path / "u.ddelta", old=old_ref, compression="zstd", level=3,
              progress=lambda p, d, t: threads.add(threading.get_ident()),
              log=lambda lvl, msg: threads.add(threading.get_ident()))
    assert threads == {threading.get_ident()}

