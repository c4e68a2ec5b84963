"""A CPU-bound app that counts its own work, for bench/bench_profile_ab.py (bench/apps/hot_app.py without the
clocks is bench_observe_local.py's).

Its main thread does work units forever, each the same fixed loop (about 3/4 of it in hot_path() and 1/4 in
warm_path(), so both samplers must name the same hottest functions). About every 0.1 s it writes one line,
"MONOTONIC_NS THREAD_CPU_NS RUNQUEUE_WAIT_NS UNITS": its own clock, the CPU time of its thread, the time the
thread waited on a run queue (runnable, another task on its CPU: /proc/thread-self/schedstat's second field,
current while we run; read through file descriptor 3 when it is open, which the benchmark's shell opened on
/proc/self/schedstat before exec'ing chroot and the app's interpreter in the same process: a chroot has no
/proc), and the units done. Two lines bound a window: the benchmark divides units by wall time
(throughput), by wall time less the run-queue wait (throughput while it could run: what the rest of a shared
machine takes divides out) and by CPU time.
"""
import os
import sys
import time


def hot_path(n):
    total = 0
    for i in range(n):
        total += i * i
    return total


def warm_path(n):
    total = 0
    for i in range(n):
        total ^= i
    return total


def main():
    try:
        os.fstat(3)
        schedstat = 3
    except OSError:
        schedstat = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
    units = 0
    next_report = time.monotonic()
    print("READY pid=%d" % os.getpid(), flush=True)
    while True:
        hot_path(3000)
        warm_path(1600)
        units += 1
        now = time.monotonic()
        if now >= next_report:
            wait = int(os.pread(schedstat, 128, 0).split()[1])
            sys.stdout.write("%d %d %d %d\n" % (time.monotonic_ns(), time.thread_time_ns(), wait, units))
            sys.stdout.flush()
            next_report = now + 0.1


main()
