"""What the verbs share: choosing the transport(s) for a target, and reporting agent failures."""
from __future__ import annotations

from .. import errors, targets
from ..errors import WandError


def resolve(args):
    """(target or None, [transports]) for the command line: local pid/N, or the pods behind a target."""
    target = targets.parse(args.target) if getattr(args, "target", None) else None
    if target is not None and target.local:
        from ..transport.local import LocalTransport
        return target, [LocalTransport(target.pid)]
    if target is None and not any(getattr(args, name, None) for name in ("selector", "all_namespaces", "namespace")):
        return None, []  # no target and no cluster flag: this machine (get processes)
    from .. import kube  # imported only for cluster targets: keeps local use and --help fast
    from ..spinner import step
    with step(args, "finding pods"):
        return target, kube.transports(args, target)


def one_transport(args, verb):
    target, transports = resolve(args)
    if target is None and not getattr(args, "selector", None):
        raise WandError("%s needs a target: POD, TYPE/NAME, -l SELECTOR or pid/N" % verb, errors.USAGE)
    if len(transports) != 1:
        from .. import kube
        return target, kube.choose_one(args, transports)
    return target, transports[0]


def target_pid(args, transport, target):
    """The process to act on: pid/N itself, --pid, or the agent's choice of the app process."""
    if target is not None and target.local:
        if getattr(args, "pid", None) and args.pid != target.pid:
            raise WandError("pid/%d and --pid %d disagree; give one" % (target.pid, args.pid), errors.USAGE)
        return target.pid, None
    if getattr(args, "pid", None):
        return args.pid, None
    from ..selection import choose_process
    from ..spinner import step
    with step(args, "listing processes in %s" % transport.where):
        listing = check_result(transport.agent({"op": "list"}, timeout=args.request_timeout_s), transport)
    return choose_process(listing["processes"], transport.where)


def check_result(result: dict, transport):
    """The agent's result, or the error it reports (with the pod's securityContext fix for permission)."""
    if result.get("status") == "error":
        error = errors.from_agent(result, transport.where)
        if result.get("kind") == "permission" and hasattr(transport, "permission_fix"):
            fix = transport.permission_fix()
            if fix:
                error.message += "; the container lacks SYS_PTRACE: " + fix
        raise error
    return result
