"""A main thread that keeps running and counts the KeyboardInterrupts it gets (on stdout, never stderr)."""
import os
import time

count = 0
print("READY pid=%d" % os.getpid(), flush=True)
while True:
    try:
        while True:
            time.sleep(0.01)
    except KeyboardInterrupt:
        count += 1
        print("INTERRUPTED %d" % count, flush=True)
