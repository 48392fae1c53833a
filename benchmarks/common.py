"""Shared benchmark machinery: result rows and their goals, interleaved repeated timing, spreads, machine description.

Peak memory is measured in fresh processes: benchmarks.memory.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch


@dataclass
class Row:
    """One reported figure: which benchmark, what was measured, the value, and the goal it is held to."""

    bench: str
    case: str
    metric: str
    value: float
    unit: str = ""
    spread: float | None = None
    goal: str = ""
    met: bool | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.spread is not None and not math.isfinite(self.spread):
            self.spread = None  # unknown (a single sample), not zero

    def as_dict(self) -> dict:
        return asdict(self)


_SYMBOL = {"<=": "≤", "<": "<", ">=": "≥", ">": ">"}


@dataclass(frozen=True)
class Goal:
    """A bound on a row's value. Its text (the table's goal column) and its test come from the same numbers.

    `met(value, spread)` holds only beyond the spread: value + spread within an upper bound, value − spread
    within a lower bound. A value or spread that is unknown or not finite (too few samples to have a spread) is
    not met; exact counts pass spread 0.
    """

    op: str
    bound: float
    unit: str = ""
    note: str = ""

    def __post_init__(self) -> None:
        if self.op not in _SYMBOL:
            raise ValueError(f"goal op must be one of {sorted(_SYMBOL)}, got {self.op!r}")

    def __str__(self) -> str:
        text = f"{_SYMBOL[self.op]} {self.bound:g}{self.unit}"
        return f"{text} ({self.note})" if self.note else text

    def met(self, value: float, spread: float | None) -> bool:
        if spread is None or not (math.isfinite(value) and math.isfinite(spread)):
            return False
        s = spread
        if self.op == "<=":
            return value + s <= self.bound
        if self.op == "<":
            return value + s < self.bound
        if self.op == ">=":
            return value - s >= self.bound
        return value - s > self.bound

    def rule(self) -> dict:
        return {"op": self.op, "bound": self.bound, "beyond_spread": True}


def goal_row(bench: str, case: str, metric: str, value: float, unit: str, spread: float | None, goal: Goal,
             extra: dict | None = None, judge: bool = True, why_not: str = "", require: bool = True) -> Row:
    """A row held to `goal`, judged beyond `spread` (pass spread=0.0 for exact counts).

    `require`: a further condition of the goal (e.g. both sides did the same number of evaluations); `judge`
    False (with `why_not`) reports the value without a goal (quick-mode sizes inside the noise). A spread
    that is unknown (None, nan: a single sample) cannot show the goal, so such a row is not judged either."""
    extra = dict(extra or {})
    spread_ok = spread is not None and math.isfinite(spread)
    if judge and not spread_ok:
        judge, why_not = False, why_not or "a single sample has no spread to judge the goal beyond"
    if not judge:
        extra.update(goal_if_judged=str(goal), not_judged=why_not)
        return Row(bench, case, metric, value, unit, spread=spread if spread_ok else None, extra=extra)
    extra["goal_rule"] = goal.rule()
    return Row(bench, case, metric, value, unit, spread=spread, goal=str(goal),
               met=bool(require) and goal.met(value, spread), extra=extra)


def device_from_env() -> torch.device:
    """`DEVICE=cpu|cuda` forces a device; otherwise CUDA when present."""
    name = os.environ.get("DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_times(
    variants: dict[str, Callable[[], object]], repeats: int, warmup: int, device: torch.device
) -> dict[str, list[float]]:
    """Time each variant `repeats` times, interleaving variants round-robin after `warmup` rounds."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for rnd in range(warmup + repeats):
        for name, fn in variants.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            if rnd >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def median_spread(samples: list[float]) -> tuple[float, float]:
    """Median and a robust spread: half the inter-quartile range from 4 samples on, half the range of 2 or 3
    samples (whose quartiles say nothing), nan for a single sample (no spread can be known)."""
    med = statistics.median(samples)
    if len(samples) < 2:
        return med, float("nan")
    if len(samples) < 4:
        return med, (max(samples) - min(samples)) / 2
    q = statistics.quantiles(samples, n=4)
    return med, (q[2] - q[0]) / 2


def paired_ratio(num: list[float], den: list[float]) -> tuple[float, float, list[float]]:
    """Median and spread (`median_spread`) of the per-round ratios num[i]/den[i] of interleaved samples: pairing
    rounds cancels load that drifts across the run."""
    ratios = [a / b for a, b in zip(num, den)]
    med, spread = median_spread(ratios)
    return med, spread, ratios


def machine() -> dict:
    """CPU model, cores, torch version and threads, GPU if any."""
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:  # pragma: no cover
        pass
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return info


def results_dir() -> Path:
    """benchmarks/results, or $CDFLOW_BENCH_OUT (the smoke test writes into a temporary folder)."""
    path = Path(os.environ.get("CDFLOW_BENCH_OUT") or Path(__file__).resolve().parent / "results")
    path.mkdir(parents=True, exist_ok=True)
    return path
