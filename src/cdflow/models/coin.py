"""COIN, the COnvection dIffusion Network (arXiv 2403.15726): diffusion of the classifier output u.

    h = x + ReLU(W₁ x + b₁)            (convection: one residual step of the base model)
    u⁰ = softmax(W₂ h + b₂)            (base classifier)
    du/dt = −L u,  u(T) with T = n·τ    (diffusion of the output over the graph)
    loss = NLL(log max(u(T), ε))

`integrator="explicit"` takes the authors' n steps u ← u − τ L u (faithful; unstable for τ > 2/λ_max);
`integrator="split"` applies exp(−nτ L) exactly by Krylov (or Chebyshev / implicit Euler): no step bound.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from cdflow.errors import ConfigError
from cdflow.models.graph_source import GraphSpec, LaplacianCache
from cdflow.models.sparse import sparse_linear
from cdflow.splitting import DiffusionStats, diffuse


class COIN(nn.Module):
    """Returns log max(u(T), ε), the clamped log-probabilities (use NLL or cross-entropy on them)."""

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        tau: float = 0.35,
        n_steps: int = 20,
        integrator: Literal["explicit", "split"] = "explicit",
        method: Literal["krylov", "chebyshev", "implicit"] = "krylov",
        dropout: float = 0.0,
        eps: float = 1e-8,
        graph: GraphSpec | None = None,
        hidden: int | None = None,
    ) -> None:
        super().__init__()
        if integrator not in ("explicit", "split"):
            raise ConfigError(f"COIN integrator must be 'explicit' or 'split', got {integrator!r}")
        self.tau, self.n_steps, self.integrator, self.method, self.eps = tau, n_steps, integrator, method, eps
        width = hidden or in_features
        self.proj = nn.Identity() if hidden is None else nn.Linear(in_features, hidden)
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, num_classes)
        self.dropout = nn.Dropout(dropout)
        self.laplacian = LaplacianCache(graph or GraphSpec(source="edges", laplacian="gcn"))
        self.diffusion_stats: DiffusionStats | None = None

    def base(self, x: Tensor) -> Tensor:
        """u⁰ = softmax(W₂(x + ReLU(W₁x + b₁)) + b₂). Sparse x (bag-of-words features) is multiplied sparsely."""
        if x.is_sparse:
            x = sparse_linear(x, self.proj) if isinstance(self.proj, nn.Linear) else x
        else:
            x = self.proj(self.dropout(x))
        h = (x.to_dense() if x.is_sparse else x) + torch.relu(sparse_linear(x, self.fc1))
        return torch.softmax(self.fc2(self.dropout(h)), dim=-1)

    def forward(self, x: Tensor, edge_index: Tensor | None = None) -> Tensor:
        u = self.base(x)
        lap = self.laplacian(x, edge_index)
        if self.integrator == "explicit":
            u, stats = diffuse(u, lap, 1.0, self.tau * self.n_steps, "explicit", n_steps=self.n_steps)
        else:
            u, stats = diffuse(u, lap, 1.0, self.tau * self.n_steps, self.method)
        self.diffusion_stats = stats
        return torch.log(u.clamp_min(self.eps))
