#!/usr/bin/env bash
# Benchmark a fleet device's update (issue 20): bytes on the wire and wall time
# of `docker-delta pull` against `docker pull` of the same new image from the
# same registry, on the corpus pairs. Writes the "Fleet updates" part of
# docs/BENCHMARKS.md.
#
# Run by hand (not by CI), as root, with the test registries and engines up
# (scripts/registries.sh start plain; scripts/engines.sh start d26):
#     bash bench/fleet.sh                          # the pairs in bench/.cache/corpus
#     BENCH_PAIRS=debian BENCH_REPEAT=1 bash bench/fleet.sh
#
# Per pair and run, in a fresh repository bench/fleet-PAIR-RUN (old and new
# copied in from bench/PAIR, which bench/registry-lib.sh's seed puts there):
#   publish   docker-delta publish :new --base old (the CI step; not proxied)
#   then, on the Docker 26 engine of scripts/engines.sh (classic store), each
#   through a fresh counting proxy (bench/countproxy.py), from a daemon that
#   holds the old image and not the new one:
#   dd-pull        docker-delta pull docker://PROXY/REPO:new (old pulled from the registry)
#   docker-pull    docker pull PROXY/REPO:new (old pulled from the registry: layers it
#                  shares with the old image, by blob digest, are not downloaded)
#   docker-pull-loaded  docker pull PROXY/REPO:new where the old image was
#                  `docker load`ed from a file (no blob digests known: every layer)
# Every pulled image's config digest is checked against the corpus's new image.
#
# Env: BENCH_PAIRS, BENCH_REPEAT (default 3), BENCH_REGISTRY, BENCH_BIN (default
# target/release/docker-delta), BENCH_BUILD, BENCH_NO_DOCS as bench/registry.sh;
# BENCH_DOCKER_HOST / BENCH_DOCKER_CLI: the engine (default: Docker 26 of
# scripts/engines.sh env).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
CACHE=$HERE/.cache
CORPUS=$CACHE/corpus
STORE=$CACHE/fleet-results
W=$CACHE/work/fleet
BIN=${BENCH_BIN:-$ROOT/target/release/docker-delta}
REPEAT=${BENCH_REPEAT:-3}
KNOWN_PAIRS="debian kernel tools wheels multilayer"
BLOB_CACHE=/var/lib/containers/cache

log() { printf '[fleet-bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# shellcheck source=bench/registry-lib.sh
source "$HERE/registry-lib.sh"

if [[ -z ${BENCH_DOCKER_HOST:-} ]]; then
    eval "$(bash "$ROOT/scripts/engines.sh" env)"
    BENCH_DOCKER_HOST=$DOCKER_DELTA_TEST_DOCKER26
    BENCH_DOCKER_CLI=$DOCKER_DELTA_TEST_DOCKER26_CLI
fi
DOCKER_CLI=${BENCH_DOCKER_CLI:-docker}
export DOCKER_HOST=$BENCH_DOCKER_HOST
"$DOCKER_CLI" version --format '{{.Server.Version}}' >/dev/null \
    || die "no Docker engine answers at $DOCKER_HOST (scripts/engines.sh start d26)"
DOCKER_VERSION=$("$DOCKER_CLI" version --format '{{.Server.Version}}')

# daemon_id NAME: the config digest of NAME in the daemon (classic store: its Id)
daemon_id() { "$DOCKER_CLI" image inspect --format '{{.Id}}' "$1" 2>/dev/null || echo none; }

# forget REPO: the daemon holds nothing of REPO nor the corpus images
forget() {
    local repo=$1 pair=$2 img
    for img in $("$DOCKER_CLI" image ls --format '{{.Repository}}:{{.Tag}}' | grep -E "(^|/)$repo:|bench-fleet-$pair:" || true); do
        "$DOCKER_CLI" rmi -f "$img" >/dev/null 2>&1 || true
    done
    for side in old new; do
        "$DOCKER_CLI" rmi -f "$(want_id "$pair" "$side")" >/dev/null 2>&1 || true
    done
}

run_pair() {
    local pair=$1 rep t ok run repo new_id old_id pkgsize
    run=$(date -u +%Y%m%d%H%M%S)
    new_id=$(want_id "$pair" new)
    old_id=$(want_id "$pair" old)
    ROWS=$STORE/$pair.tsv.new
    : >"$ROWS"
    seed "$pair"
    printf '%s\t%s\t%s\t%s\n' "$(image_bytes "$REG/bench/$pair:old")" \
        "$(image_bytes "$REG/bench/$pair:new")" "$new_id" "docker $DOCKER_VERSION" >"$STORE/$pair.info"
    for ((rep = 1; rep <= REPEAT; rep++)); do
        repo=bench/fleet-$pair-$run-$rep
        for side in old new; do
            skopeo_fresh copy -q --src-tls-verify=false --dest-tls-verify=false \
                "docker://$REG/bench/$pair:$side" "docker://$REG/$repo:$side"
        done
        log "$pair #$rep: docker-delta publish $repo:new --base old"
        ok=yes
        timed t "$BIN" -q --tls-verify=false publish "docker://$REG/$repo:new" --base old --json \
            >"$W/publish.json" || ok=FAILED
        pkgsize=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["packages"][0]["package_size"] or 0)' "$W/publish.json" 2>/dev/null || echo 0)
        STATS='{"up": 0, "down": 0, "connections": 0, "requests": {}, "mounts": 0, "blob_gets": 0}'
        : >"$W/proxy.requests"
        record "$pair" dd-publish "$rep" "$t" "$ok" "$pkgsize" "$STATS"
        [[ $ok == yes ]] || die "$pair: publish failed"

        # The device: the old image pulled from the registry, not the new one.
        forget "$repo" "$pair"
        "$DOCKER_CLI" pull -q "$REG/$repo:old" >/dev/null

        log "$pair #$rep: docker-delta pull (device holds old, pulled)"
        proxy_start
        ok=yes
        timed t "$BIN" -q --tls-verify=false pull "docker://$PROXY/$repo:new" --tag "bench-fleet-$pair:new" \
            || ok=FAILED
        proxy_stop
        [[ $(daemon_id "bench-fleet-$pair:new") == "$new_id" ]] || ok="NO ($(daemon_id "bench-fleet-$pair:new"))"
        record "$pair" dd-pull "$rep" "$t" "$ok" "$pkgsize" "$STATS"
        "$DOCKER_CLI" rmi -f "bench-fleet-$pair:new" >/dev/null 2>&1 || true
        "$DOCKER_CLI" rmi -f "$new_id" >/dev/null 2>&1 || true

        log "$pair #$rep: docker pull (device holds old, pulled)"
        proxy_start
        ok=yes
        timed t "$DOCKER_CLI" pull -q "$PROXY/$repo:new" >/dev/null || ok=FAILED
        proxy_stop
        [[ $(daemon_id "$PROXY/$repo:new") == "$new_id" ]] || ok="NO ($(daemon_id "$PROXY/$repo:new"))"
        record "$pair" docker-pull "$rep" "$t" "$ok" 0 "$STATS"

        # The device again, its old image loaded from a file this time.
        forget "$repo" "$pair"
        "$DOCKER_CLI" load -q -i "$CORPUS/$pair/old-image.tar" >/dev/null
        [[ $(daemon_id "$old_id") == "$old_id" ]] || die "$pair: old image not loaded"
        log "$pair #$rep: docker pull (device holds old, loaded from a file)"
        proxy_start
        ok=yes
        timed t "$DOCKER_CLI" pull -q "$PROXY/$repo:new" >/dev/null || ok=FAILED
        proxy_stop
        [[ $(daemon_id "$PROXY/$repo:new") == "$new_id" ]] || ok="NO ($(daemon_id "$PROXY/$repo:new"))"
        record "$pair" docker-pull-loaded "$rep" "$t" "$ok" 0 "$STATS"
        forget "$repo" "$pair"
    done
    mv "$ROWS" "$STORE/$pair.tsv"
}

mkdir -p "$STORE" "$W"
log "registry http://$REG, engine $DOCKER_HOST (Docker $DOCKER_VERSION), pairs: $PAIRS, $REPEAT run(s), binary $BIN"
for p in $PAIRS; do
    log "== $p"
    run_pair "$p"
done
files=()
for p in $PAIRS; do files+=("$STORE/$p.tsv"); done
args=(--bin-version "$("$BIN" --version | head -n1), binary of $(date -u -r "$BIN" '+%Y-%m-%d %H:%M') UTC")
if [[ ${BENCH_NO_DOCS:-0} != 1 ]]; then
    args+=(--docs "$ROOT/docs/BENCHMARKS.md")
fi
python3 "$HERE/report.py" fleet "${args[@]}" "${files[@]}"
