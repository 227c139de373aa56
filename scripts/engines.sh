#!/usr/bin/env bash
# Run three private Docker engines side by side for the tests:
#   d20: Docker 20.10 (system /usr/sbin/dockerd, bookworm's containerd/runc)
#   d26: Docker 26 (from the private prefix made by install-deps.sh)
#   c8d: Docker 26 again, with the containerd image store (the default of new
#        Docker 29 installs), where image IDs are manifest digests, not config
#        digests, and `docker save` writes OCI layouts
#
# Usage: scripts/engines.sh start|stop|status|env [ENGINE...]
#        (ENGINE: d20, d26 or c8d; default all; env always prints all)
#
# Each engine gets its own containerd (own config, socket, root and state),
# its own daemon.json, data-root, exec-root and socket under the run dir, so
# it never touches a system docker/containerd. Each engine has a bin/ dir of
# symlinks put first on its PATH so dockerd and containerd find that engine's
# own runc / shim / docker-init.
#
# Env:
#   DOCKER_DELTA_ENGINES_DIR  run dir (default /tmp/docker-delta-engines); keep
#                             it short: unix socket paths are limited to ~107 bytes
#   DOCKER_DELTA_CACHE        cache root holding docker26/ (default $REPO/.cache)
#
# `stop` only signals pids read from this run dir's pid files.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
RUN=${DOCKER_DELTA_ENGINES_DIR:-/tmp/docker-delta-engines}
CACHE=${DOCKER_DELTA_CACHE:-$REPO/.cache}
PREFIX26=$CACHE/docker26
ENGINES=(d20 d26 c8d)
START_TIMEOUT=${DOCKER_DELTA_ENGINE_START_TIMEOUT:-90}

log() { printf '[engines] %s\n' "$*" >&2; }
die() { printf '[engines] ERROR: %s\n' "$*" >&2; exit 1; }

sock()   { echo "$RUN/$1/docker.sock"; }
client() { echo "$RUN/$1/bin/docker"; }

# Path of one engine's binary NAME (dockerd, docker, containerd, runc, ...).
engine_bin() {
    local e=$1 name=$2 p
    case "$e:$name" in
        d20:dockerd|d20:docker-proxy) p=/usr/sbin/$name ;;
        d20:runc) p=$(command -v runc || echo /usr/sbin/runc) ;;
        d20:*) p=/usr/bin/$name ;;
        d26:dockerd|d26:docker-proxy|c8d:dockerd|c8d:docker-proxy) p=$PREFIX26/usr/sbin/$name ;;
        d26:runc|c8d:runc)
            p=$PREFIX26/usr/sbin/runc
            # trixie's runc needs a newer glibc than bookworm's; runc is only
            # used to run containers (the fixtures never do), so fall back to
            # the system one rather than fail.
            if ! "$p" --version >/dev/null 2>&1; then
                p=$(command -v runc || echo /usr/sbin/runc)
            fi
            ;;
        d26:*|c8d:*) p=$PREFIX26/usr/bin/$name ;;
    esac
    echo "$p"
}

# pid from FILE if that process is alive and its command is NAME.
live_pid() {
    local file=$1 name=$2 pid comm
    [ -s "$file" ] || return 1
    pid=$(tr -dc 0-9 <"$file")
    [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] || return 1
    comm=$(cat "/proc/$pid/comm" 2>/dev/null || true)
    [ "$comm" = "$name" ] || return 1
    echo "$pid"
}

answers() {
    "$(client "$1")" -H "unix://$(sock "$1")" version --format '{{.Server.Version}}' 2>/dev/null
}

prepare_dir() {
    local e=$1 d=$RUN/$1 b name
    mkdir -p "$d/bin" "$d/data" "$d/x" "$d/ctd/root" "$d/ctd/state"
    for name in dockerd docker docker-proxy docker-init containerd \
                containerd-shim containerd-shim-runc-v1 containerd-shim-runc-v2 ctr runc; do
        b=$(engine_bin "$e" "$name")
        if [ -x "$b" ]; then
            ln -sfn "$b" "$d/bin/$name"
        else
            rm -f "$d/bin/$name"
        fi
    done
    for name in dockerd docker containerd runc; do
        [ -x "$d/bin/$name" ] || die "$e: missing $name ($(engine_bin "$e" "$name")); run scripts/install-deps.sh"
    done
    # Isolate from /etc/docker/daemon.json and from any system containerd.
    if [ "$e" = c8d ]; then
        echo '{"features": {"containerd-snapshotter": true}}' >"$d/daemon.json"
    else
        echo '{}' >"$d/daemon.json"
    fi
    cat >"$d/containerd.toml" <<EOF
version = 2
root = "$d/ctd/root"
state = "$d/ctd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$d/ctd/ctd.sock"
[ttrpc]
  address = "$d/ctd/ctd.sock.ttrpc"
[debug]
  address = "$d/ctd/debug.sock"
[metrics]
  address = ""
EOF
}

wait_for() {  # wait_for DESC TIMEOUT PID CMD...
    local desc=$1 timeout=$2 pid=$3; shift 3
    local t=0
    until "$@" >/dev/null 2>&1; do
        if ! kill -0 "$pid" 2>/dev/null; then return 2; fi
        if [ "$t" -ge $((timeout * 5)) ]; then return 1; fi
        sleep 0.2; t=$((t + 1))
    done
}

start_one() {
    local e=$1 d=$RUN/$1 pid v
    if pid=$(live_pid "$d/dockerd.pid" dockerd) && v=$(answers "$e"); then
        log "$e: already running (dockerd pid $pid, server $v) on unix://$(sock "$e")"
        return 0
    fi
    if pid=$(live_pid "$d/dockerd.pid" dockerd); then
        die "$e: dockerd pid $pid is alive but does not answer; run '$0 stop' first (log: $d/dockerd.log)"
    fi
    prepare_dir "$e"
    local path="$d/bin:$PATH"

    # containerd
    if pid=$(live_pid "$d/containerd.pid" containerd); then
        log "$e: reusing our containerd pid $pid"
    else
        rm -f "$d/containerd.pid" "$d/ctd/ctd.sock"
        log "$e: starting containerd ($("$d/bin/containerd" --version | awk '{print $3}'))"
        PATH=$path setsid "$d/bin/containerd" --config "$d/containerd.toml" \
            </dev/null >>"$d/containerd.log" 2>&1 &
        pid=$!
        echo "$pid" >"$d/containerd.pid"
        if ! wait_for "$e containerd" 30 "$pid" test -S "$d/ctd/ctd.sock"; then
            tail -n 20 "$d/containerd.log" >&2 || true
            die "$e: containerd did not come up (log: $d/containerd.log)"
        fi
    fi

    # dockerd -- flags as agreed for the test engines, plus the private
    # containerd and config file.
    rm -f "$d/dockerd.pid" "$(sock "$e")"
    log "$e: starting dockerd ($("$d/bin/dockerd" --version))"
    PATH=$path setsid "$d/bin/dockerd" \
        --storage-driver=vfs --iptables=false --bridge=none \
        --data-root "$d/data" --exec-root "$d/x" \
        -H "unix://$(sock "$e")" --pidfile "$d/dockerd.pid" \
        --containerd "$d/ctd/ctd.sock" \
        --config-file "$d/daemon.json" \
        </dev/null >>"$d/dockerd.log" 2>&1 &
    pid=$!
    local rc=0
    wait_for "$e dockerd" "$START_TIMEOUT" "$pid" answers "$e" || rc=$?
    if [ $rc -ne 0 ]; then
        tail -n 30 "$d/dockerd.log" >&2 || true
        [ $rc -eq 2 ] && die "$e: dockerd exited during startup (log: $d/dockerd.log)"
        die "$e: dockerd did not answer within ${START_TIMEOUT}s (log: $d/dockerd.log)"
    fi
    log "$e: up, server $(answers "$e") on unix://$(sock "$e")"
}

stop_pidfile() {  # stop_pidfile FILE NAME
    local file=$1 name=$2 pid i
    if ! pid=$(live_pid "$file" "$name"); then
        rm -f "$file"
        return 0
    fi
    log "stopping $name pid $pid ($file)"
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 150); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "$name pid $pid still alive after 30s; sending KILL"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
    fi
    rm -f "$file"
}

stop_one() {
    local e=$1 d=$RUN/$1
    [ -d "$d" ] || return 0
    stop_pidfile "$d/dockerd.pid" dockerd
    stop_pidfile "$d/containerd.pid" containerd
    rm -f "$(sock "$e")"
}

status_one() {  # returns 0 when running and answering
    local e=$1 d=$RUN/$1 pid v cpid
    if pid=$(live_pid "$d/dockerd.pid" dockerd) && v=$(answers "$e"); then
        cpid=$(live_pid "$d/containerd.pid" containerd || echo none)
        echo "$e: running  server=$v  dockerd=$pid containerd=$cpid  unix://$(sock "$e")"
        return 0
    fi
    echo "$e: stopped"
    return 1
}

cmd=${1:-}
[ $# -eq 0 ] || shift
SEL=("$@")
[ ${#SEL[@]} -gt 0 ] || SEL=("${ENGINES[@]}")
for e in "${SEL[@]}"; do
    case "$e" in d20|d26|c8d) ;; *) die "unknown engine '$e' (have: ${ENGINES[*]})" ;; esac
done
case "$cmd" in
    start)
        [ "$(id -u)" -eq 0 ] || die "engines must be started as root"
        mkdir -p "$RUN"
        for e in "${SEL[@]}"; do start_one "$e"; done
        ;;
    stop)
        for e in "${SEL[@]}"; do stop_one "$e"; done
        log "stopped"
        ;;
    status)
        rc=0
        for e in "${SEL[@]}"; do status_one "$e" || rc=1; done
        exit $rc
        ;;
    env)
        echo "export DOCKER_DELTA_TEST_DOCKER20=unix://$(sock d20)"
        echo "export DOCKER_DELTA_TEST_DOCKER26=unix://$(sock d26)"
        echo "export DOCKER_DELTA_TEST_DOCKER20_CLI=$(client d20)"
        echo "export DOCKER_DELTA_TEST_DOCKER26_CLI=$(client d26)"
        echo "export DOCKER_DELTA_TEST_C8D=unix://$(sock c8d)"
        echo "export DOCKER_DELTA_TEST_C8D_CLI=$(client c8d)"
        ;;
    *)
        echo "usage: $0 start|stop|status|env [d20|d26|c8d...]" >&2
        exit 2
        ;;
esac
