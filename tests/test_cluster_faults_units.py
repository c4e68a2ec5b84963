"""Cluster faults that need no cluster to reproduce: a pod watch that the API server ends or answers with an ERROR
event (a fake kubectl on KUBECTL_PATH plays the API server), a container that just exited, a pod that went away
mid-stream, `check --ephemeral` rows that agree, the same --ephemeral hint from every verb."""
from __future__ import annotations

import json
import os
import sys
import textwrap
import time

import pytest

from kubectl_wand import errors
from kubectl_wand.errors import WandError
from kubectl_wand.kube import api, config, resolve
from kubectl_wand.kube import ephemeral as debugc

IMAGE = "none.invalid/nothing:1"

FAKE_KUBECTL = textwrap.dedent("""\
    #!%(python)s
    # Plays the API server for `kubectl get --raw`: the first watch gets what FIRST says, the pod read (the
    # re-list) answers the pod with the debug container in ErrImagePull, later watches stay open and quiet.
    import json, os, sys, time
    url = sys.argv[sys.argv.index("--raw") + 1]
    log = os.environ["FAKE_LOG"]
    with open(log, "a") as f:
        f.write(url + "\\n")
    calls = open(log).read().split()
    def pod(rv, state):
        return {"kind": "Pod", "metadata": {"name": "p", "namespace": "ns", "resourceVersion": rv, "uid": "u1"},
                "spec": {"containers": [{"name": "app"}]},
                "status": {"phase": "Running", "ephemeralContainerStatuses": [{"name": "wand-x", "state": state}]}}
    pulling = {"waiting": {"reason": "ErrImagePull", "message": "failed to resolve reference"}}
    if "watch=true" in url and sum("watch=true" in c for c in calls) == 1:
        if os.environ["FIRST"] == "error":  # what the API server sends for a compacted resourceVersion
            print(json.dumps({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                  "message": "too old resource version: 1 (4242)", "reason": "Expired", "code": 410}}))
        else:  # a watch that ends at timeoutSeconds after an event that says nothing yet
            print(json.dumps({"type": "MODIFIED", "object": pod("2", {"waiting": {"reason": "ContainerCreating"}})}))
        sys.exit(0)
    if "watch=true" in url:
        time.sleep(60)
        sys.exit(0)
    print(json.dumps(pod("500", pulling)))
""")


@pytest.fixture
def fake_kubectl(tmp_path, monkeypatch):
    path = tmp_path / "kubectl"
    path.write_text(FAKE_KUBECTL % {"python": sys.executable})
    path.chmod(0o755)
    log = tmp_path / "calls"
    log.write_text("")
    monkeypatch.setenv("KUBECTL_PATH", str(path))
    monkeypatch.setenv("FAKE_LOG", str(log))
    return log


def a_pod(rv="1"):
    return {"metadata": {"name": "p", "namespace": "ns", "resourceVersion": rv, "uid": "u1"},
            "spec": {"containers": [{"name": "app", "image": "app:1"}], "nodeName": "n1"}}


@pytest.mark.parametrize("first", ["error", "ends"])
def test_a_status_watch_relists_and_watches_again_after_an_error_event_or_its_end(fake_kubectl, monkeypatch, first):
    monkeypatch.setenv("FIRST", first)
    watch = debugc.StatusWatch(config.KubeFlags(), a_pod(), "wand-x", IMAGE, 30)
    started = time.monotonic()
    try:
        with pytest.raises(WandError) as raised:
            while time.monotonic() - started < 20:
                watch.wait(0.3)
    finally:
        watch.close()
    assert "cannot start" in raised.value.message and "ErrImagePull" in raised.value.message
    assert time.monotonic() - started < 10  # named at the re-list, not at the start deadline
    calls = fake_kubectl.read_text().split()
    assert "resourceVersion=1&" in calls[0] and calls[1].endswith("/pods/p"), calls


def test_an_error_event_is_never_read_as_the_pod():
    watch = debugc.StatusWatch.__new__(debugc.StatusWatch)
    watch.name, watch.image, watch.state, watch.error = "wand-x", IMAGE, None, None
    import threading
    watch.changed = threading.Condition()
    for shape in ({"kind": "Status", "status": "Failure", "code": 410}, {"status": 7}, {"status": {"x": 1}}, []):
        watch._update(shape)  # raised AttributeError in the watch's thread: 'str' object has no attribute 'get'
    assert watch.state is None and watch.error is None


# -- a container that just exited, a pod that went away ----------------------------------------------------------

def pod_with(state, phase="Running", restarts=0, last=None, **meta):
    status = {"name": "app", "state": state, "restartCount": restarts}
    if last:
        status["lastState"] = {"terminated": last}
    return {"metadata": dict({"name": "crash", "namespace": "ns", "uid": "u1"}, **meta),
            "spec": {"containers": [{"name": "app"}]},
            "status": {"phase": phase, "containerStatuses": [status]}}


def test_a_container_that_just_exited_is_named_not_its_phase(monkeypatch):
    exited = pod_with({"terminated": {"reason": "Error", "exitCode": 3}})
    assert not resolve.running(exited)
    assert resolve.describe_state(exited) == "container app exited (Error, exit code 3)"
    monkeypatch.setattr(api, "get", lambda *a, **k: exited)
    with pytest.raises(WandError) as raised:
        resolve.pods(config.KubeFlags(namespace="ns"), type("T", (), {"kind": "pod", "name": "crash"})())
    assert raised.value.code == errors.NOT_FOUND
    assert raised.value.message.startswith("pod crash is not running (container app exited (Error, exit code 3))")
    assert "Running, not Running" not in raised.value.message


@pytest.mark.parametrize("now, why", [
    (None, "it was deleted"),
    (pod_with({"running": {}}, uid="u2"), "it was deleted (a new pod of the same name replaced it)"),
    (pod_with({"running": {}}, deletionTimestamp="2026-12-05T21:00:00Z"), "it is being deleted"),
    (dict(pod_with({"terminated": {"exitCode": 137}}, phase="Failed"), status={
        "phase": "Failed", "reason": "Evicted", "message": "The node was low on resource: memory."}),
     "it was evicted: The node was low on resource: memory."),
    (pod_with({"terminated": {"reason": "OOMKilled", "exitCode": 137}}),
     "container app exited (OOMKilled, exit code 137)"),
    (pod_with({"running": {}}, restarts=1, last={"reason": "Error", "exitCode": 1}),
     "container app exited (Error, exit code 1); it runs again now"),
    (pod_with({"running": {}}), None),
])
def test_why_a_pod_went_away_is_read_from_the_api(monkeypatch, now, why):
    def get(flags, path, query=None, what=""):
        if now is None:
            raise WandError("pod crash not found in namespace ns", errors.NOT_FOUND)
        return now
    monkeypatch.setattr(api, "get", get)
    said = resolve.why_gone(config.KubeFlags(), pod_with({"running": {}}), "app")
    assert said == why or why and said.startswith(why), said


def test_a_dead_exec_is_explained_by_the_pod_not_by_its_exit_code(monkeypatch):
    from kubectl_wand.transport.kubectl import KubectlTransport
    t = KubectlTransport(config.KubeFlags(), pod_with({"running": {}}), ["app"])
    monkeypatch.setattr(api, "get", lambda *a, **k: pod_with({"running": {}}, deletionTimestamp="x"))
    error = t.gone()
    assert error.code == errors.NOT_FOUND and error.message.startswith("pod/crash went away: it is being deleted")
    monkeypatch.setattr(api, "get", lambda *a, **k: pod_with({"running": {}}))
    assert t.gone() is None  # still running: the caller keeps kubectl's own message


# -- the same words everywhere ---------------------------------------------------------------------------------------

class Place:
    local, ephemeral, where = False, False, "pod/web-1"

    def permission_fix(self):
        return None

    def alternative(self, having):
        from kubectl_wand.transport.kubectl import EPHEMERAL_HINT
        return EPHEMERAL_HINT % having  # what a pod reached through kubectl exec offers


def test_no_room_for_private_files_gets_the_ephemeral_hint_in_every_verb():
    from kubectl_wand.commands.common import agent_error
    from kubectl_wand.commands.trace import Hits
    result = {"status": "error", "kind": "environment",
              "error": "no room for kubectl wand's private files in process 1's filesystem (/tmp: Read-only)"}
    assert "--ephemeral" in agent_error(result, Place()).message

    class Opts:
        quiet, output, max_per_second, count = False, None, 20.0, None
        streams = type("S", (), {"stdout": None, "stderr": None})()
    import io
    Opts.streams.stdout, Opts.streams.stderr = io.StringIO(), io.StringIO()
    code = Hits(Opts(), None).summary([(Place(), result)])
    assert code == errors.ENVIRONMENT
    line = Opts.streams.stderr.getvalue()
    assert line.count("\n") == 1 and "private files" in line and "add --ephemeral" in line, line


def test_check_ephemeral_does_not_promise_a_container_the_rows_above_refuse(monkeypatch):
    pod = {"metadata": {"name": "p", "namespace": "ns"}, "spec": {"containers": [{"name": "app", "image": "i"}],
                                                                  "nodeName": "n1"},
           "status": {"containerStatuses": [{"name": "app", "state": {"running": {}}}]}}
    monkeypatch.setattr(debugc, "pod_security", lambda flags, ns: None)
    for allowed, status in ((False, "fail"), (True, "ok")):
        monkeypatch.setattr(debugc, "can_i", lambda *a, **k: allowed)
        rows = {r["check"]: r for r in debugc.rows(config.KubeFlags(), pod, "app", None)}
        assert rows["debug container"]["status"] == status, rows
        if not allowed:
            assert rows["RBAC pods/ephemeralcontainers"]["status"] == "fail"
            assert "none can be added" in rows["debug container"]["detail"]
            assert "one is added" not in rows["debug container"]["detail"]


# -- profile keeps what a pod sent before it went away ---------------------------------------------------------------

PARTIAL = {"pid": 1, "rate": 100, "duration": 4.2, "samples": 420, "errors": 0, "recorded": 400,
           "achieved_rate": 100.0, "stopped_early": "partial",
           "frames": [{"function": "crunch", "file": "/app/layers.py", "line": 9}],
           "stacks": [{"thread": "hot-worker", "frames": [0], "count": 400}]}


class Pod:
    local, ephemeral = False, False

    def __init__(self, name, sends=None, error=None):
        self.where, self.labels = "pod/" + name, {"pod": name, "container": "app"}
        self.sends, self.error = sends, error

    def agent(self, request, timeout, on_event=None, stop=None):
        for event in self.sends or ():
            on_event({"progress": {"samples": event["samples"]}})
            on_event({"partial": {"pid": 1, "profile": event}})
        raise self.error

    def permission_fix(self):
        return None

    def alternative(self, having):
        return ""


def gone(name):
    error = WandError("pod/%s went away: it is being deleted (a rollout, a scale-down or kubectl delete)" % name,
                      errors.NOT_FOUND)
    error.gone = True
    return error


def profile_of(monkeypatch, tmp_path, pods):
    import io
    from kubectl_wand.commands import profile
    from kubectl_wand.streams import Streams
    monkeypatch.setattr(profile, "pods_of", lambda opts: pods)
    out = tmp_path / "p.txt"
    err = io.StringIO()
    opts = profile.Options(duration=5.0, format="collapsed", output=str(out),
                           streams=Streams(stdin=io.StringIO(), stdout=io.StringIO(), stderr=err))
    try:
        code = opts.run()
    except WandError as exc:
        err.write("error: %s\n" % exc.message)
        code = exc.code
    return code, err.getvalue(), out


def test_profile_keeps_and_writes_what_pods_sent_before_a_rollout_ended_them(monkeypatch, tmp_path):
    pods = [Pod("web-%d" % i, sends=[dict(PARTIAL, samples=100), PARTIAL], error=gone("web-%d" % i))
            for i in range(3)]
    code, err, out = profile_of(monkeypatch, tmp_path, pods)
    assert code == errors.OK, err
    lines = err.splitlines()
    for i in range(3):
        assert ("warning: pod/web-%d went away: it is being deleted (a rollout, a scale-down or kubectl delete); "
                "kept the 420 samples it had sent (4.2s)" % i) in lines, err
    assert "no samples" not in err and "wrote %s" % out in err
    assert out.read_text() == "crunch (/app/layers.py:9) 1200\n"


def test_profile_that_read_nothing_says_only_why(monkeypatch, tmp_path):
    refused = WandError("kubectl exec into pod/web-0 is forbidden (RBAC): grant create on pods/exec",
                        errors.ENVIRONMENT)
    code, err, out = profile_of(monkeypatch, tmp_path, [Pod("web-0", error=refused)])
    assert code == errors.ENVIRONMENT
    assert err.splitlines() == ["error: pod/web-0: " + refused.message]  # not also "the processes were idle"
    assert not out.exists()


def test_an_empty_profile_says_why_it_is_empty():
    from kubectl_wand.commands.profile import empty
    stopped = empty({"samples": 0, "errors": 0}, stopped=True)
    assert "before the first sample" in stopped.message and stopped.code == errors.INTERRUPTED
    failed = empty({"samples": 0, "errors": 12}, stopped=False)
    assert "every read" in failed.message and "12 errors" in failed.message
    assert "idle the whole time" in empty({"samples": 50, "errors": 0}, stopped=False).message


def test_kubectl_children_leave_the_terminals_ctrl_c_to_the_cli():
    from kubectl_wand import pipes
    child = pipes.spawn([sys.executable, "-c", "import signal; print(signal.getsignal(signal.SIGINT) == signal.SIG_IGN)"])
    out, _err = child.communicate(timeout=30)
    assert out.decode().strip() == "True"  # a Ctrl-C to the process group does not kill kubectl
