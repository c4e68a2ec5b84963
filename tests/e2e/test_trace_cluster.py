"""trace on the real cluster: a two-replica Deployment traced at a line of its request handler while requests
flow; every way of ending removes the probe (sys.monitoring tool ids freed, read back from inside the app)."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tests"))
import dap  # noqa: E402
from procs import default_signals  # noqa: E402
from test_kube_verbs import APPS, HttpForward, children  # noqa: E402

pytestmark = pytest.mark.cluster
# The line after the greeting is built: a LINE event comes before its line runs, as a debugger's logpoint does.
LINE = dap.marker_line(os.path.join(APPS, "web.py")) + 1
WHERE = "web.py:%d" % LINE


class Load:
    """Requests to every pod (through a port-forward each) until stopped; counts failures."""

    def __init__(self, cluster, pods):
        self.forwards = [HttpForward(cluster, pod) for pod in pods]
        self.stopped = threading.Event()
        self.ok = self.failed = 0
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stopped.is_set():
            for f in self.forwards:
                try:
                    urllib.request.urlopen("http://127.0.0.1:%d/" % f.port, timeout=10).read()
                    self.ok += 1
                except OSError:
                    self.failed += 1
            self.stopped.wait(0.2)  # a steady trickle of requests, not a flood

    def stop(self):
        self.stopped.set()
        self.thread.join(20)
        for f in self.forwards:
            f.close()


def tools_in_use(wand, pod):
    done = wand("exec-py", "pod/" + pod, "--", "import sys; [sys.monitoring.get_tool(i) for i in range(6)]")
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def freed(stderr):
    return {int(i) for i in re.findall(r"tool id (\d+) freed", stderr)}


def start_trace(cluster, *args):
    return subprocess.Popen([sys.executable, "-m", "kubectl_wand", "trace", "deploy/web", WHERE] + list(args),
                            env=dict(cluster.env, PYTHONPATH=REPO), cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL, preexec_fn=default_signals)


def test_trace_every_replica_while_requests_flow(cluster, wand):
    pods = cluster.pod_names("app=web")
    load = Load(cluster, pods)
    try:
        done = wand("trace", "deploy/web", WHERE, "greeting", "len(greeting) > 5", "--duration", "8s", timeout=120)
    finally:
        load.stop()
    assert done.returncode == 0, done.stderr
    for pod in pods:  # the expected value, from both pods
        assert re.search(r"pod/%s pid \d+ .* /app/web.py:%d greeting='hello from web on %s' len\(greeting\) > 5=True"
                         % (pod, LINE, pod), done.stdout), done.stdout
    assert load.failed == 0 and load.ok > 10  # the app kept serving during the trace
    assert freed(done.stderr) and "ended by duration" in done.stderr
    for pod in pods:
        assert tools_in_use(wand, pod).count("None") >= 5 and "trace" not in tools_in_use(wand, pod)
    after = Load(cluster, pods)  # and after
    time.sleep(1)
    after.stop()
    assert after.failed == 0 and after.ok > 0


@pytest.mark.parametrize("how", ["ctrl-c", "count", "cli-killed", "kubectl-killed"])
def test_every_way_of_ending_removes_the_probe(cluster, wand, how):
    pods = cluster.pod_names("app=web")
    load = Load(cluster, pods)
    extra = ["--count", "3"] if how == "count" else ["--duration", "120s"]
    proc = start_trace(cluster, "greeting", *extra)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            line = proc.stdout.readline()
            if "greeting=" in line:
                break
        if how == "ctrl-c":
            proc.send_signal(signal.SIGINT)
        elif how == "cli-killed":
            proc.kill()
        elif how == "kubectl-killed":
            for pid, cmd in children(proc.pid):
                if "exec" in cmd:
                    os.kill(pid, signal.SIGKILL)  # the connection to the pods drops
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
        load.stop()
    if how in ("ctrl-c", "count"):
        assert proc.returncode == 0, err
        assert freed(err) == {3} or freed(err), err
    # whatever ended it, within a few seconds no probe is left in any pod (a vanished controller's probe removes
    # itself after its heartbeat stops)
    deadline = time.monotonic() + 20
    while True:
        left = [pod for pod in pods if "kubectl-wand" in tools_in_use(wand, pod)]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(1)  # the probe's own heartbeat timeout is what we wait for here
    assert left == [], [tools_in_use(wand, pod) for pod in pods]
    assert load.failed == 0


def test_snapshot_and_refusals(cluster, wand):
    pods = cluster.pod_names("app=web")
    load = Load(cluster, pods)
    try:
        snap = wand("trace", "deploy/web", "--pod", pods[0], WHERE, "--snapshot", "-o", "json", timeout=120)
    finally:
        load.stop()
    assert snap.returncode == 0, snap.stderr
    lines = snap.stdout.strip().splitlines()
    hit = json.loads(lines[0])["hit"]
    assert hit["locals"]["greeting"].startswith("'hello from web") and hit["stack"][0]["function"] == "root"
    unknown = wand("trace", "deploy/web", "nosuchfile.py:3")
    assert unknown.returncode == 2 and "nosuchfile.py" in unknown.stderr
    comment = wand("trace", "deploy/web", "web.py:1")  # the module docstring: no code runs there
    assert comment.returncode == 2
    for pod in pods:
        assert "kubectl-wand" not in tools_in_use(wand, pod)  # refused before anything was enabled
