"""Leaks from a function whose source file the app chose to be a FIFO (nobody writes it): where `mem`'s window
looks up the source line of an allocation site. READY names the FIFO (removed by the test)."""
import os
import tempfile
import time

where = tempfile.mkdtemp(prefix="wand-decoy-")
FIFO = os.path.join(where, "decoy.py")
os.mkfifo(FIFO)
KEPT = []
namespace = {"KEPT": KEPT, "os": os}
exec(compile("def leak():\n    KEPT.append(bytes(512) + os.urandom(8))\n", FIFO, "exec"), namespace)
leak = namespace["leak"]
print("READY pid=%d fifo=%s" % (os.getpid(), FIFO), flush=True)
while True:
    for _ in range(20):
        leak()
    time.sleep(0.01)
