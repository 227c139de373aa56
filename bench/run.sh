#!/usr/bin/env bash
# Benchmark docker-delta against gzip, xdelta3, zstd, HDiffPatch and tar-diff
# on the corpus of bench/corpus.sh (issues 6, 24), side by side, and write
# docs/BENCHMARKS.md.
#
# Run by hand (not by CI), as root on Debian bookworm:
#     bash bench/run.sh                              # everything (~2.5 h on 2 cores the first time)
#     BENCH_PAIRS="debian wheels" bash bench/run.sh
#     BENCH_TOOLS=docker-delta bash bench/run.sh     # rerun only ours; baselines from the cache
#
# Needs: apt-get/dpkg-deb, pip (PyPI), python3, xdelta3, zstd, gzip, GNU tar,
# /usr/bin/time (package `time`), and a built target/release/docker-delta
# (this script does not build it unless BENCH_BUILD=1). The HDiffPatch and
# tar-diff baselines need their CLIs built from fetched sources outside the
# repo (docs/BENCHMARKS.md, 'Baselines'); without them those two are skipped.
# Downloads (~1 GB), the corpus (~7.5 GB) and work files (~3 GB) live in
# bench/.cache/ (gitignored). No Docker daemon is used.
#
# Env:
#   BENCH_PAIRS       pairs (default: all ten of bench/corpus.sh: "debian kernel tools
#                     wheels multilayer go jvm node ml arm64"); each pair's rows are
#                     cached, so a long run can be split over several, pair by pair (the
#                     tables always hold every pair whose corpus is built)
#   BENCH_TOOLS       tools to run (default: all): docker-delta gzip xdelta3
#                     zstd zstd-st hdiffpatch tar-diff, or none (only write the tables
#                     again from the rows kept). Rows of tools not run now are taken from
#                     the results kept in bench/results/PAIR/TOOL.tsv (committed, so that
#                     a new machine resumes where the last one stopped) when the corpus
#                     pair is unchanged (same image IDs).
#   BENCH_FORCE       1 = rerun the baselines even if cached (docker-delta is
#                     always rerun when selected: the binary changes)
#   BENCH_DD_METHODS  extra `create --method` values to run as extra rows,
#                     e.g. "xdelta3 zstd" (default: only the tool's default)
#   BENCH_RESULTS     where rows are kept (default: bench/results)
#   BENCH_BIN         binary (default: target/release/docker-delta)
#   BENCH_BUILD       1 = cargo build --release first
#   BENCH_NO_DOCS     1 = print the tables, do not touch docs/
#   BENCH_HDIFFZ, BENCH_HPATCHZ, BENCH_TAR_DIFF, BENCH_TAR_PATCH
#                     the baselines' binaries (default: /work/ext/bin/NAME if
#                     executable, else NAME on PATH)
#
# Only the part of docs/BENCHMARKS.md between the GENERATED markers (and
# docs/benchmarks.svg) is rewritten; the rest is hand-written.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
CACHE=$HERE/.cache
CORPUS=$CACHE/corpus
STORE=${BENCH_RESULTS:-$HERE/results}
BIN=${BENCH_BIN:-$ROOT/target/release/docker-delta}
ALL_PAIRS="debian kernel tools wheels multilayer go jvm node ml arm64"
PAIRS=${BENCH_PAIRS:-$ALL_PAIRS}
ALL_TOOLS="docker-delta gzip xdelta3 zstd zstd-st hdiffpatch tar-diff"
BASELINES="gzip xdelta3 zstd zstd-st hdiffpatch tar-diff"
TOOLS=${BENCH_TOOLS:-$ALL_TOOLS}
[[ $TOOLS == none ]] && TOOLS=""

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

for t in python3 xdelta3 zstd gzip tar cmp sha256sum; do
    command -v "$t" >/dev/null || die "missing tool: $t"
done
for t in $TOOLS; do
    [[ " $ALL_TOOLS " == *" $t "* ]] || die "unknown tool in BENCH_TOOLS: $t (known: $ALL_TOOLS)"
done
if [[ ! -x /usr/bin/time ]]; then
    log "installing the time package"
    apt-get install -y -q time >/dev/null
fi

# ---------------------------------------------------------------- helpers

# timed OUTVAR CMD...: runs CMD under /usr/bin/time; OUTVAR gets "secs rss_kb".
# Returns CMD's status (the caller records a failure row).
# The wall time is bash's clock around the command (microseconds): GNU time's %e
# counts in 10 ms steps, 5 % of a 0.2 s apply. The peak RSS is GNU time's %M.
timed() {
    local __var=$1; shift
    local tf rc=0 t0 t1
    tf=$(mktemp)
    t0=${EPOCHREALTIME/,/.}
    /usr/bin/time -f '%M' -o "$tf" "$@" || rc=$?
    t1=${EPOCHREALTIME/,/.}
    if (( rc != 0 )); then
        log "command failed ($rc): $*"; sed 's/^/    /' "$tf" >&2
    fi
    printf -v "$__var" '%s %s' "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')" \
        "$(tail -n1 "$tf")"
    rm -f "$tf"
    return $rc
}

fsize() { stat -c %s "$1"; }

# pair_key PAIR: identifies the pair's content (the image IDs hash every
# layer digest), so cached rows are reused only for the same corpus.
pair_key() { sha256sum <"$CORPUS/$1/ids.txt" | cut -c1-16; }

# result PAIR TOOLID LABEL SIZE "ENC_S ENC_KB" "DEC_S DEC_KB" VERIFIED NOTE
# writes the row to the store (one file per pair and tool)
result() {
    local pair=$1 id=$2 label=$3 size=$4 enc=$5 dec=$6 ok=$7 note=${8:-}
    mkdir -p "$STORE/$pair"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$pair" "$label" "$size" \
        "${enc% *}" "${enc#* }" "${dec% *}" "${dec#* }" "$ok" "$note" \
        "$(date -u '+%Y-%m-%d %H:%M')" "$(pair_key "$pair")" >"$STORE/$pair/$id.tsv"
    log "$pair $label: $size bytes, create ${enc% *}s ${enc#* }KB, apply ${dec% *}s ${dec#* }KB, verified=$ok $note"
}

failed() { # PAIR TOOLID LABEL WHAT
    result "$1" "$2" "$3" 0 "0 0" "0 0" "FAILED" "$4 failed"
}

# cached PAIR TOOLID: true if a row for the current corpus is in the store
cached() {
    local f=$STORE/$1/$2.tsv
    [[ -s $f ]] && [[ "$(cut -f11 "$f")" == "$(pair_key "$1")" ]] \
        && [[ "$(cut -f8 "$f")" == yes ]]
}

selected() { [[ " $TOOLS " == *" $1 "* ]]; }

# find_tool VAR NAME: VAR gets the path of NAME: $BENCH_<VAR> if set, else
# /work/ext/bin/NAME (where docs/BENCHMARKS.md 'Baselines' builds it), else
# NAME on PATH; empty if none is executable.
find_tool() {
    local __var=$1 name=$2 env="BENCH_$1" p=""
    if [[ -n ${!env:-} ]]; then
        [[ -x ${!env} ]] && p=${!env}
    elif [[ -x /work/ext/bin/$name ]]; then
        p=/work/ext/bin/$name
    else
        p=$(command -v "$name" || true)
    fi
    printf -v "$__var" '%s' "$p"
}
find_tool HDIFFZ hdiffz; find_tool HPATCHZ hpatchz
find_tool TAR_DIFF tar-diff; find_tool TAR_PATCH tar-patch

# available TOOL: false (and says why) if a baseline's binaries are missing
available() {
    local miss=""
    case $1 in
        hdiffpatch) [[ -n $HDIFFZ ]] || miss=hdiffz; [[ -n $HPATCHZ ]] || miss="${miss:+$miss and }hpatchz" ;;
        tar-diff) [[ -n $TAR_DIFF ]] || miss=tar-diff; [[ -n $TAR_PATCH ]] || miss="${miss:+$miss and }tar-patch" ;;
    esac
    if [[ -n $miss ]]; then
        log "$1: skipped, $miss not found (see docs/BENCHMARKS.md 'Baselines' for how to build it)"
        return 1
    fi
}

# ---------------------------------------------------------------- inputs
# The CLIs diff whole layer tars. For single-layer pairs that is old.tar vs
# new.tar; for multilayer, the concatenation of the old image's non-base
# layers vs the new image's (layers.txt, in image order).
prepare_inputs() { # PAIR W -> sets OLD NEW, OLDS NEWS (the layer paths)
    local pair=$1 w=$2 side path
    local olds=() news=()
    while IFS=$'\t' read -r side path; do
        if [[ $side == old ]]; then olds+=("$CORPUS/$path"); else news+=("$CORPUS/$path"); fi
    done <"$CORPUS/$pair/layers.txt"
    OLDS=("${olds[@]}") NEWS=("${news[@]}")
    if (( ${#olds[@]} == 1 )); then OLD=${olds[0]}; else
        OLD=$w/old-layers.cat; cat "${olds[@]}" >"$OLD"; fi
    if (( ${#news[@]} == 1 )); then NEW=${news[0]}; else
        NEW=$w/new-layers.cat; cat "${news[@]}" >"$NEW"; fi
}

corpus_row() { # PAIR: one TSV line describing the pair, cached by pair_key
    local pair=$1 f=$STORE/$1/corpus.tsv key
    key=$(pair_key "$pair")
    if [[ -s $f ]] && [[ "$(head -c 16 "$f.key" 2>/dev/null)" == "$key" ]]; then
        cat "$f"; return
    fi
    mkdir -p "$STORE/$pair"
    local olds=() news=() side path
    while IFS=$'\t' read -r side path; do
        if [[ $side == old ]]; then olds+=("$CORPUS/$path"); else news+=("$CORPUS/$path"); fi
    done <"$CORPUS/$pair/layers.txt"
    python3 "$HERE/report.py" corpus "$pair" --old "${olds[@]}" --new "${news[@]}" \
        --versions "$CORPUS/$pair/versions.tsv" >"$f"
    printf '%s\n' "$key" >"$f.key"
    cat "$f"
}

# ---------------------------------------------------------------- measure
run_docker_delta() { # PAIR W [METHOD]
    local pair=$1 w=$2 m=${3:-}
    local id=docker-delta label=docker-delta margs=()
    if [[ -n $m ]]; then id=docker-delta-$m; label="docker-delta --method $m"; margs=(--method "$m"); fi
    local c=$CORPUS/$pair enc dec ok pkg=$w/$id.ddelta
    log "$pair: $label create"
    if ! timed enc "$BIN" -q create "docker-archive:$c/old-image.tar" \
            "docker-archive:$c/new-image.tar" -o "$pkg" --force "${margs[@]}"; then
        failed "$pair" "$id" "$label" create; return 0
    fi
    local chosen
    chosen=$("$BIN" -q list "$pkg" --json 2>/dev/null | python3 -c '
import json, sys
d = json.load(sys.stdin)
L = d["layers"] if isinstance(d, dict) else d
print("+".join(sorted({str(l.get("method")) for l in L if l.get("method") != "reference"})))' 2>/dev/null || echo "?")
    log "$pair: $label apply"
    if ! timed dec "$BIN" -q apply "$pkg" --base "docker-archive:$c/old-image.tar" \
            -o "$w/out.tar" --force; then
        failed "$pair" "$id" "$label" apply; return 0
    fi
    local got want
    want=$(awk '$1=="new"{print $2}' "$c/ids.txt")
    got=$("$BIN" -q inspect --verify "docker-archive:$w/out.tar" --json \
        | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["image_id"] if d.get("layers_verified", d.get("verified")) else "unverified")' \
        || echo "inspect failed")
    if [[ $got == "$want" ]]; then ok=yes; else ok="NO ($got)"; fi
    rm -f "$w/out.tar"
    # Apply twice more, each into a fresh file: its row gets the median wall time and the
    # highest peak RSS of the three (one run of a 0.2-1 s apply on a shared 2-core machine
    # is off by 10-20 % now and then; the rate target is absolute).
    local runs=("$dec") again
    for _ in 1 2; do
        if ! timed again "$BIN" -q apply "$pkg" --base "docker-archive:$c/old-image.tar" \
                -o "$w/out.tar" --force; then
            failed "$pair" "$id" "$label" apply; return 0
        fi
        rm -f "$w/out.tar"
        runs+=("$again")
    done
    dec=$(printf '%s\n' "${runs[@]}" | sort -n | sed -n 2p | cut -d' ' -f1)
    dec="$dec $(printf '%s\n' "${runs[@]}" | cut -d' ' -f2 | sort -n | tail -n1)"
    result "$pair" "$id" "$label" "$(fsize "$pkg")" "$enc" "$dec" "$ok" \
        "layers: $chosen; $("$BIN" --version 2>/dev/null | tail -n1), binary of $(date -u -r "$BIN" '+%m-%d %H:%M')"
}

check_rt() { if cmp -s "$1" "$2"; then echo yes; else echo NO; fi; }

run_gzip() { # what a registry pull transfers: each new layer gzip'd
    local pair=$1 w=$2 enc dec label="gzip -6 (new layers whole)"
    log "$pair: gzip -6"
    timed enc sh -c 'out=$1; shift; for f; do gzip -6 -c "$f"; done >"$out"' _ "$w/new.gz" "${NEWS[@]}" \
        || { failed "$pair" gzip "$label" encode; return 0; }
    timed dec sh -c 'gzip -d -c "$1" >"$2"' _ "$w/new.gz" "$w/rt.tar" \
        || { failed "$pair" gzip "$label" decode; return 0; }
    result "$pair" gzip "$label" "$(fsize "$w/new.gz")" "$enc" "$dec" "$(check_rt "$w/rt.tar" "$NEW")"
    rm -f "$w/rt.tar" "$w/new.gz"
}

run_xdelta3() {
    local pair=$1 w=$2 enc dec label="xdelta3 -9 -B <old size>" srcsz
    srcsz=$(fsize "$OLD")
    log "$pair: xdelta3 -9 -B $srcsz"
    timed enc xdelta3 -9 -B "$srcsz" -e -f -s "$OLD" "$NEW" "$w/x.vcdiff" \
        || { failed "$pair" xdelta3 "$label" encode; return 0; }
    timed dec xdelta3 -B "$srcsz" -d -f -s "$OLD" "$w/x.vcdiff" "$w/rt.tar" \
        || { failed "$pair" xdelta3 "$label" decode; return 0; }
    result "$pair" xdelta3 "$label" "$(fsize "$w/x.vcdiff")" "$enc" "$dec" "$(check_rt "$w/rt.tar" "$NEW")"
    rm -f "$w/rt.tar"
}

run_zstd() { # PAIR W [--single-thread]
    local pair=$1 w=$2 st=${3:-} enc dec id=zstd label="zstd -19 --long=31 --patch-from"
    local extra=()
    if [[ -n $st ]]; then id=zstd-st; label="zstd -19 --long=31 --single-thread --patch-from"; extra=(--single-thread); fi
    log "$pair: $label"
    timed enc zstd -q -19 --long=31 "${extra[@]}" -f --patch-from="$OLD" "$NEW" -o "$w/$id.zst" \
        || { failed "$pair" "$id" "$label" encode; return 0; }
    timed dec zstd -q -d --long=31 -f --patch-from="$OLD" "$w/$id.zst" -o "$w/rt.tar" \
        || { failed "$pair" "$id" "$label" decode; return 0; }
    result "$pair" "$id" "$label" "$(fsize "$w/$id.zst")" "$enc" "$dec" "$(check_rt "$w/rt.tar" "$NEW")"
    rm -f "$w/rt.tar"
}

run_hdiffpatch() { # HDiffPatch in memory mode, one lzma2 stream (issue 24's command)
    local pair=$1 w=$2 enc dec label="hdiffz -m-6 -SD -c-lzma2-9-16m -p-2"
    log "$pair: $label"
    # hdiffz also checks its patch before exiting (no -d), as issue 24 measured it
    timed enc "$HDIFFZ" -m-6 -SD -c-lzma2-9-16m -p-2 -f "$OLD" "$NEW" "$w/h.hdiff" >/dev/null \
        || { failed "$pair" hdiffpatch "$label" encode; return 0; }
    timed dec "$HPATCHZ" -f "$OLD" "$w/h.hdiff" "$w/rt.tar" >/dev/null \
        || { failed "$pair" hdiffpatch "$label" decode; return 0; }
    result "$pair" hdiffpatch "$label" "$(fsize "$w/h.hdiff")" "$enc" "$dec" \
        "$(check_rt "$w/rt.tar" "$NEW")" "$("$HDIFFZ" -v 2>&1 | head -n1 | sed 's/.*:://')"
    rm -f "$w/rt.tar" "$w/h.hdiff"
}

# tar-diff v0.1.2 takes one old tar (not a list), and tar-patch reads the old
# files from a directory. So: the old layers merged into one tar with GNU tar
# -A (later members win, as in tar-diff's analysis and in extraction), each
# new layer diffed against it, the old layers extracted in order into one
# directory for tar-patch. Merging and extracting are not timed (an installed
# image is already extracted); sizes and times are summed over the new
# layers, peak RSS is the largest of them.
run_tar_diff() {
    local pair=$1 w=$2 enc dec label="tar-diff (v0.1.2 defaults)" old=$OLD l ok=yes i
    local td=$w/tar-diff
    rm -rf "$td"; mkdir -p "$td/old" "$td/tmp"
    if (( ${#OLDS[@]} > 1 )); then
        old=$td/old-merged.tar
        cp "${OLDS[0]}" "$old"
        # one -A per archive: with several at once, GNU tar 1.34 leaves the
        # second one's end-of-archive blocks in and the third is unreadable
        for l in "${OLDS[@]:1}"; do tar -A -f "$old" "$l"; done
    else
        old=${OLDS[0]}
    fi
    for l in "${OLDS[@]}"; do tar -x -f "$l" -C "$td/old"; done
    log "$pair: tar-diff, ${#NEWS[@]} new layer(s) against ${#OLDS[@]} old"
    timed enc env TMPDIR="$td/tmp" sh -c 'td=$1 old=$2 out=$3; shift 3; i=0
        for f; do "$td" "$old" "$f" "$out.$i" || exit 1; i=$((i+1)); done' \
        _ "$TAR_DIFF" "$old" "$td/delta" "${NEWS[@]}" \
        || { failed "$pair" tar-diff "$label" encode; rm -rf "$td"; return 0; }
    timed dec sh -c 'tp=$1 dir=$2 d=$3; shift 3; i=0
        for f; do "$tp" "$d.$i" "$dir" "$d.$i.tar" || exit 1; i=$((i+1)); done' \
        _ "$TAR_PATCH" "$td/old" "$td/delta" "${NEWS[@]}" \
        || { failed "$pair" tar-diff "$label" decode; rm -rf "$td"; return 0; }
    local size=0
    for i in "${!NEWS[@]}"; do
        size=$(( size + $(fsize "$td/delta.$i") ))
        [[ $(check_rt "$td/delta.$i.tar" "${NEWS[$i]}") == yes ]] || ok=NO
    done
    result "$pair" tar-diff "$label" "$size" "$enc" "$dec" "$ok" \
        "$("$TAR_DIFF" -version 2>&1 | head -n1); ${#NEWS[@]} new layer(s) vs ${#OLDS[@]} old merged"
    rm -rf "$td"
}

run_pair() {
    local pair=$1; local w=$CACHE/work/$pair
    mkdir -p "$w"
    local need=() t
    for t in $BASELINES; do
        selected "$t" || continue
        if [[ ${BENCH_FORCE:-0} != 1 ]] && cached "$pair" "$t"; then
            log "$pair: $t cached ($(cut -f10 "$STORE/$pair/$t.tsv") UTC)"
        elif available "$t"; then
            need+=("$t")
        fi
    done
    if selected docker-delta; then
        [[ -x $BIN ]] || die "no binary at $BIN"
        run_docker_delta "$pair" "$w"
        local m
        for m in ${BENCH_DD_METHODS:-}; do run_docker_delta "$pair" "$w" "$m"; done
    fi
    if (( ${#need[@]} > 0 )); then
        prepare_inputs "$pair" "$w"
        for t in "${need[@]}"; do
            case $t in
                gzip) run_gzip "$pair" "$w" ;;
                xdelta3) run_xdelta3 "$pair" "$w" ;;
                zstd) run_zstd "$pair" "$w" ;;
                zstd-st) run_zstd "$pair" "$w" --single-thread ;;
                hdiffpatch) run_hdiffpatch "$pair" "$w" ;;
                tar-diff) run_tar_diff "$pair" "$w" ;;
            esac
        done
        rm -f "$w/old-layers.cat" "$w/new-layers.cat"
    fi
}

# ---------------------------------------------------------------- main
if [[ ${BENCH_BUILD:-0} == 1 ]]; then
    log "cargo build --release"
    (cd "$ROOT" && cargo build --release -q)
fi

# Rows kept by earlier versions of this script, under .cache/, move to the store.
if [[ -d $CACHE/results && ! -d $STORE ]]; then
    log "moving $CACHE/results to $STORE"
    mv "$CACHE/results" "$STORE"
fi

start=$(date +%s)
CORPUS_PAIRS=$PAIRS bash "$HERE/corpus.sh"
for p in $PAIRS; do
    log "== $p"
    run_pair "$p"
done
log "pairs done in $(( $(date +%s) - start )) s"

# Gather the rows of every pair whose corpus is here, run now or not (fresh or
# cached for the same corpus; a docker-delta row from an older binary is kept,
# with its date): a run of some pairs leaves the others' rows in the tables.
rows=$CACHE/results.tsv corp=$CACHE/corpus.tsv
: >"$rows"; : >"$corp"
for p in $ALL_PAIRS; do
    if [[ ! -s $CORPUS/$p/ids.txt ]]; then
        log "$p: no corpus here, left out of the tables"; continue
    fi
    corpus_row "$p" >>"$corp"
    for f in "$STORE/$p"/docker-delta*.tsv "$STORE/$p"/{gzip,xdelta3,zstd,zstd-st,hdiffpatch,tar-diff}.tsv; do
        [[ -s $f ]] || continue
        if [[ "$(cut -f11 "$f")" != "$(pair_key "$p")" ]]; then
            log "$p: ignoring stale $(basename "$f") (corpus changed since)"; continue
        fi
        cat "$f" >>"$rows"
    done
done

args=(--results "$rows" --corpus "$corp" --base "$CORPUS/base.tar")
if [[ ${BENCH_NO_DOCS:-0} != 1 ]]; then
    args+=(--docs "$ROOT/docs/BENCHMARKS.md" --svg "$ROOT/docs/benchmarks.svg")
fi
python3 "$HERE/report.py" tables "${args[@]}"
