#!/usr/bin/env bash
# Builds bindings/c/example.c against libdocker_delta and runs its happy path (inspect,
# create, package info, apply, rebuilt image ID check) and its error path (NULL argument,
# wrong base image, missing package) under valgrind; any leak or memory error fails.
#
# Env: DOCKER_DELTA_LIBDIR (default target/release; build it with `cargo build --release --lib`)
#      DOCKER_DELTA_VALGRIND=0 to run without valgrind
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
LIBDIR=${DOCKER_DELTA_LIBDIR:-$REPO/target/release}
OUT=$REPO/target/c-example
mkdir -p "$OUT"
[ -e "$LIBDIR/libdocker_delta.so" ] || { echo "no $LIBDIR/libdocker_delta.so: run cargo build --release --lib" >&2; exit 2; }

echo "+ cc bindings/c/example.c -> $OUT/example"
cc -std=c11 -Wall -Wextra -Werror -g -I "$REPO/include" "$REPO/bindings/c/example.c" \
    -L "$LIBDIR" -Wl,-rpath,"$LIBDIR" -ldocker_delta -o "$OUT/example"

RUN=()
if [ "${DOCKER_DELTA_VALGRIND:-1}" != 0 ]; then
    command -v valgrind >/dev/null || { echo "valgrind is missing (scripts/install-deps.sh)" >&2; exit 2; }
    RUN=(valgrind -q --leak-check=full --show-leak-kinds=definite,indirect,possible
         --errors-for-leak-kinds=definite,indirect,possible --error-exitcode=99
         --suppressions="$REPO/bindings/c/valgrind.supp")
fi
rc=0
for path in happy error; do
    work=$(mktemp -d "$OUT/$path.XXXXXX")
    echo "+ ${RUN[*]} example $path"
    if "${RUN[@]}" "$OUT/example" "$path" "$REPO/samples/app-1.tar" "$REPO/samples/app-2.tar" "$work" \
        >"$work.log" 2>&1; then
        tail -1 "$work.log"
    else
        r=$?
        cat "$work.log"
        echo "example $path: FAILED (exit $r; 99 = valgrind found errors or leaks)" >&2
        rc=1
    fi
    rm -rf "$work"
done
exit $rc
