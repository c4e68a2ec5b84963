"""The one interface between the verbs and the place the target lives.

A transport runs the agent beside the target (``agent(request)``) and makes a port inside the target's
network reachable on this machine (``forward(remote_port, local_port)``). Two implementations:
``local`` (pid/N on this machine) and ``kubectl`` (a container in a pod, via kubectl exec/port-forward).
"""
from __future__ import annotations


class Forward:
    """A forwarded port. ``local_port`` answers on 127.0.0.1 while ``alive()``."""

    local_port: int

    def alive(self) -> bool:
        raise NotImplementedError

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Transport:
    #: a short human name for messages: "pid 123", "pod/web-1 (container app)"
    where: str
    #: whether local paths equal the target's (for editor path mappings)
    local: bool = False

    def agent(self, request: dict, timeout: float) -> dict:
        raise NotImplementedError

    def forward(self, remote_port: int, local_port=None) -> Forward:
        raise NotImplementedError
