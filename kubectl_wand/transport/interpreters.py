"""Which interpreter answered in a pod's container, remembered when one tried before it never greeted.

A ``python3`` on the container's PATH that never answers (a wrapper that blocks) costs HELLO_WITHIN (8 s) before
the next candidate is tried, and nothing kept that: measured on such a pod, every verb took 8.4 s (stack,
exec-py, mem; 0.4 s otherwise), every time. The interpreter that answered after a silent one is kept in the
user's cache (usercache: a file private to us), keyed by what fixes the container's filesystem: the pod's owner
(the ReplicaSet, StatefulSet, Job... whose pods share their template) or the pod itself, and the container. The
next call tries it first; one that no longer answers falls back to the usual order. Only a name among the
container's candidates (transport/kubectl.py: pythons_for) is ever taken from the file.
"""
from __future__ import annotations

import json
import threading

FILE = "interpreters.json"
MAX_ENTRIES = 256  # most recent first kept; an entry is ~100 bytes
_lock = threading.Lock()
_known = None  # the file's entries, read once per run


def key(pod: dict, container: str) -> str:
    meta = pod.get("metadata") or {}
    owners = [o for o in meta.get("ownerReferences") or [] if isinstance(o, dict) and o.get("controller")]
    holder = owners[0].get("uid") if owners else meta.get("uid")
    return "%s/%s/%s" % (meta.get("namespace"), holder or meta.get("name"), container)


def _entries() -> dict:
    global _known
    if _known is None:
        from .. import usercache
        try:
            data = json.loads((usercache.read(FILE) or b"{}").decode("utf-8"))
        except ValueError:
            data = {}
        _known = {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)} \
            if isinstance(data, dict) else {}
    return _known


def first(pod: dict, container: str, candidates: list) -> list:
    """``candidates`` with the one remembered for this container first (when it is one of them)."""
    with _lock:
        remembered = _entries().get(key(pod, container))
    if remembered not in candidates:
        return list(candidates)
    return [remembered] + [c for c in candidates if c != remembered]


def remember(pod: dict, container: str, python: str):
    """Keep ``python`` as the interpreter to try first in this container (a read-only cache: not kept)."""
    from .. import usercache
    with _lock:
        entries = _entries()
        name = key(pod, container)
        if entries.get(name) == python:
            return
        entries.pop(name, None)
        entries[name] = python
        while len(entries) > MAX_ENTRIES:
            entries.pop(next(iter(entries)))
        usercache.write(FILE, json.dumps(entries).encode("utf-8"))


def forget(pod: dict, container: str):
    """The remembered interpreter no longer answers here: try the usual order again next time."""
    from .. import usercache
    with _lock:
        entries = _entries()
        if entries.pop(key(pod, container), None) is not None:
            usercache.write(FILE, json.dumps(entries).encode("utf-8"))
