"""kubectl_complete-wand against the real cluster: names per kind (namespace-aware), pods, containers, PIDs."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pytestmark = pytest.mark.cluster
NS = ["-n", "wand-e2e"]


@pytest.fixture(scope="module")
def complete(cluster):
    """(candidates without descriptions, directive) for the words then the word being completed."""
    def run(*words, timeout=60):
        proc = subprocess.run([sys.executable, "-m", "kubectl_wand.completion", *words], capture_output=True,
                              text=True, timeout=timeout, cwd=REPO, env=dict(cluster.env, PYTHONPATH=REPO),
                              stdin=subprocess.DEVNULL)
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr
        lines = proc.stdout.splitlines()
        assert lines[-1].startswith(":"), proc.stdout
        return [l.split("\t")[0] for l in lines[:-1]], int(lines[-1][1:])
    return run


def test_names_of_each_kind_in_the_namespace_on_the_line(complete):
    start = time.monotonic()
    deploys, directive = complete("get", "processes", *NS, "deploy/")
    print("deploy/ names from the API: %.2fs" % (time.monotonic() - start))
    assert {"deploy/web", "deploy/gunicorn", "deploy/reload"} <= set(deploys) and directive == 4
    assert complete("attach", "--namespace=wand-e2e", "deploy/w") == (["deploy/web"], 4)
    assert "svc/web" in complete("check", *NS, "svc/")[0]
    assert "ksvc/hello" in complete("check", *NS, "ksvc/")[0]


def test_namespace_decides_the_names(complete):
    assert "deploy/web" not in complete("get", "processes", "-n", "default", "deploy/")[0]
    assert "deploy/web" not in complete("get", "processes", "--namespace=kube-system", "deploy/")[0]
    assert "wand-e2e" in complete("get", "processes", "-n", "")[0]
    assert complete("get", "processes", "-n", "wand-")[0] == ["wand-e2e"]


def test_bare_word_is_a_pod_name(cluster, complete):
    assert complete("attach", *NS, "two-") == (["two-containers", "two-containers-annotated"], 4)
    got, _ = complete("exec-py", *NS, "")
    assert set(cluster.pod_names("app=web")) <= set(got) and "deploy/" in got


def test_containers_of_the_target(complete):
    assert complete("exec-py", *NS, "pod/two-containers", "-c", "") == (["sidecar", "app"], 4)
    assert complete("attach", *NS, "deploy/web", "--container", "") == (["app"], 4)
    assert complete("attach", *NS, "-c", "") == ([], 4)  # no target yet: no guess


def test_pids_of_the_python_processes_in_the_target(cluster, complete):
    pod = cluster.pod_names("app=web")[0]
    listed = subprocess.run([sys.executable, "-m", "kubectl_wand", "get", "processes", "pod/" + pod, *NS, "-o",
                             "json"], capture_output=True, text=True, timeout=120, cwd=REPO,
                            env=dict(cluster.env, PYTHONPATH=REPO), stdin=subprocess.DEVNULL)
    assert listed.returncode == 0, listed.stderr
    pids = [str(p["pid"]) for p in json.loads(listed.stdout)["items"]]
    start = time.monotonic()
    got, directive = complete("attach", *NS, "deploy/web", "--pod", pod, "--pid", "")
    print("--pid through kubectl exec: %.2fs" % (time.monotonic() - start))
    assert got == pids and directive == 4


def test_contexts_of_the_kubeconfig(cluster, complete):
    names = subprocess.run(["kubectl", "config", "get-contexts", "-o", "name"], capture_output=True, text=True,
                           timeout=30, env=cluster.env).stdout.split()
    assert complete("get", "processes", "--context", "") == (names, 4)


def test_unreachable_namespace_prints_nothing(complete):
    assert complete("get", "processes", "-n", "no-such-namespace", "deploy/") == ([], 4)


def test_completion_in_every_position(complete):
    """Flags before the verb, between its words and before the target count for completion as for the command."""
    assert "wand-e2e" in complete("-n", "")[0]  # a global flag's value, before any verb
    assert "get" in complete("-n", "wand-e2e", "")[0]  # then the verbs
    assert complete("-n", "wand-e2e", "get", "") == (["processes"], 4)
    assert "deploy/web" in complete("-n", "wand-e2e", "get", "processes", "deploy/")[0]
    assert "deploy/web" in complete("get", "-n", "wand-e2e", "processes", "deploy/")[0]
    assert "deploy/web" in complete("--namespace=wand-e2e", "stack", "deploy/")[0]
    assert "--all-pods" in complete("-n", "wand-e2e", "attach", "--all")[0]
