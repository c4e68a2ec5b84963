#!/usr/bin/env python3
"""Assemble a docker-archive image tar (what `ctr images import` and `kind load image-archive` read)
from ready layer tars. Usage:
  mkimage.py OUT.tar REF [--layer L.tar]... [--env K=V]... [--workdir DIR] [--user U] -- CMD...
"""
import argparse, hashlib, io, json, os, sys, tarfile


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("ref")
    ap.add_argument("--layer", action="append", default=[])
    ap.add_argument("--env", action="append", default=[])
    ap.add_argument("--workdir", default="/")
    ap.add_argument("--user", default="")
    argv = sys.argv[1:]
    cmd = []
    if "--" in argv:
        i = argv.index("--")
        argv, cmd = argv[:i], argv[i + 1:]
    a = ap.parse_args(argv)
    a.cmd = cmd
    diff_ids = [sha256_file(p) for p in a.layer]
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {"Env": a.env, "Cmd": a.cmd or None, "WorkingDir": a.workdir, "User": a.user},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + d for d in diff_ids]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "kubectl-wand hack/cluster"} for _ in diff_ids],
    }
    cfg = json.dumps(config, sort_keys=True).encode()
    cfg_name = hashlib.sha256(cfg).hexdigest() + ".json"
    layer_names = [d + "/layer.tar" for d in diff_ids]
    manifest = json.dumps([{"Config": cfg_name, "RepoTags": [a.ref], "Layers": layer_names}]).encode()
    tmp = a.out + ".tmp"
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as t:
        def add_bytes(name, data):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mtime = 0
            t.addfile(ti, io.BytesIO(data))
        add_bytes(cfg_name, cfg)
        for path, name in zip(a.layer, layer_names):
            ti = t.gettarinfo(path, arcname=name)
            ti.mtime = 0
            ti.uid = ti.gid = 0
            ti.uname = ti.gname = ""
            with open(path, "rb") as f:
                t.addfile(ti, f)
        add_bytes("manifest.json", manifest)
    os.replace(tmp, a.out)


if __name__ == "__main__":
    main()
