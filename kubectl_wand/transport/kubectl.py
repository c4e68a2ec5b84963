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
# How long a candidate interpreter may take to greet before the next is tried: a `python3` on PATH that never
# answers (a wrapper that blocks) cost the whole --request-timeout, then failed, without trying the pod spec's
# Python. A hello comes 0.3-0.6 s after the spawn here, 2 s with 20 pods listed at once on 2 cores.
HELLO_WITHIN = 8.0
# SIGKILLed (exit 137) with the pod still looking fine: how long to poll for the kubelet's report of why (a
# container's exit reaches the API after it happened; a deletion or an eviction is there before the kill)
GONE_PATIENCE = 3.0
EPHEMERAL_HINT = ("; or add --ephemeral: kubectl wand then works from an ephemeral debug container in the pod, %s, "
                  "that shares the app's processes (no restart)")
NO_PYTHON_HINT = (", or add --ephemeral: the agent then runs in an ephemeral debug container of the app's image "
                  "(its python3, or --image IMAGE's) that shares the app's processes (no restart)")


def pythons_for(command) -> list:
    """The interpreters to try in a container: PYTHONS on its PATH, then the Python its command line starts by an
    absolute path (an image without python3 on PATH)."""
    first = (list(command) + [""])[0]
    found = list(PYTHONS)
    if isinstance(first, str) and first.startswith("/") and "python" in os.path.basename(first):
        found.append(first)
    return found


def spawn_agent(flags, argv, request, short_lived=True, extra=()):
    """Start ``kubectl exec -i ... python -c LOADER`` and send it the agent and the request."""
    return send_agent(flags.spawn(argv, short_lived), request, extra)


def send_agent(proc, request, extra=()):
    """Send a started agent's kubectl the agent and the request (a pipe's worth: it never waits for kubectl)."""
    # kubectl may already have exited (forbidden, no such pod...): its stderr says why, read by the caller
    pipes.write_line(proc, boot_line() + agent_header(request.get("op"), extra) + protocol.encode(request))
    return proc


LAST_WORD = 5.0  # seconds an interrupted CLI waits for its agent's answer: it ends within a slot poll (0.1 s)
# and reads the main thread's stack (measured 0.1-0.3 s in a pod)


def last_word(proc, interrupt):
    """The CLI is interrupted (Ctrl-C, SIGTERM, SIGHUP) while its agent works in the pod: hang up, which the
    agent sees (wait.abandoned) and ends at once, releasing the target's lock, and read its answer for a moment.
    What an unfinished injection leaves in the target becomes ``interrupt.wand_note``, which the CLI prints
    (docs/security.md: the pending case). A second Ctrl-C ends the wait."""
    try:
        proc.stdin.close()
    except OSError:
        pass
    result = None
    try:
        for line in pipes.lines(proc.stdout, time.monotonic() + LAST_WORD):
            msg = protocol.decode(line)
            if protocol.RESULT in msg:
                result = protocol.check_result(msg[protocol.RESULT])
                break
    except (TimeoutError, OSError, ValueError):
        pass
    if result and result.get("status") in (protocol.LISTENING, protocol.ALREADY) and result.get("port"):
        # attach's server started before the interrupt reached us: it stays (debugpy cannot be stopped), so say so
        from ..terminal import text
        interrupt.wand_note = ("interrupted after the debug server started: debugpy listens on %s:%s in process %s "
                               "until it exits; attach again to reuse it" % (
                                   text(result.get("host")), text(result.get("port")), text(result.get("pid", "?"))))
        return
    if not result or result.get("status") not in protocol.UNFINISHED:
        return
    if result["status"] == protocol.PENDING:
        from ..agent.session import interrupted_note
        interrupt.wand_note = interrupted_note(result.get("pid", "?"), result.get("left_behind"))
    elif result.get("interrupted"):  # the agent saw the hang-up while the code ran, and says what goes on
        from ..terminal import text
        interrupt.wand_note = text(result.get("error") or "interrupted while the code was still running")
    else:
        from ..agent.session import running_note
        interrupt.wand_note = running_note(result.get("pid", "?"))


def agent_line_max(request) -> int:
    """The longest line the agent may send for ``request``: an exec's result follows --max-output (with room
    for what the agent adds: the hello, a pending injection's frames); anything else the protocol's ceiling."""
    if request.get("op") == "exec":
        return min(protocol.LINE_MAX, protocol.exec_result_max(request.get("max_output", 0)) + protocol.SMALL_MAX)
    return protocol.LINE_MAX


class NoInterpreter(Exception):
    pass


def probe_marker() -> str:
    """A last argument that names one probe in the container's process list, so that a later agent of this CLI
    can end what a silent candidate left running there (agent/processes.py: end_probes)."""
    from ..agent.processes import PROBE_MARK
    return PROBE_MARK + os.urandom(8).hex()


class KubectlWatch(Watch):
    """A long-lived agent in the pod that answers when the process exits (and names its replacement)."""

    def __init__(self, transport, pid):
        self._done = threading.Event()
        request = protocol.request("watch", pid=pid)
        self.proc = spawn_agent(transport.flags, transport.exec_argv(transport.python or "python3"), request,
                                short_lived=False)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        lines = protocol.Lines(self.proc.stdout, "the watching agent")
        try:
            while True:  # a watch lasts as long as the process: no deadline, but each line bounded
                line = lines.line(protocol.SMALL_MAX, time.monotonic() + 10 ** 9)
                if line is None:
                    break
                msg = protocol.decode(line)
                if protocol.RESULT in msg:
                    self.result = protocol.check_op_result("watch", msg[protocol.RESULT])
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
        self.early_terminal = None  # a terminal session's launcher started with the early call (early.py)
        self.silent = []  # (container, python, marker) of candidates that never greeted: ended by the next agent
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

    #: the container ``kubectl exec`` runs in (the ephemeral transport's is its debug container)
    @property
    def exec_container(self):
        return self.container

    def terminal(self, name: str, failed=None) -> int:
        """``kubectl exec -it`` (``-i`` alone when our stdin is no terminal) running the launcher under the
        container's Python (no shell or ``env`` binary is assumed in the image); the one the early call
        started with the agent's when it went to the container and Python the agent runs on."""
        from .local import wait_ignoring_sigint
        early, self.early_terminal = self.early_terminal, None
        if early is not None and (early.container != self.exec_container or early.python != (self.python or
                                                                                            early.python)):
            early.cancel()  # python3 was not the container's Python: its launcher failed to start
            early = None
        from .launcher import end_if, terminal_launcher
        proc = early.proc if early is not None else terminal_launcher(
            self.flags, self.kubectl, self.name, self.exec_container, self.python or "python3", name)
        end_if(proc, failed)
        return wait_ignoring_sigint(proc)

    def drop_terminal(self):
        early, self.early_terminal = self.early_terminal, None
        if early is not None:
            early.cancel()

    def pythons(self):
        """Interpreters to try in the current container, most likely first."""
        spec = next((c for c in self.pod["spec"].get("containers") or [] if c["name"] == self.container), {})
        return pythons_for(list(spec.get("command") or []) + list(spec.get("args") or []))

    # -- the agent --------------------------------------------------------------------------------------
    def agent(self, request: dict, timeout: float, on_event=None, stop=None) -> dict:
        request = protocol.request(**request) if "v" not in request else request
        if self.python:
            return self._agent_once(self.python, request, timeout, on_event, stop)
        containers = [self.container] if self.explicit else self.candidates
        from . import interpreters
        for container in containers:
            self.use(container)
            usual = self.pythons()
            order = interpreters.first(self.pod, container, usual)
            for python in order:
                try:
                    result = self._agent_once(python, request, timeout, on_event, stop)
                except NoInterpreter:
                    if python != usual[0] and python == order[0]:
                        interpreters.forget(self.pod, container)  # remembered, but no longer answers here
                    continue
                self.python = python
                if any(c == container for c, _p, _m in self.silent):  # a candidate before it never greeted
                    interpreters.remember(self.pod, container, python)
                return result
        self.use(containers[0])
        silent = list(dict.fromkeys(python for container, python, _m in self.silent if container == self.container))
        if silent:
            raise WandError("container %s in pod/%s has no Python that answers: %s started but never greeted within "
                            "%gs (a wrapper that blocks?), and no other interpreter was found; choose the Python "
                            "container with -c%s" % (self.container, self.name, ", ".join(silent),
                                                     min(timeout, HELLO_WITHIN), NO_PYTHON_HINT), errors.NOT_FOUND)
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
            self.early_terminal = early.take_terminal()
        else:
            early.cancel()

    def _agent_once(self, python, request, timeout, on_event=None, stop=None):
        early, self.early = self.early, None
        if early is not None and (python != early.python or not early.answers(request)):
            early.cancel()
            if python != early.python:  # its python3 may be a wrapper that blocks: the next agent ends it
                self.silent.append((self.container, early.python, early.marker))
            early = None
        short = request.get("op") not in ("watch", "profile", "trace", "pdb", "repl")
        probing = self.python is None  # not known yet to greet: bounded by HELLO_WITHIN, marked to be ended
        marker = getattr(early, "marker", None) if early is not None else (probe_marker() if probing else None)
        stuck = [m for container, _p, m in self.silent if container == self.container]
        if stuck and early is None:
            request = dict(request, end_probes=stuck)
        proc = early.hand_over() if early is not None else spawn_agent(
            self.flags, self.exec_argv(python) + ([marker] if marker else []), request, short_lived=short,
            extra=self.agent_extra)
        held = early is not None and early.request.get("hold")
        stderr = early.stderr if early is not None else pipes.Drain(proc.stderr)
        finished = threading.Event()
        hung_up = []
        if stop is not None:
            threading.Thread(target=self._stopper, args=(proc, stop, finished, request.get("op") == "exec" and hung_up),
                             daemon=True).start()
        deadline = time.monotonic() + timeout
        hello_by = time.monotonic() + min(timeout, HELLO_WITHIN) if probing else deadline
        greeted = answered = False
        # The agent runs in the app's container, where the app's uid may reach it: every line is bounded.
        limit = agent_line_max(request)
        lines = protocol.Lines(proc.stdout, "the agent in %s" % self.where)
        try:
            while True:
                try:
                    line = lines.line(limit, deadline if greeted else min(deadline, hello_by), "a line", line_wait=protocol.line_wait(limit))
                except protocol.NoLine:
                    raise TimeoutError
                except KeyboardInterrupt:
                    if stop is None or stop.is_set():
                        raise
                    stop.set()  # Ctrl-C ends a stream early; its result (what was collected) still comes
                    deadline = time.monotonic() + 15
                    continue
                if line is None:
                    break
                # Ctrl-C may land anywhere here too, not only while a line is awaited: seen, right after
                # trace's "tracing ..." (on_event) it ended `trace docker/NAME` with exit 130 and no summary.
                try:
                    msg = protocol.decode(line, "the agent's line")
                    kind = protocol.kind_of(msg)
                    if kind == protocol.HELLO:
                        protocol.check_hello(msg)
                        greeted = True
                    elif kind == protocol.NEED:
                        import base64  # only attach ships a blob (debugpy): not imported before every first exec
                        from .. import debugpy_bundle
                        blob = debugpy_bundle.blob(msg[protocol.NEED])
                        blob_line = protocol.encode({protocol.BLOB: base64.b64encode(blob).decode()})
                        if not pipes.write_line(proc, blob_line):
                            break
                    elif kind == protocol.EVENT:
                        protocol.check_fields(msg, "event:o", "the agent's event")
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
                        return protocol.check_op_result(request.get("op"), msg[protocol.RESULT],
                                                        "the agent's result")
                except KeyboardInterrupt:
                    if stop is None or stop.is_set():
                        raise
                    stop.set()
                    deadline = time.monotonic() + 15
        except TimeoutError:
            if probing and not greeted and hello_by < deadline:
                self.silent.append((self.container, python, marker))
                raise NoInterpreter("%s started but did not greet within %gs" % (python, min(timeout, HELLO_WITHIN)))
            raise WandError("no answer from %s within %gs (kubectl exec); raise --request-timeout or --timeout"
                            % (self.where, timeout), errors.TIMEOUT)
        except protocol.ProtocolError as exc:
            if not greeted:  # whatever ran there is not our agent on a Python: try the next interpreter
                raise NoInterpreter(str(exc))
            raise WandError("the agent in %s answered out of protocol: %s%s" % (
                self.where, exc, "; is kubectl-wand's version the same on both ends?" if "protocol " in str(exc)
                else ""), errors.PROTOCOL)
        except BaseException as exc:
            if stop is None and not isinstance(exc, (Exception, GeneratorExit)):
                last_word(proc, exc)  # Ctrl-C, SIGTERM/SIGHUP: let the agent end now and say what it leaves
            raise
        finally:
            finished.set()
            pipes.close(proc, wait=not answered)  # with the answer in, kubectl's exit is not waited for
        if hung_up:  # ended by _stopper: no answer came within LAST_WORD of the hang-up
            raise WandError("interrupted before the agent in %s answered" % self.where, errors.INTERRUPTED)
        error = self.exec_error(proc.returncode, stderr.text())
        if greeted and getattr(error, "unexplained", False):  # the agent ran, then kubectl exec died: `exit 137`
            error = self.gone(patience=GONE_PATIENCE if proc.returncode == 137 else 0) or error
        if isinstance(error, NoInterpreter) or not greeted and getattr(error, "unexplained", False):
            # it ran, but no agent greeted: not a Python we can use (pid 1 a shell, a Python 2...)
            raise NoInterpreter(str(error))
        raise error

    @staticmethod
    def _stopper(proc, stop, finished, hung_up=False):
        """``stop`` set: a stream is told to stop (its result follows); an exec (``hung_up``, a list) is hung up
        as on Ctrl-C (last_word): its agent answers at once with what stays running, and a call with no answer
        within LAST_WORD is ended here (exec-py --all-pods: Ctrl-C reaches every pod's call, not only the main
        thread's)."""
        while not finished.is_set():
            if stop.wait(0.2):
                if hung_up is False:
                    pipes.write_line(proc, protocol.encode({protocol.STOP: True}))
                    return
                hung_up.append(True)
                try:
                    proc.stdin.close()
                except (OSError, ValueError):
                    pass
                if not finished.wait(LAST_WORD):
                    proc.kill()  # kubectl dies; its agent sees the hang-up and leaves on its own
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
            return self.gone() or WandError("container %s in pod/%s is not running right now (restarting?); "
                                            "kubectl describe pod/%s tells why" % (self.container, self.name,
                                                                                    self.name), errors.NOT_FOUND)
        if "container not found" in low or "is not valid for pod" in low:
            return WandError("container %s not found in pod/%s; check -c" % (self.container, self.name),
                             errors.NOT_FOUND)
        if "notfound" in low.replace(" ", "") and "pods" in low:  # deleted since it was listed: say so
            return self.gone() or WandError("pod %s not found in namespace %s" % (self.name, self.namespace), errors.NOT_FOUND)
        if "error sending request" in low or ":10250" in low:
            return WandError("the API server could not reach the kubelet of pod/%s's node (%s); is the node Ready?"
                             % (self.name, pipes.last_line(text)), errors.ENVIRONMENT)
        if "unable to connect" in low or "connection refused" in low or "i/o timeout" in low:
            return WandError("cannot reach the Kubernetes API server: %s" % pipes.last_line(text), errors.ENVIRONMENT)
        error = WandError("kubectl exec into %s failed (exit %s): %s" % (self.where, code, pipes.last_line(text)),
                          errors.ENVIRONMENT)
        error.unexplained = True
        return error

    def gone(self, patience=0.0):
        """The error that says why the pod or the container went away (read from the API now, and again for
        ``patience`` seconds while the pod still looks fine), or None."""
        from ..kube.resolve import why_gone
        deadline = time.monotonic() + patience
        while True:
            reason = why_gone(self.flags, self.pod, self.container)
            if reason is not None or time.monotonic() >= deadline:
                break
            time.sleep(0.5)  # the kubelet reports a container's exit after it happened: poll the API a little
        if reason is None:
            return None
        if reason.startswith("container "):
            error = WandError("in pod/%s, %s" % (self.name, reason), errors.NOT_FOUND)
        else:
            error = WandError("pod/%s went away: %s" % (self.name, reason), errors.NOT_FOUND)
        error.gone = True  # streams (profile, trace) keep and summarise what came before
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
        from ..kube.checks import may_open
        allowed = may_open(self.flags, self.namespace, "portforward")
        return allowed if allowed is None else bool(allowed)
