"""attach and an editor that connects the moment the debug port accepts (issue 23), on real local targets.

An editor retrying its connection while a pre-launch task runs `kubectl wand attach` reaches the port before
attach has printed its readiness line. Whatever attach does to confirm readiness must not end that session:
pydevd's in-process server serves one client at a time, and a connection it accepts later replaces the one
before it (the editor got `terminated` right after `configurationDone`, its breakpoint never hit).
"""
from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

import dap
from procs import REPO

pytestmark = pytest.mark.py314

RUNS = 30


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def breaks(client, path, line, url, timeout=10.0):
    """Attach as an editor does, break in the handler once, continue: None when it worked, else what happened
    instead (the session terminated, the request answered without stopping, an error)."""
    failed = "unexpected exit"
    try:
        failed = attach_and_break(client, path, line, url, timeout)
        return failed
    finally:
        if failed:
            client.sock.close()  # a session already ended would not answer a disconnect: no waiting for one
        else:
            client.close()


def attach_and_break(client, path, line, url, timeout):
    try:
        bp = client.attach_with_breakpoint(path, line)
        if not bp.get("verified"):
            return "breakpoint not verified: %r" % (bp,)
        got = {}
        request = threading.Thread(target=lambda: got.setdefault(
            "body", urllib.request.urlopen(url, timeout=30).read()), daemon=True)
        request.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                event = client.events.get(timeout=0.1)
            except queue.Empty:
                if got:
                    return "the request was answered without stopping at the breakpoint"
                continue
            if event["event"] == "terminated":
                return "event terminated"
            if event["event"] == "stopped":
                if event["body"]["reason"] != "breakpoint":
                    return "stopped for %r" % event["body"]["reason"]
                client.request("continue", threadId=event["body"]["threadId"])
                request.join(30)
                return None if got.get("body", b"").startswith(b"hello from") else "no answer after continue"
        return "no stop within %gs" % timeout
    except (dap.DAPError, OSError) as exc:
        return "%s: %s" % (type(exc).__name__, exc)


def test_an_editor_connecting_as_soon_as_the_port_accepts_always_hits_its_breakpoint(spawn, py314):
    """Each run: a fresh target, attach, a DAP client retrying from the moment attach starts (every 5 ms) that
    breaks in the request handler; then another client right after the readiness line; both must break."""
    path = py314.app("http_app.py")
    line = dap.marker_line(py314.host(path))
    env = dict(os.environ, PYTHONPATH=REPO)
    failures = []
    for run in range(RUNS):
        app = spawn("http_app.py")
        url = "http://127.0.0.1:%s/" % app.info["port"]
        port = free_port()
        attach = subprocess.Popen([sys.executable, "-m", "kubectl_wand", "attach", "pid/%d" % app.pid,
                                   "--port", str(port)], cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            early = breaks(dap.DAPClient("127.0.0.1", port, timeout=10, retry=0.005), path, line, url)
            out, err = attach.communicate(timeout=60)
        finally:
            if attach.poll() is None:
                attach.kill()
                attach.wait()
        if attach.returncode != 0 or "listening on 127.0.0.1:%d" % port not in out:
            failures.append("run %d: attach failed (%s): %s" % (run, attach.returncode, err.strip()))
            continue
        if early:
            failures.append("run %d, client connecting at once: %s" % (run, early))
        late = breaks(dap.DAPClient("127.0.0.1", port, timeout=10), path, line, url)
        if late:
            failures.append("run %d, client after the readiness line: %s" % (run, late))
        assert app.alive() and app.stderr_so_far() == ""
        app.stop()
    assert not failures, "%d of %d runs failed:\n%s" % (len(failures), RUNS, "\n".join(failures))


def test_attach_again_leaves_the_connected_editor_its_session(spawn, py314, wand):
    """A second attach to a process whose server an editor is using (status "already") confirms it without
    a connection of its own: the editor keeps its session and its breakpoint."""
    app = spawn("http_app.py")
    path = py314.app("http_app.py")
    line = dap.marker_line(py314.host(path))
    port = free_port()
    first = wand("attach", "pid/%d" % app.pid, "--port", port)
    assert first.returncode == 0, first.stderr
    client = dap.DAPClient("127.0.0.1", port, timeout=10)
    try:
        assert client.attach_with_breakpoint(path, line)["verified"]
        again = wand("attach", "pid/%d" % app.pid)
        assert again.returncode == 0, again.stderr
        assert "already listening on 127.0.0.1:%d" % port in again.stdout, again.stdout
        got = {}
        request = threading.Thread(target=lambda: got.setdefault(
            "body", urllib.request.urlopen("http://127.0.0.1:%s/" % app.info["port"], timeout=30).read()))
        request.start()
        stopped = client.wait_event("stopped", timeout=10)
        assert stopped["body"]["reason"] == "breakpoint"
        client.request("continue", threadId=stopped["body"]["threadId"])
        request.join(30)
        assert got["body"].startswith(b"hello from")
    finally:
        client.close()
    assert app.stderr_so_far() == ""
    for result in (first, again):  # what was checked, in words that are true of it
        assert "(confirmed: the process holds the listening socket)" in result.stdout, result.stdout


def test_readiness_reads_the_listening_socket_and_who_holds_it():
    """agent/debugserver's check, on real sockets of this process: LISTEN state at that address, held by us."""
    import socket
    from kubectl_wand.agent.debugserver import holds_listener, listening_inodes
    bound = socket.socket()
    bound.bind(("127.0.0.1", 0))
    port = bound.getsockname()[1]
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], stdin=subprocess.DEVNULL)
    try:
        assert holds_listener(os.getpid(), "127.0.0.1", port) is None  # bound, not yet listening
        bound.listen(1)
        mine = "socket:[%d]" % os.fstat(bound.fileno()).st_ino
        assert listening_inodes("127.0.0.1", port) == {mine}
        assert listening_inodes("localhost", port) == {mine} and listening_inodes(None, port) == {mine}
        assert listening_inodes("0.0.0.0", port) == set()  # another address: not that server
        assert holds_listener(os.getpid(), "127.0.0.1", port) is True
        assert holds_listener(child.pid, "127.0.0.1", port) is False  # a listener there, but not the child's
    finally:
        child.kill()
        child.wait()
        bound.close()
    assert holds_listener(os.getpid(), "127.0.0.1", port) is None
    try:
        six = socket.socket(socket.AF_INET6)
        six.bind(("::1", 0))
    except OSError:
        return  # no IPv6 loopback here
    with six:
        six.listen(1)
        assert holds_listener(os.getpid(), "::1", six.getsockname()[1]) is True  # /proc/net/tcp6's word order
