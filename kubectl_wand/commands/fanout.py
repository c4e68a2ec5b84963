"""Fan-out over pods: the transports a target names (``pods_of``), one call on every one of them at once
(``each``, ``read_all``: at most PARALLEL at a time), and each process's entry labelled with its pod, failures
collected per pod (``entries``: the verb's exit code is the worst of them). Used by get, exec-py --all-pods,
stack, profile and trace."""
from __future__ import annotations


from .. import errors, printers
from ..agent import protocol
from ..errors import WandError
from ..terminal import text

PARALLEL = 32  # pods called at once: one wave for most workloads, still bounded for the API server and kubelets


def each(call, transports, stop=None):
    """[call(t) for t in transports], run at once (at most PARALLEL at a time); in order. ``call`` catches what
    it wants kept per pod. With ``stop`` (a threading.Event), Ctrl-C sets it and the calls' results (streams
    ended early) are still collected."""
    if len(transports) == 1:
        return [call(transports[0])]
    from concurrent.futures import ThreadPoolExecutor  # only for several pods: 12 ms of imports
    with ThreadPoolExecutor(max_workers=min(PARALLEL, len(transports))) as pool:
        futures = [pool.submit(call, t) for t in transports]
        try:
            return [f.result() for f in futures]
        except KeyboardInterrupt:
            if stop is None:
                raise
            stop.set()  # every agent ends early and still answers with what it collected
            return [f.result() for f in futures]


def pods_of(opts):
    """The transports to read: pid/N, this machine, or the target's Running pods (--pod narrows to one)."""
    transports = opts.transports()
    if not transports:
        return opts.this_machine()
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

    return list(zip(transports, each(one, transports, stop)))


def entries(results, err, opts):
    """(entries labelled with their pod, exit code): one entry per process; failures reported on ``err``."""
    out, codes = [], []
    for transport, result in results:
        if isinstance(result, WandError):
            err.write("error: %s: %s\n" % (transport.where, text(result.message)))
            codes.append(result.code)
            continue
        if result.get("status") != protocol.OK:
            from .common import agent_error
            err.write("error: %s\n" % text(agent_error(result, transport).message))
            codes.append(errors.exit_code(result))
            continue
        for entry in result.get("processes") or []:
            entry = dict(entry, **printers.source(transport))
            if "error" in entry:
                hint = transport.alternative("with SYS_PTRACE of its own") if entry.get("kind") == "permission" else ""
                err.write("error: %s pid %s: %s%s\n" % (transport.where, text(entry["pid"]), text(entry["error"]),
                                                          hint))
                codes.append(errors.exit_code(protocol.error(entry.get("kind"), entry["error"])))
                continue
            out.append(entry)
    if not out and not codes:
        raise WandError("no Python process to read in %s" % ", ".join(t.where for t, _r in results), errors.NOT_FOUND)
    return out, (max(codes) if codes else errors.OK)
