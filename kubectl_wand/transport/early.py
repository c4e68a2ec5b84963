"""The first agent call on a pod named on the command line, started before the pod is read from the API.

kubectl's start, the exec round trip and the agent's work then overlap reading the pod, instead of following
it. Until the CLI has read the pod, it only reads: a listing is read-only, and an exec-py request is sent with
``hold``: the agent chooses the process and then waits for the CLI's go. When the API read says the pod is not
Running, or that another container is the one to use, the call is dropped and nothing has happened. Without -c
it goes where kubectl sends it (the default-container annotation, else the first container); ``container`` is
filled in once the pod is known.

A terminal session's request (pdb, exec-py -it: it names its ``client`` socket) also starts the session's
launcher in the user's terminal at once (``kubectl exec -it``, transport/launcher.py): the second exec's start
(~0.15-0.3 s) then overlaps the first's and the API read instead of following the agent's first event. Dropped
with the call, ended gently (SIGTERM: kubectl puts the terminal back as it was).

The simple forms of a command line (quickstart.py) have this call spawned by the program's entry, before the
command line is parsed; it is claimed here only when it is exactly the call this would start.
"""
from __future__ import annotations

import atexit

from ..agent import protocol
from .. import pipes, quickstart
from . import sessionexec
from .kubectl import probe_marker, spawn_agent


class EarlyCall:
    python = "python3"

    def __init__(self, flags, namespace, pod, request, container=None):
        """``request``: a list (read-only as it is), or a request that the agent holds before touching
        anything until the CLI says go (``hold``)."""
        self.container, self.request = container, request
        argv = flags.kubectl_in(namespace, *quickstart.agent_exec_args(pod, container, self.python))
        started = quickstart.take(argv, request)  # the same call, spawned by the entry before the parse
        launcher = started.launcher if started is not None else None
        drop = getattr(started.proc, "session", None) if started is not None else None  # a one-exec session
        if started is not None:
            self.marker, self.proc = started.marker, started.proc
        elif sessionexec.wanted(request):  # the agent and the terminal's launcher in one kubectl exec -it
            self.marker = probe_marker()
            session = sessionexec.Session(flags, lambda *args: flags.kubectl_in(namespace, *args), pod, container,
                                          self.python, request["client"], request, self.marker)
            self.proc, launcher, drop = session.agent, session.kubectl, session
        else:
            self.marker = probe_marker()  # python3 may be a wrapper that never greets: the transport then ends it
            self.proc = spawn_agent(flags, argv + [self.marker], protocol.request(**request),
                                    short_lived=not request.get("client"))
        self.stderr = pipes.Drain(self.proc.stderr)
        self.terminal = None
        atexit.register(self.cancel)  # a verb that fails before it lists (check's pod rows) leaves none behind
        if request.get("client"):
            self.terminal = EarlyTerminal(flags, namespace, pod, container, self.python, request["client"], launcher,
                                          drop.drop if drop is not None else None)

    def answers(self, request) -> bool:
        """Whether this call is the answer to ``request``."""
        def same(r):
            return {k: v for k, v in r.items() if k not in ("hold", "v") and v is not None}
        return same(request) == same(self.request)

    def where_kubectl_went(self, pod):
        """The container kubectl picks without -c, as kubectl does it."""
        from ..kube.resolve import annotated_container  # imported after the spawn, which it must not delay
        first = (pod["spec"].get("containers") or [{}])[0].get("name")
        self.container = self.container or annotated_container(pod) or first
        if self.terminal is not None:
            self.terminal.container = self.container

    def take_terminal(self):
        """The session's launcher, now the transport's to wait for or end (None: not a terminal session)."""
        terminal, self.terminal = self.terminal, None
        return terminal

    def hand_over(self):
        """The transport reads this call now and closes it: nothing is left for the exit handler."""
        atexit.unregister(self.cancel)
        return self.proc

    def cancel(self):
        """Drop it: closing stdin makes a held agent return without touching anything."""
        if self.proc.poll() is None:
            self.proc.kill()
        pipes.close(self.proc)
        terminal = self.take_terminal()
        if terminal is not None:
            terminal.cancel()


class EarlyTerminal:
    """A terminal session's launcher, started with the early call (see the module's docstring)."""

    def __init__(self, flags, namespace, pod, container, python, name, proc=None, drop=None):
        """``proc``: the launcher quickstart.py already started for this session (None: start it here); ``drop``:
        how to end it when it is the one exec of a session (sessionexec.Session.drop: its pod side outlives
        kubectl)."""
        from .launcher import terminal_launcher
        self.container, self.python, self.drop = container, python, drop
        self.proc = proc or terminal_launcher(flags, lambda *args: flags.kubectl_in(namespace, *args), pod,
                                              container, python, name)
        atexit.register(self.cancel)

    def cancel(self):
        """End it: SIGTERM, which kubectl handles by putting the user's terminal back; SIGKILL if it lingers."""
        import subprocess
        atexit.unregister(self.cancel)
        if self.drop is not None:
            self.drop()  # tells the pod, then SIGTERM to kubectl
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
