"""The app bench_trace_local.py measures: a CPU-bound work loop that publishes its progress in shared memory.

argv: COUNTER_FILE HOT_PER_SECOND. Each unit of work is a few microseconds of ordinary Python (a dict, a
string, arithmetic); the number of units done is written to the first 8 bytes of COUNTER_FILE (mmap) every
64 units, so the bench reads throughput without talking to the app. ``hot`` runs HOT_PER_SECOND times a second
of wall time, whatever share of the CPU the app gets; ``never`` never runs.
"""
import mmap
import os
import struct
import sys
import time


def unit(n):
    record = {"id": n, "name": "item%d" % n}
    total = 0
    for k in range(20):
        total += k * n
    return len(record["name"]) + total


def hot(n):
    return n + 1  # bench:hot


def never(n):
    return n - 1  # bench:never


def main():
    fd = os.open(sys.argv[1], os.O_RDWR)
    counter = mmap.mmap(fd, 8)
    per_second = float(sys.argv[2])
    print("READY pid=%d" % os.getpid(), flush=True)
    start, done, hot_done = time.monotonic(), 0, 0
    while True:
        unit(done)
        done += 1
        if done % 64 == 0:
            counter[0:8] = struct.pack("Q", done)
            due = int((time.monotonic() - start) * per_second)
            while hot_done < due:
                hot(hot_done)
                hot_done += 1


if __name__ == "__main__":
    main()
