"""Runs inside the target process, on its main thread, started by ``sys.remote_exec``.

The agent writes this file's source, followed by one call line, into a private directory and injects it.
It runs in a fresh globals dict (no module is registered in the target), connects back to the agent's Unix
socket, says hello, receives one request (run code, start debugpy, or start a trace probe, whose own thread
then keeps the connection until the probe is removed), answers and leaves nothing behind.

Nothing it does may raise out of it: CPython would print whatever escapes as "Error executing debugger script"
into the app's stderr. So every path ends silently, including a connection that fails half-way (the agent was
interrupted or killed), a descriptor the user's code closed (it is then neither written nor closed: its number
may be a file of the app's by now), and the app's own signals:

- the app's Python signal handlers still run when their signal comes (the payload wraps them while it runs);
  an exception one of them raises (KeyboardInterrupt from SIGINT's default handler, SystemExit from a handler
  that exits) is the app's, not ours: it interrupts the user's code when that is what runs (as it would the
  app's code), never the payload's own steps, and once the payload has returned it is raised again, the same
  exception, in the app's own code (a one-shot handler, tripped by a short-lived thread once the main thread
  has left the payload). A signal whose handler raises while CPython compiles this file, before its first line
  runs, is reported by CPython itself: that window is the compile time of this file.

If the agent is gone (an injection that timed out while the main thread was blocked, an agent that was
killed), the socket's peer is gone too: it removes its own directory and returns without a word, so nothing is
left and nothing is printed into the app's logs.
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
    """Never raises (see the module docstring)."""
    signals = None
    try:
        signals = AppSignals()
        serve(sock_path, private_dir, token, signals)
    except BaseException:
        pass
    finally:
        if signals is not None:
            signals.release()


def serve(sock_path, private_dir, token, signals):
    try:
        os.unlink(os.path.join(private_dir, "bootstrap.py"))  # already read; nothing to leave behind
    except OSError:
        pass
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.settimeout(5.0)
        conn.connect(sock_path)
        channel = Channel(conn)
    except BaseException:
        conn.close()
        remove_tree(private_dir)  # the agent gave up on us: no output, no files
        return
    owned = False  # whether the probe's thread owns the connection now
    try:
        channel.send(hello(token))
        request = channel.receive()
        op = request.get("op")
        if op == "exec":
            signals.user_code = True  # the app's signals interrupt the user's code, as they would the app's
            try:
                result = run_code(request["code"], float(request.get("timeout", 10.0)),
                                  int(request.get("max_output", 1 << 20)))
            finally:
                signals.user_code = False
        elif op == "attach":
            result = start_debugpy(request)
        elif op == "trace":
            result = start_probe(request, conn)
            owned = result is None  # the probe's thread closes it when the probe is removed
            if owned:
                return
        elif op == "noop":
            return
        else:
            result = {"status": "error", "error": "unknown request %r" % (op,)}
        channel.send(result)
    except (ConnectionError, EOFError):
        remove_tree(private_dir)  # the agent went away mid-way (interrupted or killed): nothing stays behind
    except BaseException:
        pass  # the app stays unharmed and quiet whatever happened
    finally:
        if not owned:
            channel.close()


class Channel:
    """The connection to the agent, written and closed only while its descriptor is still ours: the user's
    code may close it, and the number may then belong to a file of the app's (its log) by the time we answer."""

    def __init__(self, sock):
        self.sock, self.pending = sock, b""
        self.identity = self.describe()

    def describe(self):
        try:
            st = os.fstat(self.sock.fileno())
        except (OSError, ValueError):
            return None
        return st.st_dev, st.st_ino

    def ours(self):
        return self.identity is not None and self.describe() == self.identity

    def send(self, obj):
        data = json.dumps(obj).encode() + b"\n"
        if not self.ours():
            raise OSError("the connection's descriptor was closed under the payload")
        self.sock.sendall(data)

    def receive(self):
        while b"\n" not in self.pending:
            if not self.ours():
                raise OSError("the connection's descriptor was closed under the payload")
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("the agent closed the connection")
            self.pending += data
        line, self.pending = self.pending.split(b"\n", 1)
        request = json.loads(line)
        if not isinstance(request, dict):
            raise ValueError("a request is a JSON object")
        return request

    def close(self):
        try:
            if self.ours():
                self.sock.close()
            else:
                self.sock.detach()  # not ours any more: forget the number, never close it
        except BaseException:
            pass


class AppSignals:
    """The app's Python signal handlers while the payload runs on the main thread (see the module docstring).

    Only the main thread may set handlers, and the payload runs on it: nothing else changes them meanwhile."""

    def __init__(self):
        import signal
        self.wrapped, self.caught, self.user_code = {}, {}, False
        for signum in signal.valid_signals():
            try:
                handler = signal.getsignal(signum)
            except (OSError, ValueError):
                continue
            if callable(handler):
                wrapper = self.wrap(signum, handler)
                signal.signal(signum, wrapper)
                self.wrapped[signum] = (handler, wrapper)

    def wrap(self, signum, handler):
        def wand_signal_wrapper(sig, frame):
            try:
                return handler(sig, frame)
            except BaseException as exc:  # the app's, whatever it is
                self.caught.setdefault(signum, exc)
                if self.user_code:
                    raise
        return wand_signal_wrapper

    def release(self):
        """The app's handlers back; what they raised, raised again in the app's own code. Never raises."""
        try:
            import signal
            for signum, (handler, wrapper) in self.wrapped.items():
                if signal.getsignal(signum) is not wrapper:
                    continue  # the user's code set a handler of its own: theirs to keep
                if signum in self.caught:
                    signal.signal(signum, once(signum, handler, self.caught[signum]))
                else:
                    signal.signal(signum, handler)
            if self.caught:
                import _thread
                _thread.start_new_thread(deliver_after, (threading.get_ident(), wand_main.__code__,
                                                         sorted(self.caught)))
        except BaseException:
            pass


def once(signum, handler, exc):
    """A handler that puts the app's own back and raises what it raised while the payload ran."""
    def wand_redeliver(sig, frame):
        import signal
        signal.signal(signum, handler)
        raise exc.with_traceback(None)
    return wand_redeliver


def deliver_after(main, code, signums):
    """(a short-lived thread) Trip ``signums`` once the main thread has left ``code``: their handlers then run
    in the app's own code. Raising them from the payload itself would only make CPython print them."""
    try:
        import _thread
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            frame = sys._current_frames().get(main)
            while frame is not None and frame.f_code is not code:
                frame = frame.f_back
            if frame is None:
                break
            frame = None
            time.sleep(0.001)  # the main thread is returning from the payload: microseconds
        for signum in signums:
            _thread.interrupt_main(signum)
    except BaseException:
        pass


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


def remove_tree(path, depth=0):
    """Remove our private directory by its path: we run as the target's uid, in a directory that uid owns, so
    this can reach nothing it could not remove itself. Symlinks are removed, never followed."""
    try:
        for name in os.listdir(path):
            entry = os.path.join(path, name)
            if os.path.isdir(entry) and not os.path.islink(entry) and depth < 32:
                remove_tree(entry, depth + 1)
            else:
                os.unlink(entry)
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
