"""`kubectl wand exec-py TARGET -- CODE | -f FILE | -f -`: run code inside the live process."""
from __future__ import annotations

from .. import errors, printers, report
from ..spinner import step
from ..errors import WandError
from . import common


class Options:
    def __init__(self, args):
        self.args = args
        self.code = None

    def complete(self, stdin):
        args = self.args
        if args.filename and args.code:
            raise WandError("give the code either after -- or with -f, not both", errors.USAGE)
        if args.filename == "-":
            self.code = stdin.read()
        elif args.filename:
            try:
                with open(args.filename, encoding="utf-8") as f:
                    self.code = f.read()
            except OSError as exc:
                raise WandError("cannot read -f %s: %s; check the path" % (args.filename, exc.strerror), errors.USAGE)
        else:
            self.code = " ".join(args.code)

    def validate(self):
        if not self.code or not self.code.strip():
            raise WandError("no code to run; give it after -- (exec-py pid/123 -- 'print(1)') or with -f FILE",
                            errors.USAGE)
        if self.args.timeout <= 0:
            raise WandError("--timeout must be positive", errors.USAGE)
        if self.args.output not in (None, "json", "yaml"):
            raise WandError("exec-py prints -o json or -o yaml (or plain output without -o)", errors.USAGE)

    def run(self, out, err):
        target, transport = common.one_transport(self.args, "exec-py")
        pid, note = common.target_pid(self.args, transport, target)
        if note and not self.args.quiet:
            err.write(note + "\n")
        with step(self.args, "running code in %s pid %d" % (transport.where, pid)):
            result = transport.agent({"op": "exec", "pid": pid, "code": self.code, "timeout": self.args.timeout},
                                     timeout=self.args.timeout + self.args.request_timeout_s)
        result.pop("hello", None)
        result["pid"] = pid
        if self.args.output:
            out.write(printers.dump(result, self.args.output))
            return exit_code(result)
        status = result.get("status")
        if status in ("pending", "running"):
            report.timed_out(result, err)
            return errors.TIMEOUT
        common.check_result(result, transport)
        if result.get("stdout"):
            out.write(result["stdout"])
        if result.get("value") is not None:
            out.write(result["value"] + "\n")
        if result.get("stderr"):
            err.write(result["stderr"])
        if status == "raised":
            err.write(result.get("traceback") or (result.get("error", "") + "\n"))
            return errors.FAILED
        if status == "timeout":
            err.write("error: %s (exceeded --timeout %g)\n" % (result["error"], self.args.timeout))
            return errors.TIMEOUT
        return errors.OK


def exit_code(result):
    status = result.get("status")
    if status == "ok":
        return errors.OK
    if status == "raised":
        return errors.FAILED
    if status in ("pending", "running", "timeout"):
        return errors.TIMEOUT
    return errors.KIND_EXIT.get(result.get("kind"), errors.ENVIRONMENT)
