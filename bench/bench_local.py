"""Local engine benchmarks against real CPython 3.14 targets. Prints medians; exits 1 if a target is missed.

  exec-py round trip on a busy target   (whole CLI command, as a user runs it)   target <= 0.15 s
  attach to "listening confirmed"       (whole CLI command, fresh target each)  target <= 0.7 s
  kubectl wand --help                   (whole CLI command)                      target <= 0.15 s
Also printed: the in-process agent round trip (no interpreter start-up), to show where time goes.
"""
from __future__ import annotations

import argparse
import os
import select
import shutil
import socket
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
CLI = [sys.executable, "-m", "kubectl_wand"]
APPS = os.path.join(REPO, "tests", "apps")


def start(argv):
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
    fd = p.stdout.fileno()
    line = b""
    deadline = time.monotonic() + 20
    while not line.endswith(b"\n"):
        if not select.select([fd], [], [], max(0, deadline - time.monotonic()))[0]:
            raise SystemExit("target did not start: %r" % argv)
        line += os.read(fd, 1)
    info = dict(kv.split("=", 1) for kv in line.decode().split()[1:])
    return p, int(info["pid"])


def timed(argv, runs):
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)
        times.append(time.perf_counter() - t)
        if done.returncode != 0:
            raise SystemExit("benchmark command failed: %s\n%s" % (argv, done.stderr.decode()))
    return times


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rootfs", help="Debian sid root filesystem with python3.14 (hack/py314-rootfs)")
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--zipapp", help="a built kubectl-wand zipapp (krew/build) to time as well")
    args = ap.parse_args()
    exe = shutil.which("python3.14")
    if exe:
        def target(app):
            return [exe, os.path.join(APPS, app)]
    else:
        dest = args.rootfs + "/opt/wand-tests"
        os.makedirs(dest, exist_ok=True)
        for name in os.listdir(APPS):
            shutil.copy(os.path.join(APPS, name), dest)

        def target(app):
            return ["chroot", args.rootfs, "/usr/bin/python3.14", "/opt/wand-tests/" + app]

    results = []
    busy, pid = start(target("busy.py"))
    procs = [busy]
    try:
        help_times = timed(CLI + ["--help"], args.runs)
        results.append(("kubectl wand --help", help_times, 0.15))
        results.append(("kubectl_complete-wand '' (verbs)", timed(
            [sys.executable, "-m", "kubectl_wand.completion", ""], args.runs), 0.15))
        if args.zipapp:
            timed([sys.executable, "-I", args.zipapp, "--version"], 1)  # the first run unpacks it once
            results.append(("zipapp --help (unpacked)", timed([sys.executable, "-I", args.zipapp, "--help"],
                                                              args.runs), 0.15))
        timed(CLI + ["exec-py", "pid/%d" % pid, "--", "1"], 2)  # warm the page cache and the target's imports
        results.append(("exec-py round trip, busy target", timed(CLI + ["exec-py", "pid/%d" % pid, "--", "counter"],
                                                                  args.runs), 0.15))
        from kubectl_wand.agent import main as agent
        inproc = []
        for _ in range(args.runs):
            t = time.perf_counter()
            assert agent.handle({"op": "exec", "pid": pid, "code": "counter", "timeout": 5})["status"] == "ok"
            inproc.append(time.perf_counter() - t)
        results.append(("  of which the agent (in-process)", inproc, None))
        attach = []
        for _ in range(max(5, args.runs // 2)):
            app, app_pid = start(target("http_app.py"))
            procs.append(app)
            attach += timed(CLI + ["attach", "pid/%d" % app_pid, "--port", str(free_port())], 1)
            app.kill()
        results.append(("attach to listening confirmed", attach, 0.7))
    finally:
        for p in procs:
            p.kill()
            p.wait()
        subprocess.run(["pkill", "-f", "debugpy/adapter --for-server"], check=False)
    missed = 0
    print("%-36s %8s %8s %8s  %s" % ("benchmark (seconds)", "median", "min", "target", "runs"))
    for name, times, goal in results:
        med = statistics.median(times)
        verdict = "" if goal is None else ("ok" if med <= goal else "MISSED")
        missed += verdict == "MISSED"
        print("%-36s %8.3f %8.3f %8s  %d %s" % (name, med, min(times), "-" if goal is None else "%.2f" % goal,
                                                len(times), verdict))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
