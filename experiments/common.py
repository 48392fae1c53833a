"""What every experiment's results file shares: the machine it ran on and mean ± std summaries."""

from __future__ import annotations

import math
import os
import statistics
from typing import Any

from benchmarks.common import machine


def machine_info() -> dict[str, Any]:
    """CPU model, cores, torch version and threads, and the 1/5/15-minute load average now."""
    return {**machine(), "loadavg": [round(v, 2) for v in os.getloadavg()]}


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value; NaN for none)."""
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0
