"""The one interface between the verbs and the place a target lives.

A transport runs the agent beside the target and makes a port inside the target's network reachable on this
machine. Everything above it (the verbs) is shared; the implementations sit side by side:
``local`` (pid/N on this machine: the agent runs in-process) and ``kubectl`` (a container in a pod:
``kubectl exec -i`` and ``kubectl port-forward``; ``ephemeral``: the same from a debug container).

Owns: running the agent beside a target (the agent's sources as they travel: ``bundle``; the first call on a
pod started before it is read: ``early``) and forwards (``portforward``). Below it: kube/ (the API side and
starting kubectl) and kubectl_wand.pipes (child processes); verbs sit above and never import an
implementation's module for anything but making one.
"""
from __future__ import annotations


class Forward:
    """A forwarded port. ``local_port`` answers on 127.0.0.1 while ``alive()``."""

    local_port: int

    def alive(self) -> bool:
        raise NotImplementedError

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds or until the forward dies; return ``alive()``."""
        raise NotImplementedError

    def restart(self):
        """Start the forward again on the same local port (the editor's configuration names it)."""

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Watch:
    """An agent beside the target that reports when a process exits (and what replaced it)."""

    result = None

    def done(self) -> bool:
        raise NotImplementedError

    def cancel(self):
        pass


class Transport:
    #: a short human name for messages: "pid 123", "pod/web-1", "pod/web-1 -c app"
    where: str = ""
    #: extra columns for listings: pod, container, namespace (empty locally)
    labels: dict = {}
    #: whether paths here equal the target's (editor path mappings, --no-forward hints)
    local: bool = False
    #: whether the agent runs in an ephemeral debug container of the pod (not the target's own container)
    ephemeral: bool = False

    def agent(self, request: dict, timeout: float, on_event=None, stop=None) -> dict:
        """Run one agent request beside the target; its result (a protocol result dict).

        ``on_event(event)`` receives a streaming operation's events; setting ``stop`` (a threading.Event)
        ends such an operation early, and its result still comes back."""
        raise NotImplementedError

    def watch(self, pid: int) -> Watch:
        raise NotImplementedError

    def forward(self, remote_port: int, local_port=None) -> Forward:
        raise NotImplementedError

    def present(self) -> bool:
        """Whether the place itself still exists (a deleted or stopped pod does not); a process's exit is a
        watch's business."""
        return True

    def checks(self) -> list:
        """`check` rows about the place itself (pod, container, RBAC); none locally."""
        return []

    def permission_fix(self):
        """How to give the injector ptrace rights here, or None when that is not the problem."""
        return None

    def forward_allowed(self):
        """Whether we may forward ports here: True, False, or None when it cannot be told."""
        return True

    def local_root(self, remote_root: str) -> str:
        """The local folder that matches ``remote_root`` for an editor's path mapping."""
        return remote_root if self.local else "${workspaceFolder}"

    def forward_hint(self, local_port: int, remote_port: int) -> str:
        """How the user forwards the port themselves (attach --no-forward)."""
        return ""
