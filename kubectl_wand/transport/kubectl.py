"""Kubectl transport: the agent runs in the target's container via ``kubectl exec -i`` (its own Python,
sources over stdin); ports come here via ``kubectl port-forward --address 127.0.0.1`` (``portforward``).

Which interpreter runs the agent: ``python3``, ``python``, ``python3.14`` on the container's PATH, then the
absolute path of a Python that the container's command names in the pod spec (an image whose Python lives
only at such a path still works). A candidate counts once the agent's hello arrives: anything else (not
found, not a Python) moves on to the next. Never ``/proc/1/exe`` or any binary not known to be a Python:
seen in the e2e tests, `kubectl exec POD -c sidecar -- /proc/1/exe ...` started a second copy of the sidecar.
"""
from __future__ import annotations

import os
import threading
import time

from .. import errors
from ..agent import protocol
from ..errors import WandError
from .. import pipes
from . import Transport, Watch
from .bundle import AGENT_ARGS, agent_header, boot_line

PYTHONS = ("python3", "python", "python3.14")  # tried in order inside the container
EPHEMERAL_HINT = ("; or add --ephemeral: kubectl wand then works from an ephemeral debug container in the pod, %s, "
                  "that shares the app's processes (no restart)")
NO_PYTHON_HINT = (", or add --ephemeral: the agent then runs in an ephemeral debug container of the app's image "
                  "(its python3, or --image IMAGE's) that shares the app's processes (no restart)")


def spawn_agent(flags, argv, request, short_lived=True, extra=()):
    """Start ``kubectl exec -i ... python -c LOADER`` and send it the agent and the request."""
    proc = flags.spawn(argv, short_lived)
    # kubectl may already have exited (forbidden, no such pod...): its stderr says why, read by the caller
    pipes.write_line(proc, boot_line() + agent_header(request.get("op"), extra) + protocol.encode(request))
    return proc


class NoInterpreter(Exception):
    pass


class KubectlWatch(Watch):
    """A long-lived agent in the pod that answers when the process exits (and names its replacement)."""

    def __init__(self, transport, pid):
        self._done = threading.Event()
        request = protocol.request("watch", pid=pid)
        self.proc = spawn_agent(transport.flags, transport.exec_argv(transport.python or "python3"), request,
                                short_lived=False)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        try:
            for line in pipes.lines(self.proc.stdout, time.monotonic() + 10 ** 9):
                msg = protocol.decode(line)
                if protocol.RESULT in msg:
                    self.result = protocol.check_result(msg[protocol.RESULT])
                    break
        except (OSError, ValueError):
            pass
        self._done.set()

    def done(self) -> bool:
        return self._done.is_set()

    def cancel(self):
        pipes.close(self.proc)  # closing its stdin ends the agent in the pod; nothing stays behind


class KubectlTransport(Transport):
    agent_extra = ()  # agent modules shipped beside what an operation needs (agent.CROSS_CONTAINER)

    def __init__(self, flags, pod: dict, containers, explicit=False, all_namespaces=False):
        """``containers``: candidates, best first; without -c (explicit) the first that has Python wins."""
        self.flags, self.pod = flags, pod
        self.candidates, self.explicit = list(containers), explicit
        self.name = pod["metadata"]["name"]
        self.namespace = pod["metadata"]["namespace"]
        self.all_namespaces = all_namespaces
        self.python = None
        self.early = None
        self.use(self.candidates[0])

    def use(self, container):
        self.container = container
        many = len(self.pod["spec"].get("containers") or []) > 1
        self.where = "pod/%s%s" % (self.name, (" -c %s" % container) if many else "")
        self.labels = {"pod": self.name, "container": container, "namespace": self.namespace}

    def kubectl(self, *args):
        return self.flags.kubectl_in(self.namespace, *args)

    def exec_argv(self, python):
        return self.kubectl("exec", "-i", self.name, "-c", self.container, "--", python, *AGENT_ARGS)

    def pythons(self):
        """Interpreters to try in the current container, most likely first."""
        found = list(PYTHONS)
        spec = next((c for c in self.pod["spec"].get("containers") or [] if c["name"] == self.container), {})
        first = (list(spec.get("command") or []) + list(spec.get("args") or []) + [""])[0]
        if first.startswith("/") and "python" in os.path.basename(first):
            found.append(first)
        return found

    # -- the agent --------------------------------------------------------------------------------------
    def agent(self, request: dict, timeout: float, on_event=None, stop=None) -> dict:
        request = protocol.request(**request) if "v" not in request else request
        if self.python:
            return self._agent_once(self.python, request, timeout, on_event, stop)
        containers = [self.container] if self.explicit else self.candidates
        for container in containers:
            self.use(container)
            for python in self.pythons():
                try:
                    result = self._agent_once(python, request, timeout, on_event, stop)
                except NoInterpreter:
                    continue
                self.python = python
                return result
        self.use(containers[0])
        if self.explicit or len(containers) == 1:
            raise WandError("container %s in pod/%s has no Python interpreter (%s not found on PATH, and the pod "
                            "spec names none); choose the Python container with -c%s" % (
                                self.container, self.name, "/".join(PYTHONS), NO_PYTHON_HINT), errors.NOT_FOUND)
        raise WandError("no container in pod/%s has a Python interpreter (tried %s)%s" % (
            self.name, ", ".join(containers), NO_PYTHON_HINT), errors.NOT_FOUND)

    def adopt(self, early):
        """Take a listing started before the pod was read, if it went to the container we would choose."""
        if early.container == self.container:
            self.early = early
        else:
            early.cancel()

    def _agent_once(self, python, request, timeout, on_event=None, stop=None):
        early, self.early = self.early, None
        if early is not None and (python != early.python or not early.answers(request)):
            early.cancel()
            early = None
        short = request.get("op") not in ("watch", "profile", "trace")
        proc = early.hand_over() if early is not None else spawn_agent(self.flags, self.exec_argv(python), request,
                                                                 short_lived=short, extra=self.agent_extra)
        held = early is not None and early.request.get("hold")
        stderr = early.stderr if early is not None else pipes.Drain(proc.stderr)
        finished = threading.Event()
        if stop is not None:
            threading.Thread(target=self._stopper, args=(proc, stop, finished), daemon=True).start()
        deadline = time.monotonic() + timeout
        greeted = answered = False
        try:
            reader = pipes.lines(proc.stdout, deadline)
            while True:
                try:
                    line = next(reader)
                except StopIteration:
                    break
                except KeyboardInterrupt:
                    if stop is None or stop.is_set():
                        raise
                    stop.set()  # Ctrl-C ends a stream early; its result (what was collected) still comes
                    reader = pipes.lines(proc.stdout, time.monotonic() + 15)
                    continue
                msg = protocol.decode(line)
                kind = protocol.kind_of(msg)
                if kind == protocol.HELLO:
                    protocol.check_hello(msg)
                    greeted = True
                elif kind == protocol.NEED:
                    import base64  # only attach ships a blob (debugpy): not imported before every first exec
                    from .. import debugpy_bundle
                    blob = debugpy_bundle.blob(msg[protocol.NEED])
                    if not pipes.write_line(proc, protocol.encode({protocol.BLOB: base64.b64encode(blob).decode()})):
                        break
                elif kind == protocol.EVENT:
                    if held and "chosen" in msg[protocol.EVENT]:
                        # adopt() checked the pod is Running and this is our container: go ahead
                        pipes.write_line(proc, protocol.encode({protocol.GO: True}))
                    if on_event is not None:
                        on_event(msg[protocol.EVENT])
                    if "armed" in msg[protocol.EVENT] and not (stop is not None and stop.is_set()):
                        # a sync profile/trace is ready here; on_event returned: every pod's window opens now
                        pipes.write_line(proc, protocol.encode({protocol.GO: True}))
                else:
                    answered = True
                    return protocol.check_result(msg[protocol.RESULT])
        except TimeoutError:
            raise WandError("no answer from %s within %gs (kubectl exec); raise --request-timeout or --timeout"
                            % (self.where, timeout), errors.TIMEOUT)
        except protocol.ProtocolError as exc:
            if not greeted:  # whatever ran there is not our agent on a Python: try the next interpreter
                raise NoInterpreter(str(exc))
            raise WandError("the agent in %s answered out of protocol (%s); is kubectl-wand's version the same on "
                            "both ends?" % (self.where, exc), errors.ENVIRONMENT)
        finally:
            finished.set()
            pipes.close(proc, wait=not answered)  # with the answer in, kubectl's exit is not waited for
        error = self.exec_error(proc.returncode, stderr.text())
        if isinstance(error, NoInterpreter) or not greeted and getattr(error, "unexplained", False):
            # it ran, but no agent greeted: not a Python we can use (pid 1 a shell, a Python 2...)
            raise NoInterpreter(str(error))
        raise error

    @staticmethod
    def _stopper(proc, stop, finished):
        while not finished.is_set():
            if stop.wait(0.2):
                pipes.write_line(proc, protocol.encode({protocol.STOP: True}))
                return

    def exec_error(self, code, text):
        low = text.lower()
        if "executable file not found" in low or "no such file or directory" in low and code in (126, 127):
            return NoInterpreter(text)
        if "forbidden" in low:
            return WandError("kubectl exec into pod/%s is forbidden (RBAC): grant create on pods/exec in namespace "
                             "%s (rule: apiGroups [\"\"], resources [\"pods/exec\"], verbs [\"create\"])" % (
                                 self.name, self.namespace), errors.ENVIRONMENT)
        if "unable to upgrade connection: container not found" in low:
            return WandError("container %s in pod/%s is not running right now (restarting?); kubectl describe "
                             "pod/%s tells why" % (self.container, self.name, self.name), errors.NOT_FOUND)
        if "container not found" in low or "is not valid for pod" in low:
            return WandError("container %s not found in pod/%s; check -c" % (self.container, self.name),
                             errors.NOT_FOUND)
        if "notfound" in low.replace(" ", "") and "pods" in low:
            return WandError("pod %s not found in namespace %s" % (self.name, self.namespace), errors.NOT_FOUND)
        if "error sending request" in low or ":10250" in low:
            return WandError("the API server could not reach the kubelet of pod/%s's node (%s); is the node Ready?"
                             % (self.name, pipes.last_line(text)), errors.ENVIRONMENT)
        if "unable to connect" in low or "connection refused" in low or "i/o timeout" in low:
            return WandError("cannot reach the Kubernetes API server: %s" % pipes.last_line(text), errors.ENVIRONMENT)
        error = WandError("kubectl exec into %s failed (exit %s): %s" % (self.where, code, pipes.last_line(text)),
                          errors.ENVIRONMENT)
        error.unexplained = True
        return error

    # -- the rest of the interface --------------------------------------------------------------------------
    def watch(self, pid: int) -> Watch:
        return KubectlWatch(self, pid)

    def present(self) -> bool:
        from ..kube import api
        from ..kube.resolve import running
        try:
            pod = api.get(self.flags, "/api/v1/namespaces/%s/pods/%s" % (self.namespace, self.name),
                          what="pod %s" % self.name)
        except WandError as exc:
            if exc.code == errors.NOT_FOUND:
                return False
            return True  # cannot tell (API busy): do not give up on the pod
        return pod["metadata"]["uid"] == self.pod["metadata"]["uid"] and running(pod)

    def forward(self, remote_port: int, local_port=None):
        from .portforward import PortForward
        return PortForward(self, remote_port, local_port)

    def alternative(self, having: str) -> str:
        return EPHEMERAL_HINT % having  # the agent in a debug container of its own (transport/ephemeral.py)

    def identity(self):
        return self.pod["metadata"]["uid"]

    def started(self) -> str:
        return self.pod["metadata"].get("creationTimestamp") or ""

    def replaces(self, old) -> bool:
        from ..kube.resolve import replaces
        return replaces(self.pod, old.pod, old.container)

    def forward_hint(self, local_port: int, remote_port: int) -> str:
        return "kubectl port-forward --address 127.0.0.1 -n %s pod/%s %d:%d" % (
            self.namespace, self.name, local_port, remote_port)

    def checks(self):
        from ..kube.checks import pod_rows
        return pod_rows(self.flags, self.pod, self.container)

    def permission_fix(self):
        from ..kube.checks import ptrace_fix
        return ptrace_fix(self.flags, self.pod, self.container)

    def forward_allowed(self):
        from ..kube.checks import can_i
        return can_i(self.flags, self.namespace, "pods", "portforward")
