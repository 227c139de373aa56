#!/usr/bin/env bash
# Run all tests: install deps, start the three Docker engines, build fixtures,
# start the four test registries and push the fixtures into them, run every
# suite. Engines and registries this script started are stopped on exit; those
# that were already running are left alone. The exit code is the first
# failing suite's (or 0).
#
# Usage: scripts/test.sh [SUITE...]     (default: all suites, in order)
#
# Env:
#   DOCKER_DELTA_FIXTURES     fixture dir (default tests/fixtures/generated)
#   DOCKER_DELTA_KEEP_ENGINES=1  do not stop engines on exit
#   DOCKER_DELTA_KEEP_REGISTRIES=1  do not stop registries on exit
#   DOCKER_DELTA_SKIP_DEPS=1     skip install-deps.sh
#   DOCKER_DELTA_FUZZ_SECONDS    seconds per fuzz target in the fuzz suite (default 10)
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"

log() { printf '[test] %s\n' "$*" >&2; }

SUITES=(fmt deps cargo zlibng msrv fuzz demo c python go)

ENGINES_STARTED=()
REGISTRIES_STARTED=()
cleanup() {
    local rc=$?
    if [ ${#REGISTRIES_STARTED[@]} -gt 0 ] && [ "${DOCKER_DELTA_KEEP_REGISTRIES:-0}" != 1 ]; then
        log "stopping the registries this run started: ${REGISTRIES_STARTED[*]}"
        "$REPO/scripts/registries.sh" stop "${REGISTRIES_STARTED[@]}" || true
    fi
    if [ ${#ENGINES_STARTED[@]} -gt 0 ] && [ "${DOCKER_DELTA_KEEP_ENGINES:-0}" != 1 ]; then
        log "stopping the engines this run started: ${ENGINES_STARTED[*]}"
        "$REPO/scripts/engines.sh" stop "${ENGINES_STARTED[@]}" || true
    fi
    log "exit $rc"
    exit "$rc"
}
trap cleanup EXIT
# Killed (CI's time limit, ^C): the exit code says so, after the cleanup above. Without
# these, bash ran the cleanup with the last command's status and logged "exit 0".
trap 'exit 143' TERM
trap 'exit 130' INT

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
    log "== registries"
    local r
    for r in plain basic token tls; do
        "$REPO/scripts/registries.sh" status "$r" >/dev/null 2>&1 || REGISTRIES_STARTED+=("$r")
    done
    # seed starts them, and pushes the fixtures unless already there
    "$REPO/scripts/registries.sh" seed
    eval "$("$REPO/scripts/registries.sh" env)"
    export DOCKER_DELTA_REQUIRE_REGISTRIES=1
    export DOCKER_DELTA_REQUIRE_ENGINES=1
    # tests/bad_input.rs mounts small tmpfs file systems (read-only dir, full disk)
    export DOCKER_DELTA_REQUIRE_ROOT=1
    log "env: DOCKER_DELTA_TEST_DOCKER20=$DOCKER_DELTA_TEST_DOCKER20"
    log "env: DOCKER_DELTA_TEST_DOCKER26=$DOCKER_DELTA_TEST_DOCKER26"
    log "env: DOCKER_DELTA_TEST_C8D=$DOCKER_DELTA_TEST_C8D (Docker 26, containerd image store)"
    log "env: DOCKER_DELTA_FIXTURES=$DOCKER_DELTA_FIXTURES DOCKER_DELTA_REQUIRE_ENGINES=1"
    log "env: registries plain=$DOCKER_DELTA_TEST_REGISTRY_PLAIN basic=$DOCKER_DELTA_TEST_REGISTRY_BASIC token=$DOCKER_DELTA_TEST_REGISTRY_TOKEN (realm $DOCKER_DELTA_TEST_TOKEN_REALM, issuer run by the tests) tls=$DOCKER_DELTA_TEST_REGISTRY_TLS DOCKER_DELTA_REQUIRE_REGISTRIES=1"
}

# --- suites: one function per suite, named suite_<name> -------------------
# What a Rust project depending on docker-delta builds: no bindgen or libclang anywhere
# (a C compiler is all the native code needs), and no CLI crates in the library.
suite_deps() {
    local p
    for p in bindgen clang-sys; do
        log "+ cargo tree --workspace -e normal,build -i $p (must find nothing)"
        if cargo tree --workspace -e normal,build -i "$p" 2>/dev/null | grep .; then
            log "$p is in the build"; return 1
        fi
    done
    # A new project that depends on the library, as the README's Install says (its own
    # Cargo.toml, this lock file's versions, a target dir of its own so that the check for
    # C libraries sees only what it built).
    local user=$REPO/target/dependent
    rm -rf "$user" && mkdir -p "$user/src"
    printf '%s\n' '[package]' 'name = "dependent"' 'version = "0.0.0"' 'edition = "2021"' \
        'publish = false' '' '[dependencies]' "docker-delta = { path = \"$REPO\" }" '' \
        '[workspace]' >"$user/Cargo.toml"
    printf '%s\n' 'fn main() {' \
        '    let r = docker_delta::ImageReference::parse("docker-archive:app.tar").expect("parses");' \
        '    println!("docker-delta {} parses {r:?}", docker_delta::VERSION);' '}' >"$user/src/main.rs"
    cp "$REPO/Cargo.lock" "$user/Cargo.lock"
    log "+ a project depending on docker-delta: cargo tree -e normal (no clap, indicatif, tracing-subscriber)"
    if (cd "$user" && cargo tree -e normal) | grep -E " (clap|indicatif|tracing-subscriber) v"; then
        log "the library depends on CLI crates"; return 1
    fi
    log "+ a project depending on docker-delta: cargo run"
    (cd "$user" && CARGO_TARGET_DIR=$REPO/target/dependent/target cargo run --quiet)
    if find "$user/target" -name 'libdocker_delta*.so' -o -name 'libdocker_delta*.a' | grep .; then
        log "building the library made a C library too"; return 1
    fi
}

# The stated minimum Rust version, checked with Debian's Rust of that version.
suite_msrv() {
    log "+ scripts/msrv.sh"
    "$REPO/scripts/msrv.sh"
}

suite_cargo() {
    log "+ cargo test --workspace --all-targets"
    cargo test --workspace --all-targets
}

# The files codec re-deflates gzip members and needs stock zlib's exact bytes. A build
# whose deflater is zlib-ng (flate2's own `zlib-ng` feature, which the stock-zlib pin of
# libz-sys cannot stop; builds zlib-ng with cmake) must notice: cli/tests/zlib.rs's ignored
# tests check that its self-check fails, that create then ships gzip members whole, and that
# apply refuses a package made by a stock build. Then `libz-sys/zlib-ng`, which the pin
# does stop: the stock tests must still pass. Only that test file, so that only zlib(-ng),
# flate2 and this crate are built again.
suite_zlibng() {
    log "+ cargo test -p docker-delta-cli --test zlib --features flate2/zlib-ng -- --ignored"
    cargo test -p docker-delta-cli --test zlib --features flate2/zlib-ng -- --ignored
    log "+ cargo test -p docker-delta-cli --test zlib --features libz-sys/zlib-ng (the stock-zlib pin holds)"
    cargo test -p docker-delta-cli --test zlib --features libz-sys/zlib-ng
}

suite_fmt() {
    log "+ cargo fmt --check"
    cargo fmt --check
    # Broken or private intra-doc links make the API docs lie: rustdoc's warnings fail.
    log "+ cargo doc --no-deps --workspace (rustdoc warnings are errors)"
    RUSTDOCFLAGS="-D warnings" cargo doc --quiet --no-deps --workspace
}

suite_fuzz() {
    # A short run of every cargo-fuzz target (the long runs are by hand: see README).
    log "+ scripts/fuzz.sh ${DOCKER_DELTA_FUZZ_SECONDS:-10}"
    "$REPO/scripts/fuzz.sh" "${DOCKER_DELTA_FUZZ_SECONDS:-10}"
}

suite_demo() {
    log "+ scripts/demo.sh (the README's run-it command)"
    DEMO_DIR="$REPO/target/demo-ci" "$REPO/scripts/demo.sh"
    # The README's CLI install (sharing target/ so that nothing is compiled twice).
    log "+ cargo install --path cli --root target/cli-install"
    rm -rf "$REPO/target/cli-install"
    cargo install --quiet --locked --path "$REPO/cli" --root "$REPO/target/cli-install" \
        --target-dir "$REPO/target"
    "$REPO/target/cli-install/bin/docker-delta" --version
}

# The C library installed into a private prefix the way users install it
# (scripts/install-c.sh: SONAME, static library, header, docker-delta.pc), for the C, Go
# and Python suites, which build against it from outside the source tree. Each suite
# installs it (a no-op build when it is current), so that each also runs alone.
C_PREFIX=$REPO/target/c-prefix
install_c() {
    log "+ scripts/install-c.sh --prefix $C_PREFIX"
    "$REPO/scripts/install-c.sh" --prefix "$C_PREFIX"
}

suite_c() {
    install_c
    log "+ bindings/c/test.sh (pkg-config shared and static builds of example.c, valgrind)"
    "$REPO/bindings/c/test.sh" "$C_PREFIX"
}

suite_python() {
    install_c
    # The wheel as users install it (the installed library inside), in a fresh venv
    # outside the repository, with a copy of the tests.
    log "+ bindings/python/test-installed.sh ($(command -v python3), $(python3 --version 2>&1))"
    DOCKER_DELTA_PREBUILT_LIB="$C_PREFIX/lib/libdocker_delta.so" \
        "$REPO/bindings/python/test-installed.sh"
}

suite_go() {
    install_c
    log "+ bindings/go/test-installed.sh (the module copied out of the tree, pkg-config)"
    "$REPO/bindings/go/test-installed.sh" "$C_PREFIX"
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
