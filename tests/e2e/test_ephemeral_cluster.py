"""--ephemeral on the real cluster: three pods that `kubectl exec` cannot debug (tests/e2e/manifests/
90-ephemeral.yaml: another uid without capabilities, a read-only filesystem with no writable directory, no
Python on PATH) are listed, run code and stop at a real DAP breakpoint through an ephemeral debug container,
while their app container never restarts; and the refusals (Pod Security baseline, RBAC) are one line each."""
from __future__ import annotations

import json
import os
import re
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tests"))
from test_kube_verbs import Attached, hit_breakpoint, one_line  # noqa: E402

pytestmark = pytest.mark.cluster
# pod -> (exit code through kubectl exec, what that error says, uid of the app process)
PODS = {
    "eph-dropuid": (4, "without CAP_SYS_PTRACE", 1000),
    "eph-readonly": (6, "no room for kubectl wand's private files", 1000),
    "eph-abspath": (3, "has no Python interpreter", 0),
}
# Not wand-*: completion tests expect wand-e2e to be the only namespace of that prefix.
BASELINE_NS = "eph-wand-baseline"


def pod_json(cluster, pod, namespace=None):
    args = ["get", "pod/" + pod, "-o", "json"] + (["-n", namespace] if namespace else [])
    return json.loads(cluster.kubectl(*args, check=True).stdout)


def app_state(pod):
    """(restartCount, startedAt) of the app container: unchanged while we debug it."""
    status = next(s for s in pod["status"]["containerStatuses"] if s["name"] == "app")
    return status["restartCount"], status["state"]["running"]["startedAt"]


def debug_containers(pod):
    return [c["name"] for c in pod["spec"].get("ephemeralContainers") or [] if c["name"].startswith("wand-")]


def running_debug_container(pod):
    for status in pod["status"].get("ephemeralContainerStatuses") or []:
        if status["name"].startswith("wand-") and "running" in status["state"]:
            return status["name"]
    return None


def in_debug_container(cluster, pod, script):
    """Run a short Python in the pod's running kubectl-wand debug container (it sees the pod's processes)."""
    name = running_debug_container(pod_json(cluster, pod))
    assert name, "no running debug container in pod/%s" % pod
    out = cluster.kubectl("exec", pod, "-c", name, "--", "python3", "-c", script, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


LEFT = r"""
import glob, json, os
zombies = []
for p in os.listdir('/proc'):
    try:
        if p.isdigit() and open('/proc/%s/stat' % p).read().rpartition(')')[2].split()[0] == 'Z':
            zombies.append(int(p))
    except OSError:
        pass
print(json.dumps({"files": glob.glob('/tmp/wand-*') + glob.glob('/var/tmp/wand-*'), "zombies": zombies}))
"""


# -- through kubectl exec: each fails, and says --ephemeral ------------------------------------------------------

@pytest.mark.parametrize("pod", sorted(PODS))
def test_exec_path_fails_and_names_ephemeral(cluster, wand, pod):
    code, says, _uid = PODS[pod]
    result = wand("exec-py", "pod/" + pod, "--", "1")
    assert result.returncode == code, result.stderr
    line = one_line(result)
    assert says in line and "--ephemeral" in line, line


# -- the same pods with --ephemeral ------------------------------------------------------------------------------

@pytest.mark.parametrize("pod", sorted(PODS))
def test_ephemeral_lists_runs_and_breaks(cluster, wand, pod):
    _code, _says, uid = PODS[pod]
    before = pod_json(cluster, pod)
    started = app_state(before)

    listed = wand("get", "processes", "pod/" + pod, "--ephemeral", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    procs = json.loads(listed.stdout)["items"]
    apps = [p for p in procs if p["role"] != "helper"]
    assert len(apps) == 1, procs  # the debug container's own Python is a helper, never a candidate
    app = apps[0]
    assert app["pid"] == 1 and app["uid"] == uid and app["attachable"], app
    assert app["python"].startswith("3.14.") and "uvicorn" in app["command"]
    assert any("kubectl-wand-idle" in p["command"] for p in procs if p["role"] == "helper"), procs

    ran = wand("exec-py", "pod/" + pod, "--ephemeral", "--", "import os, socket; (os.getuid(), os.getpid(), "
               "socket.gethostname())")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == repr((uid, 1, pod))

    stack = wand("stack", "pod/" + pod, "--ephemeral", "-o", "json")
    assert stack.returncode == 0, stack.stderr
    threads = json.loads(stack.stdout)["items"][0]["threads"]
    assert any(f["file"].endswith("/uvicorn/server.py") for t in threads for f in t["frames"]), threads
    main = next(t for t in threads if t["main"])  # whole, as py-spy shows it, from another container too
    assert main["frames"][-1]["function"] == "_run_module_as_main" and main["cut"] is None, main

    attached = Attached(dict(cluster.env, PYTHONPATH=REPO), "pod/" + pod, "--ephemeral", "--local-port", "0")
    try:
        m = attached.read_until(r"Forwarding 127\.0\.0\.1:(\d+) -> pod/%s:(\d+)" % re.escape(pod))
        text = "".join(attached.out)
        # an earlier run on this cluster may have left a server in the app (debugpy cannot be stopped)
        assert re.search(r"(already )?listening on 127\.0\.0\.1:5679 in pod/%s pid 1" % re.escape(pod), text), text
        assert '"remoteRoot": "/app"' in text, text
        hit_breakpoint(cluster, int(m.group(1)), pod)
    finally:
        code, out, err = attached.stop()
    assert code == 0, err
    assert "Stopped forwarding" in out

    after = pod_json(cluster, pod)
    assert app_state(after) == started  # the app container never restarted
    assert after["spec"]["containers"] == before["spec"]["containers"]  # and its spec is untouched
    names = debug_containers(after)
    assert names and running_debug_container(after) in names
    spec = next(c for c in after["spec"]["ephemeralContainers"] if c["name"] == names[-1])
    assert spec["targetContainerName"] == "app" and "SYS_PTRACE" in spec["securityContext"]["capabilities"]["add"]
    assert spec["image"] == before["spec"]["containers"][0]["image"]  # the app's own image: no pull
    left = in_debug_container(cluster, pod, LEFT)
    assert left == {"files": [], "zombies": []}, left
    logs = cluster.kubectl("logs", pod, "-c", "app", timeout=60).stdout
    assert "debugger script" not in logs and "Traceback" not in logs


def test_reuse_and_a_new_container_after_exit(cluster, wand):
    pod = "eph-abspath"
    first = wand("exec-py", "pod/" + pod, "--ephemeral", "--", "1")
    assert first.returncode == 0, first.stderr
    known = debug_containers(pod_json(cluster, pod))
    again = wand("exec-py", "pod/" + pod, "--ephemeral", "--", "2")
    assert again.returncode == 0 and again.stdout.strip() == "2", again.stderr
    assert "note: added ephemeral container" not in again.stderr  # reused, not added
    assert debug_containers(pod_json(cluster, pod)) == known

    # End the running one (its idle process is its main process): Kubernetes cannot restart it.
    gone = running_debug_container(pod_json(cluster, pod))
    cluster.kubectl("exec", pod, "-c", gone, "--", "python3", "-c",
                    "import os, signal\nfor p in os.listdir('/proc'):\n if p.isdigit() and b'kubectl-wand-idle' in "
                    "open('/proc/%s/cmdline' % p, 'rb').read(): os.kill(int(p), signal.SIGKILL)", timeout=60)
    cluster.kubectl("wait", "pod/" + pod, "--for=jsonpath={.status.ephemeralContainerStatuses[?(@.name==\"%s\")]"
                    ".state.terminated.exitCode}=137" % gone, "--timeout=60s", timeout=90, check=True)
    third = wand("exec-py", "pod/" + pod, "--ephemeral", "--", "3")
    assert third.returncode == 0 and third.stdout.strip() == "3", third.stderr
    assert "note: added ephemeral container" in third.stderr and "stays listed in the pod spec" in third.stderr
    now = debug_containers(pod_json(cluster, pod))
    assert now[:len(known)] == known and len(now) == len(known) + 1
    # Its exec worked before the kubelet reported it (that lag is why the transport does not wait for it).
    cluster.kubectl("wait", "pod/" + pod, "--for=jsonpath={.status.ephemeralContainerStatuses[?(@.name==\"%s\")]"
                    ".state.running}" % now[-1], "--timeout=60s", timeout=90, check=True)


def test_check_ephemeral_rows(cluster, wand):
    checked = wand("check", "pod/eph-dropuid", "--ephemeral", "-o", "json")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    rows = {r["check"]: r for r in json.loads(checked.stdout)["rows"]}
    for name in ("RBAC pods/ephemeralcontainers", "Pod Security", "debug image", "debug container", "permission"):
        assert rows[name]["status"] == "ok", rows
    assert "SYS_PTRACE" not in rows  # the app container's capabilities do not matter here
    assert "chrooted" in rows["injector"]["detail"] and "nothing written" in rows["private files"]["detail"]
    plain = wand("check", "pod/eph-readonly", "-o", "json")
    rows = {r["check"]: r for r in json.loads(plain.stdout)["rows"]}
    assert plain.returncode == 1 and rows["private files"]["status"] == "fail"
    assert "--ephemeral" in rows["private files"]["fix"]


# -- refusals: one line, and the pod is left as it was --------------------------------------------------------------

BASELINE = """
apiVersion: v1
kind: Namespace
metadata:
  name: NS
  labels: {pod-security.kubernetes.io/enforce: baseline}
---
apiVersion: v1
kind: Pod
metadata: {name: eph-baseline, namespace: NS}
spec:
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: IMAGE
    imagePullPolicy: IfNotPresent
    command: ["python3", "-m", "http.server", "8000"]
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: eph-debugger, namespace: NS}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: eph-debugger, namespace: NS}
rules:
- {apiGroups: [""], resources: [pods], verbs: [get, list]}
- {apiGroups: [""], resources: [pods/ephemeralcontainers], verbs: [patch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: eph-debugger, namespace: NS}
subjects: [{kind: ServiceAccount, name: eph-debugger, namespace: NS}]
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: eph-debugger}
"""


def test_refused_by_pod_security_baseline(cluster, wand):
    # an earlier run's namespace may still be terminating
    cluster.kubectl("wait", "--for=delete", "namespace/" + BASELINE_NS, "--timeout=120s", timeout=150,
                    namespaced=False)
    cluster.kubectl("apply", "-f", "-", input=BASELINE.replace("NS", BASELINE_NS).replace("IMAGE", cluster.app_image()),
                    check=True, namespaced=False)
    try:
        refused_by_baseline(cluster, wand)
    finally:
        cluster.kubectl("delete", "namespace", BASELINE_NS, "--wait=false", namespaced=False)


def refused_by_baseline(cluster, wand):
    cluster.kubectl("wait", "-n", BASELINE_NS, "pod/eph-baseline", "--for=condition=Ready", "--timeout=90s",
                    timeout=120, check=True, namespaced=False)
    # Read before trying: the namespace's label.
    result = wand("exec-py", "-n", BASELINE_NS, "pod/eph-baseline", "--ephemeral", "--", "1")
    assert result.returncode == 6
    line = one_line(result)
    assert "'baseline'" in line and "pod-security.kubernetes.io/enforce=baseline" in line, line
    # A user who may not read namespaces: the API server's own refusal says the same.
    blind = wand("exec-py", "-n", BASELINE_NS, "pod/eph-baseline", "--ephemeral", "--as",
                 "system:serviceaccount:%s:eph-debugger" % BASELINE_NS, "--", "1")
    assert blind.returncode == 6
    line = one_line(blind)
    assert "'baseline'" in line and "pod-security.kubernetes.io/enforce=baseline" in line, line
    pod = pod_json(cluster, "eph-baseline", BASELINE_NS)
    assert not pod["spec"].get("ephemeralContainers")


NO_EPHEMERAL = """
apiVersion: v1
kind: ServiceAccount
metadata: {name: eph-exec-only, namespace: wand-e2e}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: eph-exec-only, namespace: wand-e2e}
rules:
- {apiGroups: [""], resources: [pods], verbs: [get, list]}
- {apiGroups: [""], resources: [pods/exec], verbs: [create]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: eph-exec-only, namespace: wand-e2e}
subjects: [{kind: ServiceAccount, name: eph-exec-only, namespace: wand-e2e}]
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: eph-exec-only}
"""


def test_refused_without_rbac_for_ephemeral_containers(cluster, wand):
    cluster.kubectl("apply", "-f", "-", input=NO_EPHEMERAL, check=True)
    pod = "eph-dropuid"
    known = debug_containers(pod_json(cluster, pod))
    user = "system:serviceaccount:wand-e2e:eph-exec-only"
    # The running debug container is reused without any new right...
    reused = wand("exec-py", "pod/" + pod, "--ephemeral", "--as", user, "--", "2 + 2")
    assert reused.returncode == 0 and reused.stdout.strip() == "4", reused.stderr
    # ...but none may be added: a pod without one is refused before anything is tried.
    refused = wand("exec-py", "pod/eph-readonly", "--ephemeral", "--image", "none.invalid/never:1", "--as", user,
                   "--", "1")
    assert refused.returncode == 6
    line = one_line(refused)
    assert "pods/ephemeralcontainers" in line and "RBAC" in line and "patch" in line, line
    assert debug_containers(pod_json(cluster, pod)) == known
    checked = wand("check", "pod/eph-readonly", "--ephemeral", "--image", "none.invalid/never:1", "--as", user,
                   "-o", "json")
    rows = {r["check"]: r for r in json.loads(checked.stdout)["rows"]}
    assert checked.returncode == 1 and rows["RBAC pods/ephemeralcontainers"]["status"] == "fail", rows
    # and the last row does not promise the container the RBAC row refuses ("ok none running: one is added")
    assert rows["debug container"]["status"] == "fail" and "none can be added" in rows["debug container"]["detail"]


def test_usage_errors(wand):
    assert wand("exec-py", "pid/1", "--ephemeral", "--", "1").returncode == 2
    no_ephemeral = wand("exec-py", "pod/eph-dropuid", "--image", "busybox", "--", "1")
    assert no_ephemeral.returncode == 2 and "--image is the image of the --ephemeral" in one_line(no_ephemeral)
