"""Kubectl transport: the agent runs in the target's container via ``kubectl exec -i`` (its own Python,
sources over stdin), and ports come here via ``kubectl port-forward --address 127.0.0.1``."""
from __future__ import annotations

import atexit
import base64
import json
import os
import re
import select
import subprocess
import threading
import time

from .. import agent as agent_pkg, debugpy_bundle, errors
from ..errors import WandError
from ..transport import Forward, Transport
from .resolve import annotated_container

PYTHONS = ("python3", "python", "python3.14")  # tried in order inside the container
_SOURCES = {}
_LOCK = threading.Lock()


def agent_header(op=None) -> bytes:
    """The agent's module sources, verbatim, as the line agent/boot.py reads (only what ``op`` needs)."""
    with _LOCK:  # pods are listed from several threads at once
        if not _SOURCES:
            here = os.path.dirname(agent_pkg.__file__)
            for name in agent_pkg.MODULES + agent_pkg.PASSENGERS + ("boot",):
                with open(os.path.join(here, name + ".py"), encoding="utf-8") as f:
                    _SOURCES[name] = f.read()
    from ..agent.main import LIGHT_MODULES, LIGHT_OPS
    order = LIGHT_MODULES if op in LIGHT_OPS else agent_pkg.MODULES
    names = order if op in LIGHT_OPS else order + agent_pkg.PASSENGERS
    modules = {k: _SOURCES[k] for k in names}
    return json.dumps({"order": list(order), "modules": modules}).encode() + b"\n"


# The command line stays tiny (it shows up in `ps`, kubelet URLs and error messages): it reads
# agent/boot.py's source as the first stdin line and runs it.
LOADER = "import sys,json;exec(json.loads(sys.stdin.buffer.readline()))"


# -S: no `site`. The agent needs only the standard library, and skipping site-packages (.pth files and any
# sitecustomize: APM auto-instrumentation, for one, would otherwise start inside our agent) saves ~10 ms of CPU
# per pod: measured 2.01 instead of 2.22 s for `kubectl exec POD -- python3 -c pass` into 20 pods at once.
AGENT_ARGS = ["-S", "-c", LOADER]


def kubectl_in(flags, namespace, *args):
    """kubectl argv with the user's flags, in ``namespace`` (the pod's, not necessarily the flags' own)."""
    argv = flags.kubectl_argv(*args, namespaced=False)
    return argv[:1] + ["-n", namespace] + argv[1:]


def kubectl_env(short_lived: bool):
    """One-shot kubectl calls run without Go's garbage collector: measured 85 instead of 104 ms CPU per
    `kubectl exec` with the same peak RSS (52 MB), which counts when 20 pods are listed at once on a small
    machine. Long-lived ones (the attach watcher) keep it; so does a GOGC the user set."""
    if not short_lived or "GOGC" in os.environ:
        return None
    return dict(os.environ, GOGC="off")


def boot_line() -> bytes:
    agent_header()
    return json.dumps(_SOURCES["boot"]).encode() + b"\n"


class KubectlTransport(Transport):
    local = False

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
        return kubectl_in(self.flags, self.namespace, *args)

    # -- the agent --------------------------------------------------------------------------------------
    def agent(self, request: dict, timeout: float) -> dict:
        if self.python:
            return self._agent_once(self.python, request, timeout)
        containers = [self.container] if self.explicit else self.candidates
        for container in containers:
            self.use(container)
            for python in PYTHONS:
                try:
                    result = self._agent_once(python, request, timeout)
                except NoInterpreter:
                    continue
                self.python = python
                return result
        self.use(containers[0])
        if self.explicit or len(containers) == 1:
            raise WandError("container %s in pod/%s has no Python interpreter (%s not found); choose the Python "
                            "container with -c" % (self.container, self.name, "/".join(PYTHONS)), errors.NOT_FOUND)
        raise WandError("no container in pod/%s has a Python interpreter (tried %s)" % (
            self.name, ", ".join(containers)), errors.NOT_FOUND)

    def start_agent(self, python, request, short_lived=True):
        argv = self.kubectl("exec", "-i", self.name, "-c", self.container, "--", python, *AGENT_ARGS)
        return spawn_agent(self.flags, argv, request, short_lived)

    def adopt(self, early: "EarlyList"):
        """Take a listing started before the pod was read, if it went to the container we would choose."""
        if early.container == self.container:
            self.early = early
        else:
            early.cancel()

    def _agent_once(self, python, request, timeout):
        early, self.early = self.early, None
        if early is not None and (python != early.python or
                                  {k: v for k, v in request.items() if v is not None} != LIST):
            early.cancel()
            early = None
        proc = early.proc if early is not None else self.start_agent(python, request)
        stderr = early.stderr if early is not None else Drain(proc.stderr)
        deadline = time.monotonic() + timeout
        try:
            for line in lines(proc.stdout, deadline):
                msg = json.loads(line)
                if "need" in msg:
                    blob = debugpy_bundle.blob(msg["need"])
                    try:
                        proc.stdin.write(json.dumps({"blob": base64.b64encode(blob).decode()}).encode() + b"\n")
                        proc.stdin.flush()
                    except BrokenPipeError:
                        break
                elif "result" in msg:
                    return msg["result"]
        except TimeoutError:
            raise WandError("no answer from %s within %gs (kubectl exec); raise --request-timeout or --timeout"
                            % (self.where, timeout), errors.TIMEOUT)
        finally:
            close(proc)
        raise self.exec_error(proc.returncode, stderr.text())

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
                             % (self.name, last_line(text)), errors.ENVIRONMENT)
        if "unable to connect" in low or "connection refused" in low or "i/o timeout" in low:
            return WandError("cannot reach the Kubernetes API server: %s" % last_line(text), errors.ENVIRONMENT)
        return WandError("kubectl exec into %s failed (exit %s): %s" % (self.where, code, last_line(text)),
                         errors.ENVIRONMENT)

    # -- port forwarding -----------------------------------------------------------------------------------
    def forward(self, remote_port: int, local_port=None) -> "PortForward":
        return PortForward(self, remote_port, local_port)

    def local_root(self, remote_root):
        return "${workspaceFolder}"

    def pod_checks(self):
        from .checks import pod_rows
        return pod_rows(self)

    def permission_fix(self):
        """The securityContext patch when the container lacks SYS_PTRACE, else None."""
        from .checks import has_ptrace, ptrace_patch
        from .resolve import container_spec
        if has_ptrace(container_spec(self.pod, self.container)):
            return None
        return ptrace_patch(self.flags, self.pod, self.container)


class NoInterpreter(Exception):
    pass


LIST = {"op": "list"}  # what every verb asks a pod first: get processes, and the choice of a process


def spawn_agent(flags, argv, request, short_lived=True):
    """Start ``kubectl exec -i ... python -c LOADER`` and send it the agent and the request."""
    if flags.verbosity >= 6:
        import sys
        sys.stderr.write("+ %s\n" % " ".join(argv))
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=kubectl_env(short_lived))
    try:
        proc.stdin.write(boot_line() + agent_header(request.get("op")) + json.dumps(request).encode() + b"\n")
        proc.stdin.flush()
    except BrokenPipeError:
        pass  # kubectl already exited (forbidden, no such pod...): its stderr says why, read by the caller
    return proc


class EarlyList:
    """The process listing of a pod named on the command line, started before the pod is read from the API.

    kubectl's start, the exec round trip and the agent's work then overlap importing the kubernetes client
    and reading the pod (about a third of a second each), instead of following them. It only reads: nothing
    is written in the pod and no process is touched, so when the API read then says the pod is not Running,
    or that another container is the one to use, it is dropped and nothing has happened. Without -c it goes
    where kubectl sends it (the default-container annotation, else the first container); ``container`` is
    filled in once the pod is known."""

    python = "python3"

    def __init__(self, flags, namespace, pod, container=None):
        self.container = container
        args = ["exec", "-i", pod] + (["-c", container] if container else []) + ["--", self.python] + AGENT_ARGS
        self.proc = spawn_agent(flags, kubectl_in(flags, namespace, *args), LIST)
        self.stderr = Drain(self.proc.stderr)
        atexit.register(self.cancel)  # a verb that fails before it lists (check's pod rows) leaves none behind

    def where_kubectl_went(self, pod):
        """The container kubectl picks without -c, as kubectl does it."""
        first = (pod["spec"].get("containers") or [{}])[0].get("name")
        self.container = self.container or annotated_container(pod) or first

    def cancel(self):
        if self.proc.poll() is None:
            self.proc.kill()
        close(self.proc)


class PortForward(Forward):
    """``kubectl port-forward --address 127.0.0.1`` to a pod port; ready once kubectl reports the listener."""

    def __init__(self, transport, remote_port, local_port=None, timeout=20.0):
        self.transport, self.remote_port = transport, remote_port
        self.requested = local_port
        self.proc = None
        self.local_port = None
        self.start(timeout)

    def start(self, timeout=20.0):
        # The editor config names the port: keep it across restarts; prefer the pod's port number first.
        want = self.requested if self.requested is not None else (self.local_port or self.remote_port)
        if want and not port_free(want):
            if self.requested:
                raise WandError("local port %d is busy; choose another with --local-port" % want, errors.ENVIRONMENT)
            want = 0
        spec = "%d:%d" % (want, self.remote_port) if want else ":%d" % self.remote_port
        argv = self.transport.kubectl("port-forward", "--address", "127.0.0.1", "pod/%s" % self.transport.name, spec)
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        stderr = Drain(self.proc.stderr)
        deadline = time.monotonic() + timeout
        try:
            for line in lines(self.proc.stdout, deadline):
                m = re.match(r"Forwarding from 127\.0\.0\.1:(\d+) ->", line.decode("utf-8", "replace"))
                if m:
                    self.local_port = int(m.group(1))
                    self.stdout_drain = Drain(self.proc.stdout)
                    return
        except TimeoutError:
            pass
        close(self.proc)
        text = stderr.text()
        if "forbidden" in text.lower():
            raise WandError("kubectl port-forward to pod/%s is forbidden (RBAC): grant create on pods/portforward"
                            % self.transport.name, errors.ENVIRONMENT)
        raise WandError("kubectl port-forward to pod/%s failed: %s" % (self.transport.name, last_line(text) or
                                                                      "no listener within %gs" % timeout),
                        errors.ENVIRONMENT)

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
            close(self.proc)


def port_free(port: int) -> bool:
    from ..agent.debugserver import port_taken  # the same probe the agent uses beside the target
    return not port_taken("127.0.0.1", port)


class Drain:
    """Read a pipe to its end in a thread, so the child never blocks on a full pipe."""

    def __init__(self, pipe):
        self.chunks = []
        self.thread = threading.Thread(target=self._run, args=(pipe,), daemon=True)
        self.thread.start()

    def _run(self, pipe):
        try:
            for chunk in iter(lambda: pipe.read1(65536) if hasattr(pipe, "read1") else pipe.read(65536), b""):
                self.chunks.append(chunk)
        except (OSError, ValueError):
            pass

    def text(self, wait=2.0):
        self.thread.join(wait)
        return b"".join(self.chunks).decode("utf-8", "replace")


def lines(pipe, deadline):
    """Lines from a pipe until EOF; TimeoutError past the deadline."""
    fd = pipe.fileno()
    buf = b""
    while True:
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            yield line
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            raise TimeoutError
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            if buf:
                yield buf
            return
        buf += chunk


def close(proc):
    for stream in (proc.stdin,):
        try:
            if stream:
                stream.close()
        except OSError:
            pass
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def last_line(text: str) -> str:
    """The last meaningful line of kubectl's stderr, with request URLs elided, at most 300 characters."""
    rows = [r.strip() for r in text.strip().splitlines() if r.strip() and "Unknown stream id" not in r]
    if len(rows) > 1 and rows[-1].startswith("command terminated with exit code"):
        rows.pop()  # the remote error (a traceback's last line) says more than kubectl's summary
    line = re.sub(r'(Post|Get) "https?://[^"]*"', r"\1 <kubelet URL>", rows[-1]) if rows else ""
    return line if len(line) <= 300 else line[:297] + "..."
