"""An open connection to a thread an op left running in the target (trace's probe, mem's window): the events it
relays to the CLI, the pings that keep it alive, the go of a sync window, and whether the process has exited.
A module of its own so that mem's agent carries it without trace's code: every op's agent, with the boot line
and the request, must fit in a pipe's 64 KiB (transport/bundle.py)."""
from __future__ import annotations

import os
import select
import time

from . import procfs, protocol

PING_EVERY = 1.0
EOF = object()  # the thread in the target closed the connection


class Link:
    """What trace's Relay and mem's Window share: ``emit`` relays events to the CLI, ``stop`` ends the op early,
    ``window`` (main.Window) opens a sync op's window at the CLI's go."""

    def __init__(self, pid, emit, stop, duration, window=None):
        self.pid, self.emit, self.stop, self.duration, self.window = pid, emit, stop, duration, window

    def armed(self, conn):
        """A sync request: tell the CLI the probe is in place and wait for its go (pinging meanwhile), then
        turn the probe's events on. False when the CLI stopped first or the probe ended."""
        self.window.arm({"pid": self.pid})
        next_ping = time.monotonic()
        while not self.window.opened(0.2):
            if self.stop is not None and self.stop.is_set():
                return False
            if time.monotonic() >= next_ping:
                self.send(conn, {"op": "ping"})
                next_ping = time.monotonic() + PING_EVERY
        return self.send(conn, {"op": "go"})

    def send_event(self, event):
        if self.emit is not None:
            try:
                self.emit(event)
            except Exception:
                pass  # the CLI went away: stop is (or will be) set, and removal must still happen

    @staticmethod
    def send(conn, message) -> bool:
        try:
            conn.sendall(protocol.encode(message))
            return True
        except OSError:
            return False


def exited(pid: int, wait: float = 1.0) -> bool:
    """Whether ``pid`` has exited (or does within ``wait`` s): a dying process closes its sockets before it
    becomes a zombie, so the probe's connection can end a moment before the process does."""
    if hasattr(os, "pidfd_open"):
        try:
            fd = os.pidfd_open(pid)  # readable once the process has exited: no polling
        except OSError:
            return True
        try:
            return bool(select.select([fd], [], [], wait)[0])
        finally:
            os.close(fd)
    deadline = time.monotonic() + wait
    while True:
        stat = procfs.read_text("/proc/%d/stat" % pid)
        if stat is None or stat.rpartition(")")[2].split()[0] in ("Z", "X"):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)  # no pidfd (Python < 3.9 in the container): look again
