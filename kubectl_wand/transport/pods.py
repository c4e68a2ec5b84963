"""A transport per Running pod of a target: the one place that makes pod transports (kubectl exec, or an
ephemeral debug container with --ephemeral), and starts a pod named alone's first agent call before the pod is
read from the API (transport/early.py)."""
from __future__ import annotations


def pod_transports(flags, target, selector=None, all_namespaces=False, container=None, ephemeral=False, image=None,
                   early_request=None, note=None, skipped_note=None):
    """A transport per Running pod of ``target`` (or ``selector``). ``early_request``: the agent request to
    start before the pod is read when a pod is named alone (None: none; a poll for a replacement passes None,
    a call it would only cancel). ``note``: where a one-time note about an added debug container goes;
    ``skipped_note``: where the pods of the target left out (not running) are named (not on a poll)."""
    flags.kubectl()  # fail first, and plainly, when kubectl is missing
    early = None
    request = None if ephemeral else early_request  # an early call would go to the app container
    if target is not None and target.kind == "pod" and not selector and request is not None:
        from .early import EarlyCall  # overlaps the API read below
        early = EarlyCall(flags, flags.namespace(), target.name, request, container)
    from ..kube.resolve import container_order, pods  # after the early call's spawn: nothing delays it
    skipped = []
    try:
        found = pods(flags, target, selector, all_namespaces, skipped)
        if skipped and skipped_note is not None:  # e.g. a rollout's old pods, terminating: never left out silently
            from ..terminal import text
            skipped_note.write("note: skipped %d pod(s) not running now: %s\n" % (len(skipped), ", ".join(
                text(s) for s in skipped[:10]) + (", ..." if len(skipped) > 10 else "")))
        if ephemeral:
            from .ephemeral import EphemeralTransport
            made = [EphemeralTransport(flags, pod, container_order(pod, container), bool(container),
                                       all_namespaces, image=image, note=note) for pod in found]
        else:
            from .kubectl import KubectlTransport
            made = [KubectlTransport(flags, pod, container_order(pod, container), explicit=bool(container),
                                     all_namespaces=all_namespaces) for pod in found]
    except BaseException:
        if early is not None:
            early.cancel()
        raise
    if early is not None:
        early.where_kubectl_went(found[0])
        made[0].adopt(early)
    return made
