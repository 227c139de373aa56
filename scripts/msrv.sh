#!/usr/bin/env bash
# Checks the stated minimum Rust version (`rust-version` in Cargo.toml) with a second
# toolchain of exactly that version: Debian bookworm's rustc-web and cargo-web 1.85,
# fetched with `apt-get download` and unpacked with `dpkg -x` into .cache/rust-msrv
# (never installed over the system), then `cargo check --locked` of the library, the
# command and the C ABI with it. Idempotent: the download happens once.
#
# Env: DOCKER_DELTA_CACHE (default $REPO/.cache)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${DOCKER_DELTA_CACHE:-$REPO/.cache}
MSRV=$(sed -n '/^\[workspace.package\]/,/^\[/s/^rust-version = "\(.*\)"/\1/p' "$REPO/Cargo.toml")
# The Debian version of that toolchain (bookworm main), and the libraries its cargo
# links that a machine without cargo may lack.
DEB_VERSION=1.85.0+dfsg3-1~deb12u3
PACKAGES=("rustc-web=$DEB_VERSION" "cargo-web=$DEB_VERSION" "libstd-rust-web-1.85=$DEB_VERSION"
          "libstd-rust-web-dev=$DEB_VERSION" libhttp-parser2.9 libssh2-1 libpcre3 libllvm19 libz3-4
          libxml2 libedit2 libffi8 libicu72)
ROOT=$CACHE/rust-msrv
log() { printf '[msrv] %s\n' "$*" >&2; }

case $DEB_VERSION in
    "$MSRV".*) ;;
    *) log "Cargo.toml says rust-version $MSRV but this script fetches $DEB_VERSION: update it"; exit 1 ;;
esac

if [ ! -x "$ROOT/usr/bin/cargo" ]; then
    log "fetching Rust $MSRV from Debian: ${PACKAGES[*]}"
    debs=$(mktemp -d)
    trap 'rm -rf "$debs"' EXIT
    if ! (cd "$debs" && apt-get download -qq "${PACKAGES[@]}" 2>/dev/null); then
        apt-get update -qq
        (cd "$debs" && apt-get download -qq "${PACKAGES[@]}")
    fi
    rm -rf "$ROOT.tmp"
    mkdir -p "$ROOT.tmp"
    for d in "$debs"/*.deb; do dpkg -x "$d" "$ROOT.tmp"; done
    rm -rf "$ROOT"
    mv "$ROOT.tmp" "$ROOT"
fi

RUSTC=$ROOT/usr/bin/rustc
CARGO=$ROOT/usr/bin/cargo
export LD_LIBRARY_PATH="$ROOT/usr/lib/x86_64-linux-gnu:$ROOT/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export RUSTC CARGO_TARGET_DIR="$REPO/target/msrv"
# rustup's proxies must not pick another toolchain for the build scripts' rustc.
unset RUSTUP_TOOLCHAIN
log "$("$RUSTC" --version), $("$CARGO" --version)"
cd "$REPO"
log "+ cargo check --locked --workspace (library, CLI, C ABI)"
"$CARGO" check --locked --workspace --quiet
log "+ cargo check --locked -p docker-delta --no-default-features (the library as a dependency)"
"$CARGO" check --locked -p docker-delta --no-default-features --quiet
log "Rust $MSRV builds docker-delta"
