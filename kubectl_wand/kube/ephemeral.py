"""Ephemeral debug containers (--ephemeral), on the API side: find a running one to reuse, say in one line why
one cannot be added (RBAC, Pod Security, the target container), add one with `kubectl debug`, and watch the
pod's status until it runs.

The container: `kubectl debug --target=<app container> --profile=general` (SYS_PTRACE in the debug container
only; the app container is untouched and never restarts), the app container's own image by default (it is on
the node already: no pull) with --image-pull-policy=IfNotPresent, named ``wand-<random>``, running as root
(measured: a pod-level runAsUser: 1000 would make the debug container uid 1000, whose added capabilities do not
survive exec: CapEff 0), and an idle Python that ends an hour after it started unless a kubectl-wand process
still runs in it (an attach in the foreground keeps its watcher there). Ephemeral containers cannot be removed
or restarted: one that exited stays listed in the pod spec until the pod is replaced.
"""
from __future__ import annotations

import json
import os
import threading
import time
from urllib.parse import quote

from .. import errors
from ..errors import WandError
from . import api
from .checks import can_i

PREFIX = "wand-"
MARKER = "kubectl-wand-idle"  # the idle command's last argument: processes.HELPER_MARKERS knows it
LIFETIME = 3600
# Sleeps until LIFETIME has passed and no other process shares its mount namespace (an agent of ours in
# this container); looks every 30 s. Python, not `sleep`: images without coreutils (distroless) still have it.
IDLE = ("import os,time\n"
        "end=time.time()+%d;me=os.readlink('/proc/self/ns/mnt')\n"
        "def busy():\n"
        " n=0\n"
        " for p in os.listdir('/proc'):\n"
        "  try:n+=p.isdigit() and os.readlink('/proc/'+p+'/ns/mnt')==me\n"
        "  except OSError:pass\n"
        " return n>1\n"
        "while time.time()<end or busy():time.sleep(30)\n") % LIFETIME
AS_ROOT = {"securityContext": {"runAsUser": 0, "runAsGroup": 0, "runAsNonRoot": False}}
BLOCKING_LEVELS = ("baseline", "restricted")  # Pod Security levels that forbid adding SYS_PTRACE
PSA_LABEL = "pod-security.kubernetes.io/enforce"
WAITING_ERRORS = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull", "CreateContainerError",
                  "CreateContainerConfigError", "RunContainerError", "StartError")


def spec_of(pod, name):
    return next((c for c in pod["spec"].get("ephemeralContainers") or [] if c.get("name") == name), None)


def status_of(pod, name):
    return next((s for s in (pod.get("status") or {}).get("ephemeralContainerStatuses") or []
                 if s.get("name") == name), None)


def ours(spec) -> bool:
    return spec["name"].startswith(PREFIX) and MARKER in (spec.get("command") or [])


def reusable(pod, container, image=None):
    """The newest running kubectl-wand debug container that targets ``container`` (and runs ``image``)."""
    found = []
    for spec in pod["spec"].get("ephemeralContainers") or []:
        if not ours(spec) or spec.get("targetContainerName") != container or image and spec.get("image") != image:
            continue
        running = ((status_of(pod, spec["name"]) or {}).get("state") or {}).get("running")
        if running:
            found.append((running.get("startedAt") or "", spec["name"]))
    return max(found)[1] if found else None


def app_image(pod, container):
    return next(c for c in pod["spec"]["containers"] if c["name"] == container).get("image")


def interpreter(pod, container):
    """The Python the debug container runs: the absolute one the app's command names (the same image has it at
    that path), else python3 on the image's PATH."""
    spec = next(c for c in pod["spec"]["containers"] if c["name"] == container)
    first = (list(spec.get("command") or []) + list(spec.get("args") or []) + [""])[0]
    return first if first.startswith("/") and "python" in os.path.basename(first) else "python3"


# -- why it cannot work -------------------------------------------------------------------------------------------

def target_state(pod, container):
    """None when ``container`` runs, else what it is doing (an ephemeral container shares a running one's PIDs)."""
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        if cs.get("name") == container:
            state = cs.get("state") or {}
            if "running" in state:
                return None
            inner = state.get("waiting") or state.get("terminated") or {}
            return inner.get("reason") or next(iter(state), "not started")
    return "not started"


def pod_security(flags, namespace):
    """The namespace's enforced Pod Security level, or None when unset or unreadable."""
    try:
        ns = api.get(flags, "/api/v1/namespaces/%s" % namespace, what="namespace %s" % namespace)
    except WandError:
        return None
    return ((ns.get("metadata") or {}).get("labels") or {}).get(PSA_LABEL)


def psa_error(level, namespace):
    return WandError("--ephemeral cannot work in namespace %s: it enforces Pod Security level %r (label %s=%s), "
                     "which forbids the SYS_PTRACE capability the debug container needs; use a namespace at "
                     "level privileged, or ask an admin for a Pod Security exemption" % (
                         namespace, level, PSA_LABEL, level), errors.ENVIRONMENT)


def rbac_error(namespace):
    return WandError("--ephemeral needs patch on pods/ephemeralcontainers in namespace %s, which you lack (RBAC): "
                     "grant apiGroups [\"\"], resources [\"pods/ephemeralcontainers\"], verbs [\"patch\"]" % namespace,
                     errors.ENVIRONMENT)


def preflight(flags, pod, container):
    """Raise the one-line reason why no debug container can be added, checked before trying."""
    name, namespace = pod["metadata"]["name"], pod["metadata"]["namespace"]
    state = target_state(pod, container)
    if state:
        raise WandError("container %s in pod/%s is not running (%s): an ephemeral container can only share a "
                        "running container's processes" % (container, name, state), errors.NOT_FOUND)
    answers = {}
    checks = [threading.Thread(target=lambda: answers.update(
                  rbac=can_i(flags, namespace, "pods", "ephemeralcontainers", verb="patch"))),
              threading.Thread(target=lambda: answers.update(level=pod_security(flags, namespace)))]
    for t in checks:  # two kubectl calls at once: each is mostly kubectl's start-up
        t.start()
    for t in checks:
        t.join()
    if answers.get("rbac") is False:
        raise rbac_error(namespace)
    if answers.get("level") in BLOCKING_LEVELS:
        raise psa_error(answers["level"], namespace)


# -- adding one -----------------------------------------------------------------------------------------------------

def add(flags, pod, container, image, python):
    """Add a debug container with `kubectl debug`; its name. Errors name the cause in one line."""
    import subprocess
    from .. import pipes
    name = PREFIX + os.urandom(4).hex()
    custom = json.dumps(AS_ROOT).encode()
    argv = flags.kubectl_in(pod["metadata"]["namespace"], "debug", "pod/" + pod["metadata"]["name"],
                      "--target=" + container, "--profile=general", "--image=" + image,
                      "--image-pull-policy=IfNotPresent", "-c", name, "--quiet", "--custom=/dev/stdin", "--",
                      python, "-S", "-c", IDLE, MARKER)
    try:
        done = flags.run(argv, input=custom, timeout=flags.timeout_s + 10)
    except subprocess.TimeoutExpired:
        raise WandError("kubectl debug did not answer within %gs; raise --request-timeout" % (flags.timeout_s + 10),
                        errors.TIMEOUT)
    if done.returncode != 0:
        raise add_error(done.stderr.decode("utf-8", "replace"), pod, pipes.last_line)
    return name


def add_error(text, pod, last_line):
    import re
    low = text.lower()
    namespace = pod["metadata"]["namespace"]
    level = re.search(r'violates podsecurity "([a-z]+)', low)
    if level:
        return psa_error(level.group(1), namespace)
    if "forbidden" in low and "ephemeralcontainers" in low:
        return rbac_error(namespace)
    if "ephemeral containers are disabled" in low or "could not find the requested resource" in low:
        return WandError("this cluster does not support ephemeral containers (the API server has no "
                         "pods/ephemeralcontainers; Kubernetes 1.25+ has it): --ephemeral cannot work here",
                         errors.ENVIRONMENT)
    if "unknown flag: --custom" in low or "unknown flag: --profile" in low:
        return WandError("your kubectl is too old for --ephemeral (it needs kubectl debug --profile and --custom: "
                         "kubectl 1.30 or later)", errors.ENVIRONMENT)
    return WandError("kubectl debug on pod/%s failed: %s" % (pod["metadata"]["name"], last_line(text)),
                     errors.ENVIRONMENT)


class StatusWatch:
    """Watches the pod (`kubectl get --raw` of a watch, one JSON event a line) and wakes ``wait`` whenever the
    debug container's status changes; a state it cannot start from becomes the error ``wait`` raises.

    A watch ends by itself: the API server closes it at timeoutSeconds (or sooner: a restart, a proxy), and a
    watch from a resourceVersion it no longer keeps gets one ``{"type": "ERROR", "object": Status}`` event (410,
    "too old resource version": seen on a pod left unchanged for a few minutes) and no more. Either way the pod
    is read again (a re-list: its status now, and the resourceVersion to watch from) and watched anew, until
    ``close`` or the deadline; only ADDED/MODIFIED objects are read as the pod."""

    RELIST_PAUSE = 1.0  # at least this long between two watches: an API server that ends every watch at once

    def __init__(self, flags, pod, name, image, timeout):
        self.flags, self.namespace = flags, pod["metadata"]["namespace"]
        self.pod_name, self.name, self.image = pod["metadata"]["name"], name, image
        self.state, self.error = None, None
        self.changed = threading.Condition()
        self.lock = threading.Lock()
        self.closed = False
        self.deadline = time.monotonic() + timeout + 2
        self.node = pod["spec"].get("nodeName") or "?"
        self.proc = self._spawn(pod["metadata"]["resourceVersion"])  # the first from this thread (see pipes)
        threading.Thread(target=self._run, daemon=True).start()

    def _spawn(self, resource_version):
        left = max(1, int(self.deadline - time.monotonic()))
        query = "fieldSelector=%s&watch=true&allowWatchBookmarks=true&resourceVersion=%s&timeoutSeconds=%d" % (
            quote("metadata.name=" + self.pod_name), quote(str(resource_version)), left)
        return self.flags.spawn(self.flags.kubectl_in(self.namespace, "get", "--raw",
                                                      "/api/v1/namespaces/%s/pods?%s" % (self.namespace, query)),
                                short_lived=False, stdin=None)

    def _run(self):
        from .. import pipes
        proc = self.proc
        while True:
            started = time.monotonic()
            self._read(proc)
            pipes.close(proc, grace=1.0)
            if self.error is not None or time.monotonic() >= self.deadline:
                return
            time.sleep(max(0.0, started + self.RELIST_PAUSE - time.monotonic()))
            if self.closed:
                return
            version = self._relist()
            with self.lock:
                if self.closed or self.error is not None or version is None:
                    return
                proc = self.proc = self._spawn(version)

    def _read(self, proc):
        """Events until the watch ends (its end, an ERROR event, a broken line, the deadline)."""
        from .. import pipes
        try:
            for line in pipes.lines(proc.stdout, self.deadline):
                try:
                    event = json.loads(line)
                except ValueError:
                    return
                if not isinstance(event, dict) or event.get("type") == "ERROR":
                    return  # 410 Gone (too old resource version), or an error of the server: re-list
                obj = event.get("object")
                if event.get("type") in ("ADDED", "MODIFIED") and isinstance(obj, dict):
                    self._update(obj)
                elif event.get("type") == "DELETED":
                    self._fail(WandError("pod/%s was deleted while its debug container %s started" % (
                        self.pod_name, self.name), errors.NOT_FOUND))
                    return
        except (OSError, TimeoutError, ValueError):
            pass

    def _relist(self):
        """Read the pod now (what the watch may have missed); the resourceVersion to watch from, or None."""
        try:
            pod = api.get(self.flags, "/api/v1/namespaces/%s/pods/%s" % (self.namespace, self.pod_name),
                          what="pod %s" % self.pod_name)
        except WandError as exc:
            if exc.code == errors.NOT_FOUND:
                self._fail(WandError("pod/%s was deleted while its debug container %s started" % (
                    self.pod_name, self.name), errors.NOT_FOUND))
                return None
            return 0 if time.monotonic() < self.deadline else None  # the API was busy: watch from "now"
        self._update(pod)
        return (pod.get("metadata") or {}).get("resourceVersion") or 0

    def _fail(self, error):
        with self.changed:
            self.error = error
            self.changed.notify_all()

    def _update(self, pod):
        try:
            status = status_of(pod, self.name)
        except (AttributeError, TypeError):  # not shaped like a pod: nothing to learn from it
            return
        if not isinstance(status, dict):
            return
        state = status.get("state") if isinstance(status.get("state"), dict) else {}
        with self.changed:
            self.state = next(iter(state), None)
            waiting, terminated = state.get("waiting") or {}, state.get("terminated")
            if terminated or waiting.get("reason") in WAITING_ERRORS:
                inner = terminated or waiting
                self.error = start_error(self.name, self.image, inner.get("reason") or "", inner.get("message") or "")
            self.changed.notify_all()

    def wait(self, seconds):
        """Until the container's status changes or ``seconds`` pass; raises when it cannot start."""
        with self.changed:
            if self.error is None and self.state != "running":
                self.changed.wait(seconds)
            if self.error is not None:
                raise self.error

    def close(self):
        from .. import pipes
        with self.lock:
            self.closed = True
            proc = self.proc
        pipes.close(proc, grace=1.0)


def start_error(name, image, reason, message):
    if "executable file not found" in message or "no such file" in message.lower():
        return WandError("the debug container %s cannot start: image %s has no Python where kubectl wand looked "
                         "(%s); choose an image with python3 on its PATH with --image" % (name, image, message),
                         errors.ENVIRONMENT)
    if "image" in reason.lower():
        return WandError("the debug container %s cannot start: image %s: %s %s; choose another with --image" % (
            name, image, reason, message), errors.ENVIRONMENT)
    return WandError("the debug container %s cannot start: %s %s" % (name, reason, message), errors.ENVIRONMENT)


# -- check ------------------------------------------------------------------------------------------------------------

def rows(flags, pod, container, image):
    """`check --ephemeral` rows: RBAC for the debug container, the Pod Security level, the image on the node."""
    from ..agent.protocol import check_row as row
    namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
    out = []
    state = target_state(pod, container)
    out.append(row("target container", "fail" if state else "ok", "%s is %s" % (container, state or "running"),
                   "wait until it runs" if state else ""))
    existing = reusable(pod, container, image)
    allowed = can_i(flags, namespace, "pods", "ephemeralcontainers", verb="patch")
    if allowed is False and not existing:
        out.append(row("RBAC pods/ephemeralcontainers", "fail", "you may not patch pods/ephemeralcontainers in "
                       "namespace %s" % namespace, "grant: apiGroups [\"\"], resources [\"pods/ephemeralcontainers\"]"
                       ", verbs [\"patch\"]"))
    elif allowed is not None:
        out.append(row("RBAC pods/ephemeralcontainers", "ok" if allowed else "warn", "patch %s in namespace %s%s" % (
            "allowed" if allowed else "not allowed", namespace, "" if allowed else
            " (a running debug container is reused, but no new one can be added)")))
    level = pod_security(flags, namespace)
    if level in BLOCKING_LEVELS and not existing:
        out.append(row("Pod Security", "fail", "namespace %s enforces %r (%s=%s): no SYS_PTRACE" % (
            namespace, level, PSA_LABEL, level), "a namespace at level privileged, or an exemption"))
    else:
        out.append(row("Pod Security", "ok", "namespace %s enforces %s" % (namespace, repr(level) if level else
                                                                             "no level (or it cannot be read)")))
    out.append(image_row(flags, pod, container, image))
    # What blocks adding one, named in the rows above: the last row must not promise what they refuse.
    blocked = [why for why, no in (("the target container is not running", state),
                                   ("RBAC: no patch on pods/ephemeralcontainers", allowed is False),
                                   ("Pod Security level %r" % level, level in BLOCKING_LEVELS)) if no]
    if existing:
        out.append(row("debug container", "ok", "%s is running in pod/%s: reused" % (existing, name)))
    elif blocked:
        out.append(row("debug container", "fail", "none running, and none can be added (%s)" % "; ".join(blocked),
                       "fix the failed rows above"))
    else:
        out.append(row("debug container", "ok", "none running: one is added (it stays listed in the pod spec until "
                                                "the pod is replaced)"))
    return out


def image_row(flags, pod, container, image):
    from ..agent.protocol import check_row as row
    own = app_image(pod, container)
    if not image or image == own:
        status = next((cs for cs in (pod.get("status") or {}).get("containerStatuses") or []
                       if cs.get("name") == container), {})
        return row("debug image", "ok", "%s, the app container's own (on node %s already: %s)" % (
            own, pod["spec"].get("nodeName", "?"), status.get("imageID") or "running"))
    try:
        node = api.get(flags, "/api/v1/nodes/%s" % pod["spec"].get("nodeName"), what="node")
    except WandError:
        return row("debug image", "ok", "%s (whether node %s has it cannot be read: it may be pulled)" % (
            image, pod["spec"].get("nodeName", "?")))
    names = {n for img in (node.get("status") or {}).get("images") or [] for n in img.get("names") or []}
    if image in names or any(n.split("@")[0] == image for n in names):
        return row("debug image", "ok", "%s is on node %s" % (image, pod["spec"].get("nodeName")))
    return row("debug image", "warn", "%s is not on node %s: it will be pulled first" % (
        image, pod["spec"].get("nodeName")), "prefer the app's own image (leave out --image)")
