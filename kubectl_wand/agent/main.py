"""The agent's entry point: one request in, one JSON result out (and, for streaming operations, events).

Locally the CLI calls ``handle`` in-process. In a pod, ``serve_stdio`` speaks the protocol of
``agent/protocol.py`` over the ``kubectl exec -i`` pipes: a hello (with the protocol version), then the
request is read; when the agent needs a large input (a debugpy to ship) it asks with ``{"need": NAME}`` and
reads ``{"blob": base64}`` back; streaming operations send ``{"event": ...}`` lines and stop early when the
CLI sends ``{"stop": ...}`` or closes stdin; the last line is the result.
"""
from __future__ import annotations

import os
import sys
import time

from . import processes, protocol
from .protocol import AgentError

# Operations that run until done or stopped: the CLI may end them early (stop line, or stdin closed).
STREAMING = ("watch", "profile", "trace", "mem", "pdb", "repl")
# Operations on the app process: without a pid the agent chooses it here (one kubectl exec, not two).
CHOOSING = ("exec", "attach", "check", "trace", "mem", "pdb", "repl")


def handle(request: dict, fetch_blob=None, emit=None, stop=None, confirm=None, window=None, code_cache=None) -> dict:
    """One request -> one result. ``confirm()`` (pods only) waits for the CLI's go for a ``hold`` request;
    ``window`` (pods only, a Window) is how a ``sync`` profile, trace or mem says it is armed and waits for the go
    that opens every pod's window at once (without it the window opens as soon as it is armed); ``code_cache``
    (local only: the user's cache) keeps code compiled by a target's interpreter (runtime.TargetRuntime.compiled)."""
    try:
        request = protocol.check_request(request)
    except protocol.ProtocolError as exc:
        return protocol.error("protocol", str(exc))
    try:
        from . import wait as wait_mod  # shipped with the operations that inject
    except ImportError:
        wait_mod = None
    if wait_mod is None or stop is None:
        return choose_and_dispatch(request, fetch_blob, emit, stop, confirm, window, code_cache)
    with wait_mod.stopping(stop):  # a stop (Ctrl-C, a session's client gone) ends a wait for a safe point too
        return choose_and_dispatch(request, fetch_blob, emit, stop, confirm, window, code_cache)


def choose_and_dispatch(request, fetch_blob, emit, stop, confirm, window, code_cache):
    if request["op"] in CHOOSING and request.get("pid") is None:
        from .choose import choose_process
        try:
            pid, note = choose_process(processes.list_processes(cpu=False))
        except AgentError as exc:
            return exc.to_json()
        if emit is not None:
            emit({"chosen": {"pid": pid, "note": note}})
        # A held request was sent before the CLI had read the pod from the API: nothing is touched until it
        # says go (the pod is Running and this is the container it chose); EOF means drop it.
        if request.get("hold") and (confirm is None or not confirm()):
            return protocol.result(protocol.CANCELLED)
        result = dispatch(dict(request, pid=pid), fetch_blob, emit, stop, window, code_cache)
        return dict(result, pid=pid, note=note)
    return dispatch(request, fetch_blob, emit, stop, window, code_cache)


def dispatch(request, fetch_blob, emit, stop, window=None, code_cache=None):
    op = request.get("op")
    if op == "list":
        # CPU% needs a sampling window (0.1 s); only `get processes` shows it, a choice of process does not.
        try:
            # in_container: what choose_process needs to choose from this listing as the agent does here
            return {"status": "ok", "processes": processes.list_processes(request.get("pid"),
                                                                          cpu=request.get("cpu", True)),
                    "in_container": processes.came_by_exec()}
        except AgentError as exc:
            return exc.to_json()
    if op == "watch":
        return watch(int(request["pid"]), stop)
    try:
        if op == "exec":
            return run_exec(request)
        if op == "attach":
            from .debugserver import run_attach
            return run_attach(request, fetch_blob)
        if op == "check":
            from . import checks
            return checks.run(request["pid"])
        if op == "stack":
            from . import observe
            return observe.stack(request, emit, stop, code_cache)
        if op == "profile":
            from . import profiling
            return profiling.profile(request, emit, stop, window if request.get("sync") else None)
        if op == "trace":
            from .tracing import trace
            return trace(request, emit, stop, window if request.get("sync") else None)
        if op == "mem":
            from .memory import mem
            return mem(request, emit, stop, window if request.get("sync") else None)
        if op == "pdb":
            from .pdbsession import run_pdb
            return run_pdb(request, emit, stop)
        if op == "repl":
            from .pdbsession import run_repl
            return run_repl(request, emit, stop)
        return {"status": "error", "kind": "usage", "error": "unknown agent request %r" % (op,)}
    except AgentError as exc:
        return exc.to_json()


def watch(pid: int, stop=None) -> dict:
    """Wait until ``pid`` exits; then, if its parent starts another Python worker, return that worker's pid
    and ``why``: "reload" (a reloader replaced it after a code change) or "respawn" (a supervisor such as
    gunicorn's master restarted a worker that died). Returns early when ``stop`` is set (the CLI left).
    """
    import select
    from . import procfs
    try:
        parent = procfs.Proc(pid).ppid
    except ProcessLookupError:
        return {"status": "exited", "pid": pid}
    known = {p["pid"] for p in processes.list_processes(cpu=False)}  # before: the new worker is not in it
    waiter = select.poll()
    fds = []
    if hasattr(os, "pidfd_open"):
        try:
            fds.append(os.pidfd_open(pid))  # readable when the process exits: no polling of /proc
        except OSError:
            return {"status": "exited", "pid": pid}
    for fd in fds:
        waiter.register(fd, select.POLLIN)
    while True:
        # The pidfd wakes us the moment the process exits; the 0.2 s timeout only bounds how late we notice
        # that the CLI went away (stop), which costs nothing but one wake-up.
        events = waiter.poll(200)
        if stop is not None and stop.is_set():
            return {"status": "cancelled"}
        if events or not os.path.exists("/proc/%d" % pid):
            break
    for fd in fds:
        os.close(fd)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and os.path.exists("/proc/%d" % parent):
        if stop is not None and stop.is_set():
            return {"status": "cancelled"}
        # No kernel event announces a new child to a non-parent: look every 0.2 s until the reloader's
        # new worker appears (it usually takes well under a second).
        infos = processes.list_processes(cpu=False)
        for info in infos:
            if info["ppid"] == parent and info["pid"] not in known and info["role"] != "helper":
                roles = [i["role"] for i in infos if i["pid"] == parent]
                why = "reload" if roles == ["reload-parent"] else "respawn"
                return {"status": "restarted", "old": pid, "pid": info["pid"], "why": why}
        time.sleep(0.2)
    return {"status": "exited", "pid": pid}


def run_exec(request):
    from .session import Injection
    code = request["code"]
    injection = Injection(int(request["pid"]), request.get("timeout", 10.0))
    return injection.run({"op": "exec", "code": code, "timeout": injection.timeout,
                          "max_output": int(request.get("max_output", 1 << 20))},
                         code_for_check=code.encode("utf-8"))


def stdin_hung_up() -> bool:
    """Whether the writer of our stdin, the CLI's kubectl exec -i, has gone (the CLI was interrupted or killed, or
    kubectl died with it): POLLHUP on the pipe, without reading what may still be in it."""
    import select
    poller = select.poll()
    poller.register(0, 0)  # no events asked: POLLHUP and POLLERR are reported anyway
    try:
        return any(flags & (select.POLLHUP | select.POLLERR | select.POLLNVAL) for _fd, flags in poller.poll(0))
    except OSError:
        return False


def serve_stdio():
    """Pod side: read the request from stdin, answer on stdout (the real stdout, not the payload's)."""
    import _thread  # its lock, not threading's: threading costs ~4 ms of start-up in a pod, needed only to stream
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    lock = _thread.allocate_lock()

    def write(obj):
        with lock:  # events come from worker threads too
            stdout.write(protocol.encode(obj))
            stdout.flush()

    def fetch_blob(name):
        import base64
        write({protocol.NEED: name})
        reply = protocol.decode(stdin.readline() or b"{}")
        if protocol.BLOB not in reply:
            raise AgentError("debugpy", "the CLI could not supply %s" % name)
        return base64.b64decode(reply[protocol.BLOB])

    try:
        from . import wait as wait_mod  # shipped with the operations that inject
    except ImportError:
        wait_mod = None
    if wait_mod is not None:
        wait_mod.cli_gone = stdin_hung_up
    processes.OWN_CONTAINER_ONLY = True  # beside other containers' processes: list and choose our container's
    write(protocol.hello(python=sys.version.split()[0], pid=os.getpid()))
    try:
        request = protocol.decode(stdin.readline() or b"{}")
    except protocol.ProtocolError as exc:
        write({protocol.RESULT: protocol.error("protocol", str(exc))})
        return
    if request.get("op") in CHOOSING and stdin_hung_up():
        # The CLI gave up on us before we started (a slow start taken for a python3 that never answers, then
        # another interpreter tried): never run its request a second time beside the one that answered.
        write({protocol.RESULT: protocol.result(protocol.CANCELLED)})
        return
    if request.get("end_probes"):  # interpreters the CLI tried here before us never greeted: end what they left
        processes.end_probes(request["end_probes"])
    stop = window = None
    held = None  # a held streaming request's go, read by the one reader of stdin below

    def confirm():
        if held is not None:
            held[0].wait()
            return held[1] and not stop.is_set()
        try:
            return protocol.GO in protocol.decode(stdin.readline() or b"{}")
        except protocol.ProtocolError:
            return False

    if request.get("op") in STREAMING:
        import threading
        stop = threading.Event()
        window = Window(lambda info: write({protocol.EVENT: {"armed": info}}), threading.Event(), stop)
        # One reader of stdin: a held request's go is read here too. A second reader (confirm's readline)
        # lost the race for that line to this thread and waited forever: a held pdb gave no prompt.
        held = [threading.Event(), False] if request.get("hold") else None

        def watch_stdin():
            # A stop line, or EOF (the CLI exited, was killed, or kubectl's connection dropped), ends the op;
            # the first go confirms a held request, a go opens a sync operation's window.
            try:
                for line in iter(stdin.readline, b""):
                    message = protocol.decode(line)
                    if protocol.GO in message:
                        if held is not None and not held[0].is_set():
                            held[1] = True
                            held[0].set()
                        else:
                            window.go.set()
                    if protocol.STOP in message:
                        break
            except (OSError, ValueError):
                pass
            stop.set()
            if held is not None:
                held[0].set()

        threading.Thread(target=watch_stdin, daemon=True).start()

    write({protocol.RESULT: handle(request, fetch_blob, emit=lambda event: write({protocol.EVENT: event}),
                                   stop=stop, confirm=confirm, window=window)})


class Window:
    """A ``sync`` operation's start: ``arm(info)`` tells the CLI everything is in place (event ``armed``), then
    ``opened(seconds)`` waits for its go. The CLI sends go to every pod once all are armed, so every pod's
    window (sampling, or a probe's events) is one window, however long each pod took to get ready."""

    def __init__(self, arm, go, stop):
        self.arm, self.go, self.stop = arm, go, stop

    def opened(self, seconds) -> bool:
        """Whether the go came (False when it did not within ``seconds``, or the CLI stopped the operation)."""
        if self.stop.is_set():
            return False
        return self.go.wait(seconds) and not self.stop.is_set()
