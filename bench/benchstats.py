"""Statistics both cluster and local benchmarks report."""
from __future__ import annotations

import statistics


def quartiles(values):
    """(first, third) quartile: the spread of per-window ratios printed beside their median."""
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4)
    return q[0], q[2]
