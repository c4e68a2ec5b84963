"""`kubectl wand pdb` on the real cluster, through a real pseudo-terminal and `kubectl exec -it`: a breakpoint
set at the prompt is hit by a real HTTP request in a worker thread, Ctrl-C interrupts a busy loop into pdb,
and quitting leaves the app serving with nothing of pdb in it (plain and --ephemeral). Workloads pdb-*,
deleted after."""
from __future__ import annotations

import json
import os
import sys
import threading
import time
import urllib.request

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tests"))
from ptyterm import Term  # noqa: E402
from test_kube_verbs import HttpForward  # noqa: E402
from test_pdb_local import LEFT, PROMPT  # noqa: E402

pytestmark = pytest.mark.cluster
APPS = os.path.join(REPO, "tests", "apps")
LINE = [n for n, text in enumerate(open(os.path.join(APPS, "threaded_http.py")), 1) if "wand-pdb-breakpoint" in text][0]


@pytest.fixture(scope="module")
def workloads(cluster):
    files = ["--from-file=%s=%s" % (name, os.path.join(APPS, name)) for name in ("threaded_http.py", "busy.py")]
    made = cluster.kubectl("create", "configmap", "pdb-apps", *files, "--dry-run=client", "-o", "yaml", check=True)
    cluster.kubectl("apply", "-f", "-", input=made.stdout, check=True)
    code = {"volumeMounts": [{"name": "code", "mountPath": "/code"}]}
    volumes = {"volumes": [{"name": "code", "configMap": {"name": "pdb-apps"}}]}
    cluster.deploy("pdb-http", ["python3", "/code/threaded_http.py", "8000"], container=code, pod=volumes, wait=False)
    cluster.deploy("pdb-busy", ["python3", "/code/busy.py"], container=code, pod=volumes, wait=False)
    for name in ("pdb-http", "pdb-busy"):
        cluster.kubectl("rollout", "status", "deploy/" + name, "--timeout=150s", check=True, timeout=180)
        cluster.settle("app=" + name, 1)
    yield cluster
    cluster.kubectl("delete", "deployment", "pdb-http", "pdb-busy", "--wait=false", timeout=60)
    cluster.kubectl("delete", "configmap", "pdb-apps", timeout=60)


def term(cluster, *args):
    return Term([sys.executable, "-m", "kubectl_wand"] + list(args), env=dict(cluster.env, PYTHONPATH=REPO), cwd=REPO)


def assert_clean(cluster, wand, pod):
    done = wand("exec-py", "pod/" + pod, "--", LEFT)
    assert done.returncode == 0, done.stderr
    left = json.loads(done.stdout.strip().splitlines()[-1])
    assert left["thread_hook"] == "None", left
    assert left["watcher"] in ([], ["None"]) and left["main"] in ([], ["None"]), left
    assert left["tools"] == [None] * 6 and left["traced_frames"] == [] and left["breakpoints"] == 0, left
    assert left["attached"] in ("None", "False") and not [t for t in left["threads"] if "wand" in t], left
    # read by kubectl exec, not exec-py: an injection has its own wand-* directory while it runs
    tmp = cluster.kubectl("exec", pod, "--", "python3", "-c",
                          "import os; print([n for n in os.listdir('/tmp') if n.startswith('wand-')])")
    assert tmp.returncode == 0 and tmp.stdout.strip() == "[]", tmp.stdout + tmp.stderr


@pytest.mark.parametrize("how", [[], ["--ephemeral"]], ids=["exec", "ephemeral"])
def test_breakpoint_hit_by_a_request_then_quit(workloads, wand, how):
    pod = workloads.pod_names("app=pdb-http")[0]
    session = term(workloads, "pdb", "deploy/pdb-http", *how)
    http = HttpForward(workloads, pod)
    try:
        session.expect(PROMPT, 120)
        session.line("break /code/threaded_http.py:%d" % LINE)
        session.expect(r"Breakpoint 1 at /code/threaded_http.py:%d" % LINE)
        session.expect(PROMPT)
        session.line("c")
        box = {}
        url = "http://127.0.0.1:%d/" % http.port
        request = threading.Thread(target=lambda: box.setdefault(
            "body", urllib.request.urlopen(url, timeout=60).read().decode()))
        request.start()
        session.expect(r"threaded_http.py\(%d\)do_GET\(\)" % LINE)
        session.expect(PROMPT)
        session.line("p greeting")
        session.expect(r"'hello #\d+ from Thread-\d+")
        session.expect(PROMPT)
        session.line("clear 1")
        session.expect(PROMPT)
        session.line("c")
        request.join(60)
        assert box["body"].startswith("hello #")
        session.interrupt()
        session.expect(PROMPT)
        session.line("q")
        assert session.wait(60) == 0, session.seen
        assert urllib.request.urlopen(url, timeout=30).read().decode().startswith("hello #")  # still serving
    finally:
        session.close()
        http.close()
    assert_clean(workloads, wand, pod)


def test_ctrl_c_interrupts_a_busy_loop(workloads, wand):
    pod = workloads.pod_names("app=pdb-busy")[0]
    session = term(workloads, "pdb", "pod/" + pod)
    try:
        session.expect(PROMPT, 120)
        session.line("c")
        session.expect(r"\bc\r?\n")
        session.interrupt()
        session.expect(r"busy.py\(\d+\)<module>\(\)")
        session.expect(PROMPT)
        session.line("p counter > 0")
        session.expect("True")
        session.expect(PROMPT)
        session.send("\x04")
        assert session.wait(60) == 0, session.seen
    finally:
        session.close()
    done = wand("exec-py", "pod/" + pod, "--", "import sys; sys.modules['__main__'].counter > 0")
    assert done.returncode == 0 and done.stdout.strip() == "True", done.stderr


@pytest.mark.parametrize("how", [[], ["--ephemeral"], ["POD"]], ids=["exec", "ephemeral", "pod-early"])
def test_exec_py_it_keeps_a_namespace_then_leaves_nothing(workloads, wand, how):
    pod = workloads.pod_names("app=pdb-http")[0]
    # pod/NAME alone: the session is the held early call and its launcher starts with it (transport/early.py)
    target = ["pod/" + pod] if how == ["POD"] else ["deploy/pdb-http"] + how
    session = term(workloads, "exec-py", "-it", *target)
    try:
        session.expect(r">>> ", 120)
        session.line("wand_session_x = 41")
        session.expect(r">>> ")
        session.line("wand_session_x + 1")
        session.expect(r"\n42\r?\n")
        session.expect(r">>> ")
        session.line("while True: pass")
        session.expect(r"\.\.\. ")
        session.line("")
        session.expect(r"\n")
        session.interrupt()  # right after Enter: the client never loses the session (test_exec_py_it_local)
        session.expect("KeyboardInterrupt")
        session.expect(r">>> ")
        session.line("wand_session_x * 2")
        session.expect(r"\n82\r?\n")
        session.expect(r">>> ")
        session.line("exit()")
        assert session.wait(60) == 0, session.seen
    finally:
        session.close()
    code = ("import threading, gc; (sorted(t.name for t in threading.enumerate() if 'wand' in t.name), "
            "sum(1 for o in gc.get_objects() if type(o) is dict and o.get('wand_session_x') == 41))")
    done = wand("exec-py", "pod/" + pod, "--", code)
    assert done.returncode == 0 and done.stdout.strip() == "([], 0)", done.stdout + done.stderr


def launchers_in(cluster, pod, needle="kubectl-wand-pdb-"):
    """Command lines in the pod's container that are a session's launcher or client (our socket names)."""
    done = cluster.kubectl("exec", pod, "--", "python3", "-c", (
        "import os\nfor p in os.listdir('/proc'):\n  try: c = open('/proc/%s/cmdline' % p, 'rb').read()\n"
        "  except OSError: continue\n  if b'" + needle + "' in c and b'listdir' not in c: print(p)"))
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_a_refused_session_on_a_pod_gives_the_terminal_back(workloads, wand):
    """pod/NAME alone: the launcher started with the early call. A second pdb is refused (one line, exit 5):
    its launcher is ended and the terminal is ours again (the refusal is readable, on a line of its own); the
    first session goes on, and quitting it leaves nothing."""
    pod = workloads.pod_names("app=pdb-busy")[0]
    first = term(workloads, "pdb", "pod/" + pod)
    try:
        first.expect(PROMPT, 120)
        first.line("c")  # the app runs on (its main thread takes the second injection), still attached
        first.expect(r"\bc\r?\n")
        second = term(workloads, "pdb", "pod/" + pod, "--timeout", "30")
        try:
            assert second.wait(120) == 5, second.seen
            assert "another pdb is already attached" in second.seen, second.seen
        finally:
            second.close()
        first.interrupt()
        first.expect(PROMPT)
        first.line("p counter > 0")
        first.expect("True")
        first.expect(PROMPT)
        first.line("q")
        assert first.wait(60) == 0, first.seen
    finally:
        first.close()
    # The second session's launcher: connected and ended, ended by the agent, or (started after the agent
    # had ended it all) gone once its own wait for the socket ends (launcher.WAIT): never for good.
    from kubectl_wand.transport.launcher import WAIT
    deadline = time.monotonic() + WAIT + 15
    while launchers_in(workloads, pod):
        assert time.monotonic() < deadline, "a launcher stays in the pod"
        time.sleep(1.0)


def test_a_session_that_does_not_start_ends_its_launcher_in_the_pod(workloads):
    """A `kubectl exec -it`'s process outlives its kubectl: a launcher that never connected went on polling for
    its socket for a minute after the CLI ended its kubectl. The agent of a session that does not start ends
    the session's launchers in the container (here: no such process)."""
    import subprocess
    from kubectl_wand.kube import api, config
    from kubectl_wand.transport.kubectl import KubectlTransport
    pod = workloads.pod_names("app=pdb-busy")[0]
    name = "kubectl-wand-pdb-" + os.urandom(16).hex()
    ns = workloads.namespace
    stray = subprocess.Popen(["kubectl", "-n", ns, "exec", pod, "--", "python3", "-c", "import time; time.sleep(120)",
                              name], env=workloads.env, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not launchers_in(workloads, pod, name):
            assert time.monotonic() < deadline and stray.poll() is None, "the stand-in launcher never started"
            time.sleep(0.5)
        stray.kill()  # its kubectl gone, as the CLI ends it: the process in the container stays
        stray.wait(10)
        assert launchers_in(workloads, pod, name)
        flags = config.KubeFlags({"kubeconfig": workloads.kubeconfig}, namespace=ns)
        transport = KubectlTransport(flags, api.get(flags, "/api/v1/namespaces/%s/pods/%s" % (ns, pod)), ["app"])
        result = transport.agent({"op": "pdb", "pid": 999999, "timeout": 5.0, "client": name}, timeout=60)
        assert result["status"] == "error" and result["kind"] == "not-found", result
        deadline = time.monotonic() + 30
        while launchers_in(workloads, pod, name):
            assert time.monotonic() < deadline, "the launcher is still in the pod"
            time.sleep(0.5)
    finally:
        if stray.poll() is None:
            stray.kill()
            stray.wait(10)
