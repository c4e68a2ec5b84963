"""attach on a pod: forward the debug port, stay in the foreground, heal the forward, follow reloads."""
from __future__ import annotations

import json
import threading
import time

from .. import errors
from ..agent.debugserver import server_answers
from .transport import close, lines

RESTARTS = 5  # port-forward restarts in a row before giving up


class Watcher:
    """A long-lived agent in the pod that answers when the process exits (and names its replacement)."""

    def __init__(self, transport, pid):
        self.result = None
        self.done = threading.Event()
        self.proc = transport.start_agent(transport.python or "python3",
                                          {"op": "watch", "pid": pid, "stdin_watch": True}, short_lived=False)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        try:
            for line in lines(self.proc.stdout, time.monotonic() + 10 ** 9):
                msg = json.loads(line)
                if "result" in msg:
                    self.result = msg["result"]
                    break
        except (OSError, ValueError):
            pass
        self.done.set()

    def cancel(self):
        close(self.proc)  # closing its stdin ends the agent in the pod; nothing stays behind


def foreground(opts, out, err, transport, pid, session):
    a = opts.args
    remote_port = int(session["port"])
    if a.no_forward:
        code = opts.report(out, err, transport, pid, session, remote_port, extra={"forwarding": False})
        err.write("not forwarding (--no-forward); to reach it: kubectl port-forward --address 127.0.0.1 -n %s "
                  "pod/%s %d:%d\n" % (transport.namespace, transport.name, a.local_port or remote_port, remote_port))
        return code
    from ..spinner import step
    with step(a, "forwarding the debug port"):
        forward = transport.forward(remote_port, a.local_port)
    watcher = None
    try:
        with step(a, "waiting for the debug server through the forward"):
            answers = server_answers("127.0.0.1", forward.local_port, 15.0)
        if not answers:
            raise errors.WandError("the debug server does not answer through the port-forward on 127.0.0.1:%d"
                                   % forward.local_port, errors.ENVIRONMENT)
        opts.report(out, err, transport, pid, session, forward.local_port, extra={"forwarding": True})
        out.write("\nForwarding 127.0.0.1:%d -> %s:%d (pid %d). Press Ctrl-C to stop.\n" % (
            forward.local_port, transport.where, remote_port, pid))
        out.flush()
        watcher = Watcher(transport, pid)
        failures = 0
        while True:
            if not forward.wait(0.5):
                failures += 1
                if failures > RESTARTS:
                    raise errors.WandError("kubectl port-forward keeps dying; giving up after %d restarts" % RESTARTS,
                                           errors.ENVIRONMENT)
                err.write("port-forward ended; restarting it on 127.0.0.1:%d\n" % forward.local_port)
                time.sleep(min(2.0, 0.2 * 2 ** failures))  # back off: the API server or kubelet may be busy
                forward.requested = forward.local_port  # keep the port the editor was told about
                forward.start()
                continue
            failures = 0
            if watcher.done.is_set():
                result = watcher.result or {}
                if result.get("status") != "restarted":
                    err.write("process %d in %s exited; nothing left to debug\n" % (pid, transport.where))
                    return errors.NOT_FOUND
                new = int(result["pid"])
                err.write("worker %d was replaced by %d (reload): attaching to it\n" % (pid, new))
                from ..commands.attach import start_server
                start_server(transport, new, a)
                pid = new
                out.write("re-attached: debugpy listening in %s pid %d, still on 127.0.0.1:%d\n" % (
                    transport.where, pid, forward.local_port))
                out.flush()
                watcher = Watcher(transport, pid)
    except KeyboardInterrupt:
        out.write("\nStopped forwarding. The debug server keeps listening on 127.0.0.1:%d inside %s (pid %d) "
                  "until that process exits; attach again to reuse it. No files were left in the pod.\n" % (
                      remote_port, transport.where, pid))
        return errors.OK
    finally:
        forward.close()
        if watcher is not None:
            watcher.cancel()
