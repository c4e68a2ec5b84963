"""The tests' own helpers start their children with the signals they deliver at their defaults, even when the
test run inherited them ignored (a job started with `&` by a non-interactive shell ignores SIGINT and
SIGQUIT, as under some CI runners) or blocked."""
from __future__ import annotations

import os
import signal
import sys

import pytest

from procs import DELIVERED


def mask(status: str, field: str) -> int:
    for line in status.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1], 16)
    raise AssertionError("no %s in %r" % (field, status))


def bits(signums) -> int:
    return sum(1 << (s - 1) for s in signums)


@pytest.fixture
def as_if_started_in_the_background(monkeypatch, tmp_path):
    """This test process ignores SIGINT and SIGQUIT and blocks SIGTERM while the test runs; the CLI the
    helpers start (sys.executable) is replaced by a program that prints its own signal masks."""
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\nexec cat /proc/self/status\n")
    fake.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(fake))
    saved = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGQUIT)}
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        for s, handler in saved.items():
            signal.signal(s, handler)


def assert_defaults(status: str):
    assert mask(status, "SigIgn") & bits(DELIVERED) == 0, status
    assert mask(status, "SigBlk") & bits(DELIVERED) == 0, status


def test_a_child_started_plainly_would_inherit_them(as_if_started_in_the_background):
    import subprocess
    status = subprocess.run([sys.executable], capture_output=True, text=True, timeout=30).stdout
    assert mask(status, "SigIgn") & bits([signal.SIGINT, signal.SIGQUIT]) == bits([signal.SIGINT, signal.SIGQUIT])
    assert mask(status, "SigBlk") & bits([signal.SIGTERM]) == bits([signal.SIGTERM])


def test_the_wand_fixture_starts_the_cli_with_default_signals(as_if_started_in_the_background, wand):
    assert_defaults(wand("version").stdout)


def test_the_cli_helpers_start_it_with_default_signals(as_if_started_in_the_background, monkeypatch):
    from test_trust_local import cli
    run = cli("version")
    assert_defaults(run.communicate(timeout=30)[0].decode())
    monkeypatch.syspath_prepend(os.path.join(os.path.dirname(os.path.abspath(__file__)), "e2e"))
    from test_kube_verbs import Attached
    attached = Attached(dict(os.environ))
    assert_defaults(attached.proc.communicate(timeout=30)[0])


def test_targets_start_with_default_signals(as_if_started_in_the_background, spawn, tmp_path):
    target = tmp_path / "target"
    target.write_text("#!/bin/sh\necho READY pid=$$\nexec sleep 60\n")
    target.chmod(0o755)
    app = spawn("none", argv=[str(target)])
    with open("/proc/%d/status" % app.pid) as f:
        assert_defaults(f.read())
