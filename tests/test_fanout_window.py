"""One window for every pod: the fan-out's Window (pure logic, threads) and the agent's side of a ``sync``
profile or trace over the real wire (the loader kubectl exec runs, against real 3.14 targets): armed, it waits
for the go, and the window it reports starts at the go."""
import json
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from kubectl_wand.agent import protocol
from kubectl_wand.commands import fanout
from kubectl_wand.commands.fanout import Window, spread_note
from kubectl_wand.transport.bundle import LOADER, agent_header, boot_line

from procs import wait_for


def arm_in_threads(window, names, out=None):
    """Each name: a thread that has started and calls armed(); (threads by name, the names released so far)."""
    out = [] if out is None else out

    def run(name):
        window.armed()
        out.append(name)
    threads = {n: threading.Thread(target=run, args=(n,), daemon=True) for n in names}
    for t in threads.values():
        t.start()
    return threads, out


def test_no_pod_is_released_before_every_running_pod_is_armed():
    window = Window(calls=3, limit=3)
    for _ in range(3):
        window.started()
    threads, released = arm_in_threads(window, ["a", "b"])
    assert wait_for(lambda: window.waiting == 2, timeout=10, interval=0.01)  # both wait in armed()
    assert released == [] and window.generation == 0  # the third is not armed yet: nobody's window is open
    threads_c, _ = arm_in_threads(window, ["c"], released)
    for t in list(threads.values()) + list(threads_c.values()):
        t.join(10)
    assert sorted(released) == ["a", "b", "c"] and window.generation == 1  # one opening for all three


def test_a_pod_that_fails_before_arming_does_not_hold_the_others():
    window = Window(calls=2, limit=2)
    window.started()
    window.started()
    threads, released = arm_in_threads(window, ["a"])
    assert wait_for(lambda: window.waiting == 1, timeout=10, interval=0.01)
    assert released == []
    window.finished(released=False)  # the other pod's call ended with an error, unarmed
    threads["a"].join(10)
    assert released == ["a"]


def test_more_pods_than_can_run_at_once_get_a_window_per_wave():
    window = Window(calls=3, limit=2)
    window.started()
    window.started()  # the third waits for a free slot
    threads, released = arm_in_threads(window, ["a", "b"])
    for t in threads.values():
        t.join(10)
    assert sorted(released) == ["a", "b"] and window.generation == 1  # no slot for the third: open now
    window.finished(released=True)
    window.started()
    threads, released = arm_in_threads(window, ["c"])
    threads["c"].join(10)
    assert released == ["c"] and window.generation == 2


def test_ctrl_c_opens_the_window_instead_of_waiting_for_stragglers():
    stop = threading.Event()
    window = Window(calls=2, limit=2, stop=stop)
    window.started()
    window.started()
    threads, released = arm_in_threads(window, ["a"])
    assert wait_for(lambda: window.waiting == 1, timeout=10, interval=0.01)
    stop.set()
    threads["a"].join(10)
    assert released == ["a"]


def test_every_pod_is_called_at_once_where_the_machine_holds_them(monkeypatch):
    monkeypatch.setattr(fanout, "memory_available", lambda: 64 << 30)
    monkeypatch.setattr(fanout, "cores", lambda: 16)
    assert fanout.parallel(300) == 300  # memory and (raised) open files allow 300 kubectl execs
    assert fanout.parallel(1) == 1
    monkeypatch.setattr(fanout, "memory_available", lambda: 1 << 30)  # a small machine: bounded by its memory
    assert fanout.parallel(300) == (1 << 30) // fanout.MEMORY_SHARE // fanout.CALL_MEMORY
    monkeypatch.setattr(fanout, "memory_available", lambda: 1 << 20)
    assert fanout.parallel(300) == 8  # never fewer than 8 at once


def test_calls_at_once_are_bounded_by_the_cores_that_run_them(monkeypatch):
    """300 pods at once on 2 cores (all that memory allowed) left pods whose agent never greeted in time."""
    monkeypatch.setattr(fanout, "memory_available", lambda: 64 << 30)
    monkeypatch.setattr(fanout, "cores", lambda: 2)
    assert fanout.parallel(300) == 2 * fanout.CALLS_PER_CORE
    assert fanout.parallel(40) == 40  # a 40-replica window still opens in one wave on 2 cores
    monkeypatch.setattr(fanout, "cores", lambda: 1)
    assert fanout.parallel(300) == fanout.CALLS_PER_CORE


def test_the_spread_is_computed_from_each_sources_window():
    assert spread_note([{"start": 10.0, "end": 13.0}, {"start": 10.25, "end": 13.5}, None]) == (
        "; windows aligned within 0.25s (start) and 0.50s (end)")
    assert spread_note([{"start": 10.0, "end": 13.0}]) == ""


class Agent:
    """The agent as kubectl exec runs it in a pod, fed by this test line by line."""

    def __init__(self, request, cwd):
        self.proc = subprocess.Popen([sys.executable, "-I", "-c", LOADER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd)
        self.proc.stdin.write(boot_line() + agent_header(request["op"]) + protocol.encode(protocol.request(**request)))
        self.proc.stdin.flush()
        assert protocol.check_hello(self.line())

    def line(self):
        from procs import read_line
        line = read_line(self.proc.stdout, 60)
        if not line:
            self.close()
            raise AssertionError("the agent ended without a line: %s" % self.proc.stderr.read().decode())
        return json.loads(line)

    def next_event(self):
        msg = self.line()
        assert protocol.EVENT in msg, json.dumps(msg)
        return msg[protocol.EVENT]

    def send(self, message):
        self.proc.stdin.write(protocol.encode(message))
        self.proc.stdin.flush()

    def result(self):
        while True:
            msg = self.line()
            if protocol.RESULT in msg:
                self.proc.wait(30)
                return protocol.check_result(msg[protocol.RESULT])

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


@pytest.mark.py314
def test_sync_profile_samples_every_process_from_the_go_on(spawn, tmp_path):
    apps = [spawn("busy.py"), spawn("busy.py")]
    agent = Agent({"op": "profile", "rate": 50, "duration": 1, "sync": True}, tmp_path)
    try:
        armed = agent.next_event()
        assert "armed" in armed and armed["armed"]["processes"] >= 2  # every sampler ready, none sampling yet
        go = time.time()
        agent.send({protocol.GO: True})
        result = agent.result()
    finally:
        agent.close()
    ours = [p for p in result["processes"] if p["pid"] in {a.pid for a in apps}]
    assert len(ours) == 2
    windows = [p["profile"]["window"] for p in ours]
    assert all(w["start"] >= go - 0.05 for w in windows), (go, windows)  # sampling began at the go, not before
    assert max(w["start"] for w in windows) - min(w["start"] for w in windows) < 0.5
    assert all(p["profile"]["samples"] > 0 for p in ours)


@pytest.mark.py314
def test_sync_trace_sees_no_hit_before_the_go_and_every_hit_after(spawn, tmp_path):
    import dap
    from test_trace_local import APP
    app = spawn("trace_app.py")
    line = dap.marker_line(APP, "# trace:handler")
    agent = Agent({"op": "trace", "pid": app.pid, "location": "trace_app.py:%d" % line, "exprs": ["user['id']"],
                   "sync": True, "timeout": 15.0, "duration": 30}, tmp_path)
    url = "http://127.0.0.1:%s/" % app.info["port"]
    try:
        assert "installed" in agent.next_event()
        assert "armed" in agent.next_event()
        urllib.request.urlopen(url, timeout=20).read()  # request 1: the probe is in, its events are not on
        go = time.time()
        agent.send({protocol.GO: True})
        opened = agent.next_event()["opened"]["time"]  # the probe's events are on
        urllib.request.urlopen(url, timeout=20).read()  # request 2: after the go
        hit = agent.next_event()
        agent.send({protocol.STOP: True})
        result = agent.result()
    finally:
        agent.close()
    assert hit["hit"]["values"][0]["repr"] == "2"  # the first hit is request 2's: request 1 was before the window
    assert result["hits"] == 1 and result["removed"]
    assert go - 0.05 <= result["window"]["start"] == round(opened, 3) <= result["window"]["end"]


def pod(name, running=True, deleting=False):
    meta = {"name": name, "namespace": "ns", "uid": name}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    state = {"running": {}} if running else {"waiting": {"reason": "CrashLoopBackOff"}}
    return {"metadata": meta, "spec": {"containers": [{"name": "app"}]},
            "status": {"phase": "Running", "containerStatuses": [{"name": "app", "state": state}]}}


def test_pods_left_out_are_named_not_skipped_silently(monkeypatch):
    import io
    from kubectl_wand.kube import api
    from kubectl_wand.targets import Target
    from kubectl_wand.transport import pods as pods_mod
    listed = [pod("web-1"), pod("web-2", deleting=True), pod("web-3", running=False)]
    monkeypatch.setattr(api, "get", lambda flags, path, params=None, what=None: (
        {"items": listed} if path.endswith("/pods") else {"spec": {"selector": {"matchLabels": {"app": "web"}}}}))

    class Flags:
        def kubectl(self):
            return "kubectl"

        def namespace(self):
            return "ns"
    note = io.StringIO()
    made = pods_mod.pod_transports(Flags(), Target("deployment", "web"), skipped_note=note)
    assert [t.name for t in made] == ["web-1"]
    assert note.getvalue() == ("note: skipped 2 pod(s) not running now: web-2 (Terminating), "
                               "web-3 (CrashLoopBackOff)\n")


def test_a_pod_deleted_before_its_exec_is_said_to_be_deleted(monkeypatch):
    from kubectl_wand import errors
    from kubectl_wand.errors import WandError
    from kubectl_wand.kube import api, config
    from kubectl_wand.transport.kubectl import KubectlTransport
    t = KubectlTransport(config.KubeFlags(), pod("web-1"), ["app"])

    def get(flags, path, query=None, what=""):
        raise WandError("pod web-1 not found in namespace ns", errors.NOT_FOUND)
    monkeypatch.setattr(api, "get", get)
    error = t.exec_error(1, 'Error from server (NotFound): pods "web-1" not found')
    assert error.code == errors.NOT_FOUND and error.message == "pod/web-1 went away: it was deleted"


@pytest.mark.py314
def test_sync_mem_window_traces_nothing_before_the_go(spawn, tmp_path):
    """A sync mem window: armed once its first census is taken, tracemalloc still off in the target until the
    go; its window starts at the go and still names the leaking line first."""
    import dap
    from kubectl_wand.agent.main import handle
    from test_mem_local import APP, leak_line, tracing
    app = spawn("leaker.py")
    agent = Agent({"op": "mem", "pid": app.pid, "duration": 2, "sync": True, "timeout": 15.0, "top": 5}, tmp_path)
    try:
        started = agent.next_event()
        assert started["started"]["armed"] is True and started["started"]["duty"] > 0, started
        assert "armed" in agent.next_event()
        on, threads = tracing(app.pid)  # read in the target itself: the window waits, nothing traced yet
        assert on is False and "kubectl-wand-mem" in threads
        go = time.time()
        agent.send({protocol.GO: True})
        events = []
        result = None
        while result is None:
            msg = agent.line()
            if protocol.RESULT in msg:
                result = protocol.check_result(msg[protocol.RESULT])
            else:
                events.append(msg[protocol.EVENT])
        agent.proc.wait(30)
    finally:
        agent.close()
    opened = [e["opened"]["time"] for e in events if "opened" in e]
    assert len(opened) == 1 and opened[0] >= go - 0.05, (go, events)
    assert result["status"] == "ok" and result["window"]["start"] == opened[0] <= result["window"]["end"], result
    assert result["sampling"]["slices"] >= 1 and not result["tracing_after"]
    top = result["sites"][0]["stack"][0]
    assert top["file"].endswith("leaker.py") and top["line"] == leak_line() == dap.marker_line(APP, "# LEAK_LINE")
    assert handle({"op": "exec", "pid": app.pid, "timeout": 10, "code": "1"})["status"] == "ok"
