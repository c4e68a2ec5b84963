"""What the verbs share: the target flags every verb has (``target_flags``), their options, and the way from a
target to transports (this machine, pid/N, or transport/pods.py for a target's pods).

``TargetOptions.complete_target`` is the only code that reads the parsed command line: the target flags itself,
the verb's own declared flags by name (``take``); from there on everything is typed fields.
"""
from __future__ import annotations

import math

from .. import errors, targets
from ..errors import WandError
from ..flags import Flag
from ..streams import Streams


def target_flags(one_pod=True, pid=True):
    """The flags that choose where the target is, read by ``TargetOptions.complete_target``."""
    return tuple(f for f in (
        Flag("-l", "--selector", value=str, help="label selector for the pods (kubectl's -l)"),
        Flag("-c", "--container", value=str, complete="containers",
             help="container (default: annotation kubectl.kubernetes.io/default-container, else the first "
                  "container that runs Python)"),
        Flag("--pod", value=str, complete="pods_of_target", help="which pod when the target has several")
        if one_pod else None,
        Flag("--pid", value=int, complete="pids", help="the process in the pod (default: the app process)")
        if pid else None,
        Flag("--ephemeral", help="work from an ephemeral debug container added to the pod (SYS_PTRACE there only, "
                                 "no restart): for pods kubectl exec cannot debug (another uid, no capabilities, "
                                 "read-only filesystem, no python3 on PATH); it stays listed in the pod spec"),
        Flag("--image", value=str, help="image of the --ephemeral debug container (default: the app container's own)"),
        Flag("-q", "--quiet", help="no progress spinner or notes on stderr"),
    ) if f is not None)


TARGET_FLAGS = target_flags()
# Read by complete_target itself (the target is parsed, switches made bool): take() leaves them alone.
TARGET_DESTS = frozenset(("target", "selector", "container", "pod", "pid", "all_namespaces", "quiet", "ephemeral",
                          "image"))


def kube_flags(ns, warn=None):
    """KubeFlags from the parsed command line (imported lazily: local targets never need kube/)."""
    from ..kube.config import VALUE_FLAGS, KubeFlags
    values = {dest: getattr(ns, dest, None) for dest, _f in VALUE_FLAGS}
    return KubeFlags(values, as_groups=ns.as_group, insecure=ns.insecure_skip_tls_verify,
                     disable_compression=ns.disable_compression, request_timeout=ns.request_timeout,
                     timeout_s=ns.request_timeout_s, verbosity=ns.verbosity, namespace=ns.namespace, warn=warn)


MAX_SECONDS = 7 * 24 * 3600  # any duration flag; beyond it the C-level waits overflow (99999999999999999h)


def positive_seconds(value, flag):
    """A finite, positive number of seconds up to a week; anything else is a usage error (nan/inf/0/-5 and
    99999999999999999h included)."""
    if value is None or not math.isfinite(value) or value <= 0:
        raise WandError("%s must be a positive number of seconds (e.g. 15 or 30s), not %s" % (flag, value),
                        errors.USAGE)
    if value > MAX_SECONDS:
        raise WandError("%s %gs is out of range: at most %dh (a week)" % (flag, value, MAX_SECONDS // 3600),
                        errors.USAGE)
    return value


class TargetOptions:
    """Options every verb that acts on processes has. Class attributes are the defaults; ``complete`` fills
    them from the command line. (Plain classes, not dataclasses: importing dataclasses, with inspect, was
    ~9 ms of the CLI's start before its first kubectl call.)"""
    verb: str = ""
    target: object = None            # targets.Target, or None (this machine / -l only)
    selector: str = None
    container: str = None
    pod: str = None
    pid: int = None
    all_namespaces: bool = False
    quiet: bool = False
    request_timeout_s: float = 30.0
    kube: object = None              # kube.config.KubeFlags, for cluster targets
    ephemeral: bool = False          # --ephemeral: the agent runs in an ephemeral debug container
    image: str = None                # --image: that container's image (default: the app container's)
    streams: Streams = None
    flags: tuple = ()                # the verb's flags, as declared beside its Options (FLAGS)

    def __init__(self, **values):
        for name, value in values.items():
            if not hasattr(type(self), name):
                raise TypeError("%s has no option %r" % (type(self).__name__, name))
            setattr(self, name, value)
        if self.streams is None:
            self.streams = Streams.system()

    def complete_target(self, ns, streams):
        self.streams = streams
        self.target = targets.parse(ns.target) if getattr(ns, "target", None) else None
        self.selector = getattr(ns, "selector", None)
        self.container = getattr(ns, "container", None)
        self.pod = getattr(ns, "pod", None)
        self.pid = getattr(ns, "pid", None)
        process = getattr(self.target, "process", None)  # pod/NAME/PID, as get processes -o name prints it
        if process is not None:
            if self.pid is not None and self.pid != process:
                raise WandError("%s and --pid %d disagree; give one" % (ns.target, self.pid), errors.USAGE)
            self.pid = process
        self.all_namespaces = bool(getattr(ns, "all_namespaces", False))
        self.quiet = bool(getattr(ns, "quiet", False))
        self.request_timeout_s = ns.request_timeout_s
        self.ephemeral, self.image = bool(getattr(ns, "ephemeral", False)), getattr(ns, "image", None)
        if self.target is None or not self.target.local:
            self.kube = kube_flags(ns, warn=streams.stderr)
        self.take(ns)

    def take(self, ns):
        """The values of the verb's own flags (``flags``: its module's FLAGS), under the same names."""
        for flag in self.flags:
            if flag.dest not in TARGET_DESTS:
                setattr(self, flag.dest, getattr(ns, flag.dest))

    def validate_target(self, needs_one=True):
        positive_seconds(self.request_timeout_s, "--request-timeout")
        if needs_one and self.target is None and not self.selector:
            raise WandError("%s needs a target: POD, TYPE/NAME, -l SELECTOR or pid/N" % self.verb, errors.USAGE)
        if self.pid is not None and self.pid <= 0:
            raise WandError("--pid must be a process id (a positive number)", errors.USAGE)
        if self.target is not None and self.target.local:
            if self.pid and self.pid != self.target.pid:
                raise WandError("pid/%d and --pid %d disagree; give one" % (self.target.pid, self.pid), errors.USAGE)
            if self.selector or self.container or self.pod or self.all_namespaces:
                raise WandError("pid/N is a process on this machine: -l, -c, --pod and -A are for pods",
                                errors.USAGE)
        if self.target is not None and self.target.engine:
            if self.selector or self.container or self.all_namespaces or self.pod and self.target.kind != "compose":
                raise WandError("%s is %s: -l, -c, --pod and -A are for pods" % (self.target, "a Compose service (--pod "
                                "NAME chooses a replica)" if self.target.kind == "compose" else "one container"),
                                errors.USAGE)
        if self.image and not self.ephemeral:
            raise WandError("--image is the image of the --ephemeral debug container: add --ephemeral", errors.USAGE)
        if self.ephemeral and (self.target is None and not self.selector or self.target is not None and
                               self.target.local):
            raise WandError("--ephemeral adds a debug container to a pod: name one (POD, TYPE/NAME or -l)",
                            errors.USAGE)
        if self.all_namespaces and self.target is not None and self.target.kind == "pod":
            raise WandError("-A lists pods in every namespace; it does not go with a single pod", errors.USAGE)

    def early_request(self):
        """The agent request to start before the pod is read (a pod named alone), or None: by default the
        listing every verb starts with, unless --pid names the process."""
        return None if self.pid else {"op": "list", "cpu": False}

    def step(self, message):
        from ..spinner import Spinner
        return Spinner(message, enabled=not self.quiet, stream=self.streams.stderr)

    def note(self, text):
        if text and not self.quiet:
            self.streams.stderr.write(text + "\n")

    # -- from the target to transports --------------------------------------------------------------------------
    def transports(self):
        """[transports]: pid/N itself, the Running pods behind the target, or [] for this machine."""
        if self.target is not None and self.target.local:
            from ..transport.local import LocalTransport
            return [LocalTransport(self.target.pid)]
        if self.target is not None and self.target.engine:
            from ..transport.engine import engine_transports
            return engine_transports(self.target, self.kube.verbosity, self.streams.stderr, self.ephemeral,
                                     self.image)
        if self.target is None and not self.selector and not self.all_namespaces and not self.kube.namespace_flag:
            return []  # no target and no cluster flag: this machine (get processes)
        with self.step("finding pods"):
            return self.pod_transports()

    def this_machine(self):
        """[the transport of this machine] (no target and no cluster flag: get processes, stack, profile)."""
        from ..transport.local import LocalTransport
        return [LocalTransport()]

    def pod_transports(self, early=True):
        """A transport per Running pod of the target (or -l); a pod named alone is listed early unless
        ``early`` is False (a poll for a replacement: the call would only be cancelled)."""
        from ..transport.pods import pod_transports
        return pod_transports(self.kube, self.target, self.selector, self.all_namespaces, self.container,
                              self.ephemeral, self.image, self.early_request() if early else None,
                              note=None if self.quiet else self.streams.stderr,
                              skipped_note=None if self.quiet or not early else self.streams.stderr)

    def one_transport(self):
        transports = self.transports()
        if len(transports) == 1:
            return transports[0]
        return self.choose_pod(transports)

    def choose_pod(self, candidates):
        """One pod: --pod NAME, else an interactive choice on a terminal, else an error naming the candidates."""
        names = [t.name for t in candidates]
        if self.pod:
            for t in candidates:
                if t.name == self.pod:
                    return t
            raise WandError("--pod %s is not one of the target's Running pods: %s" % (self.pod, ", ".join(names)),
                            errors.NOT_FOUND)
        if self.streams.interactive():
            return candidates[self.streams.choose("Running pods", names)]
        raise WandError("%d Running pods match (%s); choose one with --pod NAME" % (len(names), ", ".join(names)),
                        errors.USAGE)

    def known_pid(self):
        """The pid the command line names (pid/N or --pid), or None: the agent then chooses the app process."""
        if self.target is not None and self.target.local:
            return self.target.pid
        return self.pid or None

    def target_pid(self, transport):
        """The process to act on: pid/N itself, --pid, or the agent's choice of the app process."""
        if self.target is not None and self.target.local:
            return self.target.pid, None
        if self.pid:
            return self.pid, None
        return self.choose(self.processes(transport), transport)

    def processes(self, transport):
        """The Python processes beside the target, as the agent lists them (no CPU% window)."""
        with self.step("listing processes in %s" % transport.where):
            listing = check_result(transport.agent({"op": "list", "cpu": False}, timeout=self.request_timeout_s),
                                   transport)
        return Listing(listing["processes"], listing.get("in_container"))

    @staticmethod
    def choose(processes, transport):
        """(pid, note) of the app process among ``processes`` (a Listing), chosen as the agent that listed them
        chooses (its in_container, not this machine's), or the agent's refusal as a WandError."""
        from ..agent.choose import choose_process
        from ..agent.protocol import AgentError
        try:
            return choose_process(processes, transport.where, getattr(processes, "in_container", None))
        except AgentError as exc:
            raise errors.from_agent(exc.to_json())

    def chosen(self, event):
        """on_event for requests without a pid: the agent's note about the process it chose."""
        if "chosen" in event:
            self.note(event["chosen"].get("note"))


class Listing(list):
    """The agent's list of processes, and whether that agent ran in the processes' container (came in by kubectl
    exec): choose_process needs it to choose as the agent does (issue 18: the CLI used its own parent's pid)."""

    def __init__(self, processes, in_container=None):
        super().__init__(processes)
        self.in_container = in_container


def check_result(result: dict, transport):
    """The agent's result, or the error it reports (``agent_error``)."""
    from ..agent import protocol
    if result.get("status") == protocol.ERROR:
        raise agent_error(result, transport)
    return result


def agent_error(result: dict, transport) -> WandError:
    """An agent's error result as a WandError naming where, with the pod's SYS_PTRACE fix for permission, and the
    transport's other way (--ephemeral) where it would help: every verb words the same refusal the same way."""
    error = errors.from_agent(result, transport.where)
    if result.get("kind") == "permission":
        fix = transport.permission_fix()
        if fix:
            error.message += "; the container lacks %s: %s" % (
                "SYS_PTRACE" if "SYS_PTRACE" in fix else "capabilities to hand files over", fix)
        error.message += transport.alternative("with SYS_PTRACE of its own")
    elif result.get("kind") == "environment" and "private files" in (result.get("error") or ""):
        error.message += transport.alternative("with a writable /tmp of its own (nothing is written into the app's)")
    return error
