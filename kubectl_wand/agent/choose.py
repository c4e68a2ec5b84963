"""Pick the process a user means when they name a pod, not a PID.

It runs in the agent, beside the processes it chooses from, so that choosing and acting take one
`kubectl exec` instead of two (measured: 0.2-0.3 s less for every exec-py, attach and check on a pod).
"""
from __future__ import annotations

from .protocol import AgentError


def started_by_exec(p) -> bool:
    """A process someone started with `kubectl exec` (a shell, a one-off python3 -c): its parent is outside the
    container's pid namespace, so its ppid reads 0 (seen: `kubectl exec POD -- python3 -c ...` is ppid 0 beside
    the app's pid 1). The container's own processes descend from its pid 1."""
    return p["ppid"] == 0 and p["pid"] != 1


def choose_process(procs, where="this container", in_container=None):
    """(pid, note): the reload parent's worker, a supervisor's first worker, or the single app process.
    In a container (the agent came in by `kubectl exec`: processes.came_by_exec; the CLI passes the listing's
    ``in_container``, the agent's own answer), processes started by `kubectl exec` are chosen only when nothing
    else runs Python."""
    if in_container is None:
        from .processes import came_by_exec
        in_container = came_by_exec()
    candidates = [p for p in procs if p["role"] != "helper"]
    own = [p for p in candidates if not started_by_exec(p)]
    if in_container and own:
        candidates = own
    if not candidates:
        raise AgentError("not-found", "no Python process in %s; is the app running? (kubectl wand get processes)"
                         % where)
    workers = [p for p in candidates if p["role"] == "worker"]
    parents = [p for p in candidates if p["role"] == "reload-parent"]
    if workers:
        pick = min(workers, key=lambda p: p["pid"])
        parent = next((p for p in candidates if p["pid"] == pick["ppid"]), None)
        what = "reload parent" if parent and parent["role"] == "reload-parent" else (parent or {}).get(
            "server") or "parent"
        note = "%s %s has %d worker(s); chose worker %d (use --pid to pick another: %s)" % (
            what, pick["ppid"], len(workers), pick["pid"], ", ".join(str(w["pid"]) for w in workers))
        return pick["pid"], note
    mains = [p for p in candidates if p["role"] == "main"] or parents
    if len(mains) == 1:
        return mains[0]["pid"], None
    raise AgentError("usage", "%d Python processes in %s (%s); choose one with --pid" % (
        len(mains), where, ", ".join("%d %s" % (p["pid"], p["command"][:40]) for p in mains)))

