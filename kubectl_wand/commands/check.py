"""`kubectl wand check TARGET`: every condition an injection needs, with ok/warn/fail and the fix."""
from __future__ import annotations


from .. import errors, printers
from ..errors import WandError
from ..flags import Flag
from .common import TARGET_FLAGS, TargetOptions, check_result

COLUMNS = [("CHECK", "check"), ("STATUS", "status"), ("DETAIL", "detail"), ("FIX", "fix")]

DESCRIPTION = "One row per condition an injection needs, with ok/warn/fail and the fix. Exit 1 if any row fails."
FLAGS = (
    Flag("target", nargs="?", help="POD, TYPE/NAME or pid/N"),
    Flag("--no-headers"),
    Flag("-o", "--output", choices=("wide", "json", "yaml"), help="output format"),
) + TARGET_FLAGS


class Options(TargetOptions):
    flags = FLAGS
    output: str = None
    no_headers: bool = False

    def complete(self, ns, streams):
        self.verb = "check"
        self.complete_target(ns, streams)

    def early_request(self):
        return None if self.pid else {"op": "check", "pid": None, "hold": True}

    def validate(self):
        self.validate_target()
        if self.output not in (None, "table", "wide", "json", "yaml"):
            raise WandError("check prints a table, -o json or -o yaml", errors.USAGE)

    def run(self) -> int:
        out = self.streams.stdout
        transport = self.one_transport()
        rows = list(transport.checks())
        if not any(r["status"] == "fail" for r in rows):
            try:
                result = check_result(transport.agent({"op": "check", "pid": self.known_pid()},
                                                      timeout=self.request_timeout_s, on_event=self.chosen), transport)
                rows += result["rows"]
            except WandError as exc:
                if not rows:  # no rows about the place (a local process): the failure is the answer
                    raise
                rows.append({"check": "python", "status": "fail", "detail": exc.message, "fix": ""})
        denied = [r for r in rows if r["check"] == "permission" and r["status"] == "fail"]
        fix = transport.permission_fix() if denied else None  # one API read
        for r in denied:
            r["fix"] = (fix or r["fix"]) + transport.alternative("with SYS_PTRACE of its own")
        if self.output in ("json", "yaml"):
            out.write(printers.dump(dict({"target": transport.where}, **printers.source(transport), rows=rows),
                                    self.output))
        else:
            out.write(printers.table(rows, COLUMNS, headers=not self.no_headers))
        return errors.FAILED if any(r["status"] == "fail" for r in rows) else errors.OK
