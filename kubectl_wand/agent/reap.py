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
The target's uid can plant such names (20 000 took 19 s per injection): a sweep reads /proc once per
namespace, removes at most MAX_REMOVALS, stops at SWEEP_BUDGET or the deadline; finding this target's queued
directory (by name) is never cut short.
"""
from __future__ import annotations

import os
import time

from . import procfs
from .fdops import open_root_base, remove_entry
from .procfs import pidns

MAX_REMOVALS = 64     # dead directories removed per sweep (the usual count is 0 or 1)
SWEEP_BUDGET = 0.5    # seconds a sweep may spend on other processes' directories (measured: 20 000 names, 4 ms
                      # to list and parse; each removal of an empty directory ~30 us)


def dir_fields(name: str):
    r"""(pid, start ticks, pid namespace) of a private directory's name r"wand-(\d+)-(\d+)-(\d+)-[0-9a-f]{12}"
    (private.dir_name; "wand-check-*" never matches), else None. By hand: re costs ~6 ms of the agent's start."""
    parts = name.split("-")
    if len(parts) != 5 or parts[0] != "wand" or len(parts[4]) != 12 or parts[4].strip("0123456789abcdef"):
        return None
    if not all(p and not p.strip("0123456789") for p in parts[1:4]):
        return None
    return int(parts[1]), int(parts[2]), int(parts[3])


class Liveness:
    """Whether a named process still runs; /proc read once per pid of ours and once for all others."""

    def __init__(self):
        self.own_ns = pidns(os.getpid())
        self.starts = {}      # pid of our namespace -> start ticks (None: gone)
        self.others = None    # namespace -> {pid inside it -> start ticks}

    def __call__(self, pid: int, start: int, ns: int) -> bool:
        """True when its namespace is not visible from here (we cannot tell: keep it)."""
        if ns == self.own_ns or ns == 0:
            if pid not in self.starts:
                try:
                    self.starts[pid] = procfs.Proc(pid).start_ticks
                except (ProcessLookupError, ValueError, IndexError):
                    self.starts[pid] = None
            return self.starts[pid] == start
        if self.others is None:
            self.others = {}
            for other in procfs.all_pids():
                try:
                    proc = procfs.Proc(other)
                except (ProcessLookupError, ValueError, IndexError):
                    continue
                self.others.setdefault(pidns(other), {})[proc.inner_pid] = proc.start_ticks
        if ns not in self.others:
            return True
        return self.others[ns].get(pid) == start


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


def sweep(rt, bases, reader, keep=None, until=None):
    """Remove dead private directories under ``bases``; return the base and name of this target's queued
    injection (to adopt), or None. ``reader`` reads the target's slot (slot.Reader); ``keep`` is a name
    never to remove (our own); ``until`` a monotonic deadline the sweep never passes (the injection's).
    Without a readable slot, this target's directories are left alone: we cannot tell a queued one from a
    dead one."""
    proc = rt.proc
    me = (proc.inner_pid, proc.start_ticks, pidns(proc.pid) or 0)
    current = reader.read() if reader is not None else None
    queued = None
    stop = time.monotonic() + SWEEP_BUDGET
    stop = stop if until is None else min(stop, until)
    removals = 0
    alive_now = Liveness()
    roots = [rt.root_dir] + (["/"] if rt.mode == "loader" else [])  # our own view holds placeholders
    for root in roots:
        for base in bases:
            try:
                base_fd = open_root_base(root, base)
            except OSError:
                continue
            try:
                found = listing(base_fd)
                # This target's own first: adopting its queued bootstrap is never cut short by the budget.
                found.sort(key=lambda entry: entry[1:] != me)
                for name, pid, start, ns in found:
                    if name == keep:
                        continue
                    mine = (pid, start, ns) == me
                    if mine:
                        if current is None:
                            continue
                        if root == rt.root_dir and current.holds(base.rstrip("/") + "/" + name + "/bootstrap.py"):
                            queued = queued or (base, name)
                            continue
                    if removals >= MAX_REMOVALS or time.monotonic() >= stop:
                        if mine:
                            continue  # still looking for its queued one; later sweeps remove the rest
                        break
                    if not mine and alive_now(pid, start, ns):
                        continue
                    remove_entry(base_fd, name, until=stop)
                    removals += 1
            finally:
                os.close(base_fd)
    return queued
