"""What `profile` costs a CPU-bound app and the machine, A/B against py-spy 0.4.3 --nonblocking.

Two copies of bench/apps/count_app.py share CPU 1 (both pinned there): R, the reference, is never sampled; T,
the target, is sampled in some phases. Each counts its work in a fixed unit (one pass of a fixed loop) and
reports, about every 0.1 s, its clock, its thread's CPU time and the time it waited on the run queue (here:
mostly for the other copy). This process and every sampler run on CPU 0. What slows CPU 1 (its clock, a
neighbour on the host, cache pressure from other work) slows R and T alike within a window, so each window's
T/R ratio divides it out; measured on this shared VM, one app alone varied 30 % between windows a minute apart.
Each round runs four phases, in an order rotated every round so each phase takes each place equally often:
  U, U'    nobody samples T (U' is the A/A calibration: its ratio to U is the measurement's own noise)
  wand     the agent's profile op on T (the sampler under T's interpreter) at --rate Hz
  py-spy   py-spy record --nonblocking on T at the same rate
A phase starts its sampler, waits until it samples, and measures one window of --window seconds; each phase's
T/R ratio is divided by the round's U ratio. Three measures of throughput:
  own-time  units per second of wall time less the run-queue wait (the time the other copy and any other work
            held CPU 1 divides out; a pause of T would show here): the figure the claims rest on
  wall      units per wall second: also the scheduler's split of CPU 1 between R and T
  per-CPU   units per CPU second of the thread: how much slower its own code ran (caches, memory)
The sampler's CPU is the scheduler's run time (/proc/PID/task/*/schedstat) over the window of every process
this benchmark started except the apps, plus (wand) the agent thread that reads the sampler: its steady cost
per second of sampling. Start-up and report are the run's whole CPU (rusage) less that rate times its length.
Medians over rounds with the interquartile range, and the load average beside each round.

py-spy: --py-spy PATH, else py-spy 0.4.3 on PATH or beside this interpreter, else installed from PyPI with
`pip install py-spy==0.4.3` into this interpreter's virtualenv (or a venv under ~/.cache/kubectl-wand).
Run it under `flock /tmp/wand-bench.lock` on a shared machine.
"""
from __future__ import annotations

import argparse
import math
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
from benchstats import quartiles  # noqa: E402
import reportingapp  # noqa: E402
from pyspy import PYSPY_VERSION, find_pyspy  # noqa: E402
from kubectl_wand import profiles  # noqa: E402
from kubectl_wand.agent.main import handle  # noqa: E402

APP_CPU, OWN_CPU = 1, 0
SETTLE = 0.5  # seconds between a sampler's first sample and the window: its start-up is over
PHASES = ("U", "U'", "wand", "py-spy")


def App(args):
    """The count_app process: reports (ns clock, thread CPU ns, run-queue wait ns, units). The shell opens its own
    schedstat as fd 3, then becomes taskset, chroot and the app: one process, whose main thread is the app's only
    thread (a chroot has no /proc to open it from inside)."""
    return reportingapp.App(args, "count_app.py", APP_CPU, lambda words: tuple(int(x) for x in words),
                            prefix=["sh", "-c", 'exec 3</proc/self/schedstat; exec "$@"', "sh"])


MEASURES = ("own-time", "wall", "per-CPU")


def rates(r0, r1):
    """An app's throughput over the window between two of its reports, three ways (see the module docstring)."""
    wall, cpu, wait, units = (b - a for a, b in zip(r0, r1))
    return {"own-time": units / (wall - wait) * 1e9, "wall": units / wall * 1e9, "per-CPU": units / cpu * 1e9,
            "wait": wait / wall, "seconds": wall / 1e9}


def run_ns(pid, tids=None):
    """Scheduler run time (ns) of a process's threads (or of the given ones); 0 for what has gone."""
    total = 0
    try:
        tids = tids if tids is not None else os.listdir("/proc/%d/task" % pid)
    except OSError:
        return 0
    for tid in tids:
        try:
            with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


def descendants(skip):
    """Every process under this one, except ``skip`` and what runs under it."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as f:
                    ppid = int(f.read().rpartition(")")[2].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [os.getpid()]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in skip:
                found.append(child)
                todo.append(child)
    return found


class Meter:
    """CPU run time of the samplers this benchmark started (and of our agent thread) across one window."""

    def __init__(self, apps, own_tids=()):
        self.apps, self.own_tids = apps, list(own_tids)

    def now(self):
        """(samplers' run time, our agent thread's) in ns."""
        procs = descendants({pid for app in self.apps.values() for pid in (app.popen.pid, app.pid)})
        return sum(run_ns(p) for p in procs), run_ns(os.getpid(), self.own_tids)


def window(apps, seconds, meter=None):
    """T's throughput over R's in one window, each measure; T's own figures; the samplers' CPU."""
    r0 = {name: app.report() for name, app in apps.items()}
    c0 = meter.now() if meter else (0, 0)
    time.sleep(seconds)  # a measurement window: throughput only exists over a span of time
    r1 = {name: app.report() for name, app in apps.items()}
    c1 = meter.now() if meter else (0, 0)
    ref, out = rates(r0["R"], r1["R"]), rates(r0["T"], r1["T"])
    out.update({"T/R " + m: out[m] / ref[m] for m in MEASURES})
    # the sampler's CPU: its processes' and (wand) the agent thread's that reads it
    out["agent_ms_per_s"] = (c1[1] - c0[1]) / 1e6 / out["seconds"]
    out["sampler_ms_per_s"] = (c1[0] - c0[0]) / 1e6 / out["seconds"] + out["agent_ms_per_s"]
    return out


def children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def untouched(apps, args):
    time.sleep(SETTLE)
    return window(apps, args.window)


def wand(apps, args):
    """The agent's profile op on the app for window + 2 s; the window opens once it samples."""
    app, sampling, box, tid = apps["T"], threading.Event(), {}, []

    def on_event(event):
        if "progress" in event:
            sampling.set()

    def run():
        tid.append(threading.get_native_id())
        t0 = time.thread_time()
        box["result"] = handle({"op": "profile", "pid": app.pid, "rate": args.rate, "duration": args.window + 2},
                               emit=on_event)
        box["agent_cpu"] = time.thread_time() - t0

    cpu0 = children_cpu()
    worker = threading.Thread(target=run)
    worker.start()
    if not sampling.wait(60):
        raise SystemExit("the profile did not start")
    time.sleep(max(0.0, SETTLE - 0.5))  # the first progress line comes 0.5 s into sampling
    out = window(apps, args.window, Meter(apps, tid))
    worker.join(args.window + 60)
    result = box["result"]
    if result["status"] != "ok" or "profile" not in result["processes"][0]:
        raise SystemExit("profile failed: %s" % result)
    prof = result["processes"][0]["profile"]
    rows = profiles.top(profiles.merge([(None, result["processes"][0])]), lines=False)
    out.update(achieved=prof["achieved_rate"], errors=prof["errors"], run_cpu=children_cpu() - cpu0 + box["agent_cpu"],
               run_seconds=prof["duration"], hottest=[r["function"] for r in rows[:2]])
    return out


def pyspy(apps, args):
    """py-spy record --nonblocking on the app for a whole number of seconds >= window + 2."""
    app, duration = apps["T"], int(math.ceil(args.window + 2))
    out_file = tempfile.NamedTemporaryFile(prefix="pyspy-", suffix=".txt", delete=False)
    out_file.close()
    argv = [args.pyspy, "record", "--pid", str(app.pid), "--rate", str(int(args.rate)), "--duration", str(duration),
            "--format", "raw", "--output", out_file.name, "--nonblocking"]
    cpu0 = children_cpu()
    # py-spy 0.4.3 writes its messages on stdout when that is not a terminal
    spy = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        first = spy.stdout.readline().decode()  # "py-spy> Sampling process 100 times a second ..."
        if "Sampling process" not in first:
            raise SystemExit("py-spy did not start: %r" % first)
        time.sleep(SETTLE)
        out = window(apps, args.window, Meter(apps))
        said = spy.communicate(timeout=duration + 60)[0].decode()
        with open(out_file.name) as f:
            collapsed = f.read()
    finally:
        if spy.poll() is None:
            spy.kill()
            spy.wait(10)
        os.unlink(out_file.name)
    found = re.search(r"Samples: (\d+) Errors: (\d+)", said)
    own = {}
    for line in collapsed.splitlines():
        stack, count = line.rsplit(" ", 1)
        leaf = stack.split(";")[-1].split(" (")[0]
        own[leaf] = own.get(leaf, 0) + int(count)
    out.update(achieved=int(found.group(1)) / duration if found else 0.0,
               errors=int(found.group(2)) if found else None, run_cpu=children_cpu() - cpu0, run_seconds=duration,
               hottest=[name for name, _ in sorted(own.items(), key=lambda kv: -kv[1])[:2]])
    return out


def spread(values, scale=1.0, fmt="%.4f"):
    """'median (IQR q1-q3, min-max lo-hi)'."""
    q1, q3 = quartiles(values)
    return (fmt + " (IQR " + fmt + "-" + fmt + ", range " + fmt + "-" + fmt + ")") % tuple(
        v * scale for v in (statistics.median(values), q1, q3, min(values), max(values)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rootfs", default=reportingapp.DEFAULT_ROOTFS, help="Debian sid root with python3.14 (hack/py314-rootfs)")
    ap.add_argument("--python", help="run the app with this python3.14 directly instead of in --rootfs")
    ap.add_argument("--rounds", type=int, default=12, help="rounds of the four phases (default 12)")
    ap.add_argument("--window", type=float, default=8.0, help="seconds measured per phase (default 8)")
    ap.add_argument("--rate", type=float, default=100.0, help="samples per second (default 100)")
    ap.add_argument("--py-spy", dest="pyspy", help="the py-spy binary (default: find or install %s)" % PYSPY_VERSION)
    args = ap.parse_args()
    if os.cpu_count() < 2:
        raise SystemExit("needs 2 CPUs: the app on CPU %d, the samplers on CPU %d" % (APP_CPU, OWN_CPU))
    if not args.python:
        reportingapp.install(args.rootfs, "count_app.py")
    args.pyspy = find_pyspy(args.pyspy)
    os.sched_setaffinity(0, {OWN_CPU})  # the samplers (our children) inherit it
    run_phase = {"U": untouched, "U'": untouched, "wand": wand, "py-spy": pyspy}

    print("apps: bench/apps/count_app.py x2 (R, T) on CPU %d; samplers on CPU %d; %d rounds of %s, %g s windows, "
          "%g Hz; load %s" % (APP_CPU, OWN_CPU, args.rounds, "/".join(PHASES), args.window, args.rate,
                              " ".join("%.2f" % x for x in os.getloadavg())), flush=True)
    rounds, apps = [], {}
    try:
        apps["R"] = App(args)
        apps["T"] = App(args)
        window(apps, 2.0)  # warm-up
        for r in range(args.rounds):
            order = PHASES[r % len(PHASES):] + PHASES[:r % len(PHASES)]
            got = {name: run_phase[name](apps, args) for name in order}
            got["load"] = os.getloadavg()[0]
            rounds.append(got)
            print("round %2d  load %.2f  own-time T/R vs U: U' %.4f wand %.4f py-spy %.4f  sampler ms/s: wand "
                  "%.2f py-spy %.2f  Hz: wand %.1f py-spy %.1f" % (
                      r + 1, got["load"], *(effect(got, p, "own-time") for p in PHASES[1:]),
                      got["wand"]["sampler_ms_per_s"], got["py-spy"]["sampler_ms_per_s"],
                      got["wand"]["achieved"], got["py-spy"]["achieved"]), flush=True)
    finally:
        for app in apps.values():
            app.stop()

    print()
    print("T's throughput over R's, relative to U's in the same round (median, IQR, range over %d rounds):"
          % len(rounds))
    for measure in MEASURES:
        for phase in PHASES[1:]:
            label = "U' (A/A calibration)" if phase == "U'" else phase
            print("  %-9s %-21s %s" % (measure, label, spread([effect(g, phase, measure) for g in rounds])))
    print("sampler CPU per second of sampling, window only (ms/s):")
    for phase in ("wand", "py-spy"):
        print("  %-8s %s" % (phase, spread([g[phase]["sampler_ms_per_s"] for g in rounds], fmt="%.2f")))
    print("  (of wand's, the agent thread's: %s)" % spread([g["wand"]["agent_ms_per_s"] for g in rounds], fmt="%.2f"))
    # each round's pair ran minutes apart at most: their ratio divides out what the machine's load did to both
    print("  wand / py-spy in the same round: %s" % spread(
        [g["wand"]["sampler_ms_per_s"] / g["py-spy"]["sampler_ms_per_s"] for g in rounds], fmt="%.3f"))
    print("start-up and report: the whole run's CPU less the window's rate times its length (ms):")
    for phase in ("wand", "py-spy"):
        print("  %-8s %s" % (phase, spread([g[phase]["run_cpu"] * 1000 - g[phase]["sampler_ms_per_s"] * g[phase][
            "run_seconds"] for g in rounds], fmt="%.1f")))
    print("achieved rate over the whole run (Hz):")
    for phase in ("wand", "py-spy"):
        print("  %-8s %s" % (phase, spread([g[phase]["achieved"] for g in rounds], fmt="%.2f")))
    print("T's share of wall time waiting for CPU 1: %s" % spread([g["U"]["wait"] for g in rounds], fmt="%.3f"))
    print("hottest two (own time): wand %s; py-spy %s" % (rounds[0]["wand"]["hottest"], rounds[0]["py-spy"]["hottest"]))
    print("load average per round: %s" % spread([g["load"] for g in rounds], fmt="%.2f"))

    calib = [effect(g, "U'", "own-time") for g in rounds]
    ours = [effect(g, "wand", "own-time") for g in rounds]
    c1, c3 = quartiles(calib)
    o1, _ = quartiles(ours)
    cpu_ours = [g["wand"]["sampler_ms_per_s"] for g in rounds]
    cpu_spy = [g["py-spy"]["sampler_ms_per_s"] for g in rounds]
    lower = sum(a <= b for a, b in zip(cpu_ours, cpu_spy))
    verdicts = [
        ("sampler CPU (median) <= py-spy --nonblocking's: %.2f vs %.2f ms/s (lower in %d of %d rounds)" % (
            statistics.median(cpu_ours), statistics.median(cpu_spy), lower, len(rounds)),
         statistics.median(cpu_ours) <= statistics.median(cpu_spy)),
        ("achieved rate >= 99.5 %% of requested in every round (min %.2f Hz)"
         % min(g["wand"]["achieved"] for g in rounds), all(g["wand"]["achieved"] >= 0.995 * args.rate for g in rounds)),
        ("own-time throughput >= 99 %% (lower quartile %.4f)" % o1, o1 >= 0.99),
        ("calibration's IQR (%.4f-%.4f) narrower than the 1 %% claimed" % (c1, c3), c3 - c1 < 0.01),
        ("same two hottest functions as py-spy", rounds[0]["wand"]["hottest"] == rounds[0]["py-spy"]["hottest"]),
    ]
    print()
    for text, ok in verdicts:
        print("%-84s %s" % (text, "ok" if ok else "MISSED"))
    return 0 if all(ok for _, ok in verdicts) else 1


def effect(got, phase, measure):
    """T/R in ``phase`` over T/R untouched (U) in the same round."""
    return got[phase]["T/R " + measure] / got["U"]["T/R " + measure]


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
