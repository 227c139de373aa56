#!/usr/bin/env bash
# The README's "run it" command: builds docker-delta, makes a delta between the two sample
# images kept in samples/, applies it, and checks the rebuilt image is exactly app-2.
# Needs no Docker daemon. Output goes to ${DEMO_DIR:-target/demo}.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
OUT=${DEMO_DIR:-$REPO/target/demo}
mkdir -p "$OUT"

if ! command -v cargo >/dev/null; then
    echo "demo: cargo is needed (https://rustup.rs); the build needs nothing else but a C compiler" >&2
    exit 2
fi

echo "+ cargo build --release"
cargo build --release --quiet
DD="$REPO/target/release/docker-delta"
run() { echo; echo "+ docker-delta $*"; "$DD" "$@"; }

run inspect samples/app-2.tar
run create docker-archive:samples/app-1.tar docker-archive:samples/app-2.tar -o "$OUT/app-1-to-2.ddelta" --force
run info "$OUT/app-1-to-2.ddelta"
run list "$OUT/app-1-to-2.ddelta"
run apply "$OUT/app-1-to-2.ddelta" --base docker-archive:samples/app-1.tar -o "$OUT/app-2-rebuilt.tar" --force

want=$("$DD" inspect --no-verify --json samples/app-2.tar | python3 -c 'import json,sys; print(json.load(sys.stdin)["image_id"])')
got=$("$DD" inspect --json "$OUT/app-2-rebuilt.tar" | python3 -c 'import json,sys; print(json.load(sys.stdin)["image_id"])')
pkg=$(stat -c %s "$OUT/app-1-to-2.ddelta")
full=$(stat -c %s samples/app-2.tar)
echo
if [ "$want" != "$got" ]; then
    echo "demo: FAILED: rebuilt image $got is not $want" >&2
    exit 1
fi
echo "rebuilt image ID $got == app-2's ID (every layer verified against its diff_id)"
echo "delta package: $pkg bytes; app-2 as a docker-archive: $full bytes ($((100 - 100 * pkg / full))% saved)"
echo "load it with:  docker load -i $OUT/app-2-rebuilt.tar    (tagged sample/app:2)"
