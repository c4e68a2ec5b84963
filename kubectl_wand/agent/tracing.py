"""The agent side of ``trace``: inject the probe, relay its hits, keep it alive with pings, remove it for certain.

One injection whose connection stays open (``session.Injection.run(stream=...)``). The request carries the
sources of ``codefinder`` and ``probe``, which run inside the target (see agent/passengers/probe.py). JSON lines:
  probe -> agent  first ``{"installed": {...}}``, or ``{"status": "error", ...}`` when the location or an
                  expression is refused (nothing was enabled, no tool id was claimed); then any number of
                  ``{"opened": {"time"}}`` (a sync probe's events went on), ``{"hit": {...}}``, ``{"error": {...}}`` (an expression raised; once per location and
                  expression), ``{"covered": {...}}`` (new code objects of the file got the probe); last
                  ``{"removed": {"reason", "tool_ids", "freed", "hits", "dropped", ...}}``.
  agent -> probe  ``{"op": "go"}`` (a ``sync`` request: the probe, installed, enables its line events only
                  now, when the CLI has opened every pod's window), ``{"op": "ping"}`` every second (after HEARTBEAT_TIMEOUT = 5 s without one the probe removes
                  itself: a frozen or vanished controller), ``{"op": "remove"}``.
Closing the connection also removes the probe, so every way this function ends (return, exception, the agent
process killed) ends the probe within seconds.
"""
from __future__ import annotations

import time

from . import protocol
from .link import EOF, PING_EVERY, Link, exited
from .session import AgentError, Injection

ACK_TIMEOUT = 5.0        # how long a removal may take to be acknowledged (the probe thread polls every 0.1 s)
INSTALL_TIMEOUT = 30.0   # locating the code walks every live object of the target: seconds in a huge heap
DEFAULT_RATE = 20.0
DEFAULT_REPR = 200


def parse_location(text: str):
    """``FILE:LINE`` -> (file, line), or AgentError saying what a location looks like."""
    file, sep, line = (text or "").rpartition(":")
    if not sep or not file or not line.strip().isdigit() or int(line) < 1:
        raise AgentError("usage", "%r is not a location: give FILE:LINE, e.g. web.py:42 or app/web.py:42" % (text,))
    return file.strip(), int(line)


def probe_request(request: dict) -> dict:
    """The request the probe gets, checked here so bad input is one clear line before anything is injected."""
    if request.get("location"):
        file, line = parse_location(request["location"])
    else:
        file, line = request.get("file"), request.get("line")
        if not file or not isinstance(line, int) or line < 1:
            raise AgentError("usage", "trace needs a FILE:LINE location, e.g. web.py:42")
    exprs = request.get("exprs") or []
    if not all(isinstance(e, str) and e.strip() for e in exprs):
        raise AgentError("usage", "each EXPR must be a non-empty Python expression")
    condition = request.get("condition")
    if condition is not None and (not isinstance(condition, str) or not condition.strip()):
        raise AgentError("usage", "--condition must be a non-empty Python expression")
    count = request.get("count")
    if count is not None and (not isinstance(count, int) or count < 1):
        raise AgentError("usage", "--count must be a whole number >= 1")
    rate = request.get("max_per_second", DEFAULT_RATE)
    if not isinstance(rate, (int, float)) or rate <= 0:
        raise AgentError("usage", "--max-per-second must be a number > 0")
    return {"op": "trace", "file": file, "line": line, "exprs": exprs, "condition": condition,
            "count": count, "snapshot": bool(request.get("snapshot")), "max_per_second": float(rate),
            "max_repr": int(request.get("max_repr") or DEFAULT_REPR)}


def trace(request: dict, emit=None, stop=None, window=None) -> dict:
    """Op ``trace``: see the module docstring. Emits ``{"installed"|"hit"|"error"|"covered": {...}}``; returns
    ``{"status": "ok", "hits", "dropped", "removed", "tool_ids", "reason", "window", ...}`` once the probe is
    gone (``window``: the wall-clock start and end of the probe's events). With ``window`` (a main.Window) the
    probe is installed with its events off, the CLI hears "armed", and the events go on at its go."""
    pid = int(request["pid"])
    probe = dict(probe_request(request), armed=window is not None)
    duration = request.get("duration")
    if duration is not None and (not isinstance(duration, (int, float)) or duration <= 0):
        raise AgentError("usage", "--duration must be a positive number of seconds")
    injection = Injection(pid, float(request.get("timeout", 10.0)))
    return injection.run(probe, stream=Relay(pid, emit, stop, duration, window))


class Relay(Link):
    """Owns the open connection to the probe: relays its messages, pings, and asks for removal."""

    def __init__(self, pid, emit, stop, duration, window=None):
        super().__init__(pid, emit, stop, duration, window)
        self.opened = None
        self.lines = None
        self.hits, self.dropped, self.errors, self.snapshot, self.installed = 0, 0, [], None, None

    def __call__(self, conn: "socket.socket", hello: dict, lines=None) -> dict:
        conn.settimeout(2.0)  # for sends; reads wait in select()
        self.lines = lines or protocol.Lines(conn, "the target")
        try:
            return self.follow(conn)
        except protocol.ProtocolError as exc:
            # Closing the connection (the caller does) removes a real probe; a peer out of protocol gets no more.
            raise AgentError("protocol", "the probe in process %d answered out of protocol: %s; the trace was "
                             "ended" % (self.pid, exc))

    def follow(self, conn):
        first = self.next_message(conn, time.monotonic() + INSTALL_TIMEOUT)
        if first is None or first is EOF or "installed" not in first:
            if first is not None and first is not EOF and first.get("status") == "error":
                extra = {k: v for k, v in first.items() if k not in ("status", "kind", "error")}
                raise AgentError(first.get("kind", "trace"), first.get("error", "the probe was refused"), **extra)
            raise AgentError("trace", "the probe in process %d did not start (%s)" % (
                self.pid, "no answer" if first is None or first is EOF else "it sent %s first" % "/".join(
                    k for k in protocol.TRACE_MESSAGES if k in first)))
        self.installed = dict(first["installed"], pid=self.pid)
        self.send_event({"installed": self.installed})
        removed, reason = self.relay(conn)
        result = {"status": "ok", "pid": self.pid, "file": self.installed["file"], "line": self.installed["line"],
                  "hits": self.hits, "dropped": self.dropped, "errors": self.errors, "reason": reason,
                  "removed": removed is not None and removed.get("freed", False),
                  "tool_ids": (removed or {}).get("tool_ids", [self.installed["tool_id"]]),
                  "window": {"start": round(self.opened or time.time(), 3), "end": round(self.closed, 3)}}
        if removed is not None:
            result["dropped"] = removed.get("dropped", self.dropped)
            result["probe_reason"] = removed.get("reason")
            if reason == "count" and self.snapshot is not None:
                result["reason"] = "snapshot"
            if removed.get("problems"):
                result["problems"] = removed["problems"]
        elif exited(self.pid):
            result.update(removed=True, reason="target exited")
        else:
            result["warning"] = ("the probe did not acknowledge its removal within %gs; it removes itself when "
                                 "it sees the connection closed" % ACK_TIMEOUT)
        if self.snapshot is not None:
            result["snapshot"] = self.snapshot
        return result

    def relay(self, conn):
        """Relay until the probe is removed; returns (its removal message or None, why it ended)."""
        try:
            return self.relay_window(conn)
        finally:
            self.closed = time.time()

    def relay_window(self, conn):
        if self.window is not None and not self.armed(conn):
            self.opened = time.time()
            return self.end(conn, "stopped")
        self.opened = time.time()
        started = next_ping = time.monotonic()
        end = started + self.duration if self.duration else None
        reason = None
        while reason is None:
            now = time.monotonic()
            if self.stop is not None and self.stop.is_set():
                reason = "stopped"
                break
            if end is not None and now >= end:
                reason = "duration"
                break
            if now >= next_ping:
                # A failed send is not the end: what the probe sent before closing (its last hits, its
                # removal after --count) is still to be read, and the read below then sees EOF.
                self.send(conn, {"op": "ping"})
                next_ping = now + PING_EVERY
            # Wake for the next ping, the end, or at least every 0.2 s to notice ``stop``.
            wait = min(next_ping, end or next_ping) - now
            message = self.next_message(conn, now + max(0.0, min(wait, 0.2)))
            while message is not None:
                if message is EOF:
                    return None, "connection lost"
                if "removed" in message:  # the probe ended itself: --count/--snapshot reached, or it failed
                    return message["removed"], message["removed"].get("reason", "removed")
                self.handle(message)
                message = self.next_message(conn, 0)
        return self.end(conn, reason)

    def end(self, conn, reason):
        """Ask for removal; keep relaying what the probe flushes before its acknowledgement."""
        self.send(conn, {"op": "remove"})
        deadline = time.monotonic() + ACK_TIMEOUT
        while True:
            message = self.next_message(conn, deadline)
            if message is None or message is EOF:
                return None, reason
            if "removed" in message:
                return message["removed"], reason
            self.handle(message)

    def handle(self, message):
        if "hit" in message:
            hit = dict(message["hit"], pid=self.pid)
            self.hits += 1
            self.dropped = max(self.dropped, hit.get("dropped", 0))
            if "locals" in hit and self.snapshot is None:
                self.snapshot = hit
            self.send_event({"hit": hit})
        elif "error" in message:
            error = dict(message["error"], pid=self.pid)
            self.errors.append(error)
            self.send_event({"error": error})
        elif "opened" in message:  # a sync probe's events went on at the go: its window starts here
            self.opened = message["opened"].get("time") or self.opened
            self.send_event({"opened": message["opened"]})
        elif "covered" in message:
            self.send_event({"covered": dict(message["covered"], pid=self.pid)})

    def next_message(self, conn, deadline):
        """The next message, checked (protocol.check_trace_message); None when none came by ``deadline`` (a
        monotonic time; 0: do not wait); EOF when the connection ended. A line over SMALL_MAX, or one that
        started but did not end within LINE_WAIT, is a ProtocolError."""
        try:
            line = self.lines.line(protocol.SMALL_MAX, deadline or 0.0, "a message", poll=True)
        except protocol.NoLine:
            return None
        if line is None:
            return EOF
        return protocol.check_trace_message(protocol.decode(line, "a message"))
