"""Runs INSIDE the target (its own interpreter, stdlib only): what ``mem``'s window measures in one slice of
tracemalloc, and how many slices it can afford.

Travels in the ``mem`` request between heapcensus.py and heapwindow.py (one namespace: OURS and MAX_TEXT come
from heapcensus; heapwindow's thread calls these).

tracemalloc costs every allocation of the process (measured: an allocation-bound app runs at 13-35 % of its
speed while it traces), so a window traces only in slices: ``tracing_cost`` measures tracemalloc's cost here
at the window's depth (a loop of allocations timed in the thread's own CPU time, off and on) and
``duty_cycle`` traces the share of the time (``duty``) that costs the app at most COST_BUDGET of its
throughput, in slices of at most SLICE seconds. tracemalloc.stop() discards every trace, so each slice is
measured on its own while it traces: a first snapshot MARK_AT into the slice, a second at its end, and
``add_growth`` adds the growth of each allocation site between the two (allocations still alive at the
slice's end, minus what was alive at the first: in-flight work cancels out, a leak does not). ``site_rows``
scales the sum to the whole window (and keeps what was seen).

Python 3.8 syntax; imports nothing of ours.
"""
import time

MAX_SITES = 200          # allocation sites sent, at most
# The duty cycle. tracemalloc's cost is s times an allocation's own time (tracing_cost); the app loses at most
# (s - 1) * duty of its throughput, so duty = COST_BUDGET / (s - 1) keeps it >= 1 - COST_BUDGET whatever its
# allocation rate (an app allocating less loses less). Measured here (bench/bench_mem.py): s = 4-9 at 1 frame,
# 14-15 at 3, 8-20 at 5; the app of that bench, which does more than allocate, lost 1-2 %.
COST_BUDGET = 0.15       # the throughput a window may take (the target is >= 80 %; the rest is the snapshots')
MIN_DUTY, MAX_DUTY = 0.005, 0.5
SLICE = 0.25             # seconds traced per slice, at most: the period is SLICE / duty (20-25 s at 3 frames)
MIN_SLICE = 0.1          # every window traces at least this long (one slice), however short the window
MARK_AT = 0.4            # the slice's first snapshot, this far into it: growth is measured from there to its end
CALIBRATE_ALLOCS = 2000  # allocations timed, off and on, to measure tracemalloc's cost


def skip_ours():
    """tracemalloc filters: tracemalloc's own allocations, and any made under our code."""
    import tracemalloc
    return [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, OURS + "*", all_frames=True)]


def by_site(snapshot):
    """{traceback: (size, count)} of a snapshot, without our own allocations."""
    return dict((stat.traceback, (stat.size, stat.count)) for stat in
                snapshot.filter_traces(skip_ours()).statistics("traceback"))


def tracing_cost(frames, trace_on, trace_off):
    """How many times slower an allocation is while tracemalloc traces ``frames`` deep here: a loop of small
    allocations (a dict, a str, a list), ``frames`` calls deep, timed in this thread's CPU time (the app's
    threads running meanwhile do not count), the best of three each way. An upper bound for an app's slowdown:
    its code does other things between allocations. ``trace_on()`` (False: the window has ended) and
    ``trace_off()`` turn tracemalloc on and off."""

    def loop(n):
        begun = time.thread_time()
        for i in range(n):
            kept = [{"i": i}, "s%d" % i]
        kept = None
        return time.thread_time() - begun

    def deep(depth, n):
        return deep(depth - 1, n) if depth > 1 else loop(n)
    off = min(deep(frames, CALIBRATE_ALLOCS) for _ in range(3))
    if not trace_on():
        return None
    try:
        on = min(deep(frames, CALIBRATE_ALLOCS) for _ in range(3))
    finally:
        trace_off()
    return max(1.0, on / max(off, 1e-6))


class SourceLines:
    """The source line of an allocation site, read so that no file the app named can stall or bloat the window's
    thread: what the app's linecache already holds (read, never changed), else the file read here once per
    report, and only a regular file of at most MAX_SOURCE bytes (read_source). linecache.getline opened any path
    it was given: a site whose file was a FIFO hung the window's thread in open() for good (the report never
    came, the thread stayed), and /dev/zero would have been read without end."""

    def __enter__(self):
        self.files = {}
        return self

    def line(self, filename, lineno):
        try:
            import linecache
            held = linecache.cache.get(filename)
            if isinstance(held, tuple) and len(held) == 4:
                lines = held[2]
            else:
                if filename not in self.files:
                    self.files[filename] = read_source(filename)
                lines = self.files[filename]
            return str(lines[lineno - 1]).strip()[:MAX_TEXT] if 0 < lineno <= len(lines) else ""
        except Exception:
            return ""

    def __exit__(self, *exc):
        return False


MAX_SOURCE = 8 << 20  # bytes: a bigger "source file" is not read for its lines


def read_source(filename):
    """The lines of source file ``filename`` (absolute, or relative to the cwd or a sys.path entry, as linecache
    looks for it), or [] unless it is a regular file (checked before opening, so a device is never opened, and
    again on the descriptor, opened without blocking) of at most MAX_SOURCE bytes."""
    import io
    import os
    import stat
    import sys
    import tokenize
    if not isinstance(filename, str) or not filename or filename.startswith("<"):
        return []
    paths = [filename]
    if not os.path.isabs(filename):
        paths += [os.path.join(d, filename) for d in sys.path if isinstance(d, str)]
    for path in paths:
        try:
            if not stat.S_ISREG(os.stat(path).st_mode):
                continue
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        except (OSError, ValueError):
            continue
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_SOURCE:
                return []
            chunks, left = [], MAX_SOURCE + 1
            while left > 0:
                chunk = os.read(fd, min(left, 1 << 20))
                if not chunk:
                    break
                chunks.append(chunk)
                left -= len(chunk)
            if left <= 0:
                return []
        except OSError:
            return []
        finally:
            os.close(fd)
        data = b"".join(chunks)
        try:
            encoding = tokenize.detect_encoding(io.BytesIO(data).readline)[0]
            return data.decode(encoding, "replace").splitlines()
        except (SyntaxError, LookupError):
            return []
    return []


def duty_cycle(cost, duration):
    """(duty, slice length, period) for a window of ``duration`` seconds where an allocation costs ``cost``
    times more while tracemalloc traces: the app loses at most (cost - 1) * duty of its throughput."""
    duty = min(MAX_DUTY, max(MIN_DUTY, COST_BUDGET / max(cost - 1.0, 1e-3)))
    length = min(SLICE, max(MIN_SLICE, duty * duration))
    return duty, length, length / duty


def add_growth(growth, first, last):
    """Add one slice's growth per site (``last`` minus ``first``, both {traceback: (size, count)}) into
    ``growth`` ({traceback: [size, count]})."""
    for traceback in set(last) | set(first):
        size, count = last.get(traceback, (0, 0))
        size0, count0 = first.get(traceback, (0, 0))
        into = growth.setdefault(traceback, [0, 0])
        into[0] += size - size0
        into[1] += count - count0


def site_rows(growth, scale, top, frames):
    """The allocation sites whose live memory grew most, biggest first, each with its stack and source;
    ``size`` and ``count`` scaled to the whole window, ``seen_size`` and ``seen_count`` as measured."""
    rows = [(size, count, traceback) for traceback, (size, count) in growth.items() if size > 0]
    rows.sort(key=lambda r: -r[0])
    out = []
    with SourceLines() as source:
        for size, count, traceback in rows[:min(top, MAX_SITES)]:
            stack = []
            for frame in list(traceback)[::-1][:frames]:  # most recent call first
                stack.append({"file": str(frame.filename)[:MAX_TEXT], "line": frame.lineno,
                              "source": source.line(frame.filename, frame.lineno)})
            out.append({"size": int(size * scale), "count": int(count * scale), "seen_size": size,
                        "seen_count": count, "stack": stack})
    return out
