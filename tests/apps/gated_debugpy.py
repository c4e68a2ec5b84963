"""An app whose import of debugpy's server waits at a gate: it prints IMPORTING when attach's payload starts
importing it (not at the hello, which only looks debugpy up) and goes on once the file argv[1] exists. A test
can then act (interrupt the CLI) while the payload runs, at a moment it knows. With argv[2] a module's name, the
import of that module fails instead (debugpy.server.api: after debugpy.server loaded pydevd; debugpy.common.sockets:
after debugpy's logger too): a debugpy broken half-way."""
import os
import sys
import time

GATE = sys.argv[1]
FAIL = sys.argv[2] if len(sys.argv) > 2 else None


class Gate:
    def find_spec(self, name, path=None, target=None):
        if name == FAIL:
            raise ImportError("%s is broken in this app" % name)
        if FAIL:
            return None
        if name == "debugpy.server":
            print("IMPORTING", flush=True)
            while not os.path.exists(GATE):
                time.sleep(0.01)  # the test opens the gate once it has acted
        return None


sys.meta_path.insert(0, Gate())
print("READY pid=%d" % os.getpid(), flush=True)
while True:
    time.sleep(0.05)
