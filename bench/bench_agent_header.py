"""The CLI's time to make what it writes to an agent's stdin (boot line + agent header, transport/bundle.py) for
one op, in a fresh process as a CLI run has it: built (the cache missing or unusable), read from the user's cache
(warm), and with --against DIR the other checkout's (e.g. main's, before the cache) in the same rounds.

Interleaved rounds in fresh interpreters, order rotated; medians with their IQR, in ms of the process's CPU
(time.process_time around the two calls, the imports excluded). Run under flock /tmp/wand-bench.lock.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchstats import quartiles  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMED = ("import sys, time\nsys.path.insert(0, sys.argv[1])\nfrom kubectl_wand.transport import bundle\n"
         "t = time.process_time()\nline = bundle.boot_line() + bundle.agent_header(sys.argv[2])\n"
         "print((time.process_time() - t) * 1e3, len(line))\n")


def one(checkout, op, cache):
    env = dict(os.environ, WAND_CACHE=cache)
    done = subprocess.run([sys.executable, "-S", "-c", TIMED, checkout, op], env=env, capture_output=True,
                          text=True, timeout=120, cwd="/")
    if done.returncode:
        raise SystemExit(done.stderr[-1500:])
    ms, size = done.stdout.split()
    return float(ms), int(size)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--ops", default="list,stack,exec,profile")
    ap.add_argument("--against", metavar="DIR")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        unusable = os.path.join(tmp, "unusable")  # a file: the cache can be neither read nor written
        open(unusable, "w").close()
        warm = os.path.join(tmp, "warm")
        cases = {}
        for op in args.ops.split(","):
            cases[op + " built"] = (REPO, op, unusable)
            cases[op + " warm cache"] = (REPO, op, warm)
            if args.against:
                cases[op + " [against]"] = (args.against, op, unusable)
        names = list(cases)
        got = {n: [] for n in names}
        sizes = {}
        for i in range(args.rounds + 1):  # the first round warms up (and fills the cache), untimed
            for n in names[i % len(names):] + names[:i % len(names)]:
                ms, sizes[n] = one(*cases[n])
                if i:
                    got[n].append(ms)
    print("CLI CPU to make boot line + header, ms (%d interleaved rounds; load average now %s)" % (
        args.rounds, " ".join("%.2f" % x for x in os.getloadavg())))
    for n in names:
        q1, q3 = quartiles(got[n])
        print("%-22s %7.2f  [%5.2f-%5.2f]  %6d bytes" % (n, statistics.median(got[n]), q1, q3, sizes[n]))


if __name__ == "__main__":
    main()
