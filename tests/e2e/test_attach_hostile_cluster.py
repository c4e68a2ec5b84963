"""attach's first session in a pod (session 8's red team), through a real `kubectl port-forward`: attach ended
(Ctrl-C, SIGKILL) while the editor holds a request at a breakpoint must leave the app serving."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tests"))
import dap  # noqa: E402
from test_attach_race_local import free_port  # noqa: E402
from test_kube_verbs import APPS, Attached, leftovers  # noqa: E402

pytestmark = pytest.mark.cluster

NAME = "attach-vanish"
GET = "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8000/', timeout=90).read().decode())"


@pytest.fixture(params=[signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill"])
def no_debugpy_pod(cluster, request):
    """(a fresh pod without debugpy, the signal): python -S, no site-packages, so attach ships debugpy."""
    name = "%s-%s" % (NAME, request.node.callspec.id)
    cluster.deploy(name, ["python3", "-S", "/app/plain_server.py"],
                   container={"env": [{"name": "PORT", "value": "8000"}]})
    yield cluster.pod_names("app=" + name)[0], request.param
    cluster.kubectl("delete", "deploy/" + name, "--wait=false")


def test_attach_ended_while_the_editor_holds_a_breakpoint_leaves_the_app_serving(cluster, no_debugpy_pod):
    """The editor stopped a request at its breakpoint through attach's forward; attach ends, the forward with
    it, and the editor's connection is cut without a DAP disconnect. The held request must complete and the
    app go on serving. Before: the request stayed paused for good (pydevd's in-process server ignores a
    connection that ends), and the next request stopped at the breakpoint no one could resume."""
    pod, how = no_debugpy_pod
    local = free_port()
    attached = Attached(dict(cluster.env, PYTHONPATH=REPO), "pod/" + pod, "--local-port", str(local))
    held = None
    try:
        attached.read_until(r"Forwarding 127\.0\.0\.1:%d -> pod/" % local)
        assert "shipped a pure-Python copy" in "".join(attached.out), attached.out
        client = dap.DAPClient("127.0.0.1", local, timeout=60)
        assert client.attach_with_breakpoint("/app/plain_server.py",
                                             dap.marker_line(os.path.join(APPS, "plain_server.py")))["verified"]
        held = subprocess.Popen(["kubectl", "--kubeconfig", cluster.kubeconfig, "-n", cluster.namespace, "exec",
                                 pod, "--", "python3", "-c", GET], env=cluster.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        assert client.wait_event("stopped", timeout=60)["body"]["reason"] == "breakpoint"
        attached.proc.send_signal(how)
        attached.proc.wait(30)
        out, err = held.communicate(timeout=90)
        assert out.startswith("hello from python"), (out, err)
        again = cluster.kubectl("exec", pod, "--", "python3", "-c", GET, timeout=90)
        assert again.stdout.startswith("hello from python"), again  # the breakpoint went with the editor
    finally:
        if held is not None and held.poll() is None:
            held.kill()
        code, _, err = attached.stop()
    assert code == (0 if how == signal.SIGINT else -signal.SIGKILL), err
    assert leftovers(cluster, pod) == "[]"
