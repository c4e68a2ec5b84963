"""`kubectl wand get processes [TARGET]`: Python processes with their role and whether we can attach."""
from __future__ import annotations


from .. import errors, printers
from ..errors import WandError
from ..terminal import text
from .common import TargetOptions

COLUMNS = [
    ("PID", "pid"), ("PPID", "ppid"), ("USER", "user"), ("PYTHON", "python"),
    ("CPU%", lambda r: "%.1f" % r.get("cpu", 0.0)), ("RSS", lambda r: printers.human_bytes(r.get("rss"))),
    ("AGE", lambda r: printers.human_age(r.get("age"))), ("ROLE", "role"),
    ("ATTACHABLE", lambda r: "yes" if r["attachable"] else "no (%s)" % (r["reason"] or "?").split(":")[0]),
]
COMMAND = ("COMMAND", lambda r: r["command"] if len(r["command"]) <= 60 else r["command"][:57] + "...")
WIDE = [("CWD", "cwd"), ("EXE", "exe"), ("REASON", "reason"), ("COMMAND", "command")]
PARALLEL = 32  # pods listed at once: one wave for most workloads, still bounded for the API server and kubelets


class Options(TargetOptions):
    output: str = "table"
    no_headers: bool = False

    def complete(self, ns, streams):
        self.verb = "get processes"
        self.complete_target(ns, streams)
        self.output = ns.output or "table"
        self.no_headers = ns.no_headers

    def early_request(self):
        return {"op": "list", "cpu": True}

    def validate(self):
        self.validate_target(needs_one=False)
        if self.output not in printers.FORMATS:
            raise WandError("unknown output format %r; use one of %s" % (self.output, ", ".join(printers.FORMATS)),
                            errors.USAGE)

    def run(self) -> int:
        out, err = self.streams.stdout, self.streams.stderr
        transports = self.transports()
        only_pid = self.target.pid if self.target is not None and self.target.local else None
        if not transports:
            from ..transport.local import LocalTransport
            transports = [LocalTransport()]
        with self.step("listing Python processes"):
            rows, failures = collect(transports, only_pid, self.request_timeout_s)
        for where, exc in failures:
            err.write("error: %s: %s\n" % (where, text(exc.message if isinstance(exc, WandError) else exc)))
        if only_pid is not None and not rows and not failures:
            raise WandError("process %d is not a Python process visible here (kubectl wand get processes lists "
                            "them)" % only_pid, errors.NOT_FOUND)
        if not rows and not failures and self.output in ("table", "wide"):
            err.write("No Python processes found in %s.\n" % (
                transports[0].where if len(transports) == 1 else "%d pods" % len(transports)))
        if rows or self.output in ("json", "yaml"):  # a table of nothing is no table: no lone header line
            out.write(render(rows, self.output, self.no_headers, self.all_namespaces))
        if failures and not rows:  # nothing listed: the failures' own exit code when they agree
            codes = {exc.code if isinstance(exc, WandError) else errors.ENVIRONMENT for _where, exc in failures}
            return codes.pop() if len(codes) == 1 else errors.ENVIRONMENT
        return errors.OK


def collect(transports, only_pid, timeout):
    """List processes on every transport in parallel; pods whose listing failed come back as failures."""
    def one(t):
        result = t.agent({"op": "list", "pid": only_pid, "cpu": True}, timeout=timeout)
        if result.get("status") != "ok":
            raise errors.from_agent(result)
        return [dict(p, **t.labels) for p in result["processes"]]

    rows, failures = [], []
    if len(transports) == 1:
        try:
            return one(transports[0]), []
        except WandError as exc:
            if not transports[0].labels:
                raise
            return [], [(transports[0].where, exc)]
    from concurrent.futures import ThreadPoolExecutor  # only for several pods: 12 ms of imports
    with ThreadPoolExecutor(max_workers=min(PARALLEL, len(transports))) as pool:
        for t, fut in [(t, pool.submit(one, t)) for t in transports]:
            try:
                rows.extend(fut.result())
            except Exception as exc:
                failures.append((t.where, exc))
    return rows, failures


def render(rows, output, no_headers, all_namespaces):
    if output in ("json", "yaml"):
        return printers.dump(printers.as_list(rows, "ProcessList"), output)
    if output == "name":
        return "".join("%s%s\n" % (("pod/%s/" % r["pod"]) if r.get("pod") else "pid/", r["pid"]) for r in rows)
    columns = list(COLUMNS) + (WIDE if output == "wide" else [COMMAND])
    if any(r.get("pod") for r in rows):
        columns = [("POD", "pod"), ("CONTAINER", "container")] + columns
    if all_namespaces and any(r.get("namespace") for r in rows):
        columns = [("NAMESPACE", "namespace")] + columns
    return printers.table(rows, columns, headers=not no_headers)
