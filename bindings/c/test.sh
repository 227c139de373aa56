#!/usr/bin/env bash
# Builds bindings/c/example.c against the C library installed in PREFIX (by
# scripts/install-c.sh --prefix PREFIX) twice, with nothing but pkg-config, as a C user would:
#   shared: cc example.c $(pkg-config --cflags --libs docker-delta)
#   static: the same with --static, against a copy of the prefix without the .so files
#           (as a distribution's static package has it), so Libs.private must be right
# and runs each one's happy path (inspect, create, package info, apply, rebuilt image ID
# check) and error path (NULL argument, wrong base image, missing package); the shared
# build runs under valgrind, where any leak or memory error fails.
#
# Usage: bindings/c/test.sh PREFIX
# Env: DOCKER_DELTA_VALGRIND=0 to run without valgrind
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
PREFIX=${1:?usage: $0 PREFIX}
[ -e "$PREFIX/lib/pkgconfig/docker-delta.pc" ] || { echo "no docker-delta.pc in $PREFIX/lib/pkgconfig: run scripts/install-c.sh --prefix $PREFIX" >&2; exit 2; }
OUT=$REPO/target/c-example
rm -rf "$OUT"
mkdir -p "$OUT"
command -v pkg-config >/dev/null || { echo "pkg-config is missing (scripts/install-deps.sh)" >&2; exit 2; }

soname=$(objdump -p "$PREFIX/lib/libdocker_delta.so" | awk '$1 == "SONAME" {print $2}')
case $soname in
    libdocker_delta.so.[0-9]*) echo "installed library's SONAME: $soname" ;;
    *) echo "the installed library has no versioned SONAME (got '$soname')" >&2; exit 1 ;;
esac
# The static-only prefix: the same files without the shared library.
STATIC=$OUT/static-prefix
mkdir -p "$STATIC/lib/pkgconfig"
cp -r "$PREFIX/include" "$STATIC/"
cp "$PREFIX/lib/libdocker_delta.a" "$STATIC/lib/"
sed "s#$PREFIX#$STATIC#g" "$PREFIX/lib/pkgconfig/docker-delta.pc" >"$STATIC/lib/pkgconfig/docker-delta.pc"

CFLAGS=(-std=c11 -Wall -Wextra -Werror -g)
echo "+ cc example.c \$(pkg-config --cflags --libs docker-delta)   [prefix $PREFIX]"
# shellcheck disable=SC2046
cc "${CFLAGS[@]}" "$REPO/bindings/c/example.c" \
    $(PKG_CONFIG_PATH=$PREFIX/lib/pkgconfig pkg-config --cflags --libs docker-delta) \
    -o "$OUT/example"
grep -q "NEEDED.*\[$soname\]" <<<"$(readelf -d "$OUT/example")" \
    || { echo "example does not record $soname" >&2; exit 1; }
echo "+ cc example.c \$(pkg-config --cflags --libs --static docker-delta)   [prefix $STATIC]"
# shellcheck disable=SC2046
cc "${CFLAGS[@]}" "$REPO/bindings/c/example.c" \
    $(PKG_CONFIG_PATH=$STATIC/lib/pkgconfig pkg-config --cflags --libs --static docker-delta) \
    -o "$OUT/example-static"
if grep -q "NEEDED.*docker_delta" <<<"$(readelf -d "$OUT/example-static")"; then
    echo "example-static needs a shared libdocker_delta" >&2; exit 1
fi

RUN=()
if [ "${DOCKER_DELTA_VALGRIND:-1}" != 0 ]; then
    command -v valgrind >/dev/null || { echo "valgrind is missing (scripts/install-deps.sh)" >&2; exit 2; }
    RUN=(valgrind -q --leak-check=full --show-leak-kinds=definite,indirect,possible
         --errors-for-leak-kinds=definite,indirect,possible --error-exitcode=99
         --suppressions="$REPO/bindings/c/valgrind.supp")
fi
rc=0
for run in shared static; do
  for path in happy error; do
    work=$(mktemp -d "$OUT/$run-$path.XXXXXX")
    if [ $run = shared ]; then
        cmd=(env LD_LIBRARY_PATH="$PREFIX/lib" "${RUN[@]}" "$OUT/example")
    else
        cmd=("$OUT/example-static")
    fi
    echo "+ ${cmd[*]} $path"
    if "${cmd[@]}" "$path" "$REPO/samples/app-1.tar" "$REPO/samples/app-2.tar" "$work" \
        >"$work.log" 2>&1; then
        tail -1 "$work.log"
    else
        r=$?
        cat "$work.log"
        echo "example ($run) $path: FAILED (exit $r; 99 = valgrind found errors or leaks)" >&2
        rc=1
    fi
    rm -rf "$work"
  done
done
exit $rc
