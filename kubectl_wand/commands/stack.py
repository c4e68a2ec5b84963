"""`kubectl wand stack TARGET`: every thread's Python stack (and with --async the asyncio task tree) of every
Python process, read from the process's memory: nothing runs in it, it never stops, and it works where
exec-py cannot (remote debugging disabled, an audit hook refusing scripts, a main thread blocked in C)."""
from __future__ import annotations


from .. import errors, printers, stackview
from ..errors import WandError
from ..flags import Flag
from .common import TARGET_FLAGS, TargetOptions
from .fanout import entries, pods_of, read_all

DESCRIPTION = ("Every thread of every Python process (or --pid) with its name, state and frames, innermost first; "
               "with --async the asyncio task tree. Read from the process's memory: it runs no code there and never "
               "stops it.")
FLAGS = (
    Flag("target", nargs="?", help="POD, TYPE/NAME or pid/N (default: this machine)"),
    Flag("--async", dest="asyncio", help="also the asyncio task tree"),
    Flag("-o", "--output", choices=("json", "yaml"), help="output format"),
) + TARGET_FLAGS


class Options(TargetOptions):
    flags = FLAGS
    asyncio: bool = False
    output: str = None

    def complete(self, ns, streams):
        self.verb = "stack"
        self.complete_target(ns, streams)

    def request(self):
        return {"op": "stack", "pid": self.known_pid(), "async": self.asyncio}

    def early_request(self):
        return self.request()  # it only reads: no hold needed

    def validate(self):
        self.validate_target(needs_one=False)
        if self.output not in (None, "json", "yaml"):
            raise WandError("stack prints text, -o json or -o yaml", errors.USAGE)

    def run(self) -> int:
        out, err = self.streams.stdout, self.streams.stderr
        transports = pods_of(self)
        with self.step("reading stacks"):
            results = read_all(transports, self.request(), self.request_timeout_s + 15)
        found, code = entries(results, err, self)
        if self.output:
            out.write(printers.dump(printers.as_list(found, "StackList"), self.output))
        else:
            out.write("\n".join(stackview.render_process(e, e.get("pod")) for e in found))
        return code
