"""The process listing of a pod named on the command line, started before the pod is read from the API.

kubectl's start, the exec round trip and the agent's work then overlap importing the kubernetes client and
reading the pod (about a third of a second each), instead of following them. It only reads: nothing is
written in the pod and no process is touched, so when the API read then says the pod is not Running, or that
another container is the one to use, it is dropped and nothing has happened. Without -c it goes where kubectl
sends it (the default-container annotation, else the first container); ``container`` is filled in once the
pod is known.
"""
from __future__ import annotations

import atexit

from ..agent import protocol
from ..kube.resolve import annotated_container
from . import pipes
from .bundle import AGENT_ARGS
from .kubectl import kubectl_in, spawn_agent


class EarlyList:
    python = "python3"

    def __init__(self, flags, namespace, pod, container=None):
        self.container = container
        args = ["exec", "-i", pod] + (["-c", container] if container else []) + ["--", self.python] + AGENT_ARGS
        self.proc = spawn_agent(flags, kubectl_in(flags, namespace, *args), protocol.request("list"))
        self.stderr = pipes.Drain(self.proc.stderr)
        atexit.register(self.cancel)  # a verb that fails before it lists (check's pod rows) leaves none behind

    @staticmethod
    def answers(request) -> bool:
        """Whether this listing is the answer to ``request``."""
        return request.get("op") == "list" and not request.get("pid")

    def where_kubectl_went(self, pod):
        """The container kubectl picks without -c, as kubectl does it."""
        first = (pod["spec"].get("containers") or [{}])[0].get("name")
        self.container = self.container or annotated_container(pod) or first

    def cancel(self):
        if self.proc.poll() is None:
            self.proc.kill()
        pipes.close(self.proc)
