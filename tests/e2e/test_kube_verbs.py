"""kubectl wand against the real single-node cluster: real kubectl exec/port-forward, real 3.14 pods, real DAP."""
from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tests"))
import dap  # noqa: E402
from procs import default_signals  # noqa: E402
from kubectl_wand.agent import procfs  # noqa: E402

pytestmark = pytest.mark.cluster
APPS = os.path.join(REPO, "tests", "e2e", "apps")


def one_line(result):
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def leftovers(cluster, pod, container="app"):
    out = cluster.kubectl("exec", pod, "-c", container, "--", "python3", "-c",
                          "import glob; print(glob.glob('/tmp/wand-*') + glob.glob('/var/tmp/wand-*') + "
                          "glob.glob('/dev/shm/wand-*'))", timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def items(result):
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["items"]


# -- get processes ---------------------------------------------------------------------------------------------

def test_get_processes_on_a_deployment(cluster, wand):
    pods = cluster.pod_names("app=web")
    got = items(wand("get", "processes", "deploy/web", "-o", "json"))
    assert sorted({p["pod"] for p in got}) == pods
    for p in got:
        assert p["container"] == "app" and p["namespace"] == "wand-e2e"
        assert p["python"].startswith("3.14.") and p["attachable"] and p["role"] == "main"
        assert "uvicorn" in p["command"]
    table = wand("get", "processes", "deploy/web")
    assert table.stdout.splitlines()[0].split()[:3] == ["POD", "CONTAINER", "PID"]
    assert wand("get", "processes", "svc/web", "-o", "name").stdout.count("pod/") == len(got)
    assert len(items(wand("get", "processes", "-l", "app=web", "-o", "json"))) == len(got)
    everywhere = wand("get", "processes", "-A", "-l", "app=web")
    assert everywhere.stdout.splitlines()[0].split()[0] == "NAMESPACE"


def test_get_processes_roles(cluster, wand):
    reload = items(wand("get", "processes", "deploy/reload", "-o", "json"))
    roles = sorted(p["role"] for p in reload)
    assert "reload-parent" in roles and "worker" in roles
    gunicorn = items(wand("get", "processes", "deploy/gunicorn", "-o", "json"))
    assert sorted(p["role"] for p in gunicorn).count("worker") == 3
    assert [p for p in gunicorn if p["role"] == "main"][0]["server"] == "gunicorn"


def test_knative_shaped_service(cluster, wand):
    by_ksvc = items(wand("get", "processes", "ksvc/hello", "-o", "json"))
    by_svc = items(wand("get", "processes", "svc/hello", "-o", "json"))  # ExternalName -> Knative label
    assert by_ksvc and {p["pod"] for p in by_ksvc} == {p["pod"] for p in by_svc}
    assert all(p["container"] == "user-container" for p in by_ksvc)


def test_containers_default_annotation_and_choice(cluster, wand):
    first_python = items(wand("get", "processes", "pod/two-containers", "-o", "json"))
    assert {p["container"] for p in first_python} == {"app"}
    annotated = items(wand("get", "processes", "pod/two-containers-annotated", "-o", "json"))
    assert {p["container"] for p in annotated} == {"app"}
    no_python = wand("exec-py", "pod/two-containers", "-c", "sidecar", "--", "1")
    assert no_python.returncode == 3 and "has no Python interpreter" in one_line(no_python)
    missing = wand("exec-py", "pod/two-containers", "-c", "nope", "--", "1")
    assert missing.returncode == 3 and "container nope not found" in one_line(missing)


# -- exec-py ----------------------------------------------------------------------------------------------------

def test_exec_py_in_a_pod(cluster, wand):
    pod = cluster.pod_names("app=web")[0]
    result = wand("exec-py", "pod/" + pod, "--", "import sys, socket; print(socket.gethostname()); sys.version_info[:2]")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [pod, "(3, 14)"]
    raised = wand("exec-py", "pod/" + pod, "--", "{}['missing']")
    assert raised.returncode == 1 and "KeyError: 'missing'" in raised.stderr
    assert leftovers(cluster, pod) == "[]"


def test_exec_py_several_pods_needs_a_choice(cluster, wand):
    pods = cluster.pod_names("app=web")
    ambiguous = wand("exec-py", "deploy/web", "--", "1")
    assert ambiguous.returncode == 2
    line = one_line(ambiguous)
    assert "--pod" in line and all(p in line for p in pods)
    chosen = wand("exec-py", "deploy/web", "--pod", pods[1], "--", "import socket; socket.gethostname()")
    assert chosen.stdout.strip() == repr(pods[1])


def test_exec_py_nonroot_pod(cluster, wand):
    result = wand("exec-py", "pod/nonroot", "--", "import os; os.getuid()")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1000"


def test_exec_py_from_stdin_in_gunicorn_picks_a_worker(cluster, wand):
    # --timeout 30s: an idle gunicorn sync worker's main thread sleeps up to 15 s in select
    result = wand("exec-py", "deploy/gunicorn", "--timeout", "30s", "-f", "-", input="import os\nos.getpid()\n")
    assert result.returncode == 0, result.stderr
    assert "gunicorn" in result.stderr and "--pid" in result.stderr  # the note says which worker and how to pick


# -- attach through a real port-forward ----------------------------------------------------------------------

class Attached:
    """`kubectl wand attach` running in the foreground, as a user runs it."""

    def __init__(self, wand_env, *args):
        self.proc = subprocess.Popen([sys.executable, "-u", "-m", "kubectl_wand", "attach"] + list(args), cwd=REPO,
                                     env=wand_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     stdin=subprocess.DEVNULL, preexec_fn=default_signals)
        self.out = []
        self.pending = ""

    def read_until(self, pattern, timeout=60):
        """Read stdout lines (raw fd reads: select() and buffered readline() do not mix) until pattern."""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while time.monotonic() < deadline:
            while "\n" in self.pending:
                line, self.pending = self.pending.split("\n", 1)
                self.out.append(line + "\n")
                m = re.search(pattern, line)
                if m:
                    return m
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            self.pending += chunk.decode("utf-8", "replace")
        raise AssertionError("no %r in attach output:\n%s\nstderr:\n%s" % (
            pattern, "".join(self.out), self.stderr_now()))

    def stderr_now(self):
        if self.proc.poll() is None:
            return ""
        return self.proc.stderr.read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            out, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        return self.proc.returncode, "".join(self.out) + self.pending + out, err


class HttpForward:
    """A port-forward to the app's HTTP port (no kube-proxy here), to send the request that hits the breakpoint."""

    def __init__(self, cluster, pod):
        self.proc = subprocess.Popen(["kubectl", "--kubeconfig", cluster.kubeconfig, "-n", cluster.namespace,
                                      "port-forward", "--address", "127.0.0.1", "pod/" + pod, ":8000"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     preexec_fn=default_signals)
        line = self.proc.stdout.readline()
        m = re.search(r"127\.0\.0\.1:(\d+)", line)
        assert m, line + self.proc.stderr.read()
        self.port = int(m.group(1))

    def close(self):
        self.proc.terminate()
        self.proc.wait(10)


def hit_breakpoint(cluster, local_port, pod, path_in_pod="/app/web.py"):
    line = dap.marker_line(os.path.join(APPS, os.path.basename(path_in_pod)))
    http = HttpForward(cluster, pod)
    client = dap.DAPClient("127.0.0.1", local_port, timeout=30)
    try:
        top, body = dap.break_on_request(client, path_in_pod, line, "http://127.0.0.1:%d/" % http.port)
        assert body.startswith(b"hello from")
        return top
    finally:
        client.close()
        http.close()


def test_attach_breakpoint_through_port_forward(cluster, wand):
    pod = cluster.pod_names("app=web")[0]
    env = dict(cluster.env, PYTHONPATH=REPO)
    attached = Attached(env, "deploy/web", "--pod", pod, "--port", "5679")
    try:
        m = attached.read_until(r"Forwarding 127\.0\.0\.1:(\d+) -> pod/%s:(\d+)" % re.escape(pod))
        local_port, remote_port = int(m.group(1)), int(m.group(2))
        text = "".join(attached.out)
        if "already listening" in text:  # an earlier run on this cluster left one (debugpy cannot be stopped)
            assert "already listening on 127.0.0.1:%d in pod/%s" % (remote_port, pod) in text, text
        else:
            assert remote_port == 5679 and "listening on 127.0.0.1:5679" in text, text
        assert '"type": "debugpy"' in text and '"remoteRoot": "/app"' in text, text
        hit_breakpoint(cluster, local_port, pod)
    finally:
        code, out, err = attached.stop()
    assert code == 0, err
    assert "Stopped forwarding" in out
    assert leftovers(cluster, pod) == "[]"
    again = wand("attach", "pod/" + pod, "--no-forward", "-o", "json")
    assert json.loads(again.stdout)["status"] == "already"


def test_attach_follows_a_reload(cluster, wand):
    pod = cluster.pod_names("app=reload")[0]
    env = dict(cluster.env, PYTHONPATH=REPO)
    attached = Attached(env, "deploy/reload", "--port", "5681", "--local-port", "0")
    try:
        m = attached.read_until(r"Forwarding 127\.0\.0\.1:(\d+)")
        local_port = int(m.group(1))
        # Touch the app: uvicorn's reloader replaces the worker; attach must re-inject into the new one.
        cluster.kubectl("exec", pod, "--", "python3", "-c", "import os; os.utime('/app/web.py')", timeout=60,
                        check=True)
        attached.read_until(r"re-attached: debugpy listening in pod/%s pid \d+" % re.escape(pod), timeout=90)
        hit_breakpoint(cluster, local_port, pod)
    finally:
        code, out, err = attached.stop()
    assert code == 0, err
    assert "replaced by" in err


# -- bad input ----------------------------------------------------------------------------------------------------

def test_not_found_errors(cluster, wand):
    cases = [
        (["exec-py", "pod/nope", "--", "1"], "pod nope not found"),
        (["exec-py", "deploy/nope", "--", "1"], "deployment nope not found"),
        (["get", "processes", "svc/nope"], "service nope not found"),
        (["get", "processes", "deploy/web", "-n", "no-such-namespace"], "not found"),
    ]
    for args, text in cases:
        result = wand(*args)
        assert result.returncode == 3, (args, result.stderr)
        assert text in one_line(result), (args, result.stderr)


def test_service_without_selector_and_no_running_pods(cluster, wand):
    manifest = """
apiVersion: v1
kind: Service
metadata: {name: noselector, namespace: wand-e2e}
spec: {ports: [{port: 80}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: scaled-down, namespace: wand-e2e}
spec:
  replicas: 0
  selector: {matchLabels: {app: scaled-down}}
  template:
    metadata: {labels: {app: scaled-down}}
    spec: {containers: [{name: app, image: none.invalid/none:1}]}
"""
    cluster.kubectl("apply", "-f", "-", input=manifest, check=True)
    try:
        svc = wand("get", "processes", "svc/noselector")
        assert svc.returncode == 3 and "has no selector" in one_line(svc)
        none = wand("exec-py", "deploy/scaled-down", "--", "1")
        assert none.returncode == 3 and "no pods for deployment/scaled-down" in one_line(none)
    finally:
        cluster.kubectl("delete", "service/noselector", "deployment/scaled-down", "--wait=false")


def test_old_python_and_missing_ptrace(cluster, wand):
    old = wand("exec-py", "pod/py313", "--", "1")
    assert old.returncode == 4 and "Python 3.13" in one_line(old)
    denied = wand("exec-py", "pod/noptrace", "--", "1")
    assert denied.returncode == 4
    line = one_line(denied)
    # noptrace drops ALL and runs as root: kubectl wand also needs CHOWN and DAC_OVERRIDE to hand files to uid 1000
    assert "SYS_PTRACE" in line and ("securityContext.capabilities.add: [SYS_PTRACE, CHOWN, DAC_OVERRIDE] in "
                                     "container app") in line
    checked = wand("check", "pod/noptrace", "-o", "json")
    assert checked.returncode == 1
    rows = {r["check"]: r for r in json.loads(checked.stdout)["rows"]}
    assert rows["SYS_PTRACE"]["status"] == "warn" and "SYS_PTRACE" in rows["SYS_PTRACE"]["fix"]
    assert rows["permission"]["status"] == "fail" and "re-create pod/noptrace" in rows["permission"]["fix"]
    assert rows["interpreter"]["status"] == "warn"  # unreadable for lack of permission, not a wrong version
    assert leftovers(cluster, "noptrace") == "[]"


def test_check_on_a_healthy_pod(cluster, wand):
    result = wand("check", "deploy/web", "--pod", cluster.pod_names("app=web")[0])
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("pod", "container", "SYS_PTRACE", "RBAC pods/exec", "interpreter", "main thread"):
        assert any(line.startswith(name) for line in result.stdout.splitlines()), (name, result.stdout)


def test_rbac_forbidden_exec(cluster, wand):
    manifest = """
apiVersion: v1
kind: ServiceAccount
metadata: {name: reader, namespace: wand-e2e}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: pod-reader, namespace: wand-e2e}
rules: [{apiGroups: [""], resources: [pods, services], verbs: [get, list]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: reader-reads, namespace: wand-e2e}
subjects: [{kind: ServiceAccount, name: reader, namespace: wand-e2e}]
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: pod-reader}
"""
    cluster.kubectl("apply", "-f", "-", input=manifest, check=True)
    pod = cluster.pod_names("app=web")[0]
    result = wand("exec-py", "pod/" + pod, "--as", "system:serviceaccount:wand-e2e:reader", "--", "1")
    assert result.returncode == 6
    line = one_line(result)
    assert "forbidden (RBAC)" in line and "pods/exec" in line
    checked = wand("check", "pod/" + pod, "--as", "system:serviceaccount:wand-e2e:reader")
    assert checked.returncode == 1 and "RBAC pods/exec" in checked.stdout


def test_environment_errors(cluster, wand, tmp_path):
    pod = cluster.pod_names("app=web")[0]
    no_kubectl = wand("exec-py", "pod/" + pod, "--", "1", env={"PATH": str(tmp_path), "KUBECTL_PATH": ""})
    assert no_kubectl.returncode == 6 and "kubectl not found" in one_line(no_kubectl)
    started = time.monotonic()
    unreachable = wand("get", "processes", "pod/" + pod, "--server", "https://127.0.0.1:1", "--request-timeout", "2s",
                       "--insecure-skip-tls-verify")
    assert time.monotonic() - started < 20
    warning, error = unreachable.stderr.strip().splitlines()  # one kubectl-style warning, no urllib3 noise
    assert warning.startswith("warning: --insecure-skip-tls-verify") and "InsecureRequestWarning" not in error
    assert unreachable.returncode == 6 and error.startswith("error: cannot reach the Kubernetes API server")
    import socket
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = wand("attach", "pod/" + pod, "--local-port", port, timeout=60)
    assert result.returncode == 6 and "local port %d is busy" % port in one_line(result)


def test_context_and_kubeconfig_flags(cluster, wand, tmp_path):
    import yaml
    with open(cluster.kubeconfig) as f:
        cfg = yaml.safe_load(f)
    ctx = dict(cfg["contexts"][0])
    ctx = {"name": "wand-e2e-ns", "context": dict(ctx["context"], namespace="wand-e2e")}
    cfg["contexts"].append(ctx)
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump(cfg))
    env = {"KUBECONFIG": "/nonexistent"}  # --kubeconfig must win over the environment
    result = wand("get", "processes", "deploy/web", "--kubeconfig", path, "--context", "wand-e2e-ns", "-o", "json",
                  env=env)
    assert {p["namespace"] for p in items(result)} == {"wand-e2e"}
    bad = wand("get", "processes", "deploy/web", "--kubeconfig", path, "--context", "nope", env=env)
    assert bad.returncode == 2 and "context 'nope' not found" in one_line(bad)


def test_crash_looping_pod_is_not_running(cluster, wand):
    manifest = """
apiVersion: v1
kind: Pod
metadata: {name: crashing, namespace: wand-e2e, labels: {app: crashing}}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{name: app, image: IMAGE, imagePullPolicy: IfNotPresent, command: ["python3", "-c", "raise SystemExit(3)"]}]
"""
    image = cluster.kubectl("get", "pod/nonroot", "-o", "jsonpath={.spec.containers[0].image}", check=True).stdout
    cluster.kubectl("apply", "-f", "-", input=manifest.replace("IMAGE", image), check=True)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:  # wait until it has crashed at least once
            state = cluster.kubectl("get", "pod/crashing", "-o",
                                    "jsonpath={.status.containerStatuses[0].restartCount}").stdout
            if state and int(state) >= 1:
                break
            time.sleep(0.5)
        for verb in (["exec-py", "pod/crashing", "--", "1"], ["get", "processes", "pod/crashing"]):
            result = wand(*verb)
            assert result.returncode == 3, result.stderr
            line = one_line(result)
            assert "not Running" in line or "not running" in line, line
            # The listing started before the pod was read is gone with the command.
            assert kubectl_execs_into("crashing") == [], kubectl_execs_into("crashing")
    finally:
        cluster.kubectl("delete", "pod/crashing", "--wait=false")


def test_early_listing_goes_where_the_container_choice_says(cluster, wand):
    """A pod named on the command line is listed while the pod is still being read from the API. Without -c,
    kubectl would send that listing to the first container (here a sidecar without Python); kubectl wand
    chooses the Python container: the early listing is dropped and the result comes from `app`."""
    for verb in (["get", "processes", "pod/two-containers", "-o", "json"],
                 ["check", "pod/two-containers", "-o", "json"]):
        result = wand(*verb)
        assert result.returncode == 0, result.stderr
        assert kubectl_execs_into("two-containers") == []
    traced = wand("get", "processes", "pod/two-containers", "-o", "json", "-v", "6")
    listed = items(traced)
    assert {p["container"] for p in listed} == {"app"} and all(p["python"].startswith("3.14") for p in listed)
    execs = [line for line in traced.stderr.splitlines() if line.startswith("+ ") and " exec -i " in line]
    assert len(execs) == 2, execs  # the early listing (kubectl's default container), then ours: -c app
    assert " -c " not in execs[0].split(" -- ")[0] and " -c app -- python3 -S " in execs[1], execs
    sidecar = wand("get", "processes", "pod/two-containers", "-c", "sidecar")
    assert sidecar.returncode == 3 and "has no Python interpreter" in one_line(sidecar)


def processes():
    """Every process on this machine, read from /proc with the agent's own reader."""
    for pid in procfs.all_pids():
        try:
            yield procfs.Proc(pid)
        except (ProcessLookupError, ValueError, IndexError):
            continue  # exited while we looked


def kubectl_execs_into(pod):
    """kubectl exec processes still running against a pod (none should outlive a kubectl wand command)."""
    return [p.pid for p in processes() if p.cmdline and os.path.basename(p.cmdline[0]) == "kubectl"
            and "exec" in p.cmdline and pod in p.cmdline]


def children(pid):
    """(pid, cmdline) of the direct children of a process, from /proc."""
    return [(p.pid, " ".join(p.cmdline)) for p in processes() if p.ppid == pid]


def test_attach_restarts_a_dead_port_forward(cluster, wand):
    pod = cluster.pod_names("app=web")[1]
    env = dict(cluster.env, PYTHONPATH=REPO)
    attached = Attached(env, "pod/" + pod, "--port", "5682", "--local-port", "0")
    try:
        local_port = int(attached.read_until(r"Forwarding 127\.0\.0\.1:(\d+)").group(1))
        forwards = [p for p, cmd in children(attached.proc.pid) if "port-forward" in cmd]
        assert len(forwards) == 1, children(attached.proc.pid)
        os.kill(forwards[0], signal.SIGKILL)  # the forward dies, as it does when a kubelet restarts
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            alive = [p for p, cmd in children(attached.proc.pid) if "port-forward" in cmd and p != forwards[0]]
            if alive:
                break
            time.sleep(0.1)
        assert alive, "no new port-forward"
        hit_breakpoint(cluster, local_port, pod)  # same local port: the editor's configuration still holds
    finally:
        code, out, err = attached.stop()
    assert code == 0, err
    assert "port-forward ended; restarting it on 127.0.0.1:%d" % local_port in err
