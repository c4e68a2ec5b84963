"""Every fan-out verb over many replicas on the cluster, against its floor; and the CLI's memory with its kubectl
children at more pods than one node holds.

Speed (issue 22, "Fan-out": every verb <= 1.3x its floor at 20 and 40 pods): for each --replicas N the Deployment
fs-fan (N replicas of a tiny app, tiny requests) in namespace wand-e2e, and interleaved rounds (the order rotated
each round) of

  get processes deploy/fs-fan            / floor: N bare `kubectl exec POD -- python3 -S -c pass` at once
  stack deploy/fs-fan                    / the same floor
  exec-py deploy/fs-fan --all-pods       / the same floor
  profile ... --duration 3s              / floor 3s: N bare execs of python3 -S -c 'import time; time.sleep(3)'
  trace ... --duration 3s                / floor 3s
  mem ... --duration 3s                  / floor 3s

One table per N: median and IQR of each verb's wall time, the ratio of the medians, the IQR of the per-round
ratios (each round's verb over the same round's floor), and peak memory of the CLI's process tree (Rss summed,
which counts kubectl's shared binary once per copy, and Pss, which shares it out), sampled every 0.05 s.

Memory (--memory 40,100,300): one node holds at most its max-pods (60 here), so N pods beyond the Deployment's
are simulated: the CLI runs with kubectl_wand.transport.pods.pod_transports wrapped to repeat each real pod's
transport until there are N (a fresh transport each, so N real `kubectl exec` calls, N agents, N answers; only
the pods are shared). What is measured is real: the CLI's process tree, its kubectl children, the API server and
kubelet serving N execs. Run it under both locks: flock /tmp/wand-e2e.lock flock /tmp/wand-bench.lock python3
bench/bench_fanout_cluster.py --kubeconfig ...
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchstats import quartiles, wand_from  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NS = "wand-e2e"
NAME = "fs-fan"
DURATION = 3
APP = "import time\n\n\ndef tick(n):\n    return n + 1\n\n\nn = 0\nwhile True:\n    n = tick(n)\n    time.sleep(0.1)\n"
# Run as `python3 -c SIMULATE N argv...`: the CLI with every pod's transport repeated until there are N.
SIMULATE = r"""
import copy, sys
want = int(sys.argv[1]); sys.argv = ["kubectl-wand"] + sys.argv[2:]
from kubectl_wand.transport import pods
real = pods.pod_transports
def repeated(*a, **kw):
    made = real(*a, **kw)
    out = [made[i % len(made)] if i < len(made) else copy.copy(made[i % len(made)]) for i in range(want)]
    for t in out[len(made):]:
        t.early, t.silent = None, []
    return out
pods.pod_transports = repeated
from kubectl_wand.launch import main
main()
"""


def kubectl(*args, input=None, check=True, timeout=400):
    return subprocess.run(KUBECTL + ["-n", NS] + list(args), input=input, capture_output=True, text=True,
                          timeout=timeout, check=check)


KUBECTL = ["kubectl"]


def tree(root):
    """pids of ``root`` and its descendants."""
    children = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open("/proc/%s/stat" % name) as f:
                    ppid = int(f.read().rpartition(")")[2].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def memory(pids):
    """(Rss, Pss, Pss of the root alone) in kB."""
    rss = pss = own = 0
    for pid in pids:
        try:
            with open("/proc/%d/smaps_rollup" % pid) as f:
                for line in f:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1])
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1])
                        if pid == pids[0]:
                            own = int(line.split()[1])
        except OSError:
            pass
    return rss, pss, own


class Run:
    """One command: wall seconds, exit code, stderr, and the peaks of its process tree."""

    def __init__(self, argv, env, watch_memory=True):
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=REPO)
        self.rss = self.pss = self.own = self.procs = 0
        done = threading.Event()

        def watch():
            while not done.is_set():
                pids = tree(proc.pid)
                rss, pss, own = memory(pids)
                self.rss, self.pss = max(self.rss, rss), max(self.pss, pss)
                self.own, self.procs = max(self.own, own), max(self.procs, len(pids))
                done.wait(0.05)
        t = threading.Thread(target=watch, daemon=True)
        if watch_memory:
            t.start()
        err = proc.communicate(timeout=600)[1]
        self.wall = time.perf_counter() - t0
        done.set()
        if watch_memory:
            t.join()
        self.code, self.err = proc.returncode, err.decode(errors="replace")


def floor(pods, command):
    """N bare `kubectl exec POD -- COMMAND` at once: seconds (a failed exec ends the benchmark)."""
    t = time.perf_counter()
    procs = [subprocess.Popen(KUBECTL + ["-n", NS, "exec", p, "--"] + command, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE) for p in pods]
    errs = [p.communicate(timeout=120)[1] for p in procs]
    took = time.perf_counter() - t
    bad = [(pod, e) for pod, e, p in zip(pods, errs, procs) if p.returncode != 0]
    if bad:
        raise SystemExit("floor: kubectl exec failed in %d pod(s), e.g. %s: %s" % (
            len(bad), bad[0][0], bad[0][1].decode(errors="replace")[-300:]))
    return took


def deploy(replicas, image):
    with tempfile.NamedTemporaryFile("w", suffix=".py") as f:
        f.write(APP)
        f.flush()
        made = kubectl("create", "configmap", NAME, "--from-file=fs_fan.py=" + f.name, "--dry-run=client",
                       "-o", "yaml").stdout
    kubectl("apply", "-f", "-", input=made)
    spec = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": NAME, "namespace": NS},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": NAME}}, "template": {
                "metadata": {"labels": {"app": NAME}},
                "spec": {"automountServiceAccountToken": False, "terminationGracePeriodSeconds": 1,
                         "enableServiceLinks": False,
                         "volumes": [{"name": "code", "configMap": {"name": NAME}}],
                         "containers": [{"name": "app", "image": image, "imagePullPolicy": "IfNotPresent",
                                         "command": ["python3", "/code/fs_fan.py"],
                                         "resources": {"requests": {"cpu": "5m", "memory": "16Mi"}},
                                         "volumeMounts": [{"name": "code", "mountPath": "/code"}]}]}}}}
    kubectl("apply", "-f", "-", input=json.dumps(spec))
    kubectl("rollout", "status", "deploy/" + NAME, "--timeout=300s", timeout=330)
    deadline = time.monotonic() + 180
    while True:  # a scale-down leaves terminating pods: wait until exactly N are there, all Running
        items = json.loads(kubectl("get", "pods", "-l", "app=" + NAME, "-o", "json").stdout)["items"]
        running = [p["metadata"]["name"] for p in items if p["status"].get("phase") == "Running"
                   and not p["metadata"].get("deletionTimestamp")]
        if len(items) == replicas and len(running) == replicas:
            return running
        if time.monotonic() > deadline:
            raise SystemExit("%d of %d pods of %s Running after 180 s" % (len(running), replicas, NAME))
        time.sleep(1)


def cases(wand, env, pods):
    target = "deploy/" + NAME
    d = "%ds" % DURATION
    verbs = {
        "get processes": wand + ["get", "processes", target],
        "stack": wand + ["stack", target],
        "exec-py --all-pods": wand + ["exec-py", target, "--all-pods", "--", "pass"],
        "profile --duration %s" % d: wand + ["profile", target, "--duration", d, "--format", "top"],
        "trace --duration %s" % d: wand + ["trace", target, "fs_fan.py:5", "n", "--duration", d],
        "mem --duration %s" % d: wand + ["mem", target, "--duration", d],
    }
    out = {"floor": lambda: floor(pods, ["python3", "-S", "-c", "pass"]),
           "floor %s" % d: lambda: floor(pods, ["python3", "-S", "-c", "import time; time.sleep(%d)" % DURATION])}
    for name, argv in verbs.items():
        out[name] = (lambda argv: lambda: Run(argv, env))(argv)
    return out


def interleave(todo, rounds):
    """{name: [result]}: one untimed warm-up round, then ``rounds`` rounds, the order rotated by one each round."""
    names = list(todo)
    for n in names:
        check(n, todo[n]())
    got = {n: [] for n in names}
    for i in range(rounds):
        for n in names[i % len(names):] + names[:i % len(names)]:
            got[n].append(check(n, todo[n]()))
    return got


def check(name, result):
    if isinstance(result, Run) and result.code != 0:
        raise SystemExit("%s failed (exit %d): %s" % (name, result.code, result.err[-1500:]))
    return result


def wall(r):
    return r.wall if isinstance(r, Run) else r


def speed_table(n, got):
    print("\n%d replicas, %d interleaved rounds; load average now %s" % (
        n, len(got["floor"]), " ".join("%.2f" % x for x in os.getloadavg())))
    print("%-26s %6s %13s %6s %13s %8s %8s %8s %s" % ("seconds", "median", "IQR", "ratio", "IQR/round", "peak Pss",
                                                      "Rss", "CLI Pss", "windows (start/end, worst)"))
    for name, results in got.items():
        times = [wall(r) for r in results]
        med, (q1, q3) = statistics.median(times), quartiles(times)
        line = "%-26s %6.2f %6.2f-%6.2f" % (name, med, q1, q3)
        if name.startswith("floor"):
            print(line)
            continue
        ref = "floor %ds" % DURATION if "--duration" in name else "floor"
        floors = [wall(r) for r in got[ref]]
        ratio = med / statistics.median(floors)
        r1, r3 = quartiles([a / b for a, b in zip(times, floors)])
        spreads = [re.search(r"windows aligned within ([0-9.]+)s \(start\) and ([0-9.]+)s \(end\)", r.err)
                   for r in results]
        spreads = [(float(m.group(1)), float(m.group(2))) for m in spreads if m]
        print("%s %6.2f %6.2f-%6.2f %6.0fMB %6.0fMB %6.0fMB %s%s" % (
            line, ratio, r1, r3, statistics.median(r.pss for r in results) / 1024,
            statistics.median(r.rss for r in results) / 1024, statistics.median(r.own for r in results) / 1024,
            "%.2f/%.2f" % (max(s[0] for s in spreads), max(s[1] for s in spreads)) if spreads else "-",
            "" if ratio <= 1.3 else "  over 1.3x"))


def memory_table(wand, env, counts, rounds):
    """The CLI's process tree at each N (simulated beyond the Deployment's pods): peaks, medians of rounds."""
    print("\nmemory of the CLI and its kubectl children (peaks; medians of %d rounds; N beyond the Deployment's "
          "pods simulated: each pod reached several times); load average now %s" % (
              rounds, " ".join("%.2f" % x for x in os.getloadavg())))
    print("%-30s %5s %8s %12s %8s %12s %7s %6s" % ("command", "N", "Pss", "IQR", "Rss", "CLI Pss", "procs",
                                                  "wall"))
    for verb in (["get", "processes"], ["stack"]):
        for n in counts:
            runs = []
            for _ in range(rounds):
                argv = [sys.executable, "-c", SIMULATE, str(n)] + wand[3:] + verb + ["deploy/" + NAME]
                runs.append(check(" ".join(verb), Run(argv, env)))
            pss = [r.pss / 1024 for r in runs]
            q1, q3 = quartiles(pss)
            print("%-30s %5d %6.0fMB %5.0f-%5.0fMB %6.0fMB %10.0fMB %7d %5.1fs" % (
                " ".join(verb), n, statistics.median(pss), q1, q3, statistics.median(r.rss for r in runs) / 1024,
                statistics.median(r.own for r in runs) / 1024, max(r.procs for r in runs),
                statistics.median(r.wall for r in runs)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kubeconfig")
    ap.add_argument("--replicas", type=int, nargs="*", default=[20, 40])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--memory", type=lambda s: [int(x) for x in s.split(",")], default=[],
                    help="e.g. 40,100,300: the CLI's memory at these pod counts (after the speed tables)")
    ap.add_argument("--memory-rounds", type=int, default=3)
    ap.add_argument("--only", help="a regular expression: only the verbs it matches (and the floors)")
    ap.add_argument("--keep", action="store_true", help="leave the Deployment (the next run starts faster)")
    ap.add_argument("--against", metavar="DIR", help="also run every verb from the kubectl-wand in DIR (another "
                    "checkout, e.g. main's) in the same rounds: rows marked [against]")
    args = ap.parse_args()
    if args.kubeconfig:
        KUBECTL.extend(["--kubeconfig", args.kubeconfig])
    env = dict(os.environ, PYTHONPATH=REPO, **({"KUBECONFIG": args.kubeconfig} if args.kubeconfig else {}))
    import compileall  # as installed: its bytecode compiled (see bench_speed_cluster.py)
    compileall.compile_dir(os.path.join(REPO, "kubectl_wand"), quiet=1)
    if args.against:
        compileall.compile_dir(os.path.join(args.against, "kubectl_wand"), quiet=1)
    print("load average at the start %s" % " ".join("%.2f" % x for x in os.getloadavg()), flush=True)
    image = kubectl("get", "deploy/web", "-o", "jsonpath={.spec.template.spec.containers[0].image}").stdout.strip()
    wand = [sys.executable, "-m", "kubectl_wand", "-n", NS]
    try:
        for n in args.replicas:
            pods = deploy(n, image)
            todo = cases(wand, env, pods)
            if args.against:
                other = cases(wand_from(args.against, sys.executable) + wand[3:], env, pods)
                todo.update({k + " [against]": v for k, v in other.items() if not k.startswith("floor")})
            if args.only:
                todo = {k: v for k, v in todo.items() if k.startswith("floor") or re.search(args.only, k)}
            speed_table(n, interleave(todo, args.rounds))
            sys.stdout.flush()
        if args.memory:
            deploy(min(40, max(args.memory)), image)
            memory_table(wand, env, args.memory, args.memory_rounds)
    finally:
        if not args.keep:
            kubectl("delete", "deployment", NAME, "--wait=false", check=False)
            kubectl("delete", "configmap", NAME, "--wait=false", check=False)


if __name__ == "__main__":
    main()
