#!/usr/bin/env bash
# Check issue 6's memory bound (create and apply under 512 MiB peak RSS, whatever the image)
# where the bench pairs do not reach it, layers with one big changed file, and that a big
# file's content is found however far it moved.
#
# Run by hand (not by CI), after bench/corpus.sh has made the kernel pair:
#     bash bench/bigfile.sh              # the three images (~12 min on 2 cores, ~9 GB of disk)
#     BIG_CASES=combo bash bench/bigfile.sh
#
# Cases:
#   big    a 1 GiB file of random bytes, changed by three overwrites (64 KiB, 1 MiB,
#          64 KiB), a 4 KiB insert, a 1 MiB delete and 8 MiB appended
#   moved  a 512 MiB file of random bytes whose 128 MiB from 64 MiB on moved to its end,
#          with a 64 KiB overwrite (content moved much further than a diff window reaches
#          from the piece's proportional position)
#   combo  the kernel pair's layers with a 256 MiB file of random bytes added, changed by
#          a 64 KiB overwrite, a 4 KiB insert and a 1 MiB delete (the files codec's
#          searches of the big file beside the payload encoders busy with the modules)
#
# For each: create and apply with /usr/bin/time (wall seconds, peak RSS), the package size,
# and whether the applied image has the new image's ID. Work files live in
# bench/.cache/bigfile/ (gitignored); the images are made once and kept.
#
# Env:
#   BIG_CASES   cases to run (default: "big moved combo")
#   BENCH_BIN   binary (default: target/release/docker-delta)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
BIN=${BENCH_BIN:-$ROOT/target/release/docker-delta}
CORPUS=$HERE/.cache/corpus
WORK=$HERE/.cache/bigfile
CASES=${BIG_CASES:-big moved combo}
LIMIT_KB=$((512 * 1024))

log() { printf '[bigfile %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# random FILE BYTES SEED: reproducible incompressible bytes (openssl stops on the closed
# pipe: only the size counts)
random() {
    (
        set +o pipefail
        openssl enc -aes-128-ctr -pass "pass:$3" -nosalt -pbkdf2 </dev/zero 2>/dev/null |
            head -c "$2" >"$1"
    )
    [[ $(stat -c %s "$1") == "$2" ]]
}

# edit OLD NEW APPEND EDIT...: NEW is OLD with each EDIT (MiB:kind:bytes, kind over|ins|del|mv,
# in rising order; mv moves the bytes to the end) applied, then APPEND random bytes added
edit() {
    python3 - "$@" <<'EOF'
import hashlib, sys
src, dst, append, edits = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
MB = 1 << 20
def noise(n, seed):
    out, i = bytearray(), 0
    while len(out) < n:
        out += hashlib.sha256(b"%d:%d" % (seed, i)).digest()
        i += 1
    return bytes(out[:n])
with open(src, "rb") as f, open(dst, "wb") as o:
    pos, moved = 0, []
    for k, e in enumerate(edits):
        at, kind, n = e.split(":")
        at, n = int(at) * MB, int(n)
        while pos < at:
            b = f.read(min(8 * MB, at - pos))
            o.write(b)
            pos += len(b)
        if kind == "over":
            o.write(noise(n, k))
            f.seek(n, 1)
            pos += n
        elif kind == "ins":
            o.write(noise(n, k))
        elif kind == "del":
            f.seek(n, 1)
            pos += n
        elif kind == "mv":
            moved.append((f.tell(), n))
            f.seek(n, 1)
            pos += n
    while b := f.read(8 * MB):
        o.write(b)
    for at, n in moved:
        f.seek(at)
        while n:
            b = f.read(min(8 * MB, n))
            o.write(b)
            n -= len(b)
    o.write(noise(append, 99))
EOF
}

# layer DIR OUT.tar: a layer tar as the corpus makes them
layer() {
    tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 --format=pax \
        -C "$1" -cf "$2" .
}

make_big() {
    local w=$WORK/big
    [[ -s $w/new-image.tar ]] && return
    log "big: making the 1 GiB pair"
    rm -rf "$w" && mkdir -p "$w/old/data" "$w/new/data"
    random "$w/old/data/big.bin" $((1 << 30)) old
    edit "$w/old/data/big.bin" "$w/new/data/big.bin" $((8 << 20)) \
        50:over:65536 300:ins:4096 500:over:1048576 700:del:1048576 900:over:65536
    layer "$w/old" "$w/old.tar" && layer "$w/new" "$w/new.tar"
    rm -rf "$w/old" "$w/new"
    python3 "$HERE/mkimage.py" "$w/old-image.tar" bigfile/big:old "$w/old.tar" >"$w/old.id"
    python3 "$HERE/mkimage.py" "$w/new-image.tar" bigfile/big:new "$w/new.tar" >"$w/new.id"
    rm -f "$w/old.tar" "$w/new.tar"
}

make_moved() {
    local w=$WORK/moved
    [[ -s $w/new-image.tar ]] && return
    log "moved: making the 512 MiB pair"
    rm -rf "$w" && mkdir -p "$w/old/data" "$w/new/data"
    random "$w/old/data/big.bin" $((512 << 20)) moved
    edit "$w/old/data/big.bin" "$w/new/data/big.bin" 0 \
        64:mv:$((128 << 20)) 300:over:65536
    layer "$w/old" "$w/old.tar" && layer "$w/new" "$w/new.tar"
    rm -rf "$w/old" "$w/new"
    python3 "$HERE/mkimage.py" "$w/old-image.tar" bigfile/moved:old "$w/old.tar" >"$w/old.id"
    python3 "$HERE/mkimage.py" "$w/new-image.tar" bigfile/moved:new "$w/new.tar" >"$w/new.id"
    rm -f "$w/old.tar" "$w/new.tar"
}

make_combo() {
    local w=$WORK/combo k=$CORPUS/kernel
    [[ -s $w/new-image.tar ]] && return
    [[ -s $k/new.tar ]] || { log "no kernel pair: run bench/corpus.sh first"; exit 1; }
    log "combo: the kernel pair with a changed 256 MiB file"
    rm -rf "$w" && mkdir -p "$w/old/var/lib/db" "$w/new/var/lib/db"
    random "$w/old/var/lib/db/big.bin" $((256 << 20)) combo
    edit "$w/old/var/lib/db/big.bin" "$w/new/var/lib/db/big.bin" 0 \
        50:over:65536 100:ins:4096 200:del:1048576
    cp "$k/old.tar" "$w/old.tar" && cp "$k/new.tar" "$w/new.tar"
    for s in old new; do
        tar --owner=0 --group=0 --numeric-owner --mtime=@0 --format=pax \
            -rf "$w/$s.tar" -C "$w/$s" var/lib/db/big.bin
    done
    rm -rf "$w/old" "$w/new"
    python3 "$HERE/mkimage.py" "$w/old-image.tar" bigfile/combo:old "$CORPUS/base.tar" \
        "$w/old.tar" >"$w/old.id"
    python3 "$HERE/mkimage.py" "$w/new-image.tar" bigfile/combo:new "$CORPUS/base.tar" \
        "$w/new.tar" >"$w/new.id"
    rm -f "$w/old.tar" "$w/new.tar"
}

# measure CASE
measure() {
    local w=$WORK/$1 t rc=0 enc dec got
    t=$(mktemp)
    log "$1: create"
    /usr/bin/time -f '%e %M' -o "$t" "$BIN" -q create "docker-archive:$w/old-image.tar" \
        "docker-archive:$w/new-image.tar" -o "$w/package.ddelta" --force
    enc=$(tail -n1 "$t")
    log "$1: apply"
    /usr/bin/time -f '%e %M' -o "$t" "$BIN" -q apply "$w/package.ddelta" \
        --base "docker-archive:$w/old-image.tar" -o "$w/out.tar" --force
    dec=$(tail -n1 "$t")
    got=$("$BIN" -q inspect --verify "docker-archive:$w/out.tar" --json | python3 -c \
        'import json,sys; d=json.load(sys.stdin); print(d["image_id"] if d.get("layers_verified", d.get("verified")) else "unverified")')
    rm -f "$w/out.tar" "$t"
    local verdict=ok
    [[ $got == "$(cat "$w/new.id")" ]] || verdict="WRONG IMAGE ($got)"
    (( ${enc#* } < LIMIT_KB && ${dec#* } < LIMIT_KB )) || verdict="$verdict, OVER 512 MiB"
    printf '%s: package %s bytes; create %s s, %s MiB; apply %s s, %s MiB; %s\n' "$1" \
        "$(stat -c %s "$w/package.ddelta")" "${enc% *}" $(( ${enc#* } / 1024 )) \
        "${dec% *}" $(( ${dec#* } / 1024 )) "$verdict"
    [[ $verdict == ok ]] || rc=1
    return $rc
}

[[ -x $BIN ]] || { log "no $BIN: cargo build --release first"; exit 1; }
mkdir -p "$WORK"
status=0
for c in $CASES; do
    case $c in
        big) make_big ;;
        moved) make_moved ;;
        combo) make_combo ;;
        *) log "unknown case $c"; exit 2 ;;
    esac
    measure "$c" || status=1
done
exit $status
