"""Build hook: puts the docker-delta shared library into the wheel.

The package's code is pure Python, but it is nothing without ``libdocker_delta.so``, so the
wheel carries the library inside ``docker_delta/`` and is tagged for the platform the
library runs on: ``py3-none-manylinux_2_NN_x86_64``, NN being the newest glibc symbol
version the library needs (read from its ELF dynamic section, below).

Where the library comes from:

* ``DOCKER_DELTA_PREBUILT_LIB=/path/libdocker_delta.so``: that file is copied (packagers
  and CI that have built it already);
* otherwise ``cargo build --release -p docker-delta-ffi`` in the repository this directory
  sits in (``bindings/python`` of a docker-delta checkout), and ``$CARGO_TARGET_DIR`` (else
  the repository's ``target/``) ``/release/libdocker_delta_ffi.so`` (the C library before
  ``scripts/install-c.sh`` names it) is copied as ``libdocker_delta.so``. An sdist holds no
  Rust sources: build wheels from a checkout, or set DOCKER_DELTA_PREBUILT_LIB.

Metadata is in pyproject.toml.
"""

import ctypes
import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.bdist_wheel import bdist_wheel  # setuptools >= 70.1
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

HERE = Path(__file__).resolve().parent
LIB_NAME = "libdocker_delta.so"
PACKAGE = "docker_delta"
ENV_PREBUILT = "DOCKER_DELTA_PREBUILT_LIB"


def package_version() -> str:
    text = (HERE / PACKAGE / "_version.py").read_text()
    return re.search(r'__version__ = "([^"]+)"', text).group(1)


def compatible(library: str, package: str) -> bool:
    """The rule docker_delta/_native.py applies at import (kept in step with it)."""
    lv = re.match(r"(\d+)\.(\d+)\.", library)
    pv = re.match(r"(\d+)\.(\d+)\.", package)
    if lv is None or pv is None:
        return library == package
    if lv[1] != pv[1]:
        return False
    return lv[1] != "0" or lv[2] == pv[2]


def find_repository() -> Path:
    repo = HERE.parent.parent
    if not (repo / "Cargo.toml").is_file() or not (repo / "include" / "docker_delta.h").is_file():
        raise SystemExit(
            f"docker-delta: {HERE} is not bindings/python of a docker-delta checkout (an "
            f"sdist?), so the library cannot be built here. Build the wheel from a checkout, "
            f"or set {ENV_PREBUILT}=/path/{LIB_NAME} to a library already built."
        )
    return repo


def obtain_library() -> Path:
    prebuilt = os.environ.get(ENV_PREBUILT)
    if prebuilt:
        path = Path(prebuilt)
        if not path.is_file():
            raise SystemExit(f"docker-delta: {ENV_PREBUILT}={prebuilt}: no such file")
        return path
    repo = find_repository()
    cmd = ["cargo", "build", "--release", "-p", "docker-delta-ffi"]
    print(f"docker-delta: running {' '.join(cmd)} in {repo}")
    try:
        subprocess.run(cmd, cwd=repo, check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        raise SystemExit(f"docker-delta: {' '.join(cmd)} failed: {e}") from e
    target = Path(os.environ.get("CARGO_TARGET_DIR") or repo / "target")
    if not target.is_absolute():
        target = repo / target
    return target / "release" / "libdocker_delta_ffi.so"


# --- the ELF reader: which glibc the library needs ----------------------------------

EM_X86_64 = 62
SHT_GNU_VERNEED = 0x6FFFFFFE


def required_glibc(path: Path) -> tuple:
    """The newest ``GLIBC_x.y`` symbol version an x86-64 ELF shared object requires, as
    (x, y), from its version-needed section (``.gnu.version_r``, what ``objdump -T`` shows
    as ``GLIBC_2.xx``). (2, 0) when it requires none."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise SystemExit(f"docker-delta: {path} is not a 64-bit little-endian ELF file")
    (e_machine,) = struct.unpack_from("<H", data, 18)
    if e_machine != EM_X86_64:
        raise SystemExit(f"docker-delta: {path} is not an x86-64 library (e_machine {e_machine})")
    e_shoff, = struct.unpack_from("<Q", data, 0x28)
    e_shentsize, e_shnum = struct.unpack_from("<HH", data, 0x3A)

    def section(i: int) -> tuple:
        # sh_name, sh_type, sh_flags, sh_addr, sh_offset, sh_size, sh_link, sh_info
        return struct.unpack_from("<IIQQQQII", data, e_shoff + i * e_shentsize)

    newest = (2, 0)
    for i in range(e_shnum):
        _, sh_type, _, _, offset, _, link, count = section(i)
        if sh_type != SHT_GNU_VERNEED:
            continue
        strtab = section(link)[4]

        def string(at: int) -> str:
            end = data.index(b"\0", strtab + at)
            return data[strtab + at:end].decode("ascii", "replace")

        entry = offset
        for _ in range(count):  # Elf64_Verneed: one per library needed
            _, aux_count, _, aux, nxt = struct.unpack_from("<HHIII", data, entry)
            at = entry + aux
            for _ in range(aux_count):  # Elf64_Vernaux: one per version of that library
                _, _, _, name, aux_next = struct.unpack_from("<IHHII", data, at)
                m = re.fullmatch(r"GLIBC_(\d+)\.(\d+)(?:\.\d+)?", string(name))
                if m:
                    newest = max(newest, (int(m[1]), int(m[2])))
                at += aux_next
            entry += nxt
    return newest


def platform_tag(path: Path) -> str:
    major, minor = required_glibc(path)
    # manylinux_2_17 (manylinux2014) is the oldest tag pip and auditwheel know.
    return f"manylinux_{major}_{max(minor, 17)}_x86_64"


def strip_debug_info(path: Path) -> None:
    """The release profile keeps line tables (debug = 1) for backtraces in development:
    four fifths of the library's size, which the wheel does without (51 -> 5 MB). The copy
    is stripped with binutils' strip, there wherever the library is built;
    DOCKER_DELTA_STRIP=0 keeps them (packagers extracting debug info themselves)."""
    if os.environ.get("DOCKER_DELTA_STRIP") == "0":
        return
    strip = shutil.which("strip")
    if strip is None:
        print("docker-delta: warning: no `strip` on PATH, the library keeps its debug info")
        return
    subprocess.run([strip, "--strip-debug", str(path)], check=True)


# --- the commands ---------------------------------------------------------------------


class BuildPyWithLibrary(build_py):
    """build_py, then the shared library copied into the built package."""

    def run(self) -> None:
        super().run()
        src = obtain_library()
        if not src.is_file():
            raise SystemExit(f"docker-delta: the build left no {src}")
        lib = ctypes.CDLL(str(src.resolve()))
        lib.dd_version.restype = ctypes.c_char_p
        found, want = lib.dd_version().decode(), package_version()
        if not compatible(found, want):
            raise SystemExit(
                f"docker-delta: {src} is version {found} but the Python package is {want}"
            )
        dest = Path(self.build_lib) / PACKAGE / LIB_NAME
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
        os.chmod(dest, 0o755)
        print(f"docker-delta: copied {src} ({found}) to {dest}")
        strip_debug_info(dest)

    def get_outputs(self, include_bytecode: bool = True) -> list:
        return super().get_outputs(include_bytecode) + [
            str(Path(self.build_lib) / PACKAGE / LIB_NAME)
        ]


class PlatformWheel(bdist_wheel):
    """A platform wheel (the library inside) tagged py3-none-manylinux_2_NN_x86_64: any
    Python 3, no Python ABI (ctypes), the glibc the library needs."""

    def finalize_options(self) -> None:
        super().finalize_options()
        self.root_is_pure = False

    def get_tag(self) -> tuple:
        build_lib = Path(self.get_finalized_command("build_py").build_lib)
        return ("py3", "none", platform_tag(build_lib / PACKAGE / LIB_NAME))


class DistributionWithLibrary(Distribution):
    """Says it has compiled code (the library), so that install puts the package in
    platlib: a platform wheel's root, not ``.data/purelib``."""

    def has_ext_modules(self) -> bool:
        return True


setup(
    distclass=DistributionWithLibrary,
    cmdclass={"build_py": BuildPyWithLibrary, "bdist_wheel": PlatformWheel},
)
