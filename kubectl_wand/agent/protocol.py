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
"""
from __future__ import annotations

try:
    # CPython's C encoder and scanner: the very ones json.dumps and json.loads run, without importing json, whose
    # import pulls in re (with enum, functools, collections): measured 9 ms of the ~40 ms an agent spends
    # starting in a pod (3.14, -S). Elsewhere (no _json, or another signature) dumps/loads use json itself.
    from _json import encode_basestring_ascii as _quote, make_encoder as _make_encoder, make_scanner as _make_scanner
except ImportError:
    _make_encoder = _make_scanner = None

VERSION = 1

# -- message kinds on the CLI <-> agent pipe (the single key that names a line) -----------------------------
HELLO, REQUEST, NEED, BLOB, EVENT, RESULT, STOP = "hello", "request", "need", "blob", "event", "result", "stop"
GO = "go"  # the CLI's consent to a held request (sent before the pod was read from the API)

# -- operations -------------------------------------------------------------------------------------------
OPS = ("list", "watch", "exec", "attach", "check", "stack", "profile", "trace", "mem")

# -- result statuses --------------------------------------------------------------------------------------
OK = "ok"                # done
ERROR = "error"          # failed before or while running: see ``kind`` and ``error``
PENDING = "pending"      # injected, but the main thread never reached a safe point in time
RUNNING = "running"      # the code started but was still running (blocked in C) at the deadline
RAISED = "raised"        # exec: the user's code raised
TIMEOUT = "timeout"      # exec: Python code outlived --timeout and was stopped
LISTENING = "listening"  # attach: a new debug server answers DAP
ALREADY = "already"      # attach: a server kubectl-wand started earlier answers DAP
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
    "busy", "port", "foreign",                           # someone else holds what we need
    "environment", "runtime", "inject", "debugpy",       # the machine or the container is in the way
    "location", "trace",                                 # trace: FILE:LINE refused; the probe failed
    "protocol",                                          # a message we cannot understand
)


class ProtocolError(ValueError):
    """A message that does not follow this protocol (another version, a truncated line, a bug)."""


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
    """json.loads(text): one JSON value, with nothing but whitespace around it (ValueError otherwise)."""
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8")  # UnicodeDecodeError is a ValueError
    if _scan is None:
        import json
        return json.loads(text)
    start = len(text) - len(text.lstrip(_SPACE))
    try:
        value, end = _scan(text, start)
    except StopIteration as exc:
        raise ValueError("Expecting value: char %s" % exc.value)
    if text[end:].strip(_SPACE):
        raise ValueError("Extra data: char %d" % end)
    return value


def encode(message: dict) -> bytes:
    return dumps(message).encode() + b"\n"


def decode(line: bytes) -> dict:
    try:
        message = loads(line)
    except ValueError:
        raise ProtocolError("not JSON: %r" % line[:120])
    if not isinstance(message, dict):
        raise ProtocolError("not an object: %r" % line[:120])
    return message


# -- validation on receipt --------------------------------------------------------------------------------

def kind_of(message: dict) -> str:
    """Which of HELLO/NEED/EVENT/RESULT an agent's line is."""
    for kind in (RESULT, EVENT, NEED, HELLO):
        if kind in message:
            return kind
    raise ProtocolError("a line with none of hello/need/event/result: %r" % sorted(message))


def check_hello(message: dict) -> dict:
    facts = message.get(HELLO)
    if not isinstance(facts, dict):
        raise ProtocolError("bad hello")
    if facts.get("protocol") != VERSION:
        raise ProtocolError("protocol %r, expected %d (the agent and the CLI differ in version)" % (
            facts.get("protocol"), VERSION))
    return facts


def check_request(message: dict) -> dict:
    if message.get("v") not in (None, VERSION):
        raise ProtocolError("request of protocol %r, expected %d" % (message.get("v"), VERSION))
    if message.get("op") not in OPS:
        raise ProtocolError("unknown operation %r" % (message.get("op"),))
    return message


def check_result(message) -> dict:
    if not isinstance(message, dict) or message.get("status") not in STATUSES:
        raise ProtocolError("bad result: %r" % (message if not isinstance(message, dict) else message.get("status")))
    if message["status"] == ERROR and not isinstance(message.get("error"), str):
        raise ProtocolError("an error result without a message")
    return message
