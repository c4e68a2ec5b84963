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


# What a root `kubectl exec` needs besides SYS_PTRACE to inject into a process of another uid: CHOWN to hand
# the private directory over (agent/private.py), DAC_OVERRIDE to reach and remove its entries once the target's
# uid owns it (0700). The runtime grants both by default; a container that drops them (`drop: [ALL]`) got a
# SYS_PTRACE-only fix that led to "may not give it files (no CAP_CHOWN)" (issue 17). Measured on a Deployment
# that drops ALL and runs the app as uid 1000: CHOWN alone, or CHOWN and FOWNER, end in "Script file cannot be
# read"; CHOWN and DAC_OVERRIDE run the code and leave nothing in /tmp.
HAND_OVER = ("CHOWN", "DAC_OVERRIDE")


def _caps(container, key):
    sc = container.get("securityContext") or {}
    return {c.upper()[4:] if c.upper().startswith("CAP_") else c.upper()
            for c in (sc.get("capabilities") or {}).get(key) or []}


def has_ptrace(container) -> bool:
    if (container.get("securityContext") or {}).get("privileged"):
        return True
    return bool(_caps(container, "add") & {"SYS_PTRACE", "ALL"})


def missing_caps(container, pod=None):
    """The capabilities a root kubectl exec in ``container`` lacks to inject into any process there, in the order
    a fix adds them: SYS_PTRACE, and those of HAND_OVER the container drops (none for a privileged one). A
    container that runs as a non-root user has no effective capabilities to gain: only SYS_PTRACE is named, as
    before."""
    sc = container.get("securityContext") or {}
    if sc.get("privileged"):
        return []
    add, drop = _caps(container, "add"), _caps(container, "drop")
    if "ALL" in add:
        return []
    missing = [] if "SYS_PTRACE" in add else ["SYS_PTRACE"]
    user = sc.get("runAsUser", ((pod or {}).get("spec", {}).get("securityContext") or {}).get("runAsUser"))
    if user in (None, 0):
        missing += [c for c in HAND_OVER if c not in add and (c in drop or "ALL" in drop)]
    return missing


def add_caps_ops(container, base, caps):
    """JSON-patch operations that add ``caps`` to ``container`` (at ``base``) and remove nothing."""
    ops = [{"op": "test", "path": base + "/name", "value": container["name"]}]
    sc = container.get("securityContext")
    if sc is None:
        return ops + [{"op": "add", "path": base + "/securityContext", "value": {"capabilities": {"add": list(caps)}}}]
    current = sc.get("capabilities")
    if current is None:
        return ops + [{"op": "add", "path": base + "/securityContext/capabilities", "value": {"add": list(caps)}}]
    if current.get("add") is None:
        return ops + [{"op": "add", "path": base + "/securityContext/capabilities/add", "value": list(caps)}]
    return ops + [{"op": "add", "path": base + "/securityContext/capabilities/add/-", "value": c} for c in caps]


def add_ptrace_ops(container, base):
    """JSON-patch operations that add SYS_PTRACE to ``container`` (at ``base``) and remove nothing."""
    return add_caps_ops(container, base, ["SYS_PTRACE"])


def ptrace_fix(flags, pod, container_name):
    """How to give ``container_name`` SYS_PTRACE (and what else missing_caps names), or None when it has them."""
    container = next(c for c in pod["spec"]["containers"] if c["name"] == container_name)
    caps = missing_caps(container, pod)
    if not caps:
        return None
    kind, name = owner_workload(flags, pod)
    ns = pod["metadata"]["namespace"]
    listed = ", ".join(caps)
    if kind == "job" or kind == "cronjob":
        return ("a Job's pod template cannot change: re-create job/%s with securityContext.capabilities.add: "
                "[%s] in container %s (keep the capabilities it already adds)" % (name, listed, container_name))
    if kind not in PATCHABLE:
        return ("a running pod's capabilities cannot change: re-create pod/%s with securityContext.capabilities."
                "add: [%s] in container %s (keep the capabilities it already adds)" % (name, listed, container_name))
    base = "/spec/template/spec/containers/%d" % container_index(pod, container_name)
    patch = json.dumps(add_caps_ops(container, base, caps), separators=(",", ":"))
    fix = "kubectl patch -n %s %s/%s --type json -p '%s'" % (ns, kind, name, patch)
    if kind == "replicaset":
        fix += " (applies to the pods it creates from then on)"
    else:
        fix += " (adds %s; the pods are replaced by a rollout)" % listed
    return fix


# kubectl 1.31+ opens exec and port-forward over websockets, a GET upgrade, and an API server of 1.31+ lets
# `get` on pods/exec and pods/portforward authorise it (seen on 1.34: exec-py, stack, trace and port-forward
# work with get-only rights). SPDY, kubectl's fallback and older servers' only way, is a POST: `create`.
WEBSOCKETS_SINCE = (1, 31)
WEBSOCKETS_ENV = {"exec": "KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "portforward": "KUBECTL_PORT_FORWARD_WEBSOCKETS"}


def server_version(flags):
    """(major, minor) of the API server, or None when it cannot be read."""
    try:
        info = api.get(flags, "/version", what="the API server's version")
        digits = "".join(ch for ch in str(info.get("minor", "")) if ch.isdigit())
        return int(info.get("major")), int(digits)
    except (WandError, TypeError, ValueError, AttributeError):
        return None


def may_open(flags, namespace, subresource):
    """How the cluster lets us open pods/``subresource``: "create" (every transport), "get" (websockets on a
    1.31+ API server, kubectl's default unless its env turns them off), False (neither), or None (unknown)."""
    import os
    created = can_i(flags, namespace, "pods", subresource)
    if created:
        return "create"
    got = can_i(flags, namespace, "pods", subresource, verb="get")
    if got and os.environ.get(WEBSOCKETS_ENV[subresource], "").lower() not in ("false", "0"):
        version = server_version(flags)
        if version is None:
            return None
        if version >= WEBSOCKETS_SINCE:
            return "get"
    return None if created is None and got is None else False


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
    missing = missing_caps(container, pod) if ptrace else []
    if ptrace and not missing:
        rows.append(row("SYS_PTRACE", "ok", "container %s adds SYS_PTRACE" % container_name))
    elif ptrace and "SYS_PTRACE" not in missing:
        rows.append(row("SYS_PTRACE", "warn", "container %s adds SYS_PTRACE but drops %s: kubectl wand (root) cannot "
                        "hand its private files to a process of another uid" % (container_name, ", ".join(missing)),
                        ptrace_fix(flags, pod, container_name)))
    elif ptrace:
        rows.append(row("SYS_PTRACE", "warn", "container %s lacks SYS_PTRACE: injecting works only into processes "
                        "of the exec user (and not under Yama ptrace_scope>=1)" % container_name,
                        ptrace_fix(flags, pod, container_name)))
    for sub in ("exec", "portforward"):
        allowed = may_open(flags, ns, sub)
        if allowed is False:
            rows.append(row("RBAC pods/%s" % sub, "fail", "you may not create pods/%s in namespace %s" % (sub, ns),
                            "grant: apiGroups [\"\"], resources [\"pods/%s\"], verbs [\"create\"]" % sub))
        elif allowed == "get":
            rows.append(row("RBAC pods/%s" % sub, "ok", "allowed in namespace %s by get (websockets, API server "
                            "1.31+; SPDY would need create)" % (ns)))
        elif allowed:
            rows.append(row("RBAC pods/%s" % sub, "ok", "allowed in namespace %s" % ns))
    return rows
