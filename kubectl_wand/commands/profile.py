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
        found, code = entries(results, err, self)
        merged = profiles.merge([(e.get("pod"), e) for e in found], per_pod=self.per_pod)
        if not merged["total"] and code != errors.OK and not found:
            return code  # nothing was read: the reason is printed above (not "the processes were idle")
        unread = [e["profile"].get("last_error") for e in found
                  if (e.get("profile") or {}).get("errors") and not e["profile"].get("samples")]
        if not merged["total"] and unread:  # not idle: every read failed (e.g. a stack past 1024 frames)
            raise WandError("no samples: every read of the stacks failed: %s" % unread[0], errors.ENVIRONMENT)
        if not merged["total"]:
            raise WandError("no samples: the processes were idle the whole time (add --idle to count idle "
                            "threads)", errors.NOT_FOUND)
        self.write(merged)
        if not self.quiet:
            err.write("%d samples from %d process(es) at %g Hz (achieved %.1f Hz), %d read errors%s%s\n" % (
                merged["total"], len(merged["sources"]), self.rate, merged["achieved_rate"] or 0, merged["errors"],
                spread_note([(e.get("profile") or {}).get("window") for e in found]),
                "; stopped early" if stop.is_set() else ""))
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


class Progress:
    """A line on a terminal's stderr: samples taken so far, summed over every process."""

    def __init__(self, opts, pods):
        self.stream = terminal.raw(opts.streams.stderr)  # its own carriage returns; its numbers are ours
        self.enabled = not opts.quiet and getattr(self.stream, "isatty", lambda: False)()
        self.per_source = {}
        self.started = time.monotonic()
        self.duration = opts.duration
        self.lock = threading.Lock()
        self.pods = pods

    def event(self, event, transport):
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
