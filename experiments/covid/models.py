"""Forecasters of the COVID experiment, K initialisations at once; each returns predictions [M, K].

Inputs: lags x [M, 8] (M = snapshots × regions), shared by the members, and a block-diagonal operator.

* `CovidCOIN`  u⁰ = x w + b + W₂ ELU(W₁ x + b₁) + b₂ (linear shortcut + MLP), then
               n × [dropout → u ← u − τ L_day u]  (L_day = diag(Â·1) − Â, Â = D^{-1/2} A₀ D^{-1/2})
* `CovidMLP`   W₂ dropout(ReLU(W₁ x + b₁)) + b₂
* `CovidGCN`   Â dropout(ReLU(Â x W₁ + b₁)) W₂ + b₂
* `linear_regression`  least squares [x, 1] θ ≈ y on the observed training targets (closed form)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from cdflow.models.batched import BatchedLinear, SparseRows, dropout


def shared_linear(x: Tensor, layer: BatchedLinear) -> Tensor:
    """x W_k + b_k for every member with x [M, F] shared: one product with the [F, K·H] stacked weight."""
    k, f, h = layer.weight.shape
    out = x @ layer.weight.permute(1, 0, 2).reshape(f, k * h)
    out = out.view(x.shape[0], k, h)
    return out if layer.bias is None else out + layer.bias


class _Members(nn.Module):
    def reset_parameters(self, gens: Sequence[torch.Generator]) -> None:
        for layer in self.modules():
            if isinstance(layer, BatchedLinear):
                layer.reset_parameters(gens)


class CovidCOIN(_Members):
    """Linear shortcut + ELU MLP, then `n_steps` × [dropout → u ← u − τ L u] over each day's graph."""

    def __init__(self, k: int, lags: int = 8, hidden: int = 16, tau: float = 0.5, n_steps: int = 10,
                 dropout: float = 0.25) -> None:
        super().__init__()
        self.tau, self.n_steps, self.dropout = tau, n_steps, dropout
        self.shortcut = BatchedLinear(k, lags, 1)
        self.l1 = BatchedLinear(k, lags, hidden)
        self.l2 = BatchedLinear(k, hidden, 1)

    def forward(self, x: Tensor, lap: SparseRows) -> Tensor:
        u = shared_linear(x, self.shortcut) + self.l2(nn.functional.elu(shared_linear(x, self.l1)))
        u = u[..., 0]
        for _ in range(self.n_steps):
            u = dropout(u, self.dropout, self.training)
            u = torch.add(u, lap.mm(u), alpha=-self.tau)
        return u


class CovidMLP(_Members):
    """Two-layer perceptron on the lags."""

    def __init__(self, k: int, lags: int = 8, hidden: int = 16, dropout: float = 0.25) -> None:
        super().__init__()
        self.dropout = dropout
        self.l1 = BatchedLinear(k, lags, hidden)
        self.l2 = BatchedLinear(k, hidden, 1)

    def forward(self, x: Tensor, graph: SparseRows | None = None) -> Tensor:
        h = dropout(torch.relu(shared_linear(x, self.l1)), self.dropout, self.training)
        return self.l2(h)[..., 0]


class CovidGCN(_Members):
    """Two-layer GCN over each day's normalised mobility graph (self-loops as given)."""

    def __init__(self, k: int, lags: int = 8, hidden: int = 16, dropout: float = 0.25) -> None:
        super().__init__()
        self.dropout = dropout
        self.l1 = BatchedLinear(k, lags, hidden)
        self.l2 = BatchedLinear(k, hidden, 1)

    def forward(self, x: Tensor, adj: SparseRows) -> Tensor:
        m, k = x.shape[0], self.l1.weight.shape[0]
        h = adj.mm(shared_linear(x, self.l1).reshape(m, -1)).view(m, k, -1)
        h = dropout(torch.relu(h), self.dropout, self.training)
        out = self.l2(h)[..., 0]
        return adj.mm(out)


def linear_regression(x: Tensor, y: Tensor, train: Tensor) -> Tensor:
    """Least-squares fit of y ≈ [x, 1] θ on the rows `train`; returns the predictions for every row [M]."""
    design = torch.cat([x, torch.ones(x.shape[0], 1)], dim=1).double()
    theta = torch.linalg.lstsq(design[train], y[train].double()[:, None]).solution
    return (design @ theta)[:, 0].float()
