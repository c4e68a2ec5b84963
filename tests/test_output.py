"""Output that programs can trust (issue 22): every verb's -o json and -o yaml parsed from the real CLI on a real
CPython 3.14 process and held to docs/output.md's shapes and fields (tests/outputs.py); trace's -o json is JSON
lines only; -o name round-trips as a target; kubectl's KIND.GROUP targets; `version`; a typo'd verb's
suggestion; a warning said once per run."""
from __future__ import annotations

import io
import json
import threading

import pytest

from outputs import check
from kubectl_wand import cli, targets
from kubectl_wand.errors import WandError


@pytest.fixture
def ticker(spawn):
    return spawn("ticker.py")


@pytest.mark.py314
@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_every_verb_output_parses_to_its_documented_shape(ticker, wand, fmt):
    """Every -o json and -o yaml on a real process, parsed and held to docs/output.md (tests/outputs.py); the
    source of each result is this machine (pod, namespace, container null)."""
    target = "pid/%d" % ticker.pid

    def run(*args):
        done = wand(*args)
        assert done.returncode == 0, done.stderr
        return done.stdout

    (listed,) = check(run("get", "processes", target, "-o", fmt), "get", fmt)
    assert listed["pid"] == ticker.pid
    (stack,) = check(run("stack", target, "-o", fmt), "stack", fmt)
    assert stack["pid"] == ticker.pid and stack["threads"][0]["frames"]
    (result,) = check(run("exec-py", target, "-o", fmt, "--", "print(1); 2"), "exec-py", fmt)
    assert result["status"] == "ok" and result["value"] == "2", result
    (checked,) = check(run("check", target, "-o", fmt), "check", fmt)
    assert checked["rows"]
    (report,) = check(run("mem", target, "--top", "3", "-o", fmt), "mem", fmt)
    assert report["mode"] == "census" and report["processes"][0]["pid"] == ticker.pid
    (one,) = check(run("mem", target, "--top", "3", "--per-pod", "-o", fmt), "mem --per-pod", fmt)
    assert one["processes"][0]["pid"] == ticker.pid
    (attached,) = check(run("attach", target, "-o", fmt), "attach", fmt)  # pid/N: its one line, then it ends
    assert attached["event"] == "attached" and attached["pid"] == ticker.pid, attached
    (version,) = check(run("version", "-o", fmt), "version", fmt)
    assert version["version"]


@pytest.mark.py314
def test_trace_snapshot_json_is_json_lines_only(ticker, wand):
    """Before: a JSON line, then a pretty-printed SnapshotList with the same snapshot again: not parseable."""
    done = wand("trace", "pid/%d" % ticker.pid, "ticker.py:9", "n", "--snapshot", "-o", "json", "--duration", "20s")
    assert done.returncode == 0, done.stderr
    (line,) = check(done.stdout, "trace", "json")  # every line one JSON document, and one line
    hit = line["hit"]
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
