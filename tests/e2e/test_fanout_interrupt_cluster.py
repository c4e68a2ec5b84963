"""Ctrl-C and SIGKILL of `exec-py --all-pods` while the user's code runs in every pod, on the real cluster (a
3-replica Deployment, fi-app): the CLI ends at once, each pod named with a line; the code is stopped at its next
line, and nothing of ours is left, here (no kubectl) or in any pod (no agent process, no wand-* directory).

Seen before the fix (40 replicas, `time.sleep(30)`): Ctrl-C at 4 s ended the CLI at 34 s, when every pod's
code had ended, with nothing printed; after SIGKILL every pod kept its agent and its /tmp/wand-* directory
until the code ended (up to --timeout)."""
import os
import signal
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))

from procs import REPO, default_signals  # noqa: E402

pytestmark = pytest.mark.cluster

REPLICAS = 3
APP = '''import time

print("READY", flush=True)
while True:
    time.sleep(0.1)
'''
# The user's code: says it runs (a file, removed however it ends), then runs until told to stop (another file),
# Python code all along.
CODE = ("import os, time\nopen('/tmp/fi-running', 'w').close()\ntry:\n"
        "    while not os.path.exists('/tmp/fi-stop'):\n        time.sleep(0.05)\n"
        "finally:\n    os.unlink('/tmp/fi-running')")
# What is ours in a pod: an agent (`python3 -S -c ...` with the CLI's stdin) and wand-* directories.
LEFT = ("import glob, os\n"
        "dirs = [p for d in ('/tmp', '/var/tmp', '/dev/shm') for p in glob.glob(d + '/wand-*')]\n"
        "me = (os.getpid(), os.getppid())\n"
        "agents = []\n"
        "for p in os.listdir('/proc'):\n"
        "    if p.isdigit() and int(p) not in me and p != '1':\n"
        "        try:\n"
        "            cmd = open('/proc/%s/cmdline' % p, 'rb').read()\n"
        "        except OSError:\n"
        "            continue\n"
        "        if b'sys.stdin' in cmd:\n"
        "            agents.append(p)\n"
        "print(len(dirs), len(agents), os.path.exists('/tmp/fi-running'))")


@pytest.fixture(scope="module")
def pods(cluster, tmp_path_factory):
    path = tmp_path_factory.mktemp("fi") / "fi_app.py"
    path.write_text(APP)
    made = cluster.kubectl("create", "configmap", "fi-app", "--from-file=fi_app.py=%s" % path, "--dry-run=client",
                           "-o", "yaml", check=True)
    cluster.kubectl("apply", "-f", "-", input=made.stdout, check=True)
    try:
        cluster.deploy("fi-app", ["python3", "-u", "/code/fi_app.py"], replicas=REPLICAS,
                       container={"resources": {"requests": {"cpu": "5m", "memory": "16Mi"}},
                                  "volumeMounts": [{"name": "code", "mountPath": "/code"}]},
                       pod={"volumes": [{"name": "code", "configMap": {"name": "fi-app"}}]})
        yield cluster.pod_names("app=fi-app")
    finally:
        cluster.kubectl("delete", "deployment", "fi-app", "--wait=false", timeout=60)
        cluster.kubectl("delete", "configmap", "fi-app", "--wait=false", timeout=60)


def in_pod(cluster, pod, code):
    done = cluster.kubectl("exec", pod, "--", "python3", "-S", "-c", code, check=True, timeout=60)
    return done.stdout.split()


def until(what, timeout=60):
    deadline = time.monotonic() + timeout
    while not what():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)  # polled: the pods offer no event for "this file appeared"
    return True


def descendants(root):
    rows = subprocess.run(["ps", "-eo", "pid=,ppid="], capture_output=True, text=True, check=True).stdout.split("\n")
    children = {}
    for row in rows:
        if row.strip():
            pid, ppid = map(int, row.split())
            children.setdefault(ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        for pid in children.get(todo.pop(), []):
            found.append(pid)
            todo.append(pid)
    return found


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGKILL])
def test_exec_all_pods_stopped_while_the_code_runs_leaves_nothing(pods, cluster, signum):
    cli = subprocess.Popen([sys.executable, "-m", "kubectl_wand", "exec-py", "deploy/fi-app", "--all-pods",
                            "--timeout", "900s", "--", CODE], cwd=str(REPO), env=dict(cluster.env, PYTHONPATH=str(REPO)),
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           preexec_fn=default_signals)
    try:
        assert until(lambda: all(in_pod(cluster, p, "import os; print(os.path.exists('/tmp/fi-running'))")
                                 == ["True"] for p in pods)), "the code did not start in every pod"
        ours = descendants(cli.pid)
        cli.send_signal(signum)
        try:
            out, err = cli.communicate(timeout=90)  # the code runs for 900 s: the old CLI waited for it
        except subprocess.TimeoutExpired:
            pytest.fail("exec-py --all-pods did not end on signal %d while the code ran" % signum)
        assert until(lambda: not any(alive(p) for p in ours), 15), "kubectl outlived the CLI"
        if signum == signal.SIGINT:
            assert cli.returncode == 130, err
            lines = err.splitlines()
            assert len(lines) == REPLICAS, err  # one line a pod, in the pods' order
            assert [line.split("]")[0] for line in lines] == ["[pod/%s/app" % p for p in pods], err
            assert all("interrupted while the code was still running in process 1" in line for line in lines), err
            assert out == ""
        # in every pod: no agent, no private directory, and the user's code stopped at its next line (the closed
        # connection: passengers/execute.py, hung_up), not running on until its --timeout
        assert until(lambda: all(in_pod(cluster, p, LEFT) == ["0", "0", "False"] for p in pods), 30), \
            [in_pod(cluster, p, LEFT) for p in pods]
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait(10)
        for p in pods:  # end a code that still runs (it ends at its --timeout otherwise), and wait until it has
            cluster.kubectl("exec", p, "--", "python3", "-S", "-c", "open('/tmp/fi-stop', 'w').close()", timeout=60)
        assert until(lambda: all(in_pod(cluster, p, "import os; print(os.path.exists('/tmp/fi-running'))")
                                 == ["False"] for p in pods))
        for p in pods:
            cluster.kubectl("exec", p, "--", "rm", "-f", "/tmp/fi-stop", timeout=60)


def test_attach_all_pods_serves_the_others_when_one_pod_is_blocked(pods, cluster):
    """A pod whose main thread never reaches a safe point (blocked in sleep) among the replicas: attach --all-pods
    names it in one line and forwards every other pod; Ctrl-C ends it with that pod's exit code (5). Before, that
    pod ended the whole attach: nothing forwarded, no pod named."""
    sys.path.insert(0, os.path.dirname(__file__))
    from test_kube_verbs import Attached
    blocked = ("apiVersion: v1\nkind: Pod\nmetadata: {name: fi-blocked, namespace: %s, labels: {app: fi-blocked}}\n"
               "spec:\n  terminationGracePeriodSeconds: 1\n  automountServiceAccountToken: false\n"
               "  containers: [{name: app, image: %s, command: [python3, -c, 'import time; time.sleep(1e9)'],"
               " resources: {requests: {cpu: 5m, memory: 16Mi}}}]\n" % (cluster.namespace, cluster.app_image()))
    cluster.kubectl("apply", "-f", "-", input=blocked, check=True)
    try:
        cluster.kubectl("wait", "--for=condition=Ready", "pod/fi-blocked", "--timeout=120s", check=True, timeout=150)
        attached = Attached(dict(cluster.env, PYTHONPATH=str(REPO)), "-l", "app in (fi-app, fi-blocked)", "--all-pods",
                            "--timeout", "3s", "--local-port", "0")
        try:
            attached.read_until(r"Forwarding %d debug servers" % REPLICAS, timeout=180)
        finally:
            code, out, err = attached.stop()
        assert code == 5, (err, out[-600:])
        assert "error: pod/fi-blocked: attach did not complete (see above)" in err.splitlines(), err
        assert all("inside pod/%s (pid 1)" % p in out for p in pods), out  # each forwarded, then stopped
        assert "inside pod/fi-blocked" not in out
    finally:
        cluster.kubectl("delete", "pod", "fi-blocked", "--wait=false", timeout=60)
