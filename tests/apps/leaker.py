"""Leaks bytes objects in leak_some() (LEAK_LINE below): READY, then forever 5 a tick (~260 KB/s) into a list."""
import os
import sys
import time

KEPT = []


def leak_some():
    KEPT.append(bytes(512) + os.urandom(8))  # LEAK_LINE


def churn():
    return [str(i) for i in range(50)]  # garbage freed at once: must not rank as growth


if "--trace-self" in sys.argv:
    import tracemalloc
    tracemalloc.start(3)
for _ in range(20000):
    leak_some()
print("READY pid=%d" % os.getpid(), flush=True)
while True:
    for _ in range(5):
        leak_some()
        churn()
    time.sleep(0.01)
