"""Kubernetes targets: resolve pods, pick containers, and build kubectl transports for them."""
from __future__ import annotations

import sys

from .. import errors
from ..errors import WandError
from .config import KubeFlags
from .resolve import container_order, pods
from .transport import EarlyList, KubectlTransport


def transports(args, target):
    flags = KubeFlags(args)
    flags.kubectl()  # fail first, and plainly, when kubectl is missing
    if target is not None and target.kind == "pod" and getattr(args, "all_namespaces", False):
        raise WandError("-A lists pods in every namespace; it does not go with a single pod", errors.USAGE)
    wanted = getattr(args, "container", None)
    early = None
    if (target is not None and target.kind == "pod" and not getattr(args, "selector", None)
            and not getattr(args, "pid", None)):  # every verb lists the pod first, unless --pid names the process
        early = EarlyList(flags, flags.namespace(), target.name, wanted)  # overlaps the API read below
    try:
        found = pods(flags, target, getattr(args, "selector", None), getattr(args, "all_namespaces", False))
        made = [KubectlTransport(flags, pod, container_order(pod, wanted), explicit=bool(wanted),
                                 all_namespaces=getattr(args, "all_namespaces", False)) for pod in found]
    except BaseException:
        if early is not None:
            early.cancel()
        raise
    if early is not None:
        early.where_kubectl_went(found[0])
        made[0].adopt(early)
    return made


def choose_one(args, candidates):
    """One pod: --pod NAME, else an interactive choice on a TTY, else an error listing the candidates."""
    names = [t.name for t in candidates]
    if getattr(args, "pod", None):
        for t in candidates:
            if t.name == args.pod:
                return t
        raise WandError("--pod %s is not one of the target's Running pods: %s" % (args.pod, ", ".join(names)),
                        errors.NOT_FOUND)
    if sys.stdin.isatty() and sys.stderr.isatty():
        sys.stderr.write("%d Running pods:\n" % len(names))
        for i, name in enumerate(names, 1):
            sys.stderr.write("  %d) %s\n" % (i, name))
        while True:
            sys.stderr.write("choose a pod [1-%d]: " % len(names))
            sys.stderr.flush()
            answer = sys.stdin.readline()
            if not answer:
                raise WandError("no pod chosen", errors.USAGE)
            answer = answer.strip()
            if answer.isdigit() and 1 <= int(answer) <= len(names):
                return candidates[int(answer) - 1]
            if answer in names:
                return candidates[names.index(answer)]
    raise WandError("%d Running pods match (%s); choose one with --pod NAME" % (len(names), ", ".join(names)),
                    errors.USAGE)
