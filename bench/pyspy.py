"""py-spy, the peer the local observe benchmarks measure beside kubectl wand: the pinned version, found or
pip-installed (a static binary from PyPI)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

PYSPY_VERSION = "0.4.3"


def find_pyspy(explicit):
    """py-spy 0.4.3: given, on PATH, beside this interpreter, or pip-installed from PyPI (a static binary)."""
    candidates = [explicit] if explicit else [shutil.which("py-spy"),
                                              os.path.join(os.path.dirname(sys.executable), "py-spy")]
    for path in candidates:
        if path and os.path.exists(path) and version_of(path) == PYSPY_VERSION:
            return path
    if explicit:
        raise SystemExit("%s is not py-spy %s" % (explicit, PYSPY_VERSION))
    python = sys.executable
    if sys.prefix == sys.base_prefix:  # not a virtualenv: never pip-install into a system Python
        venv = os.path.expanduser("~/.cache/kubectl-wand/bench-venv")
        if not os.path.exists(os.path.join(venv, "bin", "python")):
            subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=300)
        python = os.path.join(venv, "bin", "python")
    print("installing py-spy %s from PyPI into %s" % (PYSPY_VERSION, os.path.dirname(os.path.dirname(python))))
    subprocess.run([python, "-m", "pip", "install", "-q", "py-spy==%s" % PYSPY_VERSION], check=True, timeout=600)
    path = os.path.join(os.path.dirname(python), "py-spy")
    if version_of(path) != PYSPY_VERSION:
        raise SystemExit("pip did not install py-spy %s at %s" % (PYSPY_VERSION, path))
    return path


def version_of(path):
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout
    except OSError:
        return None
    return out.split()[-1] if out.split() else None
