"""`kubectl wand mem TARGET`: where the memory goes, live, in the app process of every replica.

Built from what CPython has (gc, sys, tracemalloc), nothing installed in the image. By default a census of the
live heap (types by count and by shallow size, RSS, the allocator's blocks, gc's counts), taken on the target's
main thread within --max-pause (sampled, and said so, when the heap is bigger). With --duration, a growth
window: tracemalloc traces the allocations made in short slices of it (the share of the time its measured cost
allows; unless the app already traces), and the allocation sites whose live memory grew most are printed as
FILE:LINE with their call stack, their growth estimated over the window from the traced slices (and said so),
with the types whose counts grew most. Every replica at once, merged (--per-pod keeps them apart), in one
window opened on every pod at once (fanout.Window). tracemalloc is stopped by the target's own thread on every
ending: the window's end, Ctrl-C, this command or kubectl killed, the connection lost.
"""
from __future__ import annotations

import threading
import time

from .. import errors, printers, terminal
from ..agent import protocol
from ..report import timed_out
from ..errors import WandError
from ..flags import DURATION, Flag
from ..terminal import text
from .common import TARGET_FLAGS, TargetOptions, check_result, positive_seconds
from .fanout import pods_of, read_all, spread_note

DESCRIPTION = ("Where the memory goes in the app process of every Running pod: a census of the live heap (types by "
               "count and shallow size, RSS, allocator blocks, gc counts) within --max-pause; or, with --duration, a "
               "growth window with tracemalloc (tracing short slices of it, as much as its measured cost allows) "
               "naming the FILE:LINE whose live memory grew most (with the call stack) and the types whose counts "
               "grew. tracemalloc is stopped for certain when the window ends, on "
               "Ctrl-C, or when this command dies; an app's own tracing is left as it was.")
FLAGS = (
    Flag("target", nargs="?", help="POD, TYPE/NAME or pid/N"),
    Flag("--top", value=int, default=20, help="rows of each list (default 20)"),
    Flag("--duration", value=DURATION, help="a growth window this long (e.g. 30s) instead of a census"),
    Flag("--frames", value=int, default=3, help="call-stack depth tracemalloc records in a window (default 3)"),
    Flag("--max-pause", value=DURATION, default=0.5,
         help="longest pause of the target's main thread for one census; bigger heaps are sampled (default 0.5s)"),
    Flag("--per-pod", help="one report per process instead of one merged report"),
    Flag("-o", "--output", choices=("json", "yaml"), help="the report as JSON or YAML"),
    Flag("--timeout", value=DURATION, default=10.0,
         help="how long to wait for the main thread to run the injection (default 10s)"),
) + TARGET_FLAGS


class Options(TargetOptions):
    flags = FLAGS
    top: int = 20
    duration: float = None
    frames: int = 3
    max_pause: float = 0.5
    per_pod: bool = False
    output: str = None
    timeout: float = 10.0

    def complete(self, ns, streams):
        self.verb = "mem"
        self.complete_target(ns, streams)

    def early_request(self):
        return None  # it injects (and may trace for a while): start it once the pod is known

    def validate(self):
        self.validate_target()
        if self.duration is not None:
            positive_seconds(self.duration, "--duration")
        positive_seconds(self.timeout, "--timeout")
        positive_seconds(self.max_pause, "--max-pause")
        if self.max_pause > 60:
            raise WandError("--max-pause is at most 60s (the app's main thread stops that long)", errors.USAGE)
        if not 1 <= self.top <= 200:
            raise WandError("--top must be a whole number from 1 to 200", errors.USAGE)
        if not 1 <= self.frames <= 100:
            raise WandError("--frames must be a whole number from 1 to 100", errors.USAGE)

    def request(self):
        return {"op": "mem", "pid": self.known_pid(), "duration": self.duration, "frames": self.frames,
                "max_pause": self.max_pause, "top": self.top, "timeout": self.timeout}

    def run(self) -> int:
        transports = pods_of(self)
        stop = threading.Event()
        progress = Progress(self, len(transports))
        # A window over several pods is sync: each pod's first census is taken, then every window opens at once.
        results = read_all(transports, self.request(), (self.duration or 0) + self.timeout + self.max_pause * 3
                           + 150 + (30 if self.duration else 0), on_event=progress.event, stop=stop,
                           sync=self.duration is not None)
        progress.done()
        reports, codes = [], []
        for transport, result in results:
            if isinstance(result, WandError):
                self.streams.stderr.write("error: %s: %s\n" % (transport.where, text(result.message)))
                codes.append(result.code)
            elif result.get("status") in protocol.UNFINISHED:  # the main thread never ran it: show where it is
                timed_out(dict(result, error="%s: %s" % (transport.where, result.get("error"))),
                          self.streams.stderr)
                codes.append(errors.TIMEOUT)
            elif result.get("status") != "ok":
                try:
                    check_result(result, transport)  # the kind's fix (SYS_PTRACE, --ephemeral) in its message
                    raise WandError(result.get("error") or "failed", errors.exit_code(result))
                except WandError as exc:
                    self.streams.stderr.write("error: %s\n" % text(exc.message))
                    codes.append(exc.code)
            else:
                result.pop("hello", None)
                reports.append(dict(result, **printers.source(transport), where=transport.where))
        if not reports:
            return max(codes) if codes else errors.NOT_FOUND
        groups = [[r] for r in reports] if self.per_pod else [reports]
        merged = [merge(group, self.top) for group in groups]
        if self.output:
            body = printers.as_list(merged, "MemReportList") if self.per_pod else merged[0]
            terminal.raw(self.streams.stdout).write(printers.dump(body, self.output))
        else:
            for report in merged:
                self.streams.stdout.write(render(report))
        if stop.is_set() and not self.quiet:
            self.streams.stderr.write("stopped early: the window ended at Ctrl-C\n")
        return max(codes) if codes else errors.OK


def merge(reports, top):
    """One report from one process's or several: counts and sizes summed by type and by call stack."""
    first = reports[0]
    out = {"mode": first.get("mode"), "processes": [{"pod": r.get("pod"), "namespace": r.get("namespace"),
                                                    "container": r.get("container"), "pid": r.get("pid"),
                                                    "where": r["where"], "walk": r.get("walk"), "heap": r.get("heap")}
                                                   for r in reports]}
    types = {}
    for r in reports:
        for row in r.get("types") or []:
            into = types.setdefault(row.get("type"), {"type": row.get("type")})
            for key in ("count", "size", "growth"):
                if key in row:
                    into[key] = into.get(key, 0) + (row[key] or 0)
    if first.get("mode") == "window":
        out["types"] = sorted(types.values(), key=lambda t: -t.get("growth", 0))[:top]
        sites = {}
        for r in reports:
            for site in r.get("sites") or []:
                key = tuple((f.get("file"), f.get("line")) for f in site.get("stack") or [])
                into = sites.setdefault(key, {"size": 0, "count": 0, "seen_size": 0, "seen_count": 0,
                                              "stack": site.get("stack"), "processes": 0})
                for field in ("size", "count", "seen_size", "seen_count"):
                    into[field] += site.get(field) or 0
                into["processes"] += 1
        out["sites"] = sorted(sites.values(), key=lambda s: -s["size"])[:top]
        out["seconds"] = max(r.get("seconds") or 0 for r in reports)
        out["frames"] = first.get("frames")
        for p, r in zip(out["processes"], reports):
            p.update({k: r.get(k) for k in ("reason", "app_tracing", "stopped", "tracing_after", "memory",
                                            "sampling", "window")})
        samplings = [r.get("sampling") or {} for r in reports]
        out["traced"] = sum(s.get("traced") or 0 for s in samplings)
        out["traced_share"] = [min(s.get("share") or 0 for s in samplings), max(s.get("share") or 0 for s in samplings)]
        out["spread"] = spread_note([r.get("window") for r in reports])
    else:
        by_size = sorted(types.values(), key=lambda t: -t.get("size", 0))[:top]
        by_count = sorted(types.values(), key=lambda t: -t.get("count", 0))[:top]
        out["by_count"], out["by_size"] = by_count, by_size
        out["total_count"] = sum(r.get("total_count") or 0 for r in reports)
        out["total_size"] = sum(r.get("total_size") or 0 for r in reports)
    return out


def mib(n):
    return "?" if n is None else "%.1f MiB" % (n / 1048576.0)


def human(n):
    n = n or 0
    return "%.1f KiB" % (n / 1024.0) if abs(n) < 1048576 else mib(n)


def sampled_note(walk, paused=None):
    """Whether the walk sampled; and whether the main thread's census (``paused``, default ``walk``) overran."""
    over, paused = "", paused or walk
    if paused and paused.get("over_budget"):  # listing the objects cannot be sampled: a huge heap, a small --max-pause
        over = "; OVER --max-pause %s ms: listing the heap's objects alone took %s ms" % (
            text(paused.get("max_pause_ms")), text(paused.get("list_ms")))
    if not walk or not walk.get("sampled"):
        return "whole heap walked" + over
    return "SAMPLED: every %s-th gc object (and every %s-th item of big containers), counts scaled by that%s" % (
        walk.get("stride"), walk.get("inner_stride"), over)


def traced_note(process) -> str:
    """How much of its window a process traced, and why that much."""
    sampling = process.get("sampling") or {}
    if process.get("app_tracing"):
        return "traced the whole window (the app's tracing)"
    note = "traced %s slice(s), %.2fs (%.1f %% of the window)" % (
        text(sampling.get("slices")), sampling.get("traced") or 0, (sampling.get("share") or 0) * 100)
    if sampling.get("cost"):
        note += ": tracemalloc costs %.1fx per allocation here, so it traces %.1f %% of the time" % (
            sampling["cost"], (sampling.get("duty") or 0) * 100)
    return note


# How a window's end reads (the agent's reason, kept as it is in -o json)
ENDINGS = {"ended": "early (Ctrl-C)", "duration": "by its duration"}

def render(report) -> str:
    lines = []
    for p in report["processes"]:
        heap, walk = p.get("heap") or {}, p.get("walk")
        walks = walk if isinstance(walk, list) else [walk]
        label = p["where"] if p["where"].startswith("pid") else "%s pid %s" % (p["where"], text(p.get("pid")))
        lines.append("%s: RSS %s (peak %s), %s allocated blocks, gc counts %s (thresholds %s); census "
                     "paused the main thread %s for %s gc objects (%s)" % (
                         label, mib(heap.get("rss")), mib(heap.get("rss_peak")),
                         "{:,}".format(heap.get("allocated_blocks") or 0), text(heap.get("gc_count")),
                         text(heap.get("gc_threshold")), text((walks[0] or {}).get("pause_ms")) + " ms" + (
                             "" if len(walks) < 2 else " at the start (the end's census: %s ms in our own thread)"
                             % text((walks[-1] or {}).get("pause_ms"))),
                         "{:,}".format((walks[0] or {}).get("objects") or 0), sampled_note(walks[-1], walks[0])))
        if report["mode"] == "window":
            state = ("the app's own tracing, left running" if p.get("app_tracing") else
                     "tracemalloc stopped" if p.get("stopped") and not p.get("tracing_after") else
                     "WARNING: tracemalloc still tracing")
            lines.append("  window ended %s; %s; %s" % (ENDINGS.get(p.get("reason")) or "by " + text(p.get("reason")),
                                                        state, traced_note(p)))
    if report["mode"] == "window":
        lines.append("")
        low, high = report.get("traced_share") or [1, 1]
        share = "%.0f %%" % (low * 100) if round(low * 100) == round(high * 100) else "%.0f-%.0f %%" % (
            low * 100, high * 100)
        lines.append("Allocation sites whose live memory grew most in %ss (%d frame(s) each, most recent first)%s:" % (
            report.get("seconds"), report.get("frames") or 0, text(report.get("spread") or "")))
        lines.append("  ESTIMATED over the window from the traced slices: traced %s of the window (seen: what "
                     "the slices measured)" % share if high < 0.999 else "  traced the whole window")
        for site in report.get("sites") or []:
            stack = site.get("stack") or [{}]
            top = stack[0]
            lines.append("  %+12s  %+9s blocks  (seen %s)  %s:%s  %s" % (
                "+" + human(site["size"]), "+{:,}".format(site["count"]), "+" + human(site.get("seen_size")),
                text(top.get("file")), text(top.get("line")), text(top.get("source"))))
            for frame in stack[1:]:
                lines.append("  %12s  %16s  %s:%s  %s" % ("", "", text(frame.get("file")), text(frame.get("line")),
                                                           text(frame.get("source"))))
        if not report.get("sites"):
            lines.append("  (no allocation site grew)")
        lines.append("")
        lines.append("Types whose counts grew most:")
        lines.append(printers.table(report.get("types") or [], [("TYPE", "type"), ("GROWTH", lambda r: "+{:,}".format(
            r.get("growth", 0))), ("COUNT", lambda r: "{:,}".format(r.get("count", 0)))]).rstrip("\n"))
    else:
        columns = [("TYPE", "type"), ("COUNT", lambda r: "{:,}".format(r.get("count", 0))),
                   ("SIZE", lambda r: human(r.get("size")))]
        lines.append("")
        lines.append("By total shallow size (sys.getsizeof; %s over %s objects):" % (
            human(report.get("total_size")), "{:,}".format(report.get("total_count") or 0)))
        lines.append(printers.table(report["by_size"], columns).rstrip("\n"))
        lines.append("")
        lines.append("By count:")
        lines.append(printers.table(report["by_count"], columns).rstrip("\n"))
    return "\n".join(lines) + "\n\n"


class Progress:
    """A line on a terminal's stderr during a window: seconds so far over every pod."""

    def __init__(self, opts, pods):
        self.stream = terminal.raw(opts.streams.stderr)
        self.enabled = (opts.duration is not None and not opts.quiet
                        and getattr(self.stream, "isatty", lambda: False)())
        self.opts, self.pods, self.lock, self.started = opts, pods, threading.Lock(), time.monotonic()
        self.begun = 0

    def event(self, event, transport):
        with self.lock:
            if "chosen" in event:
                return
            if "started" in event:
                self.begun += 1
            if self.enabled and ("progress" in event or "started" in event):
                self.stream.write("\rwatching memory grow in %d/%d pod(s): %.0fs of %gs (Ctrl-C ends early) " % (
                    self.begun, self.pods, time.monotonic() - self.started, self.opts.duration))
                self.stream.flush()

    def done(self):
        if self.enabled:
            self.stream.write("\r" + " " * 79 + "\r")
            self.stream.flush()
