"""mem's cost on this machine: the census pause on heaps of 1 M and 5 M objects, and an allocation-heavy app's
throughput during a tracemalloc growth window and after it, against an untouched copy. Exit 1 if a target is
missed (throughput during a window >= 80 %, after >= 99 %).

Census: a 3.14 process holding N small lists (N gc-tracked objects and N ints) gets a census as the CLI asks it
(agent/memory.py): whole (--max-pause 60s) and at the default budget (0.5 s, sampled); printed is the main
thread's pause and the walk's rate.

Throughput: two copies, A and B, of bench/trace_work_app.py (each unit allocates a dict and a string) share
CPU 1 (bench_trace_local.py's App); each measuring window gives one ratio B/A of units/s. Phases per round:
base (nothing), window (a mem window on B with --frames 1, 3, then 5), after (the window ended). A window
traces in slices (one per period, the period chosen by the window from tracemalloc's measured cost): its
phase is measured over whole periods (--periods windows of one period each, from just after the window's first
census), so each ratio holds the same share of traced time as the window; base and after over one-second
windows. The rounds interleave; printed are the medians of each phase over the base median, with quartiles,
and the window's measured cost and duty.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time

from bench_trace_local import IN_ROOT_DIR, App, DEFAULT_ROOTFS, windows
from benchstats import quartiles

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tests"))

from kubectl_wand.agent import memory  # noqa: E402

# The heap app's main thread ticks every 2 ms and prints each gap longer than 20 ms: the census's pause as the
# app saw it (the injection, the walk, the answer: all that ran on its main thread), not only the walk's own.
HEAP_APP = ("import os, time\nheap = [[i] for i in range(%d)]\nprint('READY pid=%%d' %% os.getpid(), flush=True)\n"
            "while True:\n    t = time.monotonic()\n    time.sleep(0.002)\n    gap = time.monotonic() - t\n"
            "    if gap > 0.02:\n        print('GAP %%.1f' %% (gap * 1000), flush=True)\n")


def load():
    return " ".join(open("/proc/loadavg").read().split()[:3])


def census_pause(args, objects):
    from conftest import read_line
    python = [args.python] if args.python else [shutil.which("chroot") or "/usr/sbin/chroot", args.rootfs,
                                                  "/usr/bin/python3.14"]
    proc = subprocess.Popen(python + ["-c", HEAP_APP % objects], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, env={"PATH": "/usr/bin:/bin"}, start_new_session=True)
    try:
        line = read_line(proc.stdout, 120)
        pid = int(line.split("pid=")[1])
        out = {}
        for label, pause in (("whole", 60.0), ("default", memory.DEFAULT_PAUSE)):
            pauses = []
            for _ in range(args.census_rounds):
                result = memory.mem({"op": "mem", "pid": pid, "max_pause": pause, "top": 5, "timeout": 30})
                assert result["status"] == "ok", result
                gaps, line = [], read_line(proc.stdout, 5)
                while line.startswith("GAP"):
                    gaps.append(float(line.split()[1]))
                    line = read_line(proc.stdout, 0.5)
                pauses.append(dict(result["walk"], app_gap_ms=max(gaps or [0.0])))
            walk = dict(sorted(pauses, key=lambda w: w["pause_ms"])[len(pauses) // 2],
                        app_gap_ms=statistics.median(w["app_gap_ms"] for w in pauses),
                        app_gaps=[w["app_gap_ms"] for w in pauses])
            out[label] = walk
        return out
    finally:
        proc.kill()
        proc.wait(10)


class Window:
    """A mem window on B, run as the CLI runs it (agent/memory.py in a thread, ended with ``stop``)."""

    def __init__(self, pid, frames):
        self.started, self.stop, self.result, self.info = threading.Event(), threading.Event(), None, {}
        request = {"op": "mem", "pid": pid, "duration": 3600, "frames": frames, "top": 5, "timeout": 30}
        self.thread = threading.Thread(target=self.run, args=(request,), daemon=True)
        self.thread.start()
        if not self.started.wait(60):
            raise SystemExit("the window did not start: %s" % self.result)

    def run(self, request):
        try:
            self.result = memory.mem(request, self.emit, self.stop)
        except Exception as exc:
            self.result = {"status": "error", "error": repr(exc)}
        self.started.set()

    def emit(self, event):
        if "started" in event:
            self.info = event["started"]
            self.started.set()

    def end(self):
        self.stop.set()
        self.thread.join(120)
        if not self.result or self.result.get("status") != "ok" or self.result.get("tracing_after"):
            raise SystemExit("the window did not end cleanly: %s" % self.result)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rootfs", default=DEFAULT_ROOTFS)
    parser.add_argument("--python", help="a python3.14 to run the apps with instead of the rootfs")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--windows", type=int, default=5, help="one-second windows per base/after phase and round")
    parser.add_argument("--periods", type=int, default=2, help="one-period windows per window phase and round")
    parser.add_argument("--skip-census", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--census-rounds", type=int, default=3)
    parser.add_argument("--hot-rate", type=float, default=0.0)
    args = parser.parse_args()
    if not args.python:
        os.makedirs(args.rootfs + IN_ROOT_DIR, exist_ok=True)
        shutil.copy(os.path.join(REPO, "bench", "trace_work_app.py"), args.rootfs + IN_ROOT_DIR)

    for objects in () if args.skip_census else (1_000_000, 5_000_000):
        walks = census_pause(args, objects)
        for label, w in walks.items():
            print("census %d M objects, %-7s: walk %7.1f ms (list %5.1f ms), the app's main thread stopped %7.1f ms "
                  "(rounds: %s), %d gc objects, %d items walked, stride %d/%d, %.0f ms per million items%s; load %s" % (
                      objects // 1_000_000, label, w["pause_ms"], w["list_ms"], w["app_gap_ms"],
                      "/".join("%.0f" % g for g in w["app_gaps"]), w["objects"], w["items"], w["stride"],
                      w["inner_stride"], w["per_million_ms"], "  OVER BUDGET" if w.get("over_budget") else "",
                      load()), flush=True)

    if args.skip_throughput:
        return 0
    a, b = App(args, "a"), App(args, "b")
    phases = {"base": [], "window frames=1": [], "window frames=3": [], "window frames=5": [], "after": []}
    duty = {}
    try:
        windows(a, b, 2, 1.0)  # warm-up
        for _ in range(args.rounds):
            phases["base"] += windows(a, b, args.windows, 1.0)
            for frames in (1, 3, 5):
                window = Window(b.pid, frames)
                period = window.info.get("period") or 1.0
                duty.setdefault(frames, []).append((window.info.get("cost"), window.info.get("duty"), period))
                phases["window frames=%d" % frames] += windows(a, b, args.periods, period)
                window.end()
            phases["after"] += windows(a, b, args.windows, 1.0)
    finally:
        a.stop()
        b.stop()
    base = statistics.median(phases["base"])
    missed = False
    for name, ratios in phases.items():
        q1, q3 = quartiles(ratios)
        share = statistics.median(ratios) / base
        target = {"after": 0.99, "base": None}.get(name, 0.80)
        ok = target is None or share >= target
        missed |= not ok
        print("%-16s throughput %5.1f %% of untouched (quartiles %.1f-%.1f %%, %d windows)%s" % (
            name, share * 100, q1 / base * 100, q3 / base * 100, len(ratios),
            "" if target is None else "  target >= %d %%: %s" % (target * 100, "ok" if ok else "MISSED")))
    for frames, runs in sorted(duty.items()):
        print("frames=%d: tracemalloc cost %s x per allocation, duty %s %%, period %s s" % (
            frames, "/".join("%.1f" % c for c, _d, _p in runs), "/".join("%.1f" % (d * 100) for _c, d, _p in runs),
            "/".join("%.0f" % p for _c, _d, p in runs)))
    print("load: %s" % load())
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
