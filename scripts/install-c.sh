#!/usr/bin/env bash
# Installs the docker-delta C library the way cargo-c and distributions lay one out:
#
#   PREFIX/lib/libdocker_delta.so.VERSION        the shared library (SONAME libdocker_delta.so.ABI)
#   PREFIX/lib/libdocker_delta.so.ABI -> ...      what programs load (ABI: 0.MINOR while 0.x)
#   PREFIX/lib/libdocker_delta.so -> ...          what the linker finds for -ldocker_delta
#   PREFIX/lib/libdocker_delta.a                  the static library (zlib, zstd, liblzma inside)
#   PREFIX/lib/pkgconfig/docker-delta.pc          Cflags, Libs, and Libs.private for --static
#   PREFIX/include/docker_delta.h                 the header (include/docker_delta.h)
#
# Usage: scripts/install-c.sh [--prefix DIR] [--libdir DIR] [--destdir DIR] [--no-build]
#   --prefix   where it is installed and what the .pc file names (default /usr/local)
#   --libdir   default PREFIX/lib
#   --destdir  stage under DESTDIR (packaging): files go to DESTDIR/PREFIX/..., the .pc
#              file still names PREFIX
#   --no-build use target/release as it is (built by `cargo build --release -p docker-delta-ffi`)
#
# Then: cc app.c $(pkg-config --cflags --libs docker-delta)
# (with PKG_CONFIG_PATH=PREFIX/lib/pkgconfig where PREFIX is not a system prefix).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"

PREFIX=/usr/local
LIBDIR=
DESTDIR=
BUILD=1
while [ $# -gt 0 ]; do
    case $1 in
        --prefix) PREFIX=$2; shift 2 ;;
        --prefix=*) PREFIX=${1#*=}; shift ;;
        --libdir) LIBDIR=$2; shift 2 ;;
        --libdir=*) LIBDIR=${1#*=}; shift ;;
        --destdir) DESTDIR=$2; shift 2 ;;
        --destdir=*) DESTDIR=${1#*=}; shift ;;
        --no-build) BUILD=0; shift ;;
        -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "install-c: unknown argument $1 (see --help)" >&2; exit 3 ;;
    esac
done
case $PREFIX in /*) ;; *) echo "install-c: --prefix must be an absolute path" >&2; exit 3 ;; esac
LIBDIR=${LIBDIR:-$PREFIX/lib}
TARGET=${CARGO_TARGET_DIR:-$REPO/target}/release

# The version from the workspace's Cargo.toml ([workspace.package] version = "X.Y.Z").
VERSION=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
[ -n "$VERSION" ] || { echo "install-c: no version in Cargo.toml" >&2; exit 1; }
MAJOR=${VERSION%%.*}
MINOR=${VERSION#*.}; MINOR=${MINOR%%.*}
if [ "$MAJOR" = 0 ]; then ABI=0.$MINOR; else ABI=$MAJOR; fi

if [ $BUILD = 1 ]; then
    echo "+ cargo build --release -p docker-delta-ffi" >&2
    cargo build --release -p docker-delta-ffi --quiet
fi
for f in libdocker_delta_ffi.so libdocker_delta_ffi.a; do
    [ -e "$TARGET/$f" ] || { echo "install-c: no $TARGET/$f (run without --no-build)" >&2; exit 2; }
done

# What a static link needs besides the archive: rustc's own list for this target.
# (Printed while the staticlib is linked; cargo replays the note when nothing changed.)
LIBS_PRIVATE=$(cargo rustc --release -p docker-delta-ffi --lib --crate-type staticlib --quiet \
    -- --print native-static-libs 2>&1 | sed -n 's/.*native-static-libs: //p' | tail -1)
[ -n "$LIBS_PRIVATE" ] || { echo "install-c: rustc did not print native-static-libs" >&2; exit 1; }

D=$DESTDIR
install -d "$D$LIBDIR/pkgconfig" "$D$PREFIX/include"
install -m 0755 "$TARGET/libdocker_delta_ffi.so" "$D$LIBDIR/libdocker_delta.so.$VERSION"
ln -sfn "libdocker_delta.so.$VERSION" "$D$LIBDIR/libdocker_delta.so.$ABI"
ln -sfn "libdocker_delta.so.$ABI" "$D$LIBDIR/libdocker_delta.so"
install -m 0644 "$TARGET/libdocker_delta_ffi.a" "$D$LIBDIR/libdocker_delta.a"
install -m 0644 include/docker_delta.h "$D$PREFIX/include/docker_delta.h"
cat >"$D$LIBDIR/pkgconfig/docker-delta.pc" <<EOF
prefix=$PREFIX
exec_prefix=\${prefix}
libdir=$LIBDIR
includedir=\${prefix}/include

Name: docker-delta
Description: Ship container-image updates as small deltas and rebuild the new image exactly
URL: https://github.com/docker-delta/docker-delta
Version: $VERSION
Libs: -L\${libdir} -ldocker_delta
Libs.private: $LIBS_PRIVATE
Cflags: -I\${includedir}
EOF
echo "installed docker-delta $VERSION (SONAME libdocker_delta.so.$ABI) in $D$PREFIX" >&2
