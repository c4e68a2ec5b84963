"""Runs INSIDE the target (its own interpreter, stdlib only): ``mem``'s census of the live heap and its growth
window with tracemalloc.

Travels in the ``mem`` request; the bootstrap (passengers/bootstrap.py) runs it on the target's main thread and
calls ``run(request, conn, signals)``.

- census (no ``duration``): walks gc.get_objects() and what those containers hold that the gc does not track
  (bytes, str, int, float, tuples of them: reached through gc.get_referents, shared ones counted once), counting
  objects and their shallow size (sys.getsizeof) per type, on the main thread. The walk is bounded: it times
  its first CALIBRATE objects, and when the whole heap would take longer than ``max_pause`` it walks every k-th
  object only and scales the counts by k (the answer says so). Returns the result: the bootstrap sends it.
- window (``duration``): starts tracemalloc (``frames`` deep) unless the app already traces (then it takes a
  first snapshot and never stops or clears the app's tracing), takes a first census, and hands the connection
  to one daemon thread that owns the window. That thread ends it when the window's time is up, when the agent
  says ``{"op": "end"}``, when the connection ends or fails, or when the agent's once-a-second ping has not come
  for HEARTBEAT_TIMEOUT seconds; every ending stops tracemalloc if we started it (a forked child stops the copy
  it inherited). It then reports the allocation sites whose live memory grew most and the types whose counts
  grew most, and closes the connection.

Python 3.8 syntax; imports nothing of ours.
"""
import gc
import json
import os
import select
import sys
import threading
import time

CALIBRATE = 20000        # objects timed before choosing a stride
HEARTBEAT_TIMEOUT = 5.0  # the agent pings every second
POLL = 0.2               # the window thread's wake-up period: how late it sees the end of the window
SEND_TIMEOUT = 5.0
MAX_SITES = 200          # allocation sites sent, at most
MAX_TYPES = 200          # types sent, at most
MAX_TEXT = 300           # characters of a name or a source line
MAX_EXPAND = 8           # depth of untracked containers (tuples of tuples) followed
OURS = "<kubectl-wand"   # the filename prefix of our own code in tracemalloc's traces


def run(request, conn, signals=None):
    """The op's entry (see passengers/bootstrap.py): a census result, or None once the window's thread owns
    ``conn``, or an error result."""
    try:
        max_pause = float(request.get("max_pause") or 0.5)
        top = int(request.get("top") or 20)
        if not request.get("duration"):
            return dict(census(max_pause, top), status="ok", mode="census")
        window = Window(request, max_pause, top)
        # The thread is started before tracing starts, so none of its own allocations (the Thread, its locks)
        # are traced as the app's growth; it waits until begin() has run.
        thread = threading.Thread(target=window.serve, args=(conn,), name="kubectl-wand-mem", daemon=True)
        thread.start()
    except Exception as exc:
        return {"status": "error", "kind": "inject", "error": "mem failed in the target: %s: %s" % (
            type(exc).__name__, exc)}
    try:
        window.begin()
    except Exception as exc:
        window.finish("begin failed")
        window.abandon()  # the thread leaves without a word and without closing conn: the bootstrap answers
        return {"status": "error", "kind": "inject", "error": "mem failed in the target: %s: %s" % (
            type(exc).__name__, exc)}
    window.ready.set()
    return None


# -- the census ------------------------------------------------------------------------------------------

def type_name(cls):
    module = getattr(cls, "__module__", None)
    name = getattr(cls, "__qualname__", None) or getattr(cls, "__name__", "?")
    text = name if module in (None, "builtins") else "%s.%s" % (module, name)
    return str(text)[:MAX_TEXT]


class Walk:
    """Counts objects and shallow bytes per type, each count weighted by the sampling stride in effect."""

    def __init__(self):
        self.counts, self.sizes, self.seen, self.items, self.inner = {}, {}, set(), 0, 1

    def add(self, obj, weight):
        cls = type(obj)
        self.counts[cls] = self.counts.get(cls, 0) + weight
        try:
            self.sizes[cls] = self.sizes.get(cls, 0) + sys.getsizeof(obj) * weight
        except Exception:
            pass

    def visit(self, obj, weight, inner_cap):
        """``obj`` (a gc-tracked object) and the untracked objects it holds (bytes, str, numbers, tuples of
        them), following untracked containers MAX_EXPAND deep. A container holding more than ``inner_cap``
        objects is read with a stride of its own (and those counts weighted by it)."""
        self.add(obj, weight)
        self.items += 1
        is_tracked, referents, getrefcount, seen = gc.is_tracked, gc.get_referents, sys.getrefcount, self.seen
        todo = [(referents(obj), 0)]
        while todo:
            held, depth = todo.pop()
            step = 1
            if len(held) > inner_cap:
                step = len(held) // inner_cap + 1
                held = held[::step]
                self.inner = max(self.inner, step)
            w = weight * step
            self.items += len(held)
            for inner in held:
                if is_tracked(inner):
                    continue  # counted as itself (it is in gc.get_objects())
                # Held by this container, the list ``held``, the loop and getrefcount's argument: SHARED_ABOVE
                # (measured on 3.14). More means other holders (or an immortal object): count it once, by id.
                if getrefcount(inner) > SHARED_ABOVE:
                    key = id(inner)
                    if key in seen:
                        continue
                    seen.add(key)
                kind = type(inner)
                if kind is type:
                    continue
                self.add(inner, w)
                if depth < MAX_EXPAND and (kind is tuple or kind is dict or kind is frozenset):
                    more = referents(inner)
                    if more:
                        todo.append((more, depth + 1))
            held = None


SHARED_ABOVE = 5


def count_heap(max_pause, fixed=None):
    """({type: count}, {type: bytes}, facts): the heap, sampled when it is too big to walk within ``max_pause``
    seconds: every k-th gc-tracked object (the stride doubles whenever the walk falls behind its time budget),
    and within a container of more than ``inner_cap`` objects every j-th; each count is weighted by its
    stride (the answer says so). ``fixed`` = (stride, inner_cap) walks with those strides and no budget: a
    window's second census, made comparable with its first (and run in the window's thread, where the app's
    threads share the GIL with it rather than wait for it)."""
    started = time.perf_counter()
    objects = gc.get_objects()
    listed = time.perf_counter() - started
    total = len(objects)
    walk = Walk()
    budget = max(max_pause - listed, 0.001)
    # Calibrate: the first CALIBRATE objects (or their first CALIBRATE_ITEMS referents) at stride 1.
    index, stride, inner_cap = 0, 1, CALIBRATE
    if fixed is not None:
        stride, inner_cap = fixed
        while index < total:
            walk.visit(objects[index], stride, inner_cap)
            index += stride
        elapsed = time.perf_counter() - started
        return walk.counts, walk.sizes, {"objects": total, "items": walk.items, "stride": stride,
                                         "inner_cap": inner_cap, "inner_stride": walk.inner,
                                         "sampled": stride > 1 or walk.inner > 1, "pause_ms": round(elapsed * 1000, 1),
                                         "list_ms": round(listed * 1000, 1), "in_thread": True}
    while index < total and index < CALIBRATE and walk.items < CALIBRATE:
        walk.visit(objects[index], 1, inner_cap)
        index += 1
    spent = time.perf_counter() - started - listed
    per_item = spent / max(1, walk.items)
    items_per_object = walk.items / max(1, index)
    left = (total - index) * items_per_object * per_item
    room = budget - spent
    if left > room:
        stride = int(left / max(room, 1e-3)) + 1
    # One container may take at most a tenth of the budget.
    inner_cap = max(1000, int(budget / 10 / max(per_item, 1e-9)))
    first = index
    check = 256
    while index < total:
        walk.visit(objects[index], stride, inner_cap)
        index += stride
        check -= 1
        if not check:
            check = 256
            used = time.perf_counter() - started - listed
            done = (index - first) / max(1, total - first)
            if used > budget * 0.1 and used > (spent + (budget - spent) * done) * 1.2:
                stride *= 2  # behind: sample more thinly from here on
                inner_cap = max(100, inner_cap // 2)
    objects = None
    walk.seen = None
    elapsed = time.perf_counter() - started
    facts = {"objects": total, "items": walk.items, "stride": stride, "inner_cap": inner_cap,
             "inner_stride": walk.inner, "sampled": stride > 1 or walk.inner > 1,
             "pause_ms": round(elapsed * 1000, 1), "list_ms": round(listed * 1000, 1),
             "per_million_ms": round(per_item * 1e9, 1), "max_pause_ms": round(max_pause * 1000, 1)}
    return walk.counts, walk.sizes, facts


def heap_facts():
    """What the process and CPython's allocator say, without walking anything."""
    facts = {"allocated_blocks": sys.getallocatedblocks(), "gc_count": list(gc.get_count()),
             "gc_threshold": list(gc.get_threshold()), "gc_enabled": gc.isenabled(), "rss": None}
    try:
        facts["gc_stats"] = [dict(s) for s in gc.get_stats()]
    except Exception:
        pass
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f.read(65536).decode("ascii", "replace").splitlines():
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                    parts = value.split()
                    if parts and parts[0].isdigit():
                        facts[{"VmRSS": "rss", "VmHWM": "rss_peak", "RssAnon": "rss_anon",
                               "RssFile": "rss_file"}[key]] = int(parts[0]) * 1024
    except OSError:
        pass
    if facts["rss"] is None:
        try:
            import resource
            facts["rss_peak"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        except Exception:
            pass
    try:
        import tracemalloc
        facts["tracemalloc"] = tracemalloc.is_tracing()
    except Exception:
        pass
    return facts


def ranked(counts, sizes, top):
    """The ``top`` types by count and the ``top`` by size, as one list of rows (a type in both once)."""
    by_count = sorted(counts, key=lambda c: -counts[c])[:top]
    by_size = sorted(sizes, key=lambda c: -sizes[c])[:top]
    rows = []
    for cls in by_count + [c for c in by_size if c not in by_count]:
        rows.append({"type": type_name(cls), "count": counts.get(cls, 0), "size": sizes.get(cls, 0)})
    return rows[:MAX_TYPES]


def census(max_pause, top):
    counts, sizes, walk_facts = count_heap(max_pause)
    return {"pid": os.getpid(), "types": ranked(counts, sizes, top), "walk": walk_facts, "heap": heap_facts(),
            "total_count": sum(counts.values()), "total_size": sum(sizes.values())}


def skip_ours():
    """tracemalloc filters: tracemalloc's own allocations, and any made under our code."""
    import tracemalloc
    return [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, OURS + "*", all_frames=True)]


class SourceLines:
    """linecache.getline, with the files it read forgotten again at the end: the app's linecache (and its
    memory) stays as it was."""

    def __enter__(self):
        import linecache
        self.cache = linecache.cache
        self.known = set(self.cache)
        return self

    def line(self, filename, lineno):
        import linecache
        try:
            return linecache.getline(filename, lineno).strip()[:MAX_TEXT]
        except Exception:
            return ""

    def __exit__(self, *exc):
        for key in [k for k in list(self.cache) if k not in self.known]:
            self.cache.pop(key, None)
        return False


# -- the growth window ------------------------------------------------------------------------------------

ACTIVE = {}  # the window of this process, for the at-fork hook (registered once per window, a no-op after)


def stop_in_child():
    """After a fork: the child has our tracemalloc but not our thread: stop it there if it was ours."""
    window = ACTIVE.get("window")
    if window is not None and window.started_tracing:
        try:
            import tracemalloc
            tracemalloc.stop()
        except Exception:
            pass
        ACTIVE.clear()


class Window:
    def __init__(self, request, max_pause, top):
        self.duration = float(request["duration"])
        self.frames = max(1, min(int(request.get("frames") or 3), 100))
        self.max_pause, self.top = max_pause, top
        self.started_tracing = False
        self.before = None        # the app's own tracing: {traceback: (size, count)} at the start
        self.counts0 = None
        self.lock = threading.Lock()
        self.finished = None
        self.ready = threading.Event()   # begin() has run: the thread may take the connection
        self.abandoned = False           # begin() failed: the thread must not touch the connection

    def abandon(self):
        self.abandoned = True
        self.ready.set()

    def begin(self):
        import tracemalloc
        self.counts0, _sizes, self.walk0 = count_heap(self.max_pause)
        self.stride = self.walk0["stride"]
        if tracemalloc.is_tracing():
            self.frames = tracemalloc.get_traceback_limit()
            # Kept as one row per site, not the snapshot: its raw traces (a tuple each) would be held through
            # the window and counted as growth.
            self.before = dict((stat.traceback, (stat.size, stat.count)) for stat in
                               tracemalloc.take_snapshot().filter_traces(skip_ours()).statistics("traceback"))
        else:
            if not ACTIVE.get("hooked"):
                try:
                    os.register_at_fork(after_in_child=stop_in_child)
                except Exception:
                    pass
                ACTIVE["hooked"] = True
            tracemalloc.start(self.frames)
            self.started_tracing = True
            ACTIVE["window"] = self
        self.started = time.monotonic()
        self.started_wall = time.time()

    def finish(self, reason):
        """Stop tracemalloc if we started it; idempotent, any thread. Returns whether we stopped it."""
        with self.lock:
            if self.finished is not None:
                return self.finished
            self.finished = False
            if self.started_tracing:
                try:
                    import tracemalloc
                    tracemalloc.stop()
                    self.finished = not tracemalloc.is_tracing()
                except Exception:
                    pass
            ACTIVE.pop("window", None)
            return self.finished

    def serve(self, conn):
        """The thread's whole life; nothing escapes it (threading's excepthook would print into the app's
        stderr), and tracemalloc is stopped whatever happens."""
        try:
            if not self.ready.wait(600) or self.abandoned:
                return  # the main thread answers (or never began): the connection is not ours
        except BaseException:
            return
        try:
            self.relay(conn)
        except BaseException:
            pass
        finally:
            self.finish("thread exit")
            try:
                conn.close()
            except BaseException:
                pass

    def relay(self, conn):
        reason, pending = None, b""
        last_ping = time.monotonic()
        end = self.started + self.duration
        conn.settimeout(SEND_TIMEOUT)
        self.send(conn, {"started": {"pid": os.getpid(), "frames": self.frames, "app_tracing": not
                                     self.started_tracing, "census_ms": self.walk0["pause_ms"],
                                     "stride": self.stride}})
        try:
            while reason is None:
                now = time.monotonic()
                if now >= end:
                    reason = "duration"
                    break
                readable, _, _ = select.select([conn], [], [], min(POLL, end - now))
                now = time.monotonic()
                if readable:
                    data = conn.recv(65536)
                    if not data:
                        reason = "connection closed"
                        break
                    pending += data
                    while b"\n" in pending:
                        line, pending = pending.split(b"\n", 1)
                        last_ping = now
                        if json.loads(line).get("op") == "end":
                            reason = "ended"
                if reason is None and now - last_ping > HEARTBEAT_TIMEOUT:
                    reason = "heartbeat lost"
        except Exception as exc:
            reason = reason or "connection failed: %s" % type(exc).__name__
        if reason in ("connection closed", "heartbeat lost") or reason.startswith("connection failed"):
            self.finish(reason)  # no one to report to
            return
        report = self.report(reason)
        self.send(conn, report)

    def report(self, reason):
        import tracemalloc
        elapsed = time.monotonic() - self.started
        sites, traced, stopped = [], {}, False
        # The types first: the snapshot's raw traces and the source lines read below are objects of ours.
        counts1, _sizes, walk1 = count_heap(self.max_pause, (self.stride, self.walk0["inner_cap"]))
        grown = []
        for cls in set(counts1) | set(self.counts0):
            diff = counts1.get(cls, 0) - self.counts0.get(cls, 0)
            if diff > 0:
                grown.append((diff, cls))
        grown.sort(key=lambda pair: -pair[0])
        types = [{"type": type_name(cls), "growth": diff, "count": counts1.get(cls, 0)}
                 for diff, cls in grown[:min(self.top, MAX_TYPES)]]
        counts1 = grown = None
        try:
            if tracemalloc.is_tracing():
                after = tracemalloc.take_snapshot()
                traced = {"traced": list(tracemalloc.get_traced_memory()),
                          "overhead": tracemalloc.get_tracemalloc_memory()}
                stopped = self.finish(reason)  # as soon as the snapshot is taken
                sites = self.sites(after)
                after = None
        finally:
            stopped = self.finish(reason)
        self.before = None
        return {"status": "ok", "mode": "window", "pid": os.getpid(), "reason": reason,
                "seconds": round(elapsed, 3), "frames": self.frames, "app_tracing": not self.started_tracing,
                "stopped": bool(stopped) if self.started_tracing else False,
                "tracing_after": tracemalloc.is_tracing(), "sites": sites, "types": types,
                "walk": [self.walk0, walk1], "heap": heap_facts(), "memory": traced}

    def sites(self, after):
        """The allocation sites whose live memory grew most, biggest first, each with its stack and source."""
        rows = []
        for stat in after.filter_traces(skip_ours()).statistics("traceback"):
            size, count = self.before.get(stat.traceback, (0, 0)) if self.before is not None else (0, 0)
            if stat.size - size > 0:
                rows.append((stat.size - size, stat.count - count, stat.traceback))
        after = None
        rows.sort(key=lambda r: -r[0])
        out = []
        with SourceLines() as source:
            for size, count, traceback in rows[:min(self.top, MAX_SITES)]:
                stack = []
                for frame in list(traceback)[::-1][:self.frames]:  # most recent call first
                    stack.append({"file": str(frame.filename)[:MAX_TEXT], "line": frame.lineno,
                                  "source": source.line(frame.filename, frame.lineno)})
                out.append({"size": size, "count": count, "stack": stack})
        return out

    @staticmethod
    def send(conn, message):
        conn.sendall(json.dumps(message).encode() + b"\n")
