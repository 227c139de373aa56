#!/usr/bin/env python3
"""Writes the two sample images the demo uses: samples/app-1.tar and samples/app-2.tar.

They are docker-archive tars (the layout `docker save` writes, Docker >= 25 paths), made
without a Docker daemon so the demo runs anywhere. Content is generated deterministically:
a base layer shared by both versions, an application layer that changes between them
(an edited "binary", an upgraded versioned library, a config change, a removed file) and a
data layer added in version 2. Re-running this script reproduces the same bytes.

Usage: python3 samples/make-samples.py
"""
import hashlib
import io
import json
import os
import random
import tarfile

HERE = os.path.dirname(os.path.abspath(__file__))


def blob(seed, size):
    rng = random.Random(seed)
    words = [b"import ", b"return ", b"def ", b"self.", b"value", b" = ", b"\n    ", b"# note\n", b"(x, y)", b"None"]
    out = bytearray()
    while len(out) < size:
        if rng.random() < 0.15:
            out += rng.randbytes(16)
        else:
            out += rng.choice(words)
    return bytes(out[:size])


def layer(files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        dirs = sorted({os.path.dirname(n) for n in files if os.path.dirname(n)})
        for d in dirs:
            parts = d.split("/")
            for i in range(1, len(parts) + 1):
                p = "/".join(parts[:i])
                if p in t.getnames():
                    continue
                ti = tarfile.TarInfo(p)
                ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, 1700000000
                t.addfile(ti)
        for name in sorted(files):
            data, mode = files[name]
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.mtime = len(data), mode, 1700000000
            t.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def sha(b):
    return hashlib.sha256(b).hexdigest()


def archive(path, tag, layers):
    config = json.dumps({
        "architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
        "config": {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin"], "Cmd": ["/app/bin/server"]},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + sha(l) for l in layers]},
        "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "make-samples.py"} for _ in layers],
    }, sort_keys=True).encode()
    members = [("blobs/sha256/" + sha(l), l) for l in layers]
    members.append(("blobs/sha256/" + sha(config), config))
    manifest = [{"Config": "blobs/sha256/" + sha(config), "RepoTags": [tag],
                 "Layers": ["blobs/sha256/" + sha(l) for l in layers]}]
    members.append(("manifest.json", json.dumps(manifest).encode()))
    seen = set()
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as t:
        for name, data in members:
            if name in seen:
                continue
            seen.add(name)
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.mtime = len(data), 0o644, 0
            t.addfile(ti, io.BytesIO(data))


def main():
    base = layer({
        "etc/os-release": (b"NAME=sample\nVERSION=1\n", 0o644),
        "usr/lib/libc-sample.so.6": (blob(1, 400_000), 0o755),
        "usr/share/doc/README": (blob(2, 30_000), 0o644),
    })
    server_v1 = blob(3, 300_000)
    server_v2 = bytearray(server_v1)
    server_v2[50_000:50_400] = blob(4, 400)          # a patched function
    server_v2 += blob(5, 8_000)                       # new code at the end
    app1 = layer({
        "app/bin/server": (server_v1, 0o755),
        "app/lib/libjson.so.1.4.2": (blob(6, 120_000), 0o644),
        "app/config.yaml": (b"port: 8080\nworkers: 4\n", 0o644),
        "app/legacy.py": (blob(7, 5_000), 0o644),
    })
    lib2 = bytearray(blob(6, 120_000))
    lib2[10_000:10_100] = blob(8, 100)
    app2 = layer({
        "app/bin/server": (bytes(server_v2), 0o755),
        "app/lib/libjson.so.1.4.3": (bytes(lib2), 0o644),
        "app/config.yaml": (b"port: 8080\nworkers: 8\n", 0o644),
    })
    data = layer({"app/data/model.bin": (blob(9, 60_000), 0o644)})
    archive(os.path.join(HERE, "app-1.tar"), "sample/app:1", [base, app1])
    archive(os.path.join(HERE, "app-2.tar"), "sample/app:2", [base, app2, data])
    print("wrote samples/app-1.tar and samples/app-2.tar")


if __name__ == "__main__":
    main()
