"""Runs inside the target process, on its main thread, started by ``sys.remote_exec``.

The agent writes this file's source, followed by one call line, into a private directory and injects it.
It runs in a fresh globals dict (no module is registered in the target), connects back to the agent's Unix
socket, says hello, receives one request (run code, start debugpy, or start a trace probe, whose own thread
then keeps the connection until the probe is removed), answers and leaves nothing behind.

If the agent is gone by the time it runs (an injection that timed out while the main thread was blocked), the
socket is gone too: it removes its own directory and returns without a word, so nothing is started and
nothing is printed into the app's logs.
"""
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
    try:
        channel = conn.makefile("rwb")
        send(channel, hello(token))
        request = json.loads(channel.readline() or b"{}")
        op = request.get("op")
        if op == "exec":
            result = run_code(request["code"], float(request.get("timeout", 10.0)))
        elif op == "attach":
            result = start_debugpy(request)
        elif op == "trace":
            result = start_probe(request, conn)
            if result is None:
                conn = None  # the probe's thread owns the connection now and closes it when the probe is removed
                return
        else:
            result = {"status": "error", "error": "unknown request %r" % (op,)}
        send(channel, result)
    except Exception:
        pass  # the agent went away mid-way: keep the app unharmed and quiet
    finally:
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


class ThreadCapture:
    """Stands in for sys.stdout/sys.stderr: our thread's writes go to a buffer, other threads' to the app."""

    def __init__(self, original, owner):
        self._original, self._owner, self.parts = original, owner, []

    def write(self, text):
        if threading.get_ident() == self._owner:
            self.parts.append(text)
            return len(text)
        if self._original is None:
            return len(text)
        return self._original.write(text)

    def flush(self):
        if self._original is not None and threading.get_ident() != self._owner:
            self._original.flush()

    def __getattr__(self, name):
        return getattr(self._original, name)

    def text(self, limit=1 << 20):
        out = "".join(self.parts)
        return out if len(out) <= limit else out[:limit] + "\n[... output truncated by kubectl-wand]\n"


def run_code(source, timeout):
    import ast
    import builtins
    import traceback
    started = time.monotonic()
    deadline = started + timeout
    result = {"status": "ok", "value": None, "traceback": None, "error": None}
    owner = threading.get_ident()
    out, err = ThreadCapture(sys.stdout, owner), ThreadCapture(sys.stderr, owner)
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
                    result["value"] = safe_repr(value)
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
    finally:
        sys.stdout, sys.stderr = saved[0], saved[1]
    result.update(stdout=out.text(), stderr=err.text(), seconds=round(time.monotonic() - started, 4))
    return result


def safe_repr(value, limit=1 << 20):
    try:
        text = repr(value)
    except BaseException as exc:
        text = "<repr failed: %s: %s>" % (type(exc).__name__, exc)
    return text if len(text) <= limit else text[:limit] + "...[truncated]"


def start_debugpy(request):
    shipped = request.get("debugpy_path")
    if shipped:
        sys.path.insert(0, shipped)
    # pydevd warns about frozen modules on the app's stderr when it loads; the app's logs are not ours to
    # write into. Set its switch only while it loads, so the app's environment ends up as it was.
    saved = os.environ.get("PYDEVD_DISABLE_FILE_VALIDATION")
    os.environ["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"
    try:
        import debugpy
        import debugpy.server.api  # noqa: F401  (loads pydevd while its switch is set)
    except Exception as exc:
        return {"status": "error", "kind": "debugpy", "error": "cannot import debugpy: %s" % exc}
    finally:
        if shipped and sys.path and sys.path[0] == shipped:
            sys.path.pop(0)
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
    if shipped:
        preload_debugpy()
    record = {"host": bound_host, "port": bound_port, "debugpy": getattr(debugpy, "__version__", "?"),
              "source": "shipped" if shipped else "installed", "since": time.time(), "mode": mode}
    debugpy._kubectl_wand_server = record
    return dict(record, status="listening")


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
