"""The end of every private directory's life that no one else can reach: directories whose target is gone.

A directory outlives its injection in one case by design: the bootstrap is queued in the target (its main
thread has not reached a safe point yet) and must stay until the target takes it, then it removes itself.
It also outlives a kubectl wand that was killed. Its name, ``wand-PID-START-NS-RANDOM``, says whose it is:
the target's pid in its own pid namespace, its start time (clock ticks since boot) and that namespace's
inode. Each injection sweeps the target's temporary directories (and, in loader mode, ours) and removes
- directories of a process that is gone or was replaced (same pid, other start time);
- directories of this very target whose bootstrap is no longer queued (read from its memory: slot.py);
and hands back this target's still-queued one, which the new injection adopts instead of queueing a second
script over it (the target has one slot: the first would never run and its directory would stay forever).
A name we cannot parse, or a namespace we cannot see, is left alone.
"""
from __future__ import annotations

import os

from . import procfs
from .fdops import open_root_base, remove_entry, writable_by
from .private import ours_too
from .procfs import pidns

def dir_fields(name: str):
    r"""(pid, start ticks, pid namespace) of a private directory's name r"wand-(\d+)-(\d+)-(\d+)-[0-9a-f]{12}"
    (private.dir_name; "wand-check-*" never matches), else None. By hand: re costs ~6 ms of the agent's start."""
    parts = name.split("-")
    if len(parts) != 5 or parts[0] != "wand" or len(parts[4]) != 12 or parts[4].strip("0123456789abcdef"):
        return None
    if not all(p and not p.strip("0123456789") for p in parts[1:4]):
        return None
    return int(parts[1]), int(parts[2]), int(parts[3])


def alive(pid: int, start: int, ns: int) -> bool:
    """Whether process ``pid`` of pid namespace ``ns`` still runs with that start time. When the namespace
    is not visible from here we cannot tell: answer True (keep the directory)."""
    if ns == pidns(os.getpid()) or ns == 0:
        try:
            return procfs.Proc(pid).start_ticks == start
        except (ProcessLookupError, ValueError, IndexError):
            return False
    seen_ns = False
    for other in procfs.all_pids():
        if pidns(other) != ns:
            continue
        seen_ns = True
        try:
            proc = procfs.Proc(other)
        except (ProcessLookupError, ValueError, IndexError):
            continue
        if proc.inner_pid == pid:
            return proc.start_ticks == start
    return not seen_ns


def listing(base_fd: int):
    """(name, pid, start, ns) for every private directory name in an open base directory."""
    try:
        names = os.listdir(base_fd)
    except OSError:
        return []
    out = []
    for name in names:
        fields = dir_fields(name)
        if fields:
            out.append((name,) + fields)
    return out


def sweep(rt, bases, reader, keep=None):
    """Remove dead private directories under ``bases``; return the base and name of this target's queued
    injection (to adopt), or None. ``reader`` reads the target's slot (slot.Reader); ``keep`` is a name
    never to remove (our own). Without a readable slot, this target's directories are left alone: we
    cannot tell a queued one from a dead one."""
    proc = rt.proc
    me = (proc.inner_pid, proc.start_ticks, pidns(proc.pid) or 0)
    current = reader.read() if reader is not None else None
    gids = set(int(g) for g in (proc.status.get("Groups") or "").split()) | {proc.egid}
    queued = None
    roots = [rt.root_dir] + (["/"] if rt.mode == "loader" else [])  # our own view holds placeholders
    for root in roots:
        for base in bases:
            if root != rt.root_dir and not ours_too(base):
                continue  # the target's $TMPDIR names a directory of its view only
            try:
                base_fd = open_root_base(root, base)
            except OSError:
                continue
            try:
                if not writable_by(os.fstat(base_fd), proc.euid, gids):
                    continue  # we never made a directory there (private.PrivateDir): none of ours to remove
                for name, pid, start, ns in listing(base_fd):
                    if name == keep:
                        continue
                    if (pid, start, ns) == me:
                        if current is None:
                            continue
                        if root == rt.root_dir and current.holds(base.rstrip("/") + "/" + name + "/bootstrap.py"):
                            queued = queued or (base, name)
                            continue
                    elif alive(pid, start, ns):
                        continue
                    remove_entry(base_fd, name)
            finally:
                os.close(base_fd)
    return queued

