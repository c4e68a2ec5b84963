"""A main thread DEPTH (argv[1]) frames deep in recursion, asleep at the bottom."""
import os
import sys
import time

sys.setrecursionlimit(100000)


def down(n):
    if n == 0:
        print("READY pid=%d" % os.getpid(), flush=True)
        time.sleep(3600)
    return down(n - 1)


down(int(sys.argv[1]))
