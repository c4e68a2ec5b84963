"""Ephemeral transport (--ephemeral): the agent runs in an ephemeral debug container of the pod, added by
kubectl wand (or reused), via ``kubectl exec -i -c wand-...``; everything else is the kubectl transport's.

The debug container shares the app container's PID namespace and has SYS_PTRACE: the agent reaches the target
through /proc/PID/root (agent/lent.py: its own interpreter chrooted there, private files lent from the debug
container's filesystem). The pod's network namespace is shared, so port-forwards and editor configurations
are the same as without --ephemeral.

A new container runs a few hundred ms before the kubelet reports it (measured here: `kubectl exec` into it
worked 0.25-1.3 s after the update, its status said Running after ~1.9 s): the agent is started at once and,
while kubectl answers "container not found", again whenever the pod's status changes or RETRY seconds pass.
"""
from __future__ import annotations

import threading
import time

from .. import agent as agent_pkg, errors
from ..agent import protocol
from ..errors import WandError
from ..kube import ephemeral as debugc
from .bundle import AGENT_ARGS
from .kubectl import KubectlTransport, KubectlWatch, NoInterpreter

RETRY = 0.3     # seconds between tries of a starting container when its status says nothing new
START = 60.0    # how long a new debug container may take to run (an image pull with --image included)
NOTE = ("note: added ephemeral container %s to pod/%s (image %s); ephemeral containers cannot be removed: it "
        "stays listed in the pod spec until the pod is replaced, and later --ephemeral runs reuse it while it runs")


class NotStarted(Exception):
    """kubectl exec found no such container (yet): nothing ran."""


class EphemeralTransport(KubectlTransport):
    agent_extra = agent_pkg.CROSS_CONTAINER  # the chroot mode and lent files (agent/lent.py)

    def __init__(self, flags, pod, containers, explicit=False, all_namespaces=False, image=None, note=None):
        super().__init__(flags, pod, containers, explicit=explicit, all_namespaces=all_namespaces)
        self.image = image
        self.note = note            # where the one-time note about an added container goes (or None)
        self.debug = None           # the debug container in use
        self.starting = None        # its StatusWatch while it may still be starting
        self.lock = threading.Lock()

    def exec_argv(self, python):
        return self.kubectl("exec", "-i", self.name, "-c", self.debug, "--", python, *AGENT_ARGS)

    def adopt(self, early):
        early.cancel()  # an early call went to the app container, not ours

    # -- the debug container ---------------------------------------------------------------------------------
    def ensure(self):
        """Reuse a running kubectl-wand debug container of this pod, or add one."""
        with self.lock:  # attach's watcher and a re-attach may ask at once
            if self.debug:
                return
            found = debugc.reusable(self.pod, self.container, self.image)
            self.python = debugc.interpreter(self.pod, self.container)
            if found:
                self.debug = found
                return
            debugc.preflight(self.flags, self.pod, self.container)
            image = self.image or debugc.app_image(self.pod, self.container)
            name = debugc.add(self.flags, self.pod, self.container, image, self.python)
            # The watch replays the pod's changes since we read it: no event is missed between the two.
            self.starting = debugc.StatusWatch(self.flags, self.pod, name, image, START)
            self.debug = name
            if self.note is not None:
                self.note.write(NOTE % (name, self.name, image) + "\n")

    def forget(self):
        with self.lock:
            self.debug = None
            self._started()
            self.pod = self.fresh_pod()

    def fresh_pod(self):
        from ..kube import api
        return api.get(self.flags, "/api/v1/namespaces/%s/pods/%s" % (self.namespace, self.name),
                       what="pod %s" % self.name)

    def _started(self):
        if self.starting is not None:
            self.starting.close()
            self.starting = None

    # -- the agent ------------------------------------------------------------------------------------------------
    def agent(self, request: dict, timeout: float, on_event=None, stop=None) -> dict:
        request = protocol.request(**request) if "v" not in request else request
        deadline = time.monotonic() + timeout + (START if not self.debug else 0)
        for _attempt in range(2):
            self.ensure()
            try:
                return self._until_started(request, timeout, deadline, on_event, stop)
            except NotStarted:
                # A reused container that exited since we read the pod (its hour was up): add a new one.
                self.forget()
        raise WandError("the debug container in pod/%s keeps disappearing; kubectl describe pod/%s tells why" % (
            self.name, self.name), errors.ENVIRONMENT)

    def _until_started(self, request, timeout, deadline, on_event, stop):
        while True:
            try:
                result = self._agent_once(self.python, request, timeout, on_event, stop)
            except NotStarted:
                watch = self.starting
                if watch is None:
                    raise
                left = deadline - time.monotonic()
                if left <= 0:
                    self._started()
                    raise WandError("the debug container %s in pod/%s did not start within %gs (node %s): does "
                                    "its kubelet support ephemeral containers? kubectl describe pod/%s tells why" % (
                                        self.debug, self.name, START, watch.node, self.name), errors.TIMEOUT)
                try:
                    watch.wait(min(RETRY, left))  # raises when it cannot start (image, no python3)
                except WandError:
                    self._started()
                    raise
                continue
            except NoInterpreter as exc:
                raise WandError("the debug container %s in pod/%s cannot run %s: %s; choose an image with a "
                                "Python with --image" % (self.debug, self.name, self.python, exc), errors.ENVIRONMENT)
            self._started()
            return result

    def exec_error(self, code, text):
        if "container not found" in text.lower() and self.debug and self.debug in text:
            return NotStarted(text)
        return super().exec_error(code, text)

    # -- the rest of the interface ---------------------------------------------------------------------------------
    def watch(self, pid: int):
        self.ensure()
        return KubectlWatch(self, pid)

    def checks(self):
        from ..kube.checks import pod_rows
        return (pod_rows(self.flags, self.pod, self.container, ptrace=False) +
                debugc.rows(self.flags, self.pod, self.container, self.image))

    def permission_fix(self):
        return None  # SYS_PTRACE is the debug container's: nothing to add to the app's

    def alternative(self, having: str) -> str:
        return ""  # this is the other way already
