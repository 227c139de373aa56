#!/usr/bin/env bash
# Benchmark docker-delta against plain xdelta3 / zstd / gzip on real image pairs.
#
# Run by hand (not by CI), as root on Debian bookworm:
#     bash bench/run.sh                 # all pairs, writes docs/BENCHMARKS.md
#     BENCH_PAIRS=debian bash bench/run.sh
#
# Needs: apt-get/dpkg-deb, pip (PyPI), python3, xdelta3, zstd, gzip, GNU tar,
# /usr/bin/time (package `time`) and a cargo toolchain.
# Downloads (~40 MB of .debs, ~60 MB of wheels) and work files (~1 GB) live in
# bench/.cache/ (gitignored). Images are docker-archive tars written by
# bench/mkimage.py; no Docker daemon is used.
#
# Env:
#   BENCH_PAIRS   pairs to run (default: "debian wheels")
#   BENCH_NO_DOCS 1 = print the tables, do not touch docs/BENCHMARKS.md
#   BENCH_NO_BUILD 1 = do not run cargo build --release
#
# Only the part of docs/BENCHMARKS.md between the GENERATED markers is
# rewritten; the Observations there are hand-written: update them after a rerun.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
CACHE=$HERE/.cache
BIN=$ROOT/target/release/docker-delta
PAIRS=${BENCH_PAIRS:-debian wheels}
RESULTS=$CACHE/results.tsv
CORPUS=$CACHE/corpus.tsv

# --- pair a: Debian packages. For each package the two newest versions apt
# knows (bookworm point release and bookworm-security); old = the older one.
DEB_PKGS=(libc6 libssl3 openssl libpython3.11-minimal python3.11-minimal
          libpython3.11-stdlib git curl libcurl4 perl-base)
# --- pair b: Python wheels for CPython 3.11 / manylinux x86_64, old -> new.
WHEELS_OLD=(numpy==1.26.3 pandas==2.2.2 requests==2.31.0 urllib3==2.2.1
            certifi==2024.2.2 idna==3.6 charset-normalizer==3.3.1)
WHEELS_NEW=(numpy==1.26.4 pandas==2.2.3 requests==2.32.3 urllib3==2.2.2
            certifi==2024.7.4 idna==3.7 charset-normalizer==3.3.2)

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

for t in apt-get apt-cache dpkg-deb python3 xdelta3 zstd gzip tar cmp sha256sum; do
    command -v "$t" >/dev/null || die "missing tool: $t"
done
if [[ ! -x /usr/bin/time ]]; then
    log "installing the time package"
    apt-get install -y -q time >/dev/null
fi

mkdir -p "$CACHE"

# ---------------------------------------------------------------- helpers

# mktar DIR OUT: a reproducible layer tar. GNU tar's pax format would add
# atime and ctime records to every member's header (times of the extraction,
# so different in every run and between old and new): drop them, as
# Docker-built layers have none.
mktar() {
    tar --sort=name --format=pax --owner=0 --group=0 --numeric-owner --mtime=@0 \
        --pax-option=delete=atime,delete=ctime -C "$1" -cf "$2" .
}

# timed OUTVAR CMD...: runs CMD under /usr/bin/time; OUTVAR gets "secs rss_kb".
timed() {
    local __var=$1; shift
    local tf
    tf=$(mktemp)
    if ! /usr/bin/time -f '%e %M' -o "$tf" "$@"; then
        cat "$tf" >&2; rm -f "$tf"
        die "command failed: $*"
    fi
    printf -v "$__var" '%s' "$(tail -n1 "$tf")"
    rm -f "$tf"
}

fsize() { stat -c %s "$1"; }

# result PAIR TOOL SIZE "ENC_S ENC_KB" "DEC_S DEC_KB" VERIFIED NOTE
result() {
    local pair=$1 tool=$2 size=$3 enc=$4 dec=$5 ok=$6 note=${7:-}
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$pair" "$tool" "$size" \
        ${enc% *} ${enc#* } ${dec% *} ${dec#* } "$ok" "$note" >>"$RESULTS"
    log "$pair $tool: $size bytes, create ${enc% *}s ${enc#* }KB, apply ${dec% *}s ${dec#* }KB, verified=$ok $note"
}

base_rootfs() { # DIR: a small static base layer shared by old and new
    local d=$1
    rm -rf "$d"; mkdir -p "$d/etc" "$d/usr/share" "$d/tmp" "$d/root" "$d/var/lib"
    printf 'PRETTY_NAME="bench base"\nID=bench\n' >"$d/etc/os-release"
    printf 'root:x:0:0:root:/root:/bin/sh\n' >"$d/etc/passwd"
    cp -a /usr/share/zoneinfo /usr/share/common-licenses "$d/usr/share/"
}

# ---------------------------------------------------------------- pair a
prepare_debian() {
    local w=$1
    local debs=$CACHE/debs
    mkdir -p "$debs" "$w"
    : >"$w/versions.tsv"
    local p vers old new
    for p in "${DEB_PKGS[@]}"; do
        mapfile -t vers < <(apt-cache madison "$p" | awk -F'|' '{gsub(/ /,"",$2); split($3,a," "); sub(/\/.*/,"",a[2]); print $2"\t"a[2]}' | awk '!seen[$1]++' | head -n2)
        if (( ${#vers[@]} < 2 )); then
            log "skip $p: only one version known to apt"; continue
        fi
        new=${vers[0]}; old=${vers[1]}   # madison lists newest first
        printf '%s\t%s\t%s\n' "$p" "$old" "$new" >>"$w/versions.tsv"
        local side v
        for side in old new; do
            if [[ $side == old ]]; then v=${old%%$'\t'*}; else v=${new%%$'\t'*}; fi
            local stamp="$debs/.$p=$v"
            if [[ ! -e $stamp ]]; then
                log "apt-get download $p=$v"
                (cd "$debs" && apt-get download -q "$p=$v" >/dev/null 2>&1) \
                    || { log "download of $p=$v failed"; return 1; }
                ls -t "$debs"/"${p}"_*.deb | head -n1 >"$stamp"
            fi
            mkdir -p "$w/rootfs-$side"
            dpkg-deb -x "$(cat "$stamp")" "$w/rootfs-$side"
        done
    done
}

# ---------------------------------------------------------------- pair b
prepare_wheels() {
    local w=$1 side specs
    mkdir -p "$w"
    for side in old new; do
        if [[ $side == old ]]; then specs=("${WHEELS_OLD[@]}"); else specs=("${WHEELS_NEW[@]}"); fi
        local dl=$CACHE/wheels/$side
        mkdir -p "$dl"
        if [[ ! -e $dl/.done ]] || [[ "$(cat "$dl/.done")" != "${specs[*]}" ]]; then
            log "pip download ($side): ${specs[*]}"
            rm -f "$dl"/*.whl
            python3 -m pip download -q --disable-pip-version-check --no-deps \
                --only-binary=:all: --python-version 3.11 --implementation cp \
                --abi cp311 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
                -d "$dl" "${specs[@]}" || { log "pip download failed"; return 1; }
            echo "${specs[*]}" >"$dl/.done"
        fi
        local sp=$w/rootfs-$side/usr/local/lib/python3.11/site-packages
        mkdir -p "$sp"
        local whl
        for whl in "$dl"/*.whl; do
            python3 -m zipfile -e "$whl" "$sp"
        done
    done
    printf '%s\n' "${WHEELS_OLD[@]}" | paste - <(printf '%s\n' "${WHEELS_NEW[@]}") >"$w/versions.tsv"
}

# ---------------------------------------------------------------- measure
run_pair() {
    local pair=$1
    local w=$CACHE/work/$pair
    rm -rf "$w"; mkdir -p "$w"
    log "== $pair: preparing rootfs"
    if ! "prepare_$pair" "$w"; then
        log "dropping pair $pair (download failed)"
        printf '%s\tDROPPED\n' "$pair" >>"$CORPUS"
        return 0
    fi
    base_rootfs "$w/rootfs-base"
    mktar "$w/rootfs-base" "$w/base.tar"
    mktar "$w/rootfs-old" "$w/old-layer.tar"
    mktar "$w/rootfs-new" "$w/new-layer.tar"
    rm -rf "$w/rootfs-base" "$w/rootfs-old" "$w/rootfs-new"
    local old_id new_id
    old_id=$(python3 "$HERE/mkimage.py" "$w/old.tar" "bench/$pair:1" "$w/base.tar" "$w/old-layer.tar")
    new_id=$(python3 "$HERE/mkimage.py" "$w/new.tar" "bench/$pair:2" "$w/base.tar" "$w/new-layer.tar")
    gzip -6 -c "$w/new-layer.tar" >"$w/new-layer.tar.gz"
    gzip -6 -c "$w/base.tar" >"$w/base.tar.gz"
    python3 "$HERE/report.py" corpus "$pair" "$w/old-layer.tar" "$w/new-layer.tar" \
        "$w/base.tar" "$w/new-layer.tar.gz" "$w/base.tar.gz" "$w/versions.tsv" >>"$CORPUS"
    rm -f "$w/base.tar.gz"

    local old=$w/old-layer.tar new=$w/new-layer.tar enc dec ok
    local srcsz; srcsz=$(fsize "$old")

    # ours
    local m
    for m in auto xdelta3 zstd; do
        log "$pair: docker-delta create --method $m"
        timed enc "$BIN" -q create "docker-archive:$w/old.tar" "docker-archive:$w/new.tar" \
            -o "$w/pkg-$m.ddelta" --method "$m" --force --json >"$w/create-$m.json"
        "$BIN" -q list "$w/pkg-$m.ddelta" --json >"$w/pkg-$m.list.json"
        local chosen
        chosen=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); L=d["layers"] if isinstance(d,dict) else d; print("+".join(sorted({l["method"] for l in L if l["method"]!="reference"})))' "$w/pkg-$m.list.json" 2>/dev/null || echo "?")
        log "$pair: docker-delta apply ($m)"
        timed dec "$BIN" -q apply "$w/pkg-$m.ddelta" --base "docker-archive:$w/old.tar" \
            -o "$w/out-$m.tar" --force
        local got
        got=$("$BIN" -q inspect "docker-archive:$w/out-$m.tar" --json \
            | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["image_id"] if d.get("verified") else "unverified")')
        if [[ $got == "$new_id" ]]; then ok=yes; else ok="NO ($got)"; fi
        result "$pair" "docker-delta --method $m" "$(fsize "$w/pkg-$m.ddelta")" "$enc" "$dec" "$ok" "layer encoded as: $chosen"
        rm -f "$w/out-$m.tar"
    done

    # gzip -6 of the changed layer: what a registry pull transfers
    log "$pair: gzip -6"
    timed enc gzip -6 -k -f -c "$new" >/dev/null
    timed dec sh -c 'gzip -d -c "$1" >"$2"' _ "$w/new-layer.tar.gz" "$w/rt.tar"
    if cmp -s "$w/rt.tar" "$new"; then ok=yes; else ok=NO; fi
    result "$pair" "gzip -6 (whole new layer)" "$(fsize "$w/new-layer.tar.gz")" "$enc" "$dec" "$ok"

    # xdelta3 -9
    log "$pair: xdelta3 -9"
    timed enc xdelta3 -9 -B "$srcsz" -e -f -s "$old" "$new" "$w/x.vcdiff"
    timed dec xdelta3 -B "$srcsz" -d -f -s "$old" "$w/x.vcdiff" "$w/rt.tar"
    if cmp -s "$w/rt.tar" "$new"; then ok=yes; else ok=NO; fi
    result "$pair" "xdelta3 -9 -B <old size>" "$(fsize "$w/x.vcdiff")" "$enc" "$dec" "$ok"

    # zstd -19 --long=31 --patch-from
    log "$pair: zstd -19 --patch-from"
    timed enc zstd -q -19 --long=31 -f --patch-from="$old" "$new" -o "$w/z.zst"
    timed dec zstd -q -d --long=31 -f --patch-from="$old" "$w/z.zst" -o "$w/rt.tar"
    if cmp -s "$w/rt.tar" "$new"; then ok=yes; else ok=NO; fi
    result "$pair" "zstd -19 --long=31 --patch-from" "$(fsize "$w/z.zst")" "$enc" "$dec" "$ok"

    # the same with --single-thread: the zstd CLI itself suggests it (on stderr)
    # for smaller patches
    log "$pair: zstd -19 --single-thread --patch-from"
    timed enc zstd -q -19 --long=31 --single-thread -f --patch-from="$old" "$new" -o "$w/z1.zst"
    timed dec zstd -q -d --long=31 -f --patch-from="$old" "$w/z1.zst" -o "$w/rt.tar"
    if cmp -s "$w/rt.tar" "$new"; then ok=yes; else ok=NO; fi
    result "$pair" "zstd -19 --long=31 --single-thread --patch-from" "$(fsize "$w/z1.zst")" "$enc" "$dec" "$ok"
    rm -f "$w/rt.tar"
}

# ---------------------------------------------------------------- main
if [[ ${BENCH_NO_BUILD:-0} != 1 ]]; then
    log "cargo build --release"
    (cd "$ROOT" && cargo build --release -q)
fi
[[ -x $BIN ]] || die "no binary at $BIN"

: >"$RESULTS"; : >"$CORPUS"
start=$(date +%s)
for p in $PAIRS; do
    declare -F "prepare_$p" >/dev/null || die "unknown pair: $p"
    run_pair "$p"
done
log "all pairs done in $(( $(date +%s) - start )) s"

args=(--results "$RESULTS" --corpus "$CORPUS" --elapsed "$(( $(date +%s) - start ))")
if [[ ${BENCH_NO_DOCS:-0} != 1 ]]; then
    args+=(--docs "$ROOT/docs/BENCHMARKS.md")
fi
python3 "$HERE/report.py" tables "${args[@]}"
