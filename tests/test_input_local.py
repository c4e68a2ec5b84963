"""Input: every bad value is one line on stderr with a documented exit code, before the target is touched, and
every odd target state is named for what it is. Real CLI in a subprocess, real CPython targets."""
from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from procs import REPO

pytestmark = pytest.mark.py314


def wand_raw(*args, timeout=60, preexec_fn=None, input=b""):
    """The CLI with bytes arguments (a non-UTF-8 EXPR) and SIGINT at its default."""
    def child():
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if preexec_fn is not None:
            preexec_fn()
    argv = [sys.executable.encode(), b"-m", b"kubectl_wand"] + [a if isinstance(a, bytes) else str(a).encode()
                                                               for a in args]
    return subprocess.run(argv, capture_output=True, timeout=timeout, cwd=REPO, input=input, preexec_fn=child,
                          env=dict(os.environ, PYTHONPATH=REPO))


def one_line(done):
    err = done.stderr.decode("utf-8", "replace") if isinstance(done.stderr, bytes) else done.stderr
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


# -- values ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["expr", "condition", "location"])
def test_a_non_utf8_trace_expression_is_a_usage_error(where):
    args = {"expr": [b"app.py:3", b"\xff"], "condition": [b"app.py:3", b"--condition", b"x == '\xff'"],
            "location": [b"\xff.py:3"]}[where]
    done = wand_raw("trace", "pid/1", *args)
    assert done.returncode == 2
    assert "not valid UTF-8" in one_line(done)


@pytest.mark.parametrize("args", [["exec-py", "pid/1", "--timeout", "99999999999999999h", "--", "1"],
                                  ["attach", "pid/1", "--timeout", "99999999999999999h"],
                                  ["trace", "pid/1", "a.py:1", "--duration", "99999999999999999h"],
                                  ["profile", "pid/1", "--duration", "99999999999999999h"],
                                  ["stack", "pid/1", "--request-timeout", "99999999999999999h"],
                                  ["stack", "pid/1", "--request-timeout", "inf"]])
def test_a_duration_out_of_range_is_a_usage_error(args):
    done = wand_raw(*args)
    assert done.returncode == 2, done.stderr
    line = one_line(done)
    assert "out of range" in line or "positive number" in line


@pytest.mark.parametrize("value", ["inf", "nan", "0", "-1", "1e9"])
def test_max_per_second_must_be_a_finite_rate(value):
    done = wand_raw("trace", "pid/1", "a.py:1", "--max-per-second=%s" % value)
    assert done.returncode == 2, done.stderr
    assert "--max-per-second" in one_line(done)


def test_exec_py_code_from_dev_zero_is_refused_at_its_limit():
    """Before: it read /dev/zero until memory ran out (23 GB once). Bounded here by an address-space limit, so
    the old behaviour ends in a MemoryError traceback instead of taking the machine."""
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
    done = wand_raw("exec-py", "pid/1", "-f", "/dev/zero", preexec_fn=limit)
    assert done.returncode == 2, done.stderr
    assert "MiB of code" in one_line(done)


def test_exec_py_code_from_stdin_is_bounded_too():
    done = wand_raw("exec-py", "pid/1", "-f", "-", input=b"#" * (5 << 20))
    assert done.returncode == 2, done.stderr
    assert "MiB of code" in one_line(done)


def test_exec_py_from_a_fifo_without_a_writer_does_not_hang(tmp_path):
    fifo = tmp_path / "code"
    os.mkfifo(fifo)
    started = time.monotonic()
    done = wand_raw("exec-py", "pid/1", "-f", str(fifo), timeout=40)
    assert done.returncode == 2, done.stderr
    assert "FIFO" in one_line(done)
    assert time.monotonic() - started < 30


def test_exec_py_from_a_fifo_with_a_writer_reads_it(tmp_path, spawn):
    app = spawn("sleeper.py", "0")
    fifo = tmp_path / "code"
    os.mkfifo(fifo)
    writer = subprocess.Popen(["sh", "-c", "sleep 1; printf '6 * 7' > %s" % fifo])
    done = wand_raw("exec-py", "pid/%d" % app.pid, "-f", str(fifo))
    writer.wait()
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"42\n"


# -- Ctrl-C while the command line is built -------------------------------------------------------------------

def test_ctrl_c_while_the_parser_is_built_exits_130_without_a_traceback():
    """The real signal, delivered while cli builds the verb's parser (the ~40 ms window of `trace`'s start)."""
    script = textwrap.dedent("""
        import os, signal, sys
        signal.signal(signal.SIGINT, signal.default_int_handler)
        import kubectl_wand.cli as cli
        real = cli.verb_parser_for
        def interrupted(name):
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C arrives now
            return real(name)
        cli.verb_parser_for = interrupted
        sys.argv = ["kubectl-wand", "trace", "pid/1", "a.py:1"]
        from kubectl_wand.launch import main
        main()
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=REPO), preexec_fn=lambda: signal.signal(
                              signal.SIGINT, signal.SIG_DFL))
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr and "KeyboardInterrupt" not in done.stderr, done.stderr


# -- target states named for what they are -------------------------------------------------------------------

def test_stack_and_profile_of_a_zombie_say_it_exited(spawn):
    app = spawn("zombie.py")
    zombie = int(app.info["zombie"])
    for args in (["stack", "pid/%d" % zombie], ["profile", "pid/%d" % zombie, "--duration", "1s"]):
        done = wand_raw(*args)
        assert done.returncode == 3, done.stderr
        assert "has exited" in one_line(done)


@pytest.mark.parametrize("which", ["missing", "3.13"])
def test_profile_that_read_nothing_says_why_once(spawn, which):
    pid = 4194301 if which == "missing" else spawn("sleeper.py", version="3.13").pid
    done = wand_raw("profile", "pid/%d" % pid, "--duration", "1s")
    assert done.returncode in (3, 4), done.stderr
    assert "idle" not in one_line(done)


def test_a_deep_stack_is_said_to_be_deep(spawn):
    app = spawn("deep.py", "10000")
    done = wand_raw("stack", "pid/%d" % app.pid)
    line = one_line(done)
    assert "frames deep" in line and "kept changing" not in line
    # profile samples the innermost 1024 frames of each tick and says the outer ones were not read
    profiled = wand_raw("profile", "pid/%d" % app.pid, "--duration", "1s", "--idle")
    err = profiled.stderr.decode()
    assert profiled.returncode == 0, err
    assert "0 read errors" in err and "deeper than 1024 frames: the outer ones were not read" in err, err


def test_a_tiny_timeout_never_blames_the_app_or_an_audit_hook(spawn):
    """--timeout 1ms: the main thread takes the script just as the deadline passes. That is neither a refusal
    (no audit hook here), nor a bootstrap that never connected, nor the app's frame to blame."""
    app = spawn("busy.py")
    seen = []
    for _ in range(8):
        done = wand_raw("exec-py", "pid/%d" % app.pid, "--timeout", "1ms", "--", "6 * 7")
        err = done.stderr.decode()
        seen.append((done.returncode, err))
        assert "audit hook" not in err and "never connected" not in err, seen
        assert "bootstrap.py:" not in err.split("what happens next")[0], seen  # not blamed on our frame
        assert done.returncode in (0, 5), seen
    assert app.alive()


def test_a_symlink_swap_is_named_not_taken_for_an_audit_hook(spawn, py314, tmp_path):
    """An attacker of the target's uid swaps the private files for symlinks: the injection fails, and says
    what happened."""
    from test_trust_local import host_racer, needs_root, racer_swaps, remove_debris, start_target
    needs_root()
    app = start_target(spawn, py314, "http_app.py")
    prefix = "wand-%d-" % app.pid
    canary_file, canary_dir = tmp_path / "canary", tmp_path / "canary-dir"
    canary_file.write_text("x = 1\n")
    canary_dir.mkdir()
    racers = [host_racer("/tmp", prefix, str(canary_file), str(canary_dir))]
    if py314.root:
        racers.append(start_target(spawn, py314, "racer.py", "/tmp", prefix, str(canary_file),
                                   str(canary_dir)).popen)
    from kubectl_wand.agent import main
    results = []
    try:
        for _ in range(6):
            results.append(main.handle({"op": "exec", "pid": app.pid, "code": "6 * 7", "timeout": 3}))
    finally:
        [racer_swaps(r) for r in racers]
        remove_debris(py314, app.pid)
    refused = [r for r in results if r.get("kind") == "refused"]
    assert refused, results  # the attack broke at least one injection
    for r in refused:
        assert "audit hook" not in r["error"] and "symlink swap" in r["error"], r
