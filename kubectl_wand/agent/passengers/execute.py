"""Runs INSIDE the target, on its main thread: ``exec-py``'s code, with its output captured.

Travels in the ``exec`` request (passengers/bootstrap.py runs it in a fresh namespace and calls ``run``).
The user's code sees the app's ``__main__`` names (a snapshot), writes to streams of its own (only in the
thread running it: the app's other threads keep its real streams), and is stopped when Python code outlives
``--timeout`` (a trace function; a blocking C call cannot be interrupted). Whatever it raises, SystemExit and
KeyboardInterrupt included, is reported, never raised into the app.
"""
import io
import sys
import threading
import time


class WandDeadline(BaseException):
    """Raised into code that outlives its --timeout (BaseException, so `except Exception` won't eat it)."""


def run(request, conn, signals):
    """The op's entry (see passengers/bootstrap.py): the result to send."""
    signals.user_code = True  # the app's signals interrupt the user's code, as they would the app's own
    try:
        return run_code(request["code"], float(request.get("timeout", 10.0)), int(request.get("max_output", 1 << 20)),
                        interrupted=hung_up(conn))
    finally:
        signals.user_code = False


HANGUP_EVERY = 0.2  # seconds between two looks at the connection while the user's code runs


def hung_up(conn):
    """A check for ``run_code``'s ``interrupted``: true once the agent's end of ``conn`` has closed (the CLI was
    interrupted or killed: nobody waits for the answer), looked at every HANGUP_EVERY seconds at most. Before,
    `while True: pass` ran on in the app's main thread until --timeout (up to a week) after the CLI was gone.
    Only while the descriptor is still the socket it was: the user's code may close it, and its number may then
    be a file of the app's."""
    import os
    import select
    import socket
    try:
        fd = conn.fileno()
        st = os.fstat(fd)
    except (OSError, ValueError):
        return None
    first = (st.st_dev, st.st_ino)
    state = {"next": time.monotonic() + HANGUP_EVERY, "gone": False}

    def check():
        now = time.monotonic()
        if state["gone"] or now < state["next"]:
            return state["gone"]
        state["next"] = now + HANGUP_EVERY
        try:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != first:
                return False
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            if poller.poll(0):
                state["gone"] = conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except (OSError, ValueError):
            return False
        return state["gone"]
    return check


class Capture:
    """What one thread wrote to one stream: its text, and the bytes written to ``.buffer``, together up to
    ``limit`` characters and bytes (0: no limit)."""

    def __init__(self, limit):
        self.text, self.binary, self.size, self.limit = [], [], 0, limit
        self.truncated = False

    def add(self, data):
        if self.limit:
            room = self.limit - self.size
            if len(data) > room:
                data, self.truncated = data[:max(room, 0)], True
        if data:
            (self.binary if isinstance(data, bytes) else self.text).append(data)
            self.size += len(data)

    def result(self):
        """(the text, base64 of the bytes or None when no bytes were written)."""
        if not self.binary:
            return "".join(self.text), None
        import base64
        return "".join(self.text), base64.b64encode(b"".join(self.binary)).decode("ascii")


class CapturedBytes(io.BufferedIOBase):
    """``sys.stdout.buffer`` of the capture: bytes go into the same ordered capture as the text."""

    def __init__(self, capture, name):
        super().__init__()
        self._capture, self.name, self.mode = capture, name, "wb"

    def writable(self):
        return True

    def write(self, data):
        if self.closed:
            raise ValueError("I/O operation on closed file.")
        data = bytes(memoryview(data))  # bytes-like only, as a real binary stream
        self._capture.add(data)
        return len(data)


class CapturedText(io.TextIOBase):
    """A complete text stream of its own for the thread running the user's code: ``close()`` closes only
    this capture, ``.buffer`` takes bytes, ``fileno()`` raises io.UnsupportedOperation, ``isatty()`` is
    False. Nothing of it reaches the app's own stream."""

    encoding, errors, line_buffering, write_through, mode = "utf-8", "strict", False, True, "w"

    def __init__(self, capture, name):
        super().__init__()
        self.name = name
        self.buffer = CapturedBytes(capture, name)
        self._capture = capture

    @property
    def closed(self):
        return self.buffer.closed

    def close(self):
        self.buffer.close()

    def writable(self):
        return True

    def write(self, text):
        if self.closed:
            raise ValueError("I/O operation on closed file.")
        if not isinstance(text, str):
            raise TypeError("write() argument must be str, not %s" % type(text).__name__)
        self._capture.add(text)
        return len(text)

    def reconfigure(self, **_ignored):
        """Accepted and ignored: the capture's text is sent back as text whatever the encoding."""

    def detach(self):
        raise io.UnsupportedOperation("detach")


class NullStream:
    """The app had no such stream (None): other threads' writes go nowhere, as they would have."""

    def write(self, data):
        return len(data)

    def flush(self):
        pass


class ThreadCapture:
    """Stands in for sys.stdout/sys.stderr while the user's code runs: in the thread running it, every
    attribute is the capture's (a stream of its own); in every other thread, the app's real stream's."""

    def __init__(self, original, owner, capture, name):
        object.__setattr__(self, "_wand_streams", (original, owner, CapturedText(capture, name)))

    def _wand_target(self):
        original, owner, mine = object.__getattribute__(self, "_wand_streams")
        if threading.get_ident() == owner:
            return mine
        return NullStream() if original is None else original

    def __getattr__(self, name):
        return getattr(self._wand_target(), name)

    def __setattr__(self, name, value):
        setattr(self._wand_target(), name, value)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._wand_target().close()

    def __iter__(self):
        return iter(self._wand_target())


def in_nested_bootstrap(frame):
    """Whether ``frame`` runs in another kubectl-wand injection, run by the main thread's eval breaker inside the
    user's code (between ``frame`` and the user's ``<wand>`` frames: a bootstrap's module code, which defines
    ``wand_main``, or ``wand_main`` itself). Stopping it there, when the CLI had gone while the user's code was
    blocked in C, made the next injection look refused ("took the injected script but did not run it")."""
    while frame is not None and frame.f_code.co_filename != "<wand>":
        code = frame.f_code
        if code.co_name == "wand_main" or code.co_name == "<module>" and "wand_main" in code.co_names:
            return True
        frame = frame.f_back
    return False


def run_code(source, timeout, max_output=1 << 20, namespace=None, interrupted=None):
    """``namespace``: the dict to run in (exec-py -it keeps one per session; default a fresh one);
    ``interrupted()``: when true, the code gets KeyboardInterrupt at its next line (Ctrl-C in exec-py -it)."""
    import ast
    import traceback
    started = time.monotonic()
    deadline = started + timeout
    result = {"status": "ok", "value": None, "traceback": None, "error": None}
    owner = threading.get_ident()
    captured = {"stdout": Capture(max_output), "stderr": Capture(max_output)}
    out = ThreadCapture(sys.stdout, owner, captured["stdout"], "<stdout>")
    err = ThreadCapture(sys.stderr, owner, captured["stderr"], "<stderr>")
    value_cut = False
    # The app's __main__ names are visible (a snapshot: assigning a name does not rebind the app's global;
    # `import __main__; __main__.x = 1` does, deliberately).
    if namespace is None:
        namespace = main_snapshot()

    def tracer(frame, event, arg):
        # A deadline for Python code that never returns; it cannot interrupt a blocking C call.
        stop = WandDeadline if time.monotonic() > deadline else None
        if stop is None and interrupted is not None and interrupted():
            stop = KeyboardInterrupt
        if stop is not None and not in_nested_bootstrap(frame):
            raise stop()
        return tracer

    saved = sys.stdout, sys.stderr, sys.gettrace()
    sys.stdout, sys.stderr = out, err
    try:
        tree = ast.parse(source, "<wand>")
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        body = compile(tree, "<wand>", "exec")
        tail = compile(last, "<wand>", "eval") if last is not None else None
        sys.settrace(tracer)
        try:
            exec(body, namespace)
            if tail is not None:
                value = eval(tail, namespace)
                if value is not None:
                    result["value"], value_cut = safe_repr(value, max_output)
        finally:
            sys.settrace(saved[2])
    except WandDeadline:
        result.update(status="timeout", error="code still running after %gs: stopped it" % timeout)
    except BaseException as exc:  # SystemExit and KeyboardInterrupt must not reach the app either
        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != "<wand>":
            tb = tb.tb_next  # drop our own frames: the user wants their code's traceback
        lines = [entry for entry in traceback.format_exception(type(exc), exc, tb)
                 if not entry.startswith('  File "<kubectl-wand ')]  # our tracer (an interrupt) is not theirs
        result.update(status="raised", traceback="".join(lines),
                      error=traceback.format_exception_only(type(exc), exc)[-1].strip())
        tb = exc.__traceback__ = None  # no frame cycle keeps the user's objects alive until the next GC
    finally:
        sys.stdout, sys.stderr = saved[0], saved[1]
    for name, capture in captured.items():
        result[name], raw = capture.result()
        if raw is not None:
            result[name + "_bytes"] = raw  # what the code wrote to .buffer: bytes, base64-encoded
    result["truncated"] = value_cut or any(c.truncated for c in captured.values())
    result["seconds"] = round(time.monotonic() - started, 4)
    return result


def main_snapshot():
    """A namespace that sees the app's __main__ names (a snapshot: assigning a name does not rebind the app's
    global; `import __main__; __main__.x = 1` does, deliberately)."""
    import builtins
    namespace = dict(getattr(sys.modules.get("__main__"), "__dict__", {}))
    namespace.update(__name__="__wand__", __builtins__=builtins)
    namespace.pop("__file__", None)
    return namespace


def safe_repr(value, limit=1 << 20):
    """(repr cut to ``limit`` characters (0: no limit), whether it was cut)."""
    try:
        text = repr(value)
    except BaseException as exc:
        text = "<repr failed: %s: %s>" % (type(exc).__name__, exc)
    if not limit or len(text) <= limit:
        return text, False
    return text[:limit], True
