"""Output that programs can trust (issue 22): each verb's -o json parsed from the real CLI on a real CPython 3.14
process and checked against docs/output.md's field lists; trace's -o json is JSON lines only; -o name
round-trips as a target; kubectl's KIND.GROUP targets; `version`; a typo'd verb's suggestion; a warning said
once per run."""
from __future__ import annotations

import io
import json
import os
import threading

import pytest

from procs import REPO
from kubectl_wand import cli, targets
from kubectl_wand.errors import WandError


def documented():
    """{"stack": [...], "stack.threads": [...], ...} from docs/output.md's ``fields:`` lines."""
    out = {}
    with open(os.path.join(REPO, "docs", "output.md")) as f:
        for line in f:
            if line.startswith("fields: "):
                name, _, fields = line[len("fields: "):].partition(":")
                out[name] = fields.split()
    return out


def has(obj, name):
    missing = [k for k in documented()[name] if k not in obj]
    assert not missing, "%s lacks documented fields %s: %s" % (name, missing, sorted(obj))


def local_source(obj):
    assert obj["pod"] is None and obj["namespace"] is None and obj["container"] is None


@pytest.fixture
def ticker(spawn):
    return spawn("ticker.py")


@pytest.mark.py314
def test_every_verb_json_has_its_documented_fields(ticker, wand):
    pid = ticker.pid
    listed = json.loads(wand("get", "processes", "pid/%d" % pid, "-o", "json").stdout)
    assert listed["kind"] == "ProcessList"
    has(listed["items"][0], "get")
    local_source(listed["items"][0])

    stack = json.loads(wand("stack", "pid/%d" % pid, "-o", "json").stdout)
    assert stack["kind"] == "StackList"
    has(stack["items"][0], "stack")
    has(stack["items"][0]["threads"][0], "stack.threads")
    local_source(stack["items"][0])

    ran = wand("exec-py", "pid/%d" % pid, "-o", "json", "--", "print(1); 2")
    result = json.loads(ran.stdout)
    assert result["status"] == "ok" and result["value"] == "2", result
    has(result, "exec-py")
    local_source(result)

    checked = json.loads(wand("check", "pid/%d" % pid, "-o", "json").stdout)
    has(checked, "check")
    has(checked["rows"][0], "check.rows")
    local_source(checked)


@pytest.mark.py314
def test_trace_snapshot_json_is_json_lines_only(ticker, wand):
    """Before: a JSON line, then a pretty-printed SnapshotList with the same snapshot again: not parseable."""
    done = wand("trace", "pid/%d" % ticker.pid, "ticker.py:9", "n", "--snapshot", "-o", "json", "--duration", "20s")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    docs = [json.loads(line) for line in lines]  # every line one JSON document
    assert len(docs) == 1, done.stdout
    has(docs[0], "trace")
    hit = docs[0]["hit"]
    has(hit, "trace.hit")
    local_source(hit)
    assert "n" in hit["locals"] and hit["stack"][0]["function"] == "<module>"


class FakeTransport:
    def __init__(self, pod):
        self.labels = {"pod": pod, "namespace": "ns", "container": "app"}
        self.where = "pod/%s" % pod


def test_a_trace_warning_is_said_once_per_run_not_once_per_pod():
    """Before: 'said once' was said once per pod (40 lines at 40 pods)."""
    from kubectl_wand.commands import trace
    from kubectl_wand.streams import Streams
    err = io.StringIO()
    opts = trace.Options()
    opts.streams = Streams(stdin=io.StringIO(), stdout=io.StringIO(), stderr=err)
    opts.quiet, opts.output, opts.count, opts.max_per_second = False, None, None, 20.0
    hits = trace.Hits(opts, threading.Event())
    warning = {"error": {"expr": "user", "file": "/app/web.py", "line": 17, "message": "NameError: name 'user'"}}
    for n in range(40):
        hits.event(warning, FakeTransport("web-%d" % n))
    hits.summary([])
    text = err.getvalue()
    assert text.count("warning: ") == 1, text
    assert "came from 40 processes" in text


def test_dash_o_name_round_trips_and_kind_group_targets_parse():
    from kubectl_wand.commands.get_processes import render
    rows = [{"pid": 7, "pod": "web-6c64c4c4dc-5q9tl", "namespace": "ns", "container": "app"}]
    (name,) = render(rows, "name", False, False).split()
    target = targets.parse(name)  # before: "bad target ...; expected TYPE/NAME"
    assert (target.kind, target.name, target.process) == ("pod", "web-6c64c4c4dc-5q9tl", 7)
    for text, kind in (("deployment.apps/web", "deployment"), ("deploy.apps/web", "deployment"),
                       ("job.batch/j", "job"), ("pods/p", "pod"), ("statefulset.apps/s", "statefulset")):
        assert targets.parse(text).kind == kind, text
    for bad in ("deployment.batch/web", "pod.apps/p", "deployment.apps/web/1", "pod/web/x"):
        with pytest.raises(WandError):
            targets.parse(bad)


def test_dash_o_name_pid_and_pid_flag_must_agree(wand):
    done = wand("stack", "pod/web-1/7", "--pid", "8")
    assert done.returncode == 2 and "disagree" in done.stderr, done.stderr


def test_a_typo_gets_kubectl_s_suggestion_and_version_answers(wand):
    done = wand("stak")
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert lines[0].startswith('error: unknown command "stak" for "kubectl wand"')
    assert lines[1:] == ["", "Did you mean this?", "\tstack"], done.stderr
    plain = wand("version")
    assert plain.returncode == 0 and plain.stdout.startswith("kubectl-wand ")
    as_json = json.loads(wand("version", "-o", "json").stdout)
    assert set(as_json) == {"version", "python"}
    assert cli.unknown_verb("zzzz").count("\n") == 1  # no near verb: the one error line alone
