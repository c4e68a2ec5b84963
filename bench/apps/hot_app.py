"""A CPU-bound app with known hot functions, for bench_observe_local.py.

Its main thread does work units forever: each unit spends about 3/4 of its time in hot_path() and 1/4 in
warm_path(). Every 0.1 s it writes "MONOTONIC_TIME UNITS" on stdout, so the benchmark can compute its
throughput over any window from two of these lines (the times are the app's own, so reading them late costs
no precision).
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
    units = 0
    next_report = time.monotonic()
    print("READY pid=%d" % os.getpid(), flush=True)
    while True:
        hot_path(3000)
        warm_path(1600)
        units += 1
        now = time.monotonic()
        if now >= next_report:
            sys.stdout.write("%.6f %d\n" % (now, units))
            sys.stdout.flush()
            next_report = now + 0.1


main()
