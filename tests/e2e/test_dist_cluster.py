"""The krew-installed zipapp against the real cluster, through kubectl: `kubectl wand ...` finds
$KREW_ROOT/bin/kubectl-wand, which unpacks itself and runs the agent in the pods (its sources are read from the
unpacked copy) and ships debugpy's sources from there to a target that lacks debugpy."""
from __future__ import annotations

import json
import os
import shutil
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tests"))
import distkit  # noqa: E402

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def krew_wand(cluster, tmp_path_factory):
    """Run `kubectl wand ...` with only the krew bin dir, kubectl and python3 on PATH."""
    if not shutil.which("go"):
        pytest.skip("go not on PATH: krew is built from the Go module proxy")
    proc = distkit.run([os.path.join(REPO, "krew", "install-krew")], timeout=1200)
    assert proc.returncode == 0, proc.stderr
    krew_bin = proc.stdout.strip().splitlines()[-1]
    base = tmp_path_factory.mktemp("krew-cluster")
    release = distkit.build(base / "release")
    installed = distkit.krew_install(krew_bin, release, base / "krew")
    assert installed.returncode == 0, installed.stderr
    tools = distkit.tools_dir(base / "tools")
    env = {"PATH": str(base / "krew" / "bin") + os.pathsep + tools, "HOME": str(base),
           "KUBECONFIG": cluster.kubeconfig, "WAND_CACHE": str(base / "cache")}

    def run(*args, timeout=120):
        return distkit.run(["kubectl", "wand"] + list(args), env=env, timeout=timeout)
    return run


def app_pid(krew_wand, cluster, pod):
    """The uvicorn process of a web pod (other tests may run their own Python in the same pod meanwhile)."""
    got = krew_wand("get", "processes", "pod/" + pod, "-n", cluster.namespace, "-o", "json")
    assert got.returncode == 0, got.stderr
    return str(next(p["pid"] for p in json.loads(got.stdout)["items"] if "uvicorn" in p["command"]))


def test_get_processes_through_the_krew_plugin(cluster, krew_wand):
    got = krew_wand("get", "processes", "deploy/web", "-n", cluster.namespace, "-o", "json")
    assert got.returncode == 0, got.stderr
    items = json.loads(got.stdout)["items"]
    assert sorted({p["pod"] for p in items}) == cluster.pod_names("app=web")
    assert all(p["python"].startswith("3.14") for p in items)
    table = krew_wand("get", "processes", "deploy/web", "-n", cluster.namespace)
    assert table.returncode == 0 and table.stdout.startswith("POD"), table.stderr


def test_exec_py_through_the_krew_plugin(cluster, krew_wand):
    pod = cluster.pod_names("app=web")[0]
    got = krew_wand("exec-py", "pod/" + pod, "-n", cluster.namespace, "--pid", app_pid(krew_wand, cluster, pod), "-q",
                    "--", "6 * 7")
    assert got.returncode == 0 and got.stdout.strip() == "42", got.stdout + got.stderr


def test_attach_ships_debugpy_from_the_zipapp(cluster, krew_wand):
    """A fresh web pod (its image has no debugpy): attach ships debugpy's sources from the zipapp. The pod is
    replaced afterwards, so the tests after this one find web pods with no debug server, as on a new cluster."""
    pod = cluster.pod_names("app=web")[0]
    lacks = cluster.kubectl("exec", pod, "-c", "app", "--", "python3", "-c", "import debugpy", timeout=60)
    try:
        got = krew_wand("attach", "pod/" + pod, "-n", cluster.namespace, "--pid", app_pid(krew_wand, cluster, pod),
                        "--port", "5697", "--no-forward", "-o", "json", timeout=180)
        assert got.returncode == 0, got.stdout + got.stderr
        result = json.loads(got.stdout)
        assert result["status"] in ("listening", "already"), result
        assert result["host"] == "127.0.0.1", result  # (a status at all means it answered DAP)
        if lacks.returncode != 0 and result["status"] == "listening":
            assert result["source"] == "shipped" and result["port"] == 5697, result
    finally:
        replace_pod(cluster, pod, "deploy/web")


def replace_pod(cluster, pod, workload):
    """Delete a pod (taking the debug server in it away) and wait until its workload is whole again."""
    cluster.kubectl("delete", "pod", pod, "--wait=true", "--timeout=60s", timeout=90, check=True)
    cluster.kubectl("rollout", "status", workload, "--timeout=120s", timeout=150, check=True)
