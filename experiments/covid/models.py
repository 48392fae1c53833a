"""Forecasters of the COVID experiment, K initialisations at once; each returns predictions [M, K].

Inputs: lags x [M, 8] (M = snapshots × regions), shared by the members (`MemberLinear.forward_shared`),
and a block-diagonal operator. These are regression heads (one real output, squared error): the library's
classifiers (`cdflow.models.COIN`, the baselines) end in a softmax, so the experiment keeps its own small
models, built from the library's layers and heat-flow integrator.

* `CovidCOIN`  u⁰ = x w + b + W₂ ELU(W₁ x + b₁) + b₂ (linear shortcut + MLP), then
               n × [dropout → u ← u − τ L_day u]  (`cdflow.heat.explicit_diffusion` on the `Laplacian`
               L_day = diag(Â·1) − Â, Â = D^{-1/2} A₀ D^{-1/2})
* `CovidMLP`   W₂ dropout(ReLU(W₁ x + b₁)) + b₂
* `CovidGCN`   Â dropout(ReLU(Â (x W₁ + b₁))) W₂ + b₂
* `linear_regression`  least squares [x, 1] θ ≈ y on the observed training targets (closed form)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from cdflow.graph import Laplacian
from cdflow.heat import explicit_diffusion
from cdflow.models.layers import MemberLinear, dropout
from cdflow.sparse import SparseMatrix


class MemberRegressor(nn.Module):
    """K members: `members` (for `cdflow.training.fit_members`) and `reset_parameters(gens)` over the
    MemberLinear layers, member k drawn from gens[k]."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.members = k

    def reset_parameters(self, gens: Sequence[torch.Generator]) -> None:
        for layer in self.modules():
            if isinstance(layer, MemberLinear):
                layer.reset_parameters(gens)


class CovidCOIN(MemberRegressor):
    """Linear shortcut + ELU MLP, then `n_steps` × [dropout → u ← u − τ L u] over each day's graph."""

    def __init__(self, k: int, lags: int = 8, hidden: int = 16, tau: float = 0.5, n_steps: int = 10,
                 dropout: float = 0.25) -> None:
        super().__init__(k)
        self.tau, self.n_steps, self.dropout = tau, n_steps, dropout
        self.shortcut = MemberLinear(k, lags, 1)
        self.l1 = MemberLinear(k, lags, hidden)
        self.l2 = MemberLinear(k, hidden, 1)

    def forward(self, x: Tensor, lap: Laplacian) -> Tensor:
        u = self.shortcut.forward_shared(x) + self.l2(nn.functional.elu(self.l1.forward_shared(x)))
        u = u[..., 0]
        if self.n_steps > 0:
            p = self.dropout if self.training else 0.0
            u, _ = explicit_diffusion(u, lap, self.tau, self.n_steps, dropout=p)
        return u


class CovidMLP(MemberRegressor):
    """Two-layer perceptron on the lags."""

    def __init__(self, k: int, lags: int = 8, hidden: int = 16, dropout: float = 0.25) -> None:
        super().__init__(k)
        self.dropout = dropout
        self.l1 = MemberLinear(k, lags, hidden)
        self.l2 = MemberLinear(k, hidden, 1)

    def forward(self, x: Tensor, graph: object = None) -> Tensor:
        h = dropout(torch.relu(self.l1.forward_shared(x)), self.dropout, self.training)
        return self.l2(h)[..., 0]


class CovidGCN(MemberRegressor):
    """Two-layer GCN over each day's normalised mobility graph (self-loops as given)."""

    def __init__(self, k: int, lags: int = 8, hidden: int = 16, dropout: float = 0.25) -> None:
        super().__init__(k)
        self.dropout = dropout
        self.l1 = MemberLinear(k, lags, hidden)
        self.l2 = MemberLinear(k, hidden, 1)

    def forward(self, x: Tensor, adj: SparseMatrix) -> Tensor:
        h = adj @ self.l1.forward_shared(x)  # one sparse product for every member: [M, K, H]
        h = dropout(torch.relu(h), self.dropout, self.training)
        return adj @ self.l2(h)[..., 0]


def linear_regression(x: Tensor, y: Tensor, train: Tensor) -> Tensor:
    """Least-squares fit of y ≈ [x, 1] θ on the rows `train`; returns the predictions for every row [M]."""
    design = torch.cat([x, torch.ones(x.shape[0], 1)], dim=1).double()
    theta = torch.linalg.lstsq(design[train], y[train].double()[:, None]).solution
    return (design @ theta)[:, 0].float()
