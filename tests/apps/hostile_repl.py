"""A target whose own code rewrites the answers of ``exec-py -it``'s server in its process (it patches
``json.dumps``, which the server calls at each send, as any app may): argv[1] picks the shape: ``notjson`` (a
line that is no JSON, with terminal controls in it), ``types`` (a result whose fields have the wrong types),
``list`` (a JSON list instead of an object). Prints READY once patched.
"""
import json
import os
import sys
import time

SHAPE = sys.argv[1]
_dumps = json.dumps


def dumps(obj, *args, **kwargs):
    if isinstance(obj, dict) and "result" in obj:
        if SHAPE == "notjson":
            return "\x1b]52;c;cHduZWQ=\x07 not JSON"
        if SHAPE == "types":
            return _dumps({"result": {"status": 7, "stdout": ["x"], "value": {"a": 1}, "stderr": 3}})
        if SHAPE == "list":
            return _dumps(["result", 1])
    return _dumps(obj, *args, **kwargs)


json.dumps = dumps
print("READY pid=%d" % os.getpid(), flush=True)
while True:
    time.sleep(0.05)
