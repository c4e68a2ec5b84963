"""Waiting on the target: for its bootstrap to connect, for its answer, and for the moment it exits.

Every wait watches the target itself too, so its end is seen at once rather than at the deadline: a pidfd
(``os.pidfd_open``, Python >= 3.9, Linux >= 5.3) turns readable when it exits; without one, its
``/proc/PID/stat`` start time is checked between short select() slices. While the bootstrap is awaited
the target's pending-script slot (slot.py) is read every ``SLOT_POLL`` seconds: no event announces that
the main thread took the script, so this is a sampling loop, not a sleep.
"""
from __future__ import annotations

import os
import select
import time

from . import procfs

SLOT_POLL = 0.1
# How long after the main thread took our script its bootstrap may take to connect. Measured from the flag
# clearing to the connection, 160 injections into a busy loop and an HTTP server on 2 loaded cores (load
# average 3): median 0.1 ms, 90th percentile 6 ms, worst 16 ms. Past this, with the bootstrap still unread,
# the script was refused. Generous, because judging too early would delete a bootstrap about to be opened.
TAKEN_GRACE = 1.0


# Whether the CLI went away (set by main.serve_stdio in a pod: our stdin, the CLI's end of kubectl exec -i, hung
# up), or the operation was asked to stop (``stopping``: Ctrl-C, a terminal session's client gone before its
# first prompt). The waits below then end at once, as at their deadline, so the agent leaves within a slot poll instead
# of holding the target's lock until --timeout (seen: a retry refused as busy for ~50 s after a Ctrl-C on a
# pending injection; a pdb given up before its prompt waited the whole --timeout).
cli_gone = None


_STOPS = None  # per thread: the stop Event of the operation this thread runs (stopping)


def abandoned() -> bool:
    if cli_gone is not None and cli_gone():
        return True
    stop = getattr(_STOPS, "stop", None) if _STOPS is not None else None
    return stop is not None and stop.is_set()


class stopping:
    """``with stopping(stop):`` the waits this thread makes end as abandoned once ``stop`` (an Event) is set.
    Per thread (an agent in this CLI's process may serve several targets at once), with _thread's local: the
    agent's start does not import threading."""

    def __init__(self, stop):
        global _STOPS
        if _STOPS is None:
            import _thread
            _STOPS = _thread._local()
        self.stop = stop

    def __enter__(self):
        self.earlier = getattr(_STOPS, "stop", None)
        _STOPS.stop = self.stop
        return self

    def __exit__(self, *exc):
        _STOPS.stop = self.earlier


class Exited(Exception):
    """The target exited while we waited."""


class Watch:
    def __init__(self, proc, reader=None):
        self.proc, self.reader = proc, reader
        self.pidfd = None
        if hasattr(os, "pidfd_open"):
            try:
                self.pidfd = os.pidfd_open(proc.pid)
            except OSError:
                self.pidfd = None  # gone already, or a kernel without pidfds: fall back to /proc

    def close(self):
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None

    def alive(self) -> bool:
        try:
            proc = procfs.Proc(self.proc.pid)
        except (ProcessLookupError, ValueError, IndexError):
            return False
        return proc.start_ticks == self.proc.start_ticks and proc.state not in ("Z", "X")

    def exits_within(self, seconds: float) -> bool:
        """Whether the target is gone, or goes within ``seconds``: a dying process closes its sockets
        (we see EOF) before the kernel marks it exited, so right after an EOF it may still look alive."""
        until = time.monotonic() + seconds
        while True:
            if self.pidfd is not None:
                if select.select([self.pidfd], [], [], max(0.0, min(0.05, until - time.monotonic())))[0]:
                    return True
            if not self.alive():
                return True
            if time.monotonic() >= until:
                return False
            if self.pidfd is None:
                time.sleep(0.05)  # no pidfd to wait on: look at /proc again shortly

    def state(self):
        try:
            return procfs.Proc(self.proc.pid).state
        except (ProcessLookupError, ValueError, IndexError):
            return None

    def readable(self, sock, until: float, slice_: float = 0.25, abandon=None) -> bool:
        """Wait until ``sock`` is readable (True) or ``until`` passes (False), or ``abandon()`` is true (False,
        looked at every ``slice_``); raise Exited when the target exits first."""
        while True:
            left = until - time.monotonic()
            if left <= 0 or abandon is not None and abandon():
                return False
            fds = [sock] + ([self.pidfd] if self.pidfd is not None else [])
            ready, _, _ = select.select(fds, [], [], min(left, slice_))
            if sock in ready:
                return True
            if (self.pidfd is not None and self.pidfd in ready) or not self.alive():
                raise Exited()

    def bootstrap(self, listener, script: str, has_bootstrap, until: float):
        """Wait for the bootstrap at ``script`` to connect to ``listener``.

        Returns ``("connected", conn)``, or ``(verdict, None)`` with verdict one of
        ``pending`` (still queued at ``until``), ``refused`` (the main thread took it, it never ran),
        ``replaced`` (another script took the slot), ``lost`` (it ran, it never connected) or ``unknown``
        (the slot cannot be read and nothing connected). Raises Exited.
        """
        taken_at = None
        while True:
            now = time.monotonic()
            if taken_at is not None and now > taken_at + TAKEN_GRACE and has_bootstrap():
                return "refused", None  # taken long ago, still unread: it will never run
            limit = until if taken_at is None else max(until, taken_at + TAKEN_GRACE)
            if now >= limit or taken_at is None and abandoned():
                if taken_at is None:  # taken in the last slice before the deadline (--timeout 1ms): it runs
                    current = self.reader.read() if self.reader is not None else None  # now, give it the grace
                    if current is not None and not current.holds(script) and current.path == script:
                        taken_at = now
                        continue
                break
            if self.readable(listener, min(limit, now + SLOT_POLL)):
                conn, _ = listener.accept()
                return "connected", conn
            current = self.reader.read() if self.reader is not None else None
            if current is None or current.holds(script):
                continue
            if current.pending or current.path != script:
                return "replaced", current.path
            taken_at = taken_at or time.monotonic()  # taken: it runs now, or never will
        current = self.reader.read() if self.reader is not None else None
        if current is None:
            return "unknown", None
        if current.holds(script):
            return "pending", None
        if current.path != script:
            return "replaced", current.path
        return ("refused" if has_bootstrap() else "lost"), None
