"""An app that logs a line on its stdout every 50 ms (its main thread never blocks for long)."""
import os
import time

print("READY pid=%d" % os.getpid(), flush=True)
n = 0
while True:
    n += 1
    print("tick %d" % n, flush=True)
    time.sleep(0.05)
