"""attach and an editor that connects the moment the forwarded port accepts (issue 23), through a real
`kubectl port-forward` to a real pod: attach's readiness must not end the editor's session."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tests"))
import dap  # noqa: E402
from test_attach_race_local import breaks, free_port  # noqa: E402
from test_kube_verbs import APPS, Attached  # noqa: E402

pytestmark = pytest.mark.cluster

RUNS = 10
FIRST_HTTP = 8101  # the app processes' HTTP ports in the pod: FIRST_HTTP .. FIRST_HTTP + RUNS - 1
NAME = "attach-race"

# One pod, RUNS stdlib HTTP servers (a fresh debug server per run: debugpy cannot be stopped in a process);
# each names its port in its argv (plain_server.py reads PORT and ignores its arguments).
LAUNCHER = """
import os, subprocess, sys
servers = [subprocess.Popen([sys.executable, "/app/plain_server.py", "wand-race-%d" % port],
                            env=dict(os.environ, PORT=str(port))) for port in range({first}, {end})]
for server in servers:
    server.wait()
""".format(first=FIRST_HTTP, end=FIRST_HTTP + RUNS)


@pytest.fixture
def race_pod(cluster):
    cluster.deploy(NAME, ["python3", "-c", LAUNCHER])
    yield cluster.pod_names("app=" + NAME)[0]
    cluster.kubectl("delete", "deploy/" + NAME, "--wait=false")


class HttpForwards:
    """One `kubectl port-forward` to every app port of the pod: {remote port: local port}."""

    def __init__(self, cluster, pod, ports):
        self.proc = subprocess.Popen(["kubectl", "--kubeconfig", cluster.kubeconfig, "-n", cluster.namespace,
                                      "port-forward", "--address", "127.0.0.1", "pod/" + pod]
                                     + [":%d" % p for p in ports], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
        self.local = {}
        while len(self.local) < len(ports):
            line = self.proc.stdout.readline()
            m = re.search(r"127\.0\.0\.1:(\d+) -> (\d+)", line)
            assert m, line + (self.proc.stderr.read() if not line else "")
            self.local[int(m.group(2))] = int(m.group(1))

    def close(self):
        self.proc.terminate()
        self.proc.wait(10)


def app_pids(cluster, wand, pod):
    """{HTTP port: pid} of the pod's servers, once every one of them listens (each answers a request)."""
    listed = wand("get", "processes", "pod/" + pod, "-o", "json")
    assert listed.returncode == 0, listed.stderr
    pids = {}
    for p in json.loads(listed.stdout)["items"]:
        m = re.search(r"wand-race-(\d+)", p["command"])
        if m:
            pids[int(m.group(1))] = p["pid"]
    assert sorted(pids) == list(range(FIRST_HTTP, FIRST_HTTP + RUNS)), listed.stdout
    return pids


def test_an_editor_connecting_through_the_forward_at_once_always_hits_its_breakpoint(cluster, wand, race_pod):
    """Each run: attach to a fresh server through a port-forward; a DAP client retrying on the local port from
    the moment attach starts breaks in the handler; then another right after the readiness line."""
    import urllib.request
    path = "/app/plain_server.py"
    line = dap.marker_line(os.path.join(APPS, "plain_server.py"))
    pids = app_pids(cluster, wand, race_pod)
    http = HttpForwards(cluster, race_pod, sorted(pids))
    env = dict(cluster.env, PYTHONPATH=REPO)
    failures, outputs = [], []
    try:
        for run, port in enumerate(sorted(pids)):
            url = "http://127.0.0.1:%d/" % http.local[port]
            urllib.request.urlopen(url, timeout=30).read()  # the server answers before we debug it
            local = free_port()
            attached = Attached(env, "pod/" + race_pod, "--pid", str(pids[port]), "--port", str(5800 + run),
                                "--local-port", str(local))
            try:
                early = breaks(dap.DAPClient("127.0.0.1", local, timeout=60, retry=0.005), path, line, url)
                if early:
                    failures.append("run %d, client connecting at once: %s" % (run, early))
                attached.read_until(r"Forwarding 127\.0\.0\.1:%d -> pod/" % local)
                late = breaks(dap.DAPClient("127.0.0.1", local, timeout=30), path, line, url)
                if late:
                    failures.append("run %d, client after the readiness line: %s" % (run, late))
            finally:
                code, out, err = attached.stop()
            outputs.append(out)
            if code != 0:
                failures.append("run %d: attach exited %s: %s" % (run, code, err.strip()[-300:]))
    finally:
        http.close()
    assert not failures, "%d of %d runs failed:\n%s" % (len(failures), RUNS, "\n".join(failures))
    for out in outputs:  # what was checked, in words that are true of it
        assert "(confirmed: the process holds the listening socket)" in out, out
