"""App throughput while an editor is attached (no breakpoints) / unattached, on this machine. Exit 1 if < 97 %.

The web app of the cluster tests (tests/e2e/apps/web.py: FastAPI under uvicorn, a sync endpoint that runs in
anyio's thread pool) runs twice, A and B, both pinned to CPU 1; this process (the load generator, the attach
CLI and the DAP client) is pinned to CPU 0. Each window gives one ratio B/A (requests/s), so whatever else
the machine does divides out:

  1. calibration: both never attached -> median of the per-window ratios B/A (the two processes' own ratio)
  2. attach kubectl-wand to B (the real CLI, pid/N) and connect a DAP client (initialize, attach,
     configurationDone; no breakpoints), as bench_cluster.py's `throughput` does -> median B/A again
  attached/unattached = (2) / (1), with a bootstrap 95 % interval over the windows

--mode concurrent (default) loads A and B in the same windows: they share CPU 1 fairly (separate sessions,
so separate scheduler groups) and both meet the same interference, so B/A is B's speed relative to A's.
--mode alternate runs windows A, B, B, A, ... (ABBA cancels a linear drift): the textbook method, but on a
2-core VM that also runs a cluster one window can differ from the next by 2x, which drowns a 3 % effect.
--null skips the attach: how far the ratio moves when nothing changes.

The load is N keep-alive connections per app from one selector loop (default 4: the app stays saturated, so
requests/s measures its cost per request); --connections 1 is the cluster benchmark's single loop. Also
printed: the app's CPU time per request (from /proc/PID/task/*/schedstat) and the CPU each of B's threads
used while attached (the debugger's own threads show up there).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

from benchstats import quartiles

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))
CLI = [sys.executable, "-m", "kubectl_wand"]
WEB_APP = os.path.join(REPO, "tests", "e2e", "apps", "web.py")
IN_ROOT_DIR = "/opt/wand-bench"
DEFAULT_ROOTFS = os.path.expanduser("~/.cache/kubectl-wand/py314-rootfs")
APP_CPU, LOAD_CPU = 1, 0
REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthy(port):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/healthz" % port, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def start_app(args, port):
    """uvicorn web:app on CPU APP_CPU; returns once it answers /healthz."""
    if args.python:
        argv = [args.python, "-m", "uvicorn", "web:app", "--app-dir", os.path.dirname(WEB_APP)]
    else:
        argv = [shutil.which("chroot") or "/usr/sbin/chroot", args.rootfs, "/usr/bin/python3.14", "-m", "uvicorn", "web:app", "--app-dir", IN_ROOT_DIR]
    argv = ["taskset", "-c", str(APP_CPU)] + argv + ["--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={"PATH": "/usr/local/bin:/usr/bin:/bin"}, start_new_session=True)
    deadline = time.monotonic() + 30
    while not healthy(port):  # nothing to wait on but the port itself: poll it
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit("the web app did not start: %s" % proc.stderr.read().decode(errors="replace"))
        time.sleep(0.05)
    return proc


def app_pid(proc):
    """The python process: taskset and chroot exec, so the Popen pid is the app's pid."""
    return proc.pid


def load(apps, seconds, connections):
    """Drive the apps [(port, pid), ...] at once for `seconds`: `connections` keep-alive connections to each,
    one request in flight on each connection. Returns one Window per app."""
    sel = selectors.DefaultSelector()
    socks, done = [], [0] * len(apps)
    try:
        for i, (port, _pid) in enumerate(apps):
            for _ in range(connections):
                s = socket.create_connection(("127.0.0.1", port), timeout=10)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                s.setblocking(False)
                socks.append(s)
                sel.register(s, selectors.EVENT_READ, (i, bytearray()))
        cpu = [run_ns(pid) for _port, pid in apps]
        start = time.perf_counter()
        end = start + seconds
        for s in socks:
            s.sendall(REQUEST)
        while True:
            now = time.perf_counter()
            if now >= end:
                break
            events = sel.select(timeout=min(end - now, 5.0))
            if not events and time.perf_counter() < end:
                raise SystemExit("an app stopped answering")
            for key, _ in events:
                s, (i, buf) = key.fileobj, key.data
                chunk = s.recv(65536)
                if not chunk:
                    raise SystemExit("an app closed a connection")
                buf += chunk
                while True:  # complete responses in buf (one per request; no pipelining)
                    head_end = buf.find(b"\r\n\r\n")
                    if head_end < 0:
                        break
                    total = head_end + 4 + content_length(bytes(buf[:head_end]))
                    if len(buf) < total:
                        break
                    del buf[:total]
                    done[i] += 1
                    if time.perf_counter() < end:
                        s.sendall(REQUEST)
        elapsed = time.perf_counter() - start
        cpu = [run_ns(pid) - before for (_port, pid), before in zip(apps, cpu)]
    finally:
        sel.close()
        for s in socks:
            s.close()
    return [Window(n / elapsed, ns / 1000.0 / max(n, 1)) for n, ns in zip(done, cpu)]


class Window:
    def __init__(self, rate, cpu_us):
        self.rate, self.cpu_us = rate, cpu_us  # requests/s; the app's CPU microseconds per request


def content_length(head):
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    raise SystemExit("response without Content-Length: %r" % head)


def run_ns(pid):
    """Nanoseconds on the CPU of all of pid's threads (live ones: schedstat of each task)."""
    total = 0
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                total += int(f.read().split()[0])
        except OSError:
            pass
    return total


def thread_cpu(pid):
    """{tid: (name, cpu seconds)} for every thread of pid."""
    out = {}
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                raw = f.read()
            with open("/proc/%d/task/%s/comm" % (pid, tid)) as f:
                name = f.read().strip()
        except OSError:
            continue
        fields = raw.rsplit(")", 1)[1].split()
        out[int(tid)] = (name, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))
    return out


def measure(a, b, args):
    """Per-window (Window of A, Window of B)."""
    out = []
    for i in range(args.pairs):
        if args.mode == "concurrent":
            out.append(tuple(load([a, b], args.window, args.connections)))
        elif i % 2 == 0:  # ABBA: A B, B A, A B, ...
            wa, = load([a], args.window, args.connections)
            wb, = load([b], args.window, args.connections)
            out.append((wa, wb))
        else:
            wb, = load([b], args.window, args.connections)
            wa, = load([a], args.window, args.connections)
            out.append((wa, wb))
    return out


def interval(before, after, runs=2000):
    """Bootstrap 95 % interval of median(after ratios) / median(before ratios)."""
    rng = random.Random(1)
    got = sorted(statistics.median(rng.choices(after, k=len(after))) /
                 statistics.median(rng.choices(before, k=len(before))) for _ in range(runs))
    return got[int(0.025 * runs)], got[int(0.975 * runs) - 1]


def summary(pairs):
    """Medians and spread of the per-pair ratios B/A: of requests/s, and of CPU per request (A/B, so that
    both read "B's share of A's speed")."""
    rate = sorted(b.rate / a.rate for a, b in pairs)
    cost = sorted(a.cpu_us / b.cpu_us for a, b in pairs)
    (q1, q3), (cpu_q1, cpu_q3) = quartiles(rate), quartiles(cost)
    return {"ratio": statistics.median(rate), "q1": q1, "q3": q3,
            "min": rate[0], "max": rate[-1], "cpu_ratio": statistics.median(cost),
            "cpu_q1": cpu_q1, "cpu_q3": cpu_q3,
            "a": statistics.median(a.rate for a, _ in pairs), "b": statistics.median(b.rate for _, b in pairs),
            "a_us": statistics.median(a.cpu_us for a, _ in pairs),
            "b_us": statistics.median(b.cpu_us for _, b in pairs),
            "ratios": [round(r, 4) for r in rate], "cpu_ratios": [round(r, 4) for r in cost]}


def attach(pid, port, timeout):
    """Run the real CLI (local pid) to start debugpy in B; returns once listening is confirmed."""
    done = subprocess.run(CLI + ["attach", "pid/%d" % pid, "--port", str(port), "-o", "json", "-q"],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=REPO))
    if done.returncode != 0:
        raise SystemExit("attach failed (%d): %s" % (done.returncode, done.stderr))
    return json.loads(done.stdout)


def connect_editor(port, exception_filters):
    import dap
    client = dap.DAPClient("127.0.0.1", port)
    client.attach_editor(exception_filters=exception_filters or ())
    return client


def still_connected(client):
    """The editor is still there: the measurement was of an attached app, not of a dropped connection."""
    threads = client.request("threads")["body"]["threads"]
    return bool(threads)


def show(name, s):
    print("%-30s req/s A %7.1f B %7.1f  B/A median %.4f (IQR %.4f-%.4f, min-max %.4f-%.4f)" % (
        name, s["a"], s["b"], s["ratio"], s["q1"], s["q3"], s["min"], s["max"]))
    print("%-30s CPU us/request A %6.1f B %6.1f  A/B median %.4f (IQR %.4f-%.4f)" % (
        "", s["a_us"], s["b_us"], s["cpu_ratio"], s["cpu_q1"], s["cpu_q3"]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rootfs", default=DEFAULT_ROOTFS, help="Debian sid root filesystem with python3.14 and "
                    "fastapi/uvicorn/debugpy (hack/py314-rootfs); used when --python is not given")
    ap.add_argument("--python", help="run the app with this python3.14 directly instead of in --rootfs")
    ap.add_argument("--pairs", type=int, default=30, help="A/B windows (pairs of windows) per phase (default 30)")
    ap.add_argument("--window", type=float, default=1.0, help="seconds per window (default 1)")
    ap.add_argument("--connections", type=int, default=4, help="keep-alive connections (default 4; 1 = the "
                    "cluster benchmark's loop)")
    ap.add_argument("--mode", choices=("concurrent", "alternate"), default="concurrent",
                    help="load A and B in the same windows (default) or alternate windows A, B, B, A, ...")
    ap.add_argument("--exception-filters", default="", help="comma-separated DAP exception filters to set "
                    "(e.g. uncaught, as an editor does by default); default: none, as bench_cluster.py")
    ap.add_argument("--null", action="store_true", help="null test: do not attach (the second phase measures "
                    "how much the ratio moves when nothing changes)")
    ap.add_argument("--goal", type=float, default=0.97)
    ap.add_argument("--json", action="store_true", help="also print every per-pair ratio as JSON")
    args = ap.parse_args()
    if os.cpu_count() < 2:
        raise SystemExit("needs 2 CPUs: the app on CPU %d, the load on CPU %d" % (APP_CPU, LOAD_CPU))
    if not args.python:
        if not os.path.exists(os.path.join(args.rootfs, "usr/bin/python3.14")):
            raise SystemExit("no python3.14 in %s (hack/py314-rootfs makes it) and no --python" % args.rootfs)
        os.makedirs(args.rootfs + IN_ROOT_DIR, exist_ok=True)
        shutil.copy(WEB_APP, args.rootfs + IN_ROOT_DIR + "/web.py")
    os.sched_setaffinity(0, {LOAD_CPU})  # children (the attach CLI) inherit it

    procs, client = [], None
    try:
        port_a, port_b = free_port(), free_port()
        procs = [start_app(args, port_a), start_app(args, port_b)]
        pid_b = app_pid(procs[1])
        a, b = (port_a, app_pid(procs[0])), (port_b, pid_b)
        for _ in range(2):  # warm-up: first requests pay for imports, caches and the thread pool
            load([a, b], args.window, args.connections)
        before_pairs = measure(a, b, args)

        if not args.null:
            debug_port = free_port()
            attached = attach(pid_b, debug_port, 60)
            client = connect_editor(attached["local_port"] or debug_port,
                                    [f for f in args.exception_filters.split(",") if f])
        load([a, b], args.window, args.connections)  # warm-up after attach: the debugger meets the threads
        threads0 = thread_cpu(pid_b)
        after_pairs = measure(a, b, args)
        threads1 = thread_cpu(pid_b)
        if client is not None and not still_connected(client):
            raise SystemExit("the DAP client lost its connection during the measurement")
    finally:
        if client is not None:
            client.close()
        for p in procs:
            p.kill()
            p.wait(timeout=10)

    print("app: tests/e2e/apps/web.py under uvicorn on CPU %d; load on CPU %d, %d connection(s) per app, %s"
          % (APP_CPU, LOAD_CPU, args.connections, args.mode))
    print("%d %s of %g s per phase" % (args.pairs, "windows" if args.mode == "concurrent" else "pairs of windows",
                                       args.window))
    before, after = summary(before_pairs), summary(after_pairs)
    show("calibration (both unattached)", before)
    show("B unattached (--null)" if args.null else "B attached, editor connected", after)
    ratio = after["ratio"] / before["ratio"]
    low, high = interval([w.rate / v.rate for v, w in before_pairs], [w.rate / v.rate for v, w in after_pairs])
    print("CPU time per request, attached/unattached: %.1f %% of the speed; B alone (not corrected for the "
          "machine's drift): %.1f -> %.1f req/s" % (100 * after["cpu_ratio"] / before["cpu_ratio"], before["b"],
                                                     after["b"]))
    busy = sorted(((threads1[t][1] - threads0.get(t, (None, 0.0))[1], threads1[t][0], t) for t in threads1),
                  reverse=True)
    print("B's threads (CPU s during the second phase): " + ", ".join(
        "%s/%d %.2f" % (name, tid, used) for used, name, tid in busy[:6]))
    if args.json:
        print(json.dumps({"before": before, "after": after, "ratio": ratio}))
    verdict = "ok" if ratio >= args.goal else "MISSED"
    print("throughput attached/unattached: %.1f %% (95 %% interval %.1f-%.1f %%; target >= %.0f %%) %s" % (
        100 * ratio, 100 * low, 100 * high, 100 * args.goal, verdict))
    return 0 if ratio >= args.goal else 1


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
