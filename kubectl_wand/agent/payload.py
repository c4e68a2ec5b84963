"""Runs inside the target process, on its main thread, started by ``sys.remote_exec``.

The agent writes this file's source, followed by one call line, into a private directory and injects it.
It runs in a fresh globals dict (no module is registered in the target), connects back to the agent's Unix
socket, says hello, receives one request (run code, start debugpy, or start a trace probe, whose own thread
then keeps the connection until the probe is removed), answers and leaves nothing behind.

If the agent is gone by the time it runs (an injection that timed out while the main thread was blocked), the
socket is gone too: it removes its own directory and returns without a word, so nothing is started and
nothing is printed into the app's logs.
"""
import io
import json
import os
import socket
import sys
import threading
import time


class WandDeadline(BaseException):
    """Raised into code that outlives its --timeout (BaseException, so `except Exception` won't eat it)."""


def wand_main(sock_path, private_dir, token):
    try:
        os.unlink(os.path.join(private_dir, "bootstrap.py"))  # already read; nothing to leave behind
    except OSError:
        pass
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.settimeout(5.0)
        conn.connect(sock_path)
    except OSError:
        conn.close()
        remove_tree(private_dir)  # the agent gave up on us: no output, no files
        return
    # Closed here, not by the garbage collector: a traceback kept by user code that raised holds this frame
    # (and an open socket, one per exec-py) until the next collection.
    channel = conn.makefile("rwb")
    try:
        send(channel, hello(token))
        request = json.loads(channel.readline() or b"{}")
        op = request.get("op")
        if op == "exec":
            result = run_code(request["code"], float(request.get("timeout", 10.0)),
                              int(request.get("max_output", 1 << 20)))
        elif op == "attach":
            result = start_debugpy(request)
        elif op == "trace":
            result = start_probe(request, conn)
            if result is None:
                conn = None  # the probe's thread owns the connection now and closes it when the probe is removed
                return
        elif op == "noop":
            return
        else:
            result = {"status": "error", "error": "unknown request %r" % (op,)}
        send(channel, result)
    except Exception:
        pass  # the agent went away mid-way: keep the app unharmed and quiet
    finally:
        channel.close()  # never closes the socket by itself: the probe may own it
        if conn is not None:
            conn.close()


def start_probe(request, conn):
    """Run the probe's sources (agent/codefinder.py, agent/probe.py, sent in the request) in one fresh
    namespace and start it: None once its thread owns ``conn``, else the error to send."""
    namespace = {"__name__": "kubectl_wand_probe"}
    try:
        for name, source in request["sources"]:
            exec(compile(source, "<kubectl-wand %s>" % name, "exec"), namespace)
        return namespace["start"](request, conn)
    except Exception as exc:
        return {"status": "error", "kind": "trace", "error": "the probe failed to start: %s: %s" % (
            type(exc).__name__, exc)}


def send(channel, obj):
    channel.write(json.dumps(obj).encode() + b"\n")
    channel.flush()


def remove_tree(path):
    try:
        for name in os.listdir(path):
            os.unlink(os.path.join(path, name))
        os.rmdir(path)
    except OSError:
        pass


def hello(token):
    info = {"token": token, "pid": os.getpid(), "python": sys.version.split()[0],
            "executable": sys.executable, "cwd": os.getcwd(), "main_module": main_file()}
    try:
        import importlib.util
        spec = importlib.util.find_spec("debugpy")
        info["debugpy"] = os.path.dirname(spec.origin) if spec and spec.origin else None
    except Exception:
        info["debugpy"] = None
    info["server"] = existing_server()
    return info


def main_file():
    main = sys.modules.get("__main__")
    return getattr(main, "__file__", None)


def existing_server():
    debugpy = sys.modules.get("debugpy")
    if debugpy is None:
        return None
    record = getattr(debugpy, "_kubectl_wand_server", None)
    if record:
        return dict(record, started_by="kubectl-wand")
    try:
        from debugpy.server import api
        if api.listen.called:
            return {"started_by": "another tool", "host": None, "port": None}
    except Exception:
        pass
    return None


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


def run_code(source, timeout, max_output=1 << 20):
    import ast
    import builtins
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
    namespace = dict(getattr(sys.modules.get("__main__"), "__dict__", {}))
    namespace.update(__name__="__wand__", __builtins__=builtins)
    namespace.pop("__file__", None)

    def tracer(frame, event, arg):
        # A deadline for Python code that never returns; it cannot interrupt a blocking C call.
        if time.monotonic() > deadline:
            raise WandDeadline()
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
        lines = traceback.format_exception(type(exc), exc, tb)
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


def safe_repr(value, limit=1 << 20):
    """(repr cut to ``limit`` characters (0: no limit), whether it was cut)."""
    try:
        text = repr(value)
    except BaseException as exc:
        text = "<repr failed: %s: %s>" % (type(exc).__name__, exc)
    if not limit or len(text) <= limit:
        return text, False
    return text[:limit], True


def start_debugpy(request):
    shipped = request.get("debugpy_path")
    if shipped and not os.path.exists(os.path.join(shipped, ".complete")):
        return {"status": "error", "kind": "debugpy", "error": "the shipped debugpy is incomplete; nothing "
                "was imported"}
    modules, path, bytecode = set(sys.modules), list(sys.path), sys.dont_write_bytecode
    if shipped:
        sys.path.insert(0, shipped)
        sys.dont_write_bytecode = True  # no __pycache__ in the private directory: less to write and remove
    # pydevd warns about frozen modules on the app's stderr when it loads; the app's logs are not ours to
    # write into. Set its switch only while it loads, so the app's environment ends up as it was.
    saved = os.environ.get("PYDEVD_DISABLE_FILE_VALIDATION")
    os.environ["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"
    try:
        import debugpy
        import debugpy.server.api  # noqa: F401  (loads pydevd while its switch is set)
        if shipped:
            preload_debugpy()  # everything it could load lazily, while its files are still there
            if not os.path.exists(os.path.join(shipped, ".complete")):
                raise ImportError("the shipped files were removed while they loaded")
    except BaseException as exc:
        # All or nothing: a half-imported debugpy would stay in sys.modules and fail every later attach.
        forget_modules(modules, shipped)
        sys.path[:] = path
        if not isinstance(exc, Exception):
            raise
        return {"status": "error", "kind": "debugpy", "error": "cannot import debugpy: %s" % exc}
    finally:
        sys.dont_write_bytecode = bytecode
        if shipped:
            if shipped in sys.path:
                sys.path.remove(shipped)
            for key in [k for k in sys.path_importer_cache if k.startswith(shipped)]:
                del sys.path_importer_cache[key]
        if saved is None:
            os.environ.pop("PYDEVD_DISABLE_FILE_VALIDATION", None)
        else:
            os.environ["PYDEVD_DISABLE_FILE_VALIDATION"] = saved
    current = existing_server()
    if current:
        return dict(current, status="already")
    host, port = request["host"], int(request["port"])
    mode = "in-process"
    try:
        try:
            # pydevd itself serves DAP: no adapter process to spawn (faster, nothing outlives the app, works
            # in embedded interpreters), and it survives a client that vanishes without a DAP disconnect (a
            # dead port-forward), which leaves debugpy 1.8's separate adapter stuck.
            bound_host, bound_port = debugpy.listen((host, port), in_process_debug_adapter=True)
        except TypeError:  # debugpy older than 1.8.1: the separate adapter is the only way
            mode = "adapter"
            if not os.path.basename(sys.executable or "").startswith("python"):
                real = os.path.realpath("/proc/self/exe")  # embedded interpreters: the adapter needs python
                if os.path.basename(real).startswith("python"):
                    debugpy.configure(python=real)
            bound_host, bound_port = debugpy.listen((host, port))
    except Exception as exc:
        message = str(exc)
        kind = "port" if "in use" in message or "Errno 98" in message else "debugpy"
        return {"status": "error", "kind": kind, "error": message}
    record = {"host": bound_host, "port": bound_port, "debugpy": getattr(debugpy, "__version__", "?"),
              "source": "shipped" if shipped else "installed", "since": time.time(), "mode": mode}
    debugpy._kubectl_wand_server = record
    return dict(record, status="listening")


def forget_modules(before, shipped):
    """Drop the modules a failed debugpy import added: debugpy's own, and any loaded from the shipped copy."""
    for name in set(sys.modules) - before:
        module = sys.modules.get(name)
        try:  # a namespace package (pydevd has some) has no __file__, only __path__
            places = [getattr(module, "__file__", None) or ""] + list(getattr(module, "__path__", None) or [])
        except Exception:
            places = []
        if name == "debugpy" or name.startswith("debugpy.") or any(
                "/debugpy/" in p or (shipped and p.startswith(shipped + "/")) for p in places):
            del sys.modules[name]


def preload_debugpy():
    """Import the debugger modules it would otherwise load lazily, so its shipped files can be removed."""
    import importlib
    import pkgutil
    try:
        import _pydevd_bundle
    except Exception:
        return
    for mod in pkgutil.iter_modules(_pydevd_bundle.__path__, "_pydevd_bundle."):
        if "cython" in mod.name or "ipython" in mod.name or "jupyter" in mod.name:
            continue
        try:
            importlib.import_module(mod.name)
        except Exception:
            pass
