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
from cdflow.stats import SolveStats, merged


def _outermost(model: nn.Module, attr: str, kind: type) -> Iterator[tuple[nn.Module, object]]:
    """(module, value) for `attr` of type `kind` on `model`'s sub-modules, skipping those inside a reporting
    module."""
    taken: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(prefix) for prefix in taken):
            continue
        value = getattr(module, attr, None)
        if isinstance(value, kind):
            taken.append(f"{name}." if name else "")
            yield module, value


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
        for module, stats in _outermost(model, "stats", SolveStats):
            live = getattr(module, "_stats_parts", None) or getattr(module, "_joint_parts", None)
            solves.extend(live if live else [stats])  # type: ignore[list-item]
        diffusions = tuple(v for _, v in _outermost(model, "diffusion_stats", DiffusionStats))
        return cls(tuple(solves), diffusions)  # type: ignore[arg-type]


def calls_solve_stats(calls: Sequence[CallCounters]) -> SolveStats | None:
    """The `SolveStats` of several calls summed; ``None`` when no block has solved."""
    return merged([s for call in calls for s in call.solves])


def calls_diffusion_products(calls: Sequence[CallCounters]) -> tuple[int, int] | None:
    """(forward, backward) Laplacian products of several calls summed, or ``None``."""
    found = [s for call in calls for s in call.diffusions]
    if not found:
        return None
    return sum(s.products for s in found), sum(s.backward_products for s in found)


def solve_stats(model: nn.Module) -> SolveStats | None:
    """Sum of the sub-modules' `SolveStats` of the last call; ``None`` when no block has solved yet."""
    return calls_solve_stats([CallCounters.of(model)])


def diffusion_products(model: nn.Module) -> tuple[int, int] | None:
    """(forward, backward) Laplacian products summed over the sub-modules' `DiffusionStats`, or ``None``."""
    return calls_diffusion_products([CallCounters.of(model)])
