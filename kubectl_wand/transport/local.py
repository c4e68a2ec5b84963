"""Local transport: the agent runs in this process; the target's 127.0.0.1 is ours (same network)."""
from __future__ import annotations

import socket
import threading

from . import Forward, Transport, Watch


class SameHost(Forward):
    def __init__(self, port: int):
        self.local_port = port

    def alive(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.local_port), timeout=1):
                return True
        except OSError:
            return False

    def wait(self, timeout: float) -> bool:
        threading.Event().wait(timeout)
        return self.alive()


class LocalWatch(Watch):
    def __init__(self, pid):
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

    def agent(self, request: dict, timeout: float, on_event=None, stop=None) -> dict:
        from ..agent import main  # the same agent that runs in pods, called in-process
        if stop is None:
            return main.handle(request, fetch_blob=ship, emit=on_event)
        # A streaming operation runs in a worker thread, so Ctrl-C in the main thread can set ``stop`` and
        # still collect the result (a profile writes what it sampled).
        box, finished = {}, threading.Event()

        def work():
            try:
                box["result"] = main.handle(request, fetch_blob=ship, emit=on_event, stop=stop)
            finally:
                finished.set()

        worker = threading.Thread(target=work, daemon=True)
        worker.start()
        try:
            while not finished.wait(0.2):
                pass
        except KeyboardInterrupt:
            stop.set()
            # An Event, not worker.join: a join interrupted by Ctrl-C (Python 3.11) leaves the thread looking
            # finished to the next join, which then returned at once, before the worker's result.
            finished.wait(timeout)
            if "result" not in box:
                raise
        return box["result"]

    def describe(self, pid: int) -> str:
        return "pid %d" % pid

    def watch(self, pid: int) -> Watch:
        return LocalWatch(pid)

    def forward(self, remote_port: int, local_port=None) -> Forward:
        return SameHost(remote_port)


def ship(name):
    from .. import debugpy_bundle  # only when a target lacks debugpy: importlib.util costs start-up time
    return debugpy_bundle.blob(name)
