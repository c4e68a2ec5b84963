"""A pure-Python debugpy to ship into targets that lack one.

Built from the debugpy installed beside kubectl-wand: only its source files (no compiled speedups, which
are built for *our* interpreter, not the target's), as a tar.gz cached per version.
"""
from __future__ import annotations

import importlib.util
import os

from .errors import ENVIRONMENT, WandError

SKIP_SUFFIXES = (".so", ".pyd", ".dll", ".dylib", ".exe", ".pyc", ".pdb", ".lib")


def source_dir() -> str:
    spec = importlib.util.find_spec("debugpy")
    if spec is None or not spec.origin:
        raise WandError("debugpy is not installed beside kubectl-wand, so it cannot be shipped to a target "
                        "that lacks it; pip install debugpy", ENVIRONMENT)
    return os.path.dirname(spec.origin)


def blob(name: str = "debugpy") -> bytes:
    src = source_dir()
    version = "unknown"
    try:
        with open(os.path.join(src, "_version.py")) as f:
            for line in f:
                if '"version"' in line:
                    version = line.split(":")[1].strip().strip('",')
    except OSError:
        pass
    from . import usercache
    name = "debugpy-%s-pure.tar.gz" % version
    if version != "unknown":
        cached = usercache.read(name)  # it is shipped into targets: only a file private to us is used
        if cached:
            return cached
    import io
    import tarfile
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=6) as tar:
        for dirpath, dirnames, filenames in os.walk(src):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            for fname in sorted(filenames):
                if fname.endswith(SKIP_SUFFIXES):
                    continue
                full = os.path.join(dirpath, fname)
                tar.add(full, arcname=os.path.join("debugpy", os.path.relpath(full, src)))
    data = buf.getvalue()
    if version != "unknown":
        usercache.write(name, data)  # a read-only cache only costs rebuilding next time
    return data
