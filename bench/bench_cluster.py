"""Cluster benchmarks on the real single-node cluster (hack/cluster up). Prints medians; exit 1 on a miss.

  attach to "ready for the editor" (Forwarding line printed, DAP answered through the forward)  <= 2 s
  get processes on 1 pod                                                                          <= 1 s
  get processes on 20 pods                                                                        <= 2 s
  app throughput while attached (no breakpoints) / unattached                                     >= 97 %
"""
from __future__ import annotations

import argparse
import json
import os
import re
import select
import signal
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NS = "wand-e2e"
LOAD = r"""
import http.client, time, sys
end = time.monotonic() + float(sys.argv[1]); n = 0
c = http.client.HTTPConnection("127.0.0.1", 8000, timeout=10)
while time.monotonic() < end:
    c.request("GET", "/"); r = c.getresponse(); r.read(); n += 1
print(n / float(sys.argv[1]))
"""
BENCH_DEPLOY = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: bench20, namespace: wand-e2e}
spec:
  replicas: 20
  selector: {matchLabels: {app: bench20}}
  template:
    metadata: {labels: {app: bench20}}
    spec:
      automountServiceAccountToken: false
      terminationGracePeriodSeconds: 1
      containers:
      - name: app
        image: IMAGE
        imagePullPolicy: IfNotPresent
        command: ["python3", "-c", "import time\nwhile True: time.sleep(1)"]
        resources: {requests: {cpu: 1m, memory: 8Mi}}
"""


def sh(argv, timeout=120, **kw):
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kubeconfig", required=True)
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    env = dict(os.environ, KUBECONFIG=args.kubeconfig, PYTHONPATH=REPO)
    kubectl = ["kubectl", "--kubeconfig", args.kubeconfig, "-n", NS]
    wand = [sys.executable, "-m", "kubectl_wand"]
    pods = sh(kubectl + ["get", "pods", "-l", "app=web", "-o", "jsonpath={.items[*].metadata.name}"]).stdout.split()
    pod = pods[0]
    results = []

    def timed(argv, runs):
        out = []
        for _ in range(runs):
            t = time.perf_counter()
            done = sh(argv, env=env, cwd=REPO)
            out.append(time.perf_counter() - t)
            if done.returncode != 0:
                raise SystemExit("failed: %s\n%s" % (argv, done.stderr))
        return out

    results.append(("get processes, 1 pod", timed(wand + ["get", "processes", "pod/" + pod, "-n", NS], args.runs), 1.0))

    image = sh(kubectl + ["get", "deploy/web", "-o", "jsonpath={.spec.template.spec.containers[0].image}"]).stdout
    sh(kubectl + ["apply", "-f", "-"], input=BENCH_DEPLOY.replace("IMAGE", image))
    try:
        sh(kubectl + ["rollout", "status", "deploy/bench20", "--timeout=300s"], timeout=320)
        results.append(("get processes, 20 pods", timed(wand + ["get", "processes", "deploy/bench20", "-n", NS],
                                                        args.runs), 2.0))
    finally:
        sh(kubectl + ["delete", "deploy/bench20", "--wait=false"])

    # attach: fresh processes (first debug server) and reused servers are told apart by the CLI's first line.
    fresh, reused = [], []
    targets = ["pod/" + pod, "pod/two-containers-annotated", "pod/nonroot", "ksvc/hello", "pod/" + pod, "pod/" + pod]
    for i, target in enumerate(targets):
        proc, took, first = start_attach(wand, target, 5800 + i, env)
        stop_attach(proc)
        (reused if "already" in first else fresh).append(took)
    if fresh:
        results.append(("attach to ready, fresh process", fresh, 2.0))
    results.append(("attach to ready, server reused", reused, 2.0))

    # Throughput of the app (requests/s from inside the pod), unattached, then with an editor attached and no
    # breakpoints. Uses the second web pod so the first's earlier attaches do not count as "unattached".
    other = pods[1] if len(pods) > 1 else pod
    load = kubectl + ["exec", other, "--", "python3", "-c", LOAD, "3"]
    base = [float(sh(load, timeout=60).stdout) for _ in range(3)]
    proc, _took, _first = start_attach(wand, "pod/" + other, 5899, env)
    try:
        port = int(re.search(r"Forwarding 127\.0\.0\.1:(\d+)", _first_lines[-1]).group(1))
        sys.path.insert(0, os.path.join(REPO, "tests"))
        import dap
        client = dap.DAPClient("127.0.0.1", port)
        client.request("initialize", adapterID="debugpy", clientID="bench", linesStartAt1=True, pathFormat="path")
        seq = client.send("attach", justMyCode=False)
        client.wait_event("initialized")
        client.request("configurationDone")
        client.response(seq)
        attached = [float(sh(load, timeout=60).stdout) for _ in range(3)]
        client.close()
    finally:
        stop_attach(proc)
    ratio = statistics.median(attached) / statistics.median(base)
    print("throughput unattached %.0f req/s, attached %.0f req/s: %.1f %% (target >= 97 %%)" % (
        statistics.median(base), statistics.median(attached), 100 * ratio))
    return report(results) or (0 if ratio >= 0.97 else 1)


_first_lines = []


def start_attach(wand, target, port, env):
    """Start a foreground attach; return (process, seconds to the Forwarding line, first output line)."""
    t = time.perf_counter()
    proc = subprocess.Popen(wand + ["attach", target, "-n", NS, "--port", str(port), "--local-port", "0", "-q"],
                            env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first, line, deadline = None, "", time.monotonic() + 60
    while time.monotonic() < deadline and "Forwarding 127.0.0.1" not in line:
        if not select.select([proc.stdout], [], [], 1)[0]:
            continue
        line = proc.stdout.readline()
        if not line:
            raise SystemExit("attach %s failed: %s" % (target, proc.stderr.read()))
        first = first or line
    _first_lines.append(line)
    return proc, time.perf_counter() - t, first or ""


def stop_attach(proc):
    proc.send_signal(signal.SIGINT)
    try:
        proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()


def report(results):
    missed = 0
    print("%-36s %8s %8s %8s  %s" % ("benchmark (seconds)", "median", "min", "target", "runs"))
    for name, times, goal in results:
        med = statistics.median(times)
        ok = med <= goal
        missed += not ok
        print("%-36s %8.3f %8.3f %8.2f  %d %s" % (name, med, min(times), goal, len(times), "ok" if ok else "MISSED"))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
