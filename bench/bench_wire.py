"""What the limits on what a peer may send cost on the common path (agent/protocol.py). Prints medians of
interleaved rounds; exits 1 if a target is missed.

  checks of an exec result (the common line: ~2 us to parse)   depth + field types <= 5 us
  checks of an exec result with 1 MiB of stdout                 <= 5 us (they never look into a string)
Also printed: a stack of 10 threads x 30 frames and a 3.4 MB profile of 20 000 frames (one line per command).
"""
from __future__ import annotations

import os
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from kubectl_wand.agent import protocol  # noqa: E402

EXEC = protocol.encode({"status": "ok", "stdout": "hi\n", "stderr": "", "value": "4", "traceback": None,
                        "error": None, "truncated": False, "seconds": 0.001})
EXEC_BIG = protocol.encode({"status": "ok", "stdout": "x" * (1 << 20), "stderr": "", "value": None,
                            "truncated": False, "seconds": 0.1})
STACK = protocol.encode({"result": {"status": "ok", "processes": [{"pid": 1, "threads": [
    {"tid": i, "name": "t", "frames": [{"function": "f%d" % j, "file": "/app/x.py", "line": j} for j in range(30)]}
    for i in range(10)]}]}})
PROFILE = protocol.encode({"result": {"status": "ok", "processes": [{"pid": 1, "profile": {
    "frames": [{"function": "f%d" % j, "file": "/app/x%d.py" % (j % 50), "line": j} for j in range(20000)],
    "stacks": [{"thread": 1, "frames": list(range(j % 40)), "count": j} for j in range(20000)]}}]}})


def per_call(fn, seconds=0.2):
    n, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        fn()
        n += 1
    return (time.perf_counter() - started) / n


def main():
    cases = [("exec result", EXEC, 5e-6), ("exec, 1 MiB stdout", EXEC_BIG, 5e-6), ("stack 10x30", STACK, None),
             ("profile 20 000 frames", PROFILE, None)]
    missed = False
    for name, line, target in cases:
        parse, check = [], []
        for _ in range(7):  # interleaved rounds: parsing alone, then the checks on what it parsed
            value = protocol.loads(line)
            parse.append(per_call(lambda: protocol.loads(line)))
            check.append(per_call(lambda: (protocol.depth_over(value), protocol.check_fields(
                value, protocol.OP_RESULTS["exec"], "bench"))))
        ratio = statistics.median(c / p for c, p in zip(check, parse))
        cost = statistics.median(check)
        verdict = "" if target is None else ("ok" if cost <= target else "MISSED (target %g us)" % (target * 1e6))
        missed = missed or verdict.startswith("MISSED")
        print("%-22s %9d bytes  parse %9.1f us  checks %9.1f us  (%3.0f %%) %s" % (
            name, len(line), statistics.median(parse) * 1e6, statistics.median(check) * 1e6, ratio * 100, verdict))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
