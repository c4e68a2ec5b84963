"""`kubectl wand check TARGET`: every condition an injection needs, with ok/warn/fail and the fix."""
from __future__ import annotations

from .. import errors, printers
from ..errors import WandError
from . import common

COLUMNS = [("CHECK", "check"), ("STATUS", "status"), ("DETAIL", "detail"), ("FIX", "fix")]


class Options:
    def __init__(self, args):
        self.args = args

    def validate(self):
        if self.args.output not in (None, "table", "wide", "json", "yaml"):
            raise WandError("check prints a table, -o json or -o yaml", errors.USAGE)

    def run(self, out, err):
        target, transport = common.one_transport(self.args, "check")
        rows = list(getattr(transport, "pod_checks", lambda: [])())
        if not any(r["status"] == "fail" for r in rows):
            try:
                pid, note = common.target_pid(self.args, transport, target)
                if note and not self.args.quiet:
                    err.write(note + "\n")
                result = common.check_result(transport.agent({"op": "check", "pid": pid},
                                                             timeout=self.args.request_timeout_s), transport)
                rows += result["rows"]
            except WandError as exc:
                if target is not None and target.local:
                    raise
                rows.append({"check": "python", "status": "fail", "detail": exc.message, "fix": ""})
        denied = [r for r in rows if r["check"] == "permission" and r["status"] == "fail"]
        fix = getattr(transport, "permission_fix", lambda: None)() if denied else None  # one API read
        for r in denied:
            r["fix"] = fix or r["fix"]
        if self.args.output in ("json", "yaml"):
            out.write(printers.dump({"target": transport.where, "rows": rows}, self.args.output))
        else:
            out.write(printers.table(rows, COLUMNS, headers=not self.args.no_headers))
        return errors.FAILED if any(r["status"] == "fail" for r in rows) else errors.OK
