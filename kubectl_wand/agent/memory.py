"""The agent side of ``mem``: inject passengers/heapcensus.py, heapslices.py and heapwindow.py; a census answers at once, a
growth window keeps the connection: the agent pings every second, relays the window's progress, and asks it to
end early on ``stop``. A ``sync`` window (several pods read at once) is armed once its first census is taken:
the agent tells the CLI and sends the window its go when the CLI says go (main.Window), so every pod's window
is the same window.

The window's own thread in the target stops tracemalloc on every ending (its time up, ``{"op": "end"}``, the
connection closed, five seconds without a ping): so the agent killed, the CLI killed, kubectl's connection lost
or the pod gone all end it within seconds (see the passenger's docstring).
"""
from __future__ import annotations

import time

from . import protocol
from .session import AgentError, Injection
from .link import EOF, PING_EVERY, Link, exited

REPORT_TIMEOUT = 120.0  # the final snapshot and census: seconds on a huge heap
STARTED = "pid:i frames:i app_tracing:b census_ms:n stride:i cost:n? duty:n slice:n? period:n? armed:b"
REPORT = protocol.RESULT_FIELDS + "mode:s reason:s seconds:n frames:i app_tracing:b stopped:b tracing_after:b " \
    "sites:a types:a walk:a heap:o memory:o sampling:o window:o"
DEFAULT_PAUSE = 0.5
DEFAULT_FRAMES = 3


def mem_request(request: dict) -> dict:
    """The request the passenger gets, checked here so bad input is one clear line before anything is
    injected."""
    duration = request.get("duration")
    if duration is not None and (not isinstance(duration, (int, float)) or not 0 < duration <= 7 * 24 * 3600):
        raise AgentError("usage", "--duration must be a positive number of seconds")
    pause = request.get("max_pause", DEFAULT_PAUSE)
    if not isinstance(pause, (int, float)) or not 0 < pause <= 60:
        raise AgentError("usage", "--max-pause must be a number of seconds > 0 and at most 60")
    frames = request.get("frames", DEFAULT_FRAMES)
    if not isinstance(frames, int) or not 1 <= frames <= 100:
        raise AgentError("usage", "--frames must be a whole number from 1 to 100")
    top = request.get("top", 20)
    if not isinstance(top, int) or not 1 <= top <= 200:
        raise AgentError("usage", "--top must be a whole number from 1 to 200")
    return {"op": "mem", "duration": duration, "max_pause": float(pause), "frames": frames, "top": top,
            "armed": bool(request.get("sync")) and duration is not None}


def mem(request: dict, emit=None, stop=None, window=None) -> dict:
    """A census, or a growth window; with ``window`` (a main.Window: a sync request) the window opens at the
    CLI's go."""
    pid = int(request["pid"])
    passenger = mem_request(request)
    # The census pauses the main thread up to --max-pause: the injection's deadline allows for it.
    injection = Injection(pid, float(request.get("timeout", 10.0)) + passenger["max_pause"] * 3)
    if not passenger["duration"]:
        return injection.run(passenger)
    return injection.run(passenger, stream=Window(pid, emit, stop, passenger["duration"],
                                                  window if passenger["armed"] else None))


class Window(Link):
    """Owns the connection to the window's thread: pings, progress events, ``end`` on stop, the go of a sync
    window, the report."""

    lines = None

    def __call__(self, conn, hello, lines=None):
        conn.settimeout(2.0)
        self.lines = lines or protocol.Lines(conn, "the target")
        try:
            return self.follow(conn, hello)
        except protocol.ProtocolError as exc:
            # Closing the connection (the caller does) stops the window's tracemalloc in the target.
            raise AgentError("protocol", "the memory window in process %d answered out of protocol: %s; it was "
                             "ended" % (self.pid, exc))

    def next_message(self, conn, deadline):
        """The window's next message, checked: ``{"started": {...}}`` or its report (a result); None when none
        came by ``deadline``; EOF when the connection ended. The report may be large (--top 200 sites of 100
        frames): up to LINE_MAX."""
        try:
            line = self.lines.line(protocol.LINE_MAX, deadline or 0.0, "a message", poll=True)
        except protocol.NoLine:
            return None
        if line is None:
            return EOF
        message = protocol.decode(line, "a message")
        if "status" in message:
            protocol.check_result(message, "the window's report")
            return protocol.check_fields(message, REPORT, "the window's report")
        if "started" in message:
            protocol.check_fields(message["started"], STARTED, "the window's start", required=("pid",))
            return message
        if "opened" in message:
            protocol.check_fields(message["opened"], "time:n", "the window's opening", required=("time",))
            return message
        raise protocol.ProtocolError("the window sent neither its start nor its report")

    def follow(self, conn, hello):
        first = self.next_message(conn, time.monotonic() + 30.0)
        if first is None or first is EOF or "started" not in first:
            if isinstance(first, dict) and first.get("status") == "error":
                raise AgentError(first.get("kind", "inject"), first.get("error", "the window did not start"))
            raise AgentError("inject", "the memory window in process %d did not start (%s)" % (
                self.pid, "no answer" if first is None or first is EOF else first))
        started = dict(first["started"], pid=self.pid)
        self.send_event({"started": started})
        if self.window is not None and started.get("armed"):
            # Every pod's first census is taken: the window opens at the CLI's go (or ends, if it stopped).
            self.armed(conn)
        begun = next_ping = time.monotonic()
        end = begun + self.duration
        while True:
            now = time.monotonic()
            if self.stop is not None and self.stop.is_set():
                self.send(conn, {"op": "end"})
                break
            if now >= end:
                break  # the target ends the window itself: wait for its report
            if now >= next_ping:
                self.send(conn, {"op": "ping"})
                self.send_event({"progress": {"seconds": round(now - begun, 1), "duration": self.duration}})
                next_ping = now + PING_EVERY
            message = self.next_message(conn, now + min(0.2, max(0.0, next_ping - now)))
            if message is EOF:
                raise AgentError("exited" if exited(self.pid) else "inject",
                                 "the memory window in process %d ended without a report" % self.pid)
            if message is not None and "opened" in message:
                self.send_event({"opened": message["opened"]})
            elif message is not None and "status" in message:
                return dict(message, hello=hello)
        deadline = time.monotonic() + REPORT_TIMEOUT
        while time.monotonic() < deadline:
            self.send(conn, {"op": "ping"})  # the report may take seconds: keep the heartbeat
            message = self.next_message(conn, time.monotonic() + PING_EVERY)
            if message is EOF:
                break
            if message is not None and "status" in message:
                return dict(message, hello=hello)
        raise AgentError("inject", "the memory window in process %d sent no report (tracemalloc is stopped "
                         "there by its own thread when the connection closes)" % self.pid)

