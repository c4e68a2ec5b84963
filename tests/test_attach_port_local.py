"""attach when the debug port is not the agent's to take, on real local targets (issue 17: the target is hostile).

- Another process takes the port after the agent checked it free and before the payload listens: the payload
  must report it (kind "port", exit 6) without holding the app's main thread, and leave nothing behind (no
  pydevd thread, no half-started server): a retry on another port works.
- The listener on the port belongs to a process that merely calls itself "debugpy": it is not ours.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

import dap
from procs import REPO, read_line
from test_attach_race_local import breaks, free_port

pytestmark = pytest.mark.py314


def serves(app) -> bool:
    body = urllib.request.urlopen("http://127.0.0.1:%s/" % app.info["port"], timeout=10).read()
    return body.startswith(b"hello from")


def listener(port):
    sock = socket.socket()
    sock.bind(("127.0.0.1", port))
    sock.listen(1)
    return sock


def test_a_port_taken_between_the_check_and_the_listen_is_reported_and_leaves_the_app_untouched(spawn, py314, wand):
    app = spawn("port_race_app.py")
    port = free_port()
    attach = subprocess.Popen([sys.executable, "-m", "kubectl_wand", "attach", "pid/%d" % app.pid, "--port",
                               str(port), "--timeout", "20"], cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO),
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    thief = None
    try:
        # The agent checked the port free and injected; the payload has not started yet.
        assert read_line(app.popen.stdout, 20) == "SCRIPT"
        thief = listener(port)
        os.kill(app.pid, signal.SIGUSR1)
        started = time.monotonic()
        out, err = attach.communicate(timeout=60)
        took = time.monotonic() - started
    finally:
        if attach.poll() is None:
            attach.kill()
            attach.wait()
    try:
        assert attach.returncode == 6, (attach.returncode, out, err)
        assert "port %d is busy in pid %d (taken after kubectl wand checked it); choose another with --port" \
            % (port, app.pid) in err, err
        assert took < 10, took  # reported at once, not after the injection's timeout
        assert app.alive() and serves(app)  # the main thread is the app's again
        assert app.stderr_so_far() == ""  # no pydevd thread's traceback in the app's logs
    finally:
        thief.close()
    # Nothing half-started: no pydevd thread, no listen() on record; a retry on another port starts the server
    # and an editor hits its breakpoint.
    state = wand("exec-py", "pid/%d" % app.pid, "--", "import sys, threading; "
                 "api = sys.modules.get('debugpy.server.api'); "
                 "print(sorted(t.name for t in threading.enumerate()), getattr(getattr(api, 'listen', None), 'called', None))")
    assert state.returncode == 0, state.stderr
    assert state.stdout.strip() in ("['MainThread'] False", "['MainThread'] None"), state.stdout
    other = free_port()
    again = wand("attach", "pid/%d" % app.pid, "--port", other)
    assert again.returncode == 0, again.stderr
    assert "listening on 127.0.0.1:%d" % other in again.stdout, again.stdout
    path = py314.app("http_app.py")
    assert breaks(dap.DAPClient("127.0.0.1", other, timeout=10), path, dap.marker_line(py314.host(path)),
                  "http://127.0.0.1:%s/" % app.info["port"]) is None
    assert app.stderr_so_far() == ""


def debugpy_in(wand, app) -> str:
    return wand("exec-py", "pid/%d" % app.pid, "--", "import sys; 'debugpy' in sys.modules").stdout.strip()


def test_a_listener_that_calls_itself_debugpy_is_not_taken_for_ours(spawn, wand):
    """Its command line is the other process's choice (a pytest -k debugpy run, or a hostile one)."""
    app = spawn("http_app.py")
    port = free_port()
    code = "import socket, sys, time; s = socket.socket(); s.bind(('127.0.0.1', %d)); s.listen(1); " \
           "print('up', flush=True); time.sleep(60)" % port
    other = subprocess.Popen([sys.executable, "-c", code, "debugpy", "--for-server"], stdout=subprocess.PIPE,
                             stdin=subprocess.DEVNULL)
    try:
        assert read_line(other.stdout, 10) == "up"
        result = wand("attach", "pid/%d" % app.pid, "--port", port)
    finally:
        other.kill()
        other.wait()
    assert result.returncode == 6, result.stderr
    assert "port %d is" % port in result.stderr and "--port" in result.stderr, result.stderr
    assert debugpy_in(wand, app) == "False"  # refused before the target was touched


def test_the_apps_own_listener_is_not_taken_for_a_debug_server(spawn, wand):
    """The target holds the socket, but its record names no server of ours: the app's own port."""
    app = spawn("http_app.py")
    result = wand("attach", "pid/%d" % app.pid, "--port", app.info["port"])
    assert result.returncode == 6, result.stderr
    assert "port %s is busy in pid %d (held by the process itself, not by a debug server kubectl wand " \
           "started); choose another with --port" % (app.info["port"], app.pid) in result.stderr, result.stderr
    assert debugpy_in(wand, app) == "False"  # refused at the hello, before debugpy was imported
    assert serves(app) and app.stderr_so_far() == ""


def test_attach_again_on_the_same_port_finds_its_own_server(spawn, wand):
    app = spawn("http_app.py")
    port = free_port()
    first = wand("attach", "pid/%d" % app.pid, "--port", port)
    assert first.returncode == 0, first.stderr
    again = wand("attach", "pid/%d" % app.pid, "--port", port)
    assert again.returncode == 0, again.stderr
    assert "already listening on 127.0.0.1:%d" % port in again.stdout, again.stdout


def test_port_holder_reads_who_holds_the_listener_from_the_kernel():
    """agent/debugserver.port_holder on real processes: the target's own socket, a process listening where
    the target holds a connection (debugpy's separate adapter), an unrelated process."""
    from kubectl_wand.agent.debugserver import port_holder
    adapter_code = ("import socket, time\n"
                    "client, server = socket.socket(), socket.socket()\n"
                    "for s in (client, server): s.bind(('127.0.0.1', 0)); s.listen(1)\n"
                    "print(client.getsockname()[1], server.getsockname()[1], flush=True)\n"
                    "conn = server.accept()\n"
                    "time.sleep(60)\n")
    target_code = ("import socket, sys, time\n"
                   "own = socket.socket(); own.bind(('127.0.0.1', 0)); own.listen(1)\n"
                   "print(own.getsockname()[1], flush=True)\n"
                   "sys.stdin.readline()\n"
                   "c = socket.create_connection(('127.0.0.1', int(sys.stdin.readline())))\n"
                   "print('connected', flush=True)\n"
                   "time.sleep(60)\n")
    adapter = subprocess.Popen([sys.executable, "-c", adapter_code], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    target = subprocess.Popen([sys.executable, "-c", target_code], stdout=subprocess.PIPE, stdin=subprocess.PIPE,
                              text=True)
    unrelated = socket.socket()
    try:
        client_port, server_port = map(int, read_line(adapter.stdout, 10).split())
        own_port = int(read_line(target.stdout, 10))
        unrelated.bind(("127.0.0.1", 0))
        unrelated.listen(1)
        assert port_holder(own_port, target.pid) == "target"
        assert port_holder(client_port, target.pid) is None  # not connected to it yet: nothing ties them
        target.stdin.write("go\n%d\n" % server_port)
        target.stdin.flush()
        assert read_line(target.stdout, 10) == "connected"
        assert port_holder(client_port, target.pid) == "adapter"
        assert port_holder(unrelated.getsockname()[1], target.pid) is None
        assert port_holder(free_port(), target.pid) is None
    finally:
        unrelated.close()
        for proc in (adapter, target):
            proc.kill()
            proc.wait()
