"""JSON lines, as every hop of agent/protocol.py carries them: the codec and a bounded reader of lines.

Split from protocol.py (which says what the messages are and checks them, and re-exports these names): the
JSON codec without importing json (CPython's own C encoder and scanner), a message decoded and bounded in depth,
and ``Lines``, which reads lines from a socket or a pipe within limits of length and time. Standard library only;
this module travels to pods with the agent.
"""
from __future__ import annotations

import os
import select
import time

try:
    # CPython's C encoder and scanner: the very ones json.dumps and json.loads run, without importing json, whose
    # import pulls in re (with enum, functools, collections): measured 9 ms of the ~40 ms an agent spends
    # starting in a pod (3.14, -S). Elsewhere (no _json, or another signature) dumps/loads use json itself.
    from _json import encode_basestring_ascii as _quote, make_encoder as _make_encoder, make_scanner as _make_scanner
except ImportError:
    _make_encoder = _make_scanner = None

MAX_DEPTH = 32        # nesting of objects/arrays (the deepest we send: 10, a task's awaited-by frames)
LINE_WAIT = 5.0       # a line's last byte must come this soon after its first (a drip is cut)
_JSON_NAMES = {str: "string", int: "integer", float: "number", bool: "boolean", dict: "object", list: "array",
               type(None): "null"}


def line_wait(limit: int) -> float:
    """LINE_WAIT, longer for a long line through kubectl exec (at 8 MiB/s)."""
    return max(LINE_WAIT, limit / float(8 << 20))



class ProtocolError(ValueError):
    """A message that does not follow this protocol (another version, a truncated line, a bug, a hostile peer)."""


class NoLine(ProtocolError):
    """No line began by its deadline (the peer may be busy)."""



class _Decoding:
    """What _json.make_scanner reads from its decoder: json.loads' defaults."""
    strict = True
    object_hook = object_pairs_hook = None
    parse_float, parse_int = float, int
    parse_constant = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}.__getitem__


def _unserializable(obj):
    raise TypeError("Object of type %s is not JSON serializable" % type(obj).__name__)


try:
    # json.dumps' defaults: ensure_ascii, ", " and ": ", NaN allowed, no sorting, circular references refused
    _encode = _make_encoder({}, _unserializable, _quote, None, ": ", ", ", False, False, True)
    _scan = _make_scanner(_Decoding)
except (TypeError, AttributeError):
    _encode = _scan = None
_SPACE = " \t\n\r"  # JSON's whitespace, and all of it


def dumps(obj) -> str:
    """json.dumps(obj)."""
    if _encode is None:
        import json
        return json.dumps(obj)
    if isinstance(obj, str):
        return _quote(obj)
    return "".join(_encode(obj, 0))


def loads(text):
    """json.loads(text): one JSON value, with nothing but whitespace around it (ValueError otherwise, for too
    deep a nesting too)."""
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8")  # UnicodeDecodeError is a ValueError
    try:
        if _scan is None:
            import json
            return json.loads(text)
        start = len(text) - len(text.lstrip(_SPACE))
        try:
            value, end = _scan(text, start)
        except StopIteration as exc:
            raise ValueError("Expecting value: char %s" % exc.value)
    except RecursionError:
        raise ValueError("nested deeper than %d" % MAX_DEPTH)
    if text[end:].strip(_SPACE):
        raise ValueError("Extra data: char %d" % end)
    return value


def depth_over(value, limit: int = MAX_DEPTH) -> bool:
    """Whether ``value`` nests deeper than ``limit``: by level, each container's values typed at C speed.
    Measured (bench/bench_wire.py): ~1 us on an exec result, half of parsing on a 3.4 MB profile."""
    level, depth = [value], 1
    while level:
        if depth > limit:
            return True
        deeper = []
        for item in level:
            values = item.values() if type(item) is dict else item
            kinds = set(map(type, values))
            if dict in kinds or list in kinds:
                deeper.extend([v for v in values if type(v) is dict or type(v) is list])
        level, depth = deeper, depth + 1
    return False


def encode(message: dict) -> bytes:
    return dumps(message).encode() + b"\n"


def decode(line: bytes, what: str = "line") -> dict:
    """One message: a JSON object nested at most MAX_DEPTH deep, or ProtocolError."""
    try:
        message = loads(line)
    except ValueError as exc:
        raise ProtocolError("%s is not JSON (%s): %r" % (what, exc, bytes(line[:80])))
    if not isinstance(message, dict):
        raise ProtocolError("%s is a JSON %s, not an object" % (what, _JSON_NAMES.get(type(message), "value")))
    if depth_over(message):
        raise ProtocolError("%s is nested deeper than %d" % (what, MAX_DEPTH))
    return message


def readable(fd: int, timeout: float) -> bool:
    """True when ``fd`` has bytes (or its end) to read within ``timeout`` seconds. poll, not select: select()
    refuses a descriptor numbered 1024 or more (FD_SETSIZE), and a CLI that reaches hundreds of pods at once holds
    that many pipes (measured: `stack` over 300 pods failed with "filedescriptor out of range in select()")."""
    if not hasattr(select, "poll"):  # not on Linux: only the CLI side, which holds few descriptors there
        return bool(select.select([fd], [], [], max(0.0, timeout))[0])
    poller = select.poll()
    poller.register(fd, select.POLLIN)  # its end (POLLHUP) and errors are reported too
    # In steps of an hour at most: poll takes its timeout in milliseconds as a C int, and a wait "for good"
    # (a watch's deadline is now + 10**9 s) raised OverflowError, which ended the watch's thread silently.
    while True:
        step = min(timeout, 3600.0)
        if poller.poll(int(step * 1000) + 1 if step > 0 else 0):  # in ms, rounded up
            return True
        timeout -= step
        if timeout <= 0:
            return False


class Lines:
    """Lines from a socket or a pipe, bounded in length and time. ``line(limit, until)``: the next line, None at
    EOF; over ``limit``: ProtocolError at once (never read whole); nothing by ``until``: NoLine; started but
    unfinished by ``until`` or ``line_wait`` after its first byte: ProtocolError. ``poll``: at ``until`` a
    partial line waits for the next call."""

    def __init__(self, source, where: str = "the peer"):
        self.fd = source if isinstance(source, int) else source.fileno()
        self.where = where
        self.buf = bytearray()
        self.scanned = 0        # bytes of buf without a newline
        self.started = None     # when the partial line's first byte came
        self.eof = False

    def line(self, limit: int, until: float, what: str = "a line", line_wait: float = LINE_WAIT,
             poll: bool = False):
        while True:
            end = self.buf.find(b"\n", self.scanned)
            if end >= 0:
                if end > limit:
                    break
                line = bytes(self.buf[:end])
                del self.buf[:end + 1]
                self.scanned = 0
                self.started = time.monotonic() if self.buf else None
                return line
            self.scanned = len(self.buf)
            if self.scanned > limit:
                break
            if self.eof:
                line, self.buf, self.scanned = bytes(self.buf), bytearray(), 0
                return line or None  # a last line without a newline: decode judges it
            now = time.monotonic()
            late = self.started is not None and now >= self.started + line_wait
            stop = until if self.started is None else min(until, self.started + line_wait)
            if late or not readable(self.fd, stop - now):
                if not late and (self.started is None or poll and time.monotonic() < self.started + line_wait):
                    raise NoLine("no %s from %s in time" % (what, self.where))
                raise ProtocolError("%s from %s came too slowly: %d bytes in %.1fs, no end of line" % (
                    what, self.where, len(self.buf), time.monotonic() - self.started))
            try:
                chunk = os.read(self.fd, min(1 << 16, limit + 1 - len(self.buf)))
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                chunk = b""  # reset: as EOF
            if not chunk:
                self.eof = True
            elif self.started is None:
                self.started = time.monotonic()
            self.buf += chunk
        raise ProtocolError("%s from %s is over %s (never read whole)" % (what, self.where, size(limit)))


def size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return "%g %s" % (round(n / (1 << shift), 1), unit)
    return "%d bytes" % n
