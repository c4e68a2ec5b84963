"""The cost of `profile` on a CPU-bound app on this machine, and the same measurements for py-spy 0.4.3.

Two copies of bench/apps/hot_app.py, A and B, share CPU 1 (pinned, each its own session); this process and
every sampler run on CPU 0. The apps report their own work units with their own timestamps, so each window
gives B's throughput relative to A's, and whatever else the machine does divides out. Phases:
  1. calibration: nobody samples B -> median of the per-window ratios B/A
  2. kubectl-wand: the agent's profile op (sampler under B's interpreter) at --rate Hz for the whole phase
  3. py-spy record --nonblocking at the same rate     4. py-spy record (default: pauses B at each sample)
Each sampling phase reports: B's throughput as a share of calibration (median ratio / calibration ratio), the
achieved sampling rate, the sampler's CPU per second of sampling (its rusage, minus its start-up cost measured
once on its own), and the three hottest functions by own time, which must be the same for both tools.
The samplers run on the other CPU, so what phase 2-4 measure on B is the cost of being read (and, for
py-spy's default mode, of being paused); the sampler's own CPU is the separate column (in a pod whose CPU
limit it shares, that much comes on top). Targets: >= 98 % throughput, >= 95 % of the requested rate.

py-spy: --py-spy PATH, else py-spy 0.4.3 on PATH or beside this interpreter, else installed from PyPI with
`pip install py-spy==0.4.3` into this interpreter's virtualenv (or a venv under ~/.cache/kubectl-wand).
"""
from __future__ import annotations

import argparse
import os
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import reportingapp  # noqa: E402
from pyspy import PYSPY_VERSION, find_pyspy  # noqa: E402
from kubectl_wand import profiles  # noqa: E402
from kubectl_wand.agent.main import handle  # noqa: E402

APP_CPU, OWN_CPU = 1, 0


def App(args):
    """One hot_app process: reports (time, units)."""
    return reportingapp.App(args, "hot_app.py", APP_CPU, lambda words: (float(words[0]), int(words[1])))


def windows(a, b, count, seconds):
    """Per-window throughput ratios B/A (units per second of each app's own clock)."""
    ratios = []
    for _ in range(count):
        a0, b0 = a.report(), b.report()
        time.sleep(seconds)  # a measurement window: throughput only exists over a span of time
        a1, b1 = a.report(), b.report()
        ratios.append(((b1[1] - b0[1]) / (b1[0] - b0[0])) / ((a1[1] - a0[1]) / (a1[0] - a0[0])))
    return ratios


def children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wand_phase(a, b, args):
    """Profile B through the agent op for the whole phase; windows start once it samples."""
    started, box = threading.Event(), {}
    stop = threading.Event()

    def run():
        box["result"] = handle({"op": "profile", "pid": b.pid, "rate": args.rate, "duration": 3600},
                               emit=lambda e: started.set(), stop=stop)

    cpu0 = children_cpu()
    worker = threading.Thread(target=run)
    worker.start()
    if not started.wait(60):
        stop.set()
        raise SystemExit("the profile did not start")
    ratios = windows(a, b, args.pairs, args.window)
    stop.set()
    worker.join(60)
    cpu = children_cpu() - cpu0
    result = box["result"]
    if result["status"] != "ok" or "profile" not in result["processes"][0]:
        raise SystemExit("profile failed: %s" % result)
    prof = result["processes"][0]["profile"]
    rows = profiles.top(profiles.merge([(None, result["processes"][0])]), lines=False)
    return {"ratios": ratios, "achieved": prof["achieved_rate"], "duration": prof["duration"], "cpu": cpu,
            "samples": prof["samples"], "hottest": [(r["function"], r["own_pct"]) for r in rows[:3]]}


def wand_startup(b):
    """CPU of a profile that takes one sample: the sampler's interpreter start and report."""
    cpu0 = children_cpu()
    handle({"op": "profile", "pid": b.pid, "rate": 100, "duration": 0.01})
    return children_cpu() - cpu0


def stack_latency(b, count):
    """Median wall time of the agent's stack op on B, in ms (most of it is the sampler interpreter's start)."""
    times = []
    for _ in range(count):
        t0 = time.perf_counter()
        result = handle({"op": "stack", "pid": b.pid})
        times.append((time.perf_counter() - t0) * 1000)
        if result["status"] != "ok" or "threads" not in result["processes"][0]:
            raise SystemExit("stack failed: %s" % result)
    return statistics.median(times)


def pyspy_phase(a, b, args, pyspy, blocking):
    duration = int(args.pairs * args.window + 3)  # py-spy takes whole seconds
    out = tempfile.NamedTemporaryFile(prefix="pyspy-", suffix=".txt", delete=False)
    out.close()
    argv = [pyspy, "record", "--pid", str(b.pid), "--rate", str(int(args.rate)), "--duration", str(duration),
            "--format", "raw", "--output", out.name] + ([] if blocking else ["--nonblocking"])
    cpu0 = children_cpu()
    t0 = time.monotonic()
    # py-spy 0.4.3 writes its messages on stdout when that is not a terminal
    spy = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        first = spy.stdout.readline().decode()  # "py-spy> Sampling process 100 times a second ..."
        if "Sampling process" not in first:
            raise SystemExit("py-spy did not start: %r" % first)
        ratios = windows(a, b, args.pairs, args.window)
        err = spy.communicate(timeout=duration + 60)[0].decode()
        elapsed = time.monotonic() - t0
        cpu = children_cpu() - cpu0
        with open(out.name) as f:
            collapsed = f.read()
    finally:
        if spy.poll() is None:
            spy.kill()
            spy.wait(10)
        os.unlink(out.name)
    found = re.search(r"Samples: (\d+) Errors: (\d+)", err)
    samples = int(found.group(1)) if found else 0
    own = {}
    for line in collapsed.splitlines():
        stack, count = line.rsplit(" ", 1)
        leaf = stack.split(";")[-1].split(" (")[0]
        own[leaf] = own.get(leaf, 0) + int(count)
    total = sum(own.values()) or 1
    hottest = sorted(own.items(), key=lambda kv: -kv[1])[:3]
    return {"ratios": ratios, "achieved": samples / duration, "duration": elapsed, "cpu": cpu, "samples": samples,
            "hottest": [(name, round(100.0 * n / total, 2)) for name, n in hottest]}


def pyspy_startup(b, pyspy):
    cpu0 = children_cpu()
    subprocess.run([pyspy, "dump", "--pid", str(b.pid)], capture_output=True, timeout=60)
    return children_cpu() - cpu0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rootfs", default=reportingapp.DEFAULT_ROOTFS, help="Debian sid root with python3.14 (hack/py314-rootfs)")
    ap.add_argument("--python", help="run the apps with this python3.14 directly instead of in --rootfs")
    ap.add_argument("--pairs", type=int, default=10, help="windows per phase (default 10)")
    ap.add_argument("--window", type=float, default=2.0, help="seconds per window (default 2)")
    ap.add_argument("--rate", type=float, default=100.0, help="samples per second (default 100)")
    ap.add_argument("--py-spy", dest="pyspy", help="the py-spy binary (default: find or install %s)" % PYSPY_VERSION)
    ap.add_argument("--no-py-spy", action="store_true", help="measure kubectl-wand only")
    args = ap.parse_args()
    if os.cpu_count() < 2:
        raise SystemExit("needs 2 CPUs: the apps on CPU %d, the samplers on CPU %d" % (APP_CPU, OWN_CPU))
    if not args.python:
        reportingapp.install(args.rootfs, "hot_app.py")
    pyspy = None if args.no_py_spy else find_pyspy(args.pyspy)
    os.sched_setaffinity(0, {OWN_CPU})  # the samplers (our children) inherit it

    apps = []
    try:
        apps = [App(args), App(args)]
        a, b = apps
        windows(a, b, 2, args.window)  # warm-up
        calibration = windows(a, b, args.pairs, args.window)
        stack_ms = stack_latency(b, 10)
        phases = [("kubectl-wand", wand_phase(a, b, args), wand_startup(b))]
        if pyspy:
            start = pyspy_startup(b, pyspy)
            phases.append(("py-spy --nonblocking", pyspy_phase(a, b, args, pyspy, False), start))
            phases.append(("py-spy (pauses)", pyspy_phase(a, b, args, pyspy, True), start))
    finally:
        for app in apps:
            app.stop()

    base = statistics.median(calibration)
    print("apps: bench/apps/hot_app.py x2 on CPU %d; samplers on CPU %d; %d windows of %g s per phase; %g Hz" % (
        APP_CPU, OWN_CPU, args.pairs, args.window, args.rate))
    print("calibration: median B/A %.4f (min-max %.4f-%.4f)" % (base, min(calibration), max(calibration)))
    print("stack op (agent in-process, sampler start included): median %.0f ms over 10" % stack_ms)
    print()
    print("%-22s %11s %14s %13s %14s  %s" % ("sampler", "throughput", "achieved rate", "CPU ms/s", "start-up CPU",
                                             "hottest functions (own %)"))
    verdicts = []
    for name, r, startup in phases:
        share = statistics.median(r["ratios"]) / base
        cpu_per_s = max(0.0, r["cpu"] - startup) / r["duration"] * 1000
        hottest = ", ".join("%s %.0f" % h for h in r["hottest"])
        print("%-22s %10.1f%% %8.1f (%3.0f%%) %13.2f %11.0f ms  %s" % (
            name, 100 * share, r["achieved"], 100 * r["achieved"] / args.rate, cpu_per_s, startup * 1000, hottest))
        if name == "kubectl-wand":
            verdicts.append(("throughput while profiled >= 98 %", share >= 0.98))
            verdicts.append(("achieved rate >= 95 % of requested", r["achieved"] >= 0.95 * args.rate))
    if len(phases) > 1:
        ours, theirs = [h[0] for h in phases[0][1]["hottest"][:2]], [h[0] for h in phases[1][1]["hottest"][:2]]
        verdicts.append(("same two hottest functions as py-spy (%s / %s)" % (", ".join(ours), ", ".join(theirs)),
                         ours == theirs))
    print()
    for text, ok in verdicts:
        print("%-70s %s" % (text, "ok" if ok else "MISSED"))
    return 0 if all(ok for _, ok in verdicts) else 1


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
