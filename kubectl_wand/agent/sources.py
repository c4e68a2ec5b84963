"""The source text of the agent's own modules, for what runs under the target's interpreter (injector, payload,
sampler, probe): read from the package's files, or, in a pod where there are no files, from what the CLI sent
(agent/boot.py fills SOURCES)."""
from __future__ import annotations

import os

SOURCES = {}  # module name -> source text


def module_source(name: str) -> str:
    if name in SOURCES:
        return SOURCES[name]
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, name + ".py"), encoding="utf-8") as f:
        return f.read()
