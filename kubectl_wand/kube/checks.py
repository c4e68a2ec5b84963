"""Pod-level rows for `check`: capabilities, RBAC, and the exact fix for each."""
from __future__ import annotations

import json

from ..agent.checks import row
from ..errors import WandError
from . import api
from .resolve import container_spec, owner_workload


def has_ptrace(container) -> bool:
    sc = container.get("securityContext") or {}
    if sc.get("privileged"):
        return True
    add = [c.upper() for c in (sc.get("capabilities") or {}).get("add") or []]
    return "SYS_PTRACE" in add or "CAP_SYS_PTRACE" in add or "ALL" in add


def ptrace_patch(flags, pod, container_name) -> str:
    kind, name = owner_workload(flags, pod)
    patch = {"spec": {"containers": [{"name": container_name, "securityContext": {
        "capabilities": {"add": ["SYS_PTRACE"]}}}]}}
    if kind not in ("deployment", "statefulset", "daemonset", "replicaset", "job"):
        return ("recreate pod/%s with securityContext.capabilities.add: [SYS_PTRACE] in container %s (a running "
                "pod's capabilities cannot change)" % (name, container_name))
    patch = {"spec": {"template": patch}}
    return "kubectl patch -n %s %s/%s --patch '%s'" % (pod["metadata"]["namespace"], kind, name, json.dumps(
        patch, separators=(",", ":")))


def can_i(flags, namespace, resource, subresource, verb="create"):
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview", "spec": {
        "resourceAttributes": {"namespace": namespace, "verb": verb, "resource": resource,
                               "subresource": subresource}}}
    try:
        result = api.post(flags, "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", review)
    except WandError:
        return None
    return bool((result.get("status") or {}).get("allowed"))


def pod_rows(transport):
    flags, pod = transport.flags, transport.pod
    ns = pod["metadata"]["namespace"]
    rows = [row("pod", "ok", "%s is Running on %s" % (transport.name, pod["spec"].get("nodeName", "?")))]
    container = container_spec(pod, transport.container)
    rows.append(row("container", "ok", "%s (image %s)" % (transport.container, container.get("image"))))
    if has_ptrace(container):
        rows.append(row("SYS_PTRACE", "ok", "container %s adds SYS_PTRACE" % transport.container))
    else:
        rows.append(row("SYS_PTRACE", "warn", "container %s lacks SYS_PTRACE: injecting works only into processes "
                        "of the exec user (and not under Yama ptrace_scope>=1)" % transport.container,
                        ptrace_patch(flags, pod, transport.container)))
    for sub in ("exec", "portforward"):
        allowed = can_i(flags, ns, "pods", sub)
        if allowed is False:
            rows.append(row("RBAC pods/%s" % sub, "fail", "you may not create pods/%s in namespace %s" % (sub, ns),
                            "grant: apiGroups [\"\"], resources [\"pods/%s\"], verbs [\"create\"]" % sub))
        elif allowed:
            rows.append(row("RBAC pods/%s" % sub, "ok", "allowed in namespace %s" % ns))
    return rows
