"""The one interface between the verbs and the place a target lives.

A transport runs the agent beside the target and makes a port inside the target's network reachable on this
machine. Everything above it (the verbs) is shared; the implementations sit side by side:
``local`` (pid/N on this machine: the agent runs in-process) and ``kubectl`` (a container in a pod:
``kubectl exec -i`` and ``kubectl port-forward``; ``ephemeral``: the same from a debug container; ``engine``: a
Docker or Podman container, ``docker exec -i`` and its network namespace entered (``netns``)).

Owns: running the agent beside a target (the agent's sources as they travel: ``bundle``; the first call on a
pod started before it is read: ``early``) and forwards (``portforward``). Below it: kube/ (the API side and
starting kubectl) and kubectl_wand.pipes (child processes). Verbs sit above: they get transports only from
TargetOptions (commands/common.py: this machine, pid/N, or transport/pods.py for a target's pods).
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
    """Everything a verb may ask of the place a target lives. Verbs never branch on which transport they hold:
    what differs between places is an answer here (a pod's name, whether a port needs forwarding, what to
    suggest when rights are missing), so a new kind of place (a docker container) is a new subclass."""

    #: a short human name for messages: "pid 123", "pod/web-1", "pod/web-1 -c app"
    where: str = ""
    #: extra columns for listings: pod, container, namespace (empty locally)
    labels: dict = {}
    #: the place's name among the target's places, what --pod matches (a pod's name); None where there is one
    name: str = None
    #: whether a port there must be forwarded to be reached here (False: the target shares this machine's network)
    forwarded: bool = True
    #: whether paths here equal the target's (editor path mappings)
    local: bool = False

    def agent(self, request: dict, timeout: float, on_event=None, stop=None) -> dict:
        """Run one agent request beside the target; its result (a protocol result dict).

        ``on_event(event)`` receives a streaming operation's events; setting ``stop`` (a threading.Event)
        ends such an operation early, and its result still comes back. A ``sync`` request's agent says
        ``{"armed": ...}`` when ready and waits: its window opens when ``on_event`` returns from that event."""
        raise NotImplementedError

    def watch(self, pid: int) -> Watch:
        raise NotImplementedError

    def terminal(self, name: str, failed=None) -> int:
        """Run a terminal session's launcher (transport/launcher.py) beside the target, its stdin, stdout and
        stderr the user's terminal (a TTY there when ours is one: ``kubectl exec -it``); its exit code once it
        ends. It connects to the agent's socket ``name`` and becomes the client the agent names (pdb's, under
        the target's interpreter). Ctrl-C goes to it, not to us, meanwhile. A launcher started ahead with the
        agent's early call is the one waited for. ``failed`` (a threading.Event): set when the agent's call
        ended without a session; the launcher is then ended (launcher.end_if)."""
        raise NotImplementedError

    def drop_terminal(self):
        """End a launcher started ahead that no session will use (the agent's call failed or was dropped), so
        the terminal is ours again before an error is printed; nothing when there is none."""

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

    def describe(self, pid: int) -> str:
        """A process here, for messages and editor configuration names: "pod/web-1 pid 7", "pid 7"."""
        return "%s pid %d" % (self.where, pid)

    def alternative(self, having: str) -> str:
        """A hint appended to an error when the agent here lacks something (``having``: "with SYS_PTRACE of its
        own"): another way to work with this target that has it, or "" when there is none."""
        return ""

    def identity(self):
        """What stays the same while the place is the same place (a pod's uid); None where it cannot change."""
        return None

    def started(self) -> str:
        """When the place started, as a sortable string (the newest replacement is followed); "" if unknown."""
        return ""

    def replaces(self, old) -> bool:
        """Whether this place holds a new process where ``old`` stood: another pod of the workload, or the same
        pod with its container restarted. Nothing replaces a local process."""
        return False

    def adopt(self, early):
        """Take over an agent call started before the place was known, or drop it (``early.cancel()``)."""
        early.cancel()

    def local_root(self, remote_root: str) -> str:
        """The local folder that matches ``remote_root`` for an editor's path mapping."""
        return remote_root if self.local else "${workspaceFolder}"

    def forward_hint(self, local_port: int, remote_port: int) -> str:
        """How the user forwards the port themselves (attach --no-forward)."""
        return ""
