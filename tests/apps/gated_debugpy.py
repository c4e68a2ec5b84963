"""An app whose import of debugpy's server waits at a gate: it prints IMPORTING when attach's payload starts
importing it (not at the hello, which only looks debugpy up) and goes on once the file argv[1] exists. A test
can then act (interrupt the CLI) while the payload runs, at a moment it knows."""
import os
import sys
import time

GATE = sys.argv[1]


class Gate:
    def find_spec(self, name, path=None, target=None):
        if name == "debugpy.server":
            print("IMPORTING", flush=True)
            while not os.path.exists(GATE):
                time.sleep(0.01)  # the test opens the gate once it has acted
        return None


sys.meta_path.insert(0, Gate())
print("READY pid=%d" % os.getpid(), flush=True)
while True:
    time.sleep(0.05)
