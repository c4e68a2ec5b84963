"""stack and profile through the real CLI on the real cluster: a two-replica Deployment with remote debugging
DISABLED (exec-py cannot reach it), a known blocked chain and a named hot thread; an asyncio app's task tree;
every profile format; Ctrl-C keeps what was sampled."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
APPS = os.path.join(REPO, "tests", "apps")
sys.path.insert(0, os.path.join(REPO, "tests"))
from procs import default_signals  # noqa: E402

pytestmark = pytest.mark.cluster
NS = "wand-e2e"

@pytest.fixture(scope="module")
def workloads(cluster):
    files = ["--from-file=%s=%s" % (name, os.path.join(APPS, name)) for name in ("layers.py", "async_tree.py")]
    made = cluster.kubectl("create", "configmap", "observe-apps", *files, "--dry-run=client", "-o", "yaml", check=True)
    cluster.kubectl("apply", "-f", "-", input=made.stdout, check=True)
    for name, script, replicas in (("layers", "layers.py", 2), ("asynctree", "async_tree.py", 1)):
        cluster.deploy(name, ["python3", "/code/" + script], replicas=replicas, wait=False,
                       container={"env": [{"name": "PYTHON_DISABLE_REMOTE_DEBUG", "value": "1"}],
                                  "volumeMounts": [{"name": "code", "mountPath": "/code"}]},
                       pod={"volumes": [{"name": "code", "configMap": {"name": "observe-apps"}}]})
    for name in ("layers", "asynctree"):
        cluster.kubectl("rollout", "status", "deploy/" + name, "--timeout=150s", check=True, timeout=180)
    yield cluster
    # layers' hot worker keeps a core busy per replica: left running, it slows every later test and benchmark
    cluster.kubectl("delete", "deployment", "layers", "asynctree", "--wait=false", timeout=60)


def test_stack_reads_every_replica_where_exec_py_cannot(workloads, wand):
    pods = workloads.pod_names("app=layers")
    refused = wand("exec-py", "pod/" + pods[0], "--", "1")
    assert refused.returncode == 4 and "PYTHON_DISABLE_REMOTE_DEBUG is set" in refused.stderr  # no injection here
    done = wand("stack", "deploy/layers", "-o", "json")
    assert done.returncode == 0, done.stderr
    items = json.loads(done.stdout)["items"]
    assert sorted(i["pod"] for i in items) == pods  # pod by pod
    for item in items:
        threads = {t["name"]: t for t in item["threads"]}
        main = [f["function"] for f in threads["MainThread"]["frames"]]
        assert main[:4] == ["storage_read", "service_lookup", "handle_request", "<module>"], main
        assert threads["MainThread"]["state"] == "sleeping"
        assert "hot-worker" in threads and any(f["function"] == "crunch" or f["function"] == "hot_worker"
                                               for f in threads["hot-worker"]["frames"])
    text = wand("stack", "deploy/layers", "--pod", pods[1])
    assert text.returncode == 0 and text.stdout.count("Process ") == 1 and pods[1] in text.stdout
    assert 'Thread' in text.stdout and '"hot-worker"' in text.stdout and "storage_read (/code/layers.py:" in text.stdout


def test_stack_async_shows_the_task_tree(workloads, wand):
    done = wand("stack", "deploy/asynctree", "--async")
    assert done.returncode == 0, done.stderr
    for name in ("worker-0", "worker-1", "fetch-0-a", "fetch-1-b"):
        assert name in done.stdout, done.stdout


def test_profile_finds_the_hot_function_in_every_format(workloads, wand, tmp_path):
    top = wand("profile", "deploy/layers", "--duration", "3s")
    assert top.returncode == 0, top.stderr
    first = top.stdout.splitlines()[1]
    assert "crunch" in first, top.stdout
    collapsed = wand("profile", "deploy/layers", "--duration", "2s", "--format", "collapsed", "--per-pod")
    lines = [line.rsplit(" ", 1) for line in collapsed.stdout.splitlines()]
    total = sum(int(n) for _s, n in lines)
    hot = sum(int(n) for s, n in lines if s.split(";")[-1].startswith("crunch"))
    assert hot > total / 2, collapsed.stdout[:2000]
    assert {s.split(";")[0] for s, _n in lines} == {"pod " + p for p in workloads.pod_names("app=layers")}
    speedscope = tmp_path / "p.json"
    svg = tmp_path / "p.svg"
    assert wand("profile", "deploy/layers", "--duration", "2s", "-o", speedscope).returncode == 0
    data = json.loads(speedscope.read_text())
    names = [f["name"] for f in data["shared"]["frames"]]
    prof = data["profiles"][0]
    hot_weight = sum(w for s, w in zip(prof["samples"], prof["weights"]) if names[s[-1]].startswith("crunch"))
    assert hot_weight > sum(prof["weights"]) / 2
    assert wand("profile", "deploy/layers", "--duration", "2s", "-o", svg).returncode == 0
    assert svg.read_text().startswith("<?xml") and "crunch" in svg.read_text()


def test_profile_ctrl_c_keeps_what_was_sampled(workloads, cluster, tmp_path):
    out = tmp_path / "early.txt"
    env = dict(cluster.env, PYTHONPATH=REPO)
    proc = subprocess.Popen([sys.executable, "-m", "kubectl_wand", "profile", "deploy/layers", "--duration", "60s",
                             "--format", "collapsed", "-o", str(out)], env=env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL, preexec_fn=default_signals)
    time.sleep(4)  # let it sample for a while: this is the span we interrupt, not a wait for readiness
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "stopped early" in err and out.exists()
    assert any(line.split(";")[-1].startswith("crunch") for line in out.read_text().splitlines())
