#!/usr/bin/env python3
"""Write a docker-archive tar (the `docker save` layout) without a daemon.

usage: mkimage.py OUT.tar REPO:TAG LAYER.tar [LAYER.tar ...]

Each LAYER.tar is an uncompressed layer tar (made by run.sh with GNU tar and
fixed owner/mtime/order). The config's rootfs.diff_ids are the layers'
sha256; the config file is named after its own sha256, so the image ID is
sha256:<that hex>. Prints the image ID on stdout.
"""
import hashlib
import io
import json
import os
import sys
import tarfile


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def add_bytes(tar, name, data):
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    ti.mtime = 0
    ti.mode = 0o644
    tar.addfile(ti, io.BytesIO(data))


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    out, tag, layers = sys.argv[1], sys.argv[2], sys.argv[3:]
    diff_ids = [sha256_file(p) for p in layers]
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + d for d in diff_ids]},
        "history": [
            {"created": "1970-01-01T00:00:00Z", "created_by": "bench layer %d" % i}
            for i in range(len(layers))
        ],
    }
    config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    config_hex = hashlib.sha256(config_bytes).hexdigest()
    layer_names = ["%s/layer.tar" % d for d in diff_ids]
    manifest = [{"Config": config_hex + ".json", "RepoTags": [tag], "Layers": layer_names}]
    repo, _, t = tag.rpartition(":")
    repositories = {repo: {t: diff_ids[-1]}}

    tmp = out + ".tmp"
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        done = set()
        for path, d in zip(layers, diff_ids):
            if d in done:
                continue
            done.add(d)
            ti = tarfile.TarInfo(d)
            ti.type = tarfile.DIRTYPE
            ti.mode = 0o755
            ti.mtime = 0
            tar.addfile(ti)
            ti = tar.gettarinfo(path, arcname="%s/layer.tar" % d)
            ti.mtime, ti.uid, ti.gid, ti.uname, ti.gname, ti.mode = 0, 0, 0, "", "", 0o644
            with open(path, "rb") as f:
                tar.addfile(ti, f)
        add_bytes(tar, config_hex + ".json", config_bytes)
        add_bytes(tar, "manifest.json", json.dumps(manifest).encode())
        add_bytes(tar, "repositories", json.dumps(repositories).encode())
    os.replace(tmp, out)
    print("sha256:" + config_hex)


if __name__ == "__main__":
    main()
