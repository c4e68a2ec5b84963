"""SIGTERM and SIGHUP end the CLI as Ctrl-C does (profile writes what it sampled, trace prints its summary and
removes its probe), then it exits 128 + the signal: the real CLI against real CPython 3.14 processes (pid/N)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from procs import REPO, default_signals, read_line, wait_for
from test_trace_local import Traffic, line_of, probe_gone

from kubectl_wand.agent import procfs

pytestmark = pytest.mark.py314
SIGNALS = [pytest.param(signal.SIGTERM, id="SIGTERM"), pytest.param(signal.SIGHUP, id="SIGHUP")]


def cli(*args):
    # A session of its own: the signal goes to the CLI alone, as `kill PID` or a closed terminal's would.
    return subprocess.Popen([sys.executable, "-m", "kubectl_wand"] + [str(a) for a in args], cwd=REPO,
                            env=dict(os.environ, PYTHONPATH=REPO), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True, preexec_fn=default_signals)


def sampler_of(pid):
    """Whether the CLI ``pid`` has started its sampler (a child running the target's interpreter)."""
    for child in procfs.all_pids():
        try:
            proc = procfs.Proc(child)
        except (ProcessLookupError, ValueError, IndexError):
            continue
        if proc.ppid == pid and "RemoteUnwinder" in " ".join(proc.cmdline):
            return True
    return False


@pytest.mark.parametrize("sig", SIGNALS)
def test_profile_ended_by_a_signal_writes_what_it_sampled(spawn, tmp_path, sig):
    app = spawn("layers.py")
    out = tmp_path / "profile.txt"
    proc = cli("profile", "pid/%d" % app.pid, "--duration", "60s", "--format", "collapsed", "-o", out)
    try:
        assert wait_for(lambda: sampler_of(proc.pid), timeout=30)
        time.sleep(1)  # the span that is sampled and then interrupted, not a wait for readiness
        started = time.monotonic()
        proc.send_signal(sig)
        _stdout, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    err = err.decode()
    assert proc.returncode == 128 + sig, err
    assert time.monotonic() - started < 15
    assert "stopped early" in err and "wrote %s" % out in err, err
    assert any(line.split(";")[-1].startswith("crunch") for line in out.read_text().splitlines())
    assert app.alive()


@pytest.mark.parametrize("sig", SIGNALS)
def test_trace_ended_by_a_signal_prints_its_summary_and_removes_the_probe(spawn, sig):
    app = spawn("trace_app.py")
    proc = cli("trace", "pid/%d" % app.pid, "trace_app.py:%d" % line_of("handler"), "HITS", "--duration", "60s")
    traffic = Traffic(app)
    try:
        assert read_line(proc.stderr, 30).startswith("tracing ")
        assert "HITS=" in read_line(proc.stdout, 30)  # a hit came through: the probe is live
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        traffic.stop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    err = err.decode()
    assert proc.returncode == 128 + sig, err
    summary = [line for line in err.splitlines() if "hit(s)" in line]
    assert len(summary) == 1 and "probe removed" in summary[0], err
    assert probe_gone(app.pid) and traffic.failed == []


def test_an_inherited_ignored_sighup_stays_ignored(spawn):
    """`nohup kubectl wand ...`: the CLI keeps what it inherited, and a SIGHUP ends nothing."""
    import signal as sig

    def nohup():
        default_signals()
        sig.signal(sig.SIGHUP, sig.SIG_IGN)
    app = spawn("trace_app.py")
    proc = subprocess.Popen([sys.executable, "-m", "kubectl_wand", "trace", "pid/%d" % app.pid,
                             "trace_app.py:%d" % line_of("handler"), "--duration", "4s"], cwd=REPO,
                            env=dict(os.environ, PYTHONPATH=REPO), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True, preexec_fn=nohup)
    try:
        assert read_line(proc.stderr, 30).startswith("tracing ")
        proc.send_signal(sig.SIGHUP)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0 and "ended by duration" in err.decode(), err
    assert probe_gone(app.pid)
