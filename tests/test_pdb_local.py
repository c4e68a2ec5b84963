"""`kubectl wand pdb pid/N` through a real pseudo-terminal against real CPython 3.14 processes: the prompt, a
breakpoint set there hit by a real HTTP request in a worker thread, Ctrl-C into a busy loop, and a detach that
leaves the app serving with nothing of pdb in it."""
from __future__ import annotations

import json
import os
import sys
import time
import urllib.request

import pytest

from leftovers import private_dirs
from procs import REPO
from ptyterm import Term

pytestmark = pytest.mark.py314

PROMPT = r"\(Pdb\) "
# Run by exec-py after a session: everything pdb could have left behind, read from inside the target.
LEFT = r"""
import sys, threading, json
frames = []
for ident, f in sys._current_frames().items():
    while f is not None:
        if f.f_trace is not None and f.f_code.co_filename != "<wand>":  # exec-py's own code, under its tracer
            frames.append((f.f_code.co_filename, f.f_code.co_name, repr(f.f_trace)[:80]))
        f = f.f_back
pdb = sys.modules.get("pdb")
bdb = sys.modules.get("bdb")
print(json.dumps({
    "thread_hook": repr(threading.gettrace()),
    "watcher": list(getattr(sys.modules["__main__"], "SEEN_TRACE", ["None"])),
    "main": list(getattr(sys.modules["__main__"], "SEEN_MAIN", ["None"])),
    "tool0": sys.monitoring.get_tool(sys.monitoring.DEBUGGER_ID),
    "tools": [sys.monitoring.get_tool(i) for i in range(6)],
    "threads": sorted(t.name for t in threading.enumerate()),
    "traced_frames": frames,
    "attached": repr(pdb and pdb.Pdb._last_pdb_instance),
    "breakpoints": [b for b in (bdb.Breakpoint.bpbynumber if bdb else []) if b is not None].__len__(),
}))
"""


def wand_term(*args):
    env = dict(os.environ, PYTHONPATH=REPO)
    return Term([sys.executable, "-m", "kubectl_wand"] + [str(a) for a in args], env=env, cwd=REPO)


def left_behind(wand, pid):
    done = wand("exec-py", "pid/%d" % pid, "--", LEFT)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def assert_clean(wand, py314, target):
    time.sleep(0.2)  # the watcher thread samples its own sys.gettrace() every 0.05 s
    left = left_behind(wand, target.pid)
    # exec-py's own code runs on the main thread under exec-py's tracer: the app records what its main thread
    # and a long-lived thread see themselves
    assert left["thread_hook"] == "None", left
    assert left["watcher"] in ([], ["None"]) and left["main"] in ([], ["None"]), left
    assert left["tools"] == [None] * 6, left
    assert left["traced_frames"] == [], left["traced_frames"]
    assert left["attached"] in ("None", "False"), left
    assert left["breakpoints"] == 0, left
    assert not [t for t in left["threads"] if "wand" in t], left
    assert private_dirs(py314, target.pid) == []
    assert "Error" not in target.stderr_so_far(), target.stderr_so_far()


def get(port, timeout=30):
    with urllib.request.urlopen("http://127.0.0.1:%d/" % port, timeout=timeout) as answer:
        return answer.read().decode()


def test_breakpoint_in_worker_thread_then_quit_leaves_nothing(spawn, wand, py314):
    target = spawn("threaded_http.py")
    port = int(target.info["port"])
    app = py314.app("threaded_http.py")
    line = [n for n, text in enumerate(open(py314.host(app)), 1) if "wand-pdb-breakpoint" in text][0]
    term = wand_term("pdb", "pid/%d" % target.pid)
    try:
        term.expect(PROMPT)
        term.line("break %s:%d" % (app, line))
        term.expect(r"Breakpoint 1 at .*threaded_http.py:%d" % line)
        term.expect(PROMPT)
        term.line("c")
        import threading
        box = {}
        request = threading.Thread(target=lambda: box.setdefault("body", get(port)))
        request.start()
        term.expect(r"threaded_http.py\(%d\)do_GET\(\)" % line)
        term.expect(PROMPT)
        assert "body" not in box  # the worker thread is stopped at the breakpoint
        term.line("p greeting")
        term.expect(r"'hello #1 from Thread-\d+")
        term.expect(PROMPT)
        term.line("clear 1")
        term.expect(PROMPT)
        term.line("c")
        request.join(30)
        assert box["body"].startswith("hello #1 from Thread-")
        term.interrupt()  # back to the prompt: the main thread, in serve_forever's poll
        term.expect(PROMPT)
        term.line("q")
        assert term.wait(30) == 0, term.seen
    finally:
        term.close()
    assert get(port).startswith("hello #2")  # still serving
    assert_clean(wand, py314, target)


def test_ctrl_c_interrupts_a_busy_loop_and_ctrl_d_detaches(spawn, wand, py314):
    target = spawn("busy.py")
    term = wand_term("pdb", "pid/%d" % target.pid)
    try:
        term.expect(PROMPT)
        term.line("c")
        time.sleep(0.3)
        assert target.alive()
        term.interrupt()
        term.expect(r"busy.py\(\d+\)<module>\(\)")
        term.expect(PROMPT)
        term.line("p counter > 0")
        term.expect(r"True")
        term.expect(PROMPT)
        term.line('!raise ValueError(chr(27) + "[2J")')  # text the target chose never drives the terminal
        term.expect(r"ValueError: \\x1b\[2J")
        term.expect(PROMPT)
        assert "\x1b[2J" not in term.seen
        term.send("\x04")  # Ctrl-D at the prompt
        assert term.wait(30) == 0, term.seen
    finally:
        term.close()
    assert target.alive()
    assert_clean(wand, py314, target)


def test_killed_client_detaches_the_target(spawn, wand, py314):
    """The CLI killed mid-session (its terminal or kubectl gone): the agent in it dies too, the connection
    closes, and the target takes pdb back by itself."""
    target = spawn("threaded_http.py")
    term = wand_term("pdb", "pid/%d" % target.pid)
    try:
        term.expect(PROMPT)
        term.line("break %s:18" % py314.app("threaded_http.py"))
        term.expect(PROMPT)
        term.proc.kill()
        term.proc.wait(10)
    finally:
        term.close()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            body = get(int(target.info["port"]), timeout=5)
            break
        except OSError:
            time.sleep(0.2)  # the prompt thread notices the lost connection and detaches
    assert body.startswith("hello")
    assert_clean(wand, py314, target)


def test_blocked_main_thread_times_out_with_where(spawn, wand):
    target = spawn("sleeper.py")
    done = wand("pdb", "pid/%d" % target.pid, "--timeout", "1")
    assert done.returncode == 5, done.stderr
    assert "main thread blocked" in done.stderr and "sleeper.py" in done.stderr, done.stderr
    assert target.alive()


def test_a_second_pdb_is_refused_while_one_is_attached(spawn, wand, py314):
    target = spawn("threaded_http.py")
    term = wand_term("pdb", "pid/%d" % target.pid)
    try:
        term.expect(PROMPT)
        term.line("c")  # the app runs on, the session stays attached
        term.expect(r"\bc\n")
        second = wand("pdb", "pid/%d" % target.pid, "--timeout", "5")
        assert second.returncode == 5 and "another pdb is already attached" in second.stderr, second.stderr
        term.interrupt()
        term.expect(PROMPT)
        term.line("q")
        assert term.wait(30) == 0, term.seen
    finally:
        term.close()
    assert_clean(wand, py314, target)


def test_pdb_is_scriptable_without_a_terminal(spawn, wand):
    """stdin a pipe: pdb's client reads the commands as lines, and its end detaches (EOF is Ctrl-D)."""
    target = spawn("threaded_http.py")
    done = wand("pdb", "pid/%d" % target.pid, input="p 6 * 7\nwhere\n")
    assert done.returncode == 0, done.stderr
    assert "42" in done.stdout and "serve_forever" in done.stdout, done.stdout
    assert target.alive()


@pytest.mark.parametrize("verb", [["pdb"], ["exec-py", "-it"]], ids=["pdb", "exec-py-it"])
def test_ctrl_c_before_the_first_prompt_gives_the_session_up(spawn, py314, verb):
    """The main thread is blocked, the injection waits for a safe point: Ctrl-C there leaves at once (exit 130,
    saying what stays: the queued bootstrap), instead of being sent on to a pdb that does not run yet and the
    command waiting out --timeout."""
    target = spawn("sleeper.py")
    term = wand_term(*verb, "pid/%d" % target.pid, "--timeout", "120")
    try:
        deadline = time.monotonic() + 60
        while not (private_dirs(py314, target.pid) and session_client(term.proc.pid)):  # pending; the client runs
            assert time.monotonic() < deadline and term.proc.poll() is None, term.seen
            time.sleep(0.05)
        term.interrupt()
        assert term.wait(60) == 130, term.seen
    finally:
        term.close()
    assert "interrupted while the injection into process %d was pending" % target.pid in term.seen, term.seen
    assert "Traceback" not in term.seen, term.seen
    assert target.alive()


def session_client(cli_pid):
    """Whether the session's client runs: the launcher the CLI started has exec'd it (the target's interpreter,
    ``... -c SOURCE NAME PID FD``, where the launcher's command line ends with NAME)."""
    for pid in os.listdir("/proc"):
        try:
            with open("/proc/%s/stat" % pid) as f:
                ppid = int(f.read().rpartition(")")[2].split()[1])
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                argv = f.read().split(b"\0")[:-1]
        except (OSError, ValueError, IndexError):
            continue
        names = [i for i, arg in enumerate(argv) if arg.startswith(b"kubectl-wand-")]
        if ppid == cli_pid and names and len(argv) - names[-1] == 3:  # NAME PID FD: not the launcher's NAME
            return True
    return False
