"""The source text of the passengers (agent/passengers/: injector, sampler, the bootstrap and the ops' code
that run under the target's interpreter): read from the package's files, or, in a pod where there are no
files, from what the CLI sent (agent/boot.py fills SOURCES). Never imported: passengers are only ever text here.
"""
from __future__ import annotations

import os

SOURCES = {}  # module name -> source text
# The op's own code, run inside the target after the bootstrap: it travels in the request (op_sources), so the
# file written into the target's temporary directory holds the bootstrap only, and a request decided from the
# hello alone (attach to a running server) compiles nothing more in the target.
OP_CODE = {"exec": ("execute",), "attach": ("debugger",), "trace": ("codefinder", "probehit", "probe"),
           "mem": ("heapcensus", "heapslices", "heapwindow"),
           "pdb": ("pdbserver",), "repl": ("execute", "replserver")}


def module_source(name: str) -> str:
    if name in SOURCES:
        return SOURCES[name]
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "passengers", name + ".py"), encoding="utf-8") as f:
        return f.read()


def op_sources(op: str) -> list:
    """[[name, source], ...] of ``op``'s code, in the order the bootstrap runs them in one namespace."""
    return [[name, module_source(name)] for name in OP_CODE.get(op, ())]
