#!/usr/bin/env bash
# Build the cargo-fuzz targets, seed their corpora from real files, and run each target
# for SECONDS_PER_TARGET seconds, one after another.
#
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#        (default: 10 seconds, every target in fuzz/fuzz_targets/)
#
# cargo-fuzz is installed once into $DOCKER_DELTA_CACHE/cargo-fuzz (default .cache/) from
# crates.io. The stable toolchain is used with RUSTC_BOOTSTRAP=1 for the -Z flags
# cargo-fuzz passes (sanitizer, coverage). Corpora live in fuzz/corpus/TARGET (gitignored):
# checked-in seeds from fuzz/seeds/TARGET, real archives (samples/, the fixtures when
# DOCKER_DELTA_FIXTURES points to them), manifests and configs taken out of them, and
# packages made by `create` from a fixed small base image. A crash leaves its input in
# fuzz/artifacts/TARGET/ and fails the script; turn it into a regression test
# (tests/fuzz_regressions.rs) and keep the input in fuzz/regressions/TARGET/.
#
# Env:
#   DOCKER_DELTA_FUZZ_ARGS   extra libFuzzer flags (e.g. "-jobs=2 -workers=2")
#   DOCKER_DELTA_FUZZ_LOG    file to append a per-target summary to (execs, duration)
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
log() { printf '[fuzz] %s\n' "$*" >&2; }

SECS=${1:-10}
shift || true
CACHE=${DOCKER_DELTA_CACHE:-$REPO/.cache}
CARGO_FUZZ=$CACHE/cargo-fuzz/bin/cargo-fuzz
CARGO_FUZZ_VERSION=0.13.2

if ! grep -qF "$CARGO_FUZZ_VERSION" <<<"$("$CARGO_FUZZ" --version 2>/dev/null || true)"; then
    log "installing cargo-fuzz $CARGO_FUZZ_VERSION into $CACHE/cargo-fuzz"
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --root "$CACHE/cargo-fuzz"
fi
export RUSTC_BOOTSTRAP=1
# The targets write each input to a file: keep those in memory, and remove them at the end.
SCRATCH=$(mktemp -d "$( [ -d /dev/shm ] && echo /dev/shm || echo "${TMPDIR:-/tmp}")/dd-fuzz.XXXXXX")
trap 'rm -rf "$SCRATCH"' EXIT

ALL=()
for f in fuzz/fuzz_targets/*.rs; do ALL+=("$(basename "$f" .rs)"); done
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=("${ALL[@]}")

t0=$SECONDS
log "building ${TARGETS[*]} (release, debug assertions, AddressSanitizer)"
(cd fuzz && "$CARGO_FUZZ" build --debug-assertions)
log "build took $((SECONDS - t0))s"
BIN=fuzz/target/x86_64-unknown-linux-gnu/release

# --- seed corpora --------------------------------------------------------------------
GEN=fuzz/corpus/.generated
rm -rf "$GEN"
mkdir -p "$GEN"
DD_FUZZ_WRITE_SEEDS="$GEN" TMPDIR="$SCRATCH" "$BIN/apply" >/dev/null 2>"$GEN/log" || { cat "$GEN/log" >&2; exit 1; }
FIXTURES=${DOCKER_DELTA_FIXTURES:-$REPO/tests/fixtures/generated}

seed() { # seed TARGET FILE...: copy files into the target's corpus
    local t=$1 f
    shift
    mkdir -p "fuzz/corpus/$t"
    for f in "$@"; do
        [ -f "$f" ] || continue
        cp "$f" "fuzz/corpus/$t/seed-$(sha256sum "$f" | cut -c1-16)"
    done
}

# JSON documents out of every real archive we have.
JSON=$GEN/json
mkdir -p "$JSON"
for a in samples/*.tar "$GEN"/*.tar "$FIXTURES"/d20/*.tar "$FIXTURES"/d26/*.tar \
         "$FIXTURES"/oci-archive/*.tar "$FIXTURES"/skopeo/*.tar "$FIXTURES"/crane/*.tar; do
    [ -f "$a" ] || continue
    d=$JSON/$(sha256sum "$a" | cut -c1-12)
    mkdir -p "$d"
    tar -xf "$a" -C "$d" --wildcards 'manifest.json' 'index.json' '*.json' 2>/dev/null || true
    # small blobs are manifests, indexes and configs
    { tar -tf "$a" | grep '^blobs/sha256/' || true; } | while read -r m; do
        size=$(tar -tvf "$a" "$m" | awk 'NR==1 {print $3}')
        [ "${size:-0}" -lt 65536 ] && tar -xf "$a" -C "$d" "$m" 2>/dev/null || true
    done
done
mapfile -t json_files < <(find "$JSON" "$FIXTURES"/oci "$FIXTURES"/multiarch "$FIXTURES"/umoci \
    -type f -size -64k \( -name '*.json' -o -path '*/blobs/sha256/*' \) 2>/dev/null || true)
seed manifest fuzz/seeds/manifest/* "${json_files[@]}"
seed reference fuzz/seeds/reference/*
seed referrers fuzz/seeds/referrers/*
seed docker_archive fuzz/seeds/docker_archive/* "$GEN"/*.tar samples/*.tar \
    "$FIXTURES"/d20/old.tar "$FIXTURES"/d26/old.tar "$FIXTURES"/skopeo/old.docker.tar \
    "$FIXTURES"/crane/new.tar "$FIXTURES"/d20/new.tar.gz
seed oci_archive fuzz/seeds/oci_archive/* "$GEN"/applied.oci.tar "$FIXTURES"/oci-archive/old.tar \
    "$FIXTURES"/d26/old.tar
PKG=$GEN/samples.ddelta
cargo run -q -- create samples/app-1.tar samples/app-2.tar -o "$PKG" --compression zstd --level 3 -q
seed package fuzz/seeds/package/* "$GEN"/*.ddelta
seed apply fuzz/seeds/apply/* "$GEN"/*.ddelta
seed files fuzz/seeds/files/* "$GEN"/*.files
seed tar_headers fuzz/seeds/tar_headers/* samples/*.tar "$GEN"/*.tar
# Inputs that once crashed stay in the corpus.
for t in "${TARGETS[@]}"; do
    [ -d "fuzz/regressions/$t" ] && seed "$t" fuzz/regressions/"$t"/*
done

# --- run -----------------------------------------------------------------------------
rc=0
for t in "${TARGETS[@]}"; do
    mkdir -p "fuzz/artifacts/$t" "fuzz/corpus/$t"
    out=$GEN/run-$t.log
    # The files decoder may reserve one chunk's output and one patch source (under 64 MiB
    # together) from what a stream claims, never more: fail on any bigger allocation.
    extra=()
    [ "$t" != files ] || extra=(-malloc_limit_mb=64)
    # -rss_limit_mb: the zstd decoders may reserve a 2 GiB window (format v1 allows it).
    rss=3072
    # The tar header reader holds one extension record of at most 1 MiB and nothing in
    # proportion to what an archive claims: any bigger allocation, or 512 MiB in all, fails.
    if [ "$t" = tar_headers ]; then
        rss=512
        extra=(-malloc_limit_mb=4)
    fi
    log "running $t for ${SECS}s ($(ls "fuzz/corpus/$t" | wc -l) inputs in its corpus)"
    set +e
    # shellcheck disable=SC2086
    # Absolute paths: the reference target changes its working directory.
    TMPDIR="$SCRATCH" "$BIN/$t" "$REPO/fuzz/corpus/$t" -artifact_prefix="$REPO/fuzz/artifacts/$t/" -max_total_time="$SECS" \
        -timeout=20 -rss_limit_mb="$rss" -max_len=1048576 -print_final_stats=1 \
        "${extra[@]}" ${DOCKER_DELTA_FUZZ_ARGS:-} >"$out" 2>&1
    trc=$?
    set -e
    execs=$(grep -E '^stat::number_of_executed_units' "$out" | awk '{print $2}' | tail -1 || true)
    cov=$(grep -oE 'cov: [0-9]+' "$out" | tail -1 || true)
    line="$t: ${SECS}s, ${execs:-?} execs, ${cov:-cov: ?}, exit $trc"
    log "$line"
    [ -z "${DOCKER_DELTA_FUZZ_LOG:-}" ] || echo "$(date -u +%FT%TZ) $line" >>"$DOCKER_DELTA_FUZZ_LOG"
    if [ $trc -ne 0 ]; then
        log "$t FAILED; the end of its log ($out):"
        tail -60 "$out" >&2
        rc=1
    fi
done
exit $rc
