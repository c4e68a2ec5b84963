"""Cluster faults on the real cluster (issue 17, "On the cluster"): a pod watch the API server answers with an
ERROR event, an image that cannot be pulled, profile and trace while a scale to 0 ends their pods, a container
that exited while its pod still runs. Workloads are named cf-* and deleted after each test."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from urllib.parse import quote

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tests"))
import dap  # noqa: E402
from procs import default_signals  # noqa: E402
from test_kube_verbs import APPS, one_line  # noqa: E402

from kubectl_wand.errors import WandError  # noqa: E402
from kubectl_wand.kube import api, config  # noqa: E402
from kubectl_wand.kube import ephemeral as debugc  # noqa: E402

pytestmark = pytest.mark.cluster
NS = "wand-e2e"
NO_IMAGE = "none.invalid/wand-e2e/never:1"
WEB = ["python3", "-m", "uvicorn", "web:app", "--host", "0.0.0.0", "--port", "8000", "--app-dir", "/app"]
IDLE = ("import time\n"
        "def idle_forever():\n"
        "    while True:\n"
        "        time.sleep(0.5)\n"
        "idle_forever()\n")


@pytest.fixture
def made(cluster):
    """Names ("kind/name") of what a test created, deleted after it."""
    names = []
    yield names
    for name in names:
        cluster.kubectl("delete", name, "--wait=false", "--ignore-not-found", timeout=60)


def start(cluster, *args):
    return subprocess.Popen([sys.executable, "-m", "kubectl_wand"] + [str(a) for a in args],
                            env=dict(cluster.env, PYTHONPATH=REPO), cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)


def finish(proc, timeout=90):
    try:
        return proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


# -- a watch the API server ends with an ERROR event ---------------------------------------------------------------

def test_status_watch_from_a_compacted_resource_version_still_names_err_image_pull(cluster, wand, made):
    cluster.deploy("cf-watch", ["python3", "-c", IDLE], replicas=1)
    made.append("deployment/cf-watch")
    name = cluster.pod_names("app=cf-watch")[0]
    flags = config.KubeFlags({"kubeconfig": cluster.kubeconfig}, namespace=NS)
    pod = api.get(flags, "/api/v1/namespaces/%s/pods/%s" % (NS, name))
    # The API server keeps no history back to resourceVersion 1: a watch from it gets one ERROR event (410,
    # "too old resource version"), as a watch from a pod left unchanged for minutes does.
    raw = cluster.kubectl("get", "--raw", "/api/v1/namespaces/%s/pods?watch=true&resourceVersion=1&timeoutSeconds=5"
                          "&fieldSelector=%s" % (NS, quote("metadata.name=" + name)), timeout=30)
    first = json.loads(raw.stdout.splitlines()[0])
    assert first["type"] == "ERROR" and first["object"]["code"] == 410, raw.stdout[:300]

    debug = debugc.add(flags, pod, "app", NO_IMAGE, "python3")
    stale = dict(pod, metadata=dict(pod["metadata"], resourceVersion="1"))
    watch = debugc.StatusWatch(flags, stale, debug, NO_IMAGE, 90)
    started = time.monotonic()
    try:
        with pytest.raises(WandError) as raised:
            while time.monotonic() - started < 90:
                watch.wait(1.0)
    finally:
        watch.close()
    message = raised.value.message
    assert "cannot start" in message and ("ErrImagePull" in message or "ImagePullBackOff" in message), message
    assert time.monotonic() - started < 60  # named from the pod's status, not at the start deadline

    # The documented end to end: a fresh pod, the CLI, one line.
    cluster.deploy("cf-watch2", ["python3", "-c", IDLE], replicas=1)
    made.append("deployment/cf-watch2")
    fresh = cluster.pod_names("app=cf-watch2")[0]
    began = time.monotonic()
    refused = wand("exec-py", "pod/" + fresh, "--ephemeral", "--image", NO_IMAGE, "--", "1", timeout=150)
    assert refused.returncode == 6
    lines = refused.stderr.strip().splitlines()  # the note that a container was added, then the error
    assert len(lines) == 2 and lines[0].startswith("note: added ephemeral container"), refused.stderr
    line = lines[1]
    assert line.startswith("error: ") and "cannot start" in line and NO_IMAGE in line and ("ErrImagePull" in line or "ImagePullBackOff" in line)
    assert time.monotonic() - began < 60


# -- profile and trace while a scale to 0 ends their pods -----------------------------------------------------------

def test_profile_keeps_what_replicas_sampled_when_a_scale_to_zero_ends_them(cluster, made, tmp_path):
    cluster.deploy("cf-prof", ["python3", "-c", IDLE], replicas=3)
    made.append("deployment/cf-prof")
    pods = cluster.pod_names("app=cf-prof")
    out = tmp_path / "profile.txt"
    proc = start(cluster, "profile", "deploy/cf-prof", "--idle", "--rate", "20", "--duration", "120s",
                 "--format", "collapsed", "-o", out)
    time.sleep(8)  # the span that is sampled before the pods go, not a wait for readiness
    cluster.kubectl("scale", "deployment/cf-prof", "--replicas=0", check=True)
    _out, err = finish(proc)
    assert proc.returncode == 0, err
    for pod in pods:
        assert ("warning: pod/%s went away: it " % pod) in err, err
    assert err.count("kept the ") == 3 and "no samples" not in err and "exit 137" not in err, err
    assert "wrote %s" % out in err
    assert any("idle_forever" in line for line in out.read_text().splitlines())


@pytest.mark.parametrize("after", [1.0, 4.0])
def test_profile_interrupted_from_the_terminal_ends_cleanly(cluster, made, tmp_path, after):
    """Ctrl-C on a terminal signals the whole foreground group, kubectl children included: at 1 s (the pods may
    not be sampled yet) and at 4 s (they are)."""
    cluster.deploy("cf-ctrlc", ["python3", "-c", IDLE], replicas=2)
    made.append("deployment/cf-ctrlc")
    out = tmp_path / "profile.txt"
    env = dict(cluster.env, PYTHONPATH=REPO)
    proc = subprocess.Popen([sys.executable, "-m", "kubectl_wand", "profile", "deploy/cf-ctrlc", "--idle",
                             "--duration", "60s", "--format", "collapsed", "-o", str(out)], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
                            start_new_session=True, preexec_fn=default_signals)  # the runner may ignore SIGINT
    time.sleep(after)  # the moment of the interrupt is what is tested, not a wait for readiness
    os.killpg(proc.pid, signal.SIGINT)
    _out, err = finish(proc)
    assert "exit -2" not in err and "kubectl exec" not in err and "idle the whole time" not in err, err
    if out.exists() or after >= 4:
        assert proc.returncode == 0 and "stopped early" in err, err
        assert any("idle_forever" in line for line in out.read_text().splitlines())
    else:
        assert proc.returncode == 130, err
        assert err in ("", "error: no samples: stopped before the first sample was taken\n"), err


def test_trace_summarises_each_pod_a_scale_to_zero_ends(cluster, made):
    cluster.deploy("cf-trace", WEB, replicas=2)
    made.append("deployment/cf-trace")
    pods = cluster.pod_names("app=cf-trace")
    where = "web.py:%d" % (dap.marker_line(os.path.join(APPS, "web.py")) + 1)
    proc = start(cluster, "trace", "deploy/cf-trace", where, "--duration", "120s")
    installed = 0
    while installed < 2:
        line = proc.stderr.readline()
        assert line, "trace ended before both probes were installed"
        installed += line.startswith("tracing ")
    cluster.kubectl("scale", "deployment/cf-trace", "--replicas=0", check=True)
    _out, err = finish(proc)
    assert proc.returncode == 0, err
    for pod in pods:
        summary = [line for line in err.splitlines() if line.startswith("pod/%s pid " % pod)]
        assert len(summary) == 1 and "0 hit(s); ended: pod/%s went away: it " % pod in summary[0], err
    assert "exit 137" not in err and "error:" not in err, err


# -- a container that exited while its pod runs on -------------------------------------------------------------------

CRASHED = """
apiVersion: v1
kind: Pod
metadata: {name: cf-crash, namespace: wand-e2e}
spec:
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  restartPolicy: Never
  containers:
  - {name: app, image: IMAGE, imagePullPolicy: IfNotPresent, command: ["python3", "-c", "import sys; sys.exit(3)"]}
  - {name: side, image: IMAGE, imagePullPolicy: IfNotPresent, command: ["python3", "-c", "import time; time.sleep(3600)"]}
"""


def test_a_container_that_exited_is_named_with_its_exit_code(cluster, wand, made):
    cluster.kubectl("apply", "-f", "-", input=CRASHED.replace("IMAGE", cluster.app_image()), check=True)
    made.append("pod/cf-crash")
    cluster.kubectl("wait", "pod/cf-crash", "--for=jsonpath={.status.containerStatuses[?(@.name==\"app\")]"
                    ".state.terminated.exitCode}=3", "--timeout=90s", timeout=120, check=True)
    phase = cluster.kubectl("get", "pod/cf-crash", "-o", "jsonpath={.status.phase}", check=True).stdout
    assert phase == "Running"  # the side container runs on
    for verb in (["stack"], ["exec-py"]):
        done = wand(*verb, "pod/cf-crash", "-c", "app", *(["--", "1"] if verb == ["exec-py"] else []))
        assert done.returncode == 3, done.stderr
        line = one_line(done)
        assert "container app exited (Error, exit code 3)" in line, line
        assert "Running, not Running" not in line


# -- the same --ephemeral hint from trace ---------------------------------------------------------------------------

def test_trace_without_room_for_private_files_names_ephemeral(cluster, wand):
    where = "web.py:%d" % (dap.marker_line(os.path.join(APPS, "web.py")) + 1)
    done = wand("trace", "pod/eph-readonly", where, "--duration", "5s")
    assert done.returncode == 6, done.stderr
    line = one_line(done)
    assert "no room for kubectl wand's private files" in line and "add --ephemeral" in line, line
