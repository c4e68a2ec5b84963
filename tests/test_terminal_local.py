"""What the target names never reaches the terminal raw (kubectl_wand/terminal.py, the one rule).

A real CPython 3.14 target (apps/hostile_names.py) whose argv, thread names, function names, file names and a
repr hold ESC/CSI/OSC sequences, CR, newlines, C1 controls and bidi overrides. Every verb's human output must
hold none of them raw, and show them visibly escaped; ``-o json`` keeps them as data.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess

import pytest

import dap
from procs import APPS, read_line

pytestmark = pytest.mark.py314

HOSTILE_ARG = "arg\x1b]0;ARGV\x07\x1b[2J\rFAKE 1 * * * * root\nFAKE-ARGV\x9b31m\u202eevil"
# What a terminal acts on, and what forges a line: none may be in the human output.
RAW = ["\x1b", "\x07", "\r", "\x9b", "\u202e", "\u2067"]


def assert_safe(text):
    for ch in RAW:
        assert ch not in text, "raw %r in the output:\n%s" % (ch, text)
    forged = [line for line in text.splitlines() if line.startswith("FAKE")]
    assert not forged, "a name forged lines: %r" % forged


@pytest.fixture
def hostile(spawn):
    return spawn("hostile_names.py", HOSTILE_ARG)


def test_stack_shows_hostile_names_escaped(wand, hostile):
    done = wand("stack", "pid/%d" % hostile.pid)
    assert done.returncode == 0, done.stderr
    assert_safe(done.stdout)
    assert_safe(done.stderr)
    # Visibly escaped: the argv (from /proc), the thread's kernel name, the function and file names.
    assert "arg\\x1b]0;ARGV\\x07\\x1b[2J\\rFAKE 1 * * * * root\\nFAKE-ARGV\\x9b31m\\u202eevil" in done.stdout
    assert '"\\x1b]0;PWNED\\x07' in done.stdout  # the thread's name
    name = "\\x1b]0;PWNED\\x07\\x1b[2J\\x1b[31mred\\rFAKE 1 * * * * root\\nFAKE-LINE"
    assert "    %s (/srv/%s.py:2)" % (name, name) in done.stdout  # a function and its file
    # -o json: the names are data, kept whole (JSON escapes them itself).
    data = json.loads(wand("stack", "pid/%d" % hostile.pid, "-o", "json").stdout)
    entry = data["items"][0]
    assert HOSTILE_ARG in entry["command"]
    assert any(t["name"].startswith("\x1b]0;PWNED") for t in entry["threads"])


def test_trace_shows_a_hostile_repr_and_thread_escaped(wand, hostile):
    line = dap.marker_line(os.path.join(APPS, "hostile_names.py"), "# trace:tick")
    done = wand("trace", "pid/%d" % hostile.pid, "hostile_names.py:%d" % line, "evil", "--count", "2",
                "--duration", "20s")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("\n") == 2, done.stdout  # one line per hit: the repr's newline forged none
    assert_safe(done.stdout)
    assert_safe(done.stderr)
    assert "evil=\\x1b]0;PWNED\\x07\\x1b[2J\\x1b[31mred\\rFAKE 1 * * * * root\\nFAKE-LINE" in done.stdout
    as_json = wand("trace", "pid/%d" % hostile.pid, "hostile_names.py:%d" % line, "evil", "--count", "1",
                   "--duration", "20s", "-o", "json")
    hit = json.loads(as_json.stdout.splitlines()[0])["hit"]
    assert hit["values"][0]["repr"].startswith("\x1b]0;PWNED\x07")  # data: kept


def test_get_processes_and_exec_py_value_escaped(wand, hostile):
    listed = wand("get", "processes", "pid/%d" % hostile.pid)
    assert listed.returncode == 0, listed.stderr
    assert_safe(listed.stdout)
    assert "arg\\x1b" in listed.stdout  # (COMMAND is cut at its width)
    done = wand("exec-py", "pid/%d" % hostile.pid, "--", "Evil()")
    assert done.returncode == 0, done.stderr
    # A repr keeps its lines (a numpy array's spans several), never a control character.
    assert not [ch for ch in RAW if ch in done.stdout], done.stdout
    assert done.stdout.startswith("\\x1b]0;PWNED\\x07")
    # The code's own output is the user's: passed through as it is (as kubectl exec does).
    printed = wand("exec-py", "pid/%d" % hostile.pid, "--", "print('\\x1b[1mbold\\x1b[0m')")
    assert printed.stdout == "\x1b[1mbold\x1b[0m\n"


def test_an_error_quoting_a_hostile_process_name_is_one_escaped_line(wand, tmp_path):
    """A process named by its own executable (comm): an error about it quotes that name."""
    exe = tmp_path / "\x1b[2J\nFAKE\u202e"
    shutil.copy(shutil.which("sleep"), exe)
    proc = subprocess.Popen([str(exe), "600"])
    try:
        done = wand("stack", "pid/%d" % proc.pid)
        assert done.returncode == 3, done.stderr
        assert_safe(done.stderr)
        lines = done.stderr.splitlines()
        assert len(lines) == 1 and "\\x1b[2J\\nFAKE\\u202e" in lines[0], done.stderr
    finally:
        proc.kill()
        proc.wait()


# -- the rule itself ---------------------------------------------------------------------------------------

def test_the_rule_escapes_every_terminal_control_and_keeps_text():
    from kubectl_wand import terminal
    assert terminal.text("a\x1b[31mb\rc\nd\te\x9bf\u202eg\u2066h\x7f\u200bi") == \
        "a\\x1b[31mb\\rc\\nd\\te\\x9bf\\u202eg\\u2066h\\x7f\\u200bi"
    assert terminal.text("caf\u00e9 \u65e5\u672c \U0001f600 C:\\dir") == "caf\u00e9 \u65e5\u672c \U0001f600 C:\\dir"
    assert terminal.text("bad\udcff") == "bad\\xff"  # a byte that was not UTF-8
    assert terminal.lines("one\n\ttwo\x1b[0m\r\n") == "one\n\ttwo\\x1b[0m\\r\n"


def test_every_verb_stream_applies_the_rule_and_raw_is_data():
    from kubectl_wand.streams import Streams
    out, err = io.StringIO(), io.StringIO()
    streams = Streams(io.StringIO(), out, err)
    streams.stdout.write("x\x1b]0;t\x07\n")
    streams.stderr.write("error: \x9b2J\n")
    from kubectl_wand import terminal
    terminal.raw(streams.stdout).write("\x1b[1m")
    assert out.getvalue() == "x\\x1b]0;t\\x07\n\x1b[1m"
    assert err.getvalue() == "error: \\x9b2J\n"


def test_completion_descriptions_follow_the_rule():
    """A process's command line is the description of its pid in shell completion (kubectl's protocol: one
    candidate per line): no line break, and nothing the terminal would act on in the prompt."""
    from kubectl_wand.completion import one_line
    assert one_line("python3 -c 'x\n\ty'\x1b]0;t\x07\u202e") == "python3 -c 'x y'\\x1b]0;t\\x07\\u202e"
