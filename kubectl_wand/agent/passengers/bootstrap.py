"""Runs INSIDE the target process, on its main thread, started by ``sys.remote_exec``: the bootstrap.

The agent writes this file's source, followed by one call line in a try of its own, into a private directory
and injects it. It runs in a fresh globals dict (no module is registered in the target), connects back to the
agent's Unix socket, says hello, receives one request, runs the op's code that came in it and answers. Only
the bootstrap is written to the file: the op's own code (passengers/execute.py for ``exec``, debugger.py for
``attach``, codefinder.py and probe.py for ``trace``) travels in the request, as ``sources`` (name, source
text) that run in one fresh namespace; their ``run(request, conn, signals)`` returns the result to send, or
None once it owns the connection (trace's probe thread closes it when the probe is removed). A request that
needs nothing run (``noop``: the agent decided from the hello) compiles nothing more.

Nothing it does may raise out of it: CPython would print whatever escapes as "Error executing debugger script"
into the app's stderr. So every path ends silently, including a connection that fails half-way (the agent was
interrupted or killed), a descriptor the user's code closed (it is then neither written nor closed: its number
may be a file of the app's by now), and the app's own signals:

- the app's Python signal handlers still run when their signal comes (the bootstrap wraps them while the
  payload runs); an exception one of them raises (KeyboardInterrupt from SIGINT's default handler,
  SystemExit from a handler that exits) is the app's, not ours: it interrupts the user's code when that is
  what runs (``signals.user_code``, set by execute.py), as it would the app's own code, never the payload's
  own steps; once the payload has returned it is raised again, the same exception, in the app's own code (a
  one-shot handler, tripped by a short-lived thread once the main thread has left the payload).
- a signal whose handler raises while CPython compiles this file, before its first line runs, is reported by
  CPython itself: that window is the compile time of this file, which is why it holds nothing but the
  bootstrap. For the same reason nothing runs at its top level but definitions (no import, no class
  statement: each may run a pending signal handler outside any try of ours).

If the agent is gone (an injection that timed out while the main thread was blocked, an agent that was
killed), the socket's peer is gone too: it removes its own directory and returns without a word, so nothing is
left and nothing is printed into the app's logs.
"""


def wand_main(sock_path, private_dir, token):
    """Never raises (see the module docstring)."""
    signals = None
    try:
        signals = hold_signals()
        serve(sock_path, private_dir, token, signals)
    except BaseException:
        pass
    finally:
        release_signals(signals)


def serve(sock_path, private_dir, token, signals):
    import os
    import socket
    try:
        os.unlink(os.path.join(private_dir, "bootstrap.py"))  # already read; nothing to leave behind
    except OSError:
        pass
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.settimeout(5.0)
        conn.connect(sock_path)
        channel = open_channel(conn)
    except BaseException:
        conn.close()
        remove_tree(private_dir)  # the agent gave up on us: no output, no files
        return
    owned = False  # whether the op's code owns the connection now
    try:
        send(channel, hello(token))
        request = receive(channel)
        if request.get("op") == "noop":
            return
        result = run_op(request, conn, signals)
        owned = result is None
        if not owned:
            send(channel, result)
    except (ConnectionError, EOFError):
        remove_tree(private_dir)  # the agent went away mid-way (interrupted or killed): nothing stays behind
    except BaseException:
        pass  # the app stays unharmed and quiet whatever happened
    finally:
        if not owned:
            close_channel(channel)


def run_op(request, conn, signals):
    """Run the op's sources (sent in the request) in one fresh namespace and call its ``run``."""
    op = request.get("op")
    namespace = {"__name__": "kubectl_wand_%s" % op}
    try:
        for name, source in request["sources"]:
            exec(compile(source, "<kubectl-wand %s>" % name, "exec"), namespace)
        return namespace["run"](request, conn, signals)
    except Exception as exc:
        return {"status": "error", "kind": {"trace": "trace", "attach": "debugpy"}.get(op, "inject"),
                "error": "the %s code failed in the target: %s: %s" % (op, type(exc).__name__, exc)}


# -- the connection: written and closed only while its descriptor is still ours --------------------------
# The user's code may close it, and the number may then belong to a file of the app's (its log) by the time
# we answer: each write and the close first check the descriptor is still the socket we opened.

def open_channel(sock):
    import types
    channel = types.SimpleNamespace(sock=sock, pending=b"", identity=None)
    channel.identity = identity(channel)
    return channel


def identity(channel):
    import os
    try:
        st = os.fstat(channel.sock.fileno())
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def ours(channel):
    return channel.identity is not None and identity(channel) == channel.identity


def send(channel, obj):
    import json
    import socket
    data = json.dumps(obj).encode() + b"\n"
    if not ours(channel):
        raise OSError("the connection's descriptor was closed under the payload")
    # EPIPE, never SIGPIPE, when the agent is gone (the CLI killed while the code ran): an app that restored
    # SIGPIPE's default (Python ignores it) was killed by its answer.
    channel.sock.sendall(data, getattr(socket, "MSG_NOSIGNAL", 0))


def receive(channel):
    import json
    while b"\n" not in channel.pending:
        if not ours(channel):
            raise OSError("the connection's descriptor was closed under the payload")
        data = channel.sock.recv(65536)
        if not data:
            raise EOFError("the agent closed the connection")
        channel.pending += data
    line, channel.pending = channel.pending.split(b"\n", 1)
    request = json.loads(line)
    if not isinstance(request, dict):
        raise ValueError("a request is a JSON object")
    return request


def close_channel(channel):
    try:
        if ours(channel):
            channel.sock.close()
        else:
            channel.sock.detach()  # not ours any more: forget the number, never close it
    except BaseException:
        pass


def remove_tree(path, depth=0):
    """Remove our private directory by its path: we run as the target's uid, in a directory that uid owns, so
    this can reach nothing it could not remove itself. Symlinks are removed, never followed."""
    import os
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


# -- the hello ----------------------------------------------------------------------------------------------

def hello(token):
    import os
    import sys
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
    import sys
    main = sys.modules.get("__main__")
    return getattr(main, "__file__", None)


def existing_server():
    """The debug server this process already runs: one kubectl wand started (its record), another tool's,
    or None. (passengers/debugger.py asks the same again once debugpy is imported.)"""
    import sys
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


# -- the app's signals while the payload runs (see the module docstring) -----------------------------------
# Only the main thread may set handlers, and the payload runs on it: nothing else changes them meanwhile.

def hold_signals():
    import signal
    import types
    held = types.SimpleNamespace(wrapped={}, caught={}, user_code=False)
    for signum in signal.valid_signals():
        try:
            handler = signal.getsignal(signum)
            if callable(handler):
                wrapper = wrap_handler(held, signum, handler)
                signal.signal(signum, wrapper)
                held.wrapped[signum] = (handler, wrapper)
        except (OSError, ValueError):  # not settable here: its handler keeps running unwrapped
            continue
    return held


def wrap_handler(held, signum, handler):
    def wand_signal_wrapper(sig, frame):
        try:
            return handler(sig, frame)
        except BaseException as exc:  # the app's, whatever it is
            held.caught.setdefault(signum, exc)
            if held.user_code:
                raise
    return wand_signal_wrapper


def release_signals(held):
    """The app's handlers back; what they raised, raised again in the app's own code. Never raises."""
    if held is None:
        return
    try:
        import signal
        for signum, (handler, wrapper) in held.wrapped.items():
            if signal.getsignal(signum) is not wrapper:
                continue  # the user's code set a handler of its own: theirs to keep
            if signum in held.caught:
                signal.signal(signum, redeliver_once(signum, handler, held.caught[signum]))
            else:
                signal.signal(signum, handler)
        if held.caught:
            import _thread
            _thread.start_new_thread(deliver_after, (_thread.get_ident(), wand_main.__code__, sorted(held.caught)))
    except BaseException:
        pass


def redeliver_once(signum, handler, exc):
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
        import sys
        import time
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
