"""`kubectl wand check TARGET`: every condition an injection needs, with ok/warn/fail and the fix."""
from __future__ import annotations


from .. import errors, printers
from ..errors import WandError
from .common import TargetOptions, check_result

COLUMNS = [("CHECK", "check"), ("STATUS", "status"), ("DETAIL", "detail"), ("FIX", "fix")]


class Options(TargetOptions):
    output: str = None
    no_headers: bool = False

    def complete(self, ns, streams):
        self.verb = "check"
        self.complete_target(ns, streams)
        self.output, self.no_headers = ns.output, ns.no_headers

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
                if transport.local:
                    raise
                rows.append({"check": "python", "status": "fail", "detail": exc.message, "fix": ""})
        denied = [r for r in rows if r["check"] == "permission" and r["status"] == "fail"]
        fix = transport.permission_fix() if denied else None  # one API read
        exec_path = not transport.local and not transport.ephemeral
        for r in denied:
            r["fix"] = (fix or r["fix"]) + ("; or add --ephemeral (a debug container with SYS_PTRACE of its own, no "
                                            "restart)" if exec_path else "")
        if self.output in ("json", "yaml"):
            out.write(printers.dump(dict({"target": transport.where}, **printers.source(transport), rows=rows),
                                    self.output))
        else:
            out.write(printers.table(rows, COLUMNS, headers=not self.no_headers))
        return errors.FAILED if any(r["status"] == "fail" for r in rows) else errors.OK
