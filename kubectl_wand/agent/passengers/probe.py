"""Runs INSIDE the target (its own interpreter, 3.12+, stdlib only): a logpoint on FILE:LINE with sys.monitoring.

It travels as source in the ``trace`` request, after ``codefinder``'s; the bootstrap (passengers/bootstrap.py)
runs both in one fresh namespace on the target's main thread and calls ``run(request, conn, signals)``, which
validates everything before enabling anything (an unknown or ambiguous location claims no tool id), then claims
a free tool id, enables LINE events on exactly the code objects that contain the line, and hands the connection
to one daemon thread. The LINE callback runs in the app's threads: it never blocks and never raises into the
app; it queues bounded hit records that the thread writes as JSON lines to the agent.

Removal (events off on each code object, callback unregistered, tool id freed) happens in that thread when
the agent says ``{"op": "remove"}``, when ``--count`` hits were delivered, when the connection ends or fails,
and when the agent's once-a-second ping has not arrived for HEARTBEAT_TIMEOUT seconds. The last message
lists the tool ids freed. Python 3.8 syntax; only what the target's standard library has.
"""
import itertools
import json
import os
import reprlib
import select
import socket
import sys
import threading
import time
from collections import deque

# Known, Location, Refused, code_lines, module_file, nested, roots_everywhere and roots_in_namespace are
# codefinder's, Hits (what a hit records) is probehit's: their sources run just before this one in the same
# namespace (a passenger imports nothing of ours).

TOOL_NAME = "kubectl-wand trace"
# Never 0 (DEBUGGER_ID: debugpy's). 3 and 4 have no conventional owner; 5 (optimizers) next; 2 is what
# cProfile takes in 3.12+ and 1 is coverage.py's, so an app starting those while we trace still can.
TOOL_ORDER = (3, 4, 5, 2, 1)
HEARTBEAT_TIMEOUT = 5.0  # the agent pings every second; five missed pings mean the controller is gone or frozen
# The thread's wake-up period: hits reach the agent within it. Measured: the thread uses 1.1 ms of CPU a
# second idle, 2.3 ms at 20 hits/s, 3.2 ms at 200 hits/s (bench/bench_trace_local.py's app).
POLL = 0.1
QUEUE_MAX = 1000         # hits waiting for the thread; beyond that they are dropped and counted
RESCAN_EVERY = 1.0       # look for new code objects of the file (a reload, a later import) this often
NO_SIGPIPE = getattr(socket, "MSG_NOSIGNAL", 0)  # EPIPE, never SIGPIPE (an app may restore its default)
SEND_TIMEOUT = 2.0


def run(request, conn, signals=None):
    """The op's entry (see passengers/bootstrap.py): install the probe and hand ``conn`` to its thread (returns
    None), or return an error result."""
    try:
        probe = Probe(request)
        probe.install()
    except Refused as exc:
        return dict(exc.extra, status="error", kind=exc.kind, error=str(exc))
    try:
        probe.start_thread(conn)
    except Exception as exc:  # no thread, no removal: take everything back now
        probe.remove("no thread")
        return {"status": "error", "kind": "trace", "error": "cannot start the probe's thread: %s" % exc}
    return None


class Probe(Hits):
    def __init__(self, request):
        self.location = Location(request["file"], request["line"])
        self.exprs = [str(e) for e in request.get("exprs") or []]
        self.count = int(request.get("count") or 0)
        self.snapshot = bool(request.get("snapshot"))
        if self.snapshot:
            self.count = 1
        self.rate = float(request.get("max_per_second") or 20.0)
        limit = int(request.get("max_repr") or 200)
        self.repr = reprlib.Repr()
        self.repr.maxstring = self.repr.maxother = self.repr.maxlong = limit
        self.repr.maxlevel = 3
        self.max_repr = limit
        self.compiled = []
        for text in self.exprs:
            self.compiled.append(self.compile(text, "expression"))
        condition = request.get("condition")
        self.condition = self.compile(condition, "condition") if condition else None
        self.pid = os.getpid()
        self.tool = None
        self.codes = []
        # Armed (a sync trace over several pods): installed with its line events off until the agent's go, so
        # every pod's probe watches the same window.
        self.held = [] if request.get("armed") else None
        self.queue = deque()
        self.serial = itertools.count()
        self.dropped = 0
        self.internal_errors = 0
        self.reported = set()
        self.finished = False  # --count reached: the thread removes the probe once the queue is drained
        self.removed = None
        # Who removes: dict.setdefault is atomic under the GIL and, unlike a lock, cannot be inherited held by
        # a forked child (which removes its copy of the probe from inside the callback).
        self.claims = {}

    @staticmethod
    def compile(text, what):
        try:
            return compile(text, "<trace %s>" % what, "eval")
        except SyntaxError as exc:
            raise Refused("syntax", "the %s %r is not a valid Python expression: %s" % (what, text, exc.msg))

    # install / remove

    def install(self):
        self.filename, codes, every = self.location.resolve()
        self.known = Known(every.values())
        monitoring = sys.monitoring
        taken = {}
        for tool in TOOL_ORDER:
            try:
                monitoring.use_tool_id(tool, TOOL_NAME)
            except ValueError:
                taken[tool] = monitoring.get_tool(tool)
                continue
            self.tool = tool
            break
        if self.tool is None:
            users = ", ".join("%d=%s" % (t, taken[t]) for t in sorted(taken))
            raise Refused("busy", "every sys.monitoring tool id kubectl-wand may use is taken (%s); stop one of "
                          "those tools and retry" % users, tool_ids=sorted(taken))
        # Queued first, so it is the first line the agent reads even if a hit comes before enable() returns.
        self.queue.append({"installed": {
            "pid": self.pid, "tool_id": self.tool, "file": self.filename, "line": self.location.line,
            "functions": sorted(set(c.co_qualname for c in codes))}})
        try:
            monitoring.register_callback(self.tool, monitoring.events.LINE, self.make_callback())
            for code in codes:
                self.enable(code)
        except Exception as exc:
            self.remove("install failed")
            raise Refused("trace", "enabling the probe failed: %s: %s" % (type(exc).__name__, exc))

    def enable(self, code):
        if self.held is not None:
            self.held.append(code)
            return
        sys.monitoring.set_local_events(self.tool, code, sys.monitoring.events.LINE)
        self.codes.append(code)

    def go(self):
        """The agent's go: the line events held since install go on; ``opened`` says when."""
        held, self.held = self.held or [], None
        for code in held:
            self.enable(code)
        self.queue.append({"opened": {"time": time.time()}})

    def remove(self, reason):
        """Events off, callback unregistered, tool id freed. Idempotent; safe from any thread."""
        mine = object()
        if self.claims.setdefault("remove", mine) is not mine:
            return self.removed
        self.removed = {"reason": reason, "tool_ids": [self.tool] if self.tool is not None else []}
        monitoring, problems = sys.monitoring, []
        if self.tool is not None:
            for code in self.codes:
                try:
                    monitoring.set_local_events(self.tool, code, 0)
                except Exception as exc:
                    problems.append("%s: %s" % (code.co_qualname, exc))
            for step in (lambda: monitoring.register_callback(self.tool, monitoring.events.LINE, None),
                         lambda: monitoring.free_tool_id(self.tool)):
                try:
                    step()
                except Exception as exc:
                    problems.append(str(exc))
            try:
                self.removed["freed"] = monitoring.get_tool(self.tool) is None
            except Exception as exc:
                problems.append(str(exc))
                self.removed["freed"] = False
        self.codes = []
        if problems:
            self.removed["problems"] = problems
        return self.removed

    # the callback (runs in the app's threads)

    def make_callback(self):
        # Everything the hot path needs is a closure variable. Without --condition a hit the rate limit drops
        # costs a line check and a token check only (~0.5 us, measured): no frame, no pid, no reentrancy guard.
        target, disable, getframe = self.location.line, sys.monitoring.DISABLE, sys._getframe
        monotonic, ident, pid = time.monotonic, threading.get_ident, self.pid
        condition, queue, probe = self.condition, self.queue, self
        rate = self.rate
        burst = rate if rate >= 1 else 1.0  # up to one second's worth at once
        bucket = [burst, monotonic()]  # tokens, time of the last refill
        busy = set()

        def admit():
            """Take a token; count the hit as dropped if there is none (or the queue is full)."""
            now = monotonic()
            tokens = min(bucket[0] + (now - bucket[1]) * rate, burst)
            bucket[1] = now
            if tokens < 1.0 or len(queue) >= QUEUE_MAX:
                bucket[0] = tokens
                probe.dropped += 1  # under the GIL (remote_exec refuses free-threaded targets): no lost update
                return False
            bucket[0] = tokens - 1.0
            return True

        def on_line(code, line):
            if line != target:
                return disable  # another line of a probed code object: off for good at that location
            if probe.removed is not None or probe.finished:
                return disable
            try:
                if condition is None and not admit():
                    return None
                me = ident()
                if me in busy:
                    return None  # our own expressions reached the line again
                busy.add(me)
                try:
                    frame = getframe(1)
                    if condition is not None:
                        try:
                            passed = bool(eval(condition, frame.f_globals, frame.f_locals))
                        except Exception as exc:
                            probe.report(code, line, "condition", exc)
                            passed = False
                        if not passed or not admit():
                            return None
                    if os.getpid() != pid:  # a forked child inherited the probe without its thread
                        probe.remove("forked")
                        return disable
                    number = next(probe.serial)  # atomic: two threads never get the same number
                    if probe.count and number >= probe.count:
                        return disable
                    queue.append({"hit": probe.record(code, line, frame, me)})
                    if probe.count and number + 1 >= probe.count:
                        probe.finished = True
                finally:
                    busy.discard(me)
            except Exception:
                probe.internal_errors += 1  # never into the app
            return None
        return on_line

    # the thread (owns the connection)

    def start_thread(self, conn):
        thread = threading.Thread(target=self.serve, args=(conn,), name="kubectl-wand-trace", daemon=True)
        thread.start()

    def serve(self, conn):
        """The thread's whole life. Nothing escapes it: threading's excepthook would print it into the app's
        stderr."""
        try:
            self.relay(conn)
        except BaseException:
            pass
        finally:
            try:
                conn.close()
            except BaseException:
                pass

    def relay(self, conn):
        reason, pending = None, b""
        last_ping = next_rescan = time.monotonic()
        try:
            conn.settimeout(SEND_TIMEOUT)
            while reason is None:
                readable, _, _ = select.select([conn], [], [], POLL)
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
                        op = json.loads(line).get("op")
                        if op == "remove":
                            reason = "remove"
                        elif op == "go":
                            self.go()
                self.flush(conn)
                if reason is None and self.finished:
                    reason = "count"
                elif reason is None and now - last_ping > HEARTBEAT_TIMEOUT:
                    reason = "heartbeat lost"
                elif reason is None and now >= next_rescan:
                    next_rescan = now + RESCAN_EVERY
                    try:
                        self.rescan()
                    except Exception:
                        self.internal_errors += 1  # a strange module namespace must not end the probe
        except Exception as exc:
            reason = reason or "connection failed: %s" % type(exc).__name__
        finally:
            removed = self.remove(reason or "thread exit")
            try:
                self.flush(conn)  # hits taken before removal still count
                hits = next(self.serial)  # numbers taken: hits delivered, plus any refused past --count
                removed = dict(removed, hits=min(hits, self.count) if self.count else hits, dropped=self.dropped,
                               internal_errors=self.internal_errors)
                self.send(conn, {"removed": removed})
            except Exception:
                pass
            try:
                conn.close()
            except OSError:
                pass

    def flush(self, conn):
        """Send what is queued in one write: each blocking call gives up the GIL, and taking it back from a
        busy app thread costs a forced switch (up to the 5 ms switch interval)."""
        queue, lines = self.queue, []
        while queue:
            lines.append(json.dumps(queue.popleft()).encode() + b"\n")
        if lines:
            conn.sendall(b"".join(lines), NO_SIGPIPE)

    def send(self, conn, message):
        conn.sendall(json.dumps(message).encode() + b"\n", NO_SIGPIPE)

    def rescan(self):
        """Cover code objects of the file created after install (a reload, a later import), cheaply.

        Each second the modules whose __file__ is the probed file are walked: ~50 us with 230 modules loaded
        (measured), and it runs in our thread. When one holds new code objects, a full gc walk (as at install)
        also finds new functions kept only outside the module (registered callbacks). The limit: code of the
        file that appears while no module of that file changes (source exec'd under its name outside any
        module) is not seen.
        """
        fresh = []
        for module in list(sys.modules.values()):
            path = module_file(module)
            if path is None or not self.location.matches(path):
                continue
            for root in roots_in_namespace(module.__dict__):
                for code in nested(root):
                    if code.co_filename == self.filename and not self.known.has(code):
                        fresh.append(code)
        if not fresh:
            return
        added = {}
        for root in itertools.chain(fresh, roots_everywhere()):
            if root.co_filename != self.filename:
                continue
            for code in nested(root):
                if not self.known.has(code):
                    self.known.add(code)
                    if self.location.line in code_lines(code):
                        added[id(code)] = code
        for code in added.values():
            self.enable(code)
        if added:
            self.queue.append({"covered": {"file": self.filename, "line": self.location.line,
                                           "functions": sorted(set(c.co_qualname for c in added.values())),
                                           "note": "new code objects of the file (a reload or a later import)"}})
