"""`kubectl wand get processes [TARGET]`: Python processes with their role and whether we can attach."""
from __future__ import annotations


from .. import errors, printers
from ..agent import protocol
from ..errors import WandError
from ..flags import Flag
from ..terminal import text
from .common import TargetOptions, target_flags
from .fanout import each

COLUMNS = [
    ("PID", "pid"), ("PPID", "ppid"), ("USER", "user"), ("PYTHON", "python"),
    ("CPU%", lambda r: "%.1f" % r.get("cpu", 0.0)), ("RSS", lambda r: printers.human_bytes(r.get("rss"))),
    ("AGE", lambda r: printers.human_age(r.get("age"))), ("ROLE", "role"),
    ("ATTACHABLE", lambda r: "yes" if r["attachable"] else "no (%s)" % (r["reason"] or "?").split(":")[0]),
]
COMMAND = ("COMMAND", lambda r: r["command"] if len(r["command"]) <= 60 else r["command"][:57] + "...")
WIDE = [("CWD", "cwd"), ("EXE", "exe"), ("REASON", "reason"), ("COMMAND", "command")]

DESCRIPTION = "List Python processes: PID, PPID, USER, PYTHON, CPU%, RSS, AGE, ROLE, ATTACHABLE, COMMAND."
FLAGS = (
    Flag("resource", nargs=None, choices=("processes", "process", "procs", "ps"), metavar="processes"),
    Flag("target", nargs="?", help="POD, TYPE/NAME or pid/N (default: this machine)"),
    Flag("-A", "--all-namespaces", help="pods in every namespace"),
    Flag("--no-headers"),
    Flag("-o", "--output", choices=("wide", "json", "yaml", "name"), help="output format"),
) + target_flags(one_pod=False, pid=False)


class Options(TargetOptions):
    flags = FLAGS
    resource: str = "processes"
    output: str = "table"
    no_headers: bool = False

    def complete(self, ns, streams):
        self.verb = "get processes"
        self.complete_target(ns, streams)
        self.output = self.output or "table"

    def early_request(self):
        return {"op": "list", "cpu": True}

    def validate(self):
        self.validate_target(needs_one=False)
        if self.output not in printers.FORMATS:
            raise WandError("unknown output format %r; use one of %s" % (self.output, ", ".join(printers.FORMATS)),
                            errors.USAGE)

    def run(self) -> int:
        out, err = self.streams.stdout, self.streams.stderr
        transports = self.transports() or self.this_machine()
        only_pid = self.target.pid if self.target is not None and self.target.local else None
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
        if result.get("status") != protocol.OK:
            raise errors.from_agent(result)
        return [dict(p, **printers.source(t)) for p in result["processes"]]

    rows, failures = [], []
    if len(transports) == 1:
        try:
            return one(transports[0]), []
        except WandError as exc:
            if not transports[0].labels:
                raise
            return [], [(transports[0].where, exc)]

    def kept(t):
        try:
            return one(t)
        except Exception as exc:  # noqa: BLE001 - one pod's failure is reported beside the others' rows
            return exc

    for t, found in zip(transports, each(kept, transports)):
        if isinstance(found, Exception):
            failures.append((t.where, found))
        else:
            rows.extend(found)
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
