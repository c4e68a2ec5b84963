"""A stand-in for `kubectl exec -i POD -- python3 ...` whose "agent" answers with a hostile shape
($WAND_TEST_SHAPE): the agent in a pod runs in the app's container, so what comes back is bounded too."""
import os
import sys
import threading
import time

SHAPE = os.environ["WAND_TEST_SHAPE"]
HELLO = b'{"hello": {"python": "3.14.0", "pid": 7, "protocol": 1}}\n'


def swallow():
    for _ in iter(lambda: sys.stdin.buffer.read1(65536), b""):  # the agent's sources and the request
        pass


threading.Thread(target=swallow, daemon=True).start()
out = sys.stdout.buffer
try:
    out.write(HELLO)
    out.flush()
    if SHAPE == "huge-result":
        out.write(b'{"result": {"status": "ok", "stdout": "')
        for _ in range(400):
            out.write(b"x" * (1 << 20))
    elif SHAPE == "nested-result":
        out.write(b'{"result": ' + b"[" * 100000 + b"]" * 100000 + b"}\n")
    elif SHAPE == "list-result":
        out.write(b'{"result": [1, 2]}\n')
    elif SHAPE == "wrong-types":
        out.write(b'{"result": {"status": "ok", "stdout": 7}}\n')
    elif SHAPE == "bad-event":
        out.write(b'{"event": 7}\n')
    elif SHAPE == "drip-result":
        out.flush()
        for byte in b'{"result": {"status": "ok", "stdout": "' + b"x" * 100000:
            out.write(bytes([byte]))
            out.flush()
            time.sleep(0.1)  # the drip itself
    out.flush()
    time.sleep(60)  # hold the pipe open, as a stalled kubectl exec would
except (BrokenPipeError, OSError):
    pass
