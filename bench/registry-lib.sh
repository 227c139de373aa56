# Shared by bench/registry.sh and bench/fleet.sh (sourced, not run): checks the
# tools, finds the registry, the binary and the corpus pairs, and defines the
# helpers both measure with: timed, skopeo_fresh, the counting proxy
# (proxy_start/proxy_stop), config_digest, image_bytes, record, want_id, seed.
# Expects HERE ROOT CACHE CORPUS STORE W BIN REPEAT KNOWN_PAIRS BLOB_CACHE, log
# and die from the script that sources it.
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

