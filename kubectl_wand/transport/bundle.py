"""The agent as it travels to a pod: its module sources, verbatim and compressed, on stdin after agent/boot.py.

agent/boot.py reads that line and loads the modules in memory (nothing is written to the container's disk).
Only what an operation needs is sent: listing 20 pods must not ship debugpy's server code 20 times.
"""
from __future__ import annotations

import os
import threading

from .. import agent as agent_pkg
from ..agent.processes import AGENT_LOADER

# The command line stays tiny (it shows up in `ps`, kubelet URLs and error messages): it reads
# agent/boot.py's source as the first stdin line and runs it. Defined beside the listing that recognises our own
# agents by it (they are never listed as the app's processes).
LOADER = AGENT_LOADER

# -S: no `site`. The agent needs only the standard library, and skipping site-packages (.pth files and any
# sitecustomize: APM auto-instrumentation, for one, would otherwise start inside our agent) saves ~10 ms of CPU
# per pod: measured 2.01 instead of 2.22 s for `kubectl exec POD -- python3 -c pass` into 20 pods at once.
AGENT_ARGS = ["-S", "-c", LOADER]

_SOURCES = {}
_LOCK = threading.Lock()


def sources() -> dict:
    with _LOCK:  # pods are listed from several threads at once
        if not _SOURCES:
            here = os.path.dirname(agent_pkg.__file__)
            files = [(name, os.path.join(here, name + ".py")) for name in agent_pkg.MODULES + ("boot",)]
            files += [(name, os.path.join(here, "passengers", name + ".py")) for name in agent_pkg.PASSENGERS]
            for name, path in files:
                with open(path, encoding="utf-8") as f:
                    _SOURCES[name] = f.read()
    return _SOURCES


_HEADERS = {}
PIPE_ROOM = 60 * 1024  # a pipe holds 64 KiB: the header, with the boot line and the request, must fit


def agent_header(op=None, extra=()) -> bytes:
    """The agent's module sources as agent/boot.py reads them (only what ``op`` needs): a line with a size N,
    then N bytes of zlib(marshal((order, {name: source}))). marshal format 4 (strings, lists, a dict, a tuple)
    reads the same in every Python since 3.4; it only ever carries what this CLI made.

    Everything fits in a pipe's 64 KiB buffer, so writing it never waits for kubectl's exec stream to come up
    (seen: a 118 KB header blocked the write and held back the API read that should overlap the exec), and a
    fraction of the bytes cross the API server and the kubelet."""
    order, passengers = agent_pkg.modules_for(op)
    if extra and "runtime" in order:  # modules runtime uses when present (agent.CROSS_CONTAINER): before it
        at = order.index("runtime")
        order = order[:at] + tuple(extra) + order[at:]
    key = (order, passengers)
    if key not in _HEADERS:
        import marshal
        import zlib
        src = sources()
        # Level 1: 1.3 instead of 3.1 ms (stack's modules; exec's 1.4 instead of 5.0) for 29 instead of 24 KB,
        # spent while kubectl starts its exec on the same cores
        raw = marshal.dumps((list(order), {k: src[k] for k in order + passengers}), 4)
        packed = zlib.compress(raw, 1)
        if len(packed) > PIPE_ROOM:  # trace's modules (68 KB at level 1): level 9 is ~20 % smaller, for ~5 ms
            packed = zlib.compress(raw, 9)
        _HEADERS[key] = b"%d\n" % len(packed) + packed
    return _HEADERS[key]


def boot_line() -> bytes:
    """The line LOADER executes: ``exec('<agent/boot.py>')``, the source as a Python string literal on one line."""
    return b"exec(%s)\n" % ascii(sources()["boot"]).encode()
