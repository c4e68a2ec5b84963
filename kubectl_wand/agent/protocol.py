"""The one definition of what the CLI, the agent and the payload say to each other.

Three JSON-lines conversations share these names:
- CLI <-> agent (``kubectl exec -i`` pipes, or a call in-process for pid/N): the agent's first line is a
  ``hello`` with the protocol version; the CLI sends one ``request``; the agent may ask for a blob
  (``need`` -> ``blob``), may stream ``event`` lines, and ends with one ``result``. The CLI may send ``stop``
  (or close stdin) to end a streaming operation early. A request without a pid makes the agent choose the
  app process (event ``chosen``); a ``hold`` request then waits for the CLI's ``go`` before touching anything.
- agent <-> payload (a Unix socket; the payload runs inside the target): ``hello`` (with the token), then
  one request, then one result (or a stream of events for ``trace``).
- injector/sampler -> agent (a subprocess's stdout): one JSON object, or lines of events and a last result.

Every message is validated on receipt (``check_*``): a malformed or unknown message is a ProtocolError, never
a KeyError deep inside a verb. Standard library only; this module travels to pods with the agent.
The target itself may answer the payload's socket: every hop reads through ``Lines`` and ``decode``, within the
limits below (docs/security.md, "What a target may send"); a breach is kind ``protocol``, exit 6.
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

VERSION = 1

# -- limits on what a peer may send ---------------------------------------------------------------------------
MAX_DEPTH = 32        # nesting of objects/arrays (the deepest we send: 10, a task's awaited-by frames)
LINE_MAX = 64 << 20   # any line on any hop (a profile of many processes; exec with --max-output 0)
SMALL_MAX = 1 << 20   # a hello, an attach result, one trace message (a --snapshot hit: ~30 KB)
LINE_WAIT = 5.0       # a line's last byte must come this soon after its first (a drip is cut)


def line_wait(limit: int) -> float:
    """LINE_WAIT, longer for a long line through kubectl exec (at 8 MiB/s)."""
    return max(LINE_WAIT, limit / float(8 << 20))


def exec_result_max(max_output: int) -> int:
    """An exec result: stdout, stderr, value of ``max_output`` characters at worst 12 bytes each (a JSON
    escaped non-BMP character), base64 of bytes, a traceback; at most LINE_MAX (also for 0, no limit)."""
    if not max_output or max_output <= 0:
        return LINE_MAX
    return min(LINE_MAX, 3 * 12 * max_output + 2 * (4 * max_output // 3 + 4) + SMALL_MAX)

# -- message kinds on the CLI <-> agent pipe (the single key that names a line) -----------------------------
HELLO, REQUEST, NEED, BLOB, EVENT, RESULT, STOP = "hello", "request", "need", "blob", "event", "result", "stop"
GO = "go"  # the CLI's consent to a held request (sent before the pod was read from the API)

# -- operations -------------------------------------------------------------------------------------------
OPS = ("list", "watch", "exec", "attach", "check", "stack", "profile", "trace", "mem", "pdb", "repl")
# agent -> payload: the one request an injection carries ("noop": the agent decided without the payload)
PAYLOAD_OPS = ("exec", "attach", "trace", "mem", "pdb", "repl", "noop")

# -- result statuses --------------------------------------------------------------------------------------
OK = "ok"                # done
ERROR = "error"          # failed before or while running: see ``kind`` and ``error``
PENDING = "pending"      # injected, but the main thread never reached a safe point in time
RUNNING = "running"      # the code started but was still running (blocked in C) at the deadline
RAISED = "raised"        # exec: the user's code raised
TIMEOUT = "timeout"      # exec: Python code outlived --timeout and was stopped
LISTENING = "listening"  # attach: a new debug server listens (``confirmed`` says how that was checked)
ALREADY = "already"      # attach: a server kubectl-wand started earlier still listens
EXITED = "exited"        # watch: the process exited and nothing replaced it
RESTARTED = "restarted"  # watch: its parent started a replacement worker
CANCELLED = "cancelled"  # watch: the CLI went away first
STATUSES = (OK, ERROR, PENDING, RUNNING, RAISED, TIMEOUT, LISTENING, ALREADY, EXITED, RESTARTED, CANCELLED)
# Injections that did not finish: the target may still run (part of) the request later.
UNFINISHED = (PENDING, RUNNING)

# -- error kinds (``kind`` of an ERROR result); kubectl_wand.errors maps each to an exit code -----------------
KINDS = (
    "usage", "syntax",                                   # the request itself is wrong
    "not-found", "not-python", "exited",                 # nothing (left) to act on
    "version", "disabled", "permission", "stopped",      # the target cannot be injected as it is
    "refused",                                           # the target refused the script (audit hook)
    "busy", "port", "foreign",                           # someone else holds what we need ("port": "reason"
                                                         # may say who, in words for the CLI's line)
    "environment", "runtime", "inject", "debugpy",       # the machine or the container is in the way
    "location", "trace",                                 # trace: FILE:LINE refused; the probe failed
    "protocol",                                          # a message we cannot understand
)


class ProtocolError(ValueError):
    """A message that does not follow this protocol (another version, a truncated line, a bug, a hostile peer)."""


class NoLine(ProtocolError):
    """No line began by its deadline (the peer may be busy)."""


class AgentError(Exception):
    """A failure with a kind the CLI maps to an exit code, and a message that says the fix."""

    def __init__(self, kind: str, message: str, **extra):
        super().__init__(message)
        self.kind, self.message, self.extra = kind, message, extra

    def to_json(self):
        return error(self.kind, self.message, **self.extra)


# -- constructors -----------------------------------------------------------------------------------------

def request(op: str, **fields) -> dict:
    if op not in OPS:
        raise ProtocolError("unknown operation %r" % (op,))
    return dict({k: v for k, v in fields.items() if v is not None}, op=op, v=VERSION)


def payload_request(op: str, **fields) -> dict:
    """The agent's request to the payload (no version: both come from one agent)."""
    if op not in PAYLOAD_OPS:
        raise ProtocolError("unknown payload operation %r" % (op,))
    return dict(fields, op=op)


def result(status: str, **fields) -> dict:
    return dict(fields, status=status)


def error(kind: str, message: str, **extra) -> dict:
    return dict(extra, status=ERROR, kind=kind, error=message)


def hello(**facts) -> dict:
    return {HELLO: dict(facts, protocol=VERSION)}


def check_row(name: str, status: str, detail: str, fix: str = "") -> dict:
    """One row of a ``check`` result (status ok, warn or fail); the CLI adds its own rows about the pod."""
    return {"check": name, "status": status, "detail": detail, "fix": fix}


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
    return bool(poller.poll(int(timeout * 1000) + 1 if timeout > 0 else 0))  # in ms, rounded up


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


# -- validation on receipt --------------------------------------------------------------------------------

def kind_of(message: dict) -> str:
    """Which of HELLO/NEED/EVENT/RESULT an agent's line is."""
    for kind in (RESULT, EVENT, NEED, HELLO):
        if kind in message:
            return kind
    raise ProtocolError("a line with none of hello/need/event/result: %s" % ascii(sorted(message)[:5])[:200])


def check_hello(message: dict) -> dict:
    facts = message.get(HELLO)
    if not isinstance(facts, dict):
        raise ProtocolError("the hello is a JSON %s, not an object" % _JSON_NAMES.get(type(facts), "value"))
    if facts.get("protocol") != VERSION:
        raise ProtocolError("protocol %s, expected %d (the agent and the CLI differ in version)" % (
            ascii(facts.get("protocol"))[:40], VERSION))
    return facts


def check_request(message: dict) -> dict:
    if message.get("v") not in (None, VERSION):
        raise ProtocolError("request of protocol %r, expected %d" % (message.get("v"), VERSION))
    if message.get("op") not in OPS:
        raise ProtocolError("unknown operation %r" % (message.get("op"),))
    return message


def check_result(message, what="the result") -> dict:
    if not isinstance(message, dict):
        raise ProtocolError("%s is a JSON %s, not an object" % (what, _JSON_NAMES.get(type(message), "value")))
    status = message.get("status")
    if not isinstance(status, str) or status not in STATUSES:
        named = ascii(status[:40]) if isinstance(status, str) else _JSON_NAMES.get(type(status), "value")
        raise ProtocolError("%s has an unknown status %s" % (what, named))
    if status == ERROR and not isinstance(message.get("error"), str):
        raise ProtocolError("%s: an error without a message" % what)
    check_fields(message, RESULT_FIELDS, what)
    return message


# -- fields and their types: "NAME:T", T s(tring) i(nteger) n(umber) b(oolean) o(bject) a(rray), "?": or null.
# Fields not named pass (a newer peer may add some).
PAYLOAD_HELLO = "token:s pid:i python:s executable:s? cwd:s? main_module:s? debugpy:s? server:o?"
SERVER = "host:s? port:i? started_by:s"
RESULT_FIELDS = "status:s kind:s error:s? pid:i? note:s? "
PENDING_FIELDS = "hello:o frames:a syscall:s? left_behind:s? stopped:b "  # added by the agent
OP_RESULTS = {  # agent -> CLI; exec's and attach's come from the payload first
    "exec": RESULT_FIELDS + PENDING_FIELDS + "stdout:s stderr:s value:s? traceback:s? truncated:b seconds:n "
                                             "stdout_bytes:s? stderr_bytes:s?",
    "attach": RESULT_FIELDS + PENDING_FIELDS + "host:s? port:i? answers:b started_by:s confirmed:s",
    "list": RESULT_FIELDS + "processes:a", "stack": RESULT_FIELDS + "processes:a",
    "profile": RESULT_FIELDS + "processes:a", "check": RESULT_FIELDS + "rows:a",
    "watch": RESULT_FIELDS + "old:i? why:s",
    "trace": RESULT_FIELDS + "file:s line:i hits:i dropped:i errors:a reason:s? removed:b tool_ids:a probe_reason:s? "
                             "problems:a warning:s snapshot:o window:o"}
# the statuses a payload may answer with (pending/running are the agent's own)
PAYLOAD_STATUSES = {"exec": (OK, RAISED, TIMEOUT, ERROR), "attach": (LISTENING, ALREADY, ERROR)}
TRACE_MESSAGES = {  # probe -> agent
    "installed": "tool_id:i file:s line:i functions:a pid:i?",
    "hit": "time:n thread:s file:s line:i function:s values:a dropped:i locals:o stack:a pid:i?",
    "error": "file:s line:i expr:s? message:s", "covered": "file:s line:i functions:a note:s",
    "removed": "reason:s tool_ids:a freed:b hits:i dropped:i problems:a internal_errors:i",
    "opened": "time:n"}
TRACE_REQUIRED = {"installed": ("tool_id", "file", "line"), "hit": ("time", "thread", "file", "line", "values")}
INJECTOR_ANSWER = "ok:b kind:s error:s line:i? offset:i? text:s? threads:a"
FRAME = "file:s? line:i? function:s?"
_TYPES = {"s": (str,), "i": (int,), "n": (int, float), "b": (bool,), "o": (dict,), "a": (list,)}
_JSON_NAMES = {str: "string", int: "integer", float: "number", bool: "boolean", dict: "object", list: "array",
               type(None): "null"}
_SPECS = {}
_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def fields(spec: str) -> dict:
    """{name: accepted types} of a spec string (cached)."""
    if spec not in _SPECS:
        _SPECS[spec] = {name: _TYPES[t[0]] + ((type(None),) if t.endswith("?") else ())
                        for name, _, t in (item.partition(":") for item in spec.split())}
    return _SPECS[spec]


def check_fields(message, spec: str, what: str, required=()) -> dict:
    """``message``: an object, ``spec``'s fields of their types, ``required`` present; else ProtocolError."""
    if not isinstance(message, dict):
        raise ProtocolError("%s is a JSON %s, not an object" % (what, _JSON_NAMES.get(type(message), "value")))
    for name in required:
        if name not in message:
            raise ProtocolError("%s lacks %r" % (what, name))
    known = fields(spec)
    for name, value in message.items():
        types = known.get(name)
        if types is not None and not isinstance(value, types):
            raise ProtocolError("%s: %r is a JSON %s, not %s" % (what, name, _JSON_NAMES.get(
                type(value), "value"), " or ".join(_JSON_NAMES[t] for t in types)))
    return message


def check_base64(text, what: str):
    """Base64 (the payload's bytes written to .buffer), checked without importing base64."""
    data = text.rstrip("=") if text is not None else ""
    if text is not None and (len(text) % 4 or len(text) - len(data) > 2 or len(data) % 4 == 1 or data.strip(_B64)):
        raise ProtocolError("%s is not base64" % what)


def check_payload_hello(message: dict, what="the payload's hello") -> dict:
    check_fields(message, PAYLOAD_HELLO, what, required=("token",))
    if message.get("server") is not None:
        check_fields(message["server"], SERVER, what + "'s server")
    return message


def check_op_result(op: str, message, what="the result") -> dict:
    """check_result and the types of ``op``'s fields."""
    check_result(message, what)
    check_fields(message, OP_RESULTS.get(op, RESULT_FIELDS), what)
    if op == "exec":
        check_base64(message.get("stdout_bytes"), what + "'s stdout_bytes")
        check_base64(message.get("stderr_bytes"), what + "'s stderr_bytes")
    return message


def check_trace_message(message: dict, what="the probe's message") -> dict:
    """A line of trace's stream: {KIND: {...}} (TRACE_MESSAGES), or an error result."""
    if "status" in message:
        return check_result(message, what)
    for kind, spec in TRACE_MESSAGES.items():
        if kind in message:
            body = check_fields(message[kind], spec, "%s (%s)" % (what, kind), required=TRACE_REQUIRED.get(kind, ()))
            for value in body.get("values") or () if kind == "hit" else ():
                check_fields(value, "expr:s repr:s error:s", what + "'s value", required=("expr",))
            for frame in body.get("stack") or () if kind == "hit" else ():
                check_fields(frame, FRAME, what + "'s frame")
            if kind == "hit" and not all(type(v) is str for v in (body.get("locals") or {}).values()):
                raise ProtocolError("%s: a local that is not a string" % what)
            return message
    raise ProtocolError("%s has none of %s" % (what, "/".join(TRACE_MESSAGES)))


def check_injector(message: dict, what="the injector's answer") -> dict:
    check_fields(message, INJECTOR_ANSWER, what, required=("ok",))
    for thread in message.get("threads") or []:
        check_fields(thread, "thread_id:i frames:a", what + "'s thread", required=("thread_id", "frames"))
        for frame in thread["frames"]:
            check_fields(frame, FRAME, what + "'s frame")
    return message


def check_payload_result(op: str, message, what="the payload's result") -> dict:
    """An exec's or attach's answer from the target: check_op_result, with a payload's status."""
    check_op_result(op, message, what)
    if message["status"] not in PAYLOAD_STATUSES.get(op, STATUSES):
        raise ProtocolError("%s has status %r, which %s never answers" % (what, message["status"], op))
    return message
