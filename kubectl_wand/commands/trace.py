"""`kubectl wand trace TARGET FILE:LINE [EXPR ...]`: logpoints in running code, on every replica, no stop.

A probe is injected into the app process of every Running pod (or --pod / --pid) at once. It claims a free
sys.monitoring tool id and turns LINE events on for the code objects holding FILE:LINE only, so all other code
runs at full speed; each hit evaluates the EXPRs there (bounded reprs), is rate-limited inside the target, and
travels target -> agent -> `kubectl exec` -> here, printed as it happens. The probe is removed on Ctrl-C,
--count, --duration, and whenever its controller goes away (the agent, this CLI, kubectl's connection).
"""
from __future__ import annotations

import json
import math
import threading
import time

from .. import errors, printers
from ..agent import protocol
from ..errors import WandError
from ..flags import DURATION, Flag
from ..terminal import text
from .common import TARGET_FLAGS, TargetOptions, positive_seconds
from .fanout import pods_of, read_all, spread_note

DESCRIPTION = ("A logpoint without stopping the process: every time code passes FILE:LINE (matched by path suffix) in "
               "the app process of every Running pod, print the time, pod, pid, thread and EXPR=repr for each EXPR. "
               "Rate-limited inside the process; removed for certain on Ctrl-C, --count, --duration, or when this "
               "command dies.")
FLAGS = (
    Flag("target", nargs="?", help="POD, TYPE/NAME or pid/N"),
    Flag("location", nargs="?", metavar="FILE:LINE", help="e.g. web.py:17 or app/web.py:17"),
    Flag("exprs", nargs="*", metavar="EXPR", help="Python expressions evaluated at the line"),
    Flag("--condition", value=str, metavar="EXPR", help="report only hits where EXPR is true"),
    Flag("--count", value=int, help="stop after N hits over all pods"),
    Flag("--duration", value=DURATION, default=60.0, help="stop after this long (default 60s)"),
    Flag("--max-per-second", value=float, default=20.0,
         help="hits reported per second per process; more are dropped and counted (default 20)"),
    Flag("--snapshot", help="the locals and the stack of the first hit per pod, then stop"),
    Flag("-o", "--output", choices=("json",), help="one JSON object per hit"),
) + TARGET_FLAGS


MAX_PER_SECOND = 10000  # hits reported per second per process, at most


class Options(TargetOptions):
    flags = FLAGS
    location: str = None
    exprs: tuple = ()
    condition: str = None
    count: int = None
    duration: float = 60.0
    max_per_second: float = 20.0
    snapshot: bool = False
    output: str = None

    def complete(self, ns, streams):
        self.verb = "trace"
        self.complete_target(ns, streams)
        self.exprs = list(self.exprs)

    def early_request(self):
        return None  # it changes the process (for a while): start it once the pod is known

    def validate(self):
        self.validate_target()
        if not self.location:
            raise WandError("trace needs FILE:LINE after the target, e.g. web.py:42", errors.USAGE)
        for what, value in [("FILE:LINE", self.location), ("--condition", self.condition)] + [
                ("EXPR", e) for e in self.exprs]:
            try:
                (value or "").encode("utf-8")
            except UnicodeEncodeError as exc:  # a byte that is not UTF-8 reaches us as a lone surrogate
                raise WandError("%s %s is not valid UTF-8 (byte 0x%02x at offset %d); Python source is UTF-8" % (
                    what, text(value), ord(value[exc.start]) & 0xff, exc.start), errors.USAGE)
        file, sep, line = self.location.rpartition(":")
        if not sep or not file or not line.isdigit() or int(line) < 1:
            raise WandError("%r is not a location: give FILE:LINE, e.g. web.py:42 or app/web.py:42" % self.location,
                            errors.USAGE)
        positive_seconds(self.duration, "--duration")
        if self.count is not None and self.count < 1:
            raise WandError("--count must be a whole number >= 1", errors.USAGE)
        # No "inf": the rate limit is what keeps a hot line from flooding the app, the wire and the terminal.
        if not (math.isfinite(self.max_per_second) and 0 < self.max_per_second <= MAX_PER_SECOND):
            raise WandError("--max-per-second must be a number > 0 and at most %d (not %s)" % (
                MAX_PER_SECOND, self.max_per_second), errors.USAGE)
        if self.output not in (None, "json"):
            raise WandError("trace prints text, or -o json (one JSON object per line)", errors.USAGE)
        for source in self.exprs + ([self.condition] if self.condition else []):
            try:
                compile(source, "<expr>", "eval")
            except SyntaxError as exc:
                raise WandError("%r is not a Python expression (%s); quote each EXPR" % (source, exc.msg), errors.USAGE)

    def request(self):
        return {"op": "trace", "pid": self.known_pid(), "location": self.location, "exprs": self.exprs,
                "condition": self.condition, "count": 1 if self.snapshot else self.count,
                "snapshot": self.snapshot, "max_per_second": self.max_per_second, "duration": self.duration,
                "timeout": 15.0}

    def run(self) -> int:
        transports = pods_of(self)
        stop = threading.Event()
        show = Hits(self, stop)
        # sync: every pod's probe is installed with its events off, then all go on at once (one window)
        results = read_all(transports, self.request(), self.duration + self.request_timeout_s + 90,
                           on_event=show.event, stop=stop, sync=True)
        return show.summary(results)


class Hits:
    """Prints each event as it arrives (from several pods' threads at once) and the summary at the end."""

    def __init__(self, opts, stop):
        self.opts, self.stop = opts, stop
        self.out, self.err = opts.streams.stdout, opts.streams.stderr
        self.lock = threading.Lock()
        self.where = threading.local()
        self.total = 0
        self.warned = {}  # (expr, file, line, message) -> pods it was said for: said once per run, not per pod
        self.seen = {}  # id(transport) -> {"pid", "hits"} once its probe is installed

    def event(self, event, transport):
        with self.lock:
            if "chosen" in event:
                return
            if "installed" in event:
                e = event["installed"]
                self.seen[id(transport)] = {"pid": e.get("pid"), "hits": 0}
                self.note("tracing %s:%s (in %s) in %s pid %s, sys.monitoring tool id %s" % (
                    text(e.get("file")), text(e.get("line")), ", ".join(map(text, e.get("functions") or ["?"])),
                    transport.where, text(e.get("pid")), text(e.get("tool_id"))))
            elif "hit" in event:
                self.seen.setdefault(id(transport), {"pid": event["hit"].get("pid"), "hits": 0})["hits"] += 1
                self.hit(dict(event["hit"], **printers.source(transport)))
            elif "error" in event:
                e = event["error"]
                key = tuple(str(e.get(k)) for k in ("expr", "file", "line", "message"))
                self.warned[key] = self.warned.get(key, 0) + 1
                if self.warned[key] > 1:
                    return
                self.err.write("warning: %s at %s:%s raised %s (said once; the app is not affected)\n" % (
                    text(e.get("expr")), text(e.get("file")), text(e.get("line")), text(e.get("message"))))
            elif "covered" in event:
                e = event["covered"]
                self.note("new code of %s:%s got the probe (%s)" % (text(e.get("file")), text(e.get("line")),
                                                                    text(e.get("function", "imported later"))))

    def note(self, text):
        if not self.opts.quiet:
            self.err.write(text + "\n")
            self.err.flush()

    def hit(self, hit):
        self.total += 1
        if self.opts.output == "json":
            self.out.write(json.dumps({"hit": hit}) + "\n")
        else:
            stamp = clock(hit["time"])
            values = " ".join("%s=%s" % (text(v["expr"]), text(v.get("repr", "<%s>" % v.get("error"))))
                              for v in hit["values"])
            pod = "pod/%s " % hit["pod"] if hit.get("pod") else ""
            self.out.write("%s %spid %s %s %s:%s %s\n" % (
                stamp, pod, text(hit["pid"]), text(hit["thread"]), short(text(hit["file"])), text(hit["line"]),
                values or "(hit)"))
            if hit.get("locals") is not None:
                self.out.write(snapshot_text(hit))
        self.out.flush()
        if self.opts.count and self.total >= self.opts.count:
            self.stop.set()  # --count is over every pod together: remove every probe

    def summary(self, results) -> int:
        codes = []
        for transport, result in results:
            seen = self.seen.get(id(transport))
            if isinstance(result, WandError) and getattr(result, "gone", False) and seen is not None:
                # a rollout, a scale-down, an eviction: the probe went with its process; not a failure
                self.err.write("%s pid %s: %d hit(s); ended: %s; the probe ended with its process\n" % (
                    transport.where, text(seen["pid"]), seen["hits"], text(result.message)))
                codes.append(errors.OK)
                continue
            if isinstance(result, WandError):
                self.err.write("error: %s: %s\n" % (transport.where, text(result.message)))
                codes.append(result.code)
                continue
            if result.get("status") != protocol.OK:
                from .common import agent_error
                self.err.write("error: %s\n" % text(agent_error(result, transport).message))
                codes.append(errors.exit_code(result))
                continue
            removed = ("probe removed (tool id %s freed)" % ", ".join(map(str, result.get("tool_ids") or []))
                       if result.get("removed") else "warning: " + result.get("warning", "removal not confirmed"))
            self.note("%s pid %s: %d hit(s), %d dropped by the rate limit (%g/s); ended by %s; %s%s" % (
                transport.where, text(result.get("pid")), result.get("hits", 0), result.get("dropped", 0),
                self.opts.max_per_second, text(result.get("reason")), text(removed), window_text(result)))
            codes.append(errors.OK)
        for (expr, _file, _line, message), pods in self.warned.items():
            if pods > 1:
                self.note("the warning about %s (%s) came from %d processes" % (text(expr), text(message), pods))
        windows = [r.get("window") for _t, r in results if isinstance(r, dict) and r.get("window")]
        if len(windows) > 1:
            self.note("%d probes: %s" % (len(windows), spread_note(windows)[2:]))
        return max(codes) if codes else errors.OK


def window_text(result) -> str:
    """"; window 10:00:01.250-10:00:07.251": when this probe's events were on (its agent's clock)."""
    window = result.get("window")
    if not isinstance(window, dict) or not all(isinstance(window.get(k), (int, float)) for k in ("start", "end")):
        return ""
    return "; window %s-%s" % (clock(window["start"]), clock(window["end"]))


def clock(when) -> str:
    return time.strftime("%H:%M:%S", time.localtime(when)) + ".%03d" % (when % 1 * 1000)


def short(path):
    return path if len(path) <= 60 else "..." + path[-57:]


def snapshot_text(hit):
    lines = ["  locals:"]
    for name, value in (hit.get("locals") or {}).items():
        lines.append("    %s = %s" % (text(name), text(value)))
    lines.append("  stack (innermost first):")
    for f in hit.get("stack") or []:
        lines.append("    %s (%s:%s)" % (text(f.get("function")), text(f.get("file")), text(f.get("line"))))
    return "\n".join(lines) + "\n"

