"""Pick the process a user means when they name a pod, not a PID."""
from __future__ import annotations

from . import errors
from .errors import WandError


def choose_process(procs, where):
    """(pid, note): the reload parent's worker, a supervisor's first worker, or the single app process."""
    candidates = [p for p in procs if p["role"] != "helper"]
    if not candidates:
        raise WandError("no Python process in %s; is the app running? (kubectl wand get processes)" % where,
                        errors.NOT_FOUND)
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
    raise WandError("%d Python processes in %s (%s); choose one with --pid" % (
        len(mains), where, ", ".join("%d %s" % (p["pid"], p["command"][:40]) for p in mains)), errors.USAGE)
