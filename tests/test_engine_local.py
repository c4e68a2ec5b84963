"""The engine against real CPython 3.14 processes on this machine (pid/N targets), through the real CLI."""
from __future__ import annotations

import json
import os
import socket
import sys
import time
import urllib.request

import pytest

import dap
from leftovers import private_dirs
from procs import read_line, wait_for

pytestmark = pytest.mark.py314




def one_line_error(result):
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    return lines[0]


# -- get processes ---------------------------------------------------------------------------------------

def test_get_processes_lists_real_targets_with_roles_and_attachability(spawn, wand):
    app = spawn("http_app.py")
    old = spawn("busy.py", version="3.13")
    listed = wand("get", "processes", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    items = {p["pid"]: p for p in json.loads(listed.stdout)["items"]}
    mine = items[app.pid]
    assert mine["python"].startswith("3.14.")
    assert mine["attachable"] is True and mine["reason"] is None
    assert mine["role"] == "main"
    assert mine["command"].endswith("http_app.py")
    assert mine["rss"] > 1_000_000 and mine["age"] >= 0
    assert items[old.pid]["attachable"] is False
    assert items[old.pid]["reason"].startswith("version: Python 3.13")
    table = wand("get", "processes", "pid/%d" % app.pid)
    header, row = table.stdout.splitlines()
    assert header.split() == ["PID", "PPID", "USER", "PYTHON", "CPU%", "RSS", "AGE", "ROLE", "ATTACHABLE", "COMMAND"]
    assert row.split()[0] == str(app.pid) and " yes " in row
    wide = wand("get", "processes", "pid/%d" % app.pid, "-o", "wide", "--no-headers")
    assert "/usr/bin/python3.14" in wide.stdout or "python3.14" in wide.stdout
    assert not wide.stdout.startswith("PID")


def test_busy_target_shows_cpu(spawn, wand):
    busy = spawn("busy.py")
    listed = json.loads(wand("get", "processes", "pid/%d" % busy.pid, "-o", "json").stdout)["items"]
    assert listed[0]["cpu"] > 5.0  # a shared 2-core machine may give it far less than a core


def test_get_processes_on_a_pid_that_is_not_python(wand):
    result = wand("get", "processes", "pid/1")
    assert result.returncode == 3
    assert "not a Python process" in one_line_error(result)


# -- exec-py ---------------------------------------------------------------------------------------------

def test_exec_py_returns_stdout_and_final_expression(spawn, wand, py314):
    app = spawn("http_app.py")
    result = wand("exec-py", "pid/%d" % app.pid, "--", "import os, sys; print('in', os.getpid()); 6 * 7")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "in %d\n42\n" % app.pid
    as_json = json.loads(wand("exec-py", "pid/%d" % app.pid, "-o", "json", "--",
                              "import sys; sys.stderr.write('warn\\n'); sys.version").stdout)
    assert as_json["status"] == "ok" and as_json["stderr"] == "warn\n"
    assert as_json["value"].startswith("'3.14.")
    assert as_json["traceback"] is None
    assert app.alive() and app.stderr_so_far() == ""
    assert private_dirs(py314, app.pid) == []


def test_exec_py_reaches_app_state_and_app_keeps_serving(spawn, wand):
    app = spawn("http_app.py")
    url = "http://127.0.0.1:%s/" % app.info["port"]
    urllib.request.urlopen(url, timeout=10).read()
    hits = wand("exec-py", "pid/%d" % app.pid, "--", "HITS")
    assert hits.stdout.strip() == "1"
    # names of __main__ are a snapshot: rebinding one needs the module, deliberately
    wand("exec-py", "pid/%d" % app.pid, "--", "HITS = 100")
    assert wand("exec-py", "pid/%d" % app.pid, "--", "HITS").stdout.strip() == "1"
    wand("exec-py", "pid/%d" % app.pid, "--", "import __main__; __main__.HITS = 10")
    assert urllib.request.urlopen(url, timeout=10).read().endswith(b"#11")


def test_exec_py_from_file_and_stdin(spawn, wand, tmp_path):
    app = spawn("busy.py")
    script = tmp_path / "snippet.py"
    script.write_text("x = 20\nx + 1\n")
    assert wand("exec-py", "pid/%d" % app.pid, "-f", str(script)).stdout == "21\n"
    assert wand("exec-py", "pid/%d" % app.pid, "-f", "-", input="print('from stdin')").stdout == "from stdin\n"


def test_exec_py_code_that_raises(spawn, wand):
    app = spawn("busy.py")
    result = wand("exec-py", "pid/%d" % app.pid, "--", "print('before'); 1/0")
    assert result.returncode == 1
    assert result.stdout == "before\n"
    assert "ZeroDivisionError: division by zero" in result.stderr
    assert 'File "<wand>", line 1' in result.stderr
    assert "payload" not in result.stderr  # our own frames are not the user's business
    assert app.alive() and app.stderr_so_far() == ""


def test_exec_py_system_exit_does_not_stop_the_app(spawn, wand):
    app = spawn("busy.py")
    result = wand("exec-py", "pid/%d" % app.pid, "--", "raise SystemExit(3)")
    assert result.returncode == 1 and "SystemExit: 3" in result.stderr
    assert app.alive()


def test_exec_py_syntax_error_never_reaches_the_target(spawn, wand, py314):
    app = spawn("busy.py")
    result = wand("exec-py", "pid/%d" % app.pid, "--", "x = (")
    assert result.returncode == 2
    assert "SyntaxError" in one_line_error(result)
    assert app.alive() and app.stderr_so_far() == "" and private_dirs(py314, app.pid) == []
    # 3.14-only syntax is judged by the target's compiler, not ours (the CLI runs on 3.9+)
    ok = wand("exec-py", "pid/%d" % app.pid, "--", "name = 'x'; t = t'hi {name}'; type(t).__name__")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "'Template'"


def test_exec_py_code_that_never_returns_is_stopped(spawn, wand, py314):
    app = spawn("http_app.py")
    result = wand("exec-py", "pid/%d" % app.pid, "--timeout", "1", "--", "while True: pass")
    assert result.returncode == 5
    assert "still running after 1s: stopped it" in result.stderr
    assert app.alive()
    again = wand("exec-py", "pid/%d" % app.pid, "--", "'alive'")
    assert again.stdout == "'alive'\n"
    url = "http://127.0.0.1:%s/" % app.info["port"]
    assert urllib.request.urlopen(url, timeout=10).status == 200
    assert private_dirs(py314, app.pid) == []


def test_blocked_main_thread_is_reported_not_hung(spawn, wand, py314):
    app = spawn("sleeper.py", "4")
    started = time.monotonic()
    result = wand("exec-py", "pid/%d" % app.pid, "--timeout", "1", "--", "print('must never run')")
    assert time.monotonic() - started < 4
    assert result.returncode == 5
    lines = result.stderr.splitlines()
    assert lines[0].startswith("error: the injection is still pending after 1s")
    assert "clock_nanosleep" in result.stderr or "nanosleep" in result.stderr
    assert "sleeper.py:8:wait_here" in result.stderr
    assert "nothing of this request will run" in result.stderr
    # When the main thread wakes, the bootstrap finds nobody waiting: no output, no error, no files.
    assert wait_for(lambda: private_dirs(py314, app.pid) == [], timeout=15)
    assert app.alive()
    logs = app.stderr_so_far(wait=0.2)
    assert logs == "", logs


def test_asyncio_target(spawn, wand):
    app = spawn("asyncio_app.py")
    result = wand("exec-py", "pid/%d" % app.pid, "--",
                  "import asyncio, __main__; loop = asyncio.get_running_loop(); "
                  "sorted(t.get_name() for t in asyncio.all_tasks(loop)), __main__.TICKS > 0")
    assert result.returncode == 0, result.stderr
    assert "'ticker'" in result.stdout and "True" in result.stdout


def test_payload_files_are_private_and_removed(spawn, wand, py314):
    app = spawn("busy.py", user=1000) if py314.root else spawn("busy.py")
    code = ("import os, glob, stat; d = [p for p in glob.glob('/tmp/wand-%d-*')]; "
            "[(oct(stat.S_IMODE(os.stat(p).st_mode)), os.stat(p).st_uid, sorted(oct(stat.S_IMODE(os.stat(os.path.join(p, f)).st_mode)) for f in os.listdir(p))) for p in d]"
            % app.pid)
    result = wand("exec-py", "pid/%d" % app.pid, "--", code)
    assert result.returncode == 0, result.stderr
    listing = eval(result.stdout)
    assert len(listing) == 1  # one unique directory for this injection
    mode, owner, files = listing[0]
    assert mode == "0o700"
    assert owner == (1000 if py314.root else os.getuid())
    assert files == ["0o600"]  # the socket; the bootstrap removed itself once read
    assert private_dirs(py314, app.pid) == []


# -- bad input ---------------------------------------------------------------------------------------------

def test_unknown_pid(wand):
    result = wand("exec-py", "pid/4194000", "--", "1")
    assert result.returncode == 3 and "no process 4194000" in one_line_error(result)


def test_not_python_pid(wand):
    result = wand("exec-py", "pid/1", "--", "1")
    assert result.returncode == 3 and "not a Python process" in one_line_error(result)


def test_python_313_target(spawn, wand):
    app = spawn("busy.py", version="3.13")
    result = wand("exec-py", "pid/%d" % app.pid, "--", "1")
    assert result.returncode == 4
    assert "Python 3.13" in one_line_error(result) and "3.14" in result.stderr
    assert app.alive()


def test_python_311_target(wand, tmp_path):
    import subprocess
    proc = subprocess.Popen([sys.executable, "-c", "import time\nwhile True: time.sleep(0.01)"])
    try:
        wait_for(lambda: os.path.exists("/proc/%d/exe" % proc.pid))
        result = wand("exec-py", "pid/%d" % proc.pid, "--", "1")
        assert result.returncode == 4
        assert "Python 3.11" in one_line_error(result)
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait(10)


@pytest.mark.parametrize("how", ["env", "xoption"])
def test_remote_debugging_disabled(spawn, wand, how, py314):
    if how == "env":
        app = spawn("busy.py", env={"PYTHON_DISABLE_REMOTE_DEBUG": "1"})
    else:
        app = spawn("busy.py", flags=["-X", "disable-remote-debug"])
    result = wand("exec-py", "pid/%d" % app.pid, "--", "1")
    assert result.returncode == 4
    assert "disable" in one_line_error(result).lower()
    checked = wand("check", "pid/%d" % app.pid)
    assert checked.returncode == 1
    assert "remote debugging   fail" in checked.stdout
    assert app.alive() and private_dirs(py314, app.pid) == []


def test_env_switch_is_ignored_under_isolated_mode(spawn, wand):
    app = spawn("busy.py", env={"PYTHON_DISABLE_REMOTE_DEBUG": "1"}, flags=["-I"])
    result = wand("exec-py", "pid/%d" % app.pid, "--", "'ok'")
    assert result.returncode == 0, result.stderr


def test_other_uid_without_permission(spawn, wand, py314):
    if os.geteuid() != 0:
        pytest.skip("needs root to start a target as another uid")
    app = spawn("busy.py", user=1000) if py314.root else spawn(
        "busy.py", argv=["setpriv", "--reuid=1000", "--regid=1000", "--clear-groups", py314.exe, py314.app("busy.py")])
    result = wand("exec-py", "pid/%d" % app.pid, "--", "1", user=1001)
    assert result.returncode == 4
    assert "permission" in one_line_error(result).lower() or "uid" in result.stderr
    assert "CAP_SYS_PTRACE" in result.stderr
    checked = wand("check", "pid/%d" % app.pid, user=1001)
    assert checked.returncode == 1 and "permission" in checked.stdout
    assert app.alive()


def test_missing_file(wand):
    result = wand("exec-py", "pid/1", "-f", "/nonexistent/snippet.py")
    assert result.returncode == 2 and "cannot read -f /nonexistent/snippet.py" in one_line_error(result)


def test_usage_errors_are_one_line(wand):
    assert wand("exec-py", "pid/1").returncode == 2
    bad = wand("exec-py", "pod/x/y", "--", "1")
    assert bad.returncode == 2 and "TYPE/NAME" in one_line_error(bad)
    flag = wand("get", "processes", "--bogus")
    assert flag.returncode == 2 and "unrecognized arguments: --bogus" in one_line_error(flag)


# -- attach + a real DAP client ----------------------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def breakpoint_round_trip(py314, app, port):
    """Attach a DAP client, break in the HTTP handler, read locals, continue; returns what we saw."""
    path = py314.app("http_app.py")
    line = dap.marker_line(py314.host(path))
    client = dap.DAPClient("127.0.0.1", port)
    try:
        top, body = dap.break_on_request(client, path, line, "http://127.0.0.1:%s/" % app.info["port"])
        assert top["frame"]["name"] == "do_GET" and "self" in top["vars"]
        assert body.startswith(b"hello from")
        return top
    finally:
        client.close()


def test_attach_breakpoint_hit_and_second_attach_reuses(spawn, wand, py314):
    app = spawn("http_app.py")
    port = free_port()
    first = wand("attach", "pid/%d" % app.pid, "--port", port)
    assert first.returncode == 0, first.stderr
    assert "listening on 127.0.0.1:%d" % port in first.stdout
    assert '"type": "debugpy"' in first.stdout and '"request": "attach"' in first.stdout
    assert "require('dap').configurations.python" in first.stdout
    assert '"remoteRoot": "/"' in first.stdout  # the target's cwd
    breakpoint_round_trip(py314, app, port)
    second = wand("attach", "pid/%d" % app.pid, "--port", free_port(), "-o", "json")
    info = json.loads(second.stdout)
    assert second.returncode == 0 and info["status"] == "already" and info["port"] == port
    assert info["editor"]["vscode"]["connect"]["port"] == port
    breakpoint_round_trip(py314, app, port)  # the server still serves editors after our probes
    assert app.stderr_so_far() == ""
    assert private_dirs(py314, app.pid) == []


def test_attach_ships_debugpy_when_the_target_lacks_it(spawn, wand, py314):
    app = spawn("http_app.py", flags=["-S"])  # no site-packages: debugpy is not importable
    before = wand("exec-py", "pid/%d" % app.pid, "--", "import importlib.util; print(importlib.util.find_spec('debugpy'))")
    assert before.stdout.strip() == "None"
    port = free_port()
    result = wand("attach", "pid/%d" % app.pid, "--port", port, "-o", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["source"] == "shipped"
    assert private_dirs(py314, app.pid) == []  # shipped files are gone once the server runs
    breakpoint_round_trip(py314, app, port)


def test_attach_ships_debugpy_before_the_injection(spawn, wand, py314):
    """The shipped debugpy is complete before the target's main thread runs our script: it does not wait in
    our bootstrap while 1.7 MB cross kubectl and 11 MB unpack (it used to, after its hello)."""
    app = spawn("audit_ship.py", flags=["-S"])
    result = wand("attach", "pid/%d" % app.pid, "--port", free_port(), "--no-forward", "-o", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["source"] == "shipped"
    assert read_line(app.popen.stdout, 20) == "SHIPPED_BEFORE=True"
    assert private_dirs(py314, app.pid) == []


def test_attach_busy_port_leaves_target_untouched(spawn, wand):
    app = spawn("http_app.py")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        result = wand("attach", "pid/%d" % app.pid, "--port", port)
    assert result.returncode == 6
    assert "port %d is" % port in one_line_error(result) and "--port" in result.stderr
    probe = wand("exec-py", "pid/%d" % app.pid, "--", "import sys; 'debugpy' in sys.modules")
    assert probe.stdout.strip() == "False"


def test_attach_other_address_warns(spawn, wand):
    app = spawn("http_app.py")
    result = wand("attach", "pid/%d" % app.pid, "--port", free_port(), "--address", "0.0.0.0")
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith("warning: the debug server will listen on 0.0.0.0")


# -- check -------------------------------------------------------------------------------------------------

def test_check_healthy_and_blocked(spawn, wand):
    app = spawn("http_app.py")
    good = wand("check", "pid/%d" % app.pid, "-o", "json")
    assert good.returncode == 0, good.stderr
    rows = {r["check"]: r for r in json.loads(good.stdout)["rows"]}
    assert set(rows) >= {"process", "interpreter", "remote debugging", "permission", "injector", "private files",
                         "debugpy", "main thread"}
    assert all(r["status"] in ("ok", "warn") for r in rows.values())
    assert rows["interpreter"]["detail"].startswith("CPython 3.14")
    assert rows["main thread"]["status"] == "ok"  # serve_forever polls every 50 ms: it wakes regularly
    sleeper = spawn("sleeper.py")
    blocked = {r["check"]: r for r in json.loads(wand("check", "pid/%d" % sleeper.pid, "-o", "json").stdout)["rows"]}
    assert blocked["main thread"]["status"] == "warn"
    assert "sleeper.py:8 in wait_here" in blocked["main thread"]["detail"]


def test_check_old_python_fails(spawn, wand):
    app = spawn("busy.py", version="3.13")
    result = wand("check", "pid/%d" % app.pid)
    assert result.returncode == 1
    assert any(line.startswith("interpreter") and " fail " in line for line in result.stdout.splitlines())
