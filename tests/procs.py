"""Helpers for tests that start real processes: where the test apps are, reading a line with a deadline,
dropping to another uid, starting a child with its signals at their defaults. A module of its own, because
two conftest.py files (tests/ and tests/e2e/) make `from conftest import ...` depend on which one pytest
loaded first."""
from __future__ import annotations

import os
import select
import signal
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APPS = os.path.join(REPO, "tests", "apps")


def read_line(stream, timeout):
    fd = stream.fileno()
    deadline = time.monotonic() + timeout
    buf = b""
    while b"\n" not in buf:
        r, _, _ = select.select([fd], [], [], max(0, deadline - time.monotonic()))
        if not r:
            return buf.decode(errors="replace")
        chunk = os.read(fd, 1)
        if not chunk:
            break
        buf += chunk
    return buf.decode(errors="replace").strip()


# Signals the tests deliver to their children (or that end them). Ignored signals survive exec: a job that a
# non-interactive shell starts with `&` (as some CI runners start the tests) ignores SIGINT and SIGQUIT,
# `nohup` ignores SIGHUP, and the CLI rightly keeps what it inherited. So every child the tests start gets
# these at their defaults and unblocked, whatever the test run itself inherited.
DELIVERED = (signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


def default_signals():
    """preexec_fn for a child the tests signal: DELIVERED at SIG_DFL and no signal blocked."""
    for signum in DELIVERED:
        signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())


def become(uid):
    def switch():
        default_signals()
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    return switch


def wait_for(predicate, timeout=20.0, interval=0.05):
    """Poll a condition until it holds (what is polled has no event to wait on); its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
