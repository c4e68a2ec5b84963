"""Cluster benchmarks on the real single-node cluster (hack/cluster up). Prints medians; exit 1 on a miss.

  attach to "ready for the editor" (Forwarding line printed, listening socket seen in the pod)   <= 2 s
  get processes on 1 pod                                                                          <= 1 s
  get processes on 20 pods                                                                        <= 2 s
  app throughput while attached (no breakpoints) / unattached                                     >= 97 %
  attach --ephemeral to "listening confirmed" (--no-forward): a new debug container               <= 3 s
                                                              the debug container reused            <= 1.5 s
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

from benchstats import quartiles

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NS = "wand-e2e"
LOAD = r"""
import http.client, json, sys, time
import os
start, windows, width = float(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
if (os.cpu_count() or 1) >= 2:  # as the local benchmark: app (uvicorn) on CPU 1, this load on CPU 0
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            if b"uvicorn" in open("/proc/%s/cmdline" % pid, "rb").read():
                for tid in os.listdir("/proc/%s/task" % pid):
                    os.sched_setaffinity(int(tid), {1})
        except OSError:
            pass
    os.sched_setaffinity(0, {0})
c = http.client.HTTPConnection("127.0.0.1", 8000, timeout=10)
c.request("GET", "/"); c.getresponse().read()  # connected and warm before the first window
while time.time() < start:  # both pods start on the same tick of the node's clock
    time.sleep(min(0.01, max(0.0, start - time.time())))
rates = []
for i in range(windows):
    end, n = start + (i + 1) * width, 0
    while time.time() < end:
        c.request("GET", "/"); r = c.getresponse(); r.read(); n += 1
    rates.append(n / width)
print(json.dumps(rates))
"""
DEPLOY = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: NAME, namespace: wand-e2e}
spec:
  replicas: REPLICAS
  selector: {matchLabels: {app: NAME}}
  template:
    metadata: {labels: {app: NAME}}
    spec:
      automountServiceAccountToken: false
      terminationGracePeriodSeconds: 1
      containers:
      - name: app
        image: IMAGE
        imagePullPolicy: IfNotPresent
        command: COMMAND
        resources: {requests: {cpu: 1m, memory: 8Mi}}
"""
BENCH_DEPLOY = (DEPLOY.replace("NAME", "bench20").replace("REPLICAS", "20")
                .replace("COMMAND", '["python3", "-c", "import time; [time.sleep(1) for _ in iter(int, 1)]"]'))


def sh(argv, timeout=120, **kw):
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kubeconfig", required=True)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--only", choices=["ephemeral"], help="run only these benchmarks")
    args = ap.parse_args()
    env = dict(os.environ, KUBECONFIG=args.kubeconfig, PYTHONPATH=REPO)
    kubectl = ["kubectl", "--kubeconfig", args.kubeconfig, "-n", NS]
    wand = [sys.executable, "-m", "kubectl_wand"]
    if args.only == "ephemeral":
        return report(ephemeral_attach(kubectl, wand, env, args.runs))
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
        results.append(("  floor: 20 x kubectl exec true", exec_floor(kubectl, "app=bench20", args.runs, ["true"]),
                        None))
        results.append(("  floor: 20 x python3 -S, GOGC=off", exec_floor(
            kubectl, "app=bench20", args.runs, ["python3", "-S", "-c", "pass"], {"GOGC": "off"}), None))
    finally:
        sh(kubectl + ["delete", "deploy/bench20", "--wait=false"])
    # 20 pods terminating eat the CPU that the measurements below need: wait until they are gone.
    sh(kubectl + ["wait", "--for=delete", "pod", "-l", "app=bench20", "--timeout=180s"], timeout=200)

    # Fresh processes: a copy of the web Deployment (6 replicas) that nothing has attached to yet. Four give
    # first-attach timings; two identical ones give an A/B throughput comparison.
    web = json.loads(sh(kubectl + ["get", "deploy/web", "-o", "json"]).stdout)
    spec = web["spec"]["template"]["spec"]
    fresh_deploy = {"apiVersion": "apps/v1", "kind": "Deployment",
                    "metadata": {"name": "benchweb", "namespace": NS},
                    "spec": {"replicas": 6, "selector": {"matchLabels": {"app": "benchweb"}},
                             "template": {"metadata": {"labels": {"app": "benchweb"}}, "spec": spec}}}
    sh(kubectl + ["apply", "-f", "-"], input=json.dumps(fresh_deploy))
    try:
        sh(kubectl + ["rollout", "status", "deploy/benchweb", "--timeout=300s"], timeout=320)
        fresh_pods = sh(kubectl + ["get", "pods", "-l", "app=benchweb", "-o",
                                   "jsonpath={.items[*].metadata.name}"]).stdout.split()
        fresh, reused = [], []
        for i, name in enumerate(fresh_pods[:4]):
            for attempt, bucket in ((0, fresh), (1, reused), (2, reused)):
                proc, took, first = start_attach(wand, "pod/" + name, 5800 + i, env)
                stop_attach(proc)
                bucket.append(took)
        results.append(("attach to ready, fresh process", fresh, 2.0))
        results.append(("attach to ready, server reused", reused, 2.0))
        ratio = throughput(kubectl, wand, env, fresh_pods[4], fresh_pods[5])
    finally:
        sh(kubectl + ["delete", "deploy/benchweb", "--wait=false"])
    results += ephemeral_attach(kubectl, wand, env, args.runs)
    return report(results) or (0 if ratio >= 0.97 else 1)


# two independent Python processes: pid 1, and a second one for "reused container, fresh process"
EPH_DEPLOY = DEPLOY.replace("NAME", "eph-bench").replace(
    "COMMAND", '["/bin/sh", "-c", "python3 -m http.server 8001 & exec python3 -m http.server 8000"]')


def ephemeral_attach(kubectl, wand, env, pods=5):
    """attach --ephemeral --no-forward -o json (it exits once the debug server listens in the pod) on fresh
    pods of the app's image (on the node): a new debug container (and a fresh process), then in the same pod the
    container reused with a fresh process, and reused with the server reused. Every pod is new: no container."""
    image = sh(kubectl + ["get", "deploy/web", "-o", "jsonpath={.spec.template.spec.containers[0].image}"]).stdout
    sh(kubectl + ["apply", "-f", "-"], input=EPH_DEPLOY.replace("IMAGE", image).replace("REPLICAS", str(pods)))
    new, fresh, again = [], [], []
    try:
        sh(kubectl + ["rollout", "status", "deploy/eph-bench", "--timeout=300s"], timeout=320)
        names = sh(kubectl + ["get", "pods", "-l", "app=eph-bench", "-o",
                              "jsonpath={.items[*].metadata.name}"]).stdout.split()
        for name in names:
            def attach(pid, bucket, status):
                port = "5679" if pid == 1 else "5680"  # one network namespace: a port per process
                t = time.perf_counter()
                done = sh(wand + ["attach", "pod/" + name, "-n", NS, "--ephemeral", "--pid", str(pid), "--port", port,
                                  "--no-forward", "-o", "json", "-q"], env=env, cwd=REPO)
                took = time.perf_counter() - t
                if done.returncode != 0 or json.loads(done.stdout)["status"] != status:
                    raise SystemExit("attach --ephemeral %s failed: %s" % (name, done.stderr))
                bucket.append(took)
            attach(1, new, "listening")
            listing = json.loads(sh(wand + ["get", "processes", "pod/" + name, "-n", NS, "--ephemeral", "-o", "json",
                                            "-q"], env=env, cwd=REPO).stdout)["items"]
            second = next(p["pid"] for p in listing if p["role"] != "helper" and p["pid"] != 1)
            attach(second, fresh, "listening")
            attach(1, again, "already")
    finally:
        sh(kubectl + ["delete", "deploy/eph-bench", "--wait=false"])
    return [("attach --ephemeral, new container", new, 3.0),
            ("attach --ephemeral, reused, fresh pid", fresh, 1.5),
            ("attach --ephemeral, reused, server up", again, 1.5)]


def exec_floor(kubectl, selector, runs, command, env=None):
    """What kubectl alone costs here: one `kubectl exec POD -- COMMAND` per pod, all at once. kubectl wand does
    this (python3 -S, GOGC=off) plus its own work, so on a machine that runs the client and the whole cluster on
    2 cores this is the floor under `get processes` on many pods."""
    items = json.loads(sh(kubectl + ["get", "pods", "-l", selector, "-o", "json"]).stdout)["items"]
    pods = [p["metadata"]["name"] for p in items if not p["metadata"].get("deletionTimestamp")]
    out = []
    retried = 0
    while len(out) < runs:
        t = time.perf_counter()
        procs = [subprocess.Popen(kubectl + ["exec", p, "--"] + command, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, env=dict(os.environ, **(env or {}))) for p in pods]
        errors = [(pod, p.communicate(timeout=120)[1]) for pod, p in zip(pods, procs)]
        took = time.perf_counter() - t
        failed = [(pod, err) for (pod, err), p in zip(errors, procs) if p.returncode != 0]
        if not failed:
            out.append(took)
            continue
        # Seen once (2026-11-23, its stderr not kept then): one of 20 concurrent execs failed under this load.
        # That round's time means nothing: it is measured again, once per run at most, and the error is shown.
        pod, err = failed[0]
        if retried:
            raise SystemExit("kubectl exec failed in pod %s (%d of %d failed): %s" % (
                pod, len(failed), len(pods), err.decode(errors="replace").strip()[-300:]))
        retried += 1
        sys.stderr.write("floor round repeated: kubectl exec failed in pod %s: %s\n" % (
            pod, err.decode(errors="replace").strip()[-200:]))
    return out


def throughput(kubectl, wand, env, plain_pod, attached_pod, windows=41, width=1.0):
    """App requests/s inside two identical pods, A (never attached) and B, loaded in the SAME windows: both
    meet the same interference from everything else on this 2-core machine, so each window's B/A is B's speed
    relative to A's (loading them in turns drowns a 3 % effect: one window can differ from the next by 2x).
    Both apps are pinned to CPU 1 and both load loops to CPU 0 (their own pods: affinity needs no privilege),
    so the two apps share one CPU fairly instead of wandering between cores.
    Phase 1, neither attached: the pods' own ratio. Phase 2, B with an editor attached (DAP client: initialize,
    attach, configurationDone; no breakpoints). attached/unattached = median B/A of phase 2 / phase 1.
    Phase 3 (reported, no target): the same editor turns on the "uncaught exceptions" filter, as VS Code does
    by default."""
    def phase():
        start = time.time() + 3.0  # both kubectl execs are up well before this
        procs = [subprocess.Popen(kubectl + ["exec", pod, "--", "python3", "-c", LOAD, repr(start), str(windows),
                                             str(width)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for pod in (plain_pod, attached_pod)]
        a, b = (json.loads(p.communicate(timeout=60 + windows * width)[0]) for p in procs)
        ratios = [rb / ra for ra, rb in zip(a[1:], b[1:]) if ra]  # the first window warms up
        return statistics.median(ratios), quartiles(ratios), statistics.median(a), statistics.median(b)

    phase()  # warm-up: first requests pay for imports and caches
    before = phase()
    proc, _took, _first = start_attach(wand, "pod/" + attached_pod, 5899, env)
    try:
        port = int(re.search(r"Forwarding 127\.0\.0\.1:(\d+)", _first_lines[-1]).group(1))
        sys.path.insert(0, os.path.join(REPO, "tests"))
        import dap
        client = dap.DAPClient("127.0.0.1", port)
        client.attach_editor()
        after = phase()
        client.request("setExceptionBreakpoints", filters=["uncaught"])
        uncaught = phase()
        client.close()
    finally:
        stop_attach(proc)
    ratio = after[0] / before[0]
    for name, (med, (q1, q3), ra, rb) in (("neither attached", before), ("B attached, no breakpoints", after),
                                          ("B attached, 'uncaught exceptions' on", uncaught)):
        print("throughput %-38s req/s A %5.0f B %5.0f  B/A median %.3f (IQR %.3f-%.3f, %d windows)" % (
            name + ":", ra, rb, med, q1, q3, windows - 1))
    print("throughput attached/unattached: %.1f %% (target >= 97 %%); with 'uncaught exceptions' on: %.1f %%" % (
        100 * ratio, 100 * uncaught[0] / before[0]))
    return ratio


_first_lines = []


def start_attach(wand, target, port, env):
    """Start a foreground attach; return (process, seconds to the Forwarding line, first output line)."""
    t = time.perf_counter()
    proc = subprocess.Popen(wand + ["attach", target, "-n", NS, "--port", str(port), "--local-port", "0", "-q"],
                            env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first, line, pending, deadline = None, "", "", time.monotonic() + 60
    fd = proc.stdout.fileno()
    while time.monotonic() < deadline and "Forwarding 127.0.0.1" not in line:
        if "\n" in pending:
            line, pending = pending.split("\n", 1)
            first = first or line
            continue
        if not select.select([fd], [], [], 1)[0]:
            continue
        chunk = os.read(fd, 65536)  # raw reads: select() and buffered readline() do not mix
        if not chunk:
            raise SystemExit("attach %s failed: %s" % (target, proc.stderr.read()))
        pending += chunk.decode()
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
        if goal is None:  # a reference measurement, not a target
            print("%-36s %8.3f %8.3f %8s  %d" % (name, med, min(times), "-", len(times)))
            continue
        ok = med <= goal
        missed += not ok
        print("%-36s %8.3f %8.3f %8.2f  %d %s" % (name, med, min(times), goal, len(times), "ok" if ok else "MISSED"))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
