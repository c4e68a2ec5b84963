"""mem on the real cluster: a two-replica Deployment (mem-leak) running tests/apps/leaker.py, which leaks bytes
in leak_some(). The merged census names bytes first, the merged window names the leaking line first with both
replicas in it, and after the window (and after the CLI is killed mid-window) tracemalloc is off in every
replica, read back from inside each app with exec-py."""
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
import dap  # noqa: E402
from procs import default_signals, wait_for  # noqa: E402
from test_kube_verbs import children  # noqa: E402

pytestmark = pytest.mark.cluster
NAME = "mem-leak"
LEAK_LINE = dap.marker_line(os.path.join(APPS, "leaker.py"), "# LEAK_LINE")


@pytest.fixture(scope="module")
def leak(cluster):
    made = cluster.kubectl("create", "configmap", "mem-apps", "--from-file=leaker.py=" + os.path.join(APPS, "leaker.py"),
                           "--dry-run=client", "-o", "yaml", check=True)
    cluster.kubectl("apply", "-f", "-", input=made.stdout, check=True)
    try:
        cluster.deploy(NAME, ["python3", "/code/leaker.py"], replicas=2,
                       container={"volumeMounts": [{"name": "code", "mountPath": "/code"}]},
                       pod={"volumes": [{"name": "code", "configMap": {"name": "mem-apps"}}]})
        yield cluster
    finally:
        cluster.kubectl("delete", "deployment", NAME, "--wait=false", timeout=60)
        cluster.kubectl("delete", "configmap", "mem-apps", "--wait=false", timeout=60)


def tracing(wand, pod):
    done = wand("exec-py", "pod/" + pod, "--", "import tracemalloc, threading; "
                "(tracemalloc.is_tracing(), 'kubectl-wand-mem' in [t.name for t in threading.enumerate()])")
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_census_and_window_on_both_replicas(leak, wand):
    pods = leak.pod_names("app=" + NAME)
    assert len(pods) == 2
    census = wand("mem", "deploy/" + NAME, "-o", "json", "--top", "5")
    assert census.returncode == 0, census.stderr
    report = json.loads(census.stdout)
    assert sorted(p["pod"] for p in report["processes"]) == pods
    assert report["by_size"][0]["type"] == "bytes" and report["by_count"][0]["type"] == "bytes", report["by_size"]
    window = wand("mem", "deploy/" + NAME, "--duration", "4s", "-o", "json", timeout=120)
    assert window.returncode == 0, window.stderr
    report = json.loads(window.stdout)
    top = report["sites"][0]
    assert top["stack"][0]["file"] == "/code/leaker.py" and top["stack"][0]["line"] == LEAK_LINE, report["sites"][:2]
    assert top["processes"] == 2
    assert all(p["stopped"] and not p["tracing_after"] for p in report["processes"]), report["processes"]
    # One window for both replicas: each opened at the CLI's go, once both had taken their first census.
    assert all(p["sampling"]["synced"] and p["sampling"]["slices"] >= 1 for p in report["processes"]), report
    print("replicas' windows%s; traced %s of them" % (report["spread"], report["traced_share"]))
    text = wand("mem", "deploy/" + NAME, "--duration", "10s", "--top", "5", timeout=120)
    assert text.returncode == 0 and "/code/leaker.py:%d" % LEAK_LINE in text.stdout, text.stdout
    assert "ESTIMATED over the window from the traced slices" in text.stdout, text.stdout
    print(text.stdout)  # docs/verbs/mem.md shows one
    for pod in pods:
        assert tracing(wand, pod) == "(False, False)"


def test_killing_the_cli_mid_window_stops_tracemalloc_in_every_replica(leak, wand):
    pods = leak.pod_names("app=" + NAME)
    cli = subprocess.Popen([sys.executable, "-m", "kubectl_wand", "mem", "deploy/" + NAME, "--duration", "300s"],
                           env=dict(leak.env, PYTHONPATH=REPO), cwd=REPO, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, preexec_fn=default_signals)
    try:
        # The window's thread is in both (tracemalloc traces in slices of it: on or off at any one moment).
        assert wait_for(lambda: all(tracing(wand, pod).endswith(", True)") for pod in pods), timeout=60, interval=1)
        cli.send_signal(signal.SIGKILL)
        cli.wait(10)
        started = time.monotonic()
        # kubectl exec sees its CLI gone, the agent its stdin closed, the window's thread its connection closed
        # (or, at worst, five seconds without a ping).
        assert wait_for(lambda: all(tracing(wand, pod) == "(False, False)" for pod in pods), timeout=60, interval=1)
        print("tracemalloc off in every replica %.1fs after SIGKILL of the CLI" % (time.monotonic() - started))
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()


def test_killing_kubectl_mid_window_stops_tracemalloc(leak, wand):
    pods = leak.pod_names("app=" + NAME)
    cli = subprocess.Popen([sys.executable, "-m", "kubectl_wand", "mem", "deploy/" + NAME, "--duration", "300s"],
                           env=dict(leak.env, PYTHONPATH=REPO), cwd=REPO, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, preexec_fn=default_signals)
    try:
        assert wait_for(lambda: all(tracing(wand, pod).endswith(", True)") for pod in pods), timeout=60, interval=1)
        kubectls = [pid for pid, cmd in children(cli.pid) if "kubectl" in cmd and " exec " in cmd]
        assert len(kubectls) == 2, children(cli.pid)
        for pid in kubectls:
            os.kill(pid, signal.SIGKILL)
        assert wait_for(lambda: all(tracing(wand, pod) == "(False, False)" for pod in pods), timeout=60, interval=1)
        _out, err = cli.communicate(timeout=60)
        assert cli.returncode != 0 and err.strip(), err  # each lost pod is one error line, not a hang
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()


def test_ephemeral_census(leak, wand):
    pod = leak.pod_names("app=" + NAME)[0]
    done = wand("mem", "pod/" + pod, "--ephemeral", "-o", "json", "--top", "3", timeout=240)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["by_size"][0]["type"] == "bytes"
    window = wand("mem", "pod/" + pod, "--ephemeral", "--duration", "3s", "-o", "json", timeout=240)
    assert window.returncode == 0, window.stderr
    report = json.loads(window.stdout)
    assert report["sites"][0]["stack"][0]["line"] == LEAK_LINE, report["sites"][:2]
    assert tracing(wand, pod) == "(False, False)"
