"""Trust on the real cluster: printed fixes that remove nothing, rights checked before injecting, children that
die with us, errors that name the right scope."""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tests"))
from test_kube_verbs import Attached, children, one_line  # noqa: E402

pytestmark = pytest.mark.cluster
NS = "wand-e2e"


def test_printed_ptrace_fix_adds_and_removes_nothing(cluster, wand):
    """Applied (server-side dry run) to a Deployment that adds SETUID/SETGID, the fix keeps both."""
    cluster.deploy("caps", ["python3", "-c", "import time; time.sleep(100000)"],
                   container={"securityContext": {"capabilities": {"drop": ["ALL"], "add": ["SETUID", "SETGID"]}}})
    checked = wand("check", "deploy/caps", "-n", NS, "-o", "json")
    rows = {r["check"]: r for r in json.loads(checked.stdout)["rows"]}
    fix = rows["SYS_PTRACE"]["fix"]
    assert fix.startswith("kubectl patch -n wand-e2e deployment/caps --type json -p '"), fix
    argv = shlex.split(fix.split(" (", 1)[0])
    applied = subprocess.run(argv + ["--dry-run=server", "-o", "json"], env=cluster.env, capture_output=True,
                             text=True, timeout=60)
    assert applied.returncode == 0, applied.stderr
    caps = json.loads(applied.stdout)["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"]
    # the container drops ALL: kubectl wand (root) also needs CHOWN and DAC_OVERRIDE back to hand its files over
    assert caps == {"drop": ["ALL"], "add": ["SETUID", "SETGID", "SYS_PTRACE", "CHOWN", "DAC_OVERRIDE"]}


def test_no_patch_is_offered_for_a_job_or_a_bare_pod(cluster, wand):
    noptrace = json.loads(wand("check", "pod/noptrace", "-n", NS, "-o", "json").stdout)["rows"]
    fix = {r["check"]: r for r in noptrace}["SYS_PTRACE"]["fix"]
    assert "kubectl patch" not in fix and "re-create pod/noptrace" in fix


RBAC_NO_FORWARD = """
apiVersion: v1
kind: ServiceAccount
metadata: {name: no-forward, namespace: wand-e2e}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: exec-only, namespace: wand-e2e}
rules:
- {apiGroups: [""], resources: [pods, services], verbs: [get, list]}
- {apiGroups: [""], resources: [pods/exec], verbs: [create, get]}
- {apiGroups: [apps], resources: [deployments, replicasets], verbs: [get, list]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: no-forward-execs, namespace: wand-e2e}
subjects: [{kind: ServiceAccount, name: no-forward, namespace: wand-e2e}]
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: exec-only}
"""


def test_attach_without_port_forward_rights_injects_nothing(cluster, wand):
    cluster.kubectl("apply", "-f", "-", input=RBAC_NO_FORWARD, check=True)
    pod = cluster.pod_names("app=web")[0]
    user = "system:serviceaccount:wand-e2e:no-forward"
    refused = wand("attach", "pod/" + pod, "-n", NS, "--as", user, "--port", "5693")
    assert refused.returncode == 6, refused.stderr
    line = one_line(refused)
    assert "pods/portforward" in line and "nothing was injected" in line
    probe = ("import socket; s = socket.socket(); r = s.connect_ex(('127.0.0.1', 5693)); s.close(); r != 0")
    nothing = wand("exec-py", "pod/" + pod, "-n", NS, "--", probe)
    assert nothing.returncode == 0 and nothing.stdout.strip() == "True", nothing.stderr
    listed = wand("get", "processes", "-l", "app=web", "--as", user, "-A")  # a namespaced role: -A is forbidden
    assert listed.returncode == 6 and "all namespaces (cluster scope)" in one_line(listed)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGKILL])
def test_port_forward_dies_with_attach(cluster, signum):
    pod = cluster.pod_names("app=web")[1]
    env = dict(cluster.env, PYTHONPATH=REPO)
    attached = Attached(env, "pod/" + pod, "--port", "5682", "--local-port", "0")
    try:
        attached.read_until(r"Forwarding 127\.0\.0\.1:(\d+)")
        kids = [p for p, cmd in children(attached.proc.pid)]
        assert any("port-forward" in cmd for _p, cmd in children(attached.proc.pid)), kids
        os.kill(attached.proc.pid, signum)
        attached.proc.wait(30)
        if signum != signal.SIGKILL:  # ended as Ctrl-C ends it, then the signal's exit code
            said = attached.pending + attached.proc.stdout.read()
            assert "Stopped forwarding" in said and attached.proc.returncode == 128 + signum, said
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(os.path.exists("/proc/%d" % p) and
                                                  open("/proc/%d/stat" % p).read().split()[2] != "Z" for p in kids):
            time.sleep(0.1)  # the kernel delivers PDEATHSIG at once; the child still needs to exit
        alive = [p for p in kids if os.path.exists("/proc/%d" % p) and open("/proc/%d/stat" % p).read().split()[2] != "Z"]
        assert alive == [], "children outlived attach after signal %d" % signum
    finally:
        if attached.proc.poll() is None:
            attached.proc.kill()
            attached.proc.wait(10)


def test_failed_listing_prints_no_header(wand):
    missing = wand("get", "processes", "pod/no-such-pod", "-n", NS)
    assert missing.returncode == 3 and missing.stdout == ""
