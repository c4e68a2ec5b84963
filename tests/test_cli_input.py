"""Bad input is refused before the target is touched: one line on stderr, exit 2, the target unchanged.
And good input in every spelling Python itself accepts (coding cookies, BOMs)."""
from __future__ import annotations

import pytest

import os
import subprocess
import sys

from leftovers import private_dirs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def wand_bytes(*args, input=b""):
    """The CLI with binary stdin (the `wand` fixture speaks text)."""
    return subprocess.run([sys.executable, "-m", "kubectl_wand"] + list(args), input=input, capture_output=True,
                          timeout=60, cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO))


def one_line(result):
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.mark.parametrize("value", ["nan", "inf", "0", "-5", "-inf"])
@pytest.mark.parametrize("verb", [["attach"], ["exec-py"], ["profile", "--duration"], ["attach", "--follow-timeout"]])
def test_bad_durations_are_refused(wand, verb, value):
    flag = verb[1] if len(verb) == 2 else "--timeout"
    given = ["%s=%s" % (flag, value)] if value.startswith("-") else [flag, value]  # as a user must write -inf
    args = [verb[0], "pid/1"] + given + (["--", "1"] if verb[0] == "exec-py" else [])
    done = wand(*args)
    assert done.returncode == 2, done.stderr
    assert "must be a positive number of seconds" in one_line(done)


@pytest.mark.py314
def test_bad_timeout_leaves_the_target_untouched(spawn, wand, py314):
    app = spawn("busy.py")
    for value in ("nan", "-5", "0"):
        done = wand("attach", "pid/%d" % app.pid, "--timeout", value)
        assert done.returncode == 2
    assert private_dirs(py314, app.pid) == []
    assert app.stderr_so_far(0.2) == ""
    assert app.alive()


@pytest.mark.py314
def test_code_files_in_every_encoding_python_reads(spawn, wand, tmp_path):
    app = spawn("busy.py")
    cookie = tmp_path / "latin1.py"
    cookie.write_bytes("# -*- coding: latin-1 -*-\nprint('caf\xe9')\n".encode("latin-1"))
    done = wand("exec-py", "pid/%d" % app.pid, "-f", str(cookie))
    assert done.returncode == 0 and done.stdout == "caf\xe9\n", done.stderr
    bom = tmp_path / "bom.py"
    bom.write_bytes(b"\xef\xbb\xbfprint('bom ok')\n")
    done = wand("exec-py", "pid/%d" % app.pid, "-f", str(bom))
    assert done.returncode == 0 and done.stdout == "bom ok\n", done.stderr
    done = wand_bytes("exec-py", "pid/%d" % app.pid, "-f", "-", input="# coding: latin-1\nprint('\xe9t\xe9')\n"
                      .encode("latin-1"))
    assert done.returncode == 0 and done.stdout.decode() == "\xe9t\xe9\n", done.stderr


@pytest.mark.py314
def test_code_that_is_not_utf8_is_one_line(spawn, wand, tmp_path, py314):
    app = spawn("busy.py")
    bad = tmp_path / "bad.py"
    bad.write_bytes(b"print('\xff\xfe')\n")
    done = wand("exec-py", "pid/%d" % app.pid, "-f", str(bad))
    assert done.returncode == 2
    line = one_line(done)
    assert "not valid UTF-8" in line and "coding" in line and "0xff" in line
    done = wand_bytes("exec-py", "pid/%d" % app.pid, "-f", "-", input=b"\x00\x9f\x92\x96 binary")
    assert done.returncode == 2 and b"not valid UTF-8" in done.stderr and len(done.stderr.splitlines()) == 1
    assert private_dirs(py314, app.pid) == [] and app.stderr_so_far(0.2) == ""


def test_usage_hints_name_the_verb(wand):
    done = wand("stack", "--no-such")
    assert done.returncode == 2 and one_line(done).endswith("see 'kubectl wand stack --help'")
    done = wand("attach", "pid/1", "--all-pods")
    assert done.returncode == 2 and "are for pods" in one_line(done)
    done = wand("frobnicate")
    assert done.returncode == 2 and "unknown command" in one_line(done)


@pytest.mark.py314
def test_max_output_is_said_and_flagged(spawn, wand):
    app = spawn("busy.py")
    done = wand("exec-py", "pid/%d" % app.pid, "--max-output", "100", "--", "print('x' * 5000)")
    assert done.returncode == 0 and done.stdout == "x" * 100, done.stderr
    assert "output cut at 100 bytes (--max-output" in done.stderr
    data = wand("exec-py", "pid/%d" % app.pid, "--max-output", "100", "-o", "json", "--", "print('x' * 5000)")
    import json
    assert json.loads(data.stdout)["truncated"] is True
    whole = wand("exec-py", "pid/%d" % app.pid, "--max-output", "0", "--", "print('x' * 5000)")
    assert whole.stdout == "x" * 5000 + "\n" and "cut" not in whole.stderr
