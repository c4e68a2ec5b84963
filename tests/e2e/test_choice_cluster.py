"""Which process, which interpreter, which rights, on the real cluster (issue 17, "On the cluster"): a printed
capability fix that leads to a working verb, a killed CLI that ends its agent in the pod, a `python3` on PATH
that never answers, containers that share a pid namespace, get-only exec rights. Workloads are named cc-* and
deleted after."""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pytestmark = pytest.mark.cluster
NS = "wand-e2e"
SPIN = "import time\nwhile True: time.sleep(0.05)"


@pytest.fixture
def made(cluster):
    """Names of cc-* Deployments and Pods a test made: deleted after it, whatever happened."""
    names = []
    yield names
    for name in names:
        cluster.kubectl("delete", name, "--ignore-not-found", "--wait=false", timeout=60)


def test_printed_capability_fix_leads_to_a_working_verb(cluster, wand, made):
    """Issue 17: on a Deployment whose app drops to uid 1000 with `drop: [ALL], add: [SETUID, SETGID]`, applying
    the printed fix and retrying gave "may not give it files (no CAP_CHOWN)". Apply it for real: the verb works."""
    made.append("deployment/cc-dropuid")
    cluster.deploy("cc-dropuid", ["python3", "/app/dropuid.py", "python3", "-c", SPIN],
                   container={"securityContext": {"capabilities": {"drop": ["ALL"], "add": ["SETUID", "SETGID"]}}})
    refused = wand("exec-py", "deploy/cc-dropuid", "-n", NS, "--", "import os; os.getuid()")
    assert refused.returncode == 4, refused.stderr
    fix = refused.stderr.split("kubectl patch", 1)[1].split(" (adds", 1)[0]
    applied = subprocess.run(["kubectl"] + shlex.split("patch" + fix), env=cluster.env, capture_output=True,
                             text=True, timeout=60)
    assert applied.returncode == 0, applied.stderr
    cluster.kubectl("rollout", "status", "deploy/cc-dropuid", "--timeout=150s", check=True, timeout=180)
    cluster.settle("app=cc-dropuid", 1)
    ran = wand("exec-py", "deploy/cc-dropuid", "-n", NS, "--", "import os; os.getuid()")
    assert ran.returncode == 0 and ran.stdout.strip() == "1000", ran.stderr
    checked = wand("check", "deploy/cc-dropuid", "-n", NS)
    assert checked.returncode == 0, checked.stdout + checked.stderr


LOADER_MARK = "exec(sys.stdin.buffer.readline())"  # in every kubectl-wand agent's command line
IN_POD = ("import glob, os\\n"
          "agents = []\\n"
          "for d in glob.glob('/proc/[0-9]*'):\\n"
          "    try: cmd = open(d + '/cmdline', 'rb').read().decode()\\n"
          "    except OSError: continue\\n"
          "    if %r in cmd and int(d[6:]) != os.getpid(): agents.append(int(d[6:]))\\n"
          "print(len(agents), len(glob.glob('/tmp/wand-*/bootstrap.py')), len(glob.glob('/tmp/wand-*/s')))"
          % LOADER_MARK)


def in_pod(cluster, pod):
    """(agents running, queued bootstraps, sockets an agent listens on) in the pod, read by a plain kubectl exec."""
    out = cluster.kubectl("exec", pod, "--", "python3", "-c", IN_POD.replace("\\n", "\n"), timeout=60)
    assert out.returncode == 0, out.stderr
    return tuple(int(n) for n in out.stdout.split())


def wand_popen(cluster, *args):
    import signal
    env = dict(cluster.env, PYTHONPATH=REPO)
    return subprocess.Popen([sys.executable, "-m", "kubectl_wand"] + list(args), cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


@pytest.fixture(scope="module")
def asleep(cluster):
    """A pod whose main thread sleeps in C for a day: every injection into it stays pending."""
    cluster.deploy("cc-asleep", ["python3", "-c", "import time; time.sleep(86400)"])
    yield cluster.pod_names("app=cc-asleep")[0]
    cluster.kubectl("delete", "deployment/cc-asleep", "--ignore-not-found", "--wait=false", timeout=60)


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM", "SIGKILL"])
def test_a_killed_cli_ends_its_pending_agent_and_a_retry_adopts(cluster, wand, asleep, signame):
    """Issue 17: an interrupted pending injection printed nothing and its agent kept the target's lock in the pod
    for the whole --timeout (a retry: exit 5, busy). Now the agent ends as soon as its CLI hangs up; Ctrl-C and
    SIGTERM print what stays queued; a retry adopts the bootstrap instead of waiting on the lock."""
    import signal
    import time
    cli = wand_popen(cluster, "exec-py", "pod/" + asleep, "-n", NS, "--timeout", "120", "--", "print('never')")
    try:
        deadline = time.monotonic() + 60
        while in_pod(cluster, asleep)[2] == 0:  # queued (or adopted): its agent waits on the socket for it
            assert time.monotonic() < deadline and cli.poll() is None, cli.communicate()
        sent = time.monotonic()
        cli.send_signal(getattr(signal, signame))
        _out, err = cli.communicate(timeout=30)
        ended = time.monotonic() - sent
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait(10)
    assert ended < 8, (ended, err)
    if signame != "SIGKILL":
        assert cli.returncode == (130 if signame == "SIGINT" else 128 + signal.SIGTERM), err
        assert "interrupted while the injection into process 1 was pending" in err, err
        assert "/bootstrap.py" in err and "a retry adopts it" in err, err
    deadline = time.monotonic() + 10
    while in_pod(cluster, asleep)[0] != 0:  # the agent in the pod ends with its CLI, not at --timeout
        assert time.monotonic() < deadline, "the agent outlived its CLI by 10 s in the pod"
    retry = wand("exec-py", "pod/" + asleep, "-n", NS, "--timeout", "1", "--", "print('never')")
    assert retry.returncode == 5 and "is still pending after 1s" in retry.stderr, retry.stderr
    assert "another kubectl wand injection" not in retry.stderr
    assert in_pod(cluster, asleep)[1:] == (1, 0)  # one bootstrap queued, adopted by each run; no agent listens


@pytest.mark.parametrize("signame", ["SIGINT", "SIGKILL"])
def test_code_that_never_returns_stops_when_the_cli_goes(cluster, wand, made, signame):
    """exec-py's `while True: pass` in a pod ran on in the app's main thread, and its agent held the target's lock
    in the pod, for the whole --timeout (here 10 minutes) after the CLI was interrupted or killed: the agent
    waited for the answer without watching its CLI. It now hangs up on the payload, which stops the code at its
    next line; Ctrl-C says so in one line."""
    import json
    import signal
    import time
    made.append("deployment/cc-spin")
    cluster.deploy("cc-spin", ["python3", "-c", SPIN])
    pod = cluster.pod_names("app=cc-spin")[0]
    cli = wand_popen(cluster, "exec-py", "pod/" + pod, "-n", NS, "--timeout", "600", "--",
                     "open('/tmp/cc-started', 'w').close()\nwhile True: pass")
    try:
        deadline = time.monotonic() + 60
        while cluster.kubectl("exec", pod, "--", "/usr/bin/test", "-e", "/tmp/cc-started").returncode != 0:
            assert time.monotonic() < deadline and cli.poll() is None, cli.communicate()
        cli.send_signal(getattr(signal, signame))
        _out, err = cli.communicate(timeout=30)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait(10)
    if signame == "SIGINT":
        assert cli.returncode == 130, err
        assert err.count("\n") == 1 and "interrupted while the code was still running in process 1" in err, err

    def in_app():
        done = wand("stack", "pod/" + pod, "-n", NS, "-o", "json")
        assert done.returncode == 0, done.stderr
        main = [t for t in json.loads(done.stdout)["items"][0]["threads"] if t["tid"] == 1][0]
        return main["frames"] and not any(f["file"] == "<wand>" for f in main["frames"])
    deadline = time.monotonic() + 30
    while in_pod(cluster, pod)[0] != 0 or not in_app():  # no agent of ours left, the main thread the app's again
        assert time.monotonic() < deadline, "the code or its agent outlived the CLI by 30 s in the pod"
    again = wand("exec-py", "pod/" + pod, "-n", NS, "--timeout", "10", "--", "1")
    assert again.returncode == 0 and again.stdout.strip() == "1", again.stderr


BLOCKER_SETUP = """
import os, time
os.makedirs('/tmp/blk', exist_ok=True)
for name in ('python3', 'python3.14'):
    path = '/tmp/blk/' + name
    with open(path + '.new', 'w') as f:
        f.write('#!/bin/sh\\nsleep 100000\\n')
    os.chmod(path + '.new', 0o755)
    os.rename(path + '.new', path)
while True:
    time.sleep(0.05)
"""
COUNT_STUCK = ("import glob\n"
               "n = 0\n"
               "for d in glob.glob('/proc/[0-9]*'):\n"
               "    try: cmd = open(d + '/cmdline', 'rb').read()\n"
               "    except OSError: continue\n"
               "    n += cmd.startswith(b'/bin/sh\\0/tmp/blk/') or cmd == b'sleep\\x00100000\\x00'\n"
               "print(n)")


def test_a_python3_that_never_answers_is_bounded_ended_and_passed_over(cluster, wand, made):
    """Issue 17: a `python3` on PATH that never answers cost 30-98 s per verb, left one stuck process per attempt
    in the app's container, and the pod spec's interpreter was never tried. Here python3 and python3.14 on PATH
    both block: each is given HELLO_WITHIN, then ended, and the spec's /usr/bin/python3.14 runs the agent."""
    import time
    from kubectl_wand.transport.kubectl import HELLO_WITHIN
    made.append("deployment/cc-blocked")
    cluster.deploy("cc-blocked", ["/usr/bin/python3.14", "-c", BLOCKER_SETUP],
                   container={"env": [{"name": "PATH", "value": "/tmp/blk:/usr/local/bin:/usr/bin:/bin"}]})
    pod = cluster.pod_names("app=cc-blocked")[0]

    def stuck():
        out = cluster.kubectl("exec", pod, "--", "/usr/bin/python3", "-c", COUNT_STUCK, timeout=60)
        assert out.returncode == 0, out.stderr
        return int(out.stdout)

    deadline = time.monotonic() + 30
    while cluster.kubectl("exec", pod, "--", "/usr/bin/test", "-x", "/tmp/blk/python3.14").returncode != 0:
        assert time.monotonic() < deadline, "the blocking wrappers were never written"
    for _ in range(2):
        started = time.monotonic()
        ran = wand("exec-py", "pod/" + pod, "-n", NS, "--", "import sys; sys.executable")
        took = time.monotonic() - started
        assert ran.returncode == 0 and ran.stdout.strip() == "'/usr/bin/python3.14'", ran.stderr
        assert took < 2 * HELLO_WITHIN + 15, took
        assert stuck() == 0  # each silent candidate's shell and its sleep were ended by the agent that answered


def test_the_interpreter_that_answered_after_a_silent_one_is_tried_first_next_time(cluster, wand, made, tmp_path):
    """Every verb on a pod whose python3 never answers paid HELLO_WITHIN again (measured: stack, exec-py, mem
    8.4 s each, every call; 0.3 s otherwise). The interpreter that answered is remembered in the user's cache for
    the pod's ReplicaSet and container: the next calls start it first, and never the silent ones."""
    import time
    made.append("deployment/cc-remember")
    cluster.deploy("cc-remember", ["/usr/bin/python3.14", "-c", BLOCKER_SETUP],
                   container={"env": [{"name": "PATH", "value": "/tmp/blk:/usr/local/bin:/usr/bin:/bin"}]})
    pod = cluster.pod_names("app=cc-remember")[0]
    deadline = time.monotonic() + 30
    while cluster.kubectl("exec", pod, "--", "/usr/bin/test", "-x", "/tmp/blk/python3.14").returncode != 0:
        assert time.monotonic() < deadline, "the blocking wrappers were never written"
    log = tmp_path / "kubectl.log"
    real = shutil.which("kubectl", path=cluster.env.get("PATH"))
    logger = tmp_path / "kubectl"
    logger.write_text("#!/bin/sh\nprintf '%%s\\n' \"$*\" >> %s\nexec %s \"$@\"\n" % (log, real))
    logger.chmod(0o755)
    env = {"WAND_CACHE": str(tmp_path / "cache"), "KUBECTL_PATH": str(logger)}

    def started():
        """The interpreters kubectl exec started in the pod since the last call."""
        lines = log.read_text().splitlines() if log.exists() else []
        log.write_text("")
        return [line.split(" -- ", 1)[1].split()[0] for line in lines if " exec " in line and " -- " in line]

    first = wand("exec-py", "deploy/cc-remember", "-n", NS, "--", "import sys; sys.executable", env=env)
    assert first.returncode == 0 and first.stdout.strip() == "'/usr/bin/python3.14'", first.stderr
    assert started() == ["python3", "python", "python3.14", "/usr/bin/python3.14"]
    for verb in (["exec-py", "deploy/cc-remember", "--", "1"], ["stack", "deploy/cc-remember"],
                 ["mem", "deploy/cc-remember", "--top", "1"]):
        again = wand(verb[0], "-n", NS, *verb[1:], env=env)
        assert again.returncode == 0, again.stderr
        assert started() == ["/usr/bin/python3.14"], verb
    # A pod named alone: its early call (started before the pod is read) still goes to python3; it is dropped,
    # and what it started in the pod is ended by the agent that answers.
    named = wand("exec-py", "pod/" + pod, "-n", NS, "--", "1", env=env)
    assert named.returncode == 0, named.stderr
    assert started()[-1] == "/usr/bin/python3.14"

    def stuck():
        out = cluster.kubectl("exec", pod, "--", "/usr/bin/python3", "-c", COUNT_STUCK, timeout=60)
        assert out.returncode == 0, out.stderr
        return int(out.stdout)
    assert stuck() == 0


def test_shared_process_namespace_chooses_within_the_named_container(cluster, wand, made):
    """Issue 17: with `shareProcessNamespace: true` container b's Python was listed as container a's, exec-py
    refused with "2 Python processes in this container" and stack failed in nsenter. The agent now keeps the
    processes of the container it runs in (their cgroup): -c names the one, and each verb acts on its Python."""
    import json
    made.append("pod/cc-shared")
    image = cluster.app_image()

    def box(name):
        return {"name": name, "image": image, "imagePullPolicy": "IfNotPresent", "command": ["python3", "-c", SPIN],
                "env": [{"name": "WHO", "value": name}]}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "cc-shared", "namespace": NS},
           "spec": {"shareProcessNamespace": True, "automountServiceAccountToken": False,
                    "terminationGracePeriodSeconds": 1, "containers": [box("a"), box("b")]}}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(pod), check=True)
    cluster.kubectl("wait", "--for=condition=Ready", "pod/cc-shared", "--timeout=120s", check=True, timeout=150)
    for name in ("a", "b"):
        listed = wand("get", "processes", "pod/cc-shared", "-c", name, "-n", NS, "-o", "json")
        assert listed.returncode == 0, listed.stderr
        assert len(json.loads(listed.stdout)["items"]) == 1, listed.stdout
        ran = wand("exec-py", "pod/cc-shared", "-c", name, "-n", NS, "--", "import os; os.environ['WHO']")
        assert ran.returncode == 0 and ran.stdout.strip() == repr(name), ran.stderr
        stack = wand("stack", "pod/cc-shared", "-c", name, "-n", NS, "-o", "json")
        assert stack.returncode == 0, stack.stderr
        assert len(json.loads(stack.stdout)["items"]) == 1, stack.stdout


RBAC_GET_ONLY = """
apiVersion: v1
kind: ServiceAccount
metadata: {name: cc-get-only, namespace: wand-e2e}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: cc-get-only, namespace: wand-e2e}
rules:
- {apiGroups: [""], resources: [pods], verbs: [get, list]}
- {apiGroups: [""], resources: [pods/exec, pods/portforward], verbs: [get]}
- {apiGroups: [apps], resources: [deployments, replicasets], verbs: [get, list]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: cc-get-only, namespace: wand-e2e}
subjects: [{kind: ServiceAccount, name: cc-get-only, namespace: wand-e2e}]
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: cc-get-only}
"""


def test_get_only_exec_rights_are_what_the_cluster_authorises(cluster, wand, made):
    """Issue 17: Kubernetes >= 1.31 lets `get` on pods/exec and pods/portforward open them (websockets): exec-py
    worked with get-only rights, yet `check` failed the RBAC rows and attach refused before injecting. Both now
    ask the cluster for create, then get, and the API server's version."""
    made.extend(["deployment/cc-getonly", "rolebinding/cc-get-only", "role/cc-get-only", "serviceaccount/cc-get-only"])
    sys.path.insert(0, os.path.join(REPO, "tests", "e2e"))
    from test_kube_verbs import Attached
    cluster.kubectl("apply", "-f", "-", input=RBAC_GET_ONLY, check=True)
    cluster.deploy("cc-getonly", ["python3", "-m", "uvicorn", "web:app", "--host", "0.0.0.0", "--port", "8000",
                                  "--app-dir", "/app"])
    user = ["--as", "system:serviceaccount:wand-e2e:cc-get-only"]
    ran = wand("exec-py", "deploy/cc-getonly", "-n", NS, *user, "--", "6 * 7")
    assert ran.returncode == 0 and ran.stdout.strip() == "42", ran.stderr  # what the cluster allows, shown
    checked = wand("check", "deploy/cc-getonly", "-n", NS, *user, "-o", "json")
    rows = {r["check"]: r for r in __import__("json").loads(checked.stdout)["rows"]}
    for sub in ("exec", "portforward"):
        assert rows["RBAC pods/%s" % sub]["status"] == "ok" and "by get" in rows["RBAC pods/%s" % sub]["detail"]
    assert checked.returncode == 0, checked.stdout
    attached = Attached(dict(cluster.env, PYTHONPATH=REPO), "deploy/cc-getonly", "-n", NS, *user, "--port", "5691",
                        "--local-port", "0")
    try:
        attached.read_until(r"Forwarding 127\.0\.0\.1:(\d+)")
    finally:
        code, _out, err = attached.stop()
    assert code in (0, 130), err


RBAC_HALF = """
apiVersion: v1
kind: ServiceAccount
metadata: {name: cc-half, namespace: wand-e2e}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: cc-half, namespace: wand-e2e}
rules:
- {apiGroups: [""], resources: [pods], verbs: [get]}
- {apiGroups: [""], resources: [pods/exec], verbs: [get]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: cc-half, namespace: wand-e2e}
subjects: [{kind: ServiceAccount, name: cc-half, namespace: wand-e2e}]
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: cc-half}
"""


def test_half_the_rights_name_the_one_missing(cluster, wand, made):
    """Get on pods without list, get-only pods/exec, nothing on workloads: pod/NAME works; -l and deploy/NAME
    fail with the exact right the API server named (they said "ask for get/list on it"); and check's SYS_PTRACE
    fix patches the Deployment, not the ReplicaSet it cannot read (that patch rolled the pods without the
    capability: the Deployment replaces a ReplicaSet whose template no longer matches its own)."""
    made.extend(["deployment/cc-half", "rolebinding/cc-half", "role/cc-half", "serviceaccount/cc-half"])
    cluster.kubectl("apply", "-f", "-", input=RBAC_HALF, check=True)
    cluster.deploy("cc-half", ["python3", "-c", SPIN])  # the image's defaults: no SYS_PTRACE
    pod = cluster.pod_names("app=cc-half")[0]
    user = ["-n", NS, "--as", "system:serviceaccount:wand-e2e:cc-half"]
    ran = wand("exec-py", "pod/" + pod, *user, "--", "6 * 7")
    assert ran.returncode == 0 and ran.stdout.strip() == "42", ran.stderr
    for target, right in ((["-l", "app=cc-half"], "ask for list on pods"),
                          (["deploy/cc-half"], "ask for get on deployments.apps")):
        refused = wand("stack", *target, *user)
        assert refused.returncode == 6 and refused.stdout == "", refused.stderr
        assert len(refused.stderr.splitlines()) == 1 and right in refused.stderr, refused.stderr
    checked = wand("check", "pod/" + pod, *user, "-o", "json")
    rows = {r["check"]: r for r in __import__("json").loads(checked.stdout)["rows"]}
    fix = rows["SYS_PTRACE"]["fix"]
    assert fix.startswith("kubectl patch -n %s deployment/cc-half " % NS) and "replicaset" not in fix, fix
