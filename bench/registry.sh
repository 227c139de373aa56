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

for t in python3 skopeo unshare curl sha256sum; do
    command -v "$t" >/dev/null || die "missing tool: $t"
done
[[ $REPEAT =~ ^[1-9][0-9]*$ ]] || die "BENCH_REPEAT must be a positive number, not '$REPEAT'"
if [[ ! -x /usr/bin/time ]]; then
    log "installing the time package"
    apt-get install -y -q time >/dev/null
fi

if [[ -z ${BENCH_REGISTRY:-} ]]; then
    eval "$(bash "$ROOT/scripts/registries.sh" env)"
    BENCH_REGISTRY=$DOCKER_DELTA_TEST_REGISTRY_PLAIN
fi
REG=$BENCH_REGISTRY
curl -fsS -o /dev/null "http://$REG/v2/" \
    || die "no registry answers at http://$REG/v2/ (start it: bash scripts/registries.sh start plain; or set BENCH_REGISTRY)"

if [[ ${BENCH_BUILD:-0} == 1 ]]; then
    log "cargo build --release -p docker-delta-cli"
    (cd "$ROOT" && cargo build --release -q -p docker-delta-cli)
fi
[[ -x $BIN ]] || die "no binary at $BIN (build it: cargo build --release -p docker-delta-cli, or BENCH_BUILD=1)"

has_pair() { [[ -s $CORPUS/$1/old-image.tar && -s $CORPUS/$1/new-image.tar && -s $CORPUS/$1/ids.txt ]]; }
if [[ -z ${BENCH_PAIRS:-} ]]; then
    PAIRS=""
    for p in $KNOWN_PAIRS; do has_pair "$p" && PAIRS+="$p "; done
    if [[ -z $PAIRS ]]; then
        log "no pair in $CORPUS: building the debian pair"
        CORPUS_PAIRS=debian bash "$HERE/corpus.sh"
        PAIRS=debian
    fi
else
    PAIRS=$BENCH_PAIRS
    missing=""
    for p in $PAIRS; do has_pair "$p" || missing+="$p "; done
    if [[ -n $missing ]]; then
        log "building the corpus for: $missing"
        CORPUS_PAIRS="$missing" bash "$HERE/corpus.sh"
    fi
fi

# ---------------------------------------------------------------- helpers

# timed OUTVAR CMD...: runs CMD under /usr/bin/time; OUTVAR gets "secs rss_kb"
# (the largest peak RSS of CMD and its children). Returns CMD's status.
timed() {
    local __var=$1; shift
    local tf rc=0
    tf=$(mktemp)
    /usr/bin/time -f '%e %M' -o "$tf" "$@" || rc=$?
    if (( rc != 0 )); then
        log "command failed ($rc): $*"; sed 's/^/    /' "$tf" >&2
    fi
    printf -v "$__var" '%s' "$(tail -n1 "$tf")"
    rm -f "$tf"
    return $rc
}

# skopeo with an empty blob-info cache of its own (see the header).
skopeo_fresh() {
    unshare --mount --propagation private sh -c \
        'mount -t tmpfs -o size=64m,mode=0700 tmpfs "$0" && exec skopeo "$@"' "$BLOB_CACHE" "$@"
}
export BLOB_CACHE
export -f skopeo_fresh   # for the `bash -c` that /usr/bin/time runs
mkdir -p "$BLOB_CACHE"
skopeo_fresh --version >/dev/null \
    || die "cannot give skopeo a blob-info cache of its own (unshare --mount and a tmpfs need root)"

PROXY_PID=""
stop_proxy_on_exit() { if [[ -n $PROXY_PID ]]; then kill -TERM "$PROXY_PID" 2>/dev/null || true; fi; }
trap stop_proxy_on_exit EXIT

# proxy_start: a fresh counting proxy in front of the registry; sets PROXY
# (127.0.0.1:PORT). proxy_stop: stops it and sets STATS to its counts (JSON);
# not in a $(...) subshell, which could not wait for the proxy to write them.
proxy_start() {
    rm -f "$W/proxy.port" "$W/proxy.json"
    python3 "$HERE/countproxy.py" --target "$REG" --port-file "$W/proxy.port" \
        --stats "$W/proxy.json" --requests "$W/proxy.requests" &
    PROXY_PID=$!
    # wait until it listens (it writes the port file after bind+listen)
    while [[ ! -s $W/proxy.port ]]; do
        kill -0 "$PROXY_PID" 2>/dev/null || die "the counting proxy exited before listening"
        sleep 0.05
    done
    PROXY=127.0.0.1:$(cat "$W/proxy.port")
}
proxy_stop() {
    kill -TERM "$PROXY_PID"
    wait "$PROXY_PID" || true
    PROXY_PID=""
    [[ -s $W/proxy.json ]] || die "the counting proxy wrote no counts"
    STATS=$(cat "$W/proxy.json")
}

# config_digest REF: the config digest in the manifest REF names (direct, no proxy)
config_digest() {
    skopeo_fresh inspect --tls-verify=false --raw "docker://$1" \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["config"]["digest"])'
}

# image_bytes REF: config + layer blob sizes in REF's manifest (what a pull of
# it into an empty place downloads, manifest aside)
image_bytes() {
    skopeo_fresh inspect --tls-verify=false --raw "docker://$1" \
        | python3 -c 'import json,sys; m=json.load(sys.stdin); print(m["config"]["size"]+sum(l["size"] for l in m["layers"]))'
}

# record PAIR TOOL REP "SECS KB" OK EXTRA STATS_JSON
record() {
    local pair=$1 tool=$2 rep=$3 t=$4 ok=$5 extra=$6 stats=$7
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$pair" "$tool" "$rep" "${t% *}" "${t#* }" \
        "$ok" "$extra" "$(date -u '+%Y-%m-%d %H:%M')" "$stats" >>"$ROWS"
    mkdir -p "$W/requests"
    cp "$W/proxy.requests" "$W/requests/$pair-$tool-$rep.txt" 2>/dev/null || true
    log "$pair $tool #$rep: ${t% *} s, ${t#* } KB, verified=$ok $extra $stats"
}

want_id() { awk -v s="$2" '$1==s{print $2}' "$CORPUS/$1/ids.txt"; }

# seed PAIR: bench/PAIR:old and :new in the registry, from the corpus images
seed() {
    local pair=$1 side want got
    for side in old new; do
        want=$(want_id "$pair" "$side")
        got=$(config_digest "$REG/bench/$pair:$side" 2>/dev/null || true)
        if [[ $got == "$want" ]]; then
            log "$pair: bench/$pair:$side is there"
            continue
        fi
        log "$pair: skopeo copy $side-image.tar -> docker://$REG/bench/$pair:$side"
        skopeo_fresh copy -q --dest-tls-verify=false \
            "docker-archive:$CORPUS/$pair/$side-image.tar" "docker://$REG/bench/$pair:$side"
        got=$(config_digest "$REG/bench/$pair:$side")
        [[ $got == "$want" ]] || die "bench/$pair:$side has config $got, not the corpus image $want"
    done
}

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
