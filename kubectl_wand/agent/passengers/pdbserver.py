"""Runs INSIDE the target, for ``pdb``: CPython's own remote pdb server (pdb._PdbServer, as ``pdb.attach``'s
connect script starts it), spoken over the bootstrap's connection to the agent.

What it changes from ``python -m pdb -p`` (all measured against 3.14's Lib/pdb.py and bdb.py):
- breakpoints fire in every thread. pdb's settrace backend traces the thread that called set_trace only, and
  its monitoring backend ignores events from any other thread (``callback_wrapper`` checks
  ``_tracing_thread``): a web server's handler runs in a worker thread and would never stop. Here tracing is
  set on all threads (threading.settrace_all_threads) and one thread at a time holds the prompt (a lock); a
  thread other than the one being stepped stops only at a breakpoint.
- the settrace backend, never sys.monitoring: its tool id 0 is debugpy's (``attach``) and one would refuse the
  other.
- Ctrl-C while the app runs: the client asks over this connection (``{"wand": "interrupt"}``) and a thread
  here sets the trace on the main thread, which stops at its next line. pdb's own way sends SIGINT to the
  process and needs pdb's SIGINT handler in place (only set by ``continue`` on the main thread): otherwise the
  app's own handler runs, and a web server's default one is KeyboardInterrupt, which stops it. nosigint: pdb
  never touches the app's signal handlers.
- the session never stops inside kubectl-wand's own code (this namespace, the bootstrap, nor another
  injection's running meanwhile): the first stop is the app's own frame where the main thread was when it took
  the injection.
- however it ends (``q``, Ctrl-D, ``{"wand": "detach"}`` from the agent, the connection lost) everything is
  taken back before the connection closes: breakpoints (bdb.Breakpoint's class-wide lists too), the trace
  function of every thread and of new threads, the frames' f_trace, pdb's "attached" instance; the relay
  thread then ends. The last line sent is ``{"wand": "detached", ...}``.

Wire (JSON lines on the bootstrap's connection): target -> agent: ``{"wand": "started"}`` (or the bootstrap's
error result: another pdb attached, a tracer or debugpy present), pdb's own server messages, then the detached
line; agent -> target: pdb's own client messages, plus ``{"wand": "interrupt"|"detach"}``.
Standard library only; Python 3.14 (remote pdb exists there only).
"""
import json
import os
import socket
import sys
import threading

NOSIGNAL = getattr(socket, "MSG_NOSIGNAL", 0)  # EPIPE, never SIGPIPE: the app may have restored its default

def run(request, conn, signals=None):
    """The op's entry (see passengers/bootstrap.py): start the server and hand it ``conn`` (returns None),
    or return an error result."""
    import pdb
    if not hasattr(pdb, "_PdbServer"):
        return {"status": "error", "kind": "version", "error": "this Python has no remote pdb (CPython 3.14+)"}
    if pdb.Pdb._last_pdb_instance is not None:
        return {"status": "error", "kind": "busy", "error": "another pdb is already attached to process %d "
                "(python -m pdb -p, or another kubectl wand pdb); quit it first" % os.getpid()}
    if sys.gettrace() is not None or any(t is not None for t in _thread_traces()):
        return {"status": "error", "kind": "busy", "error": "a trace function is already set in process %d "
                "(another debugger or a coverage tool); detach it first" % os.getpid()}
    kept = _our_globals()  # kept alive while the session lasts: their ids must not be reused by the app's dicts
    monitoring = getattr(sys, "monitoring", None)
    holder = monitoring.get_tool(monitoring.DEBUGGER_ID) if monitoring else None
    if holder is not None:
        return {"status": "error", "kind": "busy", "error": "a debugger (%s) holds sys.monitoring's debugger tool "
                "id in process %d (kubectl wand attach's debugpy?); detach it first" % (holder, os.getpid())}
    ours = set(id(g) for g in kept)
    frame = sys._getframe()
    while frame is not None and id(frame.f_globals) in ours:
        frame = frame.f_back
    if frame is None:
        return {"status": "error", "kind": "inject", "error": "no frame of the app's below the injection"}
    session = Session(conn, ours, pdb)
    session.kept = kept
    try:
        conn.sendall(b'{"wand": "started"}\n', NOSIGNAL)
        session.start(frame)
    except Exception as exc:
        session.close("failed")
        return {"status": "error", "kind": "inject", "error": "pdb could not start: %s: %s" % (
            type(exc).__name__, exc)}
    return None


def _our_globals():
    """The globals of kubectl-wand's own frames on this stack: this namespace and the bootstrap's."""
    found = []
    frame = sys._getframe()
    while frame is not None:
        g = frame.f_globals
        if g.get("__name__") == "kubectl_wand_pdb" or "wand_main" in g:
            if all(g is not f for f in found):
                found.append(g)
        frame = frame.f_back
    return found


def _thread_traces():
    """sys.gettrace() of every thread is not readable from another; threading keeps only its hook."""
    return [getattr(threading, "_trace_hook", None)]


class Session:
    def __init__(self, conn, ours, pdb):
        self.conn = conn
        self.ours = ours
        self.pdb = pdb
        self.main = threading.main_thread().ident
        self.closed = False
        self.reason = None
        # pdb's server reads and writes one end; the relay thread carries the other to the agent.
        inner, self.outer = socket.socketpair()
        sockfile = inner.makefile("rwb")
        inner.close()  # the descriptor stays open until pdb closes its file (detach)
        self.server = make_server(pdb, self, sockfile)
        self.thread = None

    def start(self, frame):
        self.thread = threading.Thread(target=self.relay, name="kubectl-wand-pdb", daemon=True)
        self.thread.start()
        self.server.wand_stepping = self.main
        self.server.set_trace(frame=frame)

    # -- the relay thread ---------------------------------------------------------------------------------
    def relay(self):
        import select
        pending = b""
        try:
            while not self.closed:
                ready = select.select([self.conn, self.outer], [], [], 1.0)[0]
                if self.outer in ready:
                    data = self.outer.recv(65536)
                    if not data:  # the server detached (q, Ctrl-D) and closed its end
                        self.close("quit")
                        break
                    self.conn.sendall(data, NOSIGNAL)
                if self.conn in ready:
                    data = self.conn.recv(65536)
                    if not data:
                        self.close("connection lost")
                        break
                    pending += data
                    while b"\n" in pending:
                        line, pending = pending.split(b"\n", 1)
                        if line.startswith(b'{"wand"'):
                            self.command(json.loads(line).get("wand"))
                        else:
                            self.outer.sendall(line + b"\n", NOSIGNAL)
        except Exception:
            self.close("connection lost")

    def command(self, what):
        if what == "interrupt":
            self.interrupt()
        elif what == "detach":
            self.close("detached")

    def interrupt(self):
        """Ctrl-C while the app runs: stop the main thread at its next line (nothing if a prompt is up)."""
        server = self.server
        if server.wand_prompts:
            return
        frame = sys._current_frames().get(self.main)
        if frame is None:
            return
        # set_trace stops at the frame's next instruction, whatever stop_here says: when the main thread runs
        # another injection of ours (a colleague's exec-py, a refused second pdb's bootstrap) the frame is the
        # app's one below it, where the thread goes back once that returns.
        below = frame
        while frame is not None:
            if id(frame.f_globals) in self.ours or "wand_main" in frame.f_globals:
                below = frame.f_back
            frame = frame.f_back
        if below is None:
            return
        server.wand_stepping = self.main
        server.set_trace(frame=below)

    def close(self, reason):
        """Take everything back (see the module docstring); the connection closes last. Runs once."""
        if self.closed:
            return
        self.closed = True
        self.reason = reason
        server = self.server
        server.wand_closed = True
        try:
            server.clear_all_breaks()
            self.pdb.bdb.Breakpoint.clearBreakpoints()
        except Exception:
            pass
        stop_tracing(server)
        try:
            # A thread at the prompt reads EOF: pdb quits and detaches (it closes its file). Only our writing
            # half is shut: pdb's last messages still have somewhere to go (a write to a closed peer would be
            # EPIPE, or SIGPIPE in an app that restored its default).
            self.outer.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        if server.wand_lock.acquire(timeout=5.0):  # any prompt ends at that EOF
            server.wand_lock.release()
        try:
            server._sockfile.close()
        except Exception:
            pass
        try:
            self.outer.close()
        except OSError:
            pass
        if self.pdb.Pdb._last_pdb_instance is server:
            self.pdb.Pdb._last_pdb_instance = None
        try:
            self.conn.sendall(json.dumps({"wand": "detached", "reason": reason}).encode() + b"\n", NOSIGNAL)
        except OSError:
            pass
        try:
            self.conn.close()
        except OSError:
            pass
        self.kept = None


def stop_tracing(server):
    """No trace function on any thread (nor for new ones), no frame left pointing at the debugger."""
    try:
        threading.settrace_all_threads(None)
    except Exception:
        pass
    for frame in list(sys._current_frames().values()):
        while frame is not None:
            trace = frame.f_trace
            if trace is not None and getattr(trace, "__self__", None) is server:
                frame.f_trace = None
            frame = frame.f_back
    server.frame_trace_lines_opcodes = {}
    server.botframe = None


def make_server(pdb, session, sockfile):
    class WandPdbServer(pdb._PdbServer):
        """_PdbServer that traces every thread, one prompt at a time, never in kubectl-wand's own code."""
        wand_closed = False
        wand_stepping = None
        wand_prompts = 0

        def __init__(self):
            self.wand_lock = threading.RLock()
            super().__init__(sockfile, owns_sockfile=True, nosigint=True, readrc=False, backend="settrace")

        def trace_dispatch(self, frame, event, arg):
            # What a trace function returns becomes the frame's f_trace: once closed (or detached by q or
            # Ctrl-D, whose return path runs after the cleanup) it returns None, so no frame keeps us.
            if self.wand_closed:
                return None
            local = super().trace_dispatch(frame, event, arg)
            return None if self.wand_closed else local

        def detach(self):
            self.wand_closed = True
            stop_tracing(self)
            super().detach()

        def start_trace(self):
            threading.settrace_all_threads(self.trace_dispatch)

        def stop_trace(self):
            stop_tracing(self)

        def stop_here(self, frame):
            if self.wand_closed or threading.get_ident() != self.wand_stepping or self.wand_ours(frame):
                return False
            return super().stop_here(frame)

        def break_here(self, frame):
            if self.wand_closed or self.wand_ours(frame):
                return False
            return super().break_here(frame)

        def wand_ours(self, frame):
            # This session's own frames, and any other kubectl-wand injection's (its bootstrap's globals hold
            # wand_main; its op's code runs above that frame): Ctrl-C while the main thread ran a colleague's
            # exec-py, or a refused second pdb's bootstrap, stopped in there ("<wand>(1)", "<string>(123)send").
            while frame is not None:
                g = frame.f_globals
                if id(g) in session.ours or "wand_main" in g:
                    return True
                frame = frame.f_back
            return False

        def interaction(self, frame, tb_or_exc):
            with self.wand_lock:
                if self.wand_closed:
                    return
                self.wand_stepping = threading.get_ident()
                self.wand_prompts += 1
                try:
                    super().interaction(frame, tb_or_exc)
                finally:
                    self.wand_prompts -= 1

    return WandPdbServer()
