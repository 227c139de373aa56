#!/usr/bin/env bash
# Check the memory bound (create and apply under 512 MiB peak RSS) on layers with very many
# small files, where the per-file indexes, not the diff windows, are what grows: an app
# layer shaped like a big node_modules tree.
#
# Run by hand (not by CI):
#     bash bench/manyfiles.sh            # 400 000 files (~3 min on 2 cores, ~2.5 GB of disk)
#     MANY_FILES=1000000 bash bench/manyfiles.sh
#
# The old layer holds MANY_FILES files of 200 B to 3 KiB of JavaScript-like text in 8 000
# packages (`app/node_modules/pkgN/lib/...`), written by Python's tarfile in PAX format,
# owner 0, mtime 0. The new layer: 2 % of the files edited (a line replaced), 1 % of the
# packages upgraded (`pkgN` -> `pkgN-2`, its files moved and 5 % of them edited), 0.5 %
# of the files deleted and as many added. Both images are made once and kept in
# bench/.cache/manyfiles-N/ (gitignored).
#
# For each: create and apply with /usr/bin/time (wall seconds, peak RSS), the package
# size, and whether the applied image has the new image's ID.
#
# Env:
#   MANY_FILES  number of files in the old layer (default 400000)
#   BENCH_BIN   binary (default: target/release/docker-delta)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
BIN=${BENCH_BIN:-$ROOT/target/release/docker-delta}
N=${MANY_FILES:-400000}
WORK=$HERE/.cache/manyfiles-$N
LIMIT_KB=$((512 * 1024))

log() { printf '[manyfiles %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

make_pair() {
    [[ -s $WORK/new-image.tar ]] && return
    log "making the pair ($N files)"
    rm -rf "$WORK" && mkdir -p "$WORK"
    python3 - "$N" "$WORK/old.tar" "$WORK/new.tar" <<'EOF'
import io, random, sys, tarfile
n, old_path, new_path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
WORDS = ("const var let function return if else for while module exports require "
         "this that value index length push map filter reduce object array string "
         "number undefined null true false async await promise then catch").split()
PKGS = 8000

def text(seed, size):
    r = random.Random(seed)
    out, line = [], []
    total = 0
    while total < size:
        w = r.choice(WORDS)
        line.append(w)
        total += len(w) + 1
        if len(line) > r.randrange(4, 12):
            out.append(" ".join(line))
            line = []
    out.append(" ".join(line))
    return ("\n".join(out) + "\n").encode()[:size]

def files():
    r = random.Random(1)
    for i in range(n):
        pkg = i % PKGS
        size = r.randrange(200, 3072)
        yield i, pkg, f"lib/d{i // PKGS % 40}/file{i}.js", size

def add(tar, name, data):
    ti = tarfile.TarInfo(name)
    ti.size, ti.mtime, ti.mode, ti.uid, ti.gid = len(data), 0, 0o644, 0, 0
    tar.addfile(ti, io.BytesIO(data))

def write(path, new):
    r = random.Random(2)
    upgraded = set(r.sample(range(PKGS), PKGS // 100))
    entries = []
    for i, pkg, rel, size in files():
        data = text(i, size)
        name = f"pkg{pkg}"
        if new:
            if r.random() < 0.005:
                continue  # deleted
            edit = r.random() < 0.02
            if pkg in upgraded:
                name = f"pkg{pkg}-2"
                edit = edit or r.random() < 0.05
            if edit:
                lines = data.split(b"\n")
                k = r.randrange(len(lines))
                lines[k] = text(i + 10**9, max(8, len(lines[k])))
                data = b"\n".join(lines)
        entries.append((f"app/node_modules/{name}/{rel}", data))
    if new:
        for j in range(n // 200):
            entries.append((f"app/node_modules/added{j % 97}/lib/new{j}.js",
                            text(j + 2 * 10**9, r.randrange(200, 3072))))
    entries.sort()
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in entries:
            add(tar, name, data)

write(old_path, False)
write(new_path, True)
EOF
    python3 "$HERE/mkimage.py" "$WORK/old-image.tar" bench/manyfiles:old "$WORK/old.tar" \
        >"$WORK/old.id"
    python3 "$HERE/mkimage.py" "$WORK/new-image.tar" bench/manyfiles:new "$WORK/new.tar" \
        >"$WORK/new.id"
    rm -f "$WORK/old.tar" "$WORK/new.tar"
}

[[ -x $BIN ]] || { log "no $BIN: cargo build --release first"; exit 1; }
make_pair
t=$(mktemp)
log "create"
/usr/bin/time -f '%e %M' -o "$t" "$BIN" -q create "docker-archive:$WORK/old-image.tar" \
    "docker-archive:$WORK/new-image.tar" -o "$WORK/package.ddelta" --force
enc=$(tail -n1 "$t")
log "apply"
/usr/bin/time -f '%e %M' -o "$t" "$BIN" -q apply "$WORK/package.ddelta" \
    --base "docker-archive:$WORK/old-image.tar" -o "$WORK/out.tar" --force
dec=$(tail -n1 "$t")
got=$("$BIN" -q inspect --verify "docker-archive:$WORK/out.tar" --json | python3 -c \
    'import json,sys; d=json.load(sys.stdin); print(d["image_id"] if d.get("layers_verified", d.get("verified")) else "unverified")')
rm -f "$WORK/out.tar" "$t"
verdict=ok
[[ $got == "$(cat "$WORK/new.id")" ]] || verdict="WRONG IMAGE ($got)"
(( ${enc#* } < LIMIT_KB && ${dec#* } < LIMIT_KB )) || verdict="$verdict, OVER 512 MiB"
printf '%s files: new image %s bytes, package %s bytes; create %s s, %s MiB; apply %s s, %s MiB; %s\n' \
    "$N" "$(stat -c %s "$WORK/new-image.tar")" \
    "$(stat -c %s "$WORK/package.ddelta")" "${enc% *}" $(( ${enc#* } / 1024 )) \
    "${dec% *}" $(( ${dec#* } / 1024 )) "$verdict"
[[ $verdict == ok ]]
