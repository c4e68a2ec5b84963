"""App throughput with a trace probe / without, on this machine. Exit 1 if a target is missed.

Two copies, A and B, of bench/trace_work_app.py (a CPU-bound loop of small Python work units that publishes
its unit count in shared memory; its ``hot`` line runs --hot-rate times a second, its ``never`` line never
runs) share CPU 1 in the same windows; this process (the agent side of trace) runs on CPU 0. Each window
gives one ratio B/A of units/s, so whatever else the machine does divides out. Three phases:

  base   no probe anywhere
  never  a probe in B on the ``never`` line (agent/tracing.py, as the CLI runs it)
  hot    a probe in B on the ``hot`` line, default rate limit (20/s), one EXPR
Each round runs all three (the probes installed and removed again), and the rounds repeat: a slow drift of
the machine (a build beside us) then touches every phase alike. Printed: the median B/A of each phase over
the base median (targets: never >= 99 %, hot >= 90 %), the hits delivered and dropped in the hot phase, and
the time from request to installed probe (injection + locating the code in the target). The first window
after each install is not counted: it holds the install's one-off search of the heap.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import struct
import subprocess
import sys
import threading
import time

from benchstats import quartiles

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tests"))

from kubectl_wand.agent import tracing  # noqa: E402

APP = os.path.join(REPO, "bench", "trace_work_app.py")
IN_ROOT_DIR = "/opt/wand-bench"
DEFAULT_ROOTFS = os.path.expanduser("~/.cache/kubectl-wand/py314-rootfs")
APP_CPU, AGENT_CPU = 1, 0


def marker_line(marker):
    with open(APP) as f:
        return next(n for n, text in enumerate(f, 1) if "# bench:" + marker in text)


class App:
    """One copy of the work app, pinned to APP_CPU, its counter in a private file of the target's root."""

    def __init__(self, args, name):
        from conftest import read_line
        root = "" if args.python else args.rootfs
        self.counter_inside = "/tmp/wand-bench-%s-%d" % (name, os.getpid())
        self.counter_path = root + self.counter_inside
        with open(self.counter_path, "wb") as f:
            f.write(b"\0" * 8)
        script = APP if args.python else IN_ROOT_DIR + "/trace_work_app.py"
        python = [args.python] if args.python else [shutil.which("chroot") or "/usr/sbin/chroot", args.rootfs,
                                                      "/usr/bin/python3.14"]
        argv = ["taskset", "-c", str(APP_CPU)] + python + [script, self.counter_inside, str(args.hot_rate)]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env={"PATH": "/usr/local/bin:/usr/bin:/bin"}, start_new_session=True)
        line = read_line(self.proc.stdout, 30)
        if not line.startswith("READY"):
            self.stop()
            raise SystemExit("the work app did not start: %r" % line)
        self.pid = int(line.split("pid=")[1])

    def units(self):
        with open(self.counter_path, "rb") as f:
            return struct.unpack("Q", f.read(8))[0]

    def stop(self):
        self.proc.kill()
        self.proc.wait(timeout=10)
        try:
            os.unlink(self.counter_path)
        except OSError:
            pass


def windows(a, b, count, seconds):
    """Per-window ratios B/A of units/s, both apps measured over the same wall-clock windows."""
    ratios = []
    for _ in range(count):
        a0, b0, t0 = a.units(), b.units(), time.perf_counter()
        time.sleep(seconds)  # the apps run on their own; the window is wall time
        a1, b1, t1 = a.units(), b.units(), time.perf_counter()
        ratios.append(((b1 - b0) / (t1 - t0)) / max(1e-9, (a1 - a0) / (t1 - t0)))
    return ratios


class Probe:
    """A trace on B, run as the CLI will run it (agent/tracing.py in a thread, stopped with ``stop``)."""

    def __init__(self, pid, line, exprs, rate=tracing.DEFAULT_RATE):
        self.hits, self.installed_after, self.result = 0, None, None
        self.installed = threading.Event()
        self.stop_event = threading.Event()
        self.started = time.perf_counter()
        request = {"op": "trace", "pid": pid, "file": "trace_work_app.py", "line": line, "exprs": exprs,
                   "max_per_second": rate}
        self.thread = threading.Thread(target=self.run, args=(request,), daemon=True)
        self.thread.start()
        if not self.installed.wait(60):
            raise SystemExit("the probe was not installed: %s" % self.result)

    def run(self, request):
        try:
            self.result = tracing.trace(request, self.emit, self.stop_event)
        except Exception as exc:
            self.result = {"status": "error", "error": repr(exc)}
        self.installed.set()

    def emit(self, event):
        if "installed" in event:
            self.installed_after = time.perf_counter() - self.started
            self.installed.set()
        elif "hit" in event:
            self.hits += 1

    def stop(self):
        self.stop_event.set()
        self.thread.join(30)
        if not self.result or self.result.get("status") != "ok" or not self.result.get("removed"):
            raise SystemExit("the probe did not end cleanly: %s" % self.result)
        return self.result


def show(name, ratios, base):
    q1, q3 = quartiles(ratios)
    median = statistics.median(ratios)
    print("%-34s B/A median %.4f (IQR %.4f-%.4f)%s" % (
        name, median, q1, q3, "" if base is None else "  -> %.1f %% of unprobed" % (100 * median / base)))
    return median


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rootfs", default=DEFAULT_ROOTFS, help="Debian sid root with python3.14 (hack/py314-rootfs)")
    ap.add_argument("--python", help="run the apps with this python3.14 directly instead of in --rootfs")
    ap.add_argument("--rounds", type=int, default=6, help="rounds of the three phases (default 6)")
    ap.add_argument("--windows", type=int, default=4, help="windows per phase per round (default 4)")
    ap.add_argument("--window", type=float, default=1.0, help="seconds per window (default 1)")
    ap.add_argument("--hot-rate", type=float, default=1000.0, help="runs of the hot line per second (default 1000)")
    ap.add_argument("--max-per-second", type=float, default=tracing.DEFAULT_RATE,
                    help="the hot probe's rate limit (default: trace's default, %g)" % tracing.DEFAULT_RATE)
    args = ap.parse_args()
    if os.cpu_count() < 2:
        raise SystemExit("needs 2 CPUs: the apps on CPU %d, the agent on CPU %d" % (APP_CPU, AGENT_CPU))
    if not args.python:
        if not os.path.exists(os.path.join(args.rootfs, "usr/bin/python3.14")):
            raise SystemExit("no python3.14 in %s (hack/py314-rootfs makes it) and no --python" % args.rootfs)
        os.makedirs(args.rootfs + IN_ROOT_DIR, exist_ok=True)
        shutil.copy(APP, args.rootfs + IN_ROOT_DIR + "/trace_work_app.py")
    os.sched_setaffinity(0, {AGENT_CPU})  # the injector subprocess inherits it

    apps, phases, hot_hits, hot_dropped, installs, freed = [], {"base": [], "never": [], "hot": []}, 0, 0, [], set()
    try:
        apps = [App(args, "a"), App(args, "b")]
        a, b = apps
        windows(a, b, 2, args.window)  # warm-up
        for _ in range(args.rounds):
            phases["base"] += windows(a, b, args.windows, args.window)
            for phase, line, rate in (("never", marker_line("never"), tracing.DEFAULT_RATE),
                                      ("hot", marker_line("hot"), args.max_per_second)):
                probe = Probe(b.pid, line, ["n"], rate)
                windows(a, b, 1, args.window)
                hits0 = probe.hits
                phases[phase] += windows(a, b, args.windows, args.window)
                hits = probe.hits - hits0
                result = probe.stop()
                installs.append(probe.installed_after)
                freed.update(result["tool_ids"])
                if phase == "hot":
                    hot_hits += hits
                    hot_dropped += result["dropped"]
    finally:
        for app in apps:
            app.stop()

    print("apps: bench/trace_work_app.py x2 on CPU %d (%s); agent on CPU %d; %d rounds of %d windows of %g s "
          "per phase" % (APP_CPU, "python " + args.python if args.python else "rootfs", AGENT_CPU, args.rounds,
                         args.windows, args.window))
    base = show("base (no probe)", phases["base"], None)
    never = show("probe on a line never run", phases["never"], base)
    hot = show("probe on a line run %g/s" % args.hot_rate, phases["hot"], base)
    seconds = args.rounds * args.windows * args.window
    print("hot line: %d hits delivered in %g measured s (%.1f/s); %d dropped in the target (all hot phases)" % (
        hot_hits, seconds, hot_hits / seconds, hot_dropped))
    print("request -> probe installed: median %.0f ms (max %.0f ms) over %d installs; tool ids freed: %s" % (
        1000 * statistics.median(installs), 1000 * max(installs), len(installs), sorted(freed)))
    ok_never, ok_hot = never / base >= 0.99, hot / base >= 0.90
    print("never-run line: %.1f %% (target >= 99 %%) %s" % (100 * never / base, "ok" if ok_never else "MISSED"))
    print("hot line:       %.1f %% (target >= 90 %%) %s" % (100 * hot / base, "ok" if ok_hot else "MISSED"))
    return 0 if ok_never and ok_hot else 1


if __name__ == "__main__":
    sys.exit(main())
