"""Fixtures for tests that need the real single-node cluster made by hack/cluster.

`cluster` (session scope) runs `hack/cluster up` once: idempotent, a few seconds when the cluster is
already up, long when cold (it builds Kubernetes: CI should run `hack/cluster up` before pytest). Tests
using it are skipped when the cluster cannot start here (not root, no Go, unsuitable host), unless
WAND_REQUIRE_CLUSTER=1, in which case the fixture fails with hack/cluster's output.

To run the same tests against another cluster (kind, minikube, ...), load the images and deploy the
workloads there (docs/e2e-other-clusters.md), then set WAND_E2E_KUBECONFIG=/path/to/kubeconfig: the
fixture then uses it as is and never runs hack/cluster.
"""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from procs import default_signals  # tests/procs.py (tests/conftest.py, loaded first, put tests/ on sys.path)

REPO = Path(__file__).resolve().parents[2]
HACK_CLUSTER = REPO / "hack" / "cluster"
NAMESPACE = "wand-e2e"
# hack/cluster's exit codes for "cannot start here" (see the script's header)
CANNOT_START = {3: "not root", 4: "no Go toolchain or no kubectl", 5: "host unsuitable"}
UP_TIMEOUT = int(os.environ.get("WAND_CLUSTER_UP_TIMEOUT", "3600"))


@dataclass
class Cluster:
    kubeconfig: str
    namespace: str = NAMESPACE
    env: dict = field(default_factory=dict)
    external: bool = False  # True: not hack/cluster's own cluster (WAND_E2E_KUBECONFIG)

    def kubectl(self, *args: str, timeout: float = 60, check: bool = False, input: str | None = None,
                namespaced: bool = True) -> subprocess.CompletedProcess:
        """Run kubectl against the cluster (in `namespace` unless namespaced=False); text output."""
        cmd = ["kubectl", "--kubeconfig", self.kubeconfig]
        if namespaced:
            cmd += ["-n", self.namespace]
        return subprocess.run(cmd + list(args), env=self.env, capture_output=True, text=True,
                              timeout=timeout, check=check, input=input)

    def app_image(self) -> str:
        """The e2e app image (CPython 3.14, debugpy, the apps under /app), as deploy/web runs it."""
        out = self.kubectl("get", "deploy/web", "-o", "jsonpath={.spec.template.spec.containers[0].image}",
                           check=True)
        return out.stdout.strip()

    def deploy(self, name: str, command: list, replicas: int = 1, container: dict | None = None,
               pod: dict | None = None, wait: bool = True):
        """Apply a Deployment `name` (label app=name) of the app image running `command`, and wait for it."""
        import json
        spec = {"name": "app", "image": self.app_image(), "imagePullPolicy": "IfNotPresent", "command": command}
        spec.update(container or {})
        template = {"automountServiceAccountToken": False, "terminationGracePeriodSeconds": 1, "containers": [spec]}
        template.update(pod or {})
        manifest = {"apiVersion": "apps/v1", "kind": "Deployment",
                    "metadata": {"name": name, "namespace": self.namespace},
                    "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                             "template": {"metadata": {"labels": {"app": name}}, "spec": template}}}
        self.kubectl("apply", "-f", "-", input=json.dumps(manifest), check=True)
        if wait:
            self.kubectl("rollout", "status", "deploy/" + name, "--timeout=150s", check=True, timeout=180)
            self.settle("app=" + name, replicas)

    def settle(self, selector: str, count: int, timeout: float = 90):
        """Wait until exactly `count` pods match and none is terminating (a rollout's old pods are gone)."""
        import json
        import time
        deadline = time.monotonic() + timeout
        while True:
            items = json.loads(self.kubectl("get", "pods", "-l", selector, "-o", "json", check=True).stdout)["items"]
            if len(items) == count and not any(p["metadata"].get("deletionTimestamp") for p in items):
                return
            if time.monotonic() > deadline:
                raise AssertionError("pods %s did not settle to %d: %d" % (selector, count, len(items)))
            time.sleep(0.5)  # the API offers no cheaper signal for "the old pods are gone" that kubectl exposes

    def pod_names(self, selector: str, timeout: float = 30) -> list[str]:
        """Names of the Running pods matching a label selector, sorted."""
        out = self.kubectl("get", "pods", "-l", selector, "--field-selector=status.phase=Running",
                           "-o", "jsonpath={.items[*].metadata.name}", timeout=timeout, check=True)
        return sorted(out.stdout.split())


def _require() -> bool:
    return os.environ.get("WAND_REQUIRE_CLUSTER") == "1"


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    external = os.environ.get("WAND_E2E_KUBECONFIG")
    if external:
        return Cluster(kubeconfig=external, namespace=NAMESPACE, env=dict(os.environ, KUBECONFIG=external),
                       external=True)
    try:
        proc = subprocess.run([str(HACK_CLUSTER), "up"], capture_output=True, text=True,
                              timeout=UP_TIMEOUT, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"hack/cluster up timed out after {UP_TIMEOUT}s:\n{e.stderr or ''}", pytrace=False)
    output = f"hack/cluster up exited {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        if proc.returncode in CANNOT_START and not _require():
            pytest.skip(f"cluster cannot start here ({CANNOT_START[proc.returncode]}): {last}")
        pytest.fail(output, pytrace=False)
    kubeconfig = proc.stdout.strip().splitlines()[-1]
    env = dict(os.environ, KUBECONFIG=kubeconfig)
    return Cluster(kubeconfig=kubeconfig, namespace=NAMESPACE, env=env)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """The first selected test that uses `cluster` may have to wait for a cold `up`: give it a timeout
    that covers it (pytest-timeout counts fixture setup in the test's time)."""
    for item in items:
        if "cluster" in getattr(item, "fixturenames", ()):
            if item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(UP_TIMEOUT + 300))
            break


@pytest.fixture(scope="module")
def wand(cluster):
    """Run the real CLI against the cluster: wand(*args, env=None, timeout=120, input=None) -> CompletedProcess."""
    import sys

    def run(*args, env=None, timeout=120, input=None):
        full = dict(cluster.env, PYTHONPATH=str(REPO))
        full.update(env or {})
        return subprocess.run([sys.executable, "-m", "kubectl_wand"] + [str(a) for a in args], capture_output=True,
                              text=True, timeout=timeout, cwd=str(REPO), env=full, input=input,
                              stdin=None if input else subprocess.DEVNULL, preexec_fn=default_signals)
    return run
