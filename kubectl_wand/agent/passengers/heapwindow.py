"""Runs INSIDE the target (its own interpreter, stdlib only): ``mem``'s growth window, duty-cycled tracemalloc.

Travels in the ``mem`` request after heapcensus.py and heapslices.py (one namespace: ``count_heap``,
``census``, ``heap_facts``, ``type_name``, OURS come from the first, the slices' measures from the second); the bootstrap (passengers/bootstrap.py) runs it on the target's main
thread and calls ``run(request, conn, signals)``: a census (no ``duration``) is answered at once; a window takes
a first census and hands the connection to one daemon thread that owns the window.

A window traces only in slices, as many as tracemalloc's cost measured here allows (heapslices.py says how);
each slice is measured on its own and the sites' growth summed over the slices is scaled to the whole window
and labelled as such ("traced 2 % of the window"); the types' growth comes from the censuses at the window's
start and end, which see everything.

An app that already traces keeps its tracing as it was: the window compares a first snapshot with the last,
over the whole window, at the app's own cost.

Sync (``armed``, several pods read at once): the thread says ``started`` once the first census is taken and
waits for the agent's ``{"op": "go"}``; the window (and its first slice) opens at the go, so every replica's
window is the same window; it answers ``{"opened": {"time"}}``.

The thread ends the window when its time is up, when the agent says ``{"op": "end"}``, when the connection
ends or fails, or when the agent's once-a-second ping has not come for HEARTBEAT_TIMEOUT seconds; every ending
stops tracemalloc if we started it (a forked child stops the copy it inherited). It then reports the
allocation sites whose live memory grew most and the types whose counts grew most, and closes the connection.

Python 3.8 syntax; imports nothing of ours.
"""
import json
import os
import select
import threading
import time

HEARTBEAT_TIMEOUT = 5.0  # the agent pings every second
POLL = 0.2               # the window thread's longest sleep: how late it sees a message or the window's end
SEND_TIMEOUT = 5.0
GO_WAIT = 120.0          # armed, how long the thread waits for the go (the agent sends go or end far sooner)


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



ACTIVE = {}  # the window of this process, for the at-fork hook (registered once per window, a no-op after)


def stop_in_child():
    """After a fork: the child has our tracemalloc but not our thread: stop it there if it was ours."""
    window = ACTIVE.get("window")
    if window is not None and window.tracing_now:
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
        self.armed = bool(request.get("armed"))
        self.max_pause, self.top = max_pause, top
        self.app_tracing = False
        self.tracing_now = False  # tracemalloc is on and it is ours (a slice is running)
        self.before = None        # the app's own tracing: {traceback: (size, count)} at the start
        self.counts0 = None
        self.lock = threading.Lock()
        self.finished = None
        self.ready = threading.Event()   # begin() has run: the thread may take the connection
        self.abandoned = False           # begin() failed: the thread must not touch the connection
        self.growth = {}                 # {traceback: [size, count]}: summed over the slices
        self.slices, self.traced, self.measured = 0, 0.0, 0.0
        self.cost, self.duty = None, 1.0
        self.slice = None                # the running slice: {"start", "mark", "end", "first"}
        self.go = False                  # armed: the agent's go came

    def abandon(self):
        self.abandoned = True
        self.ready.set()

    def begin(self):
        """On the main thread: the first census, and the app's own tracing's first snapshot."""
        import tracemalloc
        # Filtering compiles fnmatch patterns and fills abc's isinstance cache: done once now, untraced (in a
        # slice, both were counted as growth: fnmatch.py:181, <frozen abc>:123).
        tracemalloc.Snapshot([(0, 1, (("x", 1),), 1)], 1).filter_traces(skip_ours())
        self.counts0, _sizes, self.walk0 = count_heap(self.max_pause)
        self.stride = self.walk0["stride"]
        if tracemalloc.is_tracing():
            self.app_tracing = True
            self.frames = tracemalloc.get_traceback_limit()
            # Kept as one row per site, not the snapshot: its raw traces (a tuple each) would be held through
            # the window and counted as growth.
            self.before = by_site(tracemalloc.take_snapshot())
        elif not ACTIVE.get("hooked"):
            try:
                os.register_at_fork(after_in_child=stop_in_child)
            except Exception:
                pass
            ACTIVE["hooked"] = True

    # -- tracemalloc on and off (any thread; under the lock, so finish() never races a slice) ----------------

    def trace_on(self):
        import tracemalloc
        with self.lock:
            if self.finished is not None or tracemalloc.is_tracing():
                return False
            ACTIVE["window"] = self
            tracemalloc.start(self.frames)
            self.tracing_now = True
            return True

    def trace_off(self):
        import tracemalloc
        with self.lock:
            if self.tracing_now:
                tracemalloc.stop()
                self.tracing_now = False
            return not tracemalloc.is_tracing() if not self.app_tracing else False

    def finish(self, reason):
        """Stop tracemalloc if we traced; idempotent, any thread. Returns whether tracemalloc is off."""
        with self.lock:
            if self.finished is not None:
                return self.finished
            self.finished = False
            try:
                import tracemalloc
                if self.tracing_now:
                    tracemalloc.stop()
                    self.tracing_now = False
                self.finished = not self.app_tracing and not tracemalloc.is_tracing()
            except Exception:
                pass
            ACTIVE.pop("window", None)
            return self.finished

    # -- the slices -----------------------------------------------------------------------------------------

    def plan(self):
        """The duty cycle from tracemalloc's measured cost here: (slice length, period)."""
        self.cost = tracing_cost(self.frames, self.trace_on, self.trace_off) or 1e9
        self.duty, length, period = duty_cycle(self.cost, self.duration)
        return length, period

    def slice_start(self, now, length):
        if self.trace_on():
            self.slice = {"start": now, "mark": now + length * MARK_AT, "end": now + length, "first": None}

    def snapshot(self):
        """The running slice's snapshot by site; None (the slice dropped) when tracemalloc is no longer ours to
        read: the app stopped it meanwhile."""
        import tracemalloc
        try:
            return by_site(tracemalloc.take_snapshot())
        except RuntimeError:
            with self.lock:
                self.tracing_now = False
            self.slice = None
            return None

    def slice_mark(self, now):
        first = self.snapshot()
        if first is not None:
            self.slice["first"] = first
            self.slice["marked"] = now

    def slice_end(self, now):
        """The slice's second snapshot, tracemalloc off, the growth since its first added to the window's."""
        piece = self.slice
        last = self.snapshot() if self.tracing_now else None
        self.slice = None
        if last is None:
            return
        self.trace_off()
        first = piece["first"] or {}  # ended before its first snapshot: measured from its start (when nothing lived)
        since = piece.get("marked", piece["start"])
        add_growth(self.growth, first, last)
        self.slices += 1
        self.traced += now - piece["start"]
        self.measured += now - since

    # -- the thread -----------------------------------------------------------------------------------------

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
        self.pending, self.last_ping = b"", time.monotonic()
        conn.settimeout(SEND_TIMEOUT)
        length = period = None
        if not self.app_tracing:
            length, period = self.plan()
        self.send(conn, {"started": {"pid": os.getpid(), "frames": self.frames, "app_tracing": self.app_tracing,
                                     "census_ms": self.walk0["pause_ms"], "stride": self.stride,
                                     "cost": self.cost, "duty": round(self.duty, 4), "slice": length,
                                     "period": period, "armed": self.armed}})
        reason = None
        if self.armed:
            reason = self.wait_for_go(conn)
        self.opened = reason is None
        self.started = time.monotonic()
        self.started_wall = time.time()
        if self.armed and reason is None:
            self.send(conn, {"opened": {"time": round(self.started_wall, 3)}})
        end = self.started + self.duration
        next_slice = self.started
        try:
            while reason is None:
                now = time.monotonic()
                if self.slice is None and length is not None and now >= next_slice and now < end:
                    self.slice_start(now, min(length, max(end - now, 0.0)))
                    next_slice += period
                elif self.slice is not None and self.slice["first"] is None and now >= self.slice["mark"]:
                    self.slice_mark(now)
                elif self.slice is not None and now >= self.slice["end"]:
                    self.slice_end(now)
                if now >= end:
                    reason = "duration"
                    break
                due = [end, self.slice["end"] if self.slice else next_slice]
                if self.slice is not None and self.slice["first"] is None:
                    due.append(self.slice["mark"])
                reason = self.listen(conn, max(0.0, min(POLL, min(due) - now)))
        except (OSError, ValueError) as exc:  # the connection failed, or a line that was not JSON
            reason = reason or "connection failed: %s" % type(exc).__name__
        except Exception as exc:
            self.finish("failed")
            self.send(conn, {"status": "error", "kind": "inject", "error": "the memory window failed in the "
                             "target: %s: %s (tracemalloc is stopped)" % (type(exc).__name__, str(exc)[:MAX_TEXT])})
            return
        self.ended_wall = time.time()
        if reason in ("connection closed", "heartbeat lost") or reason.startswith("connection failed"):
            self.finish(reason)  # no one to report to
            return
        now = time.monotonic()
        if self.slice is not None:
            self.slice_end(now)  # cut at the window's end
        if length is not None and self.opened and self.traced < MIN_SLICE * 0.5:
            # Ended (Ctrl-C) before a slice was traced: one short slice now, so the report rests on something.
            self.slice_start(now, MIN_SLICE)
            while self.slice is not None:
                now = time.monotonic()
                if self.slice["first"] is None and now >= self.slice["mark"]:
                    self.slice_mark(now)
                elif now >= self.slice["end"]:
                    self.slice_end(now)
                else:
                    time.sleep(min(self.slice["mark"] if self.slice["first"] is None else self.slice["end"],
                                   now + POLL) - now)
        self.send(conn, self.report(reason))

    def listen(self, conn, wait):
        """Read the agent's messages for up to ``wait`` seconds; the window's ending reason, or None."""
        readable, _, _ = select.select([conn], [], [], wait)
        now = time.monotonic()
        if readable:
            data = conn.recv(65536)
            if not data:
                return "connection closed"
            self.pending += data
            while b"\n" in self.pending:
                line, self.pending = self.pending.split(b"\n", 1)
                self.last_ping = now
                op = json.loads(line).get("op")
                if op == "end":
                    return "ended"
                if op == "go":
                    self.go = True
        if now - self.last_ping > HEARTBEAT_TIMEOUT:
            return "heartbeat lost"
        return None

    def wait_for_go(self, conn):
        """Armed: wait for the agent's go (every pod's window opens at once); the ending reason if none came."""
        self.go = False
        deadline = time.monotonic() + GO_WAIT
        while not self.go:
            if time.monotonic() > deadline:
                return "no go"
            reason = self.listen(conn, POLL)
            if reason is not None:
                return reason
        return None

    def report(self, reason):
        import tracemalloc
        elapsed = time.monotonic() - self.started
        traced = {}
        # The types first: the snapshot's raw traces and the source lines read below are objects of ours.
        counts1, _sizes, walk1 = count_heap(self.max_pause, (self.stride, self.walk0["inner_cap"]))
        grown = []
        for cls in set(counts1) | set(self.counts0):
            diff = counts1.get(cls, 0) - self.counts0.get(cls, 0)
            # tracemalloc's objects in an app that does not trace are ours (the slices' tracebacks, held here)
            if diff > 0 and (self.app_tracing or getattr(cls, "__module__", None) != "tracemalloc"):
                grown.append((diff, cls))
        grown.sort(key=lambda pair: -pair[0])
        types = [{"type": type_name(cls), "growth": diff, "count": counts1.get(cls, 0)}
                 for diff, cls in grown[:min(self.top, MAX_TYPES)]]
        counts1 = grown = None
        scale = 1.0
        if self.app_tracing:
            if tracemalloc.is_tracing():
                after = by_site(tracemalloc.take_snapshot())
                traced = {"traced": list(tracemalloc.get_traced_memory()),
                          "overhead": tracemalloc.get_tracemalloc_memory()}
                for traceback, (size, count) in after.items():
                    size0, count0 = self.before.get(traceback, (0, 0))
                    self.growth[traceback] = [size - size0, count - count0]
                after = None
            self.traced = self.measured = elapsed
        elif self.measured > 0:
            scale = elapsed / self.measured
        stopped = self.finish(reason)
        self.before = None
        sampling = {"slices": self.slices, "traced": round(self.traced, 3), "measured": round(self.measured, 3),
                    "share": round(self.traced / elapsed, 4) if elapsed > 0 else None, "scale": round(scale, 3),
                    "cost": None if self.cost is None else round(self.cost, 2), "duty": round(self.duty, 4),
                    "budget": COST_BUDGET, "synced": self.armed and self.opened}
        return {"status": "ok", "mode": "window", "pid": os.getpid(), "reason": reason,
                "seconds": round(elapsed, 3), "frames": self.frames, "app_tracing": self.app_tracing,
                "stopped": bool(stopped), "tracing_after": tracemalloc.is_tracing(), "sites": self.sites(scale),
                "types": types, "walk": [self.walk0, walk1], "heap": heap_facts(), "memory": traced,
                "sampling": sampling,
                "window": {"start": round(self.started_wall, 3), "end": round(self.ended_wall, 3)}}

    def sites(self, scale):
        rows = site_rows(self.growth, scale, self.top, self.frames)
        self.growth = {}
        return rows

    @staticmethod
    def send(conn, message):
        import socket
        conn.sendall(json.dumps(message).encode() + b"\n", getattr(socket, "MSG_NOSIGNAL", 0))  # as bootstrap.send
