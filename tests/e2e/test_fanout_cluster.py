"""One window across many replicas, on the real cluster: a 40-replica Deployment (fo-app) of a tiny app;
profile and trace over all of them report each pod's window, and every pod's window is the same one (they
start and end within 0.5 s of each other), every pod is reached, and every pod's probe sees hits."""
import os
import re
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))

pytestmark = pytest.mark.cluster

REPLICAS = 40
APP = '''import time


def tick(n):
    return n + 1  # trace:tick


print("READY", flush=True)
n = 0
while True:
    n = tick(n)
    time.sleep(0.1)
'''
TICK_LINE = APP.splitlines().index("    return n + 1  # trace:tick") + 1


@pytest.fixture(scope="module")
def many(cluster, tmp_path_factory):
    path = tmp_path_factory.mktemp("fo") / "fo_app.py"
    path.write_text(APP)
    made = cluster.kubectl("create", "configmap", "fo-app", "--from-file=fo_app.py=%s" % path, "--dry-run=client",
                           "-o", "yaml", check=True)
    cluster.kubectl("apply", "-f", "-", input=made.stdout, check=True)
    try:
        # Tiny requests: 40 of them must fit a 2-core node beside the other workloads.
        cluster.deploy("fo-app", ["python3", "-u", "/code/fo_app.py"], replicas=REPLICAS, wait=False,
                       container={"resources": {"requests": {"cpu": "5m", "memory": "16Mi"}},
                                  "volumeMounts": [{"name": "code", "mountPath": "/code"}]},
                       pod={"volumes": [{"name": "code", "configMap": {"name": "fo-app"}}]})
        cluster.kubectl("rollout", "status", "deploy/fo-app", "--timeout=300s", check=True, timeout=330)
        cluster.settle("app=fo-app", REPLICAS, timeout=120)
        yield cluster
    finally:
        cluster.kubectl("delete", "deployment", "fo-app", "--wait=false", timeout=60)
        cluster.kubectl("delete", "configmap", "fo-app", "--wait=false", timeout=60)


def test_profile_of_40_replicas_samples_one_window(many, wand):
    done = wand("profile", "deploy/fo-app", "--duration", "3s", "--rate", "20", "--idle", "--format", "top",
                timeout=240)
    assert done.returncode == 0, done.stderr
    assert "from %d process(es)" % REPLICAS in done.stderr, done.stderr  # every pod reached
    spread = re.search(r"windows aligned within ([0-9.]+)s \(start\) and ([0-9.]+)s \(end\)", done.stderr)
    assert spread, done.stderr
    assert float(spread.group(1)) < 0.5 and float(spread.group(2)) < 0.5, done.stderr


def clock(text):
    h, m, s = text.split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


def test_trace_of_40_replicas_has_one_window_and_hits_on_every_pod(many, wand):
    done = wand("trace", "deploy/fo-app", "fo_app.py:%d" % TICK_LINE, "n", "--duration", "4s", timeout=240)
    assert done.returncode == 0, done.stderr
    pods = re.findall(r"^pod/(\S+) pid \S+: (\d+) hit\(s\).*; window ([0-9:.]+)-([0-9:.]+)$", done.stderr, re.M)
    assert len(pods) == REPLICAS, done.stderr
    assert all(int(hits) > 0 for _pod, hits, _s, _e in pods), done.stderr  # no probe went in after the others
    starts = [clock(s) for _p, _h, s, _e in pods]
    ends = [clock(e) for _p, _h, _s, e in pods]
    assert max(starts) - min(starts) < 0.5 and max(ends) - min(ends) < 0.5, done.stderr
    for _p, _h, start, end in pods:
        assert 3.5 < clock(end) - clock(start) < 5, (start, end)  # --duration 4s, from the go
