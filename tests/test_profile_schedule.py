"""When the profile sampler takes its ticks and how often it reads Python's thread names (passengers/profiler.py),
on a clock of the test's own: the sampler's loop runs for real (its Stopper, its waits, its counts) with a tick
that costs what the test says, so lateness is exact and nothing depends on this machine's load."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from kubectl_wand.agent import observe

# Runs in a child (the Stopper takes over SIGTERM/SIGINT and the wake-up fd). argv: rate, duration, MAX_LAG or
# "-", then "index:seconds" ticks that take that long. Writes the profile and every tick's time on the clock.
LOOP = r"""
import sys
ns = {"__name__": "wand-test"}
exec(SOURCE, ns)
rate, duration, lag = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
costs = {int(i): float(s) for i, s in (a.split(":") for a in sys.argv[4:])}
if lag != "-":
    ns["MAX_LAG"] = float(lag)


class Clock:
    now = 1000.0

    def monotonic(self):
        return self.now

    def time(self):
        return self.now

    def sleep(self, seconds):
        assert seconds >= 0, seconds
        self.now += seconds


clock, taken = Clock(), []
ns["time"] = clock


class Files:
    fds = {}


class FakeSampler:
    def __init__(self, pid, gil, idle, runtime):
        self.names, self.files = {7: "MainThread"}, Files()

    def tick(self):
        taken.append(clock.now)
        clock.now += costs.get(len(taken) - 1, 0.0)
        return [(7, ([("work", "/app.py", 3)], None, 0))], [7]


ns["Sampler"] = FakeSampler
result = ns["profile"](7, rate, duration, False, False, sys.stdout)
sys.stdout.write("RESULT " + ns["encode"]({"profile": result["profile"], "taken": taken}) + "\n")
"""


def run_loop(rate, duration, costs, lag="-"):
    source = observe.sampler_source().rsplit('if __name__ == "__main__":', 1)[0]
    argv = [sys.executable, "-c", "SOURCE = %r\n" % source + LOOP, str(rate), str(duration), str(lag)]
    argv += ["%d:%r" % kv for kv in costs.items()]
    # stdin stays open (a pipe whose write end we hold until it ends): its EOF would mean "the agent went away"
    r, w = os.pipe()
    try:
        with subprocess.Popen(argv, stdin=r, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as child:
            out, err = child.communicate(timeout=60)
    finally:
        os.close(r)
        os.close(w)
    assert child.returncode == 0, err
    line = next(line for line in out.splitlines() if line.startswith("RESULT "))
    got = json.loads(line[len("RESULT "):])
    return got["profile"], got["taken"]


def close(a, b):
    return abs(a - b) < 1e-6


def test_a_late_tick_is_taken_not_skipped_and_never_early():
    """Before: a tick that took 0.3 s at 100 Hz made the next ~29 ticks 'missed' (skipped), so the profile had
    ~21 samples of 50 and its achieved rate fell; py-spy takes them late. Now every tick is taken, the late ones
    at once, and none before its time (start + k / rate)."""
    prof, taken = run_loop(100, 0.5, {5: 0.3}, lag=1e9)
    assert prof["samples"] == len(taken) == 50 and prof["missed"] == 0 and prof["errors"] == 0
    start = taken[0]
    assert all(t >= start + k / 100 - 1e-9 for k, t in enumerate(taken)), taken
    # the ticks after the late one come at once until the schedule is met again, then at the rate
    assert close(taken[6], start + 0.35) and close(taken[7], start + 0.35) and close(taken[36], start + 0.36)
    assert close(taken[-1], start + 0.49)
    assert prof["recorded"] == 50 and prof["stacks"][0]["count"] == 50


def test_over_the_whole_window_it_never_samples_faster_than_asked():
    """Ticks that cost nothing: exactly one per period, each at its own time."""
    prof, taken = run_loop(50, 0.2, {})
    assert len(taken) == prof["samples"] == 10 and prof["missed"] == 0
    assert all(close(t, taken[0] + k / 50) for k, t in enumerate(taken)), taken
    assert prof["duration"] == 0.2 and prof["achieved_rate"] == 50.0


def test_ticks_later_than_max_lag_are_skipped_and_counted():
    """A sampler stopped for 1.5 s does not fire 150 ticks in a burst: those more than MAX_LAG late are counted as
    missed; the rest are taken."""
    prof, taken = run_loop(100, 3.0, {5: 1.5})
    assert prof["missed"] > 0 and prof["samples"] + prof["missed"] == 300 == len(taken) + prof["missed"]
    after = taken[6]
    k = len([t for t in taken if t < after]) + prof["missed"]  # the index of the first tick after the stall
    assert after - (taken[0] + k / 100) <= 1.0 + 1e-9  # taken at most MAX_LAG late
    assert prof["missed"] >= 49  # the ticks due more than MAX_LAG (1 s) before the stall ended


def sampler_namespace(clock, reads):
    """The profile operation's namespace with no reader (the Sampler's names logic on this process's own threads),
    ``clock`` as its time and Python's names read by counting ``reads``."""
    ns = {"__name__": "wand-test"}
    exec(compile(observe.sampler_source().rsplit('if __name__ == "__main__":', 1)[0], "sampler.py", "exec"), ns)
    ns["unwinder"] = lambda pid, **kw: None
    ns["open_walker"] = lambda pid, runtime: (object(), None)

    def python_names(walker):
        reads.append(clock.now)
        return {}

    ns["python_names"], ns["time"] = python_names, clock
    return ns


class StepClock:
    now = 5000.0

    def monotonic(self):
        return self.now


def test_a_thread_without_a_python_name_does_not_cost_a_read_of_the_names_every_second():
    """Before: while any thread had no Python name (the main thread of an app that never imports threading), all
    of them were read again every second of the profile, ~80 reads each time. Now at most NAME_TRIES times for
    that thread; its kernel name is shown as before."""
    clock, reads = StepClock(), []
    ns = sampler_namespace(clock, reads)
    sampler = ns["Sampler"](os.getpid(), False, True, 1)
    for _ in range(1000):  # 10 s at 100 Hz
        assert sampler.keep(os.getpid())
        clock.now += 0.01
    assert len(reads) == 3, reads
    assert ns["NAME_TRIES"] == 3
    assert reads[1] - reads[0] > 1 and reads[2] - reads[1] > 1  # a second apart: a new thread gets its name
    assert sampler.names[os.getpid()] == "MainThread"


def test_a_thread_renamed_while_profiled_shows_its_new_kernel_name():
    """The kernel's name is decoded again only when it changes: a change is still seen at the next tick."""
    import threading
    clock, reads = StepClock(), []
    ns = sampler_namespace(clock, reads)
    sampler = ns["Sampler"](os.getpid(), False, True, 1)
    started, done = threading.Event(), threading.Event()
    ids = []

    def run():
        ids.append(threading.get_native_id())
        started.set()
        done.wait(60)

    worker = threading.Thread(target=run, name="before-rename")
    worker.start()
    try:
        assert started.wait(60)
        (tid,) = ids
        with open("/proc/self/task/%d/comm" % tid, "w") as f:  # as 3.14 names a thread's kernel task
            f.write("before-rename")
        sampler.keep(tid)
        assert sampler.names[tid] == "before-rename"
        with open("/proc/self/task/%d/comm" % tid, "w") as f:
            f.write("after-rename")
        sampler.keep(tid)
        assert sampler.names[tid] == "after-rename"
    finally:
        done.set()
        worker.join(60)
