"""`Members`: K initialisations of any network trained together, for networks without a member axis.

COIN and Diff-ResNet carry the member axis in their own parameters (one graph product for all members:
``COIN(..., members=K)``). Any other network is stacked by this wrapper: K copies, each called on the same
input, outputs stacked on axis 1 ([N, K, C]). Members never mix, so Σ_k loss_k trains each on its own loss.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from cdflow.errors import ConfigError


class Members(nn.Module):
    """K copies of `factory(k)` (k = 0..K−1); forward returns their outputs stacked as [N, K, ...]."""

    def __init__(self, factory: Callable[[int], nn.Module], members: int) -> None:
        super().__init__()
        if isinstance(members, bool) or not isinstance(members, int) or members < 1:
            raise ConfigError(f"members must be an int ≥ 1, got {members!r}")
        self.members = members
        self.models = nn.ModuleList(factory(k) for k in range(members))
        self.active: list[int] | None = None

    def forward(self, *args: Any, **kwargs: Any) -> Tensor:
        outs = []
        for k, model in enumerate(self.models):
            if self.active is not None and k not in self.active:  # stopped early: no work, no gradient
                with torch.no_grad():
                    outs.append(model(*args, **kwargs).detach())
                continue
            outs.append(model(*args, **kwargs))
        return torch.stack(outs, dim=1)
