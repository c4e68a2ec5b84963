"""What `stack` and `profile` share: every pod of the target read in parallel, each process's entry labelled
with its pod, failures collected per pod (the verb's exit code is the worst of them)."""
from __future__ import annotations


from .. import errors
from ..errors import WandError
from ..terminal import text

PARALLEL = 32


def pods_of(opts):
    """The transports to read: pid/N, this machine, or the target's Running pods (--pod narrows to one)."""
    transports = opts.transports()
    if not transports:
        from ..transport.local import LocalTransport
        return [LocalTransport()]
    if opts.pod:
        return [opts.choose_pod(transports)]
    return transports


def read_all(transports, request, timeout, on_event=None, stop=None):
    """[(transport, result or WandError)] for ``request`` on every transport at once; ``on_event(event,
    transport)`` hears every streamed event with where it came from."""
    def one(t):
        try:
            return t.agent(dict(request), timeout=timeout, stop=stop,
                           on_event=None if on_event is None else lambda event: on_event(event, t))
        except WandError as exc:
            return exc

    if len(transports) == 1:
        return [(transports[0], one(transports[0]))]
    from concurrent.futures import ThreadPoolExecutor  # only for several pods: 12 ms of imports
    with ThreadPoolExecutor(max_workers=min(PARALLEL, len(transports))) as pool:
        futures = [(t, pool.submit(one, t)) for t in transports]
        results = []
        try:
            for t, f in futures:
                results.append((t, f.result()))
        except KeyboardInterrupt:
            if stop is None:
                raise
            stop.set()  # every agent ends early and still answers with what it collected
            results = [(t, f.result()) for t, f in futures]
        return results


def entries(results, err, opts):
    """(entries labelled with their pod, exit code): one entry per process; failures reported on ``err``."""
    out, codes = [], []
    for transport, result in results:
        if isinstance(result, WandError):
            err.write("error: %s: %s\n" % (transport.where, text(result.message)))
            codes.append(result.code)
            continue
        if result.get("status") != "ok":
            err.write("error: %s: %s\n" % (transport.where, text(result.get("error"))))
            codes.append(errors.exit_code(result))
            continue
        for entry in result.get("processes") or []:
            entry = dict(entry, pod=transport.labels.get("pod"), container=transport.labels.get("container"))
            if "error" in entry:
                hint = ""
                if entry.get("kind") == "permission" and not transport.local and not transport.ephemeral:
                    from .common import EPHEMERAL_HINT
                    hint = EPHEMERAL_HINT % "with SYS_PTRACE of its own"
                err.write("error: %s pid %s: %s%s\n" % (transport.where, text(entry["pid"]), text(entry["error"]),
                                                          hint))
                codes.append(errors.exit_code({"status": "error", "kind": entry.get("kind")}))
                continue
            out.append(entry)
    if not out and not codes:
        raise WandError("no Python process to read in %s" % ", ".join(t.where for t, _r in results), errors.NOT_FOUND)
    return out, (max(codes) if codes else errors.OK)
