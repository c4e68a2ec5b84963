"""`kubectl wand exec-py -it pid/N` through a real pseudo-terminal against a real CPython 3.14 process: inputs run
inside the live process in a namespace kept for the session, multi-line input, tracebacks, Ctrl-C interrupts
running code, and leaving takes everything of the session away."""
from __future__ import annotations

import json
import os
import sys
import time

import pytest

from leftovers import private_dirs
from procs import REPO
from ptyterm import Term

pytestmark = pytest.mark.py314
PROMPT = r">>> "


def session(pid):
    return Term([sys.executable, "-m", "kubectl_wand", "exec-py", "-it", "pid/%d" % pid],
                env=dict(os.environ, PYTHONPATH=REPO), cwd=REPO)


def remains(wand, pid):
    code = ("import sys, threading, gc, json; print(json.dumps({'threads': sorted(t.name for t in "
            "threading.enumerate()), 'x_in_main': hasattr(sys.modules['__main__'], 'wand_session_x'), "
            "'dicts': sum(1 for o in gc.get_objects() if type(o) is dict and o.get('wand_session_x') == 41)}))")
    done = wand("exec-py", "pid/%d" % pid, "--", code)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_inputs_run_in_the_process_with_a_kept_namespace_then_nothing_remains(spawn, wand, py314):
    target = spawn("threaded_http.py")
    term = session(target.pid)
    try:
        term.expect(r"inside process %d" % target.pid)
        term.expect(PROMPT)
        term.line("wand_session_x = 41")
        term.expect(PROMPT)
        term.line("wand_session_x + 1")
        term.expect(r"\n42\n")
        term.expect(PROMPT)
        term.line("import os; os.getpid()")
        term.expect(r"\n%d\n" % target.pid)
        term.expect(PROMPT)
        term.line("for i in range(2):")
        term.expect(r"\.\.\. ")
        term.line("    print('line', i)")
        term.expect(r"\.\.\. ")
        term.line("")
        term.expect(r"line 0\nline 1\n")
        term.expect(PROMPT)
        term.line("HITS")  # the app's __main__ names are visible
        term.expect(r"\n0\n")
        term.expect(PROMPT)
        term.line("1 / 0")
        term.expect(r"ZeroDivisionError: division by zero")
        term.expect(PROMPT)
        term.line('raise ValueError(chr(27) + "[2J")')  # the traceback is escaped, as exec-py's is
        term.expect(r"ValueError: \\x1b\[2J")
        term.expect(PROMPT)
        assert "\x1b[2J" not in term.seen
        assert remains(wand, target.pid)["dicts"] == 1  # the session's namespace lives in the target meanwhile
        term.line("while True: pass")
        term.expect(r"\.\.\. ")
        term.line("")
        time.sleep(0.5)
        term.interrupt()
        term.expect(r"KeyboardInterrupt")
        term.expect(PROMPT)
        assert "<kubectl-wand" not in term.seen  # the traceback is the user's code's, not our tracer's
        term.line("wand_session_x")  # still there after the interrupt
        term.expect(r"\n41\n")
        term.expect(PROMPT)
        term.line("exit()")
        assert term.wait(30) == 0, term.seen
    finally:
        term.close()
    left = remains(wand, target.pid)
    assert left["dicts"] == 0 and not left["x_in_main"], left
    assert not [t for t in left["threads"] if "wand" in t], left
    assert private_dirs(py314, target.pid) == []
    assert target.alive()


def test_ctrl_d_leaves_and_a_killed_cli_leaves_nothing(spawn, wand):
    target = spawn("threaded_http.py")
    term = session(target.pid)
    try:
        term.expect(PROMPT)
        term.line("wand_session_x = 41")
        term.expect(PROMPT)
        term.send("\x04")
        assert term.wait(30) == 0, term.seen
    finally:
        term.close()
    assert remains(wand, target.pid)["dicts"] == 0
    term = session(target.pid)
    try:
        term.expect(PROMPT)
        term.line("wand_session_x = 41")
        term.expect(PROMPT)
        term.proc.kill()
        term.proc.wait(10)
    finally:
        term.close()
    deadline = time.monotonic() + 20
    while remains(wand, target.pid)["dicts"] and time.monotonic() < deadline:
        time.sleep(0.2)  # the session thread sees the connection closed
    left = remains(wand, target.pid)
    assert left["dicts"] == 0 and not [t for t in left["threads"] if "wand" in t], left


def test_ctrl_c_right_after_enter_never_loses_the_session(spawn):
    """Ctrl-C sent the moment Enter is echoed lands anywhere between the console's compile, the send and the
    wait for the result. A KeyboardInterrupt raised after the send left the input running in the target while
    the console showed a new prompt ('the previous input is still running'), or dropped the result a recv had
    just read (no answer at all: the cluster test's flake). Each round must end with KeyboardInterrupt, a
    prompt, and the next input answered."""
    target = spawn("threaded_http.py")
    term = session(target.pid)
    try:
        term.expect(PROMPT)
        for i in range(15):
            term.line("while True: pass")
            term.expect(r"\.\.\. ")
            term.line("")
            term.expect(r"\n")
            term.interrupt()
            term.expect(r"KeyboardInterrupt", 30)
            term.expect(PROMPT)
            term.line("6 * %d" % (7 + i))
            term.expect(r"\n%d\n" % (6 * (7 + i)))
            term.expect(PROMPT)
        term.line("exit()")
        assert term.wait(30) == 0, term.seen
    finally:
        term.close()
    assert target.alive()
