"""attach's foreground on a pod: forward the debug port, keep the forward alive, follow a replaced worker.

Restarts of the forward share one budget, wherever they fail (the forward dying, or its restart failing), so
a transient failure during a restart never ends the session early, and a forward that keeps dying ends it.
"""
from __future__ import annotations

import time

from .. import errors
from ..agent.debugserver import server_answers
from ..errors import WandError

RESTARTS = 5  # port-forward restarts in a row before giving up


def foreground(opts, transport, pid, session):
    out, err = opts.streams.stdout, opts.streams.stderr
    remote_port = int(session["port"])
    with opts.step("forwarding the debug port"):
        forward = transport.forward(remote_port, opts.local_port)
    watch = None
    try:
        with opts.step("waiting for the debug server through the forward"):
            answers = server_answers("127.0.0.1", forward.local_port, 15.0)
        if not answers:
            raise WandError("the debug server does not answer through the port-forward on 127.0.0.1:%d"
                            % forward.local_port, errors.ENVIRONMENT)
        opts.report(transport, pid, session, forward.local_port, extra={"forwarding": True})
        out.write("\nForwarding 127.0.0.1:%d -> %s:%d (pid %d). Press Ctrl-C to stop.\n" % (
            forward.local_port, transport.where, remote_port, pid))
        out.flush()
        watch = transport.watch(pid)
        failures = 0
        while True:
            if not forward.wait(0.5):
                failures = restart(forward, failures, err)
                continue
            failures = 0
            if watch.done():
                result = watch.result or {}
                if result.get("status") != "restarted":
                    err.write("process %d in %s exited; nothing left to debug\n" % (pid, transport.where))
                    return errors.NOT_FOUND
                new = int(result["pid"])
                why = "reload" if result.get("why", "reload") == "reload" else "supervisor respawn"
                err.write("worker %d was replaced by %d (%s): attaching to it\n" % (pid, new, why))
                opts.start_server(transport, new)
                pid = new
                out.write("re-attached: debugpy listening in %s pid %d, still on 127.0.0.1:%d\n" % (
                    transport.where, pid, forward.local_port))
                out.flush()
                watch = transport.watch(pid)
    except KeyboardInterrupt:
        out.write("\nStopped forwarding. The debug server keeps listening on 127.0.0.1:%d inside %s (pid %d) "
                  "until that process exits; attach again to reuse it. No files were left in the pod.\n" % (
                      remote_port, transport.where, pid))
        return errors.OK
    finally:
        forward.close()
        if watch is not None:
            watch.cancel()


def restart(forward, failures, err):
    """Restart a dead forward on the same local port; every failed try counts against RESTARTS."""
    while True:
        failures += 1
        if failures > RESTARTS:
            raise WandError("kubectl port-forward keeps dying; giving up after %d restarts" % RESTARTS,
                            errors.ENVIRONMENT)
        err.write("port-forward ended; restarting it on 127.0.0.1:%d\n" % forward.local_port)
        time.sleep(min(2.0, 0.2 * 2 ** failures))  # back off: the API server or kubelet may be busy
        try:
            forward.restart()
            return failures
        except WandError as exc:
            err.write("restart failed: %s\n" % exc.message)
