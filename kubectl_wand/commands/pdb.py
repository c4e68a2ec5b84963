"""`kubectl wand pdb TARGET`: CPython's own pdb prompt on the live process, in this terminal.

Flow: the agent injects pdb's remote server into the target (agent/pdbsession.py, passengers/pdbserver.py)
and names the client command (pdb's own client under the target's interpreter); the transport runs it with
this terminal (``Transport.terminal``: here directly, ``kubectl exec -it`` in a pod) while the agent relays
the two. The session ends with ``q``, Ctrl-D, the client's terminal or kubectl closing, or the target
exiting; every way ends with the target's pdb taken back (no breakpoint, no trace function, no thread).
A main thread that never reaches a safe point within --timeout is reported where it is blocked, as exec-py
does, and nothing of pdb runs.
"""
from __future__ import annotations

from ..flags import DURATION, Flag
from .common import TARGET_FLAGS, TargetOptions, positive_seconds
from .session import client_name, run_session

DESCRIPTION = ("Open pdb's prompt on the live process in this terminal (CPython 3.14's remote pdb, breakpoints in "
               "every thread); q or Ctrl-D detaches and leaves the app running with nothing of pdb in it.")
FLAGS = (
    Flag("target", nargs="?", help="POD, TYPE/NAME or pid/N"),
    Flag("--timeout", value=DURATION, default=10.0,
         help="how long the main thread may take to reach a safe point, e.g. 10 or 30s (default 10s)"),
) + TARGET_FLAGS


class Options(TargetOptions):
    flags = FLAGS
    timeout: float = 10.0
    client: str = None  # the session's socket name (commands/session.py)

    def complete(self, ns, streams):
        self.verb = "pdb"
        self.complete_target(ns, streams)
        self.client = client_name("pdb")

    def validate(self):
        self.validate_target()
        positive_seconds(self.timeout, "--timeout")

    def early_request(self):
        # the session itself, held until the pod is read (transport/early.py; its launcher starts with it)
        return None if self.pid else dict(self.request(), hold=True)

    def request(self):
        return {"op": "pdb", "pid": self.known_pid(), "timeout": self.timeout, "client": self.client}

    def run(self) -> int:
        return run_session(self, self.one_transport(), self.request(), "pdb")
