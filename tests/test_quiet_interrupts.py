"""Interrupting kubectl wand never writes into the app's own stderr (issue 17).

The CLI is interrupted (SIGINT, as Ctrl-C, and SIGKILL) at several moments of every injecting verb (exec-py,
attach, trace) against a real CPython 3.14 target whose stderr is a file: the file stays empty, the target
keeps running, and its temporary directory is clean. The CLI and the targets are started with SIGINT at its
default (a test runner may have inherited it ignored, and Python keeps an ignored SIGINT ignored).

Each case ends with one more injection (``exec-py -- 1``): it runs only once the main thread has left the
interrupted payload, so the stderr file is read after the payload has finished whatever it was doing.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from leftovers import private_dirs
from procs import REPO, read_line, wait_for

pytestmark = pytest.mark.py314


class QuietTarget:
    """A target whose stderr is a file (its log), as a container runtime would keep it."""

    def __init__(self, py314, tmp_path, app, *args, flags=()):
        self.log = tmp_path / ("%s.stderr" % app)
        with open(self.log, "wb") as err:
            self.popen = subprocess.Popen(py314.argv(list(flags) + [py314.app(app)] + list(args)),
                                          stdout=subprocess.PIPE, stderr=err, start_new_session=True,
                                          env={"PATH": "/usr/local/bin:/usr/bin:/bin", "PYTHONUNBUFFERED": "1"},
                                          preexec_fn=default_sigint)  # Python keeps an inherited SIG_IGN
        line = read_line(self.popen.stdout, 20)
        assert line.startswith("READY"), (line, self.logs())
        self.info = dict(kv.split("=", 1) for kv in line.split()[1:])
        self.pid = int(self.info["pid"])

    def logs(self):
        return self.log.read_text(errors="replace")

    def alive(self):
        return self.popen.poll() is None

    def stop(self):
        if self.alive():
            self.popen.kill()
        self.popen.wait(10)


@pytest.fixture
def target(py314, tmp_path):
    started = []

    def start(app, *args, flags=()):
        started.append(QuietTarget(py314, tmp_path, app, *args, flags=flags))
        return started[-1]

    yield start
    for t in started:
        t.stop()


def default_sigint():
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # never assume the test runner left it at its default


def cli(*args):
    return subprocess.Popen([sys.executable, "-m", "kubectl_wand"] + [str(a) for a in args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO,
                            env=dict(os.environ, PYTHONPATH=REPO), preexec_fn=default_sigint)


def run(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "kubectl_wand"] + [str(a) for a in args], capture_output=True,
                          text=True, cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), timeout=timeout,
                          preexec_fn=default_sigint)


def interrupt(proc, how):
    proc.send_signal(how)
    try:
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def settle(py314, app, sweep=True):
    """Once the main thread is free again (a second injection ran), the log is empty and nothing is left."""
    after = run("exec-py", "pid/%d" % app.pid, "--timeout", "30", "--", "1")
    assert after.returncode == 0, after.stderr
    assert wait_for(lambda: private_dirs(py314, app.pid) == [], timeout=10), private_dirs(py314, app.pid)
    assert app.alive()
    assert app.logs() == "", app.logs()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


HOW = [signal.SIGINT, signal.SIGKILL]
HOW_IDS = ["ctrl-c", "kill"]


@pytest.mark.parametrize("how", HOW, ids=HOW_IDS)
@pytest.mark.parametrize("into_code", [0.2, 0.8, 1.4])
def test_exec_py_interrupted_while_the_code_runs(target, py314, tmp_path, how, into_code):
    """The issue's case: the interrupt comes 0.2-1.4 s into the user's ``time.sleep(2)``. The payload's answer
    then finds the agent gone; and it removes its own directory once it does (after SIGKILL no agent is
    left to do it)."""
    app = target("busy.py")
    started = py314.host("/tmp/wand-test-started-%d" % app.pid)
    code = "import time\nopen('/tmp/wand-test-started-%d', 'w').close()\ntime.sleep(2)\n'done'" % app.pid
    proc = cli("exec-py", "pid/%d" % app.pid, "--timeout", "30", "--", code)
    try:
        assert wait_for(lambda: os.path.exists(started), timeout=30), proc.stderr.read1().decode()
        time.sleep(into_code)  # the moment of the interrupt, into the user's code
    finally:
        interrupt(proc, how)
        os.unlink(started)
    # Without a new injection: the directory goes when the payload sees the agent gone (at most the 2 s sleep).
    assert wait_for(lambda: private_dirs(py314, app.pid) == [], timeout=10), private_dirs(py314, app.pid)
    settle(py314, app)


@pytest.mark.parametrize("how", HOW, ids=HOW_IDS)
def test_code_that_never_returns_stops_when_the_cli_goes(target, py314, how):
    """`while True: pass` ran on in the app's main thread until --timeout (here 10 minutes) after the CLI was
    interrupted or killed, and its answer then went into the closed connection: an app that restored SIGPIPE's
    default was killed by it. The payload looks at its connection while the code runs: the code is stopped at
    its next line, and its answer meets EPIPE, never SIGPIPE."""
    app = target("sigpipe_default.py")
    started = py314.host("/tmp/wand-test-started-%d" % app.pid)
    code = "open('/tmp/wand-test-started-%d', 'w').close()\nwhile True: pass" % app.pid
    proc = cli("exec-py", "pid/%d" % app.pid, "--timeout", "600", "--", code)
    try:
        assert wait_for(lambda: os.path.exists(started), timeout=30), proc.stderr.read1().decode()
    finally:
        interrupt(proc, how)
        os.unlink(started)
    err = proc.stderr.read().decode()
    assert proc.returncode == (130 if how == signal.SIGINT else -signal.SIGKILL), err
    if how == signal.SIGINT:  # one line, saying what became of the code
        assert err.count("\n") == 1 and "interrupted while the code was still running in process %d" % app.pid \
            in err, err
    # Read from the process's memory (nothing injected: an injection would run nested inside the loop)
    assert wait_for(lambda: back_in_app(app.pid, "sigpipe_default.py"), timeout=15), "the code still runs"
    settle(py314, app)


def back_in_app(pid, app_file):
    """Whether the main thread of ``pid`` runs the app's own code, none of exec-py's (``<wand>``, ours): read
    positively (a read on a moving stack may get no frames at all)."""
    from kubectl_wand.agent.main import handle
    result = handle({"op": "stack", "pid": pid})
    files = [f.get("file") or "" for p in result.get("processes") or [] for t in p["threads"] if t.get("main")
             for f in t.get("frames") or []]
    return bool(files) and files[0].endswith(app_file) and not any(f == "<wand>" or f.startswith("<kubectl-wand")
                                                                   for f in files)


@pytest.mark.parametrize("how", HOW, ids=HOW_IDS)
@pytest.mark.parametrize("moment", [0.3, 0.6, 1.0])
def test_exec_py_interrupted_at_any_moment(target, py314, how, moment):
    """Moments from the CLI's start: while it starts, injects, or the payload says hello."""
    app = target("busy.py")
    proc = cli("exec-py", "pid/%d" % app.pid, "--timeout", "30", "--", "import time; time.sleep(1)")
    time.sleep(moment)
    interrupt(proc, how)
    settle(py314, app)


@pytest.mark.parametrize("how", HOW, ids=HOW_IDS)
@pytest.mark.parametrize("moment", [0.2, 0.5, 0.9, 1.5])
def test_attach_interrupted_at_any_moment(target, py314, how, moment):
    """attach into a target without debugpy (it is shipped, then imported: the longest payload there is)."""
    app = target("http_app.py", flags=["-S"])
    proc = cli("attach", "pid/%d" % app.pid, "--port", free_port(), "--timeout", "30")
    time.sleep(moment)
    interrupt(proc, how)
    settle(py314, app)


@pytest.mark.parametrize("how", HOW, ids=HOW_IDS)
@pytest.mark.parametrize("moment", [0.3, 0.7, "installed"])
def test_trace_interrupted_at_any_moment(target, py314, how, moment):
    from test_trace_local import line_of
    app = target("trace_app.py")
    proc = cli("trace", "pid/%d" % app.pid, "trace_app.py:%d" % line_of("handler"), "user", "--duration", "60")
    if moment == "installed":
        line = read_line(proc.stderr, 30)  # the CLI says on stderr when the probe is in
        assert line.startswith("tracing "), line
    else:
        time.sleep(moment)
    interrupt(proc, how)
    # The probe removes itself when its connection ends (at once on SIGKILL: the kernel closes it).
    check = ("import sys, threading\n[sys.monitoring.get_tool(i) for i in range(6)] == [None] * 6 and "
             "'kubectl-wand-trace' not in [t.name for t in threading.enumerate()]")
    assert wait_for(lambda: run("exec-py", "pid/%d" % app.pid, "--", check).stdout.strip() == "True",
                    timeout=20, interval=0.3)
    settle(py314, app)


def test_code_that_closes_the_connection_leaves_the_log_empty(target, py314):
    """User code that closes fds 3-39 (the connection among them): the payload neither writes its answer nor
    closes a descriptor that may be the app's by now, and says nothing."""
    app = target("busy.py")
    result = run("exec-py", "pid/%d" % app.pid, "--", "import os\nfor fd in range(3, 40):\n"
                 "    try:\n        os.close(fd)\n    except OSError:\n        pass\n")
    assert result.returncode != 0 and "closed the connection without answering" in result.stderr, result.stderr
    settle(py314, app)


def test_a_reused_descriptor_gets_nothing_of_ours(target, py314, tmp_path):
    """User code closes the connection and opens a file that takes its number: the payload's answer must not
    land in that file (it could be the app's log), and the payload must not close it."""
    app = target("busy.py")
    code = ("import os, socket, gc\n"
            "socks = [o for o in gc.get_objects() if isinstance(o, socket.socket) and o.family == socket.AF_UNIX]\n"
            "fds = sorted(s.fileno() for s in socks if s.fileno() >= 0)\n"
            "for fd in fds:\n"
            "    os.close(fd)\n"
            "import builtins\n"
            "builtins._wand_test_files = [open('/tmp/wand-test-reused-%d-%%d' %% i, 'w') for i in range(len(fds))]\n"
            "print('never seen')\n" % app.pid)
    result = run("exec-py", "pid/%d" % app.pid, "--", code)
    assert result.returncode != 0, result.stdout
    names = [n for n in os.listdir(py314.host("/tmp")) if n.startswith("wand-test-reused-%d-" % app.pid)]
    assert names
    check = run("exec-py", "pid/%d" % app.pid, "--", "import builtins\n"
                "[f.closed for f in builtins._wand_test_files]")
    try:
        assert check.stdout.strip() == str([False] * len(names)), check  # the app's files stay open
        for name in names:
            with open(os.path.join(py314.host("/tmp"), name)) as f:
                assert f.read() == "", name  # and got nothing of ours
    finally:
        for name in names:
            os.unlink(os.path.join(py314.host("/tmp"), name))
    settle(py314, app)


def test_the_apps_ctrl_c_while_the_payload_runs_reaches_the_app_once(target, py314):
    """SIGINT to the app while an exec-py payload runs: it interrupts the user's code (as it would the app's
    own), and the app still gets its KeyboardInterrupt, once, in its own code, after the payload."""
    app = target("interruptible.py")
    started = py314.host("/tmp/wand-test-started-%d" % app.pid)
    code = "import time\nopen('/tmp/wand-test-started-%d', 'w').close()\ntime.sleep(5)" % app.pid
    proc = subprocess.Popen([sys.executable, "-m", "kubectl_wand", "exec-py", "pid/%d" % app.pid, "-o", "json",
                             "--", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO,
                            env=dict(os.environ, PYTHONPATH=REPO), text=True)
    try:
        assert wait_for(lambda: os.path.exists(started), timeout=30)
        os.kill(app.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.unlink(started)
    result = json.loads(out)
    assert result["status"] == "raised" and "KeyboardInterrupt" in result["error"], (out, err)
    assert read_line(app.popen.stdout, 10) == "INTERRUPTED 1"  # the app's own except clause saw it, once
    settle(py314, app)
    os.kill(app.pid, signal.SIGINT)  # its own handler is back: the next Ctrl-C reaches it as before
    assert read_line(app.popen.stdout, 10) == "INTERRUPTED 2"


def test_the_probes_thread_never_prints_even_when_removal_fails(target, py314):
    """The app broke what the probe's removal calls (here sys.monitoring.get_tool): the thread's failure must
    not reach threading's excepthook, which prints into the app's stderr."""
    from test_trace_local import line_of
    app = target("trace_app.py")
    proc = cli("trace", "pid/%d" % app.pid, "trace_app.py:%d" % line_of("handler"), "user", "--duration", "60")
    try:
        assert read_line(proc.stderr, 30).startswith("tracing ")
        broken = run("exec-py", "pid/%d" % app.pid, "--", "import sys, builtins\n"
                     "builtins._wand_test_get_tool = sys.monitoring.get_tool\nsys.monitoring.get_tool = None")
        assert broken.returncode == 0, broken.stderr
    finally:
        interrupt(proc, signal.SIGINT)
    gone = "import threading\n'kubectl-wand-trace' not in [t.name for t in threading.enumerate()]"
    assert wait_for(lambda: run("exec-py", "pid/%d" % app.pid, "--", gone).stdout.strip() == "True",
                    timeout=20, interval=0.3)
    fixed = run("exec-py", "pid/%d" % app.pid, "--", "import sys, builtins\n"
                "sys.monitoring.get_tool = builtins._wand_test_get_tool\ndel builtins._wand_test_get_tool")
    assert fixed.returncode == 0, fixed.stderr
    settle(py314, app)


def test_the_apps_ctrl_c_while_the_payload_imports_debugpy_reaches_the_app_not_the_payload(target, py314):
    """SIGINT to the app the moment attach's payload imports a shipped debugpy (its own step, not user code):
    the import goes on and the server starts; the app gets its KeyboardInterrupt once, after the payload."""
    from test_trust_local import Inotify
    from kubectl_wand.transport.local import ship
    app = target("interruptible.py", flags=["-S"])  # no site-packages: debugpy is shipped, then imported
    ship("debugpy")  # built and cached before the race starts
    tmp = py314.host("/tmp")
    notify = Inotify()
    notify.watch(tmp, Inotify.CREATE)
    proc = cli("attach", "pid/%d" % app.pid, "--port", free_port(), "--timeout", "60", "-o", "json")
    interrupted = False
    try:
        deadline = time.monotonic() + 60
        while not interrupted and time.monotonic() < deadline:
            for where, name, mask in notify.events(1.0):
                path = os.path.join(where or "", name)
                if where == tmp and name.startswith("wand-%d-" % app.pid):
                    notify.watch(path, Inotify.CREATE)
                elif name == "lib":
                    notify.watch(path, Inotify.CREATE)
                elif name == ".complete":
                    assert notify.watch(os.path.join(where, "debugpy"), Inotify.OPEN)
                elif mask & Inotify.OPEN and name == "__init__.py":
                    os.kill(app.pid, signal.SIGINT)  # the payload is importing debugpy right now
                    interrupted = True
                    break
        out, err = proc.communicate(timeout=60)
    finally:
        notify.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert interrupted, "never saw the target import the shipped debugpy"
    assert proc.returncode == 0 and json.loads(out)["status"] == "listening", (out, err)
    assert read_line(app.popen.stdout, 10) == "INTERRUPTED 1"
    settle(py314, app)


def test_debugpy_that_cannot_load_one_of_its_files_writes_nothing_into_the_app(py314):
    """What an attach interrupted while the target imports debugpy looks like to pydevd (seen in CI at 0.9 s:
    the CLI removed the shipped files mid-import): one of its extension modules cannot be imported. pydevd
    logs "Unable to load extension" to the app's stderr; loaded by kubectl wand it logs nowhere, and the
    environment variables debugpy's import sets are back as they were."""
    import io
    import shutil
    import tarfile
    import uuid
    from kubectl_wand import debugpy_bundle

    inside = "/tmp/wand-test-debugpy-%s" % uuid.uuid4().hex
    host = py314.host(inside)
    os.makedirs(host + "/lib")
    try:
        with tarfile.open(fileobj=io.BytesIO(debugpy_bundle.blob()), mode="r:gz") as tar:
            tar.extractall(host + "/lib")
        open(host + "/lib/.complete", "w").close()
        broken = [os.path.join(d, f) for d, _, files in os.walk(host + "/lib") for f in files
                  if f.startswith("pydevd_plugin_") and f.endswith(".py") and "/extensions/types/" in d + "/"]
        assert broken, "pydevd's extension modules moved: find what to break"
        with open(broken[0], "w") as f:
            f.write('raise ImportError("removed while it loaded")\n')
        shutil.copy(os.path.join(REPO, "kubectl_wand", "agent", "passengers", "debugger.py"), host + "/debugger.py")
        script = ("import json, os, sys\nsys.path.insert(0, %r)\nimport debugger\n"
                  "result = debugger.start_debugpy({'debugpy_path': %r, 'host': '127.0.0.1', 'port': 0})\n"
                  "print(json.dumps([result['status'], os.environ.get('PYDEVD_USE_FRAME_EVAL'),"
                  " os.environ.get('PYDEVD_DISABLE_FILE_VALIDATION')]))\n") % (inside, inside + "/lib")
        done = subprocess.run(py314.argv(["-c", script]), capture_output=True, text=True, timeout=60,
                              env={"PATH": "/usr/local/bin:/usr/bin:/bin"})
        assert done.returncode == 0, done.stderr
        assert done.stderr == "", done.stderr
        assert json.loads(done.stdout.splitlines()[-1]) == ["listening", None, None], done.stdout
    finally:
        shutil.rmtree(host, ignore_errors=True)
