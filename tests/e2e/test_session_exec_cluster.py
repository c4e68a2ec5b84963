"""A terminal session on a pod named alone runs in ONE `kubectl exec -it` (transport/sessionexec.py): the agent and
the client share it, through a real pseudo-terminal against the real cluster. The pod holds the agent (started by
kubectl exec) and its client (forked from it) and nothing else of ours; the window size reaches the client's
terminal and follows a resize; Ctrl-C before the first prompt gives the session up at once; the CLI killed in the
middle leaves nothing in the pod. Workloads sx-*, deleted after."""
from __future__ import annotations

import fcntl
import json
import os
import signal
import struct
import sys
import termios
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tests"))
from ptyterm import Term  # noqa: E402
from test_pdb_local import LEFT, PROMPT  # noqa: E402

pytestmark = pytest.mark.cluster

BUSY = "import time\nticks = 0\nwhile True:\n    ticks += 1\n    time.sleep(0.001)\n"
SLEEPING = "import time\ntime.sleep(10 ** 6)\n"

# Run in the pod by kubectl exec: each process of a session (its command line names a kubectl-wand socket):
# pid, ppid, the size of the terminal on its stdin (or of the first terminal it holds).
SESSIONS = r"""
import fcntl, json, os, struct, termios
found = []
for pid in os.listdir('/proc'):
    if not pid.isdigit() or int(pid) == os.getpid():
        continue
    try:
        argv = open('/proc/%s/cmdline' % pid, 'rb').read().split(b'\0')
        ppid = int(open('/proc/%s/stat' % pid).read().rpartition(')')[2].split()[1])
    except (OSError, ValueError):
        continue
    if not any(a.startswith((b'kubectl-wand-pdb-', b'kubectl-wand-repl-')) for a in argv):
        continue
    size = None
    for fd in sorted(os.listdir('/proc/%s/fd' % pid), key=int):
        try:
            if os.readlink('/proc/%s/fd/%s' % (pid, fd)).startswith('/dev/pts/'):
                f = os.open('/proc/%s/fd/%s' % (pid, fd), os.O_RDONLY | os.O_NOCTTY)
                size = list(struct.unpack('HHHH', fcntl.ioctl(f, termios.TIOCGWINSZ, bytes(8)))[:2])
                os.close(f)
                break
        except OSError:
            continue
    # the lifeline (`-c LIFELINE NAME`) ends with the session's name; the agent and its client carry more after it
    lifeline = argv[-2].startswith((b'kubectl-wand-pdb-', b'kubectl-wand-repl-'))
    found.append({'pid': int(pid), 'ppid': ppid, 'size': size, 'lifeline': lifeline})
print(json.dumps(found))
"""


@pytest.fixture(scope="module")
def pods(cluster):
    # a sleeping pod for each session that gives up: the bootstrap it leaves queued stays until the main thread
    # wakes (never, here), and the next injection into that process adopts it
    names = {"busy": BUSY, "sleep-pdb": SLEEPING, "sleep-exec-py-it": SLEEPING}
    for name, code in names.items():
        cluster.deploy("sx-" + name, ["python3", "-c", code], wait=False)
    for name in names:
        cluster.kubectl("rollout", "status", "deploy/sx-" + name, "--timeout=150s", check=True, timeout=180)
        cluster.settle("app=sx-" + name, 1)
    yield {name: cluster.pod_names("app=sx-" + name)[0] for name in names}
    cluster.kubectl("delete", "deployment", *["sx-" + name for name in names], "--wait=false", timeout=60)


def term(cluster, *args, rows=40, cols=200):
    return Term([sys.executable, "-m", "kubectl_wand"] + list(args), env=dict(cluster.env, PYTHONPATH=REPO), cwd=REPO,
                rows=rows, cols=cols)


def sessions(cluster, pod):
    done = cluster.kubectl("exec", pod, "--", "python3", "-c", SESSIONS)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def until(what, seconds=60):
    deadline = time.monotonic() + seconds
    while True:
        value = what()
        if value:
            return value
        assert time.monotonic() < deadline, "not within %gs" % seconds
        time.sleep(0.2)


def assert_clean(cluster, wand, pod):
    until(lambda: sessions(cluster, pod) == [])
    done = wand("exec-py", "pod/" + pod, "--", LEFT)
    assert done.returncode == 0, done.stderr
    left = json.loads(done.stdout.strip().splitlines()[-1])
    assert left["thread_hook"] == "None" and left["tools"] == [None] * 6, left
    assert left["traced_frames"] == [] and left["breakpoints"] == 0, left
    assert left["attached"] in ("None", "False") and not [t for t in left["threads"] if "wand" in t], left


def resize(session, rows, cols):
    """The user's terminal resized: its size changes, its foreground group gets SIGWINCH."""
    fcntl.ioctl(session.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    os.killpg(session.proc.pid, signal.SIGWINCH)  # Term's child leads its own session and group


@pytest.mark.parametrize("verb,prompt,leave", [(["pdb"], PROMPT, "q"), (["exec-py", "-it"], r">>> ", "exit()")],
                         ids=["pdb", "exec-py-it"])
def test_one_exec_holds_the_agent_and_its_client_and_the_window_size(pods, cluster, wand, verb, prompt, leave):
    pod = pods["busy"]
    session = term(cluster, *verb, "pod/" + pod, rows=31, cols=97)
    try:
        session.expect(prompt, 120)
        found = sessions(cluster, pod)
        agent = [p for p in found if p["ppid"] == 0 and not p["lifeline"]]
        client = [p for p in found if p["ppid"] != 0]
        # one exec: the agent came by kubectl exec (ppid 0), the client is its child; no second exec's launcher
        # (the lifeline, started once the prompt showed, holds no terminal and runs no client)
        assert len(agent) == 1 and len(client) == 1 and client[0]["ppid"] == agent[0]["pid"], found
        assert len(found) - 2 == len([p for p in found if p["lifeline"] and p["ppid"] == 0]) <= 1, found
        assert client[0]["size"] == [31, 97], found
        resize(session, 44, 111)
        until(lambda: [p["size"] for p in sessions(cluster, pod) if p["ppid"] != 0] == [[44, 111]], 30)
        until(lambda: any(p["lifeline"] for p in sessions(cluster, pod)), 60)  # the CLI's end is watched
        session.line(leave)
        assert session.wait(60) == 0, session.seen
    finally:
        session.close()
    assert_clean(cluster, wand, pod)


@pytest.mark.parametrize("verb", [["pdb"], ["exec-py", "-it"]], ids=["pdb", "exec-py-it"])
def test_ctrl_c_before_the_first_prompt_gives_the_session_up(pods, cluster, verb):
    """The app's main thread sleeps: the injection waits for a safe point. Ctrl-C there (it reaches the client in
    the pod) leaves at once, exit 130, saying what stays (the queued bootstrap), instead of the command waiting
    out --timeout; nothing of the session stays in the pod."""
    pod = pods["sleep-" + "-".join(verb).replace("--", "-")]
    session = term(cluster, *verb, "pod/" + pod, "--timeout", "120")
    try:
        def pending():
            done = cluster.kubectl("exec", pod, "--", "python3", "-c",
                                   "import os; print([n for n in os.listdir('/tmp') if n.startswith('wand-')])")
            return done.returncode == 0 and done.stdout.strip() != "[]" and len(
                [p for p in sessions(cluster, pod) if not p["lifeline"]]) == 2
        until(pending, 90)
        session.interrupt()
        assert session.wait(60) == 130, session.seen
    finally:
        session.close()
    assert "interrupted while the injection into process 1 was pending" in session.seen, session.seen
    assert "Traceback" not in session.seen, session.seen
    until(lambda: sessions(cluster, pod) == [])


def test_the_cli_killed_mid_session_leaves_nothing_in_the_pod(pods, cluster, wand):
    """SIGKILL of the CLI while the app runs under pdb (`c`): its kubectl dies with it, the pod's terminal hangs
    up, the client ends, and the agent detaches the target: no process of the session, no trace function."""
    pod = pods["busy"]
    session = term(cluster, "pdb", "pod/" + pod)
    try:
        session.expect(PROMPT, 120)
        session.line("c")
        session.expect(r"\bc\r?\n")
        session.proc.kill()
        session.proc.wait(30)
    finally:
        session.close()
    assert_clean(cluster, wand, pod)


def test_sigterm_as_the_session_starts_ends_it_in_the_pod_at_once(pods, cluster, wand):
    """SIGTERM to the CLI while the session starts (the agent and its client are up, the lifeline maybe not
    yet): the CLI drops it (exit 143), and the pod's session ends in seconds through the lifeline, or a
    lifeline that ends at once, not when the pod gives up waiting for one (sessionpod.LIFE_WAIT, 15 s)."""
    pod = pods["busy"]
    session = term(cluster, "pdb", "pod/" + pod)
    try:
        until(lambda: len([p for p in sessions(cluster, pod) if not p["lifeline"]]) == 2, 90)
        session.proc.send_signal(signal.SIGTERM)
        assert session.wait(60) == 128 + signal.SIGTERM, session.seen
    finally:
        session.close()
    until(lambda: sessions(cluster, pod) == [], 8)
    assert_clean(cluster, wand, pod)


def test_the_cli_killed_as_the_prompt_shows_lets_the_app_go_on(pods, cluster, wand):
    """SIGKILL as pdb's first prompt shows (the app's main thread is stopped there, the lifeline maybe not
    started): the pod ends the session within its wait for a lifeline, and the app runs on."""
    from kubectl_wand.transport.sessionpod import LIFE_WAIT
    pod = pods["busy"]
    session = term(cluster, "pdb", "pod/" + pod)
    try:
        session.expect(PROMPT, 120)
        session.proc.kill()
        session.proc.wait(30)
    finally:
        session.close()
    until(lambda: sessions(cluster, pod) == [], LIFE_WAIT + 20)
    assert_clean(cluster, wand, pod)

    def ticks():
        done = wand("exec-py", "pod/" + pod, "--", "import sys; sys.modules['__main__'].ticks")
        assert done.returncode == 0, done.stderr
        return int(done.stdout.strip())
    before = ticks()
    until(lambda: ticks() > before, 30)  # its main loop runs again
