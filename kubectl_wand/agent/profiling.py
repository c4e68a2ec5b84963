"""The ``profile`` operation: sample each target's stacks for a while, beside it, with the sampler (a passenger).

Split from observe.py (which reads one stack and holds what both share: finding the targets, starting a
sampler): ``stack`` ships without this module. Request and answer: see observe.py's docstring.
"""
from __future__ import annotations

import os
import time

from . import protocol
from .observe import (GO_WAIT, PROGRESS_EVERY, START_GRACE, STOP_GRACE, check_sampler, describe, kill_group,
                      last_error, runtime_args, start, targets)
from .protocol import AgentError

MAX_RATE, MAX_DURATION = 1000.0, 3600.0


def profile_args(request):
    try:
        rate = float(request.get("rate", 100))
        duration = float(request.get("duration", 10))
    except (TypeError, ValueError):
        raise AgentError("usage", "rate and duration must be numbers (e.g. --rate 100 --duration 10s)")
    if not 0 < rate <= MAX_RATE:
        raise AgentError("usage", "--rate %g is out of range: use 1 to %d samples per second" % (rate, MAX_RATE))
    if not 0 < duration <= MAX_DURATION:
        raise AgentError("usage", "--duration %gs is out of range: use up to %ds" % (duration, MAX_DURATION))
    flags = ["--idle"] if request.get("idle") else []
    flags += ["--gil"] if request.get("gil") else []
    return rate, duration, ["--rate", repr(rate), "--duration", repr(duration)] + flags


def profile(request: dict, emit=None, stop=None, window=None) -> dict:
    """Sample each target for ``duration`` seconds at ``rate`` Hz, in parallel; stop early when ``stop`` is set.

    Every sampler gets ready first (its interpreter started, the target's runtime found) and says "armed"; then
    all start at once: one window for every process here, and with ``window`` (a sync request from a CLI that
    reads several pods) one window for every pod: armed, the agent tells the CLI and waits for its go. Each
    profile reports its ``window`` (wall-clock start and end).

    Progress: ``emit({"progress": {"samples", "errors", "elapsed", "processes"}})`` about every 0.5 s, summed
    over the processes; ``emit({"partial": {"pid", "profile"}})``, a process's profile so far, about every
    second (the CLI keeps the last one of a pod that a rollout ends before its result).
    Entry: {"pid", "python", "command", "profile": {"pid", "rate", "duration", "samples", "errors", "missed",
    "recorded", "achieved_rate", "idle", "gil", "stopped_early": null | "signal" | "eof" | "exited", "frames":
    [{"function", "file", "line"}], "stacks": [{"thread", "frames": [frame index, innermost first], "count"}]}};
    or {"pid", "kind", "error"}.
    """
    _rate, duration, args = profile_args(request)
    found = targets(request.get("pid"))
    runs = []
    for pid, resolved in found:
        run = Sampling(pid, resolved)
        if not isinstance(resolved, AgentError):
            rt = resolved[1]
            try:
                run.popen = start(rt, ["profile", str(rt.injector_pid)] + args + runtime_args(rt) + ["--armed"])
            except AgentError as exc:
                run.resolved = exc
        runs.append(run)
    try:
        watch([r for r in runs if r.popen is not None], duration, emit, stop, window)
    finally:
        for run in runs:
            run.reap()
    out = [run.result() for run in runs]
    if request.get("pid") is not None and "error" in out[0]:
        raise AgentError(out[0]["kind"], out[0]["error"])
    return {"status": "ok", "processes": out}


class Sampling:
    """One sampler subprocess: its output so far, its last progress, its final line."""

    def __init__(self, pid, resolved):
        self.pid, self.resolved, self.popen = pid, resolved, None
        self.buf, self.err, self.final, self.progress, self.partial = bytearray(), b"", None, {}, None
        self.open_streams = 2
        self.armed = False

    def feed(self, data: bytes):
        """Take the sampler's output: lines of at most LINE_MAX, each checked; a breach ends the sampler (the
        caller reaps it) and becomes its error."""
        if self.final is not None and "protocol" == self.final.get("kind"):
            return
        self.buf += data
        while b"\n" in data and b"\n" in self.buf:  # only new data can complete a line: no rescans
            end = self.buf.index(b"\n")
            line = bytes(self.buf[:end])
            del self.buf[:end + 1]
            try:
                obj = check_sampler(protocol.decode(line, "the sampler's line"))
            except protocol.ProtocolError as exc:
                self.breach(exc)
                return
            if "progress" in obj:
                self.progress = obj["progress"]
            elif "armed" in obj:
                self.armed = True
            elif "partial" in obj:
                self.partial = obj["partial"]
            else:
                self.final = obj
        if len(self.buf) > protocol.LINE_MAX:
            self.breach(protocol.ProtocolError("a line of the sampler is over %s" % protocol.size(protocol.LINE_MAX)))

    def breach(self, exc):
        self.final, self.buf = {"kind": "protocol", "error": "the sampler answered out of protocol: %s" % exc}, \
            bytearray()
        kill_group(self.popen)

    def go(self):
        if self.popen.stdin.closed:
            return
        try:
            self.popen.stdin.write(b"go\n")
            self.popen.stdin.flush()
        except OSError:  # it has exited: its report (or its error) is on its stdout
            pass

    def stop(self):
        """Ask the sampler to end now and report: EOF on its stdin. Not SIGTERM, though the sampler honours it
        too: measured, nsenter (the mode for a container seen from its host) does not pass a signal on to the
        child it forked, and a signal that lands before the sampler's handler is installed (its interpreter
        takes ~30 ms to start, far more on a loaded node) kills it without a report. EOF waits in the pipe."""
        if not self.popen.stdin.closed:
            self.popen.stdin.close()

    def reap(self):
        if self.popen is None:
            return
        if self.open_streams:  # someone in its group still holds the pipes: end them all
            kill_group(self.popen)
        import subprocess
        try:
            self.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=5)
        for stream in (self.popen.stdin, self.popen.stdout, self.popen.stderr):
            stream.close()

    def result(self) -> dict:
        entry = describe(self.pid, self.resolved)
        if self.popen is None:
            return entry
        if self.final and "profile" in self.final:
            prof = self.final["profile"]
            prof["pid"] = self.pid
            entry["profile"] = prof
        elif self.final and "error" in self.final:
            entry.update(kind=self.final.get("kind", "runtime"), error=self.final["error"])
        else:
            entry.update(kind="runtime", error=last_error(self.err, self.popen.returncode))
        return entry


def watch(runs, duration, emit, stop, window=None):
    """Read every sampler's lines until all have exited, forwarding summed progress; end them on ``stop``.
    The samplers sample once all are armed (and, with ``window``, once the CLI said go)."""
    import selectors
    sel = selectors.DefaultSelector()
    for run in runs:
        for stream, kind in ((run.popen.stdout, "out"), (run.popen.stderr, "err")):
            os.set_blocking(stream.fileno(), False)
            sel.register(stream, selectors.EVENT_READ, (run, kind))
    started = time.monotonic()
    deadline = started + duration + START_GRACE
    next_progress = started + PROGRESS_EVERY
    stopping = False
    opened = False
    try:
        while sel.get_map():
            if not opened and not stopping and all(r.armed or r.open_streams < 2 for r in runs):
                opened = open_window(runs, window, stop)
                started = time.monotonic()
                deadline = started + duration + START_GRACE
                next_progress = started + PROGRESS_EVERY
            if not stopping and (time.monotonic() > deadline or stop is not None and stop.is_set()):
                stopping = True
                deadline = time.monotonic() + STOP_GRACE
                for run in runs:
                    run.stop()
            elif stopping and time.monotonic() > deadline:
                break  # reap() kills what is left
            # ``stop`` is a threading.Event, which cannot be waited on together with pipes: look at it
            # between reads, at most 0.2 s apart (the sampler sees its stdin close at once).
            for key, _ in sel.select(timeout=0.2):
                run, kind = key.data
                try:
                    data = os.read(key.fileobj.fileno(), 65536)
                except BlockingIOError:
                    continue
                if not data:
                    sel.unregister(key.fileobj)
                    run.open_streams -= 1
                elif kind == "out":
                    run.feed(data)
                else:
                    run.err = (run.err + data)[-4096:]
            if emit is not None and time.monotonic() >= next_progress:
                next_progress = time.monotonic() + PROGRESS_EVERY
                emit({"progress": summed(runs, started)})
                for run in runs:  # what each has counted so far, once: the CLI keeps it if the pod goes away
                    if run.partial is not None:
                        emit({"partial": {"pid": run.pid, "profile": dict(run.partial, pid=run.pid)}})
                        run.partial = None
    finally:
        sel.close()


def open_window(runs, window, stop) -> bool:
    """Every sampler here is armed (or has exited): with ``window``, tell the CLI and wait for its go; then
    start them all. False when the CLI stopped the operation first (the samplers are then stopped unstarted)."""
    if window is not None:
        window.arm({"processes": sum(r.armed for r in runs)})
        deadline = time.monotonic() + GO_WAIT
        while not window.opened(0.2):
            if stop is not None and stop.is_set():
                return False
            if time.monotonic() > deadline:
                break  # no go: open anyway; the window this profile reports says when it was
    for run in runs:
        run.go()
    return True


def summed(runs, started) -> dict:
    return {"samples": sum(r.progress.get("samples", 0) for r in runs),
            "errors": sum(r.progress.get("errors", 0) for r in runs),
            "elapsed": round(time.monotonic() - started, 2), "processes": len(runs)}
