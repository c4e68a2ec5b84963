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

# The codec and the line reader (jsonlines.py), named here too: this is where every peer finds the wire.
from .jsonlines import (LINE_WAIT, MAX_DEPTH, _JSON_NAMES, Lines, NoLine, ProtocolError,  # noqa: F401
                        decode, depth_over, dumps, encode, line_wait, loads, readable, size)

VERSION = 1

# -- limits on what a peer may send ---------------------------------------------------------------------------
LINE_MAX = 64 << 20   # any line on any hop (a profile of many processes; exec with --max-output 0)
SMALL_MAX = 1 << 20   # a hello, an attach result, one trace message (a --snapshot hit: ~30 KB)
# MAX_DEPTH (nesting) and LINE_WAIT (a line's last byte after its first) are jsonlines.py's


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
SERVER = "host:s? port:i? started_by:s since:n? debugpy:s? mode:s? source:s?"  # the record a target may forge
RESULT_FIELDS = "status:s kind:s error:s? pid:i? note:s? "
PENDING_FIELDS = "hello:o frames:a syscall:s? left_behind:s? stopped:b "  # added by the agent
OP_RESULTS = {  # agent -> CLI; exec's and attach's come from the payload first
    "exec": RESULT_FIELDS + PENDING_FIELDS + "stdout:s stderr:s value:s? traceback:s? truncated:b seconds:n "
                                             "stdout_bytes:s? stderr_bytes:s?",
    "attach": RESULT_FIELDS + PENDING_FIELDS + "host:s? port:i? answers:b started_by:s confirmed:s since:n? "
                                               "debugpy:s? mode:s? source:s?",
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
