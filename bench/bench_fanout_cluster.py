"""profile and trace over many replicas on the cluster: wall time, how far apart the pods' windows were, and the
CLI's peak memory together with its kubectl children.

Deploys fo-bench (REPLICAS replicas of a tiny app, tiny requests) in namespace wand-e2e, runs each command
--rounds times, and deletes the Deployment. Memory: every 0.1 s the CLI's process tree is read from /proc
(the sum of RSS, which counts kubectl's shared binary once per copy, and the sum of PSS, which shares it out);
the peak of each is printed. Run it under the cluster lock: flock /tmp/wand-e2e.lock python3 bench/...
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

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NS = "wand-e2e"
APP = "import time\n\n\ndef tick(n):\n    return n + 1\n\n\nn = 0\nwhile True:\n    n = tick(n)\n    time.sleep(0.1)\n"


def kubectl(*args, input=None, check=True):
    return subprocess.run(["kubectl", "-n", NS] + list(args), input=input, capture_output=True, text=True,
                          timeout=400, check=check)


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
    rss = pss = 0
    for pid in pids:
        try:
            with open("/proc/%d/smaps_rollup" % pid) as f:
                for line in f:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1])
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1])
        except OSError:
            pass
    return rss, pss


def run(argv):
    """(wall s, peak RSS MB, peak PSS MB, peak process count, stderr)."""
    env = dict(os.environ, PYTHONPATH=REPO)
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=REPO, text=True)
    peak = [0, 0, 0]
    done = threading.Event()

    def watch():
        while not done.is_set():
            pids = tree(proc.pid)
            rss, pss = memory(pids)
            peak[0], peak[1], peak[2] = max(peak[0], rss), max(peak[1], pss), max(peak[2], len(pids))
            done.wait(0.1)
    t = threading.Thread(target=watch, daemon=True)
    t.start()
    _, err = proc.communicate(timeout=600)
    wall = time.perf_counter() - t0
    done.set()
    t.join()
    return wall, peak[0] / 1024, peak[1] / 1024, peak[2], err, proc.returncode


def spread(err):
    m = re.search(r"windows aligned within ([0-9.]+)s \(start\) and ([0-9.]+)s \(end\)", err)
    return (float(m.group(1)), float(m.group(2))) if m else (None, None)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--replicas", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    image = kubectl("get", "deploy/web", "-o", "jsonpath={.spec.template.spec.containers[0].image}").stdout.strip()
    with tempfile.NamedTemporaryFile("w", suffix=".py") as f:
        f.write(APP)
        f.flush()
        made = kubectl("create", "configmap", "fo-bench", "--from-file=fo_bench.py=" + f.name, "--dry-run=client",
                       "-o", "yaml").stdout
    kubectl("apply", "-f", "-", input=made)
    spec = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "fo-bench", "namespace": NS},
            "spec": {"replicas": args.replicas, "selector": {"matchLabels": {"app": "fo-bench"}}, "template": {
                "metadata": {"labels": {"app": "fo-bench"}},
                "spec": {"automountServiceAccountToken": False, "terminationGracePeriodSeconds": 1,
                         "volumes": [{"name": "code", "configMap": {"name": "fo-bench"}}],
                         "containers": [{"name": "app", "image": image, "imagePullPolicy": "IfNotPresent",
                                         "command": ["python3", "/code/fo_bench.py"],
                                         "resources": {"requests": {"cpu": "5m", "memory": "16Mi"}},
                                         "volumeMounts": [{"name": "code", "mountPath": "/code"}]}]}}}}
    kubectl("apply", "-f", "-", input=json.dumps(spec))
    try:
        kubectl("rollout", "status", "deploy/fo-bench", "--timeout=300s")
        wand = [sys.executable, "-m", "kubectl_wand", "-n", NS]
        cases = {
            "trace 6s": wand + ["trace", "deploy/fo-bench", "fo_bench.py:5", "n", "--duration", "6s"],
            "profile 3s": wand + ["profile", "deploy/fo-bench", "--duration", "3s", "--rate", "20", "--idle"],
            "stack": wand + ["stack", "deploy/fo-bench"],
        }
        rows = {name: [] for name in cases}
        for _ in range(args.rounds):
            for name, argv in cases.items():
                wall, rss, pss, procs, err, code = run(argv)
                if code != 0:
                    print("%s failed (%d): %s" % (name, code, err[-600:]))
                hits = [int(h) for h in re.findall(r": (\d+) hit\(s\)", err)]
                rows[name].append((wall, rss, pss, procs, spread(err), sum(1 for h in hits if h == 0)))
        print("%d replicas, %d rounds (medians; peaks over the run of the CLI and its children)" % (
            args.replicas, args.rounds))
        for name, r in rows.items():
            starts = [s[0] for *_x, s, _z in r if s[0] is not None]
            ends = [s[1] for *_x, s, _z in r if s[1] is not None]
            print("%-11s wall %.2fs  peak RSS %.0f MB  peak PSS %.0f MB  processes %d  window spread start %s "
                  "end %s  pods with 0 hits %s" % (
                      name, statistics.median(x[0] for x in r), statistics.median(x[1] for x in r),
                      statistics.median(x[2] for x in r), max(x[3] for x in r),
                      "%.2fs" % max(starts) if starts else "-", "%.2fs" % max(ends) if ends else "-",
                      max(x[5] for x in r) if name.startswith("trace") else "-"))
    finally:
        kubectl("delete", "deployment", "fo-bench", "--wait=false", check=False)
        kubectl("delete", "configmap", "fo-bench", "--wait=false", check=False)


if __name__ == "__main__":
    main()
