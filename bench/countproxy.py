#!/usr/bin/env python3
"""A byte-counting TCP proxy on loopback, for bench/registry.sh.

    countproxy.py --target 127.0.0.1:15000 --port-file F --stats S

Listens on 127.0.0.1 (an ephemeral port, written to F once it listens),
forwards every connection to --target and counts the TCP payload bytes each
way: "up" is client -> registry (requests, uploads), "down" is registry ->
client (responses, downloads). On SIGTERM or SIGINT it writes the counts as
JSON to S and exits. A byte is counted before it is forwarded, so once the
client has seen a response, its bytes are in the counts: stopping the proxy
after the measured command has exited loses nothing.

It also notes the HTTP request lines it sees going up (method and path, by
a plain pattern match on the stream; a layer's bytes could in principle
match it too), so the report can say how many blobs were mounted or
uploaded. It does not parse or alter anything: bytes pass as they are.
Standard library only; nothing listens beyond 127.0.0.1.
"""

import argparse
import json
import os
import re
import signal
import socket
import sys
import threading

BUF = 1 << 20
# No anchor before the method: a request that follows a body (an upload's
# PATCH, then the PUT) starts right after the body's last byte.
REQUEST = re.compile(rb"(GET|HEAD|POST|PUT|PATCH|DELETE) (/v2/\S*) HTTP/1\.[01]\r\n")


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.up = 0
        self.down = 0
        self.connections = 0
        self.requests = {}  # method -> count
        self.mounts = 0  # POST .../blobs/uploads/?mount=
        self.blob_gets = 0  # GET .../blobs/sha256:...
        self.log = []  # "METHOD PATH" in the order seen

    def add(self, direction, n):
        with self.lock:
            if direction == "up":
                self.up += n
            else:
                self.down += n

    def request(self, method, path):
        with self.lock:
            self.requests[method] = self.requests.get(method, 0) + 1
            self.log.append("%s %s" % (method, path))
            if method == "POST" and "mount=" in path:
                self.mounts += 1
            if method == "GET" and "/blobs/sha256:" in path:
                self.blob_gets += 1

    def as_dict(self):
        with self.lock:
            return {
                "up": self.up,
                "down": self.down,
                "connections": self.connections,
                "requests": dict(sorted(self.requests.items())),
                "mounts": self.mounts,
                "blob_gets": self.blob_gets,
            }


def pump(src, dst, stats, direction):
    tail = b""  # the end of the previous read, so a request line split across reads is seen
    try:
        while True:
            data = src.recv(BUF)
            if not data:
                break
            stats.add(direction, len(data))
            if direction == "up":
                window = tail + data
                for m in REQUEST.finditer(window):
                    # a match wholly inside the old tail was counted last time
                    if m.end() > len(tail):
                        stats.request(m.group(1).decode(), m.group(2).decode("latin-1"))
                tail = window[-512:]
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
            try:
                s.shutdown(how)
            except OSError:
                pass


def serve(client, target, stats):
    try:
        upstream = socket.create_connection(target)
    except OSError as e:
        print(f"countproxy: cannot reach {target[0]}:{target[1]}: {e}", file=sys.stderr)
        client.close()
        return
    for s in (client, upstream):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    t = threading.Thread(target=pump, args=(upstream, client, stats, "down"), daemon=True)
    t.start()
    pump(client, upstream, stats, "up")
    t.join()
    client.close()
    upstream.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", required=True, help="HOST:PORT of the registry (loopback)")
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--stats", required=True)
    ap.add_argument("--requests", help="also write the request lines seen, one a line, here")
    a = ap.parse_args()
    host, _, port = a.target.rpartition(":")
    target = (host, int(port))

    stats = Stats()
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(64)

    def stop(_sig, _frame):
        tmp = a.stats + ".tmp"
        with open(tmp, "w") as f:
            json.dump(stats.as_dict(), f)
            f.write("\n")
        os.replace(tmp, a.stats)
        if a.requests:
            with open(a.requests, "w") as f:
                with stats.lock:
                    f.writelines(line + "\n" for line in stats.log)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    tmp = a.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{lsock.getsockname()[1]}\n")
    os.replace(tmp, a.port_file)

    while True:
        try:
            client, _ = lsock.accept()
        except InterruptedError:
            continue
        with stats.lock:
            stats.connections += 1
        threading.Thread(target=serve, args=(client, target, stats), daemon=True).start()


if __name__ == "__main__":
    main()
