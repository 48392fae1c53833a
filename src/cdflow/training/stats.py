"""Work counters of a model's last call, summed over its sub-modules.

* `solve_stats`: the `SolveStats` (ODE/SDE function evaluations and steps) of every sub-module exposing a
  ``.stats`` (each `ContinuousDepth`, `ConvectionDiffusionNet`, …).
* `diffusion_products`: Laplacian products of every sub-module exposing ``.diffusion_stats`` (COIN,
  Diff-ResNet, split integrators).

A module's counters are taken as a whole: sub-modules of a module that reports them are not added again.
Each module keeps the counters of its latest call, so read them right after a forward pass (forward
counts) or right after ``backward()`` (backward counts too).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from torch import nn

from cdflow.heat import DiffusionStats
from cdflow.stats import SolveStats


def _outermost(model: nn.Module, attr: str, kind: type) -> Iterator[object]:
    """Values of `attr` of type `kind` on `model`'s sub-modules, skipping those inside a reporting module."""
    taken: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(prefix) for prefix in taken):
            continue
        value = getattr(module, attr, None)
        if isinstance(value, kind):
            taken.append(f"{name}." if name else "")
            yield value


def solve_stats(model: nn.Module) -> SolveStats | None:
    """Sum of the sub-modules' `SolveStats`; ``None`` when no block has solved yet."""
    total: SolveStats | None = None
    for stats in _outermost(model, "stats", SolveStats):
        assert isinstance(stats, SolveStats)
        total = stats if total is None else total.merge(stats)
    return total


def diffusion_products(model: nn.Module) -> tuple[int, int] | None:
    """(forward, backward) Laplacian products summed over the sub-modules' `DiffusionStats`, or ``None``."""
    found = [s for s in _outermost(model, "diffusion_stats", DiffusionStats) if isinstance(s, DiffusionStats)]
    if not found:
        return None
    return sum(s.products for s in found), sum(s.backward_products for s in found)


@dataclass(frozen=True)
class CallCounters:
    """The counter objects of one call of a model (its backward counts go on accumulating in them), so that
    several calls in one step (e.g. consistency regularisation's S passes) are counted together."""

    solves: tuple[SolveStats, ...]
    diffusions: tuple[DiffusionStats, ...]

    @classmethod
    def of(cls, model: nn.Module) -> CallCounters:
        """The live counters of `model`'s last call: a module's `stats` object, or the solves' own objects behind
        a merged ``stats`` property (``_stats_parts``, ``_joint_parts``), into which backward goes on counting."""
        solves: list[SolveStats] = []
        taken: list[str] = []
        for name, module in model.named_modules():
            if any(name.startswith(prefix) for prefix in taken) or not isinstance(
                    getattr(module, "stats", None), SolveStats):
                continue
            taken.append(f"{name}." if name else "")
            live = getattr(module, "_stats_parts", None) or getattr(module, "_joint_parts", None)
            solves.extend(live if live else [module.stats])
        return cls(tuple(solves), tuple(s for s in _outermost(model, "diffusion_stats", DiffusionStats)
                                        if isinstance(s, DiffusionStats)))


def calls_solve_stats(calls: Sequence[CallCounters]) -> SolveStats | None:
    """`solve_stats` summed over several calls."""
    parts = [s for call in calls for s in call.solves]
    total: SolveStats | None = None
    for stats in parts:
        total = stats if total is None else total.merge(stats)
    return total


def calls_diffusion_products(calls: Sequence[CallCounters]) -> tuple[int, int] | None:
    """`diffusion_products` summed over several calls."""
    found = [s for call in calls for s in call.diffusions]
    if not found:
        return None
    return sum(s.products for s in found), sum(s.backward_products for s in found)
