"""Where the target would import debugpy from, read from its files (no injection): ``check`` reports it and
``attach`` decides from it whether to ship debugpy before injecting (the hello still has the last word)."""
from __future__ import annotations

import glob
import os

from . import processes


def find_debugpy(proc):
    """(where ``import debugpy`` would load it from, or None; (a copy off its path, why) or None), from the
    target's command line, environment and site directories (no injection).

    Python's path: the script's directory; $PYTHONPATH unless -E/-I; site-packages unless -S.
    """
    flags, _xopts = processes.python_options(proc.cmdline)
    env = proc.environ() or {}
    exe = proc.in_target_view(proc.exe or "").replace(" (deleted)", "")
    name = os.path.basename(exe)
    ver = name[len("python"):] if name.startswith("python") and "." in name else "3*"
    prefixes = {os.path.dirname(os.path.dirname(exe)), "/usr", "/usr/local"}
    if proc.cmdline:
        first = proc.cmdline[0]
        if first.startswith("/") and os.path.basename(os.path.dirname(first)) == "bin":
            prefixes.add(os.path.dirname(os.path.dirname(first)))  # a virtualenv's bin/python
    site = [p + "/lib/python%s/%s-packages" % (ver, kind) for p in prefixes for kind in ("site", "dist")]
    site += ["/usr/lib/python3/dist-packages"]
    path = []
    script = script_of(proc.cmdline)
    if script and "P" not in flags and "I" not in flags:
        path.append(os.path.dirname(os.path.join(proc.in_target_view(proc.cwd) or "/", script)))
    if not flags & {"E", "I"}:
        path += [p for p in env.get("PYTHONPATH", "").split(":") if p.startswith("/")]
    if "S" not in flags:
        path += site
    for where in path:
        hit = locate(proc, where)
        if hit:
            return hit, None
    if "S" in flags:
        for where in site:
            hit = locate(proc, where)
            if hit:
                return None, (hit, "the target runs with python -S, which leaves site-packages off its path")
    return None, None


def script_of(cmdline):
    """The script a Python command line runs, or None (-c, -m, or the interactive prompt)."""
    args = cmdline[1:]
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("-c", "-m") or arg.startswith(("-c", "-m")) or arg == "-":
            return None
        if arg.startswith(("-X", "-W")) and len(arg) == 2:
            i += 2
            continue
        if not arg.startswith("-"):
            return arg
        i += 1
    return None


def locate(proc, where):
    """``where``/debugpy as the target sees it, if it exists there (``where`` may hold a glob)."""
    for hit in glob.glob(proc.host_path(where + "/debugpy")):
        return proc.in_target_view(hit[len("/proc/%d/root" % proc.pid):])
    return None
