"""Proof that hack/cluster gives a real, usable cluster: node Ready, workloads as specified, exec,
port-forward, and sys.remote_exec into an app process from inside a pod."""
from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.cluster

APPS = Path(__file__).resolve().parent / "apps"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, deadline_s: float = 30) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"kubectl port-forward exited {proc.returncode}: {proc.stderr.read()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"port {port} never accepted connections")


def test_node_ready(cluster):
    out = cluster.kubectl("get", "nodes", "-o", "json", namespaced=False, check=True)
    nodes = json.loads(out.stdout)["items"]
    ready = {c["type"]: c["status"] for c in nodes[0]["status"]["conditions"]}["Ready"]
    assert ready == "True"
    if not cluster.external:
        assert len(nodes) == 1
        assert nodes[0]["status"]["nodeInfo"]["kubeletVersion"].startswith("v1.34.")
    text = cluster.kubectl("get", "nodes", namespaced=False, check=True).stdout
    assert " Ready " in text


def test_workloads_ready(cluster):
    pods = json.loads(cluster.kubectl("get", "pods", "-o", "json", check=True).stdout)["items"]
    by_name = {p["metadata"]["name"]: p for p in pods}
    for name in ["two-containers", "two-containers-annotated", "nonroot", "noptrace"]:
        assert name in by_name, name
    assert [c["name"] for c in by_name["two-containers"]["spec"]["containers"]] == ["sidecar", "app"]
    assert by_name["two-containers-annotated"]["metadata"]["annotations"][
        "kubectl.kubernetes.io/default-container"] == "app"
    for p in pods:
        if p["metadata"].get("deletionTimestamp"):
            continue
        conds = {c["type"]: c["status"] for c in p["status"].get("conditions", [])}
        assert p["status"]["phase"] == "Running" and conds.get("Ready") == "True", p["metadata"]["name"]
    assert len(cluster.pod_names("app=web")) == 2
    for sel in ["app=reload", "app=gunicorn", "serving.knative.dev/service=hello"]:
        assert len(cluster.pod_names(sel)) == 1, sel
    svc = json.loads(cluster.kubectl("get", "svc", "hello", "-o", "json", check=True).stdout)
    assert svc["spec"]["type"] == "ExternalName"
    web = json.loads(cluster.kubectl("get", "svc", "web", "-o", "json", check=True).stdout)
    assert web["spec"]["selector"] == {"app": "web"}
    assert web["spec"]["ports"][0]["port"] == 80 and web["spec"]["ports"][0]["targetPort"] == 8000


def test_breakpoint_markers_in_app_sources():
    for name in ["web.py", "flask_app.py", "plain_server.py"]:
        lines = [ln for ln in (APPS / name).read_text().splitlines() if "# wand-breakpoint" in ln]
        assert len(lines) == 1 and "greeting =" in lines[0], name


def test_exec_runs_python_314(cluster):
    pod = cluster.pod_names("app=web")[0]
    out = cluster.kubectl("exec", pod, "-c", "app", "--", "python3", "-c", "import sys; print(sys.version)",
                          check=True)
    assert out.stdout.startswith("3.14"), out.stdout


def test_py313_pod_runs_python_313(cluster):
    if "py313" not in cluster.kubectl("get", "pods", "-o", "name", check=True).stdout:
        pytest.skip("no py313 pod (image skipped)")
    out = cluster.kubectl("exec", "py313", "--", "python3", "-c", "import sys; print(sys.version)", check=True)
    assert out.stdout.startswith("3.13"), out.stdout


def test_port_forward_serves_http(cluster):
    pod = cluster.pod_names("app=web")[0]
    port = free_port()
    proc = subprocess.Popen(["kubectl", "--kubeconfig", cluster.kubeconfig, "-n", cluster.namespace,
                             "port-forward", "--address", "127.0.0.1", f"pod/{pod}", f"{port}:8000"],
                            env=cluster.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_port(port, proc)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
            body = r.read().decode()
        assert r.status == 200
        assert body.startswith("hello from web on " + pod), body
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


# Runs inside the pod: find the app process, write a private script, sys.remote_exec it, wait for the
# marker it writes (poking the app over HTTP so its event loop runs), print the marker, clean up.
INJECT = r"""
import os, sys, time, urllib.request
tag = sys.argv[1]
me = os.getpid()
pids = []
for d in os.listdir('/proc'):
    if d.isdigit() and int(d) != me:
        try:
            cmd = open(f'/proc/{d}/cmdline', 'rb').read().split(b'\0')
        except OSError:
            continue
        if b'uvicorn' in cmd:
            pids.append(int(d))
pid = min(pids)
script = f'/tmp/wand-test-{tag}.py'
marker = f'/tmp/wand-test-{tag}.marker'
fd = os.open(script, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
os.write(fd, f"import os\nwith open({marker!r}, 'w') as f: f.write(str(os.getpid()))\n".encode())
os.close(fd)
try:
    try:
        sys.remote_exec(pid, script)
    except PermissionError as e:
        print(f'PermissionError pid={pid} uid={os.stat(f"/proc/{pid}").st_uid}: {e}')
        sys.exit(0)
    end = time.monotonic() + 20
    while not os.path.exists(marker) and time.monotonic() < end:
        try:
            urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).read()
        except OSError:
            pass
        time.sleep(0.1)
    print(f'target={pid} marker={open(marker).read()}')
finally:
    for p in (script, marker):
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass
"""


def test_remote_exec_into_app_process(cluster):
    pod = cluster.pod_names("app=web")[0]
    tag = uuid.uuid4().hex[:12]
    out = cluster.kubectl("exec", pod, "-c", "app", "--", "python3", "-c", INJECT, tag, timeout=90)
    assert out.returncode == 0, out.stderr
    line = out.stdout.strip().splitlines()[-1]
    target, marker = line.split()
    assert target.removeprefix("target=") == marker.removeprefix("marker="), line
    # the private files are gone
    left = cluster.kubectl("exec", pod, "-c", "app", "--", "sh", "-c", f"ls /tmp/wand-test-{tag}* 2>/dev/null || true")
    assert left.stdout.strip() == ""


def test_remote_exec_denied_without_ptrace_for_other_uid(cluster):
    """`noptrace`: exec runs as root without CAP_SYS_PTRACE; the app switched to uid 1000."""
    out = cluster.kubectl("exec", "noptrace", "--", "python3", "-c", INJECT, uuid.uuid4().hex[:12], timeout=90)
    assert out.returncode == 0, out.stderr
    assert "PermissionError" in out.stdout and "uid=1000" in out.stdout, out.stdout
