"""A main thread blocked in C (time.sleep, an hour at a time) that a test wakes on demand: SIGUSR1 runs a
silent Python handler, so the main thread passes a safe point (a queued injection runs) and sleeps again."""
import os
import signal
import time


def nap():
    time.sleep(3600)


signal.signal(signal.SIGUSR1, lambda *_: None)
print("READY pid=%d" % os.getpid(), flush=True)
while True:
    nap()
