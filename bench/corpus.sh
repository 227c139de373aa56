#!/usr/bin/env bash
# Build the benchmark corpus: pairs of layer tars and docker-archive images.
#
#     bash bench/corpus.sh                       # all pairs
#     CORPUS_PAIRS="debian kernel" bash bench/corpus.sh
#
# Idempotent: a pair whose recipe is unchanged (same package versions, same
# wheel specs) is not rebuilt; downloads are cached. Everything lives under
# bench/.cache/ (gitignored):
#
#   .cache/debs/                  .debs from apt-get download (bookworm and trixie)
#   .cache/wheels/                wheels from pip download
#   .cache/npm/                   npm's cache (tarballs) for the node pair
#   .cache/apt-trixie/            private apt config/state for trixie (never the system's)
#   .cache/apt-arm64-bookworm/, .cache/apt-arm64-trixie/   the same, arm64 only
#   .cache/corpus/base.tar        small layer shared by every image
#   .cache/corpus/<pair>/old.tar, new.tar             the changed layer, uncompressed
#   .cache/corpus/<pair>/old-image.tar, new-image.tar docker-archive images
#   .cache/corpus/<pair>/info.txt, versions.tsv, ids.txt, layers.txt
#
# The node pair's dependency trees are pinned by bench/node-app/*/ (package.json
# and package-lock.json, committed).
#
# Pairs (built in this order):
#   debian     10 Debian packages, bookworm point release <-> bookworm-security
#   kernel     linux-image 6.1.0-50 (6.1.176-1) -> 6.1.0-56 (6.1.192-2)
#   tools      a tools layer, bookworm versions -> trixie versions
#   wheels     site-packages of PyPI wheels, old -> new versions
#   multilayer old [base, sys libs, python/git/curl, wheels] ->
#              new [base, wheels, one merged Debian layer]: reordered + merged
#              (images only; no old.tar/new.tar, see info.txt)
#   go         container engine (docker.io, containerd, runc; large static Go
#              binaries), bookworm -> trixie
#   jvm        Debian Java library jars (guava, jackson, commons-*, ant, maven,
#              jetty9, netty, bouncycastle, tomcat9, groovy...), bookworm -> trixie
#   node       /app/node_modules (~60k files) of pinned npm packages, old -> new
#   ml         site-packages of numpy, scipy, scikit-learn, pandas, pyarrow
#              wheels, about two minor releases apart
#   arm64      the tools pair's packages, arm64 .debs, bookworm -> trixie
#
# Layer tars are made as issue 6 says: `dpkg-deb -x` of the packages into a
# directory, then GNU tar --sort=name --format=pax, owner/group 0, keeping
# the packages' own mtimes (see mktar).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=$HERE/.cache
OUT=$CACHE/corpus
DEBS=$CACHE/debs
APTDIR=$CACHE/apt-trixie
PAIRS=${CORPUS_PAIRS:-debian kernel tools wheels multilayer go jvm node ml arm64}

# --- debian: the packages of session 1's pair. With these ten the new layer
# is already ~97 MB (issue: 92.5 MB), so no extra packages are added.
DEB_PKGS=(libc6 libssl3 openssl libpython3.11-minimal python3.11-minimal
          libpython3.11-stdlib git curl libcurl4 perl-base)
# --- multilayer: the same packages split into two old layers
ML_LAYER_A=(libc6 libssl3 openssl perl-base)
ML_LAYER_B=(libpython3.11-minimal python3.11-minimal libpython3.11-stdlib git curl libcurl4)

# --- kernel: fixed versions (issue 6's row: 6.1.176 -> 6.1.192)
KERNEL_OLD=(linux-image-6.1.0-50-amd64 6.1.176-1)
KERNEL_NEW=(linux-image-6.1.0-56-amd64 6.1.192-2)

# --- tools: "bookworm-name:trixie-name" (trixie renamed some libraries for
# the 64-bit time_t transition, e.g. libcurl4 -> libcurl4t64).
TOOLS=(curl libcurl4:libcurl4t64 git git-man jq libjq1 libonig5
       vim-tiny vim-common xxd openssh-client rsync less file
       libmagic1:libmagic1t64 libmagic-mgc wget libssh2-1:libssh2-1t64
       libnghttp2-14 libpsl5:libpsl5t64 librtmp1 procps
       libgnutls30:libgnutls30t64)
TRIXIE_SUITE=trixie

# --- wheels: CPython 3.11 / manylinux x86_64, old -> new
WHEELS_OLD=(numpy==1.26.3 pandas==2.2.2 requests==2.31.0 urllib3==2.2.1
            certifi==2024.2.2 idna==3.6 charset-normalizer==3.3.1)
WHEELS_NEW=(numpy==1.26.4 pandas==2.2.3 requests==2.32.3 urllib3==2.2.2
            certifi==2024.7.4 idna==3.7 charset-normalizer==3.3.2)

# --- go: a container engine, bookworm -> trixie; large static Go binaries.
# Only these packages, not their dependencies. trixie split the CLI out of
# docker.io into docker-cli ("-:" = new layer only).
GO_PKGS=(docker.io -:docker-cli containerd runc)

# --- jvm: a JVM application's jars (Debian's Java libraries, as shipped:
# /usr/share/java/*.jar plus the maven-repo symlinks and poms), packages
# with a new Debian version in trixie. libjetty9-java, libjackson2-core-java,
# libjackson2-databind-java, libslf4j-java, libspring-core-java, libnetty-java
# and groovy keep their upstream version (Debian revision/rebuild only); the
# others are upstream upgrades. ~85 MB a layer, ~95 % of it jars.
JVM_PKGS=(libguava-java libjackson2-core-java libjackson2-databind-java
          libcommons-lang3-java libcommons-io-java libcommons-compress-java
          libcommons-codec-java libcommons-collections4-java ant ant-optional
          libmaven3-core-java libjetty9-java libslf4j-java libspring-core-java
          libnetty-java libbcprov-java libbcpkix-java libgoogle-gson-java
          libasm-java libbyte-buddy-java libtomcat9-java libjna-java
          libeclipse-jdt-core-java groovy)

# --- node: an app's node_modules, npm packages pinned old -> new (a few
# months apart, early -> mid 2024; MUI's icons alone are ~30k files). The
# whole trees are pinned by bench/node-app/{old,new}/package-lock.json
# (committed: npm ci on them rebuilds the layers byte for byte). Change a
# pin here and the next build runs npm install and rewrites that side's
# package.json and lock: commit them.
NODE_OLD=(express@4.18.2 webpack@5.89.0 webpack-cli@5.1.4 typescript@5.3.3
          eslint@8.56.0 react@18.2.0 react-dom@18.2.0 lodash@4.17.21
          @babel/core@7.23.7 @babel/preset-env@7.23.8 jest@29.7.0
          axios@1.6.5 moment@2.30.1 @types/node@20.11.5 prettier@3.2.4
          sass@1.70.0 @mui/material@5.15.5 @mui/icons-material@5.15.5
          @emotion/react@11.11.3 @emotion/styled@11.11.0 date-fns@3.3.1
          rxjs@7.8.1 core-js@3.35.1)
NODE_NEW=(express@4.19.2 webpack@5.93.0 webpack-cli@5.1.4 typescript@5.5.4
          eslint@8.57.0 react@18.3.1 react-dom@18.3.1 lodash@4.17.21
          @babel/core@7.24.9 @babel/preset-env@7.24.8 jest@29.7.0
          axios@1.7.2 moment@2.30.1 @types/node@20.14.12 prettier@3.3.3
          sass@1.77.8 @mui/material@5.16.4 @mui/icons-material@5.16.4
          @emotion/react@11.13.0 @emotion/styled@11.13.0 date-fns@3.6.0
          rxjs@7.8.1 core-js@3.37.1)

# --- ml: a numeric/ML stack, CPython 3.11 manylinux x86_64 wheels, about
# two minor releases apart (numpy crosses 1.x -> 2.x). No torch: PyPI's
# Linux torch wheel is the CUDA build (~1.7 GB unpacked without its nvidia
# wheels), over the 1.5 GB bound for a layer here.
ML_OLD=(numpy==1.26.4 scipy==1.12.0 scikit-learn==1.4.2 pandas==2.2.1
        pyarrow==15.0.2 joblib==1.3.2 threadpoolctl==3.4.0)
ML_NEW=(numpy==2.1.3 scipy==1.14.1 scikit-learn==1.6.1 pandas==2.2.3
        pyarrow==17.0.0 joblib==1.4.2 threadpoolctl==3.5.0)

log() { printf '[corpus %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

for t in apt-get apt-cache dpkg-deb dpkg python3 tar sha256sum; do
    command -v "$t" >/dev/null || die "missing tool: $t"
done
mkdir -p "$OUT" "$DEBS"

# ---------------------------------------------------------------- helpers

# mktar DIR OUT: a reproducible layer tar. Owner/group 0, sorted names, pax.
# GNU tar's pax format would add atime and ctime records to every member
# (times of the extraction): dropped, as Docker-built layers have none.
# mtimes are the packages' own; paths that no archive gave an mtime (dirs
# made by mkdir here) are set to 0 by normalize_mtimes first.
mktar() {
    tar --sort=name --format=pax --owner=0 --group=0 --numeric-owner \
        --pax-option=delete=atime,delete=ctime -C "$1" -cf "$2" .
}

# normalize_mtimes DIR MARKER: anything modified after MARKER was created
# got its mtime from this run, not from a package: set it to the epoch, so
# rebuilding gives the same bytes.
normalize_mtimes() {
    find "$1" -newer "$2" -exec touch -h -d @0 {} +
}

new_rootfs() { # DIR: fresh dir + marker for normalize_mtimes
    rm -rf "$1"; mkdir -p "$1"
    touch "$1.marker"
    sleep 1   # mtime granularity: make "newer than the marker" unambiguous
}

finish_rootfs() { # DIR OUT.tar
    normalize_mtimes "$1" "$1.marker"
    mktar "$1" "$2"
    rm -rf "$1" "$1.marker"
}

# The system apt, or a private one (e.g. setup_trixie's): every
# apt state/cache path under a directory of .cache/, never the system's. A
# private dir with an `arch` file has that as its only architecture.
sys_apt() { apt-get "$@"; }
# A fresh machine's package lists can be older than the pinned versions (the
# kernel pair's are newer than an image's lists): on a failed download the
# system apt's lists are updated once and the download retried.
SYS_APT_UPDATED=0
private_apt() { # TOOL(apt-get|apt-cache) DIR ARGS...
    local tool=$1 d=$2; shift 2
    local o=(
        -o Dir::Etc::SourceList="$d/sources.list"
        -o Dir::Etc::SourceParts="$d/sources.list.d"
        -o Dir::Etc::Preferences="$d/preferences"
        -o Dir::Etc::PreferencesParts="$d/preferences.d"
        -o Dir::State="$d/state"
        -o Dir::State::Lists="$d/state/lists"
        -o Dir::State::status="$d/state/status"
        -o Dir::Cache="$d/cache"
        -o Dir::Cache::archives="$d/cache/archives"
        -o Debug::NoLocking=1
        -o APT::Sandbox::User=root)
    if [[ -s $d/arch ]]; then
        local a; a=$(<"$d/arch")
        o+=(-o APT::Architecture="$a" -o APT::Architectures::="$a")
    fi
    "$tool" "${o[@]}" "$@"
}
trixie_apt() { private_apt apt-get "$APTDIR" "$@"; }
trixie_cache() { private_apt apt-cache "$APTDIR" "$@"; }

# fetch_deb APT PKG VER: download PKG=VER once (into .cache/debs/PKG_VER/,
# ':' written %3a, so PKG may be pkg:arm64), print the .deb's path.
fetch_deb() {
    local apt=$1 p=$2 v=$3
    local d=$DEBS/${p//:/%3a}_${v//:/%3a}
    local f
    f=$(ls "$d"/*.deb 2>/dev/null | head -n1 || true)
    if [[ -z $f ]]; then
        log "apt-get download $p=$v"
        rm -rf "$d.tmp"; mkdir -p "$d.tmp"
        if ! (cd "$d.tmp" && "$apt" download -q "$p=$v" >/dev/null 2>"$d.tmp/err"); then
            if [[ $apt == sys_apt && $SYS_APT_UPDATED == 0 ]]; then
                log "apt-get download $p=$v failed: apt-get update, then again"
                apt-get update -qq || die "apt-get update failed"
                SYS_APT_UPDATED=1
            fi
            (cd "$d.tmp" && "$apt" download -q "$p=$v" >/dev/null 2>"$d.tmp/err") \
                || { cat "$d.tmp/err" >&2; die "download of $p=$v failed"; }
        fi
        rm -f "$d.tmp/err"
        rm -rf "$d"; mv "$d.tmp" "$d"
        f=$(ls "$d"/*.deb | head -n1)
    fi
    printf '%s\n' "$f"
}

# versions PKG: "VERSION<TAB>SUITE" lines, newest first, one per version, from
# the system apt (bookworm, bookworm-updates, bookworm-security).
versions() {
    apt-cache madison "$1" | awk -F'|' '{gsub(/ /,"",$2); split($3,a," "); sub(/\/.*/,"",a[2]); print $2"\t"a[2]}' | awk '!seen[$1]++'
}

# The shared base layer: small, static, identical in every image.
build_base() {
    [[ -s $OUT/base.tar ]] && return 0
    local d=$OUT/base-rootfs
    new_rootfs "$d"
    mkdir -p "$d/etc" "$d/usr/share" "$d/tmp" "$d/root" "$d/var/lib"
    printf 'PRETTY_NAME="bench base"\nID=bench\n' >"$d/etc/os-release"
    printf 'root:x:0:0:root:/root:/bin/sh\n' >"$d/etc/passwd"
    cp -a /usr/share/zoneinfo /usr/share/common-licenses "$d/usr/share/"
    finish_rootfs "$d" "$OUT/base.tar.tmp"
    mv "$OUT/base.tar.tmp" "$OUT/base.tar"
}

# done_for PAIR RECIPE: true if the pair was built from exactly RECIPE
done_for() {
    [[ -e $OUT/$1/.recipe ]] && [[ "$(cat "$OUT/$1/.recipe")" == "$2" ]]
}

# mkimages W [old layers...] -- [new layers...]
mkimages() {
    local w=$1; shift
    local old=() new=() side=old a
    for a in "$@"; do
        if [[ $a == -- ]]; then side=new; continue; fi
        if [[ $side == old ]]; then old+=("$a"); else new+=("$a"); fi
    done
    local name; name=$(basename "$w" .tmp)
    local oid nid
    oid=$(python3 "$HERE/mkimage.py" "$w/old-image.tar" "bench/$name:old" "$OUT/base.tar" "${old[@]}")
    nid=$(python3 "$HERE/mkimage.py" "$w/new-image.tar" "bench/$name:new" "$OUT/base.tar" "${new[@]}")
    printf 'old\t%s\nnew\t%s\n' "$oid" "$nid" >"$w/ids.txt"
    # layers.txt: the non-base layers of each image, in order, relative to
    # the corpus dir; bench/run.sh diffs their concatenations with the CLIs.
    {
        for a in "${old[@]}"; do printf 'old\t%s\n' "$(rel "$a")"; done
        for a in "${new[@]}"; do printf 'new\t%s\n' "$(rel "$a")"; done
    } >"$w/layers.txt"
}

rel() { # PATH under $OUT (possibly in a PAIR.tmp dir) -> PAIR/FILE
    local r=${1#"$OUT"/}
    local d=${r%%/*}
    printf '%s/%s\n' "${d%.tmp}" "${r#*/}"
}

# info W TITLE: info.txt from versions.tsv and the tars present
info() {
    local w=$1 title=$2
    python3 - "$w" "$title" <<'PY' >"$w/info.txt"
import os, sys, tarfile
w, title = sys.argv[1], sys.argv[2]
name = os.path.basename(w).removesuffix(".tmp")
print("pair: %s" % name)
print(title)
print()
def mb(n): return "%.2f MB (%d bytes)" % (n / 1e6, n)
for f in ["old.tar", "new.tar", "old-image.tar", "new-image.tar"]:
    p = os.path.join(w, f)
    if os.path.exists(p):
        extra = ""
        if f in ("old.tar", "new.tar"):
            with tarfile.open(p) as t:
                ms = t.getmembers()
            extra = ", %d members, %d regular files" % (len(ms), sum(m.isfile() for m in ms))
        print("%-14s %s%s" % (f, mb(os.path.getsize(p)), extra))
ids = os.path.join(w, "ids.txt")
if os.path.exists(ids):
    for line in open(ids):
        k, v = line.split()
        print("%s image ID: %s" % (k, v))
print()
print("versions (name, old, new; suites where known):")
for line in open(os.path.join(w, "versions.tsv")):
    print("  " + "  ".join(line.rstrip("\n").split("\t")))
PY
}

# ---------------------------------------------------------------- debian
# For each package: old/new = the two newest versions apt knows from
# bookworm and bookworm-security, old = the older. For openssl, python and
# perl that is bookworm point release -> bookworm-security; for libc6, git and
# curl the point release has overtaken the security suite, so it runs the
# other way (security -> newer point release). Still one real update each.
debian_versions() { # -> lines "pkg old old_suite new new_suite"
    local p vers
    for p in "${DEB_PKGS[@]}"; do
        mapfile -t vers < <(versions "$p" | grep -P '\tbookworm(-security)?$' | head -n2)
        (( ${#vers[@]} == 2 )) || die "$p: fewer than two bookworm versions known to apt"
        printf '%s\t%s\t%s\n' "$p" "${vers[1]}" "${vers[0]}"
    done
}

# extract_debs DIR VERSIONS_TSV SIDE(old|new) [PKG...]: dpkg-deb -x each
# package's SIDE version into DIR (all packages of the tsv if none named).
extract_debs() {
    local dir=$1 tsv=$2 side=$3; shift 3
    local want=" $* " p ov os nv ns v deb
    while IFS=$'\t' read -r p ov os nv ns; do
        if (( $# > 0 )) && [[ $want != *" $p "* ]]; then continue; fi
        if [[ $side == old ]]; then v=$ov; else v=$nv; fi
        deb=$(fetch_deb sys_apt "$p" "$v")
        dpkg-deb -x "$deb" "$dir"
    done <"$tsv"
}

pair_debian() {
    local tsv; tsv=$(mktemp); chmod 644 "$tsv"; debian_versions >"$tsv"
    if done_for debian "$(cat "$tsv")"; then rm -f "$tsv"; log "debian: up to date"; return; fi
    local w=$OUT/debian.tmp
    rm -rf "$w"; mkdir -p "$w"; mv "$tsv" "$w/versions.tsv"
    local side
    for side in old new; do
        log "debian: $side layer"
        new_rootfs "$w/rootfs"
        extract_debs "$w/rootfs" "$w/versions.tsv" "$side"
        finish_rootfs "$w/rootfs" "$w/$side.tar"
    done
    mkimages "$w" "$w/old.tar" -- "$w/new.tar"
    info "$w" "Debian packages, bookworm point release <-> bookworm-security (old = older version)"
    cp "$w/versions.tsv" "$w/.recipe"
    rm -rf "$OUT/debian"; mv "$w" "$OUT/debian"
    log "debian: done"; cat "$OUT/debian/info.txt" >&2
}

# ---------------------------------------------------------------- kernel
pair_kernel() {
    local recipe
    recipe=$(printf '%s\t%s\tbookworm\t%s\t%s\tbookworm-security\n' \
        "${KERNEL_OLD[0]}" "${KERNEL_OLD[1]}" "${KERNEL_NEW[0]}" "${KERNEL_NEW[1]}")
    if done_for kernel "$recipe"; then log "kernel: up to date"; return; fi
    local w=$OUT/kernel.tmp
    rm -rf "$w"; mkdir -p "$w"
    printf '%s\n' "$recipe" >"$w/versions.tsv"
    local side p v deb
    for side in old new; do
        if [[ $side == old ]]; then p=${KERNEL_OLD[0]} v=${KERNEL_OLD[1]}
        else p=${KERNEL_NEW[0]} v=${KERNEL_NEW[1]}; fi
        log "kernel: $side layer ($p $v)"
        new_rootfs "$w/rootfs"
        deb=$(fetch_deb sys_apt "$p" "$v")
        dpkg-deb -x "$deb" "$w/rootfs"
        finish_rootfs "$w/rootfs" "$w/$side.tar"
    done
    mkimages "$w" "$w/old.tar" -- "$w/new.tar"
    info "$w" "Linux kernel image package; /lib/modules/6.1.0-50-amd64 becomes /lib/modules/6.1.0-56-amd64"
    printf '%s\n' "$recipe" >"$w/.recipe"
    rm -rf "$OUT/kernel"; mv "$w" "$OUT/kernel"
    log "kernel: done"; cat "$OUT/kernel/info.txt" >&2
}

# ---------------------------------------------------------------- tools
# Private apt for trixie, the way scripts/install-deps.sh does it: the
# system's main Debian source (URI, components, keyring) with suite trixie,
# and every apt state/cache path under .cache/apt-trixie.
# system_debian_source [all]: "URI|COMPONENTS|SIGNED-BY" of the system's main
# Debian source for its release; with "all", "deb [signed-by=...] URI SUITE
# COMPONENTS" lines for each of RELEASE, RELEASE-updates, RELEASE-security.
system_debian_source() {
    local codename
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    python3 - "$codename" "${1:-}" <<'PY'
import glob, re, sys
codename, mode = sys.argv[1], sys.argv[2]
cands = []
for f in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    for stanza in re.split(r"\n\s*\n", open(f).read()):
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
if mode == "all":
    want = [codename, codename + "-updates", codename + "-security"]
    out = []
    for uri, suites, comps, sb in cands:
        if sb.startswith("-----BEGIN"):
            sb = ""
        sb = sb or "/usr/share/keyrings/debian-archive-keyring.gpg"
        for suite in suites:
            if suite in want:
                out.append("deb [signed-by=%s] %s %s %s" % (sb, uri, suite, " ".join(comps)))
    if not out:
        sys.exit("no Debian source for suite %r found" % codename)
    print("\n".join(out))
    sys.exit(0)
for uri, suites, comps, sb in cands:
    if codename in suites and "security" not in uri:
        if sb.startswith("-----BEGIN"):
            sb = ""
        print(f"{uri}|{' '.join(comps)}|{sb}")
        sys.exit(0)
sys.exit("no Debian source for suite %r found" % codename)
PY
}

setup_trixie() {
    if [[ -e $APTDIR/.updated ]]; then return 0; fi
    local src uri comps signedby
    src=$(system_debian_source) || die "cannot derive a Debian source from /etc/apt"
    IFS='|' read -r uri comps signedby <<<"$src"
    [[ -n $signedby ]] || signedby=/usr/share/keyrings/debian-archive-keyring.gpg
    mkdir -p "$APTDIR"/{sources.list.d,preferences.d,state/lists/partial,cache/archives/partial}
    : >"$APTDIR/preferences"
    [[ -e $APTDIR/state/status ]] || : >"$APTDIR/state/status"
    printf 'deb [signed-by=%s] %s %s %s\n' "$signedby" "$uri" "$TRIXIE_SUITE" "$comps" \
        >"$APTDIR/sources.list"
    log "tools: private apt-get update for $TRIXIE_SUITE ($uri)"
    trixie_apt update -qq || die "private apt-get update ($TRIXIE_SUITE) failed"
    date -u +%FT%TZ >"$APTDIR/.updated"
}

# debpair NAME TITLE OLD_APT OLD_CACHE NEW_APT NEW_CACHE ARCH ENTRY...: a
# pair of layers, each `dpkg-deb -x` of the ENTRY packages, old = the
# bookworm candidate (via OLD_CACHE/OLD_APT), new = the trixie one. ENTRY is
# "bookworm-name:trixie-name" or one name for both; "-:name" is a package
# only the new layer has (split out in trixie). ARCH: "" for the native
# amd64, or an architecture the two apts are set up for (download pkg:ARCH).
# versions.tsv: name old suite trixie-name new suite ("-" where absent).
debpair() {
    local name=$1 title=$2 oapt=$3 ocache=$4 napt=$5 ncache=$6 arch=$7; shift 7
    local tsv; tsv=$(mktemp); chmod 644 "$tsv"
    local e bn tn ov nv bns=() tns=()
    for e in "$@"; do
        bn=${e%%:*}; tn=${e#*:}
        [[ $bn == - ]] || bns+=("$bn")
        tns+=("$tn")
    done
    # One madison call per side (each call parses the whole package list):
    # newest version per package = what apt would install (all pins equal).
    declare -A bv tv
    if (( ${#bns[@]} )); then
        while read -r n v; do [[ -n ${bv[$n]:-} ]] || bv[$n]=$v; done \
            < <("$ocache" madison "${bns[@]}" 2>/dev/null | awk -F'|' '{gsub(/ /,"",$1); gsub(/ /,"",$2); print $1, $2}')
    fi
    while read -r n v; do [[ -n ${tv[$n]:-} ]] || tv[$n]=$v; done \
        < <("$ncache" madison "${tns[@]}" 2>/dev/null | awk -F'|' '{gsub(/ /,"",$1); gsub(/ /,"",$2); print $1, $2}')
    for e in "$@"; do
        bn=${e%%:*}; tn=${e#*:}
        nv=${tv[$tn]:-}
        if [[ -z $nv ]]; then log "$name: skip $tn (not in trixie)"; continue; fi
        if [[ $bn == - ]]; then
            printf -- '-\t-\t-\t%s\t%s\ttrixie\n' "$tn" "$nv" >>"$tsv"; continue
        fi
        ov=${bv[$bn]:-}
        if [[ -z $ov ]]; then log "$name: skip $bn (not in bookworm)"; continue; fi
        printf '%s\t%s\tbookworm\t%s\t%s\ttrixie\n' "$bn" "$ov" "$tn" "$nv" >>"$tsv"
    done
    [[ -s $tsv ]] || die "$name: no packages found"
    if done_for "$name" "$(cat "$tsv")"; then rm -f "$tsv"; log "$name: up to date"; return; fi
    local w=$OUT/$name.tmp sfx=${arch:+:$arch}
    rm -rf "$w"; mkdir -p "$w"; mv "$tsv" "$w/versions.tsv"
    local side deb
    for side in old new; do
        log "$name: $side layer"
        new_rootfs "$w/rootfs"
        while IFS=$'\t' read -r bn ov _ tn nv _; do
            if [[ $side == old ]]; then
                [[ $bn == - ]] && continue
                deb=$(fetch_deb "$oapt" "$bn$sfx" "$ov")
                dpkg-deb -x "$deb" "$w/rootfs"
            else
                deb=$(fetch_deb "$napt" "$tn$sfx" "$nv")
                dpkg-deb -x "$deb" "$w/rootfs"
            fi
        done <"$w/versions.tsv"
        finish_rootfs "$w/rootfs" "$w/$side.tar"
    done
    mkimages "$w" "$w/old.tar" -- "$w/new.tar"
    info "$w" "$title"
    cp "$w/versions.tsv" "$w/.recipe"
    rm -rf "${OUT:?}/$name"; mv "$w" "$OUT/$name"
    log "$name: done"; cat "$OUT/$name/info.txt" >&2
}

pair_tools() {
    setup_trixie
    debpair tools "A tools layer: bookworm candidate versions -> trixie versions (columns: name old suite trixie-name new suite)" \
        sys_apt apt-cache trixie_apt trixie_cache "" "${TOOLS[@]}"
}

# ---------------------------------------------------------------- go
pair_go() {
    setup_trixie
    debpair go "A container engine: docker.io, containerd, runc (large static Go binaries), bookworm -> trixie; trixie splits docker-cli out of docker.io" \
        sys_apt apt-cache trixie_apt trixie_cache "" "${GO_PKGS[@]}"
}

# ---------------------------------------------------------------- jvm
pair_jvm() {
    setup_trixie
    debpair jvm "A JVM application's jars: Debian Java library packages as shipped, bookworm -> trixie" \
        sys_apt apt-cache trixie_apt trixie_cache "" "${JVM_PKGS[@]}"
}

# ---------------------------------------------------------------- arm64
# Two more private apts whose only architecture is arm64: the system's
# Debian release (with -updates and -security, as the system apt has them),
# and trixie. Same packages as the tools pair, so versions match it where
# the arm64 build has the same version.
ARM64_OLD_APTDIR=$CACHE/apt-arm64-bookworm
ARM64_NEW_APTDIR=$CACHE/apt-arm64-trixie

# setup_private_apt DIR ARCH SOURCES: (re)create DIR's config and run
# apt-get update, unless it was done with the same ARCH and SOURCES.
setup_private_apt() {
    local d=$1 arch=$2 sources=$3
    if [[ -e $d/.updated && "$(cat "$d/arch" 2>/dev/null)" == "$arch" \
          && "$(cat "$d/sources.list" 2>/dev/null)" == "$sources" ]]; then
        return 0
    fi
    rm -f "$d/.updated"
    mkdir -p "$d"/{sources.list.d,preferences.d,state/lists/partial,cache/archives/partial}
    : >"$d/preferences"
    [[ -e $d/state/status ]] || : >"$d/state/status"
    printf '%s\n' "$arch" >"$d/arch"
    printf '%s\n' "$sources" >"$d/sources.list"
    log "private apt-get update ($(basename "$d"), $arch)"
    private_apt apt-get "$d" update -qq || die "private apt-get update in $d failed"
    date -u +%FT%TZ >"$d/.updated"
}

setup_arm64() {
    local src uri comps signedby
    src=$(system_debian_source all) || die "cannot derive the Debian sources from /etc/apt"
    setup_private_apt "$ARM64_OLD_APTDIR" arm64 "$src"
    src=$(system_debian_source) || die "cannot derive a Debian source from /etc/apt"
    IFS='|' read -r uri comps signedby <<<"$src"
    [[ -n $signedby ]] || signedby=/usr/share/keyrings/debian-archive-keyring.gpg
    setup_private_apt "$ARM64_NEW_APTDIR" arm64 \
        "$(printf 'deb [signed-by=%s] %s %s %s' "$signedby" "$uri" "$TRIXIE_SUITE" "$comps")"
}
arm64_old_apt() { private_apt apt-get "$ARM64_OLD_APTDIR" "$@"; }
arm64_old_cache() { private_apt apt-cache "$ARM64_OLD_APTDIR" "$@"; }
arm64_new_apt() { private_apt apt-get "$ARM64_NEW_APTDIR" "$@"; }
arm64_new_cache() { private_apt apt-cache "$ARM64_NEW_APTDIR" "$@"; }

pair_arm64() {
    setup_arm64
    debpair arm64 "The tools pair's packages for arm64: bookworm candidate versions -> trixie versions (columns: name old suite trixie-name new suite)" \
        arm64_old_apt arm64_old_cache arm64_new_apt arm64_new_cache arm64 "${TOOLS[@]}"
}

# ---------------------------------------------------------------- wheels
# extract_wheels SIDE DIR [TAG SPEC...]: unzip SIDE's wheels into DIR's
# site-packages; with TAG, the wheels are SPECs, downloaded into
# .cache/wheels/TAG-SIDE (the wheels pair's own are in .cache/wheels/SIDE).
extract_wheels() {
    local side=$1 dir=$2 specs dl
    if (( $# > 2 )); then
        dl=$CACHE/wheels/$3-$side; specs=("${@:4}")
    else
        dl=$CACHE/wheels/$side
        if [[ $side == old ]]; then specs=("${WHEELS_OLD[@]}"); else specs=("${WHEELS_NEW[@]}"); fi
    fi
    mkdir -p "$dl"
    if [[ ! -e $dl/.done ]] || [[ "$(cat "$dl/.done")" != "${specs[*]}" ]]; then
        log "pip download ($side): ${specs[*]}"
        rm -f "$dl"/*.whl
        python3 -m pip download -q --disable-pip-version-check --no-deps \
            --only-binary=:all: --python-version 3.11 --implementation cp \
            --abi cp311 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
            -d "$dl" "${specs[@]}" || die "pip download failed"
        echo "${specs[*]}" >"$dl/.done"
    fi
    local sp=$dir/usr/local/lib/python3.11/site-packages whl
    mkdir -p "$sp"
    for whl in "$dl"/*.whl; do
        python3 -m zipfile -e "$whl" "$sp"
    done
}

pair_wheels() {
    local recipe
    recipe=$(printf '%s\n' "${WHEELS_OLD[@]}" | paste - <(printf '%s\n' "${WHEELS_NEW[@]}"))
    if done_for wheels "$recipe"; then log "wheels: up to date"; return; fi
    local w=$OUT/wheels.tmp side
    rm -rf "$w"; mkdir -p "$w"
    printf '%s\n' "$recipe" >"$w/versions.tsv"
    for side in old new; do
        log "wheels: $side layer"
        new_rootfs "$w/rootfs"
        extract_wheels "$side" "$w/rootfs"
        finish_rootfs "$w/rootfs" "$w/$side.tar"
    done
    mkimages "$w" "$w/old.tar" -- "$w/new.tar"
    info "$w" "An app layer: PyPI wheels (CPython 3.11, manylinux x86_64) unzipped into /usr/local/lib/python3.11/site-packages"
    printf '%s\n' "$recipe" >"$w/.recipe"
    rm -rf "$OUT/wheels"; mv "$w" "$OUT/wheels"
    log "wheels: done"; cat "$OUT/wheels/info.txt" >&2
}

# ---------------------------------------------------------------- ml
pair_ml() {
    local recipe
    recipe=$(printf '%s\n' "${ML_OLD[@]}" | paste - <(printf '%s\n' "${ML_NEW[@]}"))
    if done_for ml "$recipe"; then log "ml: up to date"; return; fi
    local w=$OUT/ml.tmp side
    rm -rf "$w"; mkdir -p "$w"
    printf '%s\n' "$recipe" >"$w/versions.tsv"
    for side in old new; do
        log "ml: $side layer"
        new_rootfs "$w/rootfs"
        if [[ $side == old ]]; then extract_wheels old "$w/rootfs" ml "${ML_OLD[@]}"
        else extract_wheels new "$w/rootfs" ml "${ML_NEW[@]}"; fi
        finish_rootfs "$w/rootfs" "$w/$side.tar"
    done
    mkimages "$w" "$w/old.tar" -- "$w/new.tar"
    info "$w" "An ML/Python layer: numeric stack wheels (CPython 3.11, manylinux x86_64) unzipped into /usr/local/lib/python3.11/site-packages"
    printf '%s\n' "$recipe" >"$w/.recipe"
    rm -rf "${OUT:?}/ml"; mv "$w" "$OUT/ml"
    log "ml: done"; cat "$OUT/ml/info.txt" >&2
}

# ---------------------------------------------------------------- node
# node_install SIDE DIR SPEC...: npm install SPECs (name@version) into
# DIR/node_modules, from the package.json written here. If it equals
# bench/node-app/SIDE/package.json, `npm ci` on the lock there; otherwise npm
# resolves the tree and the package.json and lock are saved there (to be
# committed). Tarballs are cached in .cache/npm.
node_install() {
    local side=$1 dir=$2; shift 2
    local locks=$HERE/node-app/$side
    mkdir -p "$locks" "$dir"
    python3 - "$@" >"$dir/package.json" <<'PY'
import json, sys
deps = {}
for spec in sys.argv[1:]:
    name, _, ver = spec.rpartition("@")
    deps[name] = ver
print(json.dumps({"name": "bench-app", "version": "1.0.0", "private": True,
                  "dependencies": dict(sorted(deps.items()))}, indent=2))
PY
    local npm_opts=(--ignore-scripts --no-audit --no-fund --no-update-notifier
                    --loglevel=error --cache "$CACHE/npm")
    if [[ -s $locks/package-lock.json ]] && cmp -s "$dir/package.json" "$locks/package.json"; then
        log "node: npm ci ($side, lock sha256 $(sha256sum <"$locks/package-lock.json" | cut -c1-12))"
        cp "$locks/package-lock.json" "$dir/package-lock.json"
        (cd "$dir" && npm ci "${npm_opts[@]}" >&2) || die "npm ci failed ($side)"
    else
        log "node: npm install ($side): $* (new lock: commit bench/node-app/$side/)"
        cp "$dir/package.json" "$locks/package.json.tmp"
        (cd "$dir" && npm install "${npm_opts[@]}" >&2) || die "npm install failed ($side)"
        cp "$dir/package-lock.json" "$locks/package-lock.json"
        mv "$locks/package.json.tmp" "$locks/package.json"
    fi
}

pair_node() {
    command -v npm >/dev/null || die "missing tool: npm (Node.js and npm, e.g. Debian's nodejs + npm)"
    local recipe
    recipe=$(printf '%s\n' "${NODE_OLD[@]}" | paste - <(printf '%s\n' "${NODE_NEW[@]}"))
    if done_for node "$recipe"; then log "node: up to date"; return; fi
    local w=$OUT/node.tmp side
    rm -rf "$w"; mkdir -p "$w"
    printf '%s\n' "$recipe" >"$w/versions.tsv"
    for side in old new; do
        log "node: $side layer"
        new_rootfs "$w/rootfs"
        if [[ $side == old ]]; then node_install old "$w/rootfs/app" "${NODE_OLD[@]}"
        else node_install new "$w/rootfs/app" "${NODE_NEW[@]}"; fi
        cp "$w/rootfs/app/package-lock.json" "$w/$side-package-lock.json"
        finish_rootfs "$w/rootfs" "$w/$side.tar"
    done
    mkimages "$w" "$w/old.tar" -- "$w/new.tar"
    info "$w" "A Node application: /app/node_modules from npm (npm $(npm --version), --ignore-scripts), top-level packages pinned old -> new; full trees in old-/new-package-lock.json (= bench/node-app/*/package-lock.json)"
    printf '%s\n' "$recipe" >"$w/.recipe"
    rm -rf "${OUT:?}/node"; mv "$w" "$OUT/node"
    log "node: done"; cat "$OUT/node/info.txt" >&2
}

# ---------------------------------------------------------------- multilayer
# old image: [base, A = libc6/libssl3/openssl/perl-base (old),
#             B = python/git/curl (old), wheels (old)]
# new image: [base, wheels (new), A+B merged into one layer (new)]
# So the wheels layer moved from last to second and the two Debian layers
# became one. The merged new layer is byte-identical to debian/new.tar and
# the new wheels layer to wheels/new.tar (they are built the same way), so
# their files are reused; the old split layers A and B are built here.
pair_multilayer() {
    [[ -s $OUT/debian/new.tar && -s $OUT/wheels/new.tar ]] \
        || die "multilayer needs the debian and wheels pairs first"
    local recipe
    recipe=$(cat "$OUT/debian/.recipe" "$OUT/wheels/.recipe"; echo "A: ${ML_LAYER_A[*]}"; echo "B: ${ML_LAYER_B[*]}")
    if done_for multilayer "$recipe"; then log "multilayer: up to date"; return; fi
    local w=$OUT/multilayer.tmp
    rm -rf "$w"; mkdir -p "$w"
    cat "$OUT/debian/versions.tsv" "$OUT/wheels/versions.tsv" >"$w/versions.tsv"
    log "multilayer: old layer A (${ML_LAYER_A[*]})"
    new_rootfs "$w/rootfs"
    extract_debs "$w/rootfs" "$OUT/debian/versions.tsv" old "${ML_LAYER_A[@]}"
    finish_rootfs "$w/rootfs" "$w/old-a.tar"
    log "multilayer: old layer B (${ML_LAYER_B[*]})"
    new_rootfs "$w/rootfs"
    extract_debs "$w/rootfs" "$OUT/debian/versions.tsv" old "${ML_LAYER_B[@]}"
    finish_rootfs "$w/rootfs" "$w/old-b.tar"
    mkimages "$w" "$w/old-a.tar" "$w/old-b.tar" "$OUT/wheels/old.tar" \
        -- "$OUT/wheels/new.tar" "$OUT/debian/new.tar"
    # The layer tars are inside the images; keep only the two made here
    # (the others are debian/ and wheels/ files) to save disk.
    info "$w" "Multi-layer: old [base, A=${ML_LAYER_A[*]}, B=${ML_LAYER_B[*]}, wheels-old]
new [base, wheels-new, A+B merged (new versions)]
old-a.tar/old-b.tar: the old Debian layers; the others are ../wheels/old.tar, ../wheels/new.tar, ../debian/new.tar"
    printf '%s\n' "$recipe" >"$w/.recipe"
    rm -rf "$OUT/multilayer"; mv "$w" "$OUT/multilayer"
    log "multilayer: done"; cat "$OUT/multilayer/info.txt" >&2
}

# ---------------------------------------------------------------- main
build_base
for p in $PAIRS; do
    declare -F "pair_$p" >/dev/null || die "unknown pair: $p"
    "pair_$p"
done
log "corpus ready in $OUT"
