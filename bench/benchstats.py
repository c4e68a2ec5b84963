"""Statistics both cluster and local benchmarks report."""
from __future__ import annotations

import statistics


def quartiles(values):
    """(first, third) quartile: the spread of per-window ratios printed beside their median."""
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4)
    return q[0], q[2]


def wand_from(checkout, python):
    """argv that runs the kubectl-wand of another checkout (--against): ``python -m kubectl_wand`` would import the
    one in its working directory (sys.path[0]) whatever PYTHONPATH says; this puts ``checkout`` first."""
    return [python, "-c", "import runpy, sys; sys.path.insert(0, sys.argv.pop(1)); "
            "runpy.run_module('kubectl_wand', run_name='__main__', alter_sys=True)", checkout]
