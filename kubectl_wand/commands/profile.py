"""`kubectl wand profile TARGET`: sample every Python process of every pod at --rate Hz for --duration, merge,
and write speedscope JSON, collapsed stacks, an SVG flame graph, or print the hottest functions.

Sampling reads the target's memory from beside it (the sampler runs under the target's own interpreter); the
target runs no code of ours and never stops. Ctrl-C ends early and still writes what was collected.
"""
from __future__ import annotations

import threading
import time

from .. import errors, outfile, printers, profiles, terminal
from ..errors import WandError
from ..flags import DURATION, FILES, Flag
from .common import TARGET_FLAGS, TargetOptions, positive_seconds
from .fanout import entries, pods_of, read_all, spread_note

FORMATS = ("speedscope", "collapsed", "svg", "top")
TOP_COLUMNS = [("OWN%", lambda r: "%.1f" % r["own_pct"]), ("TOTAL%", lambda r: "%.1f" % r["total_pct"]),
               ("OWN", "own"), ("TOTAL", "total"), ("FUNCTION", "label")]


def format_for(path):
    if path.endswith(".json"):
        return "speedscope"
    if path.endswith(".svg"):
        return "svg"
    return "collapsed"

DESCRIPTION = ("Sample the stacks of every Python process of the target (every pod at once) and merge them. Prints the "
               "hottest functions, or writes speedscope JSON, collapsed stacks or an SVG flame graph. Ctrl-C ends "
               "early and keeps what was sampled.")
FLAGS = (
    Flag("target", nargs="?", help="POD, TYPE/NAME or pid/N (default: this machine)"),
    Flag("--duration", value=DURATION, default=10.0, help="how long to sample, e.g. 30s (default 10s)"),
    Flag("--rate", value=float, default=100.0, help="samples per second (default 100)"),
    Flag("--format", choices=("speedscope", "collapsed", "svg", "top"),
         help="default: top on the terminal; from --output's ending otherwise (.json speedscope, .svg svg, else "
              "collapsed)"),
    Flag("-o", "--output", value=str, metavar="FILE", complete=FILES,
         help="write the profile to FILE (- for stdout)"),
    Flag("--idle", help="count threads sleeping in a system call too"),
    Flag("--gil", help="count only the thread holding the GIL"),
    Flag("--per-pod", help="keep each pod as a root frame"),
) + TARGET_FLAGS


class Options(TargetOptions):
    flags = FLAGS
    duration: float = 10.0
    rate: float = 100.0
    format: str = None
    output: str = None
    idle: bool = False
    gil: bool = False
    per_pod: bool = False

    def complete(self, ns, streams):
        self.verb = "profile"
        self.complete_target(ns, streams)
        if self.format is None:
            self.format = format_for(self.output) if self.output else "top"

    def request(self):
        return {"op": "profile", "pid": self.known_pid(), "rate": self.rate, "duration": self.duration,
                "idle": self.idle, "gil": self.gil}

    def early_request(self):
        return None  # it runs for --duration: start it once the pod is known

    def validate(self):
        self.validate_target(needs_one=False)
        positive_seconds(self.duration, "--duration")
        if not 1 <= self.rate <= 1000:
            raise WandError("--rate must be 1-1000 samples per second", errors.USAGE)
        if self.format in ("speedscope", "svg") and not self.output:
            raise WandError("--format %s writes a file: give --output FILE" % self.format, errors.USAGE)
        if self.output and self.output != "-":
            outfile.check(self.output)  # before sampling, not after it

    def run(self) -> int:
        err = self.streams.stderr
        transports = pods_of(self)
        stop = threading.Event()
        progress = Progress(self, len(transports))
        # sync: every pod's sampling window opens at once (ARM_WAIT more for the pods to get ready)
        results = read_all(transports, self.request(), self.duration + self.request_timeout_s + 60,
                           on_event=progress.event, stop=stop, sync=True)
        progress.done()
        kept = [progress.keep(t, r) for t, r in results]
        found, code = entries([(t, r) for t, r, _c in kept], err, self)
        code = max([code] + [c for _t, _r, c in kept])
        if not found:
            return code  # nothing was read at all: each pod's own line (RBAC, Pod Security...) said why
        merged = profiles.merge([(e.get("pod"), e) for e in found], per_pod=self.per_pod)
        unread = [e["profile"].get("last_error") for e in found
                  if (e.get("profile") or {}).get("errors") and not e["profile"].get("samples")]
        if not merged["total"] and unread:  # not idle: every read failed (e.g. a stack past 1024 frames)
            raise WandError("no samples: every read of the stacks failed: %s" % unread[0], errors.ENVIRONMENT)
        if not merged["total"]:
            raise empty(merged, stop.is_set())
        self.write(merged)
        if not self.quiet:
            err.write("%d samples from %d process(es) at %g Hz (achieved %.1f Hz), %d read errors%s%s\n" % (
                merged["total"], len(merged["sources"]), self.rate, merged["achieved_rate"] or 0, merged["errors"],
                spread_note([(e.get("profile") or {}).get("window") for e in found]),
                "; stopped early" if stop.is_set() else ""))
            if merged["cut"]:  # marked <outer frames not read> in the output: say why once
                err.write("%d samples may miss their outer frames (%s)\n" % (
                    merged["cut"], terminal.text(merged["cut_reason"])))
        return code

    def write(self, merged):
        name = "kubectl wand profile %s" % (self.target or "this machine")
        if self.format == "top":
            text = printers.table(profiles.top(merged, limit=30), TOP_COLUMNS)
        elif self.format == "collapsed":
            text = profiles.to_collapsed(merged)
        elif self.format == "svg":
            text = profiles.to_svg(merged, title=name)
        else:
            text = printers.dump(profiles.to_speedscope(merged, name=name), "json")
        if self.output and self.output != "-":
            try:  # a name that was not UTF-8 in the target keeps its bytes
                data = text.encode("utf-8", "surrogateescape")
            except UnicodeEncodeError:
                data = text.encode("utf-8", "backslashreplace")
            replaced = outfile.write(self.output, data)
            if not self.quiet:
                self.streams.stderr.write("wrote %s (%s)%s\n" % (self.output, self.format,
                                                                 "; it replaced the file there" if replaced else ""))
        elif self.format == "top":
            self.streams.stdout.write(text)
        else:  # a data format on stdout: the names as they are (collapsed stacks already drop newlines)
            terminal.raw(self.streams.stdout).write(text)


def empty(merged, stopped):
    """Why a profile has no sample to show, as the error to raise."""
    if not merged["samples"] and stopped:
        return WandError("no samples: stopped before the first sample was taken", errors.INTERRUPTED)
    if not merged["samples"]:
        return WandError("no samples: every read of the process failed (%d errors)" % merged["errors"],
                         errors.NOT_FOUND)
    return WandError("no samples: the processes were idle the whole time (add --idle to count idle threads)",
                     errors.NOT_FOUND)


class Progress:
    """A line on a terminal's stderr: samples taken so far, summed over every process; and each process's
    profile so far (the agent's ``partial`` events), kept for a pod that goes away before its result."""

    def __init__(self, opts, pods):
        self.stream = terminal.raw(opts.streams.stderr)  # its own carriage returns; its numbers are ours
        self.enabled = not opts.quiet and getattr(self.stream, "isatty", lambda: False)()
        self.per_source = {}
        self.started = time.monotonic()
        self.duration = opts.duration
        self.lock = threading.Lock()
        self.pods = pods
        self.partial = {}  # id(transport) -> {pid: profile so far}
        self.err = opts.streams.stderr

    def keep(self, transport, result):
        """(transport, result, exit code of its own): a pod whose agent ended without a result (a rollout or a
        scale to 0 deleted it, it was evicted, its container exited) gives what it had sent, and a line
        naming why it ended; that end is not a failure of the profile (it has a file to show)."""
        sent = self.partial.get(id(transport))
        if not isinstance(result, WandError) or not sent:
            return transport, result, errors.OK
        samples = sum(p.get("samples", 0) for p in sent.values())
        seconds = max(p.get("duration") or 0 for p in sent.values())
        self.err.write("warning: %s; kept the %d samples it had sent (%.1fs)\n" % (
            terminal.text(result.message if getattr(result, "gone", False) else "%s: %s" % (
                transport.where, result.message)),
            samples, seconds))
        processes = [{"pid": pid, "profile": dict(prof, stopped_early="pod ended")} for pid, prof in sent.items()]
        code = errors.OK if getattr(result, "gone", False) else result.code
        return transport, {"status": "ok", "processes": processes}, code

    def event(self, event, transport):
        partial = event.get("partial")
        if isinstance(partial, dict) and isinstance(partial.get("profile"), dict):
            with self.lock:
                self.partial.setdefault(id(transport), {})[partial.get("pid")] = partial["profile"]
            return
        progress = event.get("progress")
        if not progress:
            return
        with self.lock:
            self.per_source[id(transport)] = progress
            if self.enabled:
                samples = sum(p.get("samples", 0) for p in self.per_source.values())
                self.stream.write("\rprofiling %d pod(s): %d samples, %.0fs of %gs (Ctrl-C ends early) " % (
                    self.pods, samples, time.monotonic() - self.started, self.duration))
                self.stream.flush()

    def done(self):
        if self.enabled:
            self.stream.write("\r" + " " * 79 + "\r")
            self.stream.flush()
