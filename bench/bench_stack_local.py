"""What a local `kubectl wand stack pid/N` costs, piece by piece, beside `py-spy dump --pid N` (py-spy 0.4.3).

A CPython 3.14 target (two threads asleep in Python code) runs in the provisioned root (hack/py314-rootfs), as
the tests' targets do. Interleaved rounds, each measuring, in a fresh process every time (wall time, and the CPU
of the process and its children):
  stack        `kubectl-wand stack pid/N`, the console script kubectl runs (the whole CLI)
  stack-async  `kubectl-wand stack --async pid/N`
  py-spy       `py-spy dump --pid N` (py-spy has no asyncio view: its dump is the reference for both)
  bare         `python -c pass` with the CLI's interpreter, site included (the floor of a console script)
  bare-S       `python -S -c pass` (the interpreter alone)
  imports      the CLI's interpreter importing what `stack pid/N` imports (site included)
  sampler      the stack reader exactly as the agent starts it locally (the target's interpreter, beside the
               target): the second interpreter's start, loading the reader's compiled code and the read itself
  sampler-src  the same from source, compiled on every start (as in a pod, where there is no cache)
  target-S     the target's interpreter alone, started the same way (`-S -c pass`)
The CLI's modules are byte-compiled first, as pip does when it installs a wheel (PYTHONDONTWRITEBYTECODE, set in
some shells, would otherwise make every run compile them from source: ~60 ms). Prints medians and quartiles of
wall and CPU; the ratios stack / py-spy per round are the issue's figures (goal <= 2x).
"""
from __future__ import annotations

import argparse
import compileall
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
STACK_IMPORTS = ("import kubectl_wand.launch, kubectl_wand.cli, kubectl_wand.commands.stack, kubectl_wand.agent.main, "
                 "kubectl_wand.agent.observe, kubectl_wand.transport.local, kubectl_wand.stackview, "
                 "kubectl_wand.streams, kubectl_wand.agent.runtime, kubectl_wand.agent.processes")


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(argv, env=None, stdin=None):
    """(wall seconds, CPU seconds of it and its children), the output checked."""
    cpu0, t0 = children_cpu(), time.perf_counter()
    done = subprocess.run(argv, capture_output=True, timeout=60, env=env, cwd=REPO, input=stdin)
    wall = time.perf_counter() - t0
    if done.returncode != 0 or b"error" in done.stdout[:200]:
        raise SystemExit("%s failed: %s %s" % (argv[:4], done.stdout[:400], done.stderr.decode()[-400:]))
    return wall, children_cpu() - cpu0


def sampler_cases(pid):
    """{name: (argv, env, stdin)}: the stack reader as observe.stack starts it locally (its code compiled once by
    the target's interpreter and kept in the user's cache), and as it starts in a pod (the source, compiled on
    every start), with the interpreter's bare start beside them."""
    from kubectl_wand import usercache
    from kubectl_wand.agent import procfs, runtime, observe
    rt = runtime.TargetRuntime(procfs.Proc(pid))
    args = ["stack", str(rt.injector_pid)] + observe.runtime_args(rt)
    code = rt.compiled(observe.sampler_source(), usercache)
    if not code:
        raise SystemExit("the target's interpreter did not compile the stack reader")
    loaded = rt.command(["-c", runtime.LOAD_CODE] + args) + (code,)
    source = rt.command(["-c", observe.sampler_source()] + args) + (None,)
    bare = rt.command(["-c", "pass"]) + (None,)
    return {"sampler": loaded, "sampler-src": source, "target-S": bare}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rootfs", default=DEFAULT_ROOTFS)
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--py-spy", dest="pyspy")
    args = ap.parse_args()
    compileall.compile_dir(os.path.join(REPO, "kubectl_wand"), quiet=1)
    os.makedirs(os.path.join(args.rootfs, "opt/wand-bench"), exist_ok=True)
    path = os.path.join(args.rootfs, "opt/wand-bench/stack_target.py")
    with open(path, "w") as f:
        f.write(APP)
    chroot = shutil.which("chroot") or "/usr/sbin/chroot"
    app = subprocess.Popen([chroot, args.rootfs, "/usr/bin/python3.14", "/opt/wand-bench/stack_target.py"],
                           stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True)
    script = os.path.join(os.path.dirname(sys.executable), "kubectl-wand")
    if not os.path.exists(script):
        raise SystemExit("no %s: run this with the interpreter of the virtualenv kubectl-wand is installed in" % script)
    try:
        pid = int(app.stdout.readline().decode().split("=")[1])
        pyspy = find_pyspy(args.pyspy)
        env = dict(os.environ)
        cases = {
            "stack": ([script, "stack", "pid/%d" % pid], env, None),
            "stack-async": ([script, "stack", "--async", "pid/%d" % pid], env, None),
            "py-spy": ([pyspy, "dump", "--pid", str(pid)], None, None),
            "bare": ([sys.executable, "-c", "pass"], env, None),
            "bare-S": ([sys.executable, "-S", "-c", "pass"], env, None),
            "imports": ([sys.executable, "-c", STACK_IMPORTS], env, None),
        }
        cases.update(sampler_cases(pid))
        results = {name: ([], []) for name in cases}
        for _ in range(args.rounds):
            for name, (argv, e, stdin) in cases.items():
                wall, cpu = timed(argv, e, stdin)
                results[name][0].append(wall)
                results[name][1].append(cpu)
    finally:
        app.kill()
        app.wait()
    print("load average (1, 5, 15 min) after the rounds: %s" % open("/proc/loadavg").read().split()[:3])
    print("%-12s %9s %15s %9s %15s" % ("", "wall ms", "(quartiles)", "CPU ms", "(quartiles)"))
    for name, (walls, cpus) in results.items():
        q1, q3 = quartiles(walls)
        c1, c3 = quartiles(cpus)
        print("%-12s %9.1f %6.1f-%-8.1f %9.1f %6.1f-%-8.1f" % (
            name, statistics.median(walls) * 1e3, q1 * 1e3, q3 * 1e3,
            statistics.median(cpus) * 1e3, c1 * 1e3, c3 * 1e3))
    for name in ("stack", "stack-async"):
        for i, what in ((0, "wall"), (1, "CPU")):
            ratios = [a / b for a, b in zip(results[name][i], results["py-spy"][i]) if b > 0]
            q1, q3 = quartiles(ratios)
            print("%-11s / py-spy dump, %-4s (per round): median %.2fx (quartiles %.2f-%.2f), %d rounds" % (
                name, what, statistics.median(ratios), q1, q3, len(ratios)))


if __name__ == "__main__":
    main()
