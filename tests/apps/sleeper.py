"""A main thread blocked in C (time.sleep) for SLEEP seconds (argv[1], default 3600), then busy."""
import os
import sys
import time


def wait_here(seconds):
    time.sleep(seconds)


# SIGUSR1 runs a silent Python handler: the main thread passes a safe point (a queued injection runs) and
# goes back to sleep. Tests decide that way when it happens. (Imported here: wait_here stays on line 8.)
import signal  # noqa: E402

signal.signal(signal.SIGUSR1, lambda *_: None)
print("READY pid=%d" % os.getpid(), flush=True)
wait_here(float(sys.argv[1]) if len(sys.argv) > 1 else 3600)
print("WOKE", flush=True)
while True:
    time.sleep(0.01)
