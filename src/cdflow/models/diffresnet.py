"""Diff-ResNet (arXiv 2105.03155): a residual convection block, then diffusion of the hidden features.

    h = ReLU(W_in x),  h ← h + ReLU(W h + b)           (convection; hidden=None: h = x + ReLU(W x + b),
                                                       the F-wide network of the reference graph code)
    n × [ dropout → h ← h − τ L h ]                    (diffusion on the feature graph)
    logits = W_out h
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from cdflow.errors import ConfigError
from cdflow.models.graph_source import GraphSpec, LaplacianCache
from cdflow.models.sparse import sparse_linear
from cdflow.splitting import DiffusionStats, diffuse


class DiffResNet(nn.Module):
    """Returns log-softmax scores. `n_steps=0` (or tau=0) is the ResNet ablation without diffusion."""

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        hidden: int | None = 64,
        tau: float = 0.25,
        n_steps: int = 20,
        dropout: float = 0.25,
        input_dropout: float = 0.0,
        integrator: Literal["explicit", "split"] = "explicit",
        method: Literal["krylov", "chebyshev", "implicit"] = "krylov",
        graph: GraphSpec | None = None,
    ) -> None:
        super().__init__()
        if integrator not in ("explicit", "split"):
            raise ConfigError(f"DiffResNet integrator must be 'explicit' or 'split', got {integrator!r}")
        self.tau, self.n_steps, self.integrator, self.method = tau, n_steps, integrator, method
        width = in_features if hidden is None else hidden
        self.inp = None if hidden is None else nn.Linear(in_features, hidden)
        self.res = nn.Linear(width, width)
        self.out = nn.Linear(width, num_classes)
        self.dropout = nn.Dropout(dropout)
        self.input_dropout = nn.Dropout(input_dropout)
        self.laplacian = LaplacianCache(graph or GraphSpec(source="edges", laplacian="gcn"))
        self.diffusion_stats: DiffusionStats | None = None

    def forward(self, x: Tensor, edge_index: Tensor | None = None) -> Tensor:
        if self.inp is None:  # h = x + ReLU(W x + b)
            xd = x.to_dense() if x.is_sparse else self.input_dropout(x)
            h = xd + torch.relu(sparse_linear(x, self.res) if x.is_sparse else self.res(xd))
        else:
            h = torch.relu(sparse_linear(x, self.inp) if x.is_sparse else self.inp(self.input_dropout(x)))
            h = h + torch.relu(self.res(h))
        if self.n_steps > 0 and self.tau > 0:
            lap = self.laplacian(x, edge_index)
            if self.integrator == "explicit":
                total = DiffusionStats()
                for _ in range(self.n_steps):
                    h, st = diffuse(self.dropout(h), lap, 1.0, self.tau, "explicit", n_steps=1)
                    total.merge(st)
                self.diffusion_stats = total
            else:
                h, self.diffusion_stats = diffuse(self.dropout(h), lap, 1.0, self.tau * self.n_steps, self.method)
        return torch.log_softmax(self.out(h), dim=-1)
