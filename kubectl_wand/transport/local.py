"""Local transport: the agent runs in this process; the target's 127.0.0.1 is ours (same network), or, for a
process in a network namespace of its own (a bubblewrap sandbox: ``bwrap --unshare-all``), reached through that
namespace (transport/netns.py)."""
from __future__ import annotations

from .. import errors
from ..agent import protocol
from ..errors import WandError
from . import Forward, Transport, Watch


class SameHost(Forward):
    def __init__(self, port: int):
        self.local_port = port

    def alive(self) -> bool:
        import socket  # socket and threading only where used: `stack pid/N` needs neither (~3 ms of imports)
        try:
            with socket.create_connection(("127.0.0.1", self.local_port), timeout=1):
                return True
        except OSError:
            return False

    def wait(self, timeout: float) -> bool:
        import threading
        threading.Event().wait(timeout)
        return self.alive()


class LocalWatch(Watch):
    def __init__(self, pid):
        import threading
        from ..agent import main
        self.stop = threading.Event()
        self._done = threading.Event()

        def run():
            self.result = main.watch(pid, self.stop)
            self._done.set()

        threading.Thread(target=run, daemon=True).start()

    def done(self) -> bool:
        return self._done.is_set()

    def cancel(self):
        self.stop.set()


class LocalTransport(Transport):
    local = True
    forwarded = False  # the target's 127.0.0.1 is ours

    def __init__(self, pid=None):
        self.pid = pid
        self.where = "pid %s" % pid if pid else "this machine"
        self.labels = {}
        self.forwarded = bool(pid) and other_network(pid)  # a sandbox's 127.0.0.1 is not ours

    def agent(self, request: dict, timeout: float, on_event=None, stop=None) -> dict:
        """The agent's result, checked as a pod's would be (protocol.check_op_result): what the target sent
        passed the agent's limits already; this keeps one rule for every transport."""
        result = self._agent(request, timeout, on_event, stop)
        try:
            return protocol.check_op_result(request.get("op"), result, "the agent's result")
        except protocol.ProtocolError as exc:
            raise WandError("the agent for %s answered out of protocol: %s" % (self.where, exc), errors.PROTOCOL)

    def _agent(self, request, timeout, on_event, stop):
        from .. import usercache
        from ..agent import main  # the same agent that runs in pods, called in-process
        kw = {} if stop is None else {"stop": stop}

        def call():
            return main.handle(request, fetch_blob=ship, emit=on_event, code_cache=usercache, **kw)

        if self.forwarded:  # a sandbox: the agent's port checks must see its 127.0.0.1, from a thread in there
            from .netns import entered
            call = entered(self.pid, call)
        elif stop is None:
            return call()
        # A streaming operation runs in a worker thread, so Ctrl-C in the main thread can set ``stop`` and
        # still collect the result (a profile writes what it sampled). Its end is an Event, not join(): on
        # CPython <= 3.12 a join interrupted by a signal marks the thread as stopped while it still runs, and
        # every later join returns at once (seen: SIGTERM, then no result and no profile written).
        import threading
        box, done = {}, threading.Event()

        def work():
            try:
                box["result"] = call()
            except BaseException as exc:  # raised here, in the caller's thread
                box["error"] = exc
            finally:
                done.set()

        threading.Thread(target=work, daemon=True).start()
        try:
            while not done.wait(0.2):
                pass
        except KeyboardInterrupt:
            if stop is None:
                raise
            stop.set()
            done.wait(timeout)
            if "result" not in box and "error" not in box:
                raise
        if "error" in box:
            raise box["error"]
        return box["result"]

    def terminal(self, name: str, failed=None) -> int:
        import sys
        from .. import pipes
        from .launcher import end_if, launcher_args
        def spawn():
            return pipes.spawn(launcher_args(sys.executable, name), stdin=None, stdout=None, stderr=None,
                               interactive=True)

        if self.forwarded:
            # A sandbox: the agent listens in its network namespace (_agent), where abstract socket names
            # live; the launcher is forked from this thread while it is in there, so it starts there (seen:
            # outside it, it never found the name, and the session failed after a minute). This thread, not
            # a short-lived one: the launcher dies with the thread that started it (PR_SET_PDEATHSIG).
            from .netns import entered
            proc = entered(self.pid, spawn)()
        else:
            proc = spawn()
        end_if(proc, failed)
        return wait_ignoring_sigint(proc)

    def describe(self, pid: int) -> str:
        return "pid %d" % pid

    def watch(self, pid: int) -> Watch:
        return LocalWatch(pid)

    def forward(self, remote_port: int, local_port=None) -> Forward:
        if self.forwarded:
            from .netns import NetnsForward
            return NetnsForward(self.pid, remote_port, local_port)
        return SameHost(remote_port)


def other_network(pid: int) -> bool:
    """Whether process ``pid`` lives in another network namespace than ours (False when it cannot be told)."""
    import os
    try:
        return os.stat("/proc/%d/ns/net" % pid).st_ino != os.stat("/proc/self/ns/net").st_ino
    except OSError:
        return False


def ship(name):
    from .. import debugpy_bundle  # only when a target lacks debugpy: importlib.util costs start-up time
    return debugpy_bundle.blob(name)


def wait_ignoring_sigint(proc) -> int:
    """Wait for a child that owns the terminal: Ctrl-C there is its (the terminal's foreground group gets
    SIGINT; the child handles it), never the end of this process."""
    import signal
    try:
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: it cannot get SIGINT anyway
        return proc.wait()
    try:
        return proc.wait()
    finally:
        signal.signal(signal.SIGINT, old)
