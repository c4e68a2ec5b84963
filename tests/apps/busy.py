"""A CPU-bound main thread that never blocks."""
import os

counter = 0
print("READY pid=%d" % os.getpid(), flush=True)
while True:
    counter += 1
