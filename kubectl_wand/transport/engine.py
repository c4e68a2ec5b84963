"""Container engine transport: a Docker or Podman container, ``docker/NAME`` and ``podman/NAME``.

The agent runs as it does in a pod (transport/kubectl.py, whose agent-pipe code this reuses): ``docker exec -i
CONTAINER python3 -S -c LOADER`` with the container's own Python, the agent's sources on stdin. The engine's CLI
is started with the user's environment as it is, so DOCKER_HOST, DOCKER_CONTEXT (``docker context use``),
CONTAINER_HOST and CONTAINER_CONNECTION (podman's ``--connection``) choose the engine exactly as they do for the
user's own commands. The two CLIs agree on everything used here (exec -i, inspect -f, ps --format); a flavour
holds only what differs: the binary's name and how its cgroup names a container.

Ports reach 127.0.0.1 here through the container's network namespace (transport/netns.py), so the debug port
needs no ``-p`` at ``docker run``, where the engine runs on this machine and we may enter its namespaces (root);
elsewhere (a remote engine, rootless Podman, a user in the docker group) over the engine's exec stream
(transport/relay.py).
"""
from __future__ import annotations

import json
import os
import subprocess

from .. import agent as agent_pkg, errors, pipes
from ..errors import WandError
from . import Watch
from .bundle import AGENT_ARGS
from .kubectl import PYTHONS, KubectlTransport, KubectlWatch, NoInterpreter, pythons_for

INSPECT_TIMEOUT = 30.0
RELAY_ENV = "WAND_ENGINE_RELAY"  # =1: forward over the engine's exec stream even where the namespace is enterable


class Engine:
    """One engine's CLI: ``docker`` or ``podman`` from PATH, started with the user's environment."""

    def __init__(self, name, verbosity=0, warn=None):
        self.name = name
        self.verbosity, self.warn = verbosity, warn
        self._path = None

    def binary(self):
        if self._path is None:
            from ..kube.config import which
            self._path = which(self.name)
            if not self._path:
                raise WandError("%s not found on PATH; install %s to reach %s/NAME targets" % (
                    self.name, "Docker" if self.name == "docker" else "Podman", self.name), errors.ENVIRONMENT)
        return self._path

    def argv(self, *args):
        return [self.binary()] + list(args)

    def spawn(self, argv, short_lived=True, terminal=False, **pipes_kw):
        """Start the engine's CLI as a child that dies with us (the interface KubectlTransport's pipes use).
        Out of the terminal's process group unless it is given the ``terminal``: docker's and podman's CLIs
        exit on SIGINT even when it starts ignored, and the process they run in the container does not end with
        them. Seen: Ctrl-C of `trace docker/NAME` ended with "docker failed for docker/NAME: " (exit 6) instead
        of its summary, and `profile`'s lost every sample while its sampler ran on in the container."""
        if self.verbosity >= 6 and self.warn is not None:
            self.warn.write("+ %s\n" % " ".join(argv))
        return pipes.spawn(argv, own_group=not terminal, **pipes_kw)

    def run(self, *args, timeout=INSPECT_TIMEOUT):
        argv = self.argv(*args)
        if self.verbosity >= 6 and self.warn is not None:
            self.warn.write("+ %s\n" % " ".join(argv))
        try:
            return subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            raise WandError("%s did not answer within %gs; is its engine up (%s)?" % (
                self.name, timeout, self.endpoint()), errors.TIMEOUT)

    def endpoint(self):
        """Where the CLI goes, for messages: the environment variable that chose it, or the default."""
        for var in (("DOCKER_HOST", "DOCKER_CONTEXT") if self.name == "docker" else
                    ("CONTAINER_HOST", "CONTAINER_CONNECTION")):
            if os.environ.get(var):
                return "%s=%s" % (var, os.environ[var])
        return "the default %s engine" % self.name

    def failure(self, text, target):
        """The one-line error for the CLI's stderr ``text`` about ``target`` (``docker/NAME``)."""
        low = text.lower()
        if "permission denied" in low and ("socket" in low or ".sock" in low):
            return WandError("no permission on %s's socket (%s): run as root or as a member of the %s group" % (
                self.name, pipes.last_line(text), self.name), errors.ENVIRONMENT)
        if "cannot connect" in low or "is the docker daemon running" in low or "connection refused" in low \
                or "unable to connect to podman" in low:
            return WandError("no %s engine answers (%s): start it, or point %s at one" % (
                self.name, self.endpoint(), "DOCKER_HOST / docker context" if self.name == "docker" else
                "CONTAINER_HOST / --connection"), errors.ENVIRONMENT)
        if "no such container" in low or "no such object" in low or "no container with name or id" in low:
            return WandError("%s not found: no such container (%s ps lists the running ones)" % (
                target, self.name), errors.NOT_FOUND)
        if "is not running" in low or "container state improper" in low or "is paused" in low:
            return WandError("%s is not running; start it (%s start %s)" % (target, self.name, target.split("/", 1)[1]),
                             errors.NOT_FOUND)
        error = WandError("%s failed for %s: %s" % (self.name, target, pipes.last_line(text)), errors.ENVIRONMENT)
        error.unexplained = True
        return error

    def inspect(self, name):
        """The container's inspect document (docker's and podman's agree on the fields read here)."""
        done = self.run("inspect", "--type", "container", name)
        target = "%s/%s" % (self.name, name)
        if done.returncode != 0:
            raise self.failure(done.stderr.decode("utf-8", "replace"), target)
        try:
            found = json.loads(done.stdout)
            return found[0]
        except (ValueError, IndexError, KeyError):
            raise WandError("%s inspect %s answered something unexpected" % (self.name, name), errors.ENVIRONMENT)


class EngineTransport(KubectlTransport):
    """The agent in a container of an engine (``docker exec -i``), its ports through its network namespace or
    over ``docker exec`` (forward)."""

    def __init__(self, engine, container: dict):
        self.flags = engine  # what KubectlTransport's agent pipes start their children with
        self.engine = engine
        self.container_doc = container
        self.id = container["Id"]
        self.container = self.name = (container.get("Name") or self.id[:12]).lstrip("/")
        self.where = "%s/%s" % (engine.name, self.name)
        self.labels = {"container": self.where}
        self.candidates, self.explicit = [self.name], True
        self.python = None
        self.early = None
        self.early_terminal = None  # pods only (transport/early.py); KubectlTransport's drop_terminal reads it
        self.silent = []  # candidates that never greeted (KubectlTransport's probing)

    def use(self, container):
        pass  # one container: nothing to choose

    def exec_argv(self, python):
        return self.engine.argv("exec", "-i", self.id, python, *AGENT_ARGS)

    def pythons(self):
        config = self.container_doc.get("Config") or {}
        return pythons_for(list(config.get("Entrypoint") or []) + list(config.get("Cmd") or []))

    def agent(self, request: dict, timeout: float, on_event=None, stop=None) -> dict:
        from ..agent import protocol
        request = protocol.request(**request) if "v" not in request else request
        if self.python:
            return self._agent_once(self.python, request, timeout, on_event, stop)
        for python in self.pythons():
            try:
                result = self._agent_once(python, request, timeout, on_event, stop)
            except NoInterpreter:
                continue
            self.python = python
            return result
        raise WandError("%s has no Python interpreter (%s not found on PATH, and its command names none)%s" % (
            self.where, "/".join(PYTHONS), self.alternative("with a Python of its own")), errors.NOT_FOUND)

    def terminal(self, name: str, failed=None) -> int:
        """``docker exec -i[t] CONTAINER PYTHON -I -S -c LAUNCHER NAME``: the session's launcher in the
        container, whose network namespace holds the agent's socket name (KubectlTransport's reads a pod's)."""
        import sys
        from .launcher import end_if, launcher_args
        from .local import wait_ignoring_sigint
        tty = ["-t"] if sys.stdin.isatty() else []
        proc = self.engine.spawn(self.engine.argv("exec", "-i", *tty, self.id,
                                                  *launcher_args(self.python or PYTHONS[0], name)),
                                 short_lived=False, terminal=True, stdin=None, stdout=None, stderr=None)
        end_if(proc, failed)
        return wait_ignoring_sigint(proc)

    def exec_error(self, code, text):
        low = text.lower()
        if code in (126, 127) and ("executable file not found" in low or "no such file or directory" in low
                                   or "not found" in low):
            return NoInterpreter(text)
        return self.engine.failure(text, self.where)

    # -- the rest of the interface ----------------------------------------------------------------------
    def watch(self, pid: int) -> Watch:
        return KubectlWatch(self, pid)

    def gone(self, patience=0.0):
        """Why the container went away (the agent's exec died with it), or None while it still runs."""
        try:
            now = self.engine.inspect(self.id)
        except WandError as exc:
            if exc.code != errors.NOT_FOUND:
                return None
            error = WandError("%s went away: it was removed" % self.where, errors.NOT_FOUND)
        else:
            state = now.get("State") or {}
            if state.get("Running"):
                return None
            error = WandError("%s went away: it is %s (exit code %s)" % (
                self.where, state.get("Status") or "stopped", state.get("ExitCode")), errors.NOT_FOUND)
        error.gone = True  # streams (profile, trace) keep and summarise what came before
        return error

    def present(self) -> bool:
        try:
            now = self.engine.inspect(self.id)
        except WandError as exc:
            return exc.code != errors.NOT_FOUND
        return bool((now.get("State") or {}).get("Running"))

    def init_pid(self) -> int:
        """The container's first process as this machine numbers it (0 for a remote engine's)."""
        return int((self.container_doc.get("State") or {}).get("Pid") or 0)

    def forward_allowed(self):
        return True  # through the namespace, or else over the engine's exec stream (transport/relay.py)

    def forward(self, remote_port: int, local_port=None):
        """Through the container's network namespace when it can be entered from here (0.2 ms to a first byte),
        else over ``docker exec`` (transport/relay.py: a remote engine, a user who is not root). RELAY_ENV=1
        chooses the relay anyway (its tests, and a user whose namespace entry misbehaves)."""
        from .netns import NetnsForward, enterable
        why = "%s=1" % RELAY_ENV if os.environ.get(RELAY_ENV) == "1" else enterable(self.init_pid(), self.id)
        if why is None:
            return NetnsForward(self.init_pid(), remote_port, local_port)
        from .relay import ExecRelay
        if self.engine.verbosity >= 2 and self.engine.warn is not None:
            self.engine.warn.write("forwarding over %s exec (%s)\n" % (self.engine.name, why))
        report = None
        if self.engine.warn is not None:
            from ..terminal import text
            report = lambda line: self.engine.warn.write("%s: %s\n" % (self.where, text(line)))  # noqa: E731
        return ExecRelay(lambda: self.exec_argv(self.python or PYTHONS[0]),
                         lambda argv: self.engine.spawn(argv, short_lived=False), remote_port, local_port, report)

    def forward_hint(self, local_port: int, remote_port: int) -> str:
        return "publish it: %s run -p 127.0.0.1:%d:%d ... (a running container's ports cannot be added)" % (
            self.engine.name, local_port, remote_port)

    def permission_fix(self):
        return ("start it with --cap-add SYS_PTRACE (%s run --cap-add SYS_PTRACE ...): a running container's "
                "capabilities cannot be changed" % self.engine.name)

    def alternative(self, having: str) -> str:
        return ("; or add --ephemeral: the agent then runs in a short-lived helper container that shares its "
                "processes, %s (removed afterwards)" % having)

    def identity(self):
        return self.id

    def started(self) -> str:
        return (self.container_doc.get("State") or {}).get("StartedAt") or ""

    def replaces(self, old) -> bool:
        return False

    def checks(self):
        return []


class HelperTransport(EngineTransport):
    """--ephemeral for an engine: each agent runs in a short-lived helper container that shares the target's
    PID and network namespaces (``--pid container:ID --network container:ID``) with SYS_PTRACE in the helper
    only, removed when the agent ends (``--rm``; its stdin closing ends the agent). The agent reaches the target's
    interpreter through /proc/PID/root (agent/lent.py, as from a pod's ephemeral debug container); nothing is
    written into the target container. For a hardened container: another uid, no capabilities, a read-only
    root, no Python on PATH."""

    agent_extra = agent_pkg.CROSS_CONTAINER  # the chroot mode and lent files (agent/lent.py)

    def __init__(self, engine, container, image=None):
        super().__init__(engine, container)
        self.image = image or (container.get("Config") or {}).get("Image") or container.get("Image")

    def exec_argv(self, python):
        return self.engine.argv("run", "--rm", "-i", "--pid", "container:" + self.id, "--network",
                                "container:" + self.id, "--cap-add", "SYS_PTRACE", "--user", "0",
                                "--label", "kubectl-wand-helper=" + self.id[:12], "--entrypoint", python,
                                self.image, *AGENT_ARGS)

    def agent(self, request: dict, timeout: float, on_event=None, stop=None) -> dict:
        if request.get("op") in ("pdb", "repl"):  # before anything runs: its client would need the helper's view
            raise WandError("%s with --ephemeral is not available for %s targets: its client would run in the "
                            "helper container; leave out --ephemeral (the container needs SYS_PTRACE and a "
                            "Python)" % ("pdb" if request["op"] == "pdb" else "exec-py -it", self.engine.name),
                            errors.USAGE)
        try:
            return super().agent(request, timeout, on_event, stop)
        except WandError as exc:
            if exc.code == errors.NOT_FOUND and "no Python interpreter" in exc.message:
                raise WandError("the helper container's image %s has no Python interpreter (%s); choose one that "
                                "has with --image" % (self.image, "/".join(PYTHONS)), errors.ENVIRONMENT)
            raise

    def permission_fix(self):
        return None  # SYS_PTRACE is the helper's: nothing to add to the target

    def alternative(self, having: str) -> str:
        return ""


def engine_transports(target, verbosity=0, warn=None, ephemeral=False, image=None):
    """[the transport of ``target``] (docker/NAME or podman/NAME), refused in one line when the container
    cannot be reached or is not running. ``ephemeral``: the agent in a helper container (HelperTransport)."""
    engine = Engine("docker" if target.kind == "compose" else target.kind, verbosity, warn)
    engine.binary()
    if target.kind == "compose":
        return [HelperTransport(engine, c, image) if ephemeral else EngineTransport(engine, c)
                for c in compose_service(engine, target.name)]
    container = engine.inspect(target.name)
    state = container.get("State") or {}
    if not state.get("Running") or state.get("Paused"):
        raise WandError("%s is not running (%s); start it with %s start %s" % (
            target, "paused" if state.get("Paused") else state.get("Status") or "stopped", target.kind,
            target.name), errors.NOT_FOUND)
    if ephemeral:
        return [HelperTransport(engine, container, image)]
    return [EngineTransport(engine, container)]



COMPOSE_SERVICE = "com.docker.compose.service"  # the labels Docker Compose puts on every container it makes
COMPOSE_PROJECT = "com.docker.compose.project"


def compose_service(engine, service):
    """The inspect documents of the running containers of Compose service ``service`` (its replicas), in the
    project COMPOSE_PROJECT_NAME names when set, oldest first."""
    argv = ["ps", "-q", "--no-trunc", "--filter", "label=%s=%s" % (COMPOSE_SERVICE, service)]
    if os.environ.get("COMPOSE_PROJECT_NAME"):
        argv += ["--filter", "label=%s=%s" % (COMPOSE_PROJECT, os.environ["COMPOSE_PROJECT_NAME"])]
    done = engine.run(*argv)
    if done.returncode != 0:
        raise engine.failure(done.stderr.decode("utf-8", "replace"), "compose/%s" % service)
    ids = done.stdout.decode().split()
    if not ids:
        raise WandError("compose/%s: no running container of that Compose service (docker ps --filter label=%s=%s)"
                        % (service, COMPOSE_SERVICE, service), errors.NOT_FOUND)
    found = [engine.inspect(i) for i in ids]
    return sorted(found, key=lambda c: (c.get("State") or {}).get("StartedAt") or "")
