"""`kubectl wand mem` against real CPython 3.14 processes: tests/apps/leaker.py leaks bytes in leak_some().

The census must name bytes first; a growth window must name the leaking FILE:LINE first; and after every way
a window can end (its time up, SIGINT of the CLI, SIGKILL of the CLI) tracemalloc is off in the target, asked
of the target itself with an exec-py injection, while an app that traces itself is left tracing.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import dap
import pytest
from procs import APPS, REPO, default_signals, read_line, wait_for

from kubectl_wand.agent.main import handle

pytestmark = pytest.mark.py314

APP = os.path.join(APPS, "leaker.py")


def leak_line():
    return dap.marker_line(APP, "# LEAK_LINE")


def tracing(pid):
    """tracemalloc.is_tracing() and the names of the threads, read in the target itself."""
    result = handle({"op": "exec", "pid": pid, "timeout": 10, "code":
                     "import tracemalloc, threading\n"
                     "tracemalloc.is_tracing(), sorted(t.name for t in threading.enumerate())"})
    assert result["status"] == "ok", result
    return eval(result["value"])


def window_running(pid):
    """Whether the window is open in the target, read from its memory (the stack op: nothing injected, so
    nothing allocated in the target while a slice may be tracing): its thread is there and the main thread has
    left our injected code (an injection made before would run nested inside the window's first census, on the
    main thread, and hold the window back until it returned)."""
    result = handle({"op": "stack", "pid": pid})
    assert result["status"] == "ok", result
    threads = [t for p in result["processes"] for t in p["threads"]]
    main = [f.get("file") or "" for t in threads if t.get("main") for f in t.get("frames") or []]
    # Positively: the main thread's innermost frame is the app's own (a read that got no frames, or one taken
    # while the main thread was still in the bootstrap's file, once passed for "left our code" in CI).
    return any(t.get("name") == "kubectl-wand-mem" for t in threads) and bool(main) and \
        main[0].endswith("leaker.py") and not any(f.startswith("<kubectl-wand") or f == "<string>" for f in main)


def window_gone(pid, tracing_after=False):
    def check():
        on, threads = tracing(pid)
        return on is tracing_after and "kubectl-wand-mem" not in threads
    return wait_for(check, timeout=15, interval=0.3)


def test_census_names_bytes_first(spawn, wand):
    app = spawn("leaker.py")
    done = wand("mem", "pid/%d" % app.pid, "-o", "json", "--top", "5")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["mode"] == "census"
    assert report["by_size"][0]["type"] == "bytes", report["by_size"]
    assert report["by_count"][0]["type"] == "bytes", report["by_count"]
    assert report["by_size"][0]["size"] > 20000 * 512  # 20000 leaked before READY
    walk = report["processes"][0]["walk"]
    assert walk["pause_ms"] < 2000 and walk["objects"] > 1000, walk
    assert tracing(app.pid)[0] is False  # a census never starts tracemalloc
    text = wand("mem", "pid/%d" % app.pid)
    assert text.returncode == 0 and text.stdout.splitlines()[4].startswith("bytes"), text.stdout


def test_window_names_the_leaking_line_first_and_stops_tracing(spawn, wand):
    app = spawn("leaker.py")
    done = wand("mem", "pid/%d" % app.pid, "--duration", "3s", "-o", "json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    top = report["sites"][0]["stack"][0]
    assert top["file"].endswith("leaker.py") and top["line"] == leak_line(), report["sites"][:2]
    assert report["types"][0]["type"] == "bytes", report["types"][:3]
    assert not [t for t in report["types"] if t["type"].startswith("tracemalloc.")], report["types"]  # ours
    process = report["processes"][0]
    assert process["stopped"] is True and process["tracing_after"] is False and process["reason"] == "duration"
    # Duty-cycled: tracemalloc traced a slice of the window, as much as its cost measured in the target allows,
    # and the growth seen in the slices is scaled to the window.
    sampling = process["sampling"]
    assert sampling["slices"] >= 1 and 0 < sampling["share"] < 0.5 and sampling["cost"] > 1, sampling
    assert 0 < report["sites"][0]["seen_size"] < report["sites"][0]["size"]
    assert window_gone(app.pid)
    text = wand("mem", "pid/%d" % app.pid, "--duration", "2s")
    assert "leaker.py:%d" % leak_line() in text.stdout and "tracemalloc stopped" in text.stdout, text.stdout
    assert "ESTIMATED over the window from the traced slices: traced " in text.stdout, text.stdout
    assert text.stdout.index("leaker.py:%d" % leak_line()) < text.stdout.index("Types whose")


def test_app_tracing_itself_is_left_tracing(spawn, wand):
    app = spawn("leaker.py", "--trace-self")
    assert tracing(app.pid)[0] is True
    done = wand("mem", "pid/%d" % app.pid, "--duration", "2s", "-o", "json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    process = report["processes"][0]
    assert process["app_tracing"] is True and process["tracing_after"] is True
    assert report["sites"][0]["stack"][0]["line"] == leak_line(), report["sites"][:2]
    assert window_gone(app.pid, tracing_after=True)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGKILL])
def test_window_ends_when_the_cli_is_interrupted_or_killed(spawn, signum):
    app = spawn("leaker.py")
    cli = subprocess.Popen([sys.executable, "-m", "kubectl_wand", "mem", "pid/%d" % app.pid, "--duration", "120s",
                            "-o", "json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO,
                           env=dict(os.environ, PYTHONPATH=REPO), preexec_fn=default_signals)
    try:
        assert wait_for(lambda: window_running(app.pid), timeout=20, interval=0.1)
        cli.send_signal(signum)
        out, err = cli.communicate(timeout=30)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    assert window_gone(app.pid)  # within seconds, whichever way it ended
    assert app.alive()
    if signum == signal.SIGINT:  # Ctrl-C still reports what grew so far, as the window's normal end
        assert cli.returncode == 0, err
        report = json.loads(out)
        assert report["processes"][0]["reason"] == "ended", report["processes"]
        assert report["sites"][0]["stack"][0]["line"] == leak_line(), [s["stack"] for s in report["sites"][:3]]
        assert report["processes"][0]["sampling"]["slices"] >= 1


def test_a_source_file_that_is_a_fifo_does_not_hang_the_window(spawn, wand, py314):
    """The window read each allocation site's source line with linecache, which opens any path: a site whose
    file the app made a FIFO hung the window's thread in open() for good (no report came; the thread stayed in
    the app). Only a regular file is read now: the site is reported without its line, and nothing stays."""
    app = spawn("decoy_source.py")
    try:
        done = wand("mem", "pid/%d" % app.pid, "--duration", "1s", "-o", "json", timeout=90)
        assert done.returncode == 0, done.stderr
        sites = [s["stack"][0] for s in json.loads(done.stdout)["sites"]]
        decoy = [s for s in sites if s["file"] == app.info["fifo"]]
        assert decoy and decoy[0]["source"] == "", sites
        assert window_gone(app.pid)
        assert app.alive()
    finally:
        app.stop()
        import shutil
        shutil.rmtree(os.path.dirname(py314.host(app.info["fifo"])), ignore_errors=True)


def test_refusals(wand, spawn):
    for args, words in [(("mem",), "needs a target"), (("mem", "pid/1", "--top", "0"), "--top"),
                        (("mem", "pid/1", "--frames", "101"), "--frames"),
                        (("mem", "pid/1", "--duration", "0"), "--duration"),
                        (("mem", "pid/1", "--max-pause", "61s"), "--max-pause")]:
        done = wand(*args)
        assert done.returncode == 2 and words in done.stderr, (args, done.stderr)
    done = wand("mem", "pid/999999")
    assert done.returncode != 0 and done.stderr.count("\n") == 1, done.stderr


FORK = """import os, time, tracemalloc
deadline = time.monotonic() + 80
while not tracemalloc.is_tracing() and time.monotonic() < deadline:
    time.sleep(0.002)  # the window traces in slices: fork during one
r, w = os.pipe()
child = os.fork()
if child == 0:
    os.write(w, b"1" if tracemalloc.is_tracing() else b"0")
    os._exit(0)
os.close(w)
os.waitpid(child, 0)
(tracemalloc.is_tracing(), os.read(r, 1))"""


def test_a_child_forked_during_a_window_does_not_keep_tracing(spawn):
    app = spawn("leaker.py")
    cli = subprocess.Popen([sys.executable, "-m", "kubectl_wand", "mem", "pid/%d" % app.pid, "--duration", "120s",
                            "-o", "json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO,
                           env=dict(os.environ, PYTHONPATH=REPO), preexec_fn=default_signals)
    try:
        assert wait_for(lambda: window_running(app.pid), timeout=20, interval=0.1)
        # The window traces a slice every period (20-30 s at 3 frames): the code waits in the target for one.
        forked = handle({"op": "exec", "pid": app.pid, "timeout": 90, "code": FORK})
        if forked.get("value") != "(True, b'0')":  # say why the window never traced: the CLI's own words
            cli.send_signal(signal.SIGINT)
            out, err = cli.communicate(timeout=30)
            raise AssertionError((forked, out[-3000:], err[-3000:]))
        assert forked["value"] == "(True, b'0')", forked["value"]  # the parent traces, its child does not
        cli.send_signal(signal.SIGINT)
        cli.communicate(timeout=30)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    assert window_gone(app.pid)


def slices_namespace():
    """heapcensus and heapslices run as the bootstrap runs them: their sources in one namespace."""
    from kubectl_wand.agent.sources import module_source
    namespace = {}
    for name in ("heapcensus", "heapslices"):
        exec(compile(module_source(name), "<kubectl-wand %s>" % name, "exec"), namespace)
    return namespace


def test_the_duty_cycle_keeps_the_measured_cost_within_its_budget():
    ns = slices_namespace()
    for cost in (1.5, 4.0, 8.0, 14.0, 20.0, 40.0):
        duty, length, period = ns["duty_cycle"](cost, 3600.0)
        assert (cost - 1) * duty <= ns["COST_BUDGET"] + 1e-9 or duty == ns["MIN_DUTY"], (cost, duty)
        assert length == ns["SLICE"] and abs(period * duty - length) < 1e-9
    duty, length, period = ns["duty_cycle"](14.0, 2.0)  # a short window: one slice of at least MIN_SLICE
    assert length == ns["MIN_SLICE"] and period > 2.0


def test_growth_is_what_a_slice_kept_past_its_first_snapshot():
    ns = slices_namespace()
    growth = {}
    # in flight at both snapshots (a request being served): no growth; a leak: what it added in between
    ns["add_growth"](growth, {"request": (1000, 10), "leak": (100, 1)}, {"request": (1000, 10), "leak": (600, 6)})
    ns["add_growth"](growth, {}, {"leak": (300, 3), "freed": (0, 0)})
    assert growth == {"request": [0, 0], "leak": [800, 8], "freed": [0, 0]}


def test_source_lines_are_read_only_from_a_bounded_regular_file(tmp_path):
    ns = slices_namespace()
    ok = tmp_path / "ok.py"
    ok.write_text("# coding: latin-1\nx = 'caf\xe9'\n", encoding="latin-1")
    big = tmp_path / "big.py"
    big.write_bytes(b"x = 1\n" * (ns["MAX_SOURCE"] // 6 + 1))
    os.mkfifo(tmp_path / "fifo.py")
    assert ns["read_source"](str(ok))[1] == "x = 'caf\xe9'"
    assert ns["read_source"](str(big)) == [] and ns["read_source"](str(tmp_path / "fifo.py")) == []
    with ns["SourceLines"]() as source:
        assert source.line(str(ok), 2) == "x = 'caf\xe9'" and source.line(str(ok), 9) == ""
