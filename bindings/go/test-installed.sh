#!/usr/bin/env bash
# Tests the Go module as its users get it: the module folder copied out of the repository
# (what a module download holds), built against the C library installed in PREFIX and
# found by pkg-config, with the samples passed by path.
#
# Usage: bindings/go/test-installed.sh PREFIX     (PREFIX from scripts/install-c.sh --prefix)
# Uses Debian's Go with no module downloads; build caches go to $REPO/.cache/go.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
PREFIX=${1:?usage: $0 PREFIX}
[ -e "$PREFIX/lib/pkgconfig/docker-delta.pc" ] || { echo "no docker-delta.pc in $PREFIX/lib/pkgconfig: run scripts/install-c.sh --prefix $PREFIX" >&2; exit 2; }

export GOFLAGS=-mod=mod GOPROXY=off GOTOOLCHAIN=local GOTELEMETRY=off
export GOCACHE="$REPO/.cache/go/build" GOPATH="$REPO/.cache/go/path"
export PKG_CONFIG_PATH="$PREFIX/lib/pkgconfig" LD_LIBRARY_PATH="$PREFIX/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export DOCKER_DELTA_SAMPLES="$REPO/samples"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$REPO/bindings/go" "$work/dockerdelta"
rm -f "$work/dockerdelta/test-installed.sh"
cd "$work/dockerdelta"
echo "+ go test in $PWD against $PREFIX ($(go version))"
unformatted=$(gofmt -l .)
[ -z "$unformatted" ] || { echo "gofmt: not formatted: $unformatted" >&2; exit 1; }
go vet ./...
go test -count=1 -v ./...
