"""The trace engine against real CPython 3.14 processes: agent/tracing.py driving
agent/passengers/probe.py inside the app.

Every test checks the probe is really gone at the end, by asking the target itself (an exec-py injection):
``sys.monitoring.get_tool(i)`` is None for every id, and the probe's thread has exited.
"""
from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

import dap
from procs import APPS, REPO, read_line, wait_for
from leftovers import private_dirs

from kubectl_wand.agent.main import handle

pytestmark = pytest.mark.py314

APP = os.path.join(APPS, "trace_app.py")




def line_of(marker, path=APP):
    return dap.marker_line(path, "# trace:" + marker)


def inside(pid):
    """(tool names by id 0-5, thread names) read in the target itself."""
    result = handle({"op": "exec", "pid": pid, "timeout": 10, "code":
                     "import sys, threading\n"
                     "[sys.monitoring.get_tool(i) for i in range(6)], sorted(t.name for t in threading.enumerate())"})
    assert result["status"] == "ok", result
    return eval(result["value"])


def probe_gone(pid, keep=(None,) * 6):
    """No tool id but ``keep``'s, and the probe's thread has exited (it does right after its last message)."""
    def check():
        tools, threads = inside(pid)
        return tools == list(keep) and "kubectl-wand-trace" not in threads
    return wait_for(check, timeout=10, interval=0.2)


def get(app, path="/"):
    with urllib.request.urlopen("http://127.0.0.1:%s%s" % (app.info["port"], path), timeout=20) as reply:
        return reply.status, reply.read().decode()


class Traffic:
    """Requests flowing to the app from a thread, every 50 ms, until stopped."""

    def __init__(self, app, path="/"):
        self.app, self.path, self.ok, self.failed = app, path, 0, []
        self.halt = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.halt.is_set():
            try:
                status, _ = get(self.app, self.path)
                self.ok += status == 200
            except OSError as exc:
                self.failed.append(repr(exc))
            self.halt.wait(0.05)

    def stop(self):
        self.halt.set()
        self.thread.join(30)
        return self


class Trace:
    """The agent's trace op in a thread, as the CLI will call it: events in a queue, ``stop`` to end it."""

    def __init__(self, pid, **request):
        self.events, self.seen, self.stop_event, self.done = queue.Queue(), [], threading.Event(), {}
        request = dict(request, op="trace", pid=pid)
        self.thread = threading.Thread(target=self.run, args=(request,), daemon=True)
        self.thread.start()

    def run(self, request):
        try:
            self.done["result"] = handle(request, emit=self.events.put, stop=self.stop_event)
        except BaseException as exc:  # surfaced by result(): a crash must fail the test, not hang it
            self.done["result"] = {"status": "crashed", "error": repr(exc)}

    def next(self, kind, timeout=30.0):
        deadline = time.monotonic() + timeout
        while True:
            try:
                event = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError("no %r event in %gs; seen %r; result %r" % (
                    kind, timeout, self.seen, self.done.get("result")))
            self.seen.append(event)
            if kind in event:
                return event[kind]

    def drain(self):
        while True:
            try:
                self.seen.append(self.events.get_nowait())
            except queue.Empty:
                return [e for e in self.seen]

    def result(self, timeout=40.0):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "trace still running after %gs" % timeout
        self.drain()
        return self.done["result"]

    def stop(self):
        self.stop_event.set()
        return self.result()

    def hits(self):
        return [e["hit"] for e in self.drain() if "hit" in e]


def values(hit):
    return {v["expr"]: v.get("repr", v.get("error")) for v in hit["values"]}


# -- hits, and each way of ending --------------------------------------------------------------------------

def test_trace_prints_values_while_the_app_keeps_serving_then_remove(spawn, py314):
    app = spawn("trace_app.py")
    get(app)  # before: request 1
    trace = Trace(app.pid, location="trace_app.py:%d" % line_of("handler"), exprs=['user["name"]', "HITS", "1/0"])
    installed = trace.next("installed")
    assert installed["file"] == "/opt/wand-tests/trace_app.py" or installed["file"] == APP
    assert installed["functions"] == ["Handler.do_GET"] and installed["tool_id"] in (1, 2, 3, 4, 5)
    traffic = Traffic(app)
    hits = [trace.next("hit") for _ in range(4)]
    result = trace.stop()
    traffic.stop()
    assert traffic.ok >= 4 and traffic.failed == []
    for hit in hits:
        got = values(hit)
        assert got['user["name"]'] == "'user%s'" % got["HITS"]  # the local and the global of the same request
        assert got["1/0"] == "ZeroDivisionError"
        assert hit["pid"] == app.pid and hit["line"] == line_of("handler") and hit["function"] == "Handler.do_GET"
        assert hit["thread"].startswith("Thread-") and "process_request_thread" in hit["thread"]
    errors = [e["error"] for e in trace.seen if "error" in e]
    assert len(errors) == 1 and errors[0]["message"] == "ZeroDivisionError: division by zero"  # once, not per hit
    assert result["status"] == "ok" and result["reason"] == "stopped" and result["probe_reason"] == "remove"
    assert result["removed"] is True and result["tool_ids"] == [installed["tool_id"]]
    assert result["hits"] == len(trace.hits()) >= 4 and result["dropped"] == 0
    assert probe_gone(app.pid)
    assert get(app)[0] == 200  # and after
    assert app.stderr_so_far() == ""  # nothing in the app's logs, not even the failing expression
    assert private_dirs(py314, app.pid) == []


def test_count_removes_the_probe_after_n_hits(spawn):
    app = spawn("trace_app.py")
    trace = Trace(app.pid, file="trace_lib.py", line=line_of("lib", os.path.join(APPS, "trace_lib.py")),
                  exprs=["text"], count=3)
    trace.next("installed")
    traffic = Traffic(app)
    result = trace.result()
    traffic.stop()
    assert result["reason"] == "count" and result["removed"] is True, result
    assert result["hits"] == 3 and len(trace.hits()) == 3
    assert values(trace.hits()[0])["text"] == "NameError"  # the line has not run yet when its event fires
    assert probe_gone(app.pid)


def test_duration_removes_the_probe(spawn):
    app = spawn("trace_app.py")
    started = time.monotonic()
    trace = Trace(app.pid, location="trace_app.py:%d" % line_of("handler"), duration=2)
    trace.next("installed")
    result = trace.result()
    assert time.monotonic() - started >= 2
    assert result["reason"] == "duration" and result["removed"] is True and result["hits"] == 0
    assert probe_gone(app.pid)


def controller(pid, **request):
    """The trace op in its own process (tests/trace_controller.py); returns it once the probe is installed."""
    request = dict(request, op="trace", pid=pid)
    proc = subprocess.Popen([sys.executable, os.path.join(REPO, "tests", "trace_controller.py"), json.dumps(request)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ, PYTHONPATH=REPO))
    first = json.loads(read_line(proc.stdout, 30) or "{}")
    assert "installed" in first, (first, proc.stderr.read1(4000) if proc.poll() is not None else "")
    return proc


def test_controller_killed_mid_trace_removes_the_probe(spawn, py314):
    app = spawn("trace_app.py")
    proc = controller(app.pid, location="trace_app.py:%d" % line_of("handler"), exprs=["HITS"])
    traffic = Traffic(app)
    try:
        assert "hit" in json.loads(read_line(proc.stdout, 30) or "{}")
        proc.send_signal(signal.SIGKILL)  # no remove message, no clean close: the kernel closes the socket
        proc.wait(10)
        assert probe_gone(app.pid)
        assert traffic.ok > 0 and traffic.failed == []
    finally:
        traffic.stop()
        proc.kill()
    assert get(app)[0] == 200
    assert private_dirs(py314, app.pid) == []  # the socket's directory went away once the probe connected


def test_frozen_controller_loses_the_heartbeat_and_the_probe_removes_itself(spawn):
    app = spawn("trace_app.py")
    proc = controller(app.pid, location="trace_app.py:%d" % line_of("handler"))
    try:
        proc.send_signal(signal.SIGSTOP)  # alive, socket open, but no more pings
        stopped = time.monotonic()
        assert inside(app.pid)[0] != [None] * 6  # still installed right after the freeze
        assert wait_for(lambda: inside(app.pid)[0] == [None] * 6, timeout=20)
        assert time.monotonic() - stopped >= 4  # it was the heartbeat (5 s), not anything sooner
        assert probe_gone(app.pid)  # while the controller is still there, frozen, its socket open
    finally:
        proc.kill()
        proc.wait(10)


def test_closing_stdin_of_the_controller_stops_and_removes(spawn):
    app = spawn("trace_app.py")
    proc = controller(app.pid, location="trace_app.py:%d" % line_of("handler"))
    proc.stdin.close()  # what the CLI going away looks like to the agent
    lines = proc.stdout.read().decode().splitlines()
    proc.wait(20)
    result = json.loads(lines[-1])["result"]
    assert result["reason"] == "stopped" and result["removed"] is True, result
    assert probe_gone(app.pid)


def test_the_target_exiting_mid_trace_ends_it(spawn):
    app = spawn("trace_app.py")
    trace = Trace(app.pid, location="trace_app.py:%d" % line_of("handler"))
    trace.next("installed")
    app.stop()
    result = trace.result()
    assert result["status"] == "ok" and result["reason"] == "target exited" and result["removed"] is True, result


def test_two_probes_at_once_take_two_tool_ids_and_both_go(spawn):
    app = spawn("trace_app.py")
    first = Trace(app.pid, location="trace_app.py:%d" % line_of("handler"), exprs=["HITS"])
    second = Trace(app.pid, location="trace_lib.py:%d" % line_of("lib", os.path.join(APPS, "trace_lib.py")),
                   exprs=["user"])
    ids = {first.next("installed")["tool_id"], second.next("installed")["tool_id"]}
    assert len(ids) == 2 and 0 not in ids
    get(app)
    assert values(first.next("hit"))["HITS"] == "1"
    assert values(second.next("hit"))["user"] == "{'id': 1, 'name': 'user1'}"
    assert first.stop()["tool_ids"] != second.stop()["tool_ids"]
    assert probe_gone(app.pid)


# -- snapshot, condition, rate limit --------------------------------------------------------------------------

def test_snapshot_returns_the_locals_and_stack_of_the_first_hit(spawn):
    app = spawn("trace_app.py")
    get(app)
    trace = Trace(app.pid, location="trace_app.py:%d" % line_of("handler"), snapshot=True)
    trace.next("installed")
    status, body = get(app)  # request 2
    assert (status, body) == (200, "hello user2")
    result = trace.result()
    assert result["reason"] == "snapshot" and result["removed"] is True and result["hits"] == 1
    snap = result["snapshot"]
    assert snap["locals"]["user"] == "{'id': 2, 'name': 'user2'}"
    assert snap["locals"]["self"].startswith("<__main__.Handler object at 0x")
    assert "body" not in snap["locals"]  # the event fires before the line runs
    assert snap["stack"][0] == {"file": snap["file"], "line": line_of("handler"), "function": "Handler.do_GET"}
    assert any(f["function"] == "BaseHTTPRequestHandler.handle_one_request" for f in snap["stack"])
    assert trace.hits() == [snap]
    assert probe_gone(app.pid)


def test_condition_filters_hits_inside_the_target(spawn):
    app = spawn("trace_app.py")
    trace = Trace(app.pid, location="trace_app.py:%d" % line_of("handler"), exprs=['user["id"]'],
                  condition='user["id"] % 3 == 0', count=3)
    trace.next("installed")
    traffic = Traffic(app)
    result = trace.result()
    traffic.stop()
    ids = [int(values(h)['user["id"]']) for h in trace.hits()]
    assert len(ids) == 3 and all(i % 3 == 0 for i in ids), ids
    assert result["dropped"] == 0 and probe_gone(app.pid)


def test_rate_limit_drops_inside_the_target_and_counts(spawn):
    app = spawn("trace_app.py")
    trace = Trace(app.pid, location="trace_app.py:%d" % line_of("hot"), exprs=["i"], max_per_second=5)
    trace.next("installed")
    assert get(app, "/spin?n=3000") == (200, str(sum(range(3000))))
    trace.next("hit")  # what got through has reached us
    result = trace.stop()
    hits = trace.hits()
    # A bucket of 5 tokens refilled at 5/s: the loop takes milliseconds, so about 5 get through.
    assert 1 <= result["hits"] <= 10 and result["hits"] == len(hits)
    assert result["hits"] + result["dropped"] == 3000  # every run of the line is either delivered or counted
    assert hits[-1]["dropped"] <= result["dropped"]
    assert probe_gone(app.pid)


# -- refusals: nothing enabled, no tool id taken ----------------------------------------------------------

@pytest.mark.parametrize("request_, kind, words", [
    ({"location": "nowhere.py:3"}, "location", ["no code loaded", "'nowhere.py'", "main file is", "/trace_app.py"]),
    ({"location": "util.py:2"}, "location", ["ambiguous", "/a/util.py", "/b/util.py", "longer path suffix"]),
    ({"location": "trace_app.py:COMMENT"}, "location", ["has no code in a loaded function",
                                                         "lines with code near it: ", " NEVER"]),
    ({"location": "trace_app.py:HANDLER", "exprs": ["user["]}, "syntax", ["not a valid Python expression"]),
    ({"location": "trace_app.py:HANDLER", "condition": "x ="}, "syntax", ["condition"]),
])
def test_bad_locations_and_expressions_are_refused_before_anything_is_enabled(spawn, request_, kind, words):
    app = spawn("trace_app.py")
    location = request_["location"].replace("HANDLER", str(line_of("handler")))
    request_ = dict(request_, location=location.replace("COMMENT", str(line_of("comment"))))
    result = Trace(app.pid, **request_).result()
    assert result["status"] == "error" and result["kind"] == kind, result
    for word in words:
        assert word.replace("NEVER", str(line_of("never"))) in result["error"], result["error"]
    assert "\n" not in result["error"]
    assert probe_gone(app.pid)
    assert app.stderr_so_far() == ""


def test_a_longer_suffix_settles_an_ambiguous_file(spawn):
    app = spawn("trace_app.py")
    trace = Trace(app.pid, location="a/util.py:2")
    installed = trace.next("installed")
    assert installed["file"].endswith("/a/util.py") and installed["functions"] == ["twin"]
    assert trace.stop()["removed"] is True
    assert probe_gone(app.pid)


def test_usage_errors_are_caught_before_injecting(spawn):
    app = spawn("trace_app.py")
    for request_, fragment in [({"location": "web.py"}, "FILE:LINE"), ({"location": "web.py:0"}, "FILE:LINE"),
                               ({"location": "web.py:3", "count": 0}, "--count"),
                               ({"location": "web.py:3", "max_per_second": 0}, "--max-per-second"),
                               ({"location": "web.py:3", "duration": -1}, "--duration")]:
        result = Trace(app.pid, **request_).result()
        assert result["kind"] == "usage" and fragment in result["error"], result


def test_every_tool_id_taken_is_refused_naming_the_owners(spawn):
    app = spawn("trace_app.py")
    claim = handle({"op": "exec", "pid": app.pid, "code":
                    "import sys\nfor i in range(1, 6): sys.monitoring.use_tool_id(i, 'other%d' % i)"})
    assert claim["status"] == "ok", claim
    result = Trace(app.pid, location="trace_app.py:%d" % line_of("handler")).result()
    assert result["kind"] == "busy" and "3=other3" in result["error"] and result["tool_ids"] == [1, 2, 3, 4, 5]
    assert inside(app.pid)[0] == [None] + ["other%d" % i for i in range(1, 6)]  # theirs, untouched


# -- code created after install; debugpy beside it ----------------------------------------------------------

def test_a_reloaded_module_is_covered(spawn):
    app = spawn("trace_app.py")
    trace = Trace(app.pid, location="trace_lib.py:%d" % line_of("lib", os.path.join(APPS, "trace_lib.py")),
                  exprs=['user["id"]'])
    trace.next("installed")
    get(app)
    before = trace.next("hit")
    get(app, "/reload")  # request 2 runs the old code, then reloads: render() is a new code object
    covered = trace.next("covered", timeout=30)
    assert covered["functions"] == ["render"]
    assert get(app) == (200, "hello user3")
    hits = [before] + [trace.next("hit")]
    while values(hits[-1])['user["id"]'] != "3":
        hits.append(trace.next("hit"))
    assert trace.stop()["removed"] is True
    assert probe_gone(app.pid)


def test_a_suspended_coroutine_and_a_module_level_loop_are_found(spawn):
    app = spawn("asyncio_app.py")
    trace = Trace(app.pid, location="asyncio_app.py:%d" % dap.marker_line(os.path.join(APPS, "asyncio_app.py"),
                                                                         "TICKS += 1"), exprs=["TICKS"], count=2)
    assert trace.next("installed")["functions"] == ["ticker"]
    first, second = [int(values(h)["TICKS"]) for h in (trace.next("hit"), trace.next("hit"))]
    assert second > first and trace.result()["reason"] == "count"
    assert probe_gone(app.pid)
    busy = spawn("busy.py")  # `while True: counter += 1` at module level: no function holds that code
    trace = Trace(busy.pid, location="busy.py:%d" % dap.marker_line(os.path.join(APPS, "busy.py"), "counter += 1"),
                  exprs=["counter"], count=2, max_per_second=1)
    assert trace.next("installed")["functions"] == ["<module>"]
    result = trace.result()
    hits = [int(values(h)["counter"]) for h in trace.hits()]
    assert result["reason"] == "count" and len(hits) == result["hits"] == 2 and hits[1] > hits[0]
    assert result["dropped"] > 1000  # the line runs millions of times a second; one hit a second gets through
    assert probe_gone(busy.pid)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_works_while_debugpy_is_attached(spawn):
    app = spawn("trace_app.py")
    port = free_port()
    attached = handle({"op": "attach", "pid": app.pid, "port": port})
    assert attached["status"] == "listening", attached
    client = dap.DAPClient("127.0.0.1", port)
    try:
        client.attach_editor()
        debugger = inside(app.pid)[0][0]
        assert debugger is not None  # debugpy holds DEBUGGER_ID (0)
        trace = Trace(app.pid, location="trace_app.py:%d" % line_of("handler"), exprs=['user["name"]'])
        assert trace.next("installed")["tool_id"] != 0
        traffic = Traffic(app)
        hits = [trace.next("hit") for _ in range(3)]
        result = trace.stop()
        traffic.stop()
        assert all(values(h)['user["name"]'].startswith("'user") for h in hits)
        assert result["removed"] is True and traffic.failed == []
        assert probe_gone(app.pid, keep=[debugger] + [None] * 5)  # debugpy's id untouched, ours freed
        # The debugger still stops at the very line the probe was on.
        line = line_of("handler")
        bp = client.request("setBreakpoints", source={"path": result["file"]}, breakpoints=[{"line": line}])
        assert bp["body"]["breakpoints"][0]["verified"]
        got = {}
        request = threading.Thread(target=lambda: got.setdefault("reply", get(app)), daemon=True)
        request.start()
        stopped = client.wait_event("stopped", timeout=30)
        assert client.locals_of_top_frame(stopped["body"]["threadId"])["frame"]["line"] == line
        client.request("setBreakpoints", source={"path": result["file"]}, breakpoints=[])
        client.request("continue", threadId=stopped["body"]["threadId"])
        request.join(30)
        assert got["reply"][0] == 200
    finally:
        client.close()
