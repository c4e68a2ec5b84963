"""A thread whose innermost frames change all the time: "churner" calls a short function in a loop, so its depth
and line differ between any two reads of its stack; the main thread never blocks either (busy.py), so the two
take the GIL from each other every switch interval.
argv: none."""
import os
import threading


def step(n):
    return n + 1


def churn():
    n = 0
    while True:
        n = step(n)
        n = step(n) - 1


threading.Thread(target=churn, name="churner", daemon=True).start()
print("READY pid=%d" % os.getpid(), flush=True)
counter = 0
while True:
    counter += 1
