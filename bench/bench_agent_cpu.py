"""CPU spent inside a pod by each verb (the agent, its samplers and payloads), against a bare exec's.

Issue 22, "Fan-out": the verbs' excess over N bare execs at 20/40 pods was CPU inside the pods, on the same cores
as everything else. This measures it directly: the pod's cgroup CPU counter (cgroup v1 cpuacct.usage, or v2
cpu.stat usage_usec) read before and after each run of

  floor         kubectl exec POD -- python3 -S -c pass
  get processes kubectl wand get processes pod/POD
  stack         kubectl wand stack pod/POD
  exec-py       kubectl wand exec-py pod/POD -- pass
  profile 1s / trace 1s / mem 1s   (their duration spent mostly asleep)

on one pod of a Deployment made here (agent-cpu-bench: a tiny app asleep between ticks), interleaved rounds with
the order rotated each round; medians with their IQR in ms of CPU, and each verb minus the floor. The app's own
CPU in the same seconds is counted too (it ticks every 0.1 s: well under 1 ms a second).

--against DIR runs each verb also from another checkout in the same rounds (an A/B under the same load).

Run under both locks (it uses the shared cluster): flock /tmp/wand-e2e.lock flock /tmp/wand-bench.lock
python3 bench/bench_agent_cpu.py --kubeconfig ...
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchstats import quartiles, wand_from  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NS = "wand-e2e"
NAME = "agent-cpu-bench"
APP = "import time\n\n\ndef tick(n):\n    return n + 1\n\n\nn = 0\nwhile True:\n    n = tick(n)\n    time.sleep(0.1)\n"
KUBECTL = ["kubectl"]


def kubectl(*args, input=None, check=True, timeout=300):
    return subprocess.run(KUBECTL + ["-n", NS] + list(args), input=input, capture_output=True, text=True,
                          timeout=timeout, check=check)


def deploy(image):
    with tempfile.NamedTemporaryFile("w", suffix=".py") as f:
        f.write(APP)
        f.flush()
        made = kubectl("create", "configmap", NAME, "--from-file=app.py=" + f.name, "--dry-run=client",
                       "-o", "yaml").stdout
    kubectl("apply", "-f", "-", input=made)
    spec = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": NAME, "namespace": NS},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": NAME}}, "template": {
                "metadata": {"labels": {"app": NAME}},
                "spec": {"automountServiceAccountToken": False, "terminationGracePeriodSeconds": 1,
                         "enableServiceLinks": False,
                         "volumes": [{"name": "code", "configMap": {"name": NAME}}],
                         "containers": [{"name": "app", "image": image, "imagePullPolicy": "IfNotPresent",
                                         "command": ["python3", "/code/app.py"],
                                         "volumeMounts": [{"name": "code", "mountPath": "/code"}]}]}}}}
    kubectl("apply", "-f", "-", input=json.dumps(spec))
    kubectl("rollout", "status", "deploy/" + NAME, "--timeout=240s", timeout=270)
    deadline = time.monotonic() + 120
    while True:
        items = json.loads(kubectl("get", "pods", "-l", "app=" + NAME, "-o", "json").stdout)["items"]
        running = [p for p in items if p["status"].get("phase") == "Running" and not p["metadata"].get(
            "deletionTimestamp")]
        if len(items) == 1 and running:
            return running[0]["metadata"]["name"], running[0]["metadata"]["uid"]
        if time.monotonic() > deadline:
            raise SystemExit("the pod of %s is not Running after 120 s" % NAME)
        time.sleep(1)


def cpu_counter(uid):
    """A function that reads the pod's cgroup CPU in ns."""
    for path in glob.glob("/sys/fs/cgroup/cpuacct/kubepods*/**/pod%s/cpuacct.usage" % uid, recursive=True):
        return lambda: int(open(path).read())
    for path in glob.glob("/sys/fs/cgroup/kubepods*/**/*pod%s*/cpu.stat" % uid.replace("-", "_"), recursive=True) + \
            glob.glob("/sys/fs/cgroup/kubepods*/**/pod%s/cpu.stat" % uid, recursive=True):
        def v2(path=path):
            for line in open(path):
                if line.startswith("usage_usec"):
                    return int(line.split()[1]) * 1000
        return v2
    raise SystemExit("no cgroup CPU counter found for pod %s" % uid)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kubeconfig")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--keep", action="store_true", help="leave the Deployment")
    ap.add_argument("--against", metavar="DIR", help="also run every verb from the kubectl-wand in DIR (another "
                    "checkout, e.g. main's) in the same rounds: rows marked [against]")
    args = ap.parse_args()
    if args.kubeconfig:
        KUBECTL.extend(["--kubeconfig", args.kubeconfig])
    env = dict(os.environ, PYTHONPATH=REPO, **({"KUBECONFIG": args.kubeconfig} if args.kubeconfig else {}))
    image = kubectl("get", "deploy/web", "-o", "jsonpath={.spec.template.spec.containers[0].image}").stdout.strip()
    try:
        pod, uid = deploy(image)
        usage = cpu_counter(uid)
        wand = [sys.executable, "-m", "kubectl_wand", "-n", NS]
        target = "pod/" + pod
        cases = {
            "floor (bare exec)": KUBECTL + ["-n", NS, "exec", pod, "--", "python3", "-S", "-c", "pass"],
            "get processes": wand + ["get", "processes", target],
            "stack": wand + ["stack", target],
            "exec-py": wand + ["exec-py", target, "--", "pass"],
            "profile 1s": wand + ["profile", target, "--duration", "1s", "--idle", "--format", "top"],
            "trace 1s": wand + ["trace", target, "app.py:5", "n", "--duration", "1s"],
            "mem 1s": wand + ["mem", target, "--duration", "1s"],
        }
        if args.against:
            theirs = wand_from(args.against, sys.executable)
            for n, argv in list(cases.items())[1:]:
                cases[n + " [against]"] = theirs + argv[3:]  # after python -m kubectl_wand
        names = list(cases)
        got = {n: [] for n in names}
        for i in range(args.rounds + 1):  # the first round warms up, untimed
            for n in names[i % len(names):] + names[:i % len(names)]:
                before = usage()
                run = subprocess.run(cases[n], env=env, capture_output=True, text=True, timeout=120, cwd=REPO)
                spent = (usage() - before) / 1e6
                if run.returncode != 0:
                    raise SystemExit("%s failed (exit %d): %s" % (n, run.returncode, run.stderr[-1500:]))
                if i:
                    got[n].append(spent)
        floor = statistics.median(got[names[0]])
        print("CPU inside the pod per run, ms (%d interleaved rounds; load average now %s)" % (
            args.rounds, " ".join("%.2f" % x for x in os.getloadavg())))
        print("%-30s %7s %15s %9s" % ("", "median", "IQR", "- floor"))
        for n in names:
            q1, q3 = quartiles(got[n])
            med = statistics.median(got[n])
            print("%-30s %7.1f %7.1f-%7.1f %9.1f" % (n, med, q1, q3, med - floor))
    finally:
        if not args.keep:
            kubectl("delete", "deployment", NAME, "--wait=false", check=False)
            kubectl("delete", "configmap", NAME, "--wait=false", check=False)


if __name__ == "__main__":
    main()
