"""A main thread blocked in C (time.sleep) for SLEEP seconds (argv[1], default 3600), then busy."""
import os
import sys
import time


def wait_here(seconds):
    time.sleep(seconds)


print("READY pid=%d" % os.getpid(), flush=True)
wait_here(float(sys.argv[1]) if len(sys.argv) > 1 else 3600)
print("WOKE", flush=True)
while True:
    time.sleep(0.01)
