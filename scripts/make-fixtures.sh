#!/usr/bin/env bash
# Build the test images with real tools and write them in every source
# format docker-delta must read, plus OUTDIR/expected.json (the oracle, from
# skopeo) and OUTDIR/images.env (image IDs on both engines).
#
# Usage: scripts/make-fixtures.sh [OUTDIR]   (default tests/fixtures/generated)
#
# Idempotent: skipped when OUTDIR/.complete holds this script's hash.
# Needs the engines (starts them with engines.sh start when they are down,
# and leaves them running).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
SELF=$REPO/scripts/make-fixtures.sh
OUTDIR=${1:-${DOCKER_DELTA_FIXTURES:-$REPO/tests/fixtures/generated}}
MARKER=.make-fixtures

log() { printf '[fixtures] %s\n' "$*" >&2; }
die() { printf '[fixtures] ERROR: %s\n' "$*" >&2; exit 1; }

mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
HASH=$(sha256sum "$SELF" | cut -d' ' -f1)

if [ -f "$OUTDIR/.complete" ] && [ "$(cat "$OUTDIR/.complete")" = "$HASH" ]; then
    log "up to date in $OUTDIR (script hash ${HASH:0:12})"
    exit 0
fi
# Only ever clean a directory this script made (or an empty one).
if [ -n "$(ls -A "$OUTDIR")" ] && [ ! -e "$OUTDIR/$MARKER" ]; then
    die "$OUTDIR is not empty and was not made by this script; refusing to clean it"
fi
log "building fixtures in $OUTDIR"
find "$OUTDIR" -mindepth 1 -delete
touch "$OUTDIR/$MARKER"

for t in skopeo umoci python3 gzip tar; do
    command -v "$t" >/dev/null || die "$t not found; run scripts/install-deps.sh"
done

"$REPO/scripts/engines.sh" start
eval "$("$REPO/scripts/engines.sh" env)"

# dk ENGINE ARGS...: the engine's own client, always with an explicit -H
# (/usr/local/bin/docker may be some other client version).
dk() {
    local e=$1; shift
    case "$e" in
        d20) DOCKER_BUILDKIT=0 "$DOCKER_DELTA_TEST_DOCKER20_CLI" -H "$DOCKER_DELTA_TEST_DOCKER20" "$@" ;;
        d26) DOCKER_BUILDKIT=0 "$DOCKER_DELTA_TEST_DOCKER26_CLI" -H "$DOCKER_DELTA_TEST_DOCKER26" "$@" ;;
    esac
}
sk() { skopeo --insecure-policy "$@"; }

WORK=$(mktemp -d /tmp/dd-fixtures.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
CTX=$WORK/ctx

# ---------------------------------------------------------------------------
# Build context: deterministic pseudo-random content, real ELF binaries,
# text, a symlink, a hard link, an empty file, an executable, a 0600 file.
# old = base + app1 + conf          (3 layers)
# new = base + app2 + conf + extra  (4 layers; base shared, app modified:
#       files changed / added / removed / renamed; conf same content at a
#       different position; one extra layer)
# ---------------------------------------------------------------------------
log "writing build context"
python3 - "$CTX" <<'PY'
import os, random, shutil, sys, json
ctx = sys.argv[1]
rnd = random.Random(20240501)
WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi "
         "omicron pi rho sigma tau upsilon phi chi psi omega layer image delta tar "
         "blob digest manifest config docker engine container registry").split()

def text(n_lines, r=rnd):
    return "".join(" ".join(r.choice(WORDS) for _ in range(r.randint(4, 14))) + "\n"
                   for _ in range(n_lines))

def w(path, data, mode=0o644):
    p = os.path.join(ctx, path)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
    os.chmod(p, mode)

def cp(src, path, mode=0o755):
    p = os.path.join(ctx, path)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    shutil.copyfile(src, p)
    os.chmod(p, mode)

# --- base (shared) ---
cp("/usr/bin/tini", "base/bin/tini")
os.symlink("tini", os.path.join(ctx, "base/bin/init"))
w("base/etc/os-release", 'PRETTY_NAME="dd-test 1"\nID=ddtest\n')
w("base/etc/passwd", "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/app:/bin/false\n")
w("base/etc/group", "root:x:0:\napp:x:1000:\n")
w("base/etc/motd", text(30))
os.link(os.path.join(ctx, "base/etc/motd"), os.path.join(ctx, "base/etc/motd.hardlink"))
w("base/etc/empty", "")
w("base/etc/secret", "not really secret\n", 0o600)
w("base/usr/share/doc/dd-test/README", text(600))
os.makedirs(os.path.join(ctx, "base/var/lib/dd"))
os.makedirs(os.path.join(ctx, "base/tmp"))
os.chmod(os.path.join(ctx, "base/tmp"), 0o1777)

# --- app1 (old) ---
xd = open("/usr/bin/xdelta3", "rb").read()
cp("/usr/bin/xdelta3", "app1/bin/app")
cp("/usr/bin/true", "app1/bin/helper")
data1 = bytes(rnd.getrandbits(8) for _ in range(96 * 1024))
w("app1/lib/data.bin", data1)
words1 = text(1800).splitlines(keepends=True)
w("app1/lib/words.txt", "".join(words1))
os.link(os.path.join(ctx, "app1/lib/words.txt"), os.path.join(ctx, "app1/lib/words-copy.txt"))
statics = {f"app1/share/static/file{i:02d}.js": "// file %d\n" % i + text(60) for i in range(20)}
for p, t in statics.items():
    w(p, t)
w("app1/config/defaults.json", json.dumps({"version": 1, "workers": 4, "features": ["a", "b"]}, indent=2) + "\n")
w("app1/remove-me.txt", text(40))
os.symlink("bin/app", os.path.join(ctx, "app1/link"))

# --- app2 (new): same tree, modified ---
xd2 = bytearray(xd)
r2 = random.Random(7)
for _ in range(300):                      # scattered byte edits ("rebuild")
    i = r2.randrange(len(xd2)); xd2[i] = r2.getrandbits(8)
mid = len(xd2) // 2
xd2[mid:mid] = bytes(r2.getrandbits(8) for _ in range(4096))   # inserted code
w("app2/bin/app", bytes(xd2), 0o755)
cp("/usr/bin/false", "app2/bin/helper")
d2 = bytearray(data1)
for off in (1000, 40000, 80000):
    d2[off:off + 512] = bytes(r2.getrandbits(8) for _ in range(512))
d2 += bytes(r2.getrandbits(8) for _ in range(16 * 1024))
w("app2/lib/data.bin", bytes(d2))
words2 = list(words1)
for i in range(0, len(words2), 97):
    words2[i] = "EDITED " + words2[i]
words2[900:900] = text(120, r2).splitlines(keepends=True)
w("app2/lib/words.txt", "".join(words2))
os.link(os.path.join(ctx, "app2/lib/words.txt"), os.path.join(ctx, "app2/lib/words-copy.txt"))
for p, t in statics.items():
    p2 = p.replace("app1/", "app2/")
    if p.endswith("file03.js") or p.endswith("file11.js"):
        t = t.replace("alpha", "ALPHA")
    if p.endswith("file07.js"):          # renamed into a subdirectory
        p2 = "app2/share/static/v2/file07.js"
    w(p2, t)
for i in range(20, 23):
    w(f"app2/share/static/file{i:02d}.js", "// file %d\n" % i + text(60, r2))
w("app2/config/defaults.json", json.dumps({"version": 2, "workers": 8, "features": ["a", "b", "c"]}, indent=2) + "\n")
w("app2/new-file.txt", text(40, r2))
os.symlink("bin/app", os.path.join(ctx, "app2/link"))

# --- conf (same in both) and extra (new only) ---
w("conf/app.conf", "listen = 0.0.0.0:8080\nlog = info\n")
w("extra/notes.txt", text(500, r2))
w("extra/manifest.json", json.dumps({"extra": True}) + "\n")

common = 'LABEL org.opencontainers.image.title="dd-test app"\nENV APP_HOME=/app\nWORKDIR /app\nCMD ["/bin/tini", "--", "/app/bin/app"]\n'
open(os.path.join(ctx, "Dockerfile.old"), "w").write(
    "FROM scratch\nCOPY base/ /\nCOPY app1/ /app/\nCOPY conf/ /etc/app/\n" + common + 'LABEL version="1"\n')
open(os.path.join(ctx, "Dockerfile.new"), "w").write(
    "FROM scratch\nCOPY base/ /\nCOPY app2/ /app/\nCOPY conf/ /etc/app/\nCOPY extra/ /opt/extra/\n" + common + 'LABEL version="2"\n')
PY
# Fixed mtimes so the layer contents do not depend on when this ran.
find "$CTX" -exec touch -h -d @1700000000 {} +

# ---------------------------------------------------------------------------
# Build on both engines and save
# ---------------------------------------------------------------------------
: >"$OUTDIR/images.env"
for e in d20 d26; do
    log "$e: docker build dd-test/app:1 and :2 (legacy builder)"
    dk "$e" build -q -f "$CTX/Dockerfile.old" -t dd-test/app:1 "$CTX" >/dev/null
    dk "$e" build -q -f "$CTX/Dockerfile.new" -t dd-test/app:2 "$CTX" >/dev/null
    E=$(echo "$e" | tr a-z A-Z)
    {
        echo "${E}_OLD_ID=$(dk "$e" image inspect -f '{{.Id}}' dd-test/app:1)"
        echo "${E}_NEW_ID=$(dk "$e" image inspect -f '{{.Id}}' dd-test/app:2)"
    } >>"$OUTDIR/images.env"
    mkdir -p "$OUTDIR/$e"
    log "$e: docker save"
    dk "$e" save -o "$OUTDIR/$e/old.tar" dd-test/app:1
    dk "$e" save -o "$OUTDIR/$e/new.tar" dd-test/app:2
done
# shellcheck disable=SC1091
. "$OUTDIR/images.env"

log "d20: multi-image, by-id and gzip'd archives"
dk d20 save -o "$OUTDIR/d20/multi.tar" dd-test/app:1 dd-test/app:2
dk d20 save -o "$OUTDIR/d20/byid.tar" "$D20_NEW_ID"
gzip -9 -n -c "$OUTDIR/d20/new.tar" >"$OUTDIR/d20/new.tar.gz"

log "skopeo: docker-archive, oci (gzip, plain, zstd), oci-archive"
mkdir -p "$OUTDIR/skopeo" "$OUTDIR/oci" "$OUTDIR/oci-archive"
for pair in old:1 new:2; do
    n=${pair%%:*}; t=${pair#*:}
    src="docker-archive:$OUTDIR/d20/$n.tar"
    sk copy -q "$src" "docker-archive:$OUTDIR/skopeo/$n.docker.tar:dd-test/app:$t"
    sk copy -q "$src" "oci:$OUTDIR/oci/gzip:$n"
    # oci/plain: skopeo's docker-archive source labels its (uncompressed)
    # layers as gzip, and --dest-decompress only acts on dir:, so copying
    # straight to oci: gives plain tar blobs *labelled* tar+gzip. Go through
    # dir: so the media types are rewritten to plain ...layer.v1.tar.
    mkdir -p "$WORK/dir-$n"
    sk copy -q --dest-decompress "oci:$OUTDIR/oci/gzip:$n" "dir:$WORK/dir-$n"
    sk copy -q --dest-oci-accept-uncompressed-layers "dir:$WORK/dir-$n" "oci:$OUTDIR/oci/plain:$n"
    sk copy -q --dest-compress --dest-compress-format zstd "$src" "oci:$OUTDIR/oci/zstd:$n"
    sk copy -q "$src" "oci-archive:$OUTDIR/oci-archive/$n.tar:$n"
done

log "umoci: init/new/insert/config"
U=$OUTDIR/umoci
umoci init --layout "$U"
umoci new --image "$U:v1"
umoci insert --image "$U:v1" "$CTX/base" /
umoci insert --image "$U:v1" "$CTX/app1" /app
umoci config --image "$U:v1" --author "dd-test" --config.cmd /bin/tini \
    --config.env APP_HOME=/app --config.workingdir /app --config.label version=1
# v2 = v1 + a layer from `umoci repack` with a whiteout (a deleted file)
# and a modified file: COPY-only builds never produce whiteouts.
umoci unpack --image "$U:v1" "$WORK/bundle" >/dev/null
rm "$WORK/bundle/rootfs/app/remove-me.txt"
echo '// patched' >>"$WORK/bundle/rootfs/app/share/static/file01.js"
umoci repack --image "$U:v2" "$WORK/bundle"
umoci gc --layout "$U"

log "pre-1.10 archive: legacy save without manifest.json"
mkdir -p "$OUTDIR/legacy"
# (python, not `tar --delete`: GNU tar 1.34 --delete on this archive also
# dropped `repositories` and corrupted the last layer.tar)
python3 - "$OUTDIR/d20/old.tar" "$OUTDIR/legacy/old.tar" <<'PY'
import sys, tarfile
src, dst = sys.argv[1:]
with tarfile.open(src) as t, tarfile.open(dst, "w", format=tarfile.PAX_FORMAT) as out:
    for m in t.getmembers():
        if m.name.lstrip("./") == "manifest.json":
            continue
        out.addfile(m, t.extractfile(m) if m.isfile() else None)
PY

# ---------------------------------------------------------------------------
# Hand-written layouts (python): crane-like archive and a multi-arch layout.
# ---------------------------------------------------------------------------
# No crane / go-containerregistry package exists in Debian, so the crane-like
# archive is written here from skopeo's archive the way crane's tarball writer
# lays it out: config named "sha256:<hex>", layers gzip'd as "<gz hex>.tar.gz"
# at the root, no repositories file or legacy <id>/ dirs.
log "crane-like archive (python, from skopeo's docker-archive)"
mkdir -p "$OUTDIR/crane"
python3 - "$OUTDIR/skopeo/new.docker.tar" "$OUTDIR/crane/new.tar" <<'PY'
import gzip, hashlib, io, json, sys, tarfile
src, dst = sys.argv[1:]
with tarfile.open(src) as t:
    def read(name):
        m = t.getmember(name)
        while m.issym():   # skopeo's legacy dirs symlink to the root files
            m = t.getmember(m.linkname)
        return t.extractfile(m).read()
    man = json.loads(read("manifest.json"))
    assert len(man) == 1
    cfg = read(man[0]["Config"])
    layers = [read(l) for l in man[0]["Layers"]]
files = []
cfg_name = "sha256:" + hashlib.sha256(cfg).hexdigest()
files.append((cfg_name, cfg))
names = []
for l in layers:
    gz = gzip.compress(l, compresslevel=6, mtime=0)
    name = hashlib.sha256(gz).hexdigest() + ".tar.gz"
    names.append(name)
    files.append((name, gz))
m = [{"Config": cfg_name, "RepoTags": ["dd-test/app:2"], "Layers": names}]
files.append(("manifest.json", json.dumps(m).encode()))
with tarfile.open(dst, "w", format=tarfile.USTAR_FORMAT) as out:
    for name, data in files:
        ti = tarfile.TarInfo(name)
        ti.size, ti.mode, ti.mtime = len(data), 0o644, 0
        out.addfile(ti, io.BytesIO(data))
PY

# Multi-arch layout: index.json -> nested image index with
#   linux/amd64  the real image (skopeo's gzip manifest of :new)
#   linux/arm64  same layers, config edited to architecture arm64 (new blob)
#   linux/arm/v7 descriptor only: its blobs are intentionally MISSING, as in
#                a containerd-store save of one platform.
log "multi-arch OCI layout (python, from skopeo's oci/gzip)"
python3 - "$OUTDIR/oci/gzip" "$OUTDIR/multiarch" <<'PY'
import hashlib, json, os, shutil, sys
src, dst = sys.argv[1:]
def blob(root, d):
    return open(os.path.join(root, "blobs", *d.split(":")), "rb").read()
def put(data):
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    p = os.path.join(dst, "blobs", "sha256", d.split(":")[1])
    os.makedirs(os.path.dirname(p), exist_ok=True)
    open(p, "wb").write(data)
    return d
idx = json.loads(open(os.path.join(src, "index.json")).read())
desc = next(m for m in idx["manifests"]
            if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == "new")
man_bytes = blob(src, desc["digest"])
man = json.loads(man_bytes)
os.makedirs(dst)
shutil.copy(os.path.join(src, "oci-layout"), os.path.join(dst, "oci-layout"))
for l in man["layers"]:
    put(blob(src, l["digest"]))
put(blob(src, man["config"]["digest"]))
amd = put(man_bytes)

cfg = json.loads(blob(src, man["config"]["digest"]))
cfg["architecture"] = "arm64"
cfg_arm = json.dumps(cfg, separators=(",", ":")).encode()
man_arm = dict(man, config=dict(man["config"], digest=put(cfg_arm), size=len(cfg_arm)))
man_arm_bytes = json.dumps(man_arm, separators=(",", ":")).encode()
arm = put(man_arm_bytes)

# arm/v7: a real manifest body (so its digest/size are honest) never written.
cfg["architecture"], cfg["variant"] = "arm", "v7"
cfg_v7 = json.dumps(cfg, separators=(",", ":")).encode()
man_v7 = dict(man, config=dict(man["config"], digest="sha256:" + hashlib.sha256(cfg_v7).hexdigest(), size=len(cfg_v7)))
man_v7_bytes = json.dumps(man_v7, separators=(",", ":")).encode()

MT = "application/vnd.oci.image.manifest.v1+json"
nested = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
          "manifests": [
    {"mediaType": MT, "digest": amd, "size": len(man_bytes),
     "platform": {"architecture": "amd64", "os": "linux"}},
    {"mediaType": MT, "digest": arm, "size": len(man_arm_bytes),
     "platform": {"architecture": "arm64", "os": "linux"}},
    {"mediaType": MT, "digest": "sha256:" + hashlib.sha256(man_v7_bytes).hexdigest(),
     "size": len(man_v7_bytes), "platform": {"architecture": "arm", "os": "linux", "variant": "v7"}},
]}
nested_bytes = json.dumps(nested, separators=(",", ":")).encode()
top = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
       "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json",
                      "digest": put(nested_bytes), "size": len(nested_bytes),
                      "annotations": {"org.opencontainers.image.ref.name": "new"}}]}
open(os.path.join(dst, "index.json"), "w").write(json.dumps(top))
PY

# ---------------------------------------------------------------------------
# expected.json: the oracle, from skopeo.
# Spec lines: path|transport|ref|platform|expect_error|same_as
#   platform: os/arch[/variant] -> skopeo --override-os/arch/variant
#   expect_error: skopeo is expected to fail; fields are copied from same_as
# ---------------------------------------------------------------------------
log "expected.json (skopeo inspect)"
O=$OUTDIR
cat >"$WORK/spec" <<EOF
d20/old.tar|docker-archive|docker-archive:$O/d20/old.tar:dd-test/app:1|||
d20/new.tar|docker-archive|docker-archive:$O/d20/new.tar:dd-test/app:2|||
d26/old.tar|docker-archive|docker-archive:$O/d26/old.tar:dd-test/app:1|||
d26/new.tar|docker-archive|docker-archive:$O/d26/new.tar:dd-test/app:2|||
d26/old.tar|oci-archive|oci-archive:$O/d26/old.tar|||
d26/new.tar|oci-archive|oci-archive:$O/d26/new.tar|||
d20/multi.tar|docker-archive|docker-archive:$O/d20/multi.tar:dd-test/app:1|||
d20/multi.tar|docker-archive|docker-archive:$O/d20/multi.tar:dd-test/app:2|||
d20/multi.tar|docker-archive|docker-archive:$O/d20/multi.tar:@0|||
d20/multi.tar|docker-archive|docker-archive:$O/d20/multi.tar:@1|||
d20/byid.tar|docker-archive|docker-archive:$O/d20/byid.tar|||
d20/new.tar.gz|docker-archive|docker-archive:$O/d20/new.tar.gz||containers/image reads docker-archive only uncompressed (docker load accepts it)|d20/new.tar
skopeo/old.docker.tar|docker-archive|docker-archive:$O/skopeo/old.docker.tar:dd-test/app:1|||
skopeo/new.docker.tar|docker-archive|docker-archive:$O/skopeo/new.docker.tar:dd-test/app:2|||
oci/gzip|oci|oci:$O/oci/gzip:old|||
oci/gzip|oci|oci:$O/oci/gzip:new|||
oci/plain|oci|oci:$O/oci/plain:old|||
oci/plain|oci|oci:$O/oci/plain:new|||
oci/zstd|oci|oci:$O/oci/zstd:old|||
oci/zstd|oci|oci:$O/oci/zstd:new|||
oci-archive/old.tar|oci-archive|oci-archive:$O/oci-archive/old.tar:old|||
oci-archive/new.tar|oci-archive|oci-archive:$O/oci-archive/new.tar:new|||
umoci|oci|oci:$O/umoci:v1|||
umoci|oci|oci:$O/umoci:v2|||
crane/new.tar|docker-archive|docker-archive:$O/crane/new.tar:dd-test/app:2|||
multiarch|oci|oci:$O/multiarch:new|linux/amd64||
multiarch|oci|oci:$O/multiarch:new|linux/arm64||
multiarch|oci|oci:$O/multiarch:new|linux/arm/v7|blobs of this platform are intentionally missing|
legacy/old.tar|docker-archive|docker-archive:$O/legacy/old.tar||pre-1.10 archive (no manifest.json) is not supported by containers/image|d20/old.tar
EOF
python3 - "$O" "$WORK/spec" <<'PY'
import gzip, hashlib, json, os, subprocess, sys, tarfile
outdir, spec = sys.argv[1:]
INDEX_TYPES = ("application/vnd.oci.image.index.v1+json",
               "application/vnd.docker.distribution.manifest.list.v2+json")

def skopeo(args, platform):
    cmd = ["skopeo", "--insecure-policy"]
    if platform:
        parts = platform.split("/")
        cmd += ["--override-os", parts[0], "--override-arch", parts[1]]
        if len(parts) > 2:
            cmd += ["--override-variant", parts[2]]
    r = subprocess.run(cmd + args, capture_output=True)
    if r.returncode != 0:
        raise RuntimeError(r.stderr.decode().strip())
    return r.stdout

def archive_tags(path, config_digest):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f, tarfile.open(fileobj=f) as t:
        names = {m.name.lstrip("./"): m for m in t.getmembers()}
        if "manifest.json" not in names:
            return None
        man = json.loads(t.extractfile(names["manifest.json"]).read())
    hexd = config_digest.split(":")[1]
    for e in man:
        if hexd in e["Config"]:
            return e.get("RepoTags")
    return None

def oci_index_children(layout, raw_index):
    return [dict(digest=m["digest"], size=m["size"], mediaType=m.get("mediaType"),
                 platform=m.get("platform"),
                 present=os.path.exists(os.path.join(layout, "blobs", *m["digest"].split(":"))))
            for m in json.loads(raw_index)["manifests"]]

out, by_path = [], {}
for line in open(spec).read().splitlines():
    path, transport, ref, platform, expect_error, same_as = line.split("|")
    e = {"path": path, "transport": transport, "ref": ref}
    if platform:
        e["platform"] = platform
    try:
        raw = skopeo(["inspect", "--raw", ref], platform)
        cfg = skopeo(["inspect", "--config", "--raw", ref], platform)
        info = json.loads(skopeo(["inspect", "--no-tags", ref], platform))
    except RuntimeError as err:
        if not expect_error:
            sys.exit(f"skopeo failed on {ref} ({platform or 'default platform'}): {err}")
        e["expect_error"] = expect_error
        e["skopeo_error"] = str(err)
        if same_as:
            src = next(x for x in out if x["path"] == same_as)
            for k in ("config_digest", "diff_ids", "repo_tags", "architecture", "os"):
                if k in src:
                    e[k] = src[k]
            e["same_image_as"] = same_as
        out.append(e)
        print(f"  {path:24} {transport:14} expected error: {str(err)[:70]}", file=sys.stderr)
        continue
    if expect_error:
        sys.exit(f"{ref}: expected skopeo to fail ({expect_error}) but it worked")
    c = json.loads(cfg)
    e["config_digest"] = "sha256:" + hashlib.sha256(cfg).hexdigest()
    e["diff_ids"] = c["rootfs"]["diff_ids"]
    e["architecture"], e["os"] = c.get("architecture"), c.get("os")
    m = json.loads(raw)
    e["top_manifest_digest"] = "sha256:" + hashlib.sha256(raw).hexdigest()
    e["top_media_type"] = m.get("mediaType")
    if m.get("mediaType") in INDEX_TYPES or "manifests" in m:
        # nested index: the platform's manifest is the child skopeo chose
        layout = os.path.join(outdir, path)
        children = oci_index_children(layout, raw) if transport == "oci" else []
        if transport == "oci":
            # follow the top index.json -> nested index blob
            e["index_children"] = children
        arch = platform.split("/")[1]
        child = next(ch for ch in children if ch["platform"]["architecture"] == arch)
        e["manifest_digest"] = child["digest"]
        man = json.loads(open(os.path.join(layout, "blobs", *child["digest"].split(":")), "rb").read())
    else:
        e["manifest_digest"] = e["top_manifest_digest"]
        man = m
    e["manifest_media_type"] = man.get("mediaType")
    e["layers"] = [{"digest": l["digest"], "size": l["size"], "mediaType": l["mediaType"]}
                   for l in man["layers"]]
    assert len(e["layers"]) == len(e["diff_ids"]), ref
    if transport == "oci":   # media type must match the blob's real compression
        layout = os.path.join(outdir, path)
        for l in e["layers"]:
            head = open(os.path.join(layout, "blobs", *l["digest"].split(":")), "rb").read(4)
            real = ("gzip" if head[:2] == b"\x1f\x8b" else
                    "zstd" if head == b"\x28\xb5\x2f\xfd" else "tar")
            assert l["mediaType"].endswith("+" + real) or (real == "tar" and l["mediaType"].endswith(".tar")), \
                f"{ref}: {l['digest']} is {real} but labelled {l['mediaType']}"
    # cross-check with skopeo's own platform resolution
    ld = info.get("LayersData") or []
    if ld:
        assert [l["Digest"] for l in ld] == [l["digest"] for l in e["layers"]], ref
    if transport == "docker-archive":
        e["repo_tags"] = archive_tags(os.path.join(outdir, path), e["config_digest"])
    else:  # oci / oci-archive: the ref name selected, if any
        rest = ref.split(":", 1)[1]
        e["repo_tags"] = [rest.rsplit(":", 1)[1]] if ":" in rest else []
    out.append(e)
    print(f"  {path:24} {transport:14} {e['config_digest'][:19]} {len(e['layers'])} layers"
          f" {e['layers'][0]['mediaType'].rsplit('.', 1)[-1]}", file=sys.stderr)
json.dump(out, open(os.path.join(outdir, "expected.json"), "w"), indent=2)
PY

SIZE=$(du -sb "$OUTDIR" | cut -f1)
log "total size $((SIZE / 1024)) KiB"
[ "$SIZE" -lt $((20 * 1024 * 1024)) ] || log "WARNING: fixtures exceed 20 MiB"
echo "$HASH" >"$OUTDIR/.complete"
log "done: $OUTDIR"
