#!/usr/bin/env bash
# Run all tests: install deps, start the three Docker engines, build fixtures,
# run every suite. Engines this script started are stopped on exit; engines
# that were already running are left alone. The exit code is the first
# failing suite's (or 0).
#
# Usage: scripts/test.sh [SUITE...]     (default: all suites, in order)
#
# Env:
#   DOCKER_DELTA_FIXTURES     fixture dir (default tests/fixtures/generated)
#   DOCKER_DELTA_KEEP_ENGINES=1  do not stop engines on exit
#   DOCKER_DELTA_SKIP_DEPS=1     skip install-deps.sh
#   DOCKER_DELTA_FUZZ_SECONDS    seconds per fuzz target in the fuzz suite (default 10)
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"

log() { printf '[test] %s\n' "$*" >&2; }

SUITES=(fmt cargo fuzz demo c python go)

ENGINES_STARTED=()
cleanup() {
    local rc=$?
    if [ ${#ENGINES_STARTED[@]} -gt 0 ] && [ "${DOCKER_DELTA_KEEP_ENGINES:-0}" != 1 ]; then
        log "stopping the engines this run started: ${ENGINES_STARTED[*]}"
        "$REPO/scripts/engines.sh" stop "${ENGINES_STARTED[@]}" || true
    fi
    log "exit $rc"
    exit "$rc"
}
trap cleanup EXIT

setup() {
    if [ "${DOCKER_DELTA_SKIP_DEPS:-0}" != 1 ]; then
        log "== install-deps"
        "$REPO/scripts/install-deps.sh"
    fi
    log "== engines"
    local e
    for e in d20 d26 c8d; do
        "$REPO/scripts/engines.sh" status "$e" >/dev/null 2>&1 || ENGINES_STARTED+=("$e")
    done
    "$REPO/scripts/engines.sh" start
    eval "$("$REPO/scripts/engines.sh" env)"
    export DOCKER_DELTA_FIXTURES=${DOCKER_DELTA_FIXTURES:-$REPO/tests/fixtures/generated}
    log "== fixtures ($DOCKER_DELTA_FIXTURES)"
    "$REPO/scripts/make-fixtures.sh" "$DOCKER_DELTA_FIXTURES"
    export DOCKER_DELTA_REQUIRE_ENGINES=1
    # tests/bad_input.rs mounts small tmpfs file systems (read-only dir, full disk)
    export DOCKER_DELTA_REQUIRE_ROOT=1
    log "env: DOCKER_DELTA_TEST_DOCKER20=$DOCKER_DELTA_TEST_DOCKER20"
    log "env: DOCKER_DELTA_TEST_DOCKER26=$DOCKER_DELTA_TEST_DOCKER26"
    log "env: DOCKER_DELTA_TEST_C8D=$DOCKER_DELTA_TEST_C8D (Docker 26, containerd image store)"
    log "env: DOCKER_DELTA_FIXTURES=$DOCKER_DELTA_FIXTURES DOCKER_DELTA_REQUIRE_ENGINES=1"
}

# --- suites: one function per suite, named suite_<name> -------------------
suite_cargo() {
    log "+ cargo test --all-targets"
    cargo test --all-targets
}

suite_fmt() {
    log "+ cargo fmt --check"
    cargo fmt --check
}

suite_fuzz() {
    # A short run of every cargo-fuzz target (the long runs are by hand: see README).
    log "+ scripts/fuzz.sh ${DOCKER_DELTA_FUZZ_SECONDS:-10}"
    "$REPO/scripts/fuzz.sh" "${DOCKER_DELTA_FUZZ_SECONDS:-10}"
}

suite_demo() {
    log "+ scripts/demo.sh (the README's run-it command)"
    DEMO_DIR="$REPO/target/demo-ci" "$REPO/scripts/demo.sh"
}

# The C ABI's shared library (target/release/libdocker_delta.so) for the binding suites.
build_cdylib() {
    log "+ cargo build --release --lib"
    cargo build --release --lib --quiet
}

suite_c() {
    build_cdylib
    log "+ bindings/c/test.sh (example.c: happy and error paths under valgrind)"
    "$REPO/bindings/c/test.sh"
}

suite_python() {
    build_cdylib
    # The wheel as users install it (the library built above inside), in a fresh venv
    # outside the repository, with a copy of the tests.
    log "+ bindings/python/test-installed.sh ($(command -v python3), $(python3 --version 2>&1))"
    DOCKER_DELTA_PREBUILT_LIB="$REPO/target/release/libdocker_delta.so" \
        "$REPO/bindings/python/test-installed.sh"
}

suite_go() {
    build_cdylib
    cd "$REPO/bindings/go"
    # Debian's Go, no module downloads; caches stay in the repo's .cache.
    export GOFLAGS=-mod=mod GOPROXY=off GOTOOLCHAIN=local GOTELEMETRY=off
    export GOCACHE="$REPO/.cache/go/build" GOPATH="$REPO/.cache/go/path"
    log "+ gofmt -l, go vet, go test ($(go version))"
    local unformatted
    unformatted=$(gofmt -l .)
    [ -z "$unformatted" ] || { log "gofmt: not formatted: $unformatted"; return 1; }
    go vet ./...
    go test -count=1 ./...
}

main() {
    local suites=("$@") s rc=0 failed=()
    [ ${#suites[@]} -gt 0 ] || suites=("${SUITES[@]}")
    for s in "${suites[@]}"; do
        declare -F "suite_$s" >/dev/null || { log "unknown suite: $s (have: ${SUITES[*]})"; exit 2; }
    done
    setup
    for s in "${suites[@]}"; do
        log "== suite $s"
        local t0=$SECONDS src=0
        # subshell outside any `||` so `set -e` stays in force inside the suite
        set +e
        ( set -e; "suite_$s" )
        src=$?
        set -e
        if [ $src -ne 0 ]; then
            log "suite $s FAILED (exit $src) after $((SECONDS - t0))s"
            failed+=("$s")
            [ $rc -ne 0 ] || rc=$src
        else
            log "suite $s ok ($((SECONDS - t0))s)"
        fi
    done
    if [ ${#failed[@]} -gt 0 ]; then
        log "failed suites: ${failed[*]}"
    fi
    return $rc
}

main "$@"
