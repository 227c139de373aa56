"""The installed package: the library it carries and the version check."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Dict

import pytest

import docker_delta as dd
from docker_delta import _native


def test_the_library_is_the_packages_own() -> None:
    if os.environ.get("DOCKER_DELTA_LIB"):
        pytest.skip("DOCKER_DELTA_LIB overrides the package's library")
    pkg = Path(dd.__file__).resolve().parent
    assert Path(_native.lib_path).resolve() == pkg / "libdocker_delta.so"


def test_versions_agree() -> None:
    assert dd.__version__ == metadata.version("docker-delta")
    assert _native.compatible(dd.version(), dd.__version__)


@pytest.mark.parametrize("library,package,ok", [
    ("0.1.0", "0.1.0", True),
    ("0.1.7", "0.1.0", True),
    ("0.1.0", "0.1.3", True),
    ("0.2.0", "0.1.0", False),
    ("1.0.0", "0.1.0", False),
    ("1.4.2", "1.0.0", True),
    ("2.0.0", "1.9.0", False),
    ("0.1.0-rc.1", "0.1.0", True),
    ("garbage", "0.1.0", False),
])
def test_compatibility_rule(library: str, package: str, ok: bool) -> None:
    assert _native.compatible(library, package) is ok


def _package_copy(tmp_path: Path, version: str, with_library: bool) -> Dict[str, str]:
    """A copy of the installed package with another version or no library, importable
    from tmp_path; returns the environment to import it with."""
    src = Path(dd.__file__).resolve().parent
    dst = tmp_path / "docker_delta"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
    (dst / "_version.py").write_text(f'__version__ = "{version}"\n')
    if not with_library:
        (dst / "libdocker_delta.so").unlink(missing_ok=True)
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    env.pop("DOCKER_DELTA_LIB", None)
    return env


def _import_error(env: Dict[str, str], cwd: Path) -> str:
    r = subprocess.run([sys.executable, "-c", "import docker_delta"], env=env, cwd=cwd,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0, "the import succeeded"
    assert "ImportError" in r.stderr, r.stderr
    return r.stderr


def test_a_library_of_another_version_is_refused(tmp_path: Path) -> None:
    env = _package_copy(tmp_path, "0.99.0", with_library=True)
    err = _import_error(env, tmp_path)
    assert "0.99.0" in err and dd.version() in err, err
    assert str(tmp_path / "docker_delta" / "libdocker_delta.so") in err, err


def test_a_missing_library_says_where_it_looked(tmp_path: Path) -> None:
    import ctypes.util

    if ctypes.util.find_library("docker_delta"):
        pytest.skip("a system-wide libdocker_delta would be found")
    env = _package_copy(tmp_path, dd.__version__, with_library=False)
    err = _import_error(env, tmp_path)
    assert str(tmp_path / "docker_delta" / "libdocker_delta.so") + " (missing)" in err, err
    assert "DOCKER_DELTA_LIB" in err, err

