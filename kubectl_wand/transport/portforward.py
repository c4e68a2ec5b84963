"""``kubectl port-forward --address 127.0.0.1`` to a pod port; ready once kubectl reports its listener."""
from __future__ import annotations

import re
import subprocess
import time

from .. import errors, pipes
from ..errors import WandError
from . import Forward

READY_TIMEOUT = 20.0


class PortForward(Forward):
    def __init__(self, transport, remote_port, local_port=None, timeout=READY_TIMEOUT):
        self.transport, self.remote_port = transport, remote_port
        self.requested = local_port  # None: the pod's port number if free, else any; 0: any free port
        self.proc = None
        self.local_port = None
        self.start(timeout)

    def start(self, timeout=READY_TIMEOUT):
        # The editor config names the port: keep it across restarts; prefer the pod's port number first.
        want = self.local_port or (self.requested if self.requested is not None else self.remote_port)
        if want and not port_free(want):
            if self.requested or self.local_port:
                raise WandError("local port %d is busy; choose another with --local-port" % want, errors.ENVIRONMENT)
            want = 0
        spec = "%d:%d" % (want, self.remote_port) if want else ":%d" % self.remote_port
        argv = self.transport.kubectl("port-forward", "--address", "127.0.0.1", "pod/%s" % self.transport.name, spec)
        self.proc = self.transport.flags.spawn(argv, short_lived=False, stdin=subprocess.DEVNULL)
        stderr = pipes.Drain(self.proc.stderr)
        deadline = time.monotonic() + timeout
        try:
            for line in pipes.lines(self.proc.stdout, deadline):
                m = re.match(r"Forwarding from 127\.0\.0\.1:(\d+) ->", line.decode("utf-8", "replace"))
                if m:
                    self.local_port = int(m.group(1))
                    self.stdout_drain = pipes.Drain(self.proc.stdout)
                    return
        except (TimeoutError, ValueError):  # ValueError: a line over pipes.LINE_MAX
            pass
        pipes.close(self.proc)
        text = stderr.text()
        if "forbidden" in text.lower():
            raise WandError("kubectl port-forward to pod/%s is forbidden (RBAC): grant create on pods/portforward "
                            "in namespace %s" % (self.transport.name, self.transport.namespace), errors.ENVIRONMENT)
        raise WandError("kubectl port-forward to pod/%s failed: %s" % (self.transport.name, pipes.last_line(text) or
                                                                      "no listener within %gs" % timeout),
                        errors.ENVIRONMENT)

    def restart(self):
        self.start()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait(self, timeout):
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        return self.alive()

    def close(self):
        if self.proc is not None:
            pipes.close(self.proc)


def port_free(port: int) -> bool:
    from ..agent.debugserver import port_taken  # the same probe the agent uses beside the target
    return not port_taken("127.0.0.1", port)
