"""Each verb's Options (complete -> validate -> run), table-driven, against a fake transport that answers with
recorded agent results: the command line, the verb's checks and its output, in seconds and without a cluster.

The answers in tests/recorded/agent_answers.json are a real agent's, recorded from a real CPython 3.14 target
(tests/apps/ticker.py) through the local transport: `WAND_RECORD=1 hack/test tests/test_verbs_fake.py -k record`
records them again. These tests sit beside the real ones (tests/test_engine_local.py, tests/e2e/), never instead:
they check what the verbs make of an answer, the real tests that the answers are what a target gives.
"""
from __future__ import annotations

import copy
import io
import json
import re
import os
import time

import pytest

from kubectl_wand import cli, errors
from kubectl_wand.streams import Streams
from kubectl_wand.transport import Forward, Transport

from outputs import check, schemas

HERE = os.path.dirname(os.path.abspath(__file__))
RECORDED = os.path.join(HERE, "recorded", "agent_answers.json")
EXEC_OK = "print('hello from the target'); 6 * 7"
EXEC_RAISES = "1 / 0"


def answers():
    with open(RECORDED, encoding="utf-8") as f:
        return json.load(f)


class FakeForward(Forward):
    def __init__(self, port):
        self.local_port = port

    def alive(self):
        return True


class FakeTransport(Transport):
    """A pod that answers every agent request from the recorded answers (by op; exec also by its code)."""

    def __init__(self, name="web-1", container="app", recorded=None, override=None):
        self.name, self.where = name, "pod/%s" % name
        self.labels = {"pod": name, "container": container, "namespace": "ns"}
        self.recorded = recorded if recorded is not None else answers()
        self.override = override or {}
        self.requests = []

    def agent(self, request, timeout, on_event=None, stop=None):
        self.requests.append(dict(request))
        op = request["op"]
        if op in self.override:
            return copy.deepcopy(self.override[op])
        key = op if op != "exec" else "exec " + request["code"]
        answer = copy.deepcopy(self.recorded[key])
        if op in ("exec", "attach", "check") and request.get("pid") is None:
            answer.setdefault("pid", answer["hello"]["pid"] if "hello" in answer else pid_of(self.recorded))
        for event in answer.pop("events", []):
            if on_event is not None:
                on_event(event)
        return answer

    def forward(self, remote_port, local_port=None):
        return FakeForward(local_port or remote_port)

    def forward_hint(self, local_port, remote_port):
        return "kubectl port-forward pod/%s %d:%d" % (self.name, local_port, remote_port)

    def alternative(self, having):
        return "; or add --ephemeral (%s)" % having


def run_verb(argv, transports, stdin="", later=None):
    """(exit code, stdout, stderr) of the verb on ``argv`` with ``transports`` as the target's pods (and
    ``later`` as the pods a later look finds: attach --follow's replacement)."""
    out, err = io.StringIO(), io.StringIO()
    try:
        verb, ns = cli.parse(list(argv))
        opts = cli.verb_module(verb).Options()
        opts.complete(ns, Streams(io.StringIO(stdin), out, err))
        opts.quiet = True
        opts.transports = lambda: list(transports)  # the only seam: where the target's pods come from
        opts.pod_transports = lambda early=True: list(later if later is not None else transports)
        opts.validate()
        code = opts.run()
    except errors.WandError as exc:
        err.write("error: %s\n" % exc.message)
        code = exc.code
    except SystemExit as exc:  # usage errors from argparse
        code = exc.code
    return code, out.getvalue(), err.getvalue()


def mem_answers():
    with open(os.path.join(HERE, "recorded", "mem_answers.json"), encoding="utf-8") as f:
        return json.load(f)


def pid_of(recorded):
    return recorded["list"]["processes"][0]["pid"]


PERMISSION = {"status": "error", "kind": "permission", "error": "ptrace of pid 7 is not permitted"}
PENDING = {"status": "pending", "error": "the main thread did not reach a safe point within 1s",
           "frames": [{"file": "/app/web.py", "line": 3, "function": "serve"}], "left_behind": "/tmp/wand-x"}

PORT_TAKEN = {"status": "error", "kind": "port", "reason": "taken after kubectl wand checked it",
              "error": "port 5690 is already in use beside the target (taken after kubectl wand checked it); "
                       "choose another with --port"}

# (name, argv, override answers, exit code, in stdout, in stderr, request fields the verb sent)
CASES = [
    ("get lists", ["get", "processes", "pod/web-1"], None, errors.OK, ["PID", "ticker.py"], [],
     {"op": "list", "cpu": True}),
    ("get json", ["get", "processes", "pod/web-1", "-o", "json"], None, errors.OK, ['"kind": "ProcessList"'], [], {}),
    ("get names", ["get", "processes", "pod/web-1", "-o", "name"], None, errors.OK, ["pod/web-1/"], [], {}),
    ("get bad output", ["get", "processes", "pod/web-1", "-o", "xml"], None, errors.USAGE, [], [], None),
    ("stack", ["stack", "pod/web-1"], None, errors.OK, ["ticker.py", "MainThread"], [],
     {"op": "stack", "async": False}),
    ("stack json", ["-n", "ns", "stack", "-o", "json", "pod/web-1"], None, errors.OK, ['"StackList"'], [], {}),
    ("stack wrong output", ["stack", "pod/web-1", "-o", "wide"], None, errors.USAGE, [], [], None),
    ("stack pid and --pid", ["stack", "pid/5", "--pid", "6"], None, errors.USAGE, [], ["disagree"], None),
    ("exec value", ["exec-py", "pod/web-1", "--", EXEC_OK], None, errors.OK, ["hello from the target", "42"], [],
     {"op": "exec", "code": EXEC_OK, "timeout": 10.0, "max_output": 1 << 20}),
    ("exec raises", ["exec-py", "pod/web-1", "--timeout", "30s", "--", EXEC_RAISES], None, errors.FAILED, [],
     ["ZeroDivisionError"], {"op": "exec", "timeout": 30.0}),
    ("exec json", ["exec-py", "pod/web-1", "-o", "json", "--", EXEC_OK], None, errors.OK, ['"value": "42"'], [],
     {}),
    ("exec code twice", ["exec-py", "pod/web-1", "-f", "x.py", "--", "1"], None, errors.USAGE, [], ["either"],
     None),
    ("exec permission", ["exec-py", "pod/web-1", "--", EXEC_OK], {"exec": PERMISSION}, errors.NOT_ATTACHABLE, [],
     ["not permitted", "or add --ephemeral (with SYS_PTRACE of its own)"], {}),
    ("exec pending", ["exec-py", "pod/web-1", "--", EXEC_OK], {"exec": PENDING}, errors.TIMEOUT, [],
     ["main thread blocked at /app/web.py:3:serve", "nothing of this request will run",
      "fix: retry with a longer --timeout"], {}),
    ("check", ["check", "pod/web-1"], None, errors.OK, ["CHECK", "ok"], [], {"op": "check"}),
    ("check json", ["check", "pod/web-1", "-o", "json"], None, errors.OK, ['"rows"'], [], {}),
    ("profile top", ["profile", "pod/web-1", "--duration", "1s", "--rate", "50"], None, errors.OK, ["ticker.py"],
     [], {"op": "profile", "duration": 1.0, "rate": 50.0, "idle": False, "gil": False}),
    ("profile collapsed", ["profile", "pod/web-1", "--duration", "1", "--idle", "-o", "-", "--format", "collapsed"],
     None, errors.OK, ["ticker.py"], [], {"op": "profile", "idle": True}),
    ("profile zero duration", ["profile", "pod/web-1", "--duration", "0"], None, errors.USAGE, [], ["--duration"],
     None),
    ("attach no forward", ["attach", "pod/web-1", "--no-forward", "--port", "5690"], None, errors.OK,
     ["debugpy", "listening", "VS Code"], ["kubectl port-forward pod/web-1"], {"op": "attach", "port": 5690}),
    ("trace", ["trace", "pod/web-1", "ticker.py:9", "n", "n * 2", "--count", "2"], None, errors.OK,
     ["pod/web-1 pid", "ticker.py:9 n="], [], {"op": "trace", "location": "ticker.py:9", "exprs": ["n", "n * 2"],
                                               "count": 2, "snapshot": False}),
    ("trace json", ["trace", "pod/web-1", "ticker.py:9", "n", "-o", "json"], None, errors.OK, ['{"hit": {'], [],
     {"op": "trace", "count": None}),
    ("trace bad location", ["trace", "pod/web-1", "ticker.py"], None, errors.USAGE, [], ["FILE:LINE"], None),
    ("trace bad expression", ["trace", "pod/web-1", "ticker.py:9", "n +"], None, errors.USAGE, [],
     ["not a Python expression"], None),
    ("mem census", ["mem", "pod/web-1"], "census", errors.OK, ["bytes", "By count:", "pod/web-1 pid"], [],
     {"op": "mem", "duration": None, "top": 20, "max_pause": 0.5, "frames": 3}),
    ("mem window", ["mem", "pod/web-1", "--duration", "2s", "--frames", "3", "--top", "5"], "window", errors.OK,
     ["leaker.py:10", "tracemalloc stopped", "Types whose counts grew"], [],
     {"op": "mem", "duration": 2.0, "frames": 3, "top": 5}),
    ("mem yaml", ["mem", "pod/web-1", "-o", "yaml"], "census", errors.OK, ["by_size:", "type: bytes"], [], {}),
    ("mem bad top", ["mem", "pod/web-1", "--top", "0"], None, errors.USAGE, [], ["--top"], None),
    ("mem pending", ["mem", "pod/web-1", "--timeout", "1s"], {"mem": PENDING}, errors.TIMEOUT, [],
     ["pod/web-1: the main thread did not reach", "main thread blocked at /app/web.py:3:serve",
      "nothing of this request will run"], {"op": "mem", "timeout": 1.0}),
    ("mem permission", ["mem", "pod/web-1"], {"mem": PERMISSION}, errors.NOT_ATTACHABLE, [],
     ["not permitted", "or add --ephemeral (with SYS_PTRACE of its own)"], {}),
    ("pdb pending", ["pdb", "pod/web-1", "--timeout", "1"], {"pdb": PENDING}, errors.TIMEOUT, [],
     ["main thread blocked at /app/web.py:3:serve", "nothing of this request will run"],
     {"op": "pdb", "timeout": 1.0}),
    ("pdb permission", ["pdb", "pod/web-1"], {"pdb": PERMISSION}, errors.NOT_ATTACHABLE, [], ["not permitted"],
     {"op": "pdb"}),
    ("exec -i alone", ["exec-py", "pod/web-1", "-i"], None, errors.USAGE, [], ["both -i and -t"], None),
    ("exec -it with code", ["exec-py", "-it", "pod/web-1", "--", "1"], None, errors.USAGE, [], ["at its prompt"], None),
    ("exec -it all pods", ["exec-py", "-it", "deploy/web", "--all-pods"], None, errors.USAGE, [], ["no --all-pods"],
     None),
    ("exec -it pending", ["exec-py", "-it", "pod/web-1"], {"repl": PENDING}, errors.TIMEOUT, [],
     ["main thread blocked at /app/web.py:3:serve"], {"op": "repl"}),
    ("pdb bad timeout", ["pdb", "pod/web-1", "--timeout", "0"], None, errors.USAGE, [], ["--timeout"], None),
    ("attach port taken", ["attach", "pod/web-1", "--port", "5690"], {"attach": PORT_TAKEN}, errors.ENVIRONMENT,
     [], ["port 5690 is busy in pod/web-1 (taken after kubectl wand checked it); choose another with --port"],
     {"op": "attach", "port": 5690}),
    ("attach port reason escaped", ["attach", "pod/web-1", "--port", "5690"],
     {"attach": dict(PORT_TAKEN, reason="x\x1b]0;owned\x07\nFAKE line")}, errors.ENVIRONMENT, [],
     ["port 5690 is busy in pod/web-1 (x"], {"op": "attach"}),
    ("attach image without ephemeral", ["attach", "pod/web-1", "--image", "python:3.14"], None, errors.USAGE, [],
     ["--ephemeral"], None),
]


@pytest.mark.parametrize("name,argv,override,code,in_out,in_err,sent", CASES, ids=[c[0] for c in CASES])
def test_verb(name, argv, override, code, in_out, in_err, sent):
    if isinstance(override, str):  # mem's answers, recorded from tests/apps/leaker.py
        override = {"mem": mem_answers()[override]}
    pod = FakeTransport(override=override)
    got, out, err = run_verb(argv, [pod])
    assert got == code, (out, err)
    for text in in_out:
        assert text in out, (text, out, err)
    for text in in_err:
        assert text in err, (text, out, err)
    assert "\x1b" not in err and "\nFAKE" not in err  # what a target names never reaches the terminal raw
    if sent is None:  # refused before anything ran: the target was never asked
        assert pod.requests == []
    elif sent:
        asked = [r for r in pod.requests if r["op"] == sent["op"]] if "op" in sent else pod.requests
        assert asked, pod.requests
        assert {k: asked[-1].get(k) for k in sent} == sent


def test_exec_all_pods_prefixes_each_pod_and_keeps_the_worst_exit_code():
    ok, failing = FakeTransport("web-1"), FakeTransport("web-2", override={"exec": PERMISSION})
    code, out, err = run_verb(["exec-py", "deploy/web", "--all-pods", "--", EXEC_OK], [ok, failing])
    assert code == errors.NOT_ATTACHABLE
    assert "[pod/web-1/app] hello from the target" in out and "[pod/web-1/app] 42" in out
    assert "[pod/web-2/app] error: ptrace of pid 7 is not permitted" in err


def test_stack_reads_every_pod_and_labels_each_process():
    code, out, _err = run_verb(["stack", "deploy/web", "-o", "json"], [FakeTransport("web-1"), FakeTransport("web-2")])
    assert code == errors.OK
    items = json.loads(out)["items"]
    assert sorted(i["pod"] for i in items) == ["web-1", "web-2"]


def test_more_than_one_pod_needs_pod_off_a_terminal():
    code, _out, err = run_verb(["exec-py", "deploy/web", "--", EXEC_OK], [FakeTransport("web-1"), FakeTransport("web-2")])
    assert code == errors.USAGE and "choose one with --pod NAME" in err
    second = FakeTransport("web-2")
    code, out, _err = run_verb(["exec-py", "deploy/web", "--pod", "web-2", "--", EXEC_OK], [FakeTransport(), second])
    assert code == errors.OK and second.requests


def test_mem_merges_replicas_names_the_leak_first_and_escapes_names():
    window = mem_answers()["window"]
    hostile = copy.deepcopy(window)
    hostile["sites"][0]["stack"][0]["file"] = "/app/\x1b[31mred.py"
    hostile["types"][0]["type"] = "Evil\x1b]0;title\x07"
    one, two = FakeTransport("web-1", override={"mem": window}), FakeTransport("web-2", override={"mem": window})
    code, out, _err = run_verb(["mem", "deploy/web", "--duration", "2s", "-o", "json"], [one, two])
    report = json.loads(out)
    assert code == errors.OK and [p["pod"] for p in report["processes"]] == ["web-1", "web-2"]
    site = report["sites"][0]
    assert site["stack"][0]["line"] == 10 and site["processes"] == 2
    assert site["size"] == 2 * window["sites"][0]["size"]
    assert site["seen_size"] == 2 * window["sites"][0]["seen_size"] < site["size"]  # scaled from the slices
    assert one.requests[-1]["sync"] is True and two.requests[-1]["sync"] is True  # one window for every pod
    assert report["traced_share"] == [window["sampling"]["share"]] * 2
    code, out, _err = run_verb(["mem", "deploy/web", "--duration", "2s"], [one, two])
    share = "traced %.0f %% of the window" % (window["sampling"]["share"] * 100)
    assert "ESTIMATED over the window from the traced slices: " + share in out, out
    assert "tracemalloc costs %.1fx per allocation here" % window["sampling"]["cost"] in out
    code, out, _err = run_verb(["mem", "deploy/web", "--duration", "2s", "--per-pod", "-o", "json"], [one, two])
    assert [len(r["processes"]) for r in json.loads(out)["items"]] == [1, 1]
    code, out, _err = run_verb(["mem", "deploy/web", "--duration", "2s"],
                               [FakeTransport("web-1", override={"mem": hostile})])
    assert code == errors.OK and "\x1b" not in out and "red.py" in out and "Evil" in out
class TerminalPod(FakeTransport):
    """A pod whose agent listens on the session's socket, runs the launcher in the 'terminal' and answers once
    told to stop (or, ``refuse``, answers at once: the session did not start)."""

    def __init__(self, detached=True, refuse=None):
        super().__init__()
        self.ran, self.detached, self.refuse, self.dropped = [], detached, refuse, 0

    def agent(self, request, timeout, on_event=None, stop=None):
        self.requests.append(dict(request))
        on_event({"chosen": {"pid": 7, "note": ""}})
        if self.refuse:
            return self.refuse
        on_event({"terminal": {"client": request["client"], "pid": 7}})
        assert stop.wait(10)  # the CLI stops the agent once the client has ended
        return {"status": "ok", "pid": 7, "reason": "quit", "detached": self.detached}

    def terminal(self, name, failed=None):
        self.ran.append(name)
        return 0

    def drop_terminal(self):
        self.dropped += 1


def test_a_mem_window_says_how_it_ended_in_words():
    """A window ended by Ctrl-C printed "window ended by ended"; each ending now reads as what happened."""
    for reason, said in (("ended", "window ended early (Ctrl-C)"), ("duration", "window ended by its duration"),
                         ("connection closed", "window ended by connection closed")):
        answer = dict(mem_answers()["window"], reason=reason)
        got, out, err = run_verb(["mem", "pod/web-1", "--duration", "2s"], [FakeTransport(override={"mem": answer})])
        assert got == errors.OK and said in out and "ended by ended" not in out, (out, err)


def test_pdb_runs_the_client_in_the_terminal_then_stops_the_agent():
    pod = TerminalPod()
    code, _out, err = run_verb(["pdb", "pod/web-1"], [pod])
    assert code == errors.OK, err
    name = pod.requests[0]["client"]
    assert pod.ran == [name] and re.match(r"kubectl-wand-pdb-[0-9a-f]{32}\Z", name)
    assert pod.requests[0]["op"] == "pdb" and pod.requests[0]["pid"] is None


class RefusedAfterListening(TerminalPod):
    """The agent listens (terminal event), then the target refuses; the launcher never connected and would
    poll for its socket for a minute: the CLI must end it."""

    def agent(self, request, timeout, on_event=None, stop=None):
        self.requests.append(dict(request))
        on_event({"terminal": {"client": request["client"], "pid": 7}})
        self.started.wait(10)
        return {"status": "error", "kind": "busy", "error": "another pdb is already attached to process 7"}

    def terminal(self, name, failed=None):
        import threading
        self.ran.append(name)
        self.started = getattr(self, "started", threading.Event())
        self.started.set()
        assert failed is not None and failed.wait(10), "the CLI never said the session failed"
        return 0


def test_a_launcher_that_never_connected_is_ended_when_the_session_fails():
    import threading
    pod = RefusedAfterListening()
    pod.started = threading.Event()
    code, _out, err = run_verb(["pdb", "pod/web-1"], [pod])
    assert code == errors.TIMEOUT and "another pdb is already attached" in err, (code, err)
    assert len(pod.ran) == 1


def test_a_session_that_does_not_start_gives_the_terminal_back_before_saying_why():
    """The launcher may have been started with the early call: it is ended (the terminal is ours again) and
    the agent's refusal is the message."""
    refusal = {"status": "error", "kind": "busy", "error": "another pdb is already attached to process 7"}
    for verb in (["pdb", "pod/web-1"], ["exec-py", "-it", "pod/web-1"]):
        pod = TerminalPod(refuse=refusal)
        code, _out, err = run_verb(verb, [pod])
        assert code == errors.TIMEOUT and "another pdb is already attached" in err, (code, err)
        assert pod.ran == [] and pod.dropped >= 1


def test_pdb_says_when_the_target_did_not_confirm_its_detach():
    code, _out, err = run_verb(["pdb", "pod/web-1"], [TerminalPod(detached=False)])
    assert code == errors.ENVIRONMENT and "did not confirm" in err


def test_every_verb_has_a_case():
    assert {word for case in CASES for word in case[1] if word in cli.VERBS} == set(cli.VERBS)


@pytest.mark.skipif(not os.environ.get("WAND_RECORD"), reason="records the answers again: WAND_RECORD=1")
def test_record_agent_answers(spawn):
    """Record a real agent's answers from a real 3.14 target (tests/apps/ticker.py) via the local transport."""
    from kubectl_wand.transport.local import LocalTransport
    target = spawn("ticker.py")
    here = LocalTransport(target.pid)
    requests = {
        "list": {"op": "list", "pid": target.pid, "cpu": True},
        "stack": {"op": "stack", "pid": target.pid, "async": False},
        "exec " + EXEC_OK: {"op": "exec", "pid": target.pid, "code": EXEC_OK, "timeout": 10.0},
        "exec " + EXEC_RAISES: {"op": "exec", "pid": target.pid, "code": EXEC_RAISES, "timeout": 10.0},
        "check": {"op": "check", "pid": target.pid},
        "profile": {"op": "profile", "pid": target.pid, "rate": 50.0, "duration": 1.0, "idle": True, "gil": False},
        "attach": {"op": "attach", "pid": target.pid, "host": "127.0.0.1", "port": 5690, "timeout": 30.0},
        "trace": {"op": "trace", "pid": target.pid, "location": "ticker.py:9", "exprs": ["n", "n * 2"],
                  "count": 2, "snapshot": False, "max_per_second": 20.0, "duration": 10.0, "timeout": 15.0},
    }
    recorded = {}
    for key, request in requests.items():
        events = []
        result = here.agent(request, timeout=60, on_event=events.append)
        assert result.get("status") in ("ok", "raised", "listening", "already"), (key, result)
        recorded[key] = dict(result, events=events) if events else result
    recorded["recorded"] = "tests/apps/ticker.py under CPython 3.14, %s" % time.strftime("%Y-%m-%d")
    os.makedirs(os.path.dirname(RECORDED), exist_ok=True)
    with open(RECORDED, "w", encoding="utf-8") as f:
        json.dump(recorded, f, indent=1, sort_keys=True)
        f.write("\n")


class ArmedPod(FakeTransport):
    """A pod whose agent, asked for a sync profile or trace, says armed and logs when its window opens."""

    def __init__(self, name, log):
        super().__init__(name)
        self.log = log

    def agent(self, request, timeout, on_event=None, stop=None):
        if request.get("sync"):
            self.log.append(("armed", self.name))
            on_event({"armed": {"processes": 1}})  # returns when the window opens (then the go is sent)
            self.log.append(("go", self.name))
        return super().agent(request, timeout, on_event, stop)


@pytest.mark.parametrize("argv", [["profile", "deploy/web", "--duration", "1s"],
                                  ["trace", "deploy/web", "ticker.py:9", "n", "--duration", "1s"]])
def test_profile_and_trace_open_every_pods_window_once_all_are_armed(argv):
    log = []
    pods = [ArmedPod("web-%d" % i, log) for i in range(3)]
    code, _out, err = run_verb(argv, pods)
    assert code == errors.OK, err
    assert all(p.requests[-1].get("sync") for p in pods)
    first_go = min(i for i, (what, _pod) in enumerate(log) if what == "go")
    assert sorted(pod for what, pod in log[:first_go]) == ["web-0", "web-1", "web-2"]  # no window before all armed


def test_mem_says_when_listing_the_heap_alone_overran_max_pause():
    census = copy.deepcopy(mem_answers()["census"])
    census["walk"].update(over_budget=True, max_pause_ms=100.0, list_ms=150.0)
    code, out, _err = run_verb(["mem", "pod/web-1", "--max-pause", "0.1s"], [FakeTransport(override={"mem": census})])
    assert code == errors.OK and "OVER --max-pause 100.0 ms: listing the heap's objects alone took 150.0 ms" in out
    code, out, _err = run_verb(["mem", "pod/web-1"], [FakeTransport(override={"mem": mem_answers()["census"]})])
    assert code == errors.OK and "OVER" not in out


# -- -o json / -o yaml: every verb's every mode parsed and held to docs/output.md (tests/outputs.py) ----------------

POD = ("web-1", "ns", "app")
# (docs/output.md's shape, argv, mem's recorded answer or None, formats)
SHAPES = [
    ("get", ["get", "processes", "pod/web-1"], None, ("json", "yaml")),
    ("stack", ["stack", "pod/web-1"], None, ("json", "yaml")),
    ("exec-py", ["exec-py", "pod/web-1", "--", EXEC_OK], None, ("json", "yaml")),
    ("check", ["check", "pod/web-1"], None, ("json", "yaml")),
    ("mem", ["mem", "pod/web-1"], "census", ("json", "yaml")),
    ("mem", ["mem", "pod/web-1", "--duration", "2s"], "window", ("json", "yaml")),
    ("mem --per-pod", ["mem", "pod/web-1", "--per-pod"], "census", ("json", "yaml")),
    ("trace", ["trace", "pod/web-1", "ticker.py:9", "n", "--count", "2"], None, ("json",)),
    ("attach", ["attach", "pod/web-1", "--no-forward", "--port", "5690"], None, ("json", "yaml")),
]


def with_output(argv, fmt):
    """``-o fmt`` before the code of exec-py (after ``--`` it would be code)."""
    at = argv.index("--") if "--" in argv else len(argv)
    return argv[:at] + ["-o", fmt] + argv[at:]


@pytest.mark.parametrize("shape,argv,mem,fmt", [(s, a, m, f) for s, a, m, fmts in SHAPES for f in fmts],
                         ids=["%s %s %s" % (s, " ".join(a[1:3]), f) for s, a, m, fmts in SHAPES for f in fmts])
def test_every_output_parses_to_its_documented_shape(shape, argv, mem, fmt):
    pod = FakeTransport(override={"mem": mem_answers()[mem]} if mem else None)
    code, out, err = run_verb(with_output(argv, fmt), [pod])
    assert code == errors.OK, err
    check(out, shape, fmt, POD)


def test_every_verb_that_prints_json_has_a_documented_shape_checked_here():
    shapes, _fields = schemas()
    printing = {verb for verb in cli.VERBS for flag in cli.verb_module(verb).FLAGS
                if "json" in (getattr(flag, "choices", None) or ())}
    assert printing | {"version"} == {shape.split()[0] for shape in shapes}
    assert {case[0] for case in SHAPES} | {"exec-py --all-pods", "version"} == set(shapes)  # the two below, and
    # version in tests/test_output.py


def test_lists_are_lists_for_every_pod():
    pods = [FakeTransport("web-1"), FakeTransport("web-2")]
    two = lambda got: (got[1:], got[0] in ("web-1", "web-2")) == (("ns", "app"), True)  # noqa: E731

    def from_two(got):
        assert two(got), got

    for shape, argv in (("exec-py --all-pods", ["exec-py", "deploy/web", "--all-pods", "--", EXEC_OK]),
                        ("stack", ["stack", "deploy/web"]), ("get", ["get", "processes", "deploy/web"])):
        code, out, err = run_verb(with_output(argv, "json"), pods)
        assert code == errors.OK, err
        assert sorted(i["pod"] for i in check(out, shape, "json", from_two)) == ["web-1", "web-2"]
    failing = [FakeTransport("web-1"), FakeTransport("web-2", override={"exec": PERMISSION})]
    code, out, err = run_verb(["exec-py", "deploy/web", "--all-pods", "-o", "json", "--", EXEC_OK], failing)
    assert code == errors.NOT_ATTACHABLE, err  # before: the failing pod's item lacked value, stdout, ... entirely
    assert [i["status"] for i in check(out, "exec-py --all-pods", "json", from_two)] == ["ok", "error"]
    code, out, err = run_verb(["mem", "deploy/web", "--per-pod", "-o", "yaml"],
                              [FakeTransport(n, override={"mem": mem_answers()["census"]}) for n in ("web-1", "web-2")])
    assert [r["processes"][0]["pod"] for r in check(out, "mem --per-pod", "yaml", from_two)] == ["web-1", "web-2"]


class Waiting:
    """A watch on a process that keeps running."""
    result = None

    def done(self):
        return False

    def cancel(self):
        pass


class EndingForward(FakeForward):
    """A forward that is dead (its pod was deleted) or, alive, that is ended by Ctrl-C while attach waits on it."""

    def __init__(self, port, up):
        super().__init__(port)
        self.up = up

    def alive(self):
        return self.up

    def wait(self, timeout):
        raise KeyboardInterrupt


class ForwardedPod(FakeTransport):
    """A pod attach forwards to: ``gone`` ones were deleted under it; the others replace any pod and stay."""

    def __init__(self, name, gone=False):
        super().__init__(name)
        self.gone = gone

    def forward(self, remote_port, local_port=None):
        return EndingForward(local_port or 40000 + int(self.name[-1]), not self.gone)

    def watch(self, pid):
        return Waiting()

    def present(self):
        return not self.gone

    def replaces(self, old):
        return old is not self

    def started(self):
        return self.name


def test_attach_while_forwarding_is_json_lines_one_per_event():
    """Before: one pretty-printed object, then "Forwarding ... Press Ctrl-C" and every later event as text on the
    same stdout (and with --all-pods a wrapper of its own): not parseable."""
    old, new = ForwardedPod("web-1", gone=True), ForwardedPod("web-2")
    code, out, err = run_verb(["attach", "deploy/web", "-o", "json"], [old], later=[old, new])
    assert code == errors.OK, err
    lines = check(out, "attach", "json", lambda got: got[0] in ("web-1", "web-2"))
    assert [(e["event"], e["pod"]) for e in lines] == [("attached", "web-1"), ("gone", "web-1"),
                                                         ("followed", "web-2"), ("stopped", "web-2")]
    assert lines[2]["replaces"] == "pod/web-1" and lines[2]["local_port"] == lines[0]["local_port"]
    assert "Press Ctrl-C" in err  # what is meant for a person: on stderr
    code, out, err = run_verb(["attach", "deploy/web", "--all-pods", "-o", "yaml"],
                              [ForwardedPod("web-1"), ForwardedPod("web-2")])
    assert code == errors.OK, err
    lines = check(out, "attach", "yaml", lambda got: got[0] in ("web-1", "web-2"))
    assert [e["event"] for e in lines] == ["attached", "attached", "editor", "stopped", "stopped"]
    assert len(lines[2]["editor"]["vscode"]["configurations"]) == 2


class RunningPod(FakeTransport):
    """A pod whose code runs until its call is stopped: it answers as an agent does once the CLI hangs up (the
    code still runs there), or, never told, after the code's own time. With ``ends`` (an Event) its code ends
    when that is set, whatever the CLI does."""

    def __init__(self, name, entered, ends=None):
        super().__init__(name)
        self.entered, self.ends = entered, ends

    def agent(self, request, timeout, on_event=None, stop=None):
        self.requests.append(dict(request))
        self.entered.release()
        if self.ends is not None:
            self.ends.wait(30)
            return {"status": "ok", "value": "1", "stdout": "", "stderr": "", "pid": 7}
        if stop is None or not stop.wait(30):
            time.sleep(2)  # the code's own end: what a CLI that never hangs up waits for
            return {"status": "ok", "value": "1", "stdout": "", "stderr": "", "pid": 7}
        return {"status": "running", "interrupted": True, "pid": 7, "frames": [], "syscall": None,
                "error": "interrupted while the code was still running in process 7: it runs on"}


def test_ctrl_c_reaches_every_pods_call_of_exec_all_pods():
    """Ctrl-C during exec-py --all-pods: every pod's call is stopped (its agent hangs up and says what still
    runs there), each pod gets its line, exit 130. Before, only the main thread was interrupted: the CLI waited
    out every pod's code, then raised KeyboardInterrupt with nothing printed."""
    import _thread
    import signal
    import threading
    entered, ends = threading.Semaphore(0), threading.Event()
    pods = [RunningPod("web-0", entered, ends)] + [RunningPod("web-%d" % i, entered) for i in (1, 2)]

    def interrupt_once_all_run():
        for _ in pods:
            entered.acquire(timeout=30)
        # Ctrl-C, as Python delivers it to the main thread; then web-0's code ends, which wakes the main thread
        # (blocked on web-0's answer) so that it raises KeyboardInterrupt at once, while web-1 and web-2 still run.
        _thread.interrupt_main(signal.SIGINT)
        ends.set()
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # never assume SIGINT was inherited default
    try:
        threading.Thread(target=interrupt_once_all_run, daemon=True).start()
        try:
            code, out, err = run_verb(["exec-py", "deploy/web", "--all-pods", "--timeout", "60s", "--", "f()"], pods)
        except KeyboardInterrupt:
            pytest.fail("Ctrl-C left exec-py --all-pods only once every pod's code had ended, with nothing printed")
    finally:
        signal.signal(signal.SIGINT, previous)
    assert code == errors.INTERRUPTED, (code, err)
    assert out == "[pod/web-0/app] 1\n", out  # what had finished is still shown
    assert err.splitlines() == ["[pod/web-%d/app] error: interrupted while the code was still running in process 7: "
                                "it runs on" % i for i in (1, 2)], err


def test_attach_all_pods_serves_the_others_when_one_pod_fails():
    """One pod whose main thread never reaches a safe point among three: attach --all-pods names it and forwards
    the other two; Ctrl-C ends it with that pod's exit code. Before, the first such pod ended the whole attach
    with nothing forwarded and no pod named ("attach did not complete"), exit 5."""
    pending = dict(PENDING, pid=7, status="pending")
    pods = [ForwardedPod("web-1"), ForwardedPod("web-2"), ForwardedPod("web-3")]
    pods[0].override = {"attach": pending}
    code, out, err = run_verb(["attach", "deploy/web", "--all-pods"], pods)
    assert code == errors.TIMEOUT, err
    assert "error: pod/web-1: attach did not complete (see above)" in err.splitlines(), err
    assert "Forwarding 2 debug servers." in out and "pod/web-2" in out and "pod/web-3" in out, out
    assert "inside pod/web-1" not in out


class InterruptedPod(FakeTransport):
    """A pod of a gunicorn master and two workers: the first worker's debug server starts, then Ctrl-C comes while
    the second's injection is pending (``at="worker"``), or while the first one's forward starts (``at="forward"``)."""

    def __init__(self, at):
        super().__init__("gun-1")
        self.at, self.attached = at, 0
        listed = copy.deepcopy(self.recorded["list"])
        main = listed["processes"][0]
        listed["processes"] = [dict(main, pid=1, role="master")] + [dict(main, pid=p, ppid=1, role="worker")
                                                                    for p in (7, 8)]
        self.override = {"list": listed}

    def agent(self, request, timeout, on_event=None, stop=None):
        if request["op"] == "attach":
            self.attached += 1
            if self.attached == 2:
                interrupt = KeyboardInterrupt()
                interrupt.wand_note = "interrupted while the injection into process 8 was pending"  # last_word's
                raise interrupt
        return super().agent(request, timeout, on_event, stop)

    def forward(self, remote_port, local_port=None):
        if self.at == "forward":
            raise KeyboardInterrupt
        return super().forward(remote_port, local_port)

    def watch(self, pid):
        return Waiting()


@pytest.mark.parametrize("argv, at, says", [
    (["attach", "pod/gun-1", "--all-workers", "--port", "5690"], "worker",
     "interrupted while the injection into process 8 was pending; debugpy listens in pod/gun-1 pid 7 "
     "(127.0.0.1:5690 there) until that process exits; attach again to reuse it"),
    (["attach", "pod/gun-1", "--pid", "7", "--port", "5690"], "forward",
     "interrupted after the debug server started: debugpy listens in pod/gun-1 pid 7 (127.0.0.1:5690 there) until "
     "that process exits; attach again to reuse it")], ids=["all-workers", "forward"])
def test_attach_interrupted_once_a_server_started_names_it(argv, at, says):
    """Before: the Ctrl-C line said only what was pending, or nothing, though a debug server now listened in the
    pod (seen on a real gunicorn pod with --all-workers: Ctrl-C 6 s and 12 s in, exit 130)."""
    with pytest.raises(KeyboardInterrupt) as caught:
        run_verb(argv, [InterruptedPod(at)])
    assert getattr(caught.value, "wand_note", None) == says


class ForwardInterrupted(ForwardedPod):
    """A replacement pod whose debug server starts, and Ctrl-C comes while its forward starts."""

    def forward(self, remote_port, local_port=None):
        raise KeyboardInterrupt


@pytest.mark.parametrize("replacement, says", [
    (None, "Stopped waiting for a Running replacement of deployment/web: nothing was being forwarded"),
    ("web-2", "interrupted after the debug server started: debugpy listens in pod/web-2 pid 17932 (127.0.0.1:5690 "
              "there) until that process exits; attach again to reuse it")], ids=["waiting", "forward"])
def test_attach_interrupted_while_following_says_what_ended(replacement, says):
    """Ctrl-C while --follow waits for a replacement, or while the replacement's forward starts. Before: exit 0
    and not a word after "waiting up to 5m00s for a Running replacement", even with a server just started."""
    old = ForwardedPod("web-1", gone=True)
    looks = []

    def later(early=True):
        looks.append(early)
        if replacement is not None:
            return [old, ForwardInterrupted(replacement)]
        if len(looks) > 1:
            raise KeyboardInterrupt  # Ctrl-C during the second look for a replacement
        return []

    out, err = io.StringIO(), io.StringIO()
    verb, ns = cli.parse(["attach", "deploy/web"])
    opts = cli.verb_module(verb).Options()
    opts.complete(ns, Streams(io.StringIO(""), out, err))
    opts.quiet = True
    opts.transports = lambda: [old]
    opts.pod_transports = later
    opts.validate()
    assert opts.run() == errors.OK
    assert err.getvalue().splitlines()[-1] == says, err.getvalue()
