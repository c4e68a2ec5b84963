"""What a local `kubectl wand stack pid/N` costs, piece by piece, beside `py-spy dump --pid N` (py-spy 0.4.3).

A CPython 3.14 target (two threads asleep in Python code) runs in the provisioned root (hack/py314-rootfs), as
the tests' targets do. Interleaved rounds, each measuring, in a fresh process every time (wall time, and the CPU
of the process and its children):
  stack      `python -m kubectl_wand stack pid/N` (the whole CLI)
  py-spy     `py-spy dump --pid N`
  bare       `python -S -c pass` with the CLI's interpreter (the floor of any Python CLI)
  imports    `python -c "import kubectl_wand.cli, kubectl_wand.commands.stack, kubectl_wand.agent.observe"`
  sampler    the sampler exactly as the agent starts it (the target's interpreter, beside the target): the
             second interpreter's start plus the read itself
Prints medians and quartiles; the ratio stack / py-spy is the issue's figure (goal <= 2x).
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchstats import quartiles  # noqa: E402
from bench_observe_local import DEFAULT_ROOTFS, find_pyspy  # noqa: E402

APP = """import os, threading, time
def inner():
    time.sleep(3600)
def outer():
    inner()
print("READY pid=%d" % os.getpid(), flush=True)
threading.Thread(target=outer, name="worker", daemon=True).start()
outer()
"""


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(argv, env=None):
    """(wall seconds, CPU seconds of it and its children), the output checked."""
    cpu0, t0 = children_cpu(), time.perf_counter()
    done = subprocess.run(argv, capture_output=True, timeout=60, env=env, cwd=REPO)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit("%s failed: %s" % (argv[:4], done.stderr.decode()[-400:]))
    return wall, children_cpu() - cpu0


def sampler_argv(pid):
    from kubectl_wand.agent import procfs, runtime
    from kubectl_wand.agent.sources import module_source
    argv, env = runtime.TargetRuntime(procfs.Proc(pid)).command(["-c", module_source("sampler"), "stack", str(pid)])
    return argv, env


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rootfs", default=DEFAULT_ROOTFS)
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--py-spy", dest="pyspy")
    args = ap.parse_args()
    os.makedirs(os.path.join(args.rootfs, "opt/wand-bench"), exist_ok=True)
    path = os.path.join(args.rootfs, "opt/wand-bench/stack_target.py")
    with open(path, "w") as f:
        f.write(APP)
    chroot = shutil.which("chroot") or "/usr/sbin/chroot"
    app = subprocess.Popen([chroot, args.rootfs, "/usr/bin/python3.14", "/opt/wand-bench/stack_target.py"],
                           stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        pid = int(app.stdout.readline().decode().split("=")[1])
        pyspy = find_pyspy(args.pyspy)
        env = dict(os.environ, PYTHONPATH=REPO)
        s_argv, s_env = sampler_argv(pid)
        cases = {
            "stack": ([sys.executable, "-m", "kubectl_wand", "stack", "pid/%d" % pid], env),
            "py-spy": ([pyspy, "dump", "--pid", str(pid)], None),
            "bare": ([sys.executable, "-S", "-c", "pass"], None),
            "imports": ([sys.executable, "-c", "import kubectl_wand.cli, kubectl_wand.commands.stack, "
                                               "kubectl_wand.agent.observe"], env),
            "sampler": (s_argv, s_env),
        }
        results = {name: ([], []) for name in cases}
        for _ in range(args.rounds):
            for name, (argv, e) in cases.items():
                wall, cpu = timed(argv, e)
                results[name][0].append(wall)
                results[name][1].append(cpu)
    finally:
        app.kill()
        app.wait()
    print("%-8s %10s %17s %10s" % ("", "wall ms", "(quartiles)", "CPU ms"))
    for name, (walls, cpus) in results.items():
        q1, q3 = quartiles(walls)
        print("%-8s %10.1f %8.1f-%-8.1f %10.1f" % (name, statistics.median(walls) * 1e3, q1 * 1e3, q3 * 1e3,
                                                    statistics.median(cpus) * 1e3))
    ratios = [a / b for a, b in zip(results["stack"][0], results["py-spy"][0])]
    q1, q3 = quartiles(ratios)
    print("stack / py-spy dump (per round): median %.2fx (quartiles %.2f-%.2f), %d rounds" % (
        statistics.median(ratios), q1, q3, args.rounds))


if __name__ == "__main__":
    main()
