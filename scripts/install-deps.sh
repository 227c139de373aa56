#!/usr/bin/env bash
# Install everything the docker-delta test suites need.
#
# Idempotent: every step checks first and is a fast no-op when its target is
# already present. `apt-get update` only runs when an apt package is missing.
#
# Three parts:
#  1. system packages via apt (Docker 20.10 from bookworm, skopeo, umoci, ...)
#  2. Docker 26 and oras from Debian trixie, downloaded with a *private* apt
#     configuration (own sources list / state / cache under .cache/apt-trixie)
#     and unpacked with `dpkg -x` into .cache/docker26 and .cache/oras --
#     never installed over the system.
#  3. the registry for scripts/registries.sh: the system suite's
#     `docker-registry` .deb (CNCF distribution 2.8), fetched with
#     `apt-get download` and unpacked with `dpkg -x` into .cache/registry, so
#     its service is never installed, enabled or started.
#
# Env:
#   DOCKER_DELTA_SKIP_DOCKER26=1   skip Docker 26 (oras and the registry still come)
#   DOCKER_DELTA_CACHE=DIR         cache root (default: $REPO/.cache)
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${DOCKER_DELTA_CACHE:-$REPO/.cache}
PREFIX26=$CACHE/docker26
APTDIR=$CACHE/apt-trixie

log() { printf '[install-deps] %s\n' "$*" >&2; }
die() { printf '[install-deps] ERROR: %s\n' "$*" >&2; exit 1; }

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || die "must run as root (or have sudo)"
    SUDO=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive

# ---------------------------------------------------------------------------
# 1. system packages
# ---------------------------------------------------------------------------
APT_PACKAGES=(
    docker.io containerd runc tini
    skopeo umoci
    xdelta3 zstd
    pkg-config cmake
    gcc libc6-dev
    golang-go
    valgrind
    man-db groff-base
    python3 python3-pip
    python3-jsonschema
    ca-certificates
    openssl apache2-utils iproute2
)
# openssl: test CA and keys of scripts/registries.sh; apache2-utils: its
# `htpasswd -B` (distribution reads bcrypt entries only); iproute2: its `ss`
# (who holds a port).

pkg_installed() {
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" = installed ]
}

install_apt_packages() {
    local missing=() p
    for p in "${APT_PACKAGES[@]}"; do
        pkg_installed "$p" || missing+=("$p")
    done
    if [ ${#missing[@]} -eq 0 ]; then
        log "apt packages: all ${#APT_PACKAGES[@]} present"
        return
    fi
    log "apt packages missing: ${missing[*]}"
    # Another apt (a fresh machine's unattended upgrades, a bench script)
    # may hold dpkg's lock: wait for it up to 10 minutes instead of failing.
    local lock=(-o DPkg::Lock::Timeout=600)
    "${SUDO[@]}" apt-get "${lock[@]}" update -qq
    # Without systemd, a docker.io postinst may try to start a system dockerd
    # through invoke-rc.d. We manage our own engines on private sockets, so
    # keep services from being started by the install (policy-rc.d 101 = deny).
    local policy=/usr/sbin/policy-rc.d added_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null
        "${SUDO[@]}" chmod +x "$policy"
        added_policy=1
    fi
    local rc=0
    "${SUDO[@]}" apt-get "${lock[@]}" install -y -qq --no-install-recommends "${missing[@]}" || rc=$?
    if [ $added_policy = 1 ]; then "${SUDO[@]}" rm -f "$policy"; fi
    [ $rc -eq 0 ] || die "apt-get install failed ($rc)"
}

# On a systemd host, the docker.io package enables docker.service/socket,
# which would run a system dockerd on /var/run/docker.sock and a system
# containerd. Our engines don't use either (private sockets, own containerd),
# so this is only reported, never stopped: it isn't ours to stop.
report_system_docker() {
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
        local u
        for u in docker.service docker.socket containerd.service; do
            if systemctl is-active --quiet "$u" 2>/dev/null; then
                log "note: system $u is active; our engines use private sockets and do not touch it"
            fi
        done
    fi
}

# pytest for the python suite (bindings/python) (apt's python3-pytest only serves
# /usr/bin/python3; the python3 on PATH may be another interpreter).
install_pytest() {
    if python3 -c 'import pytest' 2>/dev/null; then
        log "pytest: present ($(python3 -m pytest --version 2>&1 | head -1))"
        return
    fi
    log "installing pytest for $(command -v python3)"
    python3 -m pip install -q pytest 2>/dev/null \
        || python3 -m pip install -q --break-system-packages pytest \
        || die "pip install pytest failed"
}

# jsonschema for cli/tests/json_contract.rs, which validates --json output against
# docs/schema/ with the python3 on PATH (apt's python3-jsonschema, in the list above,
# serves /usr/bin/python3 only).
install_jsonschema() {
    if python3 -c 'import jsonschema' 2>/dev/null; then
        log "jsonschema: present"
        return
    fi
    log "installing jsonschema for $(command -v python3)"
    python3 -m pip install -q jsonschema 2>/dev/null \
        || python3 -m pip install -q --break-system-packages jsonschema \
        || die "pip install jsonschema failed"
}

# ---------------------------------------------------------------------------
# 2. Docker 26 from trixie into a private prefix
# ---------------------------------------------------------------------------
TRIXIE_SUITE=trixie
# docker-cli: trixie splits the client out of docker.io.
# runc: trixie's build needs glibc >= 2.38, so on bookworm it cannot run;
# engines.sh then falls back to the system runc (only used to run containers,
# which the fixtures never do). It is still unpacked for newer hosts.
DOCKER26_DEBS=(docker.io docker-cli containerd runc tini)

docker26_ok() {
    [ -x "$PREFIX26/usr/sbin/dockerd" ] && [ -x "$PREFIX26/usr/bin/docker" ] \
        && [ -x "$PREFIX26/usr/bin/containerd" ] || return 1
    local v
    v=$("$PREFIX26/usr/sbin/dockerd" --version 2>/dev/null) || return 1
    grep -q 'version 26\.' <<<"$v"
}

# Derive "URI|Components|Signed-By" of the system's main Debian source.
# Reads deb822 *.sources first, then one-line sources.list files.
system_debian_source() {
    local codename
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    python3 - "$codename" <<'PY'
import glob, re, sys
codename = sys.argv[1]
cands = []
for f in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    text = open(f).read()
    for stanza in re.split(r"\n\s*\n", text):
        fields, key = {}, None
        for line in stanza.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            if line[0] in " \t" and key:
                fields[key] += "\n" + line.strip()
                continue
            if ":" in line:
                key, val = line.split(":", 1)
                key = key.strip().lower()
                fields[key] = val.strip()
        if fields.get("enabled", "yes").lower() == "no":
            continue
        if "deb" not in fields.get("types", "").split():
            continue
        for uri in fields.get("uris", "").split():
            cands.append((uri, fields.get("suites", "").split(),
                          fields.get("components", "main").split(),
                          fields.get("signed-by", "")))
for f in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")):
    try:
        lines = open(f).read().splitlines()
    except OSError:
        continue
    for line in lines:
        line = line.split("#", 1)[0].strip()
        m = re.match(r"^deb\s+(\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s+(.*)$", line)
        if not m:
            continue
        opts, uri, suite, comps = m.groups()
        sb = ""
        if opts:
            mm = re.search(r"signed-by=(\S+?)(\]|\s|$)", opts)
            if mm:
                sb = mm.group(1)
        cands.append((uri, [suite], comps.split(), sb))
# The main archive: suite == codename exactly (not -security / -updates).
for uri, suites, comps, sb in cands:
    if codename in suites and "security" not in uri:
        if sb.startswith("-----BEGIN"):
            sb = ""  # inline keys: fall back to the keyring below
        print(f"{uri}|{' '.join(comps)}|{sb}")
        sys.exit(0)
sys.exit("no Debian source for suite %r found" % codename)
PY
}

private_apt() {
    # Everything apt reads or writes lives under $APTDIR, except apt.conf.d
    # (proxy settings etc. still apply) and the trusted keyrings.
    apt-get \
        -o Dir::Etc::SourceList="$APTDIR/sources.list" \
        -o Dir::Etc::SourceParts="$APTDIR/sources.list.d" \
        -o Dir::Etc::Preferences="$APTDIR/preferences" \
        -o Dir::Etc::PreferencesParts="$APTDIR/preferences.d" \
        -o Dir::State="$APTDIR/state" \
        -o Dir::State::Lists="$APTDIR/state/lists" \
        -o Dir::State::status="$APTDIR/state/status" \
        -o Dir::Cache="$APTDIR/cache" \
        -o Dir::Cache::archives="$APTDIR/cache/archives" \
        -o Debug::NoLocking=1 \
        -o APT::Sandbox::User=root \
        "$@"
}

# Write the private apt configuration for $TRIXIE_SUITE and run its
# `apt-get update`, once per run of this script.
TRIXIE_APT_READY=0
trixie_apt() {
    [ $TRIXIE_APT_READY = 1 ] && return 0
    local src uri comps signedby
    src=$(system_debian_source) || die "cannot derive a Debian source from /etc/apt"
    IFS='|' read -r uri comps signedby <<<"$src"
    [ -n "$signedby" ] || signedby=/usr/share/keyrings/debian-archive-keyring.gpg
    log "private apt for suite $TRIXIE_SUITE from the system's Debian source ($uri)"

    mkdir -p "$APTDIR"/{sources.list.d,preferences.d,state/lists/partial,cache/archives/partial}
    : >"$APTDIR/preferences"
    [ -e "$APTDIR/state/status" ] || : >"$APTDIR/state/status"
    printf 'deb [signed-by=%s] %s %s %s\n' "$signedby" "$uri" "$TRIXIE_SUITE" "$comps" \
        >"$APTDIR/sources.list"

    private_apt update -qq || die "private apt-get update ($TRIXIE_SUITE) failed"
    TRIXIE_APT_READY=1
}

# unpack_debs PREFIX DEBDIR: dpkg -x every .deb of DEBDIR into PREFIX.tmp,
# then put it in place of PREFIX (never a half-unpacked PREFIX).
unpack_debs() {
    local prefix=$1 debdir=$2 deb
    rm -rf "$prefix.tmp"
    mkdir -p "$prefix.tmp"
    for deb in "$debdir"/*.deb; do
        [ -e "$deb" ] || die "no .deb in $debdir"
        log "unpack $(basename "$deb") into $prefix"
        dpkg -x "$deb" "$prefix.tmp"
    done
    rm -rf "$prefix"
    mv "$prefix.tmp" "$prefix"
}

# trixie_debs PREFIX DEBDIR PKG...: download PKG... from trixie with the
# private apt into DEBDIR and unpack them into PREFIX.
trixie_debs() {
    local prefix=$1 debdir=$2; shift 2
    trixie_apt
    mkdir -p "$debdir"
    (cd "$debdir" && rm -f ./*.deb && private_apt download -qq "$@") \
        || die "apt-get download $* ($TRIXIE_SUITE) failed"
    unpack_debs "$prefix" "$debdir"
}

install_docker26() {
    if [ "${DOCKER_DELTA_SKIP_DOCKER26:-0}" = 1 ]; then
        log "docker26: skipped (DOCKER_DELTA_SKIP_DOCKER26=1)"
        return
    fi
    if docker26_ok; then
        log "docker26: present ($("$PREFIX26/usr/sbin/dockerd" --version))"
        return
    fi
    log "docker26: from $TRIXIE_SUITE: ${DOCKER26_DEBS[*]}"
    trixie_debs "$PREFIX26" "$APTDIR/debs" "${DOCKER26_DEBS[@]}"
    docker26_ok || die "$PREFIX26/usr/sbin/dockerd --version is not 26.x: $("$PREFIX26/usr/sbin/dockerd" --version 2>&1 || true)"
    log "docker26: installed ($("$PREFIX26/usr/sbin/dockerd" --version))"
}

# oras (the OCI registry client; the registry tests cross-check with it).
# bookworm has no oras; trixie's only needs libc6 >= 2.34.
PREFIX_ORAS=$CACHE/oras
oras_ok() {
    # captured, not piped: with pipefail, `grep -q` quitting at the first line
    # can kill oras with SIGPIPE and fail the check on a working binary
    local v
    v=$("$PREFIX_ORAS/usr/bin/oras" version 2>/dev/null) || return 1
    grep -q '^Version:' <<<"$v"
}

install_oras() {
    if oras_ok; then
        log "oras: present ($("$PREFIX_ORAS/usr/bin/oras" version | sed -n 's/^Version: *//p'))"
        return
    fi
    log "oras: from $TRIXIE_SUITE"
    trixie_debs "$PREFIX_ORAS" "$APTDIR/debs-oras" oras
    oras_ok || die "$PREFIX_ORAS/usr/bin/oras does not run: $("$PREFIX_ORAS/usr/bin/oras" version 2>&1 || true)"
    log "oras: installed ($("$PREFIX_ORAS/usr/bin/oras" version | sed -n 's/^Version: *//p'))"
}

# ---------------------------------------------------------------------------
# 3. CNCF distribution 2.8 (Debian's docker-registry) into a private prefix
# ---------------------------------------------------------------------------
# Only the binary is used: scripts/registries.sh runs it with its own config
# files. Installing the package would create a system user and start a
# registry service on :5000, which is not ours to run.
PREFIX_REGISTRY=$CACHE/registry
REGISTRY_DEBDIR=$CACHE/registry-deb
registry_ok() {
    local v
    v=$("$PREFIX_REGISTRY/usr/bin/docker-registry" --version 2>/dev/null) || return 1
    grep -q ' v\?2\.8\.' <<<"$v"
}

install_registry() {
    if registry_ok; then
        log "registry: present ($("$PREFIX_REGISTRY/usr/bin/docker-registry" --version))"
        return
    fi
    log "registry: apt-get download docker-registry (system suite)"
    mkdir -p "$REGISTRY_DEBDIR"
    if ! (cd "$REGISTRY_DEBDIR" && rm -f ./*.deb && apt-get download -qq -o APT::Sandbox::User=root docker-registry); then
        # a fresh machine may have no package lists yet
        "${SUDO[@]}" apt-get update -qq
        (cd "$REGISTRY_DEBDIR" && rm -f ./*.deb && apt-get download -qq -o APT::Sandbox::User=root docker-registry) \
            || die "apt-get download docker-registry failed"
    fi
    unpack_debs "$PREFIX_REGISTRY" "$REGISTRY_DEBDIR"
    registry_ok || die "$PREFIX_REGISTRY/usr/bin/docker-registry is not 2.8.x: $("$PREFIX_REGISTRY/usr/bin/docker-registry" --version 2>&1 || true)"
    log "registry: installed ($("$PREFIX_REGISTRY/usr/bin/docker-registry" --version))"
}

main() {
    local t0=$SECONDS
    install_apt_packages
    report_system_docker
    install_pytest
    install_jsonschema
    install_docker26
    install_oras
    install_registry
    log "done in $((SECONDS - t0))s"
}

main "$@"
