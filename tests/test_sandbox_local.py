"""pid/N of a process sandboxed the way pyisolate runs its children: bubblewrap with user, mount, PID and network
namespaces of its own (``--unshare-all``), a private tmpfs /tmp, uid 1000 mapped. Real bwrap, real CPython 3.14
(the project's root filesystem as the sandbox's /), the real CLI; the debug port is reached only through the
sandbox's network namespace."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading

import pytest

import dap
from procs import APPS, REPO, default_signals

pytestmark = pytest.mark.py314


def host_pid(sandbox, in_pid):
    """The host's pid of the process the sandbox numbers ``in_pid``: a descendant of bwrap."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/status" % name) as f:
                status = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        nspids = status.get("NSpid", "").split()
        if len(nspids) > 1 and nspids[-1] == str(in_pid) and int(status["PPid"]) != 0:
            parent = int(status["PPid"])
            while parent > 1:  # bwrap's own children only, not another test's sandbox
                if parent == sandbox.popen.pid:
                    return int(name)
                with open("/proc/%d/status" % parent) as f:
                    parent = int(next(l for l in f if l.startswith("PPid:")).split()[1])
    raise AssertionError("no process %s under bwrap %d" % (in_pid, sandbox.popen.pid))


@pytest.fixture
def sandboxed(spawn, py314):
    bwrap = shutil.which("bwrap")
    if not bwrap:
        if os.environ.get("WAND_REQUIRE_CLUSTER"):
            pytest.fail("no bwrap (Debian: bubblewrap; hack/engines installs it)")
        pytest.skip("no bwrap (Debian: bubblewrap; hack/engines installs it)")
    if py314.root is None:
        pytest.skip("python3.14 on PATH: the sandbox's / is the project's root filesystem, not used here")

    def start(app):
        argv = [bwrap, "--unshare-all", "--uid", "1000", "--gid", "1000", "--ro-bind", py314.root, "/",
                "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--die-with-parent",
                "/usr/bin/python3.14", py314.app(app)]
        target = spawn(app, argv=argv)
        target.host_pid = host_pid(target, target.pid)
        return target
    return start


def wand(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "kubectl_wand"] + [str(a) for a in args], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO),
                          preexec_fn=default_signals)


def sandbox_tmp(target):
    return sorted(os.listdir("/proc/%d/root/tmp" % target.host_pid))


def test_exec_py_and_stack_in_the_sandbox(sandboxed):
    app = sandboxed("http_app.py")
    assert app.pid != app.host_pid  # its own PID namespace
    done = wand("exec-py", "pid/%d" % app.host_pid, "--",
                "import os, socket; os.getpid(), os.getuid(), os.listdir('/tmp') != []")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "(%d, 1000, True)\n" % app.pid  # its private files were in its own /tmp meanwhile
    assert sandbox_tmp(app) == []  # and are gone
    assert not [n for n in os.listdir("/tmp") if n.startswith("wand-%d-" % app.pid)]  # never in ours
    stack = wand("stack", "pid/%d" % app.host_pid, "-o", "json")
    assert stack.returncode == 0, stack.stderr
    frames = [f["function"] for t in json.loads(stack.stdout)["items"][0]["threads"] for f in t["frames"]]
    assert "main" in frames
    listed = json.loads(wand("get", "processes", "pid/%d" % app.host_pid, "-o", "json").stdout)["items"]
    assert [(p["pid"], p["role"], p["attachable"]) for p in listed] == [(app.host_pid, "main", True)]


def test_trace_in_the_sandbox(sandboxed):
    app = sandboxed("ticker.py")
    done = wand("trace", "pid/%d" % app.host_pid, "ticker.py:9", "n", "--count", "2", "--duration", "20s",
                "-o", "json")
    assert done.returncode == 0, done.stderr
    hits = [json.loads(line)["hit"] for line in done.stdout.splitlines()]
    assert len(hits) == 2 and int(hits[1]["values"][0]["repr"]) == int(hits[0]["values"][0]["repr"]) + 1
    assert sandbox_tmp(app) == []


def test_attach_in_the_sandbox_through_its_network_namespace(sandboxed, py314):
    app = sandboxed("http_app.py")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    attach = subprocess.Popen([sys.executable, "-m", "kubectl_wand", "attach", "pid/%d" % app.host_pid, "--port",
                               str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                              env=dict(os.environ, PYTHONPATH=REPO), preexec_fn=default_signals)
    try:
        shown = ""
        while "Forwarding" not in shown:
            line = attach.stdout.readline()
            assert line, attach.stderr.read()
            shown += line
        path = py314.app("http_app.py")
        line = dap.marker_line(os.path.join(APPS, "http_app.py"))
        client = dap.DAPClient("127.0.0.1", port)
        try:
            bp = client.attach_with_breakpoint(path, line)
            assert bp["verified"], bp
            got = {}
            # the app's 127.0.0.1 is the sandbox's: the request enters its network namespace (nsenter, not ours)
            request = threading.Thread(target=lambda: got.setdefault("out", subprocess.run(
                ["nsenter", "--net=/proc/%d/ns/net" % app.host_pid, "/usr/bin/python3", "-c",
                 "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:%s/', timeout=60).read()"
                 ".decode())" % app.info["port"]], capture_output=True, text=True, timeout=90).stdout))
            request.start()
            stopped = client.wait_event("stopped", timeout=30)
            assert stopped["body"]["reason"] == "breakpoint", stopped
            top = client.locals_of_top_frame(stopped["body"]["threadId"])
            assert top["frame"]["name"] == "do_GET" and "self" in top["vars"]
            assert not got
            client.request("continue", threadId=stopped["body"]["threadId"])
            request.join(60)
            assert got["out"].startswith("hello from")
        finally:
            client.close()
    finally:
        attach.terminate()
        attach.wait(10)
    assert app.alive()


def test_pdb_and_exec_py_it_in_the_sandbox_through_its_network_namespace(sandboxed):
    """The session's socket is an abstract name, which lives in a network namespace: the agent listens in the
    sandbox's, so the launcher that connects to it must start in there too (it waited a minute outside)."""
    from ptyterm import Term
    app = sandboxed("busy.py")
    env = dict(os.environ, PYTHONPATH=REPO)
    term = Term([sys.executable, "-m", "kubectl_wand", "pdb", "pid/%d" % app.host_pid], env=env, cwd=REPO)
    try:
        term.expect(r"\(Pdb\) ", timeout=60)
        term.line("p counter > 0")
        term.expect(r"True")
        term.expect(r"\(Pdb\) ")
        term.line("q")
        assert term.wait(30) == 0, term.seen
    finally:
        term.close()
    term = Term([sys.executable, "-m", "kubectl_wand", "exec-py", "-it", "pid/%d" % app.host_pid], env=env, cwd=REPO)
    try:
        term.expect(r">>> ", timeout=60)
        term.line("40 + 2")
        term.expect(r"42")
        term.expect(r">>> ")  # Ctrl-D typed before the prompt is readline's setup's to drop
        term.send("\x04")
        assert term.wait(30) == 0, term.seen
    finally:
        term.close()
    assert app.alive()
    assert sandbox_tmp(app) == []
