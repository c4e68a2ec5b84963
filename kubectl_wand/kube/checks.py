"""Pod-level rows for `check`: capabilities, RBAC, and the exact fix for each (read from the API only).

A printed fix never removes anything from a workload: the SYS_PTRACE fix is a JSON patch that *adds* to the
container's existing capabilities (seen: a merge patch replaced a Deployment's `add: [SETUID, SETGID]` list and
took the workload down), guarded by a `test` of the container's name so it cannot land on another container.
It is offered only where it can apply: a Job's or a bare Pod's template cannot change.
"""
from __future__ import annotations

import json

from ..agent.protocol import check_row as row
from ..errors import WandError
from . import api
from .resolve import owner_workload

PATCHABLE = ("deployment", "statefulset", "daemonset", "replicaset")


def container_index(pod, name):
    names = [c["name"] for c in pod["spec"].get("containers") or []]
    return names.index(name)


def has_ptrace(container) -> bool:
    sc = container.get("securityContext") or {}
    if sc.get("privileged"):
        return True
    add = [c.upper() for c in (sc.get("capabilities") or {}).get("add") or []]
    return "SYS_PTRACE" in add or "CAP_SYS_PTRACE" in add or "ALL" in add


def add_ptrace_ops(container, base):
    """JSON-patch operations that add SYS_PTRACE to ``container`` (at ``base``) and remove nothing."""
    ops = [{"op": "test", "path": base + "/name", "value": container["name"]}]
    sc = container.get("securityContext")
    if sc is None:
        return ops + [{"op": "add", "path": base + "/securityContext",
                       "value": {"capabilities": {"add": ["SYS_PTRACE"]}}}]
    caps = sc.get("capabilities")
    if caps is None:
        return ops + [{"op": "add", "path": base + "/securityContext/capabilities", "value": {"add": ["SYS_PTRACE"]}}]
    if caps.get("add") is None:
        return ops + [{"op": "add", "path": base + "/securityContext/capabilities/add", "value": ["SYS_PTRACE"]}]
    return ops + [{"op": "add", "path": base + "/securityContext/capabilities/add/-", "value": "SYS_PTRACE"}]


def ptrace_fix(flags, pod, container_name):
    """How to give ``container_name`` SYS_PTRACE, or None when it has it already."""
    container = next(c for c in pod["spec"]["containers"] if c["name"] == container_name)
    if has_ptrace(container):
        return None
    kind, name = owner_workload(flags, pod)
    ns = pod["metadata"]["namespace"]
    if kind == "job" or kind == "cronjob":
        return ("a Job's pod template cannot change: re-create job/%s with securityContext.capabilities.add: "
                "[SYS_PTRACE] in container %s (keep the capabilities it already adds)" % (name, container_name))
    if kind not in PATCHABLE:
        return ("a running pod's capabilities cannot change: re-create pod/%s with securityContext.capabilities."
                "add: [SYS_PTRACE] in container %s (keep the capabilities it already adds)" % (name, container_name))
    base = "/spec/template/spec/containers/%d" % container_index(pod, container_name)
    patch = json.dumps(add_ptrace_ops(container, base), separators=(",", ":"))
    fix = "kubectl patch -n %s %s/%s --type json -p '%s'" % (ns, kind, name, patch)
    if kind == "replicaset":
        fix += " (applies to the pods it creates from then on)"
    else:
        fix += " (adds SYS_PTRACE; the pods are replaced by a rollout)"
    return fix


def can_i(flags, namespace, resource, subresource, verb="create"):
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview", "spec": {
        "resourceAttributes": {"namespace": namespace, "verb": verb, "resource": resource,
                               "subresource": subresource}}}
    try:
        result = api.post(flags, "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", review)
    except WandError:
        return None
    return bool((result.get("status") or {}).get("allowed"))


def pod_rows(flags, pod, container_name, ptrace=True):
    """``ptrace``: whether the container's own SYS_PTRACE matters (not with --ephemeral: the debug container's)."""
    ns = pod["metadata"]["namespace"]
    name = pod["metadata"]["name"]
    rows = [row("pod", "ok", "%s is Running on %s" % (name, pod["spec"].get("nodeName", "?")))]
    container = next(c for c in pod["spec"]["containers"] if c["name"] == container_name)
    rows.append(row("container", "ok", "%s (image %s)" % (container_name, container.get("image"))))
    if ptrace and has_ptrace(container):
        rows.append(row("SYS_PTRACE", "ok", "container %s adds SYS_PTRACE" % container_name))
    elif ptrace:
        rows.append(row("SYS_PTRACE", "warn", "container %s lacks SYS_PTRACE: injecting works only into processes "
                        "of the exec user (and not under Yama ptrace_scope>=1)" % container_name,
                        ptrace_fix(flags, pod, container_name)))
    for sub in ("exec", "portforward"):
        allowed = can_i(flags, ns, "pods", sub)
        if allowed is False:
            rows.append(row("RBAC pods/%s" % sub, "fail", "you may not create pods/%s in namespace %s" % (sub, ns),
                            "grant: apiGroups [\"\"], resources [\"pods/%s\"], verbs [\"create\"]" % sub))
        elif allowed:
            rows.append(row("RBAC pods/%s" % sub, "ok", "allowed in namespace %s" % ns))
    return rows
