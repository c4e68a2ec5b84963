"""Which process, which interpreter, which rights, on the real cluster (issue 17, "On the cluster"): a printed
capability fix that leads to a working verb, a killed CLI that ends its agent in the pod, a `python3` on PATH
that never answers, containers that share a pid namespace, get-only exec rights. Workloads are named cc-* and
deleted after."""
from __future__ import annotations

import os
import shlex
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pytestmark = pytest.mark.cluster
NS = "wand-e2e"
SPIN = "import time\nwhile True: time.sleep(0.05)"


@pytest.fixture
def made(cluster):
    """Names of cc-* Deployments and Pods a test made: deleted after it, whatever happened."""
    names = []
    yield names
    for name in names:
        cluster.kubectl("delete", name, "--ignore-not-found", "--wait=false", timeout=60)


def test_printed_capability_fix_leads_to_a_working_verb(cluster, wand, made):
    """Issue 17: on a Deployment whose app drops to uid 1000 with `drop: [ALL], add: [SETUID, SETGID]`, applying
    the printed fix and retrying gave "may not give it files (no CAP_CHOWN)". Apply it for real: the verb works."""
    made.append("deployment/cc-dropuid")
    cluster.deploy("cc-dropuid", ["python3", "/app/dropuid.py", "python3", "-c", SPIN],
                   container={"securityContext": {"capabilities": {"drop": ["ALL"], "add": ["SETUID", "SETGID"]}}})
    refused = wand("exec-py", "deploy/cc-dropuid", "-n", NS, "--", "import os; os.getuid()")
    assert refused.returncode == 4, refused.stderr
    fix = refused.stderr.split("kubectl patch", 1)[1].split(" (adds", 1)[0]
    applied = subprocess.run(["kubectl"] + shlex.split("patch" + fix), env=cluster.env, capture_output=True,
                             text=True, timeout=60)
    assert applied.returncode == 0, applied.stderr
    cluster.kubectl("rollout", "status", "deploy/cc-dropuid", "--timeout=150s", check=True, timeout=180)
    cluster.settle("app=cc-dropuid", 1)
    ran = wand("exec-py", "deploy/cc-dropuid", "-n", NS, "--", "import os; os.getuid()")
    assert ran.returncode == 0 and ran.stdout.strip() == "1000", ran.stderr
    checked = wand("check", "deploy/cc-dropuid", "-n", NS)
    assert checked.returncode == 0, checked.stdout + checked.stderr
