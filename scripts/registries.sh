#!/usr/bin/env bash
# Run four private OCI registries (CNCF distribution 2.8, Debian's
# docker-registry binary unpacked by install-deps.sh into .cache/registry) on
# 127.0.0.1 for the registry tests (issue 19):
#   plain: plain HTTP, anonymous
#   basic: plain HTTP, htpasswd (bcrypt) Basic auth
#   token: plain HTTP, `auth: token`; its realm is a token issuer on
#          127.0.0.1:BASE+4 that the *test suite* runs (scripts/token-issuer.py
#          is one for manual checks and for `seed`)
#   tls:   HTTPS with a certificate for 127.0.0.1 and localhost from a test CA
#
# Usage: scripts/registries.sh start|stop|status|env|seed|check [NAME...]
#        NAME: plain, basic, token, tls (default: all four); `start issuer`
#        and `stop issuer` run scripts/token-issuer.py on the realm address;
#        a bare `stop` stops the issuer too. env always prints everything.
#   seed:  starts the named registries if needed and pushes the fixtures with
#          `skopeo copy` (list below); skipped per registry when already done
#          for the same fixtures. For `token` it runs token-issuer.py while it
#          pushes, and stops it again if it started it.
#   check: reads every seeded image back with skopeo and oras and compares.
#
# Ports (fixed, so `env` is known before `start`): BASE = plain, BASE+1 =
# basic, BASE+2 = token, BASE+3 = tls, BASE+4 = the token issuer (realm).
#
# Run dir layout ($RUN):
#   NAME/config.yml NAME/storage/ NAME/registry.pid NAME/registry.log NAME/seeded
#   ca/ca.{crt,key}               test CA of the tls registry
#   tls/server.{crt,key}          its certificate (SAN IP:127.0.0.1, DNS:localhost)
#   tls/certs.d/ca.crt            a --cert-dir for skopeo / containers-image
#   basic/htpasswd                bcrypt entry for the basic user
#   token/signing.{key,key.der,crt} the JWT signing key (EC P-256, PKCS#8 PEM
#                                 and DER) and its self-signed certificate, the
#                                 token registry's rootcertbundle; token/kid is
#                                 the libtrust key ID of that key
#   issuer/issuer.{pid,log}       token-issuer.py when started here
#
# Env:
#   DOCKER_DELTA_REGISTRIES_DIR    run dir (default /tmp/docker-delta-registries)
#   DOCKER_DELTA_REGISTRY_PORT_BASE  first port (default 15000; below the
#                                  kernel's ephemeral range)
#   DOCKER_DELTA_CACHE             cache root holding registry/ and oras/
#   DOCKER_DELTA_FIXTURES          fixture dir for seed (default tests/fixtures/generated)
#   DOCKER_DELTA_ISSUER_ARGS       extra token-issuer.py flags for `start issuer`
#                                  (e.g. --x5c, --expires-in 30)
#
# `stop` only signals pids read from this run dir's pid files, and only when
# that process's command line names this run dir's config.
#
# JWT facts for the suite's issuer (read from distribution v2.8.2,
# registry/auth/token/{token,accesscontroller}.go and vendored libtrust): see
# docs/TESTING.md, "Registries".
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
RUN=${DOCKER_DELTA_REGISTRIES_DIR:-/tmp/docker-delta-registries}
CACHE=${DOCKER_DELTA_CACHE:-$REPO/.cache}
REGISTRY_BIN=$CACHE/registry/usr/bin/docker-registry
ORAS_BIN=$CACHE/oras/usr/bin/oras
BASE=${DOCKER_DELTA_REGISTRY_PORT_BASE:-15000}
FIXTURES=${DOCKER_DELTA_FIXTURES:-$REPO/tests/fixtures/generated}
REGISTRIES=(plain basic token tls)
HOST=127.0.0.1
START_TIMEOUT=30

# Test credentials: fixed, they guard nothing but loopback test data.
BASIC_USER=dd-basic
BASIC_PASS=dd-basic-secret-19
TOKEN_USER=dd-token
TOKEN_PASS=dd-token-secret-19
TOKEN_SERVICE=docker-delta-test-registry
TOKEN_ISSUER=docker-delta-test-issuer

log() { printf '[registries] %s\n' "$*" >&2; }
die() { printf '[registries] ERROR: %s\n' "$*" >&2; exit 1; }

port() {
    case "$1" in
        plain) echo $((BASE)) ;; basic) echo $((BASE + 1)) ;; token) echo $((BASE + 2)) ;;
        tls) echo $((BASE + 3)) ;; issuer) echo $((BASE + 4)) ;;
    esac
}
addr() { echo "$HOST:$(port "$1")"; }
realm() { echo "http://$(addr issuer)/token"; }
CERT_DIR=$RUN/tls/certs.d

# pid from FILE if that process is alive and its command line contains WORD.
live_pid() {
    local file=$1 word=$2 pid
    [ -s "$file" ] || return 1
    pid=$(tr -dc 0-9 <"$file")
    [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
    grep -qF -- "$word" <<<"$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
    echo "$pid"
}

# Who listens on PORT (tcp), empty when nobody.
listener() { ss -ltnpH "sport = :$1" 2>/dev/null || true; }

# probe URL CODE...: exit 0 when GET URL answers with one of the CODEs.
# Verifies https against the test CA.
probe() {
    python3 - "$RUN/ca/ca.crt" "$@" <<'PY' 2>/dev/null
import ssl, sys, urllib.request, urllib.error
ca, url, codes = sys.argv[1], sys.argv[2], sys.argv[3:]
ctx = ssl.create_default_context(cafile=ca) if url.startswith("https:") else None
try:
    code = urllib.request.urlopen(url, timeout=2, context=ctx).status
except urllib.error.HTTPError as e:
    code = e.code
sys.exit(0 if str(code) in codes else 1)
PY
}

registry_url() {
    if [ "$1" = tls ]; then echo "https://$(addr tls)/v2/"; else echo "http://$(addr "$1")/v2/"; fi
}
answers() {  # the registry answers /v2/ as its auth mode says
    case "$1" in
        plain|tls) probe "$(registry_url "$1")" 200 ;;
        basic|token) probe "$(registry_url "$1")" 401 ;;
    esac
}
issuer_answers() { probe "$(realm)" 400 401; }  # no service= -> 400

# --- secrets (made once, kept across runs) ---------------------------------
# Each is written in a temp dir and renamed into place, so a run that dies
# half way leaves nothing half-written behind.
ensure_ca() {
    [ -s "$RUN/ca/ca.crt" ] && [ -s "$RUN/ca/ca.key" ] && return 0
    log "making the test CA ($RUN/ca)"
    rm -rf "$RUN/ca.tmp" && mkdir -p "$RUN/ca.tmp"
    openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
        -keyout "$RUN/ca.tmp/ca.key" -out "$RUN/ca.tmp/ca.crt" -days 3650 \
        -subj "/CN=docker-delta test CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null \
        || die "openssl: cannot make the test CA"
    rm -rf "$RUN/ca" && mv "$RUN/ca.tmp" "$RUN/ca"
}

ensure_tls_cert() {
    ensure_ca
    if [ -s "$RUN/tls/server.crt" ] && [ -s "$RUN/tls/server.key" ] && [ -s "$CERT_DIR/ca.crt" ] \
        && openssl verify -CAfile "$RUN/ca/ca.crt" "$RUN/tls/server.crt" >/dev/null 2>&1; then
        return 0
    fi
    log "making the tls registry's certificate ($RUN/tls)"
    local t=$RUN/tls.tmp
    rm -rf "$t" && mkdir -p "$t/certs.d"
    openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
        -keyout "$t/server.key" -out "$t/server.csr" -subj "/CN=localhost" 2>/dev/null \
        || die "openssl: cannot make the server key"
    printf '%s\n' "basicConstraints=critical,CA:FALSE" \
        "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" \
        "subjectAltName=IP:127.0.0.1,DNS:localhost" >"$t/ext.cnf"
    openssl x509 -req -in "$t/server.csr" -CA "$RUN/ca/ca.crt" -CAkey "$RUN/ca/ca.key" \
        -CAcreateserial -out "$t/server.crt" -days 825 -extfile "$t/ext.cnf" 2>/dev/null \
        || die "openssl: cannot sign the server certificate"
    rm -f "$t/server.csr" "$t/ext.cnf" "$RUN/ca/ca.srl"
    cp "$RUN/ca/ca.crt" "$t/certs.d/ca.crt"
    rm -rf "$RUN/tls" && mv "$t" "$RUN/tls"
}

ensure_token_key() {
    local d=$RUN/token
    [ -s "$d/signing.key" ] && [ -s "$d/signing.key.der" ] && [ -s "$d/signing.crt" ] \
        && [ -s "$d/kid" ] && return 0
    log "making the JWT signing key and certificate ($d)"
    local t=$RUN/token.tmp
    rm -rf "$t" && mkdir -p "$t"
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$t/signing.key" 2>/dev/null \
        || die "openssl: cannot make the signing key"
    openssl pkcs8 -topk8 -nocrypt -in "$t/signing.key" -outform DER -out "$t/signing.key.der"
    openssl req -x509 -new -key "$t/signing.key" -out "$t/signing.crt" -days 3650 \
        -subj "/CN=docker-delta test token signer" 2>/dev/null \
        || die "openssl: cannot make the signing certificate"
    # libtrust key ID: sha256(DER SubjectPublicKeyInfo)[:30], base32, 4-char groups
    openssl pkey -in "$t/signing.key" -pubout -outform DER | python3 -c '
import base64, hashlib, sys
s = base64.b32encode(hashlib.sha256(sys.stdin.buffer.read()).digest()[:30]).decode().rstrip("=")
print(":".join(s[i:i + 4] for i in range(0, len(s), 4)))' >"$t/kid"
    printf '%s\n' "$TOKEN_PASS" >"$t/password"
    chmod 600 "$t/signing.key" "$t/signing.key.der" "$t/password"
    rm -rf "$d" && mv "$t" "$d"
}

ensure_htpasswd() {
    local f=$RUN/basic/htpasswd
    if [ -s "$f" ] && htpasswd -vb "$f" "$BASIC_USER" "$BASIC_PASS" >/dev/null 2>&1; then
        return 0
    fi
    command -v htpasswd >/dev/null || die "htpasswd not found (apache2-utils); run scripts/install-deps.sh"
    mkdir -p "$RUN/basic"
    htpasswd -Bbn "$BASIC_USER" "$BASIC_PASS" | grep . >"$f.tmp"
    mv "$f.tmp" "$f"
}

write_config() {  # write_config NAME
    local r=$1 d=$RUN/$1
    mkdir -p "$d/storage"
    {
        cat <<EOF
# written by scripts/registries.sh; rewritten on every start
version: 0.1
log:
  level: info
  formatter: text
  fields:
    registry: $r
storage:
  filesystem:
    rootdirectory: $d/storage
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: $(addr "$r")
  secret: docker-delta-test-$r
  headers:
    X-Content-Type-Options: [nosniff]
EOF
        case "$r" in
            tls) cat <<EOF
  tls:
    certificate: $RUN/tls/server.crt
    key: $RUN/tls/server.key
EOF
            ;;
            basic) cat <<EOF
auth:
  htpasswd:
    realm: docker-delta-test
    path: $RUN/basic/htpasswd
EOF
            ;;
            token) cat <<EOF
auth:
  token:
    realm: $(realm)
    service: $TOKEN_SERVICE
    issuer: $TOKEN_ISSUER
    rootcertbundle: $RUN/token/signing.crt
EOF
            ;;
        esac
    } >"$d/config.yml.tmp"
    mv "$d/config.yml.tmp" "$d/config.yml"
}

# wait_for TIMEOUT PID CMD...: 0 when CMD succeeds, 2 when PID died, 1 on timeout
wait_for() {
    local timeout=$1 pid=$2 t=0; shift 2
    until "$@" >/dev/null 2>&1; do
        kill -0 "$pid" 2>/dev/null || return 2
        [ "$t" -lt $((timeout * 5)) ] || return 1
        sleep 0.2; t=$((t + 1))
    done
}

start_one() {
    local r=$1 d=$RUN/$1 pid rc=0
    if pid=$(live_pid "$d/registry.pid" "$d/config.yml"); then
        answers "$r" || die "$r: pid $pid is alive but $(registry_url "$r") does not answer; run '$0 stop $r' (log: $d/registry.log)"
        log "$r: already running (pid $pid) on $(registry_url "$r")"
        return 0
    fi
    [ -x "$REGISTRY_BIN" ] || die "missing $REGISTRY_BIN; run scripts/install-deps.sh"
    [ -z "$(listener "$(port "$r")")" ] || die "$r: port $(port "$r") is taken: $(listener "$(port "$r")"); set DOCKER_DELTA_REGISTRY_PORT_BASE"
    case "$r" in
        tls) ensure_tls_cert ;;
        basic) ensure_htpasswd ;;
        token) ensure_token_key ;;
    esac
    write_config "$r"
    rm -f "$d/registry.pid"
    setsid "$REGISTRY_BIN" serve "$d/config.yml" </dev/null >>"$d/registry.log" 2>&1 &
    pid=$!
    echo "$pid" >"$d/registry.pid"
    wait_for "$START_TIMEOUT" "$pid" answers "$r" || rc=$?
    if [ $rc -ne 0 ]; then
        tail -n 20 "$d/registry.log" >&2 || true
        [ $rc -eq 2 ] && die "$r: registry exited during startup (log: $d/registry.log)"
        die "$r: no answer from $(registry_url "$r") within ${START_TIMEOUT}s (log: $d/registry.log)"
    fi
    log "$r: up (pid $pid) on $(registry_url "$r")"
}

start_issuer() {
    local d=$RUN/issuer pid rc=0
    if pid=$(live_pid "$d/issuer.pid" token-issuer.py); then
        log "issuer: already running (pid $pid) on $(realm)"
        return 0
    fi
    [ -z "$(listener "$(port issuer)")" ] || die "issuer: port $(port issuer) is taken: $(listener "$(port issuer)")"
    ensure_token_key
    mkdir -p "$d" && rm -f "$d/issuer.pid"
    setsid python3 "$REPO/scripts/token-issuer.py" --listen "$(addr issuer)" \
        --key "$RUN/token/signing.key" --cert "$RUN/token/signing.crt" \
        --issuer "$TOKEN_ISSUER" --service "$TOKEN_SERVICE" \
        --user "$TOKEN_USER" --password-file "$RUN/token/password" \
        --pid-file "$d/issuer.pid" ${DOCKER_DELTA_ISSUER_ARGS:-} \
        </dev/null >>"$d/issuer.log" 2>&1 &
    pid=$!
    wait_for 10 "$pid" issuer_answers || rc=$?
    [ $rc -eq 0 ] || { tail -n 20 "$d/issuer.log" >&2; die "issuer: did not come up (log: $d/issuer.log)"; }
    log "issuer: up (pid $pid) on $(realm)"
}

stop_pidfile() {  # stop_pidfile FILE WORD NAME
    local file=$1 word=$2 name=$3 pid i
    if ! pid=$(live_pid "$file" "$word"); then
        rm -f "$file"
        return 0
    fi
    log "stopping $name pid $pid"
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "$name pid $pid still alive after 10s; sending KILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$file"
}

stop_one() {
    case "$1" in
        issuer) stop_pidfile "$RUN/issuer/issuer.pid" token-issuer.py issuer ;;
        *) stop_pidfile "$RUN/$1/registry.pid" "$RUN/$1/config.yml" "$1" ;;
    esac
}

status_one() {
    local r=$1 pid
    if [ "$r" = issuer ]; then
        if pid=$(live_pid "$RUN/issuer/issuer.pid" token-issuer.py) && issuer_answers; then
            echo "issuer: running  pid=$pid  $(realm)"; return 0
        fi
    elif pid=$(live_pid "$RUN/$r/registry.pid" "$RUN/$r/config.yml") && answers "$r"; then
        echo "$r: running  pid=$pid  $(registry_url "$r")"; return 0
    fi
    echo "$r: stopped"
    return 1
}

print_env() {
    q() { printf 'export %s=%q\n' "$1" "$2"; }
    q DOCKER_DELTA_TEST_REGISTRY_PLAIN "$(addr plain)"
    q DOCKER_DELTA_TEST_REGISTRY_BASIC "$(addr basic)"
    q DOCKER_DELTA_TEST_REGISTRY_BASIC_USER "$BASIC_USER"
    q DOCKER_DELTA_TEST_REGISTRY_BASIC_PASS "$BASIC_PASS"
    q DOCKER_DELTA_TEST_REGISTRY_TOKEN "$(addr token)"
    q DOCKER_DELTA_TEST_TOKEN_LISTEN "$(addr issuer)"
    q DOCKER_DELTA_TEST_TOKEN_REALM "$(realm)"
    q DOCKER_DELTA_TEST_TOKEN_SERVICE "$TOKEN_SERVICE"
    q DOCKER_DELTA_TEST_TOKEN_ISSUER "$TOKEN_ISSUER"
    q DOCKER_DELTA_TEST_TOKEN_KEY "$RUN/token/signing.key"
    q DOCKER_DELTA_TEST_TOKEN_KEY_DER "$RUN/token/signing.key.der"
    q DOCKER_DELTA_TEST_TOKEN_CERT "$RUN/token/signing.crt"
    q DOCKER_DELTA_TEST_TOKEN_KID "$(cat "$RUN/token/kid" 2>/dev/null || true)"
    q DOCKER_DELTA_TEST_TOKEN_USER "$TOKEN_USER"
    q DOCKER_DELTA_TEST_TOKEN_PASS "$TOKEN_PASS"
    q DOCKER_DELTA_TEST_REGISTRY_TLS "$(addr tls)"
    q DOCKER_DELTA_TEST_REGISTRY_TLS_CA "$RUN/ca/ca.crt"
    q DOCKER_DELTA_TEST_REGISTRY_TLS_CERT_DIR "$CERT_DIR"
    q DOCKER_DELTA_TEST_ORAS "$ORAS_BIN"
}

# --- fixtures --------------------------------------------------------------
# SEED rows: SOURCE-REF|DEST-REPO:TAG|EXTRA-SKOPEO-FLAGS ($F = fixture dir,
# $M = the two-platform layout made below).
# The docker-archive rows get schema2 manifests with gzip layers made by skopeo
# (config digest = the image ID in images.env). The oci rows keep their
# manifests byte for byte (--preserve-digests): pushed manifest digest = the
# layout's. That flag also keeps skopeo 1.9 from "reusing" a gzip blob it
# already pushed for the same diff_id in place of a zstd layer (it does that
# even with --dest-compress-format zstd), so the zstd images come from the
# zstd layout as they are.
SEED=(
    'docker-archive:$F/d26/old.tar|fixtures/app:1|'
    'docker-archive:$F/d26/new.tar|fixtures/app:2|'
    'docker-archive:$F/d20/old.tar|fixtures/app-d20:1|'
    'docker-archive:$F/d20/new.tar|fixtures/app-d20:2|'
    'oci:$F/oci/gzip:old|fixtures/app-oci:1|--preserve-digests'
    'oci:$F/oci/gzip:new|fixtures/app-oci:2|--preserve-digests'
    'oci:$F/oci/zstd:old|fixtures/app-zstd:1|--preserve-digests'
    'oci:$F/oci/zstd:new|fixtures/app-zstd:2|--preserve-digests'
    'oci:$M:new|fixtures/multi:2|--all --preserve-digests'
)

# skopeo flags to reach registry NAME as a destination (d=dest) or source (s=src)
sk_flags() {  # sk_flags NAME src|dest
    local r=$1 s=$2
    case "$r" in
        plain) echo "--$s-tls-verify=false" ;;
        basic) echo "--$s-tls-verify=false --$s-creds $BASIC_USER:$BASIC_PASS" ;;
        token) echo "--$s-tls-verify=false --$s-creds $TOKEN_USER:$TOKEN_PASS" ;;
        tls) echo "--$s-cert-dir $CERT_DIR" ;;
    esac
}
user_of() { case "$1" in basic) echo "$BASIC_USER" ;; token) echo "$TOKEN_USER" ;; esac; }
inspect_flags() {  # flags for `skopeo inspect` (no src-/dest- prefix)
    case "$1" in
        plain) echo "--tls-verify=false" ;;
        basic) echo "--tls-verify=false --creds $BASIC_USER:$BASIC_PASS" ;;
        token) echo "--tls-verify=false --creds $TOKEN_USER:$TOKEN_PASS" ;;
        tls) echo "--cert-dir $CERT_DIR" ;;
    esac
}
# oras reads the credentials from a Docker-style config file (auths), not
# from its command line.
oras_flags() {
    case "$1" in
        plain) echo "--plain-http" ;;
        basic|token) echo "--plain-http --registry-config $RUN/oras-auth.json" ;;
        tls) echo "--ca-file $RUN/ca/ca.crt" ;;
    esac
}
write_oras_auth() {
    python3 - "$RUN/oras-auth.json" "$(addr basic)" "$BASIC_USER:$BASIC_PASS" \
        "$(addr token)" "$TOKEN_USER:$TOKEN_PASS" <<'PY'
import base64, json, os, sys
path, a = sys.argv[1], sys.argv[2:]
auths = {a[i]: {"auth": base64.b64encode(a[i + 1].encode()).decode()} for i in (0, 2)}
with open(path + ".tmp", "w") as f:
    json.dump({"auths": auths}, f)
os.chmod(path + ".tmp", 0o600)
os.replace(path + ".tmp", path)
PY
}

# The multiarch fixture's index has an arm/v7 entry whose blobs are missing on
# purpose; a registry refuses such an index, so push a copy without it.
make_multi_layout() {
    local m=$RUN/seed/multi
    rm -rf "$m.tmp" && mkdir -p "$m.tmp"
    cp -r "$FIXTURES/multiarch/." "$m.tmp/"
    python3 - "$m.tmp" <<'PY'
import hashlib, json, os, sys
d = sys.argv[1]
blob = lambda dg: os.path.join(d, "blobs", *dg.split(":"))
top = json.load(open(os.path.join(d, "index.json")))
desc = next(m for m in top["manifests"]
            if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == "new")
idx = json.load(open(blob(desc["digest"])))
idx["manifests"] = [m for m in idx["manifests"] if os.path.exists(blob(m["digest"]))
                    and all(os.path.exists(blob(l["digest"]))
                            for l in json.load(open(blob(m["digest"])))["layers"])]
data = json.dumps(idx, separators=(",", ":")).encode()
dg = "sha256:" + hashlib.sha256(data).hexdigest()
open(blob(dg), "wb").write(data)
desc.update(digest=dg, size=len(data))
json.dump(top, open(os.path.join(d, "index.json"), "w"))
PY
    rm -rf "$m" && mv "$m.tmp" "$m"
}

seed_hash() {
    { sha256sum "$FIXTURES/expected.json" "$FIXTURES/images.env" | cut -d' ' -f1
      printf '%s\n' "${SEED[@]}"; } | sha256sum | cut -d' ' -f1
}

seed_one() {
    local r=$1 row src dst extra F=$FIXTURES M=$RUN/seed/multi h
    h=$(seed_hash)
    if [ "$(cat "$RUN/$r/seeded" 2>/dev/null || true)" = "$h" ]; then
        log "$r: fixtures already pushed"
        return 0
    fi
    # Start from empty storage: skopeo's blob-info cache (shared by every run on the
    # machine) would otherwise offer the zstd blobs an earlier seed pushed in place of
    # a docker-archive's gzip layers, and skopeo 1.9 then converts that image to an OCI
    # manifest with a rewritten config, which is no longer the image ID. With the
    # storage empty those candidates are not found and the layers are uploaded as gzip.
    stop_one "$r"
    rm -rf "${RUN:?}/$r/storage"
    start_one "$r"
    log "$r: pushing ${#SEED[@]} fixture images"
    for row in "${SEED[@]}"; do
        IFS='|' read -r src dst extra <<<"$row"
        src=$(eval "echo \"$src\"")
        # shellcheck disable=SC2046,SC2086
        skopeo --insecure-policy copy -q $(sk_flags "$r" dest) $extra \
            "$src" "docker://$(addr "$r")/$dst" >/dev/null \
            || die "$r: skopeo copy $src docker://$(addr "$r")/$dst failed"
    done
    # The Docker archives' image IDs are config digests: they must survive the push.
    # shellcheck disable=SC1091
    . "$FIXTURES/images.env"
    local want got
    for row in "app:1 $D26_OLD_ID" "app:2 $D26_NEW_ID" "app-d20:1 $D20_OLD_ID" "app-d20:2 $D20_NEW_ID"; do
        set -- $row
        # shellcheck disable=SC2046
        got=$(skopeo inspect $(inspect_flags "$r") --config --raw "docker://$(addr "$r")/fixtures/$1" \
            | sha256sum | cut -d' ' -f1)
        want=${2#sha256:}
        [ "$got" = "$want" ] || die "$r: fixtures/$1 has config sha256:$got, want $2"
    done
    echo "$h" >"$RUN/$r/seeded"
    log "$r: pushed; config digests of fixtures/app{,-d20}:{1,2} match images.env"
}

seed() {
    local r started_issuer=0
    [ -f "$FIXTURES/images.env" ] || die "no fixtures in $FIXTURES; run scripts/make-fixtures.sh"
    command -v skopeo >/dev/null || die "skopeo not found; run scripts/install-deps.sh"
    make_multi_layout
    for r in "$@"; do
        start_one "$r"
        if [ "$r" = token ] && ! status_one issuer >/dev/null; then
            start_issuer; started_issuer=1
        fi
        seed_one "$r"
    done
    [ $started_issuer = 0 ] || stop_one issuer
}

# check: every seeded ref read back by skopeo and by oras, same manifest digest.
check() {
    local r ref d1 d2 started_issuer=0 n=0
    [ -x "$ORAS_BIN" ] || die "missing $ORAS_BIN; run scripts/install-deps.sh"
    write_oras_auth
    for r in "$@"; do
        status_one "$r" >/dev/null || die "$r is not running"
        if [ "$r" = token ] && ! status_one issuer >/dev/null; then
            start_issuer; started_issuer=1
        fi
        for ref in app:1 app:2 app-d20:1 app-d20:2 app-oci:1 app-oci:2 app-zstd:1 app-zstd:2 multi:2; do
            # shellcheck disable=SC2046
            d1=$(skopeo inspect $(inspect_flags "$r") --raw "docker://$(addr "$r")/fixtures/$ref" \
                | sha256sum | cut -d' ' -f1)
            # shellcheck disable=SC2046
            d2=$("$ORAS_BIN" manifest fetch $(oras_flags "$r") "$(addr "$r")/fixtures/$ref" \
                | sha256sum | cut -d' ' -f1)
            [ "$d1" = "$d2" ] || die "$r: fixtures/$ref: skopeo sha256:$d1, oras sha256:$d2"
            n=$((n + 1))
        done
        # shellcheck disable=SC2046
        grep -q 'tar+zstd' <<<"$(skopeo inspect $(inspect_flags "$r") --raw "docker://$(addr "$r")/fixtures/app-zstd:2")" \
            || die "$r: fixtures/app-zstd:2 has no zstd layer"
        # shellcheck disable=SC2046
        skopeo inspect $(inspect_flags "$r") --raw "docker://$(addr "$r")/fixtures/multi:2" \
            | python3 -c 'import json,sys; m=json.load(sys.stdin); sys.exit(not (m["mediaType"].endswith("index.v1+json") and len(m["manifests"]) == 2))' \
            || die "$r: fixtures/multi:2 is not a two-platform index"
        if [ "$r" = basic ] || [ "$r" = token ]; then
            # the registry really asks: no credentials and a wrong password are refused
            ! skopeo inspect --tls-verify=false --raw "docker://$(addr "$r")/fixtures/app:1" >/dev/null 2>&1 \
                || die "$r: read without credentials"
            ! skopeo inspect --tls-verify=false --creds "$(user_of "$r"):wrong" \
                --raw "docker://$(addr "$r")/fixtures/app:1" >/dev/null 2>&1 \
                || die "$r: read with a wrong password"
        fi
        if [ "$r" = tls ]; then
            # the certificate is checked: without the test CA skopeo refuses it
            ! skopeo inspect --raw "docker://$(addr tls)/fixtures/app:1" >/dev/null 2>&1 \
                || die "tls: read without the test CA"
        fi
        log "$r: 9 refs read by skopeo and oras alike; zstd layers and a 2-platform index present"
    done
    [ $started_issuer = 0 ] || stop_one issuer
    log "check ok ($n refs)"
}

cmd=${1:-}
[ $# -eq 0 ] || shift
SEL=("$@")
[ ${#SEL[@]} -gt 0 ] || SEL=("${REGISTRIES[@]}")
for r in "${SEL[@]}"; do
    case "$r" in plain|basic|token|tls|issuer) ;; *) die "unknown registry '$r' (have: ${REGISTRIES[*]} issuer)" ;; esac
done
case "$cmd" in
    start)
        mkdir -p "$RUN"
        for r in "${SEL[@]}"; do
            if [ "$r" = issuer ]; then start_issuer; else start_one "$r"; fi
        done
        ;;
    stop)
        [ $# -gt 0 ] || SEL+=(issuer)
        for r in "${SEL[@]}"; do stop_one "$r"; done
        log "stopped"
        ;;
    status)
        rc=0
        for r in "${SEL[@]}"; do status_one "$r" || rc=1; done
        exit $rc
        ;;
    env) print_env ;;
    seed)
        mkdir -p "$RUN"
        for r in "${SEL[@]}"; do [ "$r" != issuer ] || die "seed: not a registry: issuer"; done
        seed "${SEL[@]}"
        ;;
    check)
        for r in "${SEL[@]}"; do [ "$r" != issuer ] || die "check: not a registry: issuer"; done
        check "${SEL[@]}"
        ;;
    *)
        echo "usage: $0 start|stop|status|env|seed|check [plain|basic|token|tls|issuer...]" >&2
        exit 2
        ;;
esac
