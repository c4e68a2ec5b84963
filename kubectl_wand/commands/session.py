"""A session in this terminal with an agent op that keeps its connection to the target (pdb, exec-py -it).

The request names the session's socket (``client``, made here); the agent listens there, says so
(``{"terminal": ...}``), injects the op's server and relays it to the client (agent/pdbsession.py). The
transport runs the session's launcher with this terminal (``Transport.terminal``; in a pod it was started
with the agent's early call when the pod is named alone), which connects and becomes the client the agent
names (the target's own interpreter). When the client ends, the agent is stopped: it has the target take
everything back, and its result says whether the target confirmed.
"""
from __future__ import annotations

import threading

from .. import errors, report
from ..agent import protocol
from ..errors import WandError
from .common import check_result

SESSION_LIMIT = 7 * 24 * 3600.0  # a session lasts as long as the user wants; the agent call must not end it


def client_name(op: str) -> str:
    """A fresh name for a session's socket (an abstract Unix socket in the target's network namespace), or the
    one the entry's early start already sent (quickstart.py)."""
    from .. import quickstart
    return quickstart.reserved_client(op) or quickstart.new_client_name(op)


def run_session(opts, transport, request, what) -> int:
    """The session's exit code: OK once the target confirmed it took everything back."""
    err = opts.streams.stderr
    ready = threading.Event()
    box = {}
    stop = threading.Event()

    def on_event(event):
        opts.chosen(event)
        if "terminal" in event:
            box["terminal"] = event["terminal"]
            ready.set()

    failed = threading.Event()  # the call ended without a session: the launcher waiting for one is ended

    def call():
        try:
            box["result"] = transport.agent(request, timeout=SESSION_LIMIT, on_event=on_event, stop=stop)
        except BaseException as exc:  # reported in the main thread
            box["error"] = exc
        if "error" in box or (box.get("result") or {}).get("status") != protocol.OK:
            failed.set()
        ready.set()

    worker = threading.Thread(target=call, daemon=True)
    with opts.step("starting %s in %s" % (what, transport.where)):
        worker.start()
        try:
            ready.wait()
        except KeyboardInterrupt:  # before the prompt: the agent drops the injection or detaches the target
            stop.set()
            transport.drop_terminal()
            worker.join(15)
            if (box.get("result") or {}).get("status") not in protocol.UNFINISHED:
                raise
            report.timed_out(box["result"], err)  # what stays (the queued bootstrap), as after a Ctrl-C there
            return errors.INTERRUPTED
    client = errors.OK
    if "terminal" in box:
        try:
            client = transport.terminal(request["client"], failed)
        finally:
            stop.set()  # the client ended (its exit, Ctrl-D, its kubectl gone): the agent detaches the target
        worker.join(60)
    transport.drop_terminal()  # a launcher started ahead for a session that did not start: the terminal is ours
    if "error" in box:
        raise box["error"]
    result = box.get("result")
    if result is None:
        raise WandError("the agent in %s did not say whether %s detached; check the app with `kubectl wand "
                        "stack`" % (transport.where, what), errors.ENVIRONMENT)
    if result.get("status") in protocol.UNFINISHED:
        report.timed_out(result, err)
        # given up before the first prompt (Ctrl-C reached the client, which left): the agent stopped waiting
        return errors.INTERRUPTED if result.get("interrupted") else errors.TIMEOUT
    check_result(result, transport)
    if result.get("status") == protocol.CANCELLED:  # the client left before the agent began: nothing was touched
        return errors.INTERRUPTED if client == errors.INTERRUPTED else errors.ENVIRONMENT
    if client == errors.PROTOCOL:  # the client said which message of the target's broke the protocol
        return errors.PROTOCOL
    if not result.get("detached"):
        err.write("warning: the target did not confirm that %s detached (%s)\n" % (what, result.get("reason")))
        return errors.ENVIRONMENT
    return errors.OK
