"""Parse kubectl-shaped targets: POD, TYPE/NAME, and pid/N for a local process."""
from __future__ import annotations

from .errors import USAGE, WandError

KINDS = {
    "pid": "pid",
    "po": "pod", "pod": "pod", "pods": "pod",
    "svc": "service", "service": "service", "services": "service",
    "deploy": "deployment", "deployment": "deployment", "deployments": "deployment",
    "sts": "statefulset", "statefulset": "statefulset", "statefulsets": "statefulset",
    "ds": "daemonset", "daemonset": "daemonset", "daemonsets": "daemonset",
    "rs": "replicaset", "replicaset": "replicaset", "replicasets": "replicaset",
    "job": "job", "jobs": "job",
    "ksvc": "ksvc", "ksvcs": "ksvc", "kservice": "ksvc",
}


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
    def pid(self) -> int:
        return int(self.name)

    def __str__(self):
        return "%s/%s" % (self.kind, self.name)


def parse(text: str) -> Target:
    if "/" not in text:
        if not text:
            raise WandError("empty target; give POD, TYPE/NAME or pid/N", USAGE)
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
        raise WandError("unknown resource type %r in %r; use one of pod, svc, deploy, sts, ds, rs, job, ksvc, pid"
                        % (prefix, text), USAGE)
    if not name or "/" in name:
        raise WandError("bad target %r; expected TYPE/NAME" % text, USAGE)
    if kind == "pid" and not name.isdigit():
        raise WandError("bad process id in %r; expected pid/N with N a number" % text, USAGE)
    return Target(kind, name)
