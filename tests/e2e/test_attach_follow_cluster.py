"""attach follows its workload (a replacement pod on the same local port) and attaches to every replica or
worker at once, each proven by a real DAP client hitting a real breakpoint on the real cluster."""
from __future__ import annotations

import os
import re
import sys
import threading
import time
import urllib.request

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tests"))
import dap  # noqa: E402
from test_kube_verbs import APPS, Attached, HttpForward, hit_breakpoint  # noqa: E402

pytestmark = pytest.mark.cluster

@pytest.fixture
def follow_deployment(cluster):
    cluster.deploy("follow", ["python3", "-m", "uvicorn", "web:app", "--host", "0.0.0.0", "--port", "8000",
                              "--app-dir", "/app"],
                   container={"readinessProbe": {"httpGet": {"path": "/healthz", "port": 8000}, "periodSeconds": 1}})
    yield "follow"
    cluster.kubectl("scale", "deploy/follow", "--replicas=1", check=True)


def app_ready(cluster, pod):
    """Wait until the pod's app answers HTTP (its readiness probe): attach reaches a new pod's process as soon as
    it runs Python, often before uvicorn listens, and a request sent then is refused (seen: no breakpoint hit)."""
    cluster.kubectl("wait", "--for=condition=Ready", "pod/" + pod, "--timeout=120s", check=True, timeout=150)


def test_attach_follows_a_deleted_pod_to_its_replacement(cluster, follow_deployment):
    old = cluster.pod_names("app=follow")
    assert len(old) == 1
    env = dict(cluster.env, PYTHONPATH=REPO)
    attached = Attached(env, "deploy/follow", "--port", "5687", "--local-port", "0")
    try:
        local_port = int(attached.read_until(r"Forwarding 127\.0\.0\.1:(\d+)").group(1))
        attached.read_until(r"Following deployment/follow")
        cluster.kubectl("delete", "pod", old[0], "--wait=false", check=True)
        new = attached.read_until(r"followed to pod/(\S+): debugpy listening in pid \d+, still on 127\.0\.0\.1:(\d+)",
                                  timeout=150)
        assert new.group(1) != old[0] and int(new.group(2)) == local_port
        app_ready(cluster, new.group(1))
        hit_breakpoint(cluster, local_port, new.group(1))  # the editor's configuration still holds
    finally:
        code, out, err = attached.stop()
    assert code == 0, err
    assert "pod/%s is gone; waiting up to 5m00s for a Running replacement of deployment/follow" % old[0] in err


def test_no_follow_for_a_pod(cluster, follow_deployment):
    pod = cluster.pod_names("app=follow")[0]
    env = dict(cluster.env, PYTHONPATH=REPO)
    attached = Attached(env, "pod/" + pod, "--port", "5687", "--local-port", "0")
    try:
        attached.read_until(r"Forwarding 127\.0\.0\.1:(\d+)")
        cluster.kubectl("delete", "pod", pod, "--wait=false", check=True)
        attached.proc.wait(120)
    finally:
        code, out, err = attached.stop()
    assert code == 3 and "Following" not in out, (out, err)
    assert re.search(r"(pod/%s is gone|process \d+ in pod/%s exited); nothing left to debug" % (pod, pod), err), err


def test_following_a_pod_polls_the_api_not_the_pod(cluster, follow_deployment):
    # Waiting for a replacement of pod/NAME reads the API once a second; it used to start a kubectl exec (the
    # early agent call of a pod named alone) on every poll, then cancel it. -v 6 echoes every kubectl run.
    pod = cluster.pod_names("app=follow")[0]
    env = dict(cluster.env, PYTHONPATH=REPO)
    attached = Attached(env, "pod/" + pod, "--follow", "--follow-timeout", "6s", "-v", "6", "--port", "5687",
                        "--local-port", "0")
    try:
        attached.read_until(r"Following pod/")
        cluster.kubectl("delete", "pod", pod, "--wait=false", check=True)
        attached.proc.wait(120)
    finally:
        code, out, err = attached.stop()
    assert code == 3, (out, err)
    assert "waiting up to 6s for a Running replacement of pod/%s" % pod in err, err
    waiting = err[err.index("waiting up to 6s"):]
    reads = [line for line in waiting.splitlines() if line.startswith("+ ") and " get --raw " in line]
    execs = [line for line in waiting.splitlines() if line.startswith("+ ") and " exec " in line]
    assert len(reads) >= 3, waiting  # it did poll: the echo is there to count
    assert execs == [], waiting


def sessions_of(attached, count):
    found = []
    for _ in range(count):
        m = attached.read_until(r"debugpy listening in pod/(\S+) pid (\d+) \(127\.0\.0\.1:(\d+) there\) on "
                                r"127\.0\.0\.1:(\d+) here")
        found.append((m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4))))
    return found


def test_all_pods_breaks_in_every_replica_and_new_ones(cluster, follow_deployment):
    cluster.kubectl("scale", "deploy/follow", "--replicas=2", check=True)
    cluster.kubectl("rollout", "status", "deploy/follow", "--timeout=120s", check=True, timeout=150)
    pods = cluster.pod_names("app=follow")
    env = dict(cluster.env, PYTHONPATH=REPO)
    attached = Attached(env, "deploy/follow", "--all-pods", "--port", "5688", "--local-port", "0")
    try:
        found = sessions_of(attached, 2)
        assert sorted(p for p, *_ in found) == pods
        assert len({local for *_, local in found}) == 2
        attached.read_until(r'"compounds"')
        for pod, _pid, _remote, local in found:
            hit_breakpoint(cluster, local, pod)
        cluster.kubectl("scale", "deploy/follow", "--replicas=3", check=True)
        m = attached.read_until(r"new pod: debugpy listening in pod/(\S+) pid \d+ \(127\.0\.0\.1:\d+ there\) on "
                                r"127\.0\.0\.1:(\d+) here", timeout=150)
        assert m.group(1) not in pods
        app_ready(cluster, m.group(1))
        hit_breakpoint(cluster, int(m.group(2)), m.group(1))
    finally:
        code, out, err = attached.stop()
    assert code == 0, err


def test_all_workers_breaks_in_every_gunicorn_worker(cluster):
    pod = cluster.pod_names("app=gunicorn")[0]
    env = dict(cluster.env, PYTHONPATH=REPO)
    attached = Attached(env, "pod/" + pod, "--all-workers", "--port", "5690", "--local-port", "0")
    clients = []
    http = None
    try:
        found = sessions_of(attached, 3)
        assert len({remote for *_, remote, _local in found}) == 3  # one network namespace: a port each
        path = "/app/flask_app.py"
        line = dap.marker_line(os.path.join(APPS, "flask_app.py"))
        for _pod, _pid, _remote, local in found:
            client = dap.DAPClient("127.0.0.1", local, timeout=30)
            clients.append(client)
            assert client.attach_with_breakpoint(path, line)["verified"]
        http = HttpForward(cluster, pod)
        hit = set()
        for _ in range(60):  # gunicorn hands each request to one worker: send until every worker has stopped
            t = threading.Thread(target=lambda: urllib.request.urlopen("http://127.0.0.1:%d/" % http.port,
                                                                        timeout=60).read(), daemon=True)
            t.start()
            stopped = None
            deadline = time.monotonic() + 20
            while stopped is None and time.monotonic() < deadline:
                for i, client in enumerate(clients):
                    try:
                        stopped = (i, client.wait_event("stopped", timeout=0.2))
                        break
                    except dap.DAPError:
                        continue
            assert stopped is not None, "a request hit no breakpoint"
            i, event = stopped
            assert event["body"]["reason"] == "breakpoint"
            hit.add(i)
            clients[i].request("continue", threadId=event["body"]["threadId"])
            t.join(30)
            if len(hit) == len(clients):
                break
        assert hit == set(range(len(clients)))
    finally:
        for client in clients:
            client.close()
        if http is not None:
            http.close()
        code, out, err = attached.stop()
    assert code == 0, err
