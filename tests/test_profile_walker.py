"""profile's ticks read by the Walker alone (passengers/profiler.py: Sampler.tick), against real CPython 3.14
processes: the same stacks as the reader's way, the reader's way again after a torn walk, and a stack deeper
than the reader's limit kept and marked instead of failing every tick."""
from __future__ import annotations

import json
import subprocess

import pytest

from kubectl_wand.agent import observe
from kubectl_wand.agent.main import handle

pytestmark = pytest.mark.py314

# Run under the target's interpreter: one tick the Walker's way, then one whose first thread-state read is torn
# (the reader's way, extended by the Walker where the reader stops), each as {tid: frames}.
TWO_TICKS = r"""
import sys
ns = {"__name__": "wand-test"}
exec(SOURCE, ns)
pid, runtime = int(sys.argv[1]), int(sys.argv[2])
sampler = ns["Sampler"](pid, False, True, runtime)
fast, seen = sampler.tick()
real, torn = sampler.walker.frame_addresses, []

def tears_once():
    if not torn:
        torn.append(True)
        raise ns["Unreadable"]("a thread state freed under the walk")
    return real()

sampler.walker.frame_addresses = tears_once
slow, _ = sampler.tick()
ns["emit"](sys.stdout, {"fast": {str(t): got for t, got in fast}, "slow": {str(t): got for t, got in slow},
                        "torn": len(torn), "seen": list(seen)})
"""


def settled(pid):
    """The main thread asleep in its poll loop and the worker in its sleep: stacks that stay put."""
    import time
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with open("/proc/%d/syscall" % pid) as f:
            if f.read().split()[0] in ("7", "73", "219", "128"):
                return
        time.sleep(0.02)
    pytest.fail("the main thread of %d never reached its poll loop" % pid)


def test_the_walker_alone_reads_the_stacks_the_reader_and_walker_read(spawn, py314):
    app = spawn("cli_chain.py", argv=py314.argv(["-m", "cli_chain"]), env={"PYTHONPATH": py314.apps})
    settled(app.pid)
    (_, resolved), = observe.targets(app.pid)
    rt = resolved[1]
    harness = "SOURCE = %r\n" % observe.sampler_source().rsplit('if __name__ == "__main__":', 1)[0] + TWO_TICKS
    argv, env = rt.command(["-c", harness, str(rt.injector_pid), str(rt.proc.runtime_address())])
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert got["torn"] == 1  # the second tick did go the reader's way
    fast, slow = got["fast"], got["slow"]
    assert set(fast) == set(slow) == {str(t) for t in got["seen"]} and len(fast) == 2
    for tid, (frames, cut, unread) in fast.items():
        assert frames == slow[tid][0] and cut is None and slow[tid][1] is None and unread == 0, (frames, slow[tid])
    main = fast[str(app.pid)][0]
    # the whole chain, past the C calls where CPython 3.14's reader stops (tests/test_fidelity.py has py-spy's)
    assert [f[0] for f in main[-5:]][::-1] == ["_run_module_as_main", "_run_code", "<module>", "Command.__call__",
                                               "Command.main"], main


def test_a_stack_deeper_than_the_readers_limit_is_sampled_and_marked(spawn):
    """Before: each tick's reader raised "Too many stack frames" past 1024 frames, and a profile of such a
    process was all errors. Now its 1024 innermost frames are counted, and every such sample says it is cut."""
    app = spawn("deep.py", "1100")
    result = handle({"op": "profile", "pid": app.pid, "rate": 20, "duration": 0.5, "idle": True})
    (entry,) = result["processes"]
    prof = entry["profile"]
    assert prof["errors"] == 0 and prof["recorded"] > 0, prof.get("last_error")
    assert prof["cut"] == prof["recorded"] and "deeper than 1024 frames" in prof["cut_reason"]
    (stack,) = prof["stacks"]
    names = [prof["frames"][i]["function"] for i in stack["frames"]]
    assert len(names) == 1025 and names[-1] == "<outer frames not read>" and set(names[:-1]) == {"down"}
    assert app.alive()


# Under the target's interpreter: each thread walked by one Walker without and with its outermost entry frames
# known, the reads of each walk counted.
TWICE = r"""
import sys
ns = {"__name__": "wand-test"}
exec(SOURCE, ns)
pid, runtime = int(sys.argv[1]), int(sys.argv[2])
walker, why = ns["open_walker"](pid, runtime)
assert walker is not None, why
reads, real = [], walker.read

def counted(addr, size):
    reads.append(addr)
    return real(addr, size)

walker.read = counted
starts = walker.frame_addresses()
walks, known = [], []
for i in range(3):  # the first reads the code objects too; the second is without what the first learnt
    if i == 1:
        known.append(len(walker.outermost))
        walker.outermost.clear()
    del reads[:]
    walks.append({str(tid): walker.walk(start) for tid, start in starts.items()})
    walks[-1]["reads"] = len(reads)
ns["emit"](sys.stdout, {"walks": walks[1:], "known": known[0], "threads": len(starts)})
"""


def test_a_threads_outermost_entry_frame_is_read_once_and_the_walk_is_the_same(spawn, py314):
    """The entry frame that ends the main thread's chain (under -m: runpy's) and a threading.Thread's (its
    bootstrap's) is read once, then known by its address: one read a thread a tick fewer while profiling; the
    frames and where the first C call cuts them are the same either way."""
    app = spawn("cli_chain.py", argv=py314.argv(["-m", "cli_chain"]), env={"PYTHONPATH": py314.apps})
    settled(app.pid)
    (_, resolved), = observe.targets(app.pid)
    rt = resolved[1]
    harness = "SOURCE = %r\n" % observe.sampler_source().rsplit('if __name__ == "__main__":', 1)[0] + TWICE
    argv, env = rt.command(["-c", harness, str(rt.injector_pid), str(rt.proc.runtime_address())])
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    first, second = got["walks"]
    assert got["threads"] == got["known"] == 2
    assert first.pop("reads") - second.pop("reads") == 2
    assert first == second, (first, second)
    main = first[str(app.pid)][0]
    assert [f[0] for f in main[-3:]] == ["<module>", "_run_code", "_run_module_as_main"], main
