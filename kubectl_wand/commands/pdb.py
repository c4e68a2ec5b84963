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

import threading

from .. import errors, report
from ..agent import protocol
from ..errors import WandError
from ..flags import DURATION, Flag
from .common import TARGET_FLAGS, TargetOptions, check_result, positive_seconds

SESSION_LIMIT = 7 * 24 * 3600.0  # a session lasts as long as the user wants; the agent call must not end it

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

    def complete(self, ns, streams):
        self.verb = "pdb"
        self.complete_target(ns, streams)

    def validate(self):
        self.validate_target()
        positive_seconds(self.timeout, "--timeout")

    def early_request(self):
        return None if self.pid else {"op": "list", "cpu": False}

    def request(self):
        return {"op": "pdb", "pid": self.known_pid(), "timeout": self.timeout}

    def run(self) -> int:
        err = self.streams.stderr
        transport = self.one_transport()
        ready = threading.Event()
        box = {}
        stop = threading.Event()

        def on_event(event):
            self.chosen(event)
            if "terminal" in event:
                box["terminal"] = event["terminal"]
                ready.set()

        def call():
            try:
                box["result"] = transport.agent(self.request(), timeout=SESSION_LIMIT, on_event=on_event, stop=stop)
            except WandError as exc:
                box["error"] = exc
            except BaseException as exc:  # reported in the main thread
                box["error"] = exc
            ready.set()

        worker = threading.Thread(target=call, daemon=True)
        with self.step("starting pdb in %s" % transport.where):
            worker.start()
            try:
                ready.wait()
            except KeyboardInterrupt:  # before the prompt: the agent drops the injection or detaches pdb
                stop.set()
                worker.join(15)
                raise
        if "terminal" in box:
            term = box["terminal"]
            try:
                transport.terminal(term["argv"], term["env"])
            finally:
                stop.set()  # the client ended (q, Ctrl-D, its kubectl gone): the agent detaches the target
            worker.join(60)
        if "error" in box:
            raise box["error"]
        result = box.get("result")
        if result is None:
            raise WandError("the agent in %s did not say whether pdb detached; check the app with `kubectl wand "
                            "stack`" % transport.where, errors.ENVIRONMENT)
        if result.get("status") in protocol.UNFINISHED:
            report.timed_out(result, err)
            return errors.TIMEOUT
        check_result(result, transport)
        if not result.get("detached"):
            err.write("warning: the target did not confirm that pdb detached (%s)\n" % result.get("reason"))
            return errors.ENVIRONMENT
        return errors.OK
