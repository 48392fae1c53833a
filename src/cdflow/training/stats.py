"""Solver statistics of a model: the sum over its continuous-depth blocks of their last solve."""

from __future__ import annotations

from torch import nn

from cdflow.stats import SolveStats


def solve_stats(model: nn.Module) -> SolveStats | None:
    """Sum of the `SolveStats` of every sub-module exposing ``.stats`` (e.g. each `ContinuousDepth`).

    Each block keeps the statistics of its latest call, so read this right after a forward pass (forward
    counts) or right after ``backward()`` (backward counts too). ``None`` when no block has solved yet.
    """
    total: SolveStats | None = None
    for module in model.modules():
        stats = getattr(module, "stats", None)
        if isinstance(stats, SolveStats):
            total = stats if total is None else total.merge(stats)
    return total
