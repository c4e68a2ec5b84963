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
namespace, looks at MAX_EXAMINED names, removes MAX_REMOVALS, stops at SWEEP_BUDGET or the deadline; finding
this target's queued directory (by prefix) is never cut short.
"""
from __future__ import annotations

import os
import time

from . import procfs
from .fdops import open_root_base, remove_entry, writable_by
from .private import ours_too
from .procfs import pidns

MAX_REMOVALS = 16     # dead directories removed per sweep (the usual count is 0 or 1; an rmdir in a
                      # directory of 20 000 entries measured 2 ms)
MAX_EXAMINED = 512    # other processes' names parsed per sweep, from a random place (parsing 20 000: ~200 ms)
SWEEP_BUDGET = 0.5    # seconds at most


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


def sweep(rt, bases, reader, keep=None, until=None, others=True):
    """Remove dead private directories under ``bases``; return the base and name of this target's queued
    injection (to adopt), or None. ``reader`` reads the target's slot (slot.Reader); ``keep`` is a name
    never to remove (our own); ``until`` a monotonic deadline the sweep never passes (the injection's);
    ``others``: also other processes' directories. Without a readable slot, this target's directories are
    left alone: we cannot tell a queued one from a dead one."""
    proc = rt.proc
    me = (proc.inner_pid, proc.start_ticks, pidns(proc.pid) or 0)
    mine = "wand-%d-%d-%d-" % me
    current = reader.read() if reader is not None else None
    gids = set(int(g) for g in (proc.status.get("Groups") or "").split()) | {proc.egid}
    queued = None
    stop = time.monotonic() + SWEEP_BUDGET
    stop = stop if until is None else min(stop, until)
    done = [0, 0]  # removed, examined
    alive_now = Liveness()
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
                try:
                    names = os.listdir(base_fd)
                except OSError:
                    continue
                # This target's own, found by prefix (never cut short: its queued bootstrap is adopted).
                for name in [n for n in names if n.startswith(mine)]:
                    if name == keep or dir_fields(name) != me or current is None:
                        continue
                    if root == rt.root_dir and current.holds(base.rstrip("/") + "/" + name + "/bootstrap.py"):
                        queued = queued or (base, name)
                    elif done[0] < MAX_REMOVALS and time.monotonic() < stop:
                        remove_entry(base_fd, name, until=stop)
                        done[0] += 1
                if others and names:
                    at = int.from_bytes(os.urandom(2), "big") % len(names)  # later sweeps look elsewhere
                    remove_dead(base_fd, names[at:] + names[:at], mine, alive_now, done, stop)
            finally:
                os.close(base_fd)
    return queued


def remove_dead(base_fd, names, mine, alive_now, done, stop):
    """Other processes' directories whose process is gone, within the sweep's bounds (``done``: counts)."""
    for name in names:
        if done[0] >= MAX_REMOVALS or done[1] >= MAX_EXAMINED or time.monotonic() >= stop:
            return
        fields = None if name.startswith(mine) else dir_fields(name)
        if fields is None:
            continue
        done[1] += 1
        if not alive_now(*fields):
            remove_entry(base_fd, name, until=stop)
            done[0] += 1
