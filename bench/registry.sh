#!/usr/bin/env bash
# Benchmark docker-delta against a registry (issue 19): bytes on the wire and
# wall time of `create` from a registry against `skopeo copy` of both images
# out of it, and of `apply -o docker://` against `skopeo copy` of the new
# image into it; for reference, the same docker-delta commands on the
# docker-archive files (no registry). Writes the "Registries" part of
# docs/BENCHMARKS.md.
#
# Run by hand (not by CI), as root, with the test registries up
# (scripts/registries.sh start plain; this script pushes only under bench/...):
#     bash bench/registry.sh                        # the pairs in bench/.cache/corpus
#     BENCH_PAIRS="debian multilayer" bash bench/registry.sh
#
# Every measured command talks to the registry through bench/countproxy.py, a
# byte-counting TCP proxy on 127.0.0.1 started afresh for each command, so
# the counts are the TCP payload of that command alone, both directions,
# manifests, token-less probes and all. skopeo runs with an empty blob-info
# cache of its own (a tmpfs over /var/lib/containers/cache in a private mount
# namespace): with the system's cache it would mount blobs it pushed before
# instead of uploading them, and this script must not fill the system's cache
# with bench/ blobs either.
#
# Needs: bench/corpus.sh's images (built here for the debian pair if no pair
# is there), skopeo, python3, unshare (util-linux), /usr/bin/time, curl, and a
# built target/release/docker-delta (BENCH_BUILD=1 builds it first).
#
# Env:
#   BENCH_PAIRS      pairs (default: every pair of bench/.cache/corpus with
#                    both images; `debian` is built first if there is none)
#   BENCH_REPEAT     runs of each measurement (default 3); the tables give
#                    the median time and the largest peak RSS
#   BENCH_REGISTRY   HOST:PORT of a plain-HTTP, anonymous registry (default:
#                    the `plain` one of scripts/registries.sh env)
#   BENCH_BIN        binary (default: target/release/docker-delta)
#   BENCH_BUILD      1 = cargo build --release -p docker-delta-cli first
#   BENCH_NO_DOCS    1 = print the tables, do not touch docs/
#
# Repositories: bench/PAIR:old and :new (pushed once, again only when their
# config digest is not the corpus image's), and per measured push a fresh
# bench/PAIR-applied-RUN-N:new and bench/PAIR-copied-RUN-N:new, so nothing is
# already there. Results: bench/.cache/registry-results/PAIR.tsv (the last
# run of each pair); work files in bench/.cache/work/registry/, with the
# request lines the proxy saw per measurement in requests/PAIR-TOOL-N.txt.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
CACHE=$HERE/.cache
CORPUS=$CACHE/corpus
STORE=$CACHE/registry-results
W=$CACHE/work/registry
BIN=${BENCH_BIN:-$ROOT/target/release/docker-delta}
REPEAT=${BENCH_REPEAT:-3}
KNOWN_PAIRS="debian kernel tools wheels multilayer"
BLOB_CACHE=/var/lib/containers/cache   # containers-image's blob-info cache for root

log() { printf '[registry-bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# shellcheck source=bench/registry-lib.sh
source "$HERE/registry-lib.sh"

# ---------------------------------------------------------------- measure
run_pair() {
    local pair=$1 rep t ok pkg=$W/$1.ddelta new_id repo got
    local run
    run=$(date -u +%Y%m%d%H%M%S)
    new_id=$(want_id "$pair" new)
    ROWS=$STORE/$pair.tsv.new
    : >"$ROWS"
    seed "$pair"
    printf '%s\t%s\t%s\t%s\n' "$(image_bytes "$REG/bench/$pair:old")" \
        "$(image_bytes "$REG/bench/$pair:new")" "$new_id" "$(skopeo --version)" >"$STORE/$pair.info"

    for ((rep = 1; rep <= REPEAT; rep++)); do
        # 1. create from the registry: both images read through the proxy
        log "$pair #$rep: docker-delta create docker:// (old, new)"
        rm -f "$pkg"
        proxy_start
        ok=yes
        timed t "$BIN" -q --tls-verify=false create "docker://$PROXY/bench/$pair:new" \
            --base "docker://$PROXY/bench/$pair:old" -o "$pkg" --force || ok=FAILED
        proxy_stop
        record "$pair" dd-create "$rep" "$t" "$ok" "$( [[ -s $pkg ]] && stat -c %s "$pkg" || echo 0)" "$STATS"
        [[ $ok == yes ]] || die "$pair: create failed; nothing more to measure"

        # 1''. the same create from the corpus files, no registry: what the
        # registry adds to create's time
        log "$pair #$rep: docker-delta create docker-archive: (old, new), for reference"
        ok=yes
        timed t "$BIN" -q create "docker-archive:$CORPUS/$pair/new-image.tar" \
            --base "docker-archive:$CORPUS/$pair/old-image.tar" -o "$W/file.ddelta" --force || ok=FAILED
        STATS='{"up": 0, "down": 0, "connections": 0, "requests": {}, "mounts": 0, "blob_gets": 0}'
        : >"$W/proxy.requests"
        record "$pair" dd-create-file "$rep" "$t" "$ok" "$( [[ -s $W/file.ddelta ]] && stat -c %s "$W/file.ddelta" || echo 0)" "$STATS"
        rm -f "$W/file.ddelta"

        # 1'. what a user does without docker-delta: both images copied out
        # of the registry into one OCI layout (a blob already in the layout,
        # the shared base layer, is not downloaded again)
        log "$pair #$rep: skopeo copy docker:// -> oci: (old, new)"
        rm -rf "$W/layout"
        proxy_start
        ok=yes
        timed t bash -c 'skopeo_fresh copy -q --src-tls-verify=false "docker://$1/bench/$2:old" "oci:$3:old" &&
            skopeo_fresh copy -q --src-tls-verify=false "docker://$1/bench/$2:new" "oci:$3:new"' \
            _ "$PROXY" "$pair" "$W/layout" || ok=FAILED
        proxy_stop
        record "$pair" skopeo-pull "$rep" "$t" "$ok" "$(du -sb "$W/layout" 2>/dev/null | cut -f1 || echo 0)" "$STATS"
        rm -rf "$W/layout"

        # 2. apply with the base read from, and the new image pushed to, the
        # registry: a fresh repository, so only mounts can spare an upload
        repo=bench/$pair-applied-$run-$rep
        log "$pair #$rep: docker-delta apply --base docker:// -o docker://$repo:new"
        proxy_start
        ok=yes
        timed t "$BIN" -q --tls-verify=false apply "$pkg" --base "docker://$PROXY/bench/$pair:old" \
            -o "docker://$PROXY/$repo:new" || ok=FAILED
        proxy_stop
        if [[ $ok == yes ]]; then
            got=$(config_digest "$REG/$repo:new")
            [[ $got == "$new_id" ]] || ok="NO (config $got)"
        fi
        record "$pair" dd-apply "$rep" "$t" "$ok" "$(image_bytes "$REG/$repo:new" 2>/dev/null || echo 0)" "$STATS"

        # 2''. the same apply from and to files, no registry, for reference
        log "$pair #$rep: docker-delta apply --base docker-archive: -o file, for reference"
        ok=yes
        timed t "$BIN" -q apply "$pkg" --base "docker-archive:$CORPUS/$pair/old-image.tar" \
            -o "$W/applied.tar" --force || ok=FAILED
        if [[ $ok == yes ]]; then
            got=$("$BIN" -q inspect --verify "docker-archive:$W/applied.tar" --json \
                | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["image_id"] if d.get("layers_verified", d.get("verified")) else "unverified")' \
                || echo "inspect failed")
            [[ $got == "$new_id" ]] || ok="NO ($got)"
        fi
        STATS='{"up": 0, "down": 0, "connections": 0, "requests": {}, "mounts": 0, "blob_gets": 0}'
        : >"$W/proxy.requests"
        record "$pair" dd-apply-file "$rep" "$t" "$ok" "$(stat -c %s "$W/applied.tar" 2>/dev/null || echo 0)" "$STATS"
        rm -f "$W/applied.tar"

        # 2'. without docker-delta: the whole new image shipped to the registry
        repo=bench/$pair-copied-$run-$rep
        log "$pair #$rep: skopeo copy new-image.tar -> docker://$repo:new"
        proxy_start
        ok=yes
        timed t bash -c 'skopeo_fresh "$@"' _ copy -q --dest-tls-verify=false \
            "docker-archive:$CORPUS/$pair/new-image.tar" "docker://$PROXY/$repo:new" || ok=FAILED
        proxy_stop
        if [[ $ok == yes ]]; then
            got=$(config_digest "$REG/$repo:new")
            [[ $got == "$new_id" ]] || ok="NO (config $got)"
        fi
        record "$pair" skopeo-push "$rep" "$t" "$ok" "$(image_bytes "$REG/$repo:new" 2>/dev/null || echo 0)" "$STATS"
    done
    mv "$ROWS" "$STORE/$pair.tsv"
    rm -f "$pkg"
}

# ---------------------------------------------------------------- main
mkdir -p "$STORE" "$W"
log "registry http://$REG, pairs: $PAIRS, $REPEAT run(s) each, binary $BIN"
start=$(date +%s)
for p in $PAIRS; do
    log "== $p"
    run_pair "$p"
done
log "pairs done in $(( $(date +%s) - start )) s"

files=()
for p in $PAIRS; do files+=("$STORE/$p.tsv"); done
args=(--bin-version "$("$BIN" --version | head -n1), binary of $(date -u -r "$BIN" '+%Y-%m-%d %H:%M') UTC")
if [[ ${BENCH_NO_DOCS:-0} != 1 ]]; then
    args+=(--docs "$ROOT/docs/BENCHMARKS.md")
fi
python3 "$HERE/report.py" registry "${args[@]}" "${files[@]}"
