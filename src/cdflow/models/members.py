"""`Members`: K initialisations of any network trained together, for networks without a member axis.

COIN and Diff-ResNet carry the member axis in their own parameters (one graph product for all members:
``COIN(..., members=K)``). Any other network is stacked by this wrapper: K copies, each called on the same
input, outputs stacked on axis 1 ([N, K, C]). Members never mix, so Σ_k loss_k trains each on its own loss.
A network class may run its members together: if it defines ``joint_refusal(models)`` (None when they can)
and ``forward_members(models, *args, active=…)`` returning (outputs, [SolveStats], DiffusionStats), the
wrapper calls that instead of the loop and keeps the joint call's statistics as its own `stats` and
`diffusion_stats` (`ConvectionDiffusionNet`: one solve for all members). Counts then follow the member-axis
models' convention (COIN, Diff-ResNet): a shared evaluation or Laplacian product counts once for all members;
members run one by one have their counts summed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from cdflow.errors import ConfigError
from cdflow.heat import DiffusionStats
from cdflow.stats import SolveStats, merged


class Members(nn.Module):
    """K copies of `factory(k)` (k = 0..K−1); forward returns their outputs stacked as [N, K, ...]."""

    def __init__(self, factory: Callable[[int], nn.Module], members: int) -> None:
        super().__init__()
        if isinstance(members, bool) or not isinstance(members, int) or members < 1:
            raise ConfigError(f"members must be an int ≥ 1, got {members!r}")
        self.members = members
        self.models = nn.ModuleList(factory(k) for k in range(members))
        self.active: list[int] | None = None
        self._joint_parts: list[SolveStats] = []  # the shared solve's (the members keep their own otherwise)
        self.diffusion_stats: DiffusionStats | None = None
        #: why the last call ran the members one by one (None: they shared one call; set by each call)
        self.joint_refusal: str | None = None

    @property
    def stats(self) -> SolveStats | None:
        """The shared solve's statistics of the last call, merged when read (after backward: with its
        backward counts); None when the members ran one by one (each keeps its own, summed by the reader)."""
        return merged(self._joint_parts)

    def forward(self, *args: Any, **kwargs: Any) -> Tensor:
        joint = getattr(type(self.models[0]), "forward_members", None)
        refusal = getattr(type(self.models[0]), "joint_refusal", None)
        self._joint_parts, self.diffusion_stats = [], None
        self.joint_refusal = "the network cannot share a solve" if refusal is None else refusal(list(self.models))
        if joint is not None and self.joint_refusal is None:
            out, self._joint_parts, self.diffusion_stats = joint(list(self.models), *args, active=self.active,
                                                                 **kwargs)
            return out
        outs = []
        for k, model in enumerate(self.models):
            if self.active is not None and k not in self.active:  # stopped early: no work, no gradient
                with torch.no_grad():
                    outs.append(model(*args, **kwargs).detach())
                continue
            outs.append(model(*args, **kwargs))
        return torch.stack(outs, dim=1)
