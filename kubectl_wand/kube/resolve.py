"""From a kubectl-shaped target to Running pods, and from a pod to the container that runs Python."""
from __future__ import annotations

from .. import errors
from ..errors import WandError
from ..targets import LIST_PATHS
from . import api

KNATIVE_LABEL = "serving.knative.dev/service"
PYTHON_HINTS = ("python", "uvicorn", "gunicorn", "flask", "django", "celery", "hypercorn", "daphne", "fastapi")


def selector_string(sel: dict) -> str:
    """A LabelSelector (matchLabels + matchExpressions) in the -l syntax."""
    parts = ["%s=%s" % kv for kv in sorted((sel.get("matchLabels") or {}).items())]
    for expr in sel.get("matchExpressions") or []:
        op, key, values = expr["operator"], expr["key"], expr.get("values") or []
        if op == "In":
            parts.append("%s in (%s)" % (key, ",".join(values)))
        elif op == "NotIn":
            parts.append("%s notin (%s)" % (key, ",".join(values)))
        elif op == "Exists":
            parts.append(key)
        elif op == "DoesNotExist":
            parts.append("!" + key)
    return ",".join(parts)


def target_selector(flags, target):
    """The label selector behind a workload/service target, or None for a single pod."""
    ns = flags.namespace()
    if target.kind == "pod":
        return None
    if target.kind == "ksvc":
        return "%s=%s" % (KNATIVE_LABEL, target.name)
    if target.kind == "service":
        svc = api.get(flags, "/api/v1/namespaces/%s/services/%s" % (ns, target.name), what="service %s" % target.name)
        spec = svc.get("spec") or {}
        if spec.get("type") == "ExternalName":  # how a Knative Service shows up in the core API
            return "%s=%s" % (KNATIVE_LABEL, target.name)
        if not spec.get("selector"):
            raise WandError("service %s has no selector (its endpoints are managed by hand); target its pods "
                            "directly (pod/NAME or -l)" % target.name, errors.NOT_FOUND)
        return ",".join("%s=%s" % kv for kv in sorted(spec["selector"].items()))
    obj = api.get(flags, "%s/%s" % (LIST_PATHS[target.kind].format(ns=ns), target.name),
                  what="%s %s" % (target.kind, target.name))
    return selector_string((obj.get("spec") or {}).get("selector") or {})


def running(pod) -> bool:
    """Running and not terminating, with a container actually running (a crash-looping pod's phase is
    Running too, but there is no process to attach to)."""
    status = pod.get("status") or {}
    return (status.get("phase") == "Running" and not pod["metadata"].get("deletionTimestamp") and any(
        "running" in (cs.get("state") or {}) for cs in status.get("containerStatuses") or []))


def restarts(pod, container) -> int:
    """How many times ``container`` of the pod has restarted (its restartCount)."""
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == container:
            return status.get("restartCount") or 0
    return 0


def replaces(new, old, container) -> bool:
    """Whether pod ``new`` holds a new process where ``container`` of pod ``old`` stood: another pod, or the same
    pod whose container restarted."""
    if new["metadata"]["uid"] != old["metadata"]["uid"]:
        return True
    return restarts(new, container) > restarts(old, container)


def describe_state(pod) -> str:
    """Why a pod has no running process, in a few words: its waiting reason (CrashLoopBackOff...), that its
    container exited (a container that just ended is `terminated` while the phase still says Running), that
    it is terminating, or its phase."""
    status = pod.get("status") or {}
    if pod["metadata"].get("deletionTimestamp"):
        return "Terminating"
    if status.get("phase") in ("Failed", "Succeeded") and status.get("reason"):
        return "%s (%s)" % (status["phase"], status["reason"])  # Evicted, OOMKilled node pressure...
    for cs in status.get("containerStatuses") or []:
        state = cs.get("state") or {}
        if "waiting" in state:
            return (state["waiting"] or {}).get("reason") or "Waiting"
        if "terminated" in state:
            return exited(cs["name"], state["terminated"] or {})
    return status.get("phase", "Unknown")


def exited(container, terminated) -> str:
    """``container app exited (Error, exit code 1)`` from a containerStatus's state.terminated."""
    details = [terminated.get("reason")] if terminated.get("reason") else []
    if terminated.get("signal"):
        details.append("signal %s" % terminated["signal"])
    details.append("exit code %s" % terminated.get("exitCode", "?"))
    return "container %s exited (%s)" % (container, ", ".join(details))


def why_gone(flags, pod, container=None):
    """Why the pod, or its ``container``, no longer runs the process kubectl wand was in, read from the API
    now, to follow "pod/P went away: ": "it was deleted", "it is being deleted (...)", "it was evicted: ...",
    "container app exited (Error, exit code 1)"; None when it still runs (or the API cannot say)."""
    meta = pod["metadata"]
    try:
        now = api.get(flags, "/api/v1/namespaces/%s/pods/%s" % (meta["namespace"], meta["name"]),
                      what="pod %s" % meta["name"])
    except WandError as exc:
        return "it was deleted" if exc.code == errors.NOT_FOUND else None
    if now["metadata"].get("uid") != meta.get("uid"):
        return "it was deleted (a new pod of the same name replaced it)"
    status = now.get("status") or {}
    if status.get("reason") == "Evicted":
        return "it was evicted: %s" % (status.get("message") or "the node ran short of resources")
    if now["metadata"].get("deletionTimestamp"):
        return "it is being deleted (a rollout, a scale-down or kubectl delete)"
    before = {cs.get("name"): cs.get("restartCount", 0) for cs in (pod.get("status") or {}).get(
        "containerStatuses") or []}
    for cs in status.get("containerStatuses") or []:
        if container and cs.get("name") != container:
            continue
        state, last = cs.get("state") or {}, (cs.get("lastState") or {}).get("terminated")
        if state.get("terminated"):
            return exited(cs["name"], state["terminated"])
        if last and cs.get("restartCount", 0) > before.get(cs.get("name"), 0):  # it restarted meanwhile
            return "%s; it %s now" % (exited(cs["name"], last), "runs again" if "running" in state else
                                      "is " + ((state.get("waiting") or {}).get("reason") or "waiting"))
    if status.get("phase") not in (None, "Running", "Pending"):
        return "it is %s" % status["phase"]
    return None


def pods(flags, target, selector=None, all_namespaces=False, skipped=None):
    """Running pods of the target (or selector); errors name what was found instead. ``skipped`` (a list)
    receives "NAME (STATE)" for each pod of the target left out (terminating, waiting, crash-looping)."""
    ns = flags.namespace()
    if target is not None and target.kind == "pod":
        pod = api.get(flags, "/api/v1/namespaces/%s/pods/%s" % (ns, target.name), what="pod %s" % target.name)
        if not running(pod):
            raise WandError("pod %s is not running (%s); kubectl wand needs a running process" % (
                target.name, describe_state(pod)), errors.NOT_FOUND)
        return [pod]
    sel = target_selector(flags, target) if target is not None else None
    if selector:
        sel = ",".join(s for s in (sel, selector) if s)
    path = "/api/v1/pods" if all_namespaces else "/api/v1/namespaces/%s/pods" % ns
    items = api.get(flags, path, {"labelSelector": sel} if sel else None, what="pods")["items"]
    found = [p for p in items if running(p)]
    if skipped is not None:
        skipped.extend("%s (%s)" % (p["metadata"]["name"], describe_state(p)) for p in items if not running(p))
    if not found:
        what = ("%s/%s" % (target.kind, target.name)) if target is not None else (
            "selector %r" % sel if sel else "namespace")
        if items:
            raise WandError("no Running pods for %s in namespace %s (%s)" % (what, ns, ", ".join(
                "%s %s" % (p["metadata"]["name"], describe_state(p)) for p in items[:5])), errors.NOT_FOUND)
        if not all_namespaces:
            api.get(flags, "/api/v1/namespaces/%s" % ns, what="namespace %s" % ns)  # 404 names the namespace
        raise WandError("no pods for %s in namespace %s" % (what, "*" if all_namespaces else ns), errors.NOT_FOUND)
    return sorted(found, key=lambda p: (p["metadata"]["namespace"], p["metadata"]["name"]))


def container_order(pod, wanted=None):
    """Containers to try, best first: -c, the default-container annotation, then those that look like Python."""
    spec = pod["spec"]
    names = [c["name"] for c in spec.get("containers") or []]
    if wanted:
        if wanted not in names:
            raise WandError("container %s not found in pod %s (it has: %s); check -c" % (
                wanted, pod["metadata"]["name"], ", ".join(names)), errors.NOT_FOUND)
        return [wanted]
    annotated = annotated_container(pod)
    if annotated:
        return [annotated]

    def looks_python(c):
        text = " ".join([c.get("image", "")] + list(c.get("command") or []) + list(c.get("args") or [])).lower()
        return any(h in text for h in PYTHON_HINTS)

    containers = spec.get("containers") or []
    return [c["name"] for c in containers if looks_python(c)] + [c["name"] for c in containers if not looks_python(c)]


def annotated_container(pod):
    """The container the kubectl.kubernetes.io/default-container annotation names, if the pod has it."""
    names = [c["name"] for c in pod["spec"].get("containers") or []]
    annotated = (pod["metadata"].get("annotations") or {}).get("kubectl.kubernetes.io/default-container")
    return annotated if annotated in names else None


def container_spec(pod, name):
    return next(c for c in pod["spec"]["containers"] if c["name"] == name)


def owner_workload(flags, pod):
    """(kind, name) of the workload that owns the pod (ReplicaSet -> its Deployment), or ('pod', name)."""
    refs = pod["metadata"].get("ownerReferences") or []
    ref = next((r for r in refs if r.get("controller")), None)
    if not ref:
        return "pod", pod["metadata"]["name"]
    kind, name = ref["kind"].lower(), ref["name"]
    if kind == "replicaset":
        try:
            rs = api.get(flags, "/apis/apps/v1/namespaces/%s/replicasets/%s" % (pod["metadata"]["namespace"], name))
            up = next((r for r in rs["metadata"].get("ownerReferences") or [] if r.get("controller")), None)
            if up and up["kind"] == "Deployment":
                return "deployment", up["name"]
        except WandError:
            # Not allowed to read it (RBAC): a Deployment's ReplicaSet is <deployment>-<pod-template-hash>, the hash
            # its pods carry. Patching that ReplicaSet instead (what check printed) rolls the pods without the
            # change: the Deployment replaces a ReplicaSet whose template no longer matches its own.
            template_hash = (pod["metadata"].get("labels") or {}).get("pod-template-hash")
            if template_hash and name.endswith("-" + template_hash) and len(name) > len(template_hash) + 1:
                return "deployment", name[:-len(template_hash) - 1]
    return kind, name
