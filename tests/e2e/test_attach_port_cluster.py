"""attach to a pod when the debug port is not ours to take (issue 17: the target is hostile), through the real
agent in a real pod: the app's own listening port, and a listener whose command line merely says "debugpy"."""
from __future__ import annotations

import json
import os
import re
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tests"))

pytestmark = pytest.mark.cluster

NAME = "attach-bind"
APP_PORT, NAMED_PORT, FREE_PORT = 8201, 8202, 8203

# The app (plain_server.py on APP_PORT) and, beside it, a process that listens on NAMED_PORT and calls itself
# a debugpy adapter in its argv.
LAUNCHER = """
import os, subprocess, sys
named = ("import socket, time; s = socket.socket(); s.bind(('127.0.0.1', {named})); s.listen(1); "
         "time.sleep(100000)")
procs = [subprocess.Popen([sys.executable, "/app/plain_server.py", "wand-bind-app"], env=dict(os.environ, PORT="{app}")),
         subprocess.Popen([sys.executable, "-c", named, "debugpy", "--for-server"])]
for proc in procs:
    proc.wait()
""".format(app=APP_PORT, named=NAMED_PORT)


@pytest.fixture
def bind_pod(cluster):
    cluster.deploy(NAME, ["python3", "-c", LAUNCHER])
    yield cluster.pod_names("app=" + NAME)[0]
    cluster.kubectl("delete", "deploy/" + NAME, "--wait=false")


def test_a_port_not_ours_is_refused_in_a_pod_and_another_port_works(cluster, wand, bind_pod):
    listed = wand("get", "processes", "pod/" + bind_pod, "-o", "json")
    assert listed.returncode == 0, listed.stderr
    pid = [p["pid"] for p in json.loads(listed.stdout)["items"]  # the app, not the launcher that names it
           if "wand-bind-app" in p["command"] and "subprocess" not in p["command"]][0]
    target = ["pod/" + bind_pod, "--pid", pid]

    def debugpy_loaded():
        probe = wand("exec-py", *target, "--", "import sys; 'debugpy' in sys.modules")
        assert probe.returncode == 0, probe.stderr
        return probe.stdout.strip()

    own = wand("attach", *target, "--port", APP_PORT, "--no-forward")
    assert own.returncode == 6, own.stderr
    assert "port %d is busy in pod/%s" % (APP_PORT, bind_pod) in own.stderr, own.stderr
    assert "(held by the process itself, not by a debug server kubectl wand started)" in own.stderr, own.stderr
    named = wand("attach", *target, "--port", NAMED_PORT, "--no-forward")
    assert named.returncode == 6, named.stderr
    assert re.search(r"port %d is busy in pod/\S+; choose another with --port" % NAMED_PORT, named.stderr), named.stderr
    assert debugpy_loaded() == "False"  # both refused before debugpy was imported into the app
    works = wand("attach", *target, "--port", FREE_PORT, "--no-forward")
    assert works.returncode == 0, works.stderr
    assert "listening on 127.0.0.1:%d" % FREE_PORT in works.stdout, works.stdout
