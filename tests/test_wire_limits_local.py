"""What a target may send (docs/security.md): a target whose own code answers kubectl wand's back-channel, with
each shape a hostile target may send, gets one line on stderr and exit 6 from the real CLI, within --timeout
plus a small margin, and the CLI's memory stays bounded; a temporary directory full of planted names costs an
injection little and never changes its verdict.

Real CPython 3.14 targets (tests/apps/hostile.py answers the socket from an audit hook's thread); the CLI runs in
a subprocess, its peak RSS read from wait4's rusage.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from procs import REPO

pytestmark = pytest.mark.py314

TIMEOUT = 5
# Past --timeout: the payload's grace to report after its deadline (session.REPORT_GRACE, 2 s), the CLI's start
# and the injection on a loaded 2-core machine.
MARGIN = 4.0
RSS_MAX_MB = 200  # the CLI alone is ~40 MB; before the limits a 400 MB result line took it to 1.24 GB


def run_cli(*args, timeout=90, argv=None, env=None):
    """(exit code, stdout, stderr, seconds, peak RSS in MB) of the real CLI (or of ``argv``)."""
    env = dict(os.environ, PYTHONPATH=REPO, **(env or {}))
    started = time.monotonic()
    argv = argv or [sys.executable, "-m", "kubectl_wand"] + [str(a) for a in args]
    popen = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             stdin=subprocess.DEVNULL)
    outputs = {}
    readers = [threading.Thread(target=lambda name=name: outputs.__setitem__(name, getattr(popen, name).read()))
               for name in ("stdout", "stderr")]
    for reader in readers:
        reader.start()
    killer = threading.Timer(timeout, popen.kill)
    killer.start()
    try:
        _, status, usage = os.wait4(popen.pid, 0)  # its own rusage: what popen.wait() would throw away
    finally:
        killer.cancel()
    seconds = time.monotonic() - started
    popen.returncode = os.waitstatus_to_exitcode(status)
    for reader in readers:
        reader.join(10)
    popen.stdout.close()
    popen.stderr.close()
    return (popen.returncode, outputs.get("stdout", b"").decode("utf-8", "replace"),
            outputs.get("stderr", b"").decode("utf-8", "replace"), seconds, usage.ru_maxrss / 1024.0)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def verb_args(verb, pid):
    """The verb's command line. trace has no --timeout: its injection has 15 s, and what the probe sends is
    bounded by LINE_WAIT (5 s, as TIMEOUT here)."""
    if verb == "exec-py":
        return ["exec-py", "pid/%d" % pid, "--timeout", TIMEOUT, "--", "1 + 1"]
    if verb == "attach":
        return ["attach", "pid/%d" % pid, "--no-forward", "--port", free_port(), "--timeout", TIMEOUT]
    return ["trace", "pid/%d" % pid, "hostile.py:30", "1", "--duration", "30"]


CASES = [("exec-py", shape) for shape in (
    "huge-result", "huge-hello", "nested-hello", "nested-result", "list-hello", "hello-types", "wrong-types",
    "drip-hello", "drip-result", "stall-hello")] + \
    [("attach", shape) for shape in ("huge-result", "nested-result", "list-hello", "hello-types", "wrong-types",
                                     "drip-result")] + \
    [("trace", shape) for shape in ("huge-result", "nested-result", "list-hello", "wrong-types", "drip-result",
                                    "bad-hit")]


@pytest.mark.parametrize("verb,shape", CASES)
def test_a_hostile_answer_is_one_line_and_exit_6_in_time_and_memory(spawn, verb, shape):
    app = spawn("hostile.py", shape)
    code, out, err, seconds, rss = run_cli(*verb_args(verb, app.pid))
    # trace says what it installed before the hit that breaks the protocol
    lines = [line for line in err.strip().splitlines() if not line.startswith("tracing hostile.py:30")]
    assert code == 6, (code, err[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: ") and "out of protocol" in lines[0], err[-2000:]
    assert "Traceback" not in err and len(err) < 2000
    assert seconds < TIMEOUT + MARGIN, (seconds, lines)
    assert rss < RSS_MAX_MB, rss
    assert len(out) < 1000  # nothing of what it sent is printed
    assert app.alive()


def test_a_result_over_max_output_is_refused_naming_the_flag(spawn):
    app = spawn("hostile.py", "huge-result")
    code, _out, err, seconds, rss = run_cli("exec-py", "pid/%d" % app.pid, "--timeout", TIMEOUT,
                                            "--max-output", "1000", "--", "1")
    assert code == 6 and "--max-output 1000" in err and "never read whole" in err, err
    assert rss < RSS_MAX_MB and seconds < TIMEOUT + MARGIN


def test_a_stalled_result_is_still_running_code_not_a_hang(spawn):
    """Connected, said hello, then silence: as for code blocked in C, exit 5 just after --timeout."""
    app = spawn("hostile.py", "stall-result")
    code, _out, err, seconds, _rss = run_cli("exec-py", "pid/%d" % app.pid, "--timeout", TIMEOUT, "--", "1")
    assert code == 5 and "still running" in err and "Traceback" not in err, err
    assert seconds < TIMEOUT + MARGIN


def plant(base, count):
    """``count`` names of private directories whose processes are gone: half of this pid namespace (pids above
    any pid_max), half of a namespace not visible from here."""
    ns = os.stat("/proc/self/ns/pid").st_ino
    for i in range(count // 2):
        os.mkdir(os.path.join(base, "wand-%d-%d-%d-%012x" % (4194304 + i, 12345, ns, i)))
        os.mkdir(os.path.join(base, "wand-%d-%d-%d-%012x" % (100 + i, 12345, 4026530000 + i % 7, i)))


def test_a_tmp_full_of_planted_names_costs_little_and_keeps_the_verdict(spawn, py314):
    """20 000 `wand-*` names in the target's $TMPDIR made every injection take 19 s and report a wrong verdict
    (refused / pending) while the app was healthy."""
    base = "/tmp/wire-limits-%s" % os.urandom(4).hex()
    host = py314.host(base)
    os.makedirs(host)
    try:
        plant(host, 20000)
        app = spawn("busy.py", env={"TMPDIR": base})
        for _ in range(2):
            code, out, err, seconds, _rss = run_cli("exec-py", "pid/%d" % app.pid, "--timeout", TIMEOUT, "--",
                                                    "1 + 1")
            assert code == 0 and out.strip() == "2", (code, out, err)
            assert seconds < TIMEOUT, seconds
        left = len(os.listdir(host))
        # Each injection removes at most reap.MAX_REMOVALS (16) of other processes' directories; the other
        # namespace's names are never removed (whether they are dead cannot be told from here).
        assert 20000 - 2 * 16 <= left < 20000, left
    finally:
        subprocess.run(["rm", "-rf", host], check=False)


# -- the agent in a pod -> the CLI (kubectl exec's pipes) ------------------------------------------------------

KUBECTL_CLIENT = r"""
import resource, sys
from kubectl_wand.errors import WandError
from kubectl_wand.kube.config import KubeFlags
from kubectl_wand.transport.kubectl import KubectlTransport
pod = {"metadata": {"name": "web-1", "namespace": "ns", "uid": "u"}, "spec": {"containers": [{"name": "app"}]}}
transport = KubectlTransport(KubeFlags(), pod, ["app"], explicit=True)
try:
    result = transport.agent({"op": "exec", "pid": 7, "code": "1", "timeout": 5, "max_output": 1000}, timeout=8,
                             on_event=lambda event: None)
    print("result %r" % (result,)[:300])
except WandError as exc:
    print("exit %d: %s" % (exc.code, exc.message))
"""


@pytest.mark.parametrize("shape", ["huge-result", "nested-result", "list-result", "wrong-types", "bad-event",
                                   "drip-result"])
def test_what_the_agent_in_a_pod_sends_is_bounded_too(tmp_path, shape):
    kubectl = tmp_path / "kubectl"
    kubectl.write_text("#!/bin/sh\nexec %s %s/tests/hostile_kubectl.py \"$@\"\n" % (sys.executable, REPO))
    kubectl.chmod(0o755)
    code, out, err, seconds, rss = run_cli(argv=[sys.executable, "-c", KUBECTL_CLIENT],
                                           env={"KUBECTL_PATH": str(kubectl), "WAND_TEST_SHAPE": shape})
    assert code == 0 and "Traceback" not in err, err[-2000:]
    assert out.startswith("exit 6: the agent in pod/web-1 answered out of protocol: "), out
    assert seconds < 8 + MARGIN, seconds
    assert rss < RSS_MAX_MB, rss
