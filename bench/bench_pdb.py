"""Time from the command to pdb's first prompt, on a pod of the real cluster: `kubectl wand pdb POD` against
`kubectl exec -it POD -- python3 -m pdb -p 1` (CPython's own), interleaved rounds, medians; and where the main
thread is blocked (a sleeping main thread), whether each answers within 15 s.

  ours / python -m pdb -p (first prompt, pod)     <= 1.2
  ours answers where the main thread is blocked    (pdb -p never does)

Run under the cluster lock: flock /tmp/wand-e2e.lock .venv/bin/python bench/bench_pdb.py [--rounds 5]
Makes deploy/pdb-bench and deploy/pdb-bench-sleep in wand-e2e, deletes them after.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))
from ptyterm import Term  # noqa: E402

NS = "wand-e2e"
KUBECONFIG = os.environ.get("KUBECONFIG") or "/root/.cache/kubectl-wand/cluster/etc/admin.kubeconfig"
ENV = dict(os.environ, KUBECONFIG=KUBECONFIG, PYTHONPATH=REPO)


def kubectl(*args, check=True, timeout=180, input=None):
    return subprocess.run(["kubectl", "-n", NS] + list(args), env=ENV, capture_output=True, text=True,
                          timeout=timeout, check=check, input=input)


def deploy(name, command):
    import json
    image = kubectl("get", "deploy/web", "-o", "jsonpath={.spec.template.spec.containers[0].image}").stdout.strip()
    manifest = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": NS},
                "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                         "template": {"metadata": {"labels": {"app": name}},
                                      "spec": {"terminationGracePeriodSeconds": 1, "containers": [
                                          {"name": "app", "image": image, "imagePullPolicy": "IfNotPresent",
                                           "command": command}]}}}}
    kubectl("apply", "-f", "-", input=json.dumps(manifest))
    kubectl("rollout", "status", "deploy/" + name, "--timeout=150s")
    while True:
        pods = kubectl("get", "pods", "-l", "app=" + name, "--field-selector=status.phase=Running", "-o",
                       "jsonpath={.items[*].metadata.name}").stdout.split()
        if len(pods) == 1:
            return pods[0]
        time.sleep(0.5)  # the old pod of a re-applied Deployment is still terminating


def first_prompt(argv, wait=30.0):
    """Seconds to the first (Pdb) prompt, or None when none came within ``wait``; the session is quit."""
    started = time.monotonic()
    term = Term(argv, env=ENV, cwd=REPO)
    try:
        term.expect(r"\(Pdb\) ", wait)
        took = time.monotonic() - started
        term.line("q")
        term.wait(30)
        return took
    except AssertionError:
        return None
    finally:
        term.close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    ours = [sys.executable, "-m", "kubectl_wand", "pdb", "-q", "-n", NS]
    pod = deploy("pdb-bench", ["python3", "-c", "import time\nwhile True: time.sleep(0.01)"])
    sleeping = deploy("pdb-bench-sleep", ["python3", "-c", "import time; time.sleep(10**6)"])
    try:
        theirs_argv = ["kubectl", "-n", NS, "exec", "-it", pod, "--", "python3", "-m", "pdb", "-p", "1"]
        first_prompt(ours + ["pod/" + pod])  # warm both paths once (image pages, kubectl's discovery cache)
        first_prompt(theirs_argv)
        a, b = [], []
        for _ in range(args.rounds):
            a.append(first_prompt(ours + ["pod/" + pod]))
            b.append(first_prompt(theirs_argv))
        ok_a, ok_b = [x for x in a if x], [x for x in b if x]
        ma, mb = statistics.median(ok_a), statistics.median(ok_b)
        print("first prompt, pod: kubectl wand pdb median %.2fs %s; python -m pdb -p (kubectl exec -it) median "
              "%.2fs %s; ratio %.2f (target <= 1.2)" % (ma, [round(x, 2) for x in ok_a], mb,
                                                        [round(x, 2) for x in ok_b], ma / mb))
        blocked = subprocess.run(ours + ["pod/" + sleeping, "--timeout", "3"], env=ENV, capture_output=True,
                                 text=True, timeout=60)
        theirs_blocked = first_prompt(["kubectl", "-n", NS, "exec", "-it", sleeping, "--", "python3", "-m", "pdb",
                                       "-p", "1"], wait=15)
        print("blocked main thread: kubectl wand pdb exit %d in %s (%s); python -m pdb -p: %s" % (
            blocked.returncode, "<60s", blocked.stderr.strip().splitlines()[1] if blocked.stderr.count("\n") > 1
            else blocked.stderr.strip(), "no prompt within 15s" if theirs_blocked is None else "prompt"))
        return 0 if ma / mb <= 1.2 and blocked.returncode == 5 else 1
    finally:
        kubectl("delete", "deployment", "pdb-bench", "pdb-bench-sleep", "--wait=false", check=False)


if __name__ == "__main__":
    sys.exit(main())
