"""The terminal sessions (`pdb`, `exec-py -it`) against targets whose own code answers them with terminal
controls: through a real pseudo-terminal, against real CPython 3.14 processes, nothing the target chose reaches
the user's terminal raw, and the target goes on unchanged."""
from __future__ import annotations

import os
import sys

import pytest

from procs import REPO
from ptyterm import Term

pytestmark = pytest.mark.py314

# what apps/hostile_pdb.py plants: OSC 52 (the user's clipboard), an SGR colour, a bidi override
PLANTED = ("\x1b]52", "\x1b[31mPLANTED", "\u202e")


def wand_term(*args):
    return Term([sys.executable, "-m", "kubectl_wand"] + [str(a) for a in args],
                env=dict(os.environ, PYTHONPATH=REPO), cwd=REPO)


def test_pdb_shows_a_hostile_servers_prompt_help_and_completions_escaped(spawn):
    target = spawn("hostile_pdb.py")
    term = wand_term("pdb", "pid/%d" % target.pid)
    try:
        term.expect(r"PLANTED.*\(Pdb\) ")
        term.line("help nosuchtopic")       # pdb's server answers {"help": ARG}; the client prints ARG
        term.expect(r"PLANTED.*\(Pdb\) ")
        term.send("p ti\t\t")                # completions: readline lists them and inserts the common prefix
        term.expect(r"PLANTED")
        term.send("\x15")                    # Ctrl-U: drop the line
        term.line("q")
        assert term.wait(30) == 0, term.seen
    finally:
        term.close()
    raw = [p for p in PLANTED if p in term.seen]
    assert raw == [], "raw on the terminal: %r\n%r" % (raw, term.seen[-2000:])
    assert target.alive()


def test_pdb_answered_out_of_protocol_ends_with_one_line_and_detaches(spawn, wand):
    target = spawn("hostile_pdb.py", "unknown")
    term = wand_term("pdb", "pid/%d" % target.pid)
    try:
        code = term.wait(60)
    finally:
        term.close()
    assert "Traceback" not in term.seen and "\x1b]52" not in term.seen, term.seen
    assert term.seen.count("error:") == 1 and "out of protocol" in term.seen, term.seen
    assert code == 6, (code, term.seen)  # errors.PROTOCOL
    assert target.alive()
    done = wand("exec-py", "pid/%d" % target.pid, "--", "import sys, threading, pdb; print("
                "[t.name for t in threading.enumerate()], threading.gettrace(), pdb.Pdb._last_pdb_instance)")
    assert done.returncode == 0 and "wand" not in done.stdout and done.stdout.endswith("None None\n"), done


@pytest.mark.parametrize("shape", ["notjson", "types", "list"])
def test_exec_py_it_answered_out_of_protocol_ends_with_one_line(spawn, wand, shape):
    target = spawn("hostile_repl.py", shape)
    term = wand_term("exec-py", "-it", "pid/%d" % target.pid)
    try:
        term.expect(r">>> ")
        term.line("1 + 1")
        code = term.wait(60)
    finally:
        term.close()
    after = term.seen[term.pos:]
    assert "Traceback" not in after and "\x1b]52" not in term.seen, after
    assert after.count("error:") == 1 and "out of protocol" in after, after
    assert code == 6, (code, after)  # errors.PROTOCOL
    assert target.alive()
    done = wand("exec-py", "pid/%d" % target.pid, "--",
                "import threading; print(sorted(t.name for t in threading.enumerate()))")
    assert done.returncode == 0 and "MainThread" in done.stdout and "wand" not in done.stdout, done


def test_exec_py_it_killed_while_the_input_runs_leaves_nothing(spawn, wand):
    """SIGKILL of the CLI while the user's input spins in the target: the connection closes, the session
    interrupts the input, clears its namespace and ends its threads; the app's own threads go on."""
    import time
    target = spawn("threaded_http.py")
    term = wand_term("exec-py", "-it", "pid/%d" % target.pid)
    try:
        term.expect(r">>> ")
        term.line("wand_spin = 41")
        term.expect(r">>> ")
        term.line("while True: wand_spin = 41")
        term.line("")
        term.expect(r"while True.*\n")
        code = "import threading; print(sorted(t.name for t in threading.enumerate()))"
        deadline = time.monotonic() + 30
        while "kubectl-wand-repl-input" not in wand("exec-py", "pid/%d" % target.pid, "--", code).stdout:
            assert time.monotonic() < deadline, "the input never ran"
        term.proc.kill()
        term.proc.wait(10)
    finally:
        term.close()
    deadline = time.monotonic() + 30
    while True:
        done = wand("exec-py", "pid/%d" % target.pid, "--", code)
        if done.returncode == 0 and "wand" not in done.stdout.replace("kubectl-wand-exec", ""):
            break
        assert time.monotonic() < deadline, done
        time.sleep(0.2)
    assert target.alive()


def test_pdb_on_a_frame_named_with_lone_surrogates(spawn):
    """A name Python accepts and no encoder does ("\ud800"): pdb's first message quotes the frame; printing it
    ended the client with a UnicodeEncodeError traceback (exit 0, no session). It is shown escaped."""
    target = spawn("surrogate_names.py")
    term = wand_term("pdb", "pid/%d" % target.pid)
    try:
        term.expect(r"\\ud800evil\\udcff")
        term.expect(r"\(Pdb\) ")
        term.line("where")
        term.expect(r"\\ud800evil\\udcff\(\)")
        term.expect(r"\(Pdb\) ")
        term.line("q")
        assert term.wait(30) == 0, term.seen
    finally:
        term.close()
    assert "Traceback" not in term.seen, term.seen
    assert target.alive()


def test_code_that_prints_a_lone_surrogate_is_shown_escaped(spawn, wand):
    """print("a\\ud800b"): the target's captured stdout holds a str no encoder takes; writing it ended exec-py
    with a traceback and exec-py -it's session at once. It is shown escaped; the session goes on."""
    target = spawn("busy.py")
    done = wand("exec-py", "pid/%d" % target.pid, "--", 'print("a\\ud800b")')
    assert done.returncode == 0 and done.stdout == "a\\ud800b\n", done
    term = wand_term("exec-py", "-it", "pid/%d" % target.pid)
    try:
        term.expect(r">>> ")
        term.line('print("a\\ud800b")')
        term.expect(r"a\\ud800b\n")
        term.expect(r">>> ")
        term.line("40 + 2")
        term.expect(r"42")
        term.expect(r">>> ")
        term.send("\x04")
        assert term.wait(30) == 0, term.seen
    finally:
        term.close()
    assert "Traceback" not in term.seen, term.seen
