"""Local transport: the agent runs in this process; the target's 127.0.0.1 is ours (same network)."""
from __future__ import annotations

import socket

from . import Forward, Transport


class SameHost(Forward):
    def __init__(self, port: int):
        self.local_port = port

    def alive(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.local_port), timeout=1):
                return True
        except OSError:
            return False


class LocalTransport(Transport):
    local = True

    def __init__(self, pid=None):
        self.pid = pid
        self.where = "pid %s" % pid if pid else "this machine"

    def agent(self, request: dict, timeout: float) -> dict:
        from ..agent import main  # the same agent that runs in pods, called in-process
        return main.handle(request, fetch_blob=ship)

    def forward(self, remote_port: int, local_port=None) -> Forward:
        return SameHost(remote_port)


def ship(name):
    from .. import debugpy_bundle  # only when a target lacks debugpy: importlib.util costs start-up time
    return debugpy_bundle.blob(name)
