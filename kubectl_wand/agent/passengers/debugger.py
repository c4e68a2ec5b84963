"""Runs INSIDE the target, on its main thread: start debugpy's server for ``attach``.

Travels in the ``attach`` request (passengers/bootstrap.py runs it in a fresh namespace and calls ``run``).
All or nothing: a debugpy that fails to import half-way is removed from ``sys.modules`` so the next attach
starts clean; a shipped copy (the agent's ``lib/``) is imported in full, with everything it loads lazily,
before the agent removes its files.
"""
import os
import sys
import time


def run(request, conn, signals):
    """The op's entry (see passengers/bootstrap.py): the result to send."""
    return start_debugpy(request)


def start_debugpy(request):
    shipped = request.get("debugpy_path")
    if shipped and not os.path.exists(os.path.join(shipped, ".complete")):
        return {"status": "error", "kind": "debugpy", "error": "the shipped debugpy is incomplete; nothing "
                "was imported"}
    modules, path, bytecode = set(sys.modules), list(sys.path), sys.dont_write_bytecode
    hook = sys.breakpointhook  # pydevd's import replaces it (install_breakpointhook)
    if shipped:
        sys.path.insert(0, shipped)
        sys.dont_write_bytecode = True  # no __pycache__ in the private directory: less to write and remove
    # What debugpy's import reads from the environment, set only while it loads so the app's environment ends
    # up as it was: pydevd warns about frozen modules on the app's stderr unless validation is off, and
    # debugpy's force_pydevd sets PYDEVD_USE_FRAME_EVAL=NO for good (set here first: pydevd's constants, read
    # once at import, are loaded before force_pydevd by pydevd_log_silenced).
    saved = {name: os.environ.get(name) for name in LOAD_ENV}
    for name, value in LOAD_ENV.items():
        if name == "PYDEVD_DISABLE_FILE_VALIDATION" or saved[name] is None:
            os.environ[name] = value
    try:
        import debugpy
        with pydevd_log_silenced():
            import debugpy.server.api  # noqa: F401  (loads pydevd while its switches are set)
            if shipped:
                preload_debugpy()  # everything it could load lazily, while its files are still there
        if shipped and not os.path.exists(os.path.join(shipped, ".complete")):
            raise ImportError("the shipped files were removed while they loaded")
    except BaseException as exc:
        # All or nothing: a half-imported debugpy would stay in sys.modules and fail every later attach, and
        # what its import installed would stay in the app (pydevd's breakpoint hook: the app's next
        # breakpoint() connected out to a debugger on port 5678 instead of running pdb).
        undo_import_hooks(modules, hook)
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
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    current = existing_server()
    if current:
        return dict(current, status="already")
    host, port = request["host"], int(request["port"])
    if in_process_supported(debugpy):
        mode = "in-process"
        try:
            # Ours before debugpy starts: pydevd binds on a thread of its own, and debugpy.listen waits with
            # no timeout, on the app's main thread, for a ready signal a failed bind never sends. Another
            # process can take the port after the agent checked it; then this fails here, at once, with
            # nothing of debugpy started.
            claimed = claim_port(host, port)
        except OSError as exc:
            import errno
            if exc.errno == errno.EADDRINUSE:
                why = "taken after kubectl wand checked it"
                error = "port %d is already in use beside the target (%s)" % (port, why)
            else:
                why = "cannot listen on %s:%d: %s" % (host, port, exc.strerror or exc)
                error = why
            return {"status": "error", "kind": "port", "reason": why, "error": error + "; choose another with --port"}
        try:
            resume_when_the_client_vanishes()
            with handed_over(claimed):
                # pydevd itself serves DAP: no adapter process to spawn (faster, nothing outlives the app,
                # works in embedded interpreters), and it survives a client that vanishes without a DAP
                # disconnect (a dead port-forward), which leaves debugpy 1.8's separate adapter stuck.
                bound_host, bound_port = debugpy.listen((host, port), in_process_debug_adapter=True)
        except Exception as exc:
            return {"status": "error", "kind": "debugpy", "error": str(exc)}
    else:  # debugpy older than 1.8.1, or one whose socket we cannot hand over: its separate adapter
        mode = "adapter"
        try:
            if not os.path.basename(sys.executable or "").startswith("python"):
                real = os.path.realpath("/proc/self/exe")  # embedded interpreters: the adapter needs python
                if os.path.basename(real).startswith("python"):
                    debugpy.configure(python=real)
            # Bounded: the adapter reports its own bind failure, and debugpy waits 30 s at most for it.
            bound_host, bound_port = debugpy.listen((host, port))
        except Exception as exc:
            message = str(exc)
            kind = "port" if "in use" in message or "Errno 98" in message else "debugpy"
            return {"status": "error", "kind": kind, "error": message}
    record = {"host": bound_host, "port": bound_port, "debugpy": getattr(debugpy, "__version__", "?"),
              "source": "shipped" if shipped else "installed", "since": time.time(), "mode": mode}
    debugpy._kubectl_wand_server = record
    return dict(record, status="listening")


LOAD_ENV = {"PYDEVD_DISABLE_FILE_VALIDATION": "1", "PYDEVD_USE_FRAME_EVAL": "NO"}


class Discard:
    """A stream that keeps nothing."""

    def write(self, text):
        return len(text)

    def flush(self):
        pass


def pydevd_log_silenced():
    """pydevd's own logger, writing nowhere while debugpy loads. It writes to the app's stderr, and loading
    can log: "Unable to load extension: ..." when the shipped files vanish mid-import (the CLI was
    interrupted and removed them; seen in CI on an attach interrupted at 0.9 s). The import is all or nothing
    and its failure is reported on our connection, so nothing is lost. Only the logger module is loaded
    early (pydevd's constants with it, which is why LOAD_ENV is set before)."""
    import contextlib
    try:
        from debugpy import _vendored
        with _vendored.vendored("pydevd"):
            from _pydev_bundle import pydev_log
        return pydev_log.log_context(-1, Discard())  # level -1: below even its critical messages
    except Exception:  # a debugpy laid out otherwise, or its files gone already: the import reports that
        return contextlib.nullcontext()


def in_process_supported(debugpy) -> bool:
    """Whether this debugpy serves DAP from pydevd in the process (1.8.1 and later) and names the hook that
    takes our socket (pydevd's connection thread calls ``pydevd.create_server_socket``)."""
    import inspect
    try:
        takes = "in_process_debug_adapter" in inspect.signature(debugpy.listen).parameters
    except (TypeError, ValueError):
        return False
    pydevd = sys.modules.get("pydevd")
    return takes and pydevd is not None and callable(getattr(pydevd, "create_server_socket", None))


def claim_port(host, port):
    """A socket listening at host:port, bound as pydevd binds its own (SO_REUSEADDR: connections left in
    TIME_WAIT do not count). Listening, not only bound: Linux lets another SO_REUSEADDR socket bind a port
    whose sockets are all bound and none listens, and then the first to listen wins."""
    import socket
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1)
    except BaseException:
        sock.close()
        raise
    return sock


class handed_over:
    """While debugpy.listen runs, pydevd's connection thread gets ``claimed`` from create_server_socket
    instead of binding a socket of its own (it calls listen(1) on it again, which only sets the backlog).
    One call only, and the original is back as soon as it is made; a socket never taken is closed."""

    def __init__(self, claimed):
        pydevd = sys.modules["pydevd"]  # loaded by debugpy.server.api (in_process_supported checked it)
        self.pydevd, self.claimed, self.taken = pydevd, claimed, False
        self.original = pydevd.create_server_socket

    def take(self, host=None, port=None, *args, **kwargs):
        self.pydevd.create_server_socket = self.original
        if self.taken:
            return self.original(host, port, *args, **kwargs)
        self.taken = True
        return self.claimed

    def __enter__(self):
        self.pydevd.create_server_socket = self.take
        return self

    def __exit__(self, kind, exc, tb):
        if kind is None and not self.taken:
            return  # a debugpy whose listen returns before pydevd's thread binds: that thread takes it
        if self.pydevd.create_server_socket == self.take:
            self.pydevd.create_server_socket = self.original
        if not self.taken:
            self.claimed.close()


def resume_when_the_client_vanishes():
    """An editor whose connection ends without a DAP ``disconnect`` (the port-forward died, attach was stopped
    with Ctrl-C, the editor crashed) is treated as one that disconnected: its breakpoints are removed and the
    threads it paused resume, as pydevd does on ``disconnect``. pydevd's in-process server does nothing when
    its reader sees the socket end (initialize_network(terminate_on_socket_close=False)): a thread stopped at
    a breakpoint stayed stopped for good and every later hit of a breakpoint stopped another one, so the app
    stopped serving (seen: a request held at a breakpoint never answered after the client's socket closed).
    Only the reader of the current connection acts: one a newer connection replaced was killed first
    (``_kill_received``) and pydevd has already handed the session over. A pydevd laid out otherwise keeps
    its own behaviour."""
    comm = sys.modules.get("_pydevd_bundle.pydevd_comm")
    api = sys.modules.get("_pydevd_bundle.pydevd_api")
    reader = getattr(comm, "ReaderThread", None)
    original = getattr(reader, "_terminate_on_socket_close", None)
    if original is None or getattr(api, "PyDevdAPI", None) is None or getattr(original, "kubectl_wand", False):
        return

    def _terminate_on_socket_close(self):
        original(self)
        try:
            py_db = self.py_db
            if (getattr(self, "_ReaderThread__terminate_on_socket_close", True) or self._kill_received or
                    getattr(py_db, "reader", None) is not self):
                return
            py_db.enable_output_redirection(False, False)
            api.PyDevdAPI().request_disconnect(py_db, resume_threads=True)
        except Exception:
            pass  # the app's threads keep whatever pydevd left; nothing reaches its stderr

    _terminate_on_socket_close.kubectl_wand = True
    reader._terminate_on_socket_close = _terminate_on_socket_close


def undo_import_hooks(before, hook):
    """What importing debugpy installs outside its modules: pydevd's sys.breakpointhook, and the atexit
    callback of debugpy's logger (only when this import loaded them)."""
    import atexit
    if sys.breakpointhook is not hook:
        sys.breakpointhook = hook
    log = sys.modules.get("debugpy.common.log")
    if "debugpy.common.log" not in before and callable(getattr(log, "_close_files", None)):
        atexit.unregister(log._close_files)


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


def existing_server():
    """The server this process already runs: one kubectl wand started (its record), another tool's, or None."""
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
