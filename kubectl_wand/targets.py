"""Parse kubectl-shaped targets: POD, TYPE/NAME, pid/N for a local process, docker/NAME and podman/NAME for a
container of an engine."""
from __future__ import annotations

from .errors import USAGE, WandError

# Every kind of target, written once: (kind, the short name kubectl users type, other names, where its objects
# are listed in a namespace, with {ns}). KINDS, completion's prefixes and API paths and kube.resolve's reads
# are derived from it.
RESOURCES = (
    ("pod", "pod", ("po", "pods"), "/api/v1/namespaces/{ns}/pods"),
    ("service", "svc", ("service", "services"), "/api/v1/namespaces/{ns}/services"),
    ("deployment", "deploy", ("deployment", "deployments"), "/apis/apps/v1/namespaces/{ns}/deployments"),
    ("statefulset", "sts", ("statefulset", "statefulsets"), "/apis/apps/v1/namespaces/{ns}/statefulsets"),
    ("daemonset", "ds", ("daemonset", "daemonsets"), "/apis/apps/v1/namespaces/{ns}/daemonsets"),
    ("replicaset", "rs", ("replicaset", "replicasets"), "/apis/apps/v1/namespaces/{ns}/replicasets"),
    ("job", "job", ("jobs",), "/apis/batch/v1/namespaces/{ns}/jobs"),
    ("ksvc", "ksvc", ("ksvcs", "kservice"), "/apis/serving.knative.dev/v1/namespaces/{ns}/services"),
    ("pid", "pid", (), None),  # a process on this machine
    ("docker", "docker", (), None),  # a container of a Docker engine (DOCKER_HOST, docker context)
    ("podman", "podman", (), None),  # a container of Podman (CONTAINER_HOST, --connection)
    ("compose", "compose", (), None),  # the running containers of a Docker Compose service (its replicas)
)
KINDS = {name: kind for kind, short, others, _path in RESOURCES for name in (short,) + others}  # any name -> kind
SHORT_NAMES = tuple(short for _kind, short, _others, _path in RESOURCES)
ENGINES = ("docker", "podman", "compose")  # kinds whose NAME is a container (or service) of an engine
LIST_PATHS = {kind: path for kind, _short, _others, path in RESOURCES if path}  # kind -> API path, with {ns}


# The API group of each kind, for kubectl's KIND.GROUP spelling (deployment.apps/web); the core group is "".
GROUPS = {"pod": "", "service": "", "deployment": "apps", "statefulset": "apps", "daemonset": "apps",
          "replicaset": "apps", "job": "batch", "ksvc": "serving.knative.dev"}


class Target:
    def __init__(self, kind: str, name: str, process: int = None):
        self.kind, self.name = kind, name
        self.process = process  # pod/NAME/PID (what get processes -o name prints): one process of the pod

    @property
    def local(self) -> bool:
        return self.kind == "pid"

    @property
    def engine(self) -> bool:
        """Whether it is a container of a Docker or Podman engine, or a Compose service (no pods, no kubectl)."""
        return self.kind in ENGINES

    @property
    def workload(self) -> bool:
        """Whether it stands for pods that come and go (a workload, a service, a Knative Service)."""
        return self.kind not in ("pod", "pid") + ENGINES

    @property
    def pid(self) -> int:
        return int(self.name)

    def __str__(self):
        return "%s/%s" % (self.kind, self.name)


def parse(text: str) -> Target:
    if "/" not in text:
        if not text:
            raise WandError("empty target; give POD, TYPE/NAME, pid/N or docker/NAME", USAGE)
        return Target("pod", text)
    prefix, _, name = text.partition("/")
    base, dot, group = prefix.lower().partition(".")
    kind = KINDS.get(base)
    if dot and (kind not in GROUPS or group != GROUPS[kind]):
        kind = None
    if kind == "pod" and name.count("/") == 1 and name.rpartition("/")[2].isdigit():
        pod, _, pid = name.rpartition("/")
        if pod and int(pid) > 0:
            return Target("pod", pod, int(pid))
    if kind is None:
        raise WandError("unknown resource type %r in %r; use one of %s" % (prefix, text, ", ".join(SHORT_NAMES)),
                        USAGE)
    if not name or "/" in name:
        raise WandError("bad target %r; expected TYPE/NAME" % text, USAGE)
    if kind == "pid" and not name.isdigit():
        raise WandError("bad process id in %r; expected pid/N with N a number" % text, USAGE)
    return Target(kind, name)
