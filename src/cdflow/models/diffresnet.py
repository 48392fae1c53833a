"""Diff-ResNet (arXiv 2105.03155): a residual convection block, then diffusion of the hidden features.

    hidden=None (the reference graph code's F-wide network):  h⁰ = x + ReLU(W₁ x + b₁)
    hidden=H:                                                  h⁰ = p + ReLU(W₁ p + b₁),  p = ReLU(W_in x + b_in)
    n × [ dropout → h ← h − τ L h ]                            (explicit; split: dropout, then exp(−nτL) h)
    logits = W₂ hⁿ + b₂

Training keeps only the n boolean dropout masks for the backward (`cdflow.heat.explicit`). Without dropout
(evaluation, or p = 0) the layers are (I − τL)ⁿ, which commutes with the head: logits = (I − τL)ⁿ (h⁰ W₂ᵀ) + b₂
diffuses C columns instead of F. `members=K` trains K initialisations as one model: outputs [N, K, C], or
[N, C] when K = 1. `n_steps = 0` (or τ = 0) is the ResNet ablation (then without dropout).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from cdflow.errors import ConfigError
from cdflow.heat import DiffusionStats, diffuse, explicit_diffusion
from cdflow.models.coin import check_integrator
from cdflow.models.graph_source import GraphInput, GraphSpec, resolve_graph
from cdflow.models.layers import (
    MemberLinear,
    as_sparse,
    check_dropouts,
    check_members,
    dropout,
    init_uniform,
    member_bias,
    member_generators,
    member_matmul,
)
from cdflow.sparse import SparseMatrix


class DiffResNet(nn.Module):
    """Returns log-softmax scores. Parameters of the F-wide network: w1 [K, F, F] (W₁ᵀ), b1 [K, F],
    w2 [K, F, C] (W₂ᵀ), b2 [K, C]; nn.Linear's initialisation, member k from a generator seeded seed + k."""

    sparse_input = True  # takes x as a cdflow.sparse.SparseMatrix

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        members: int = 1,
        hidden: int | None = None,
        tau: float = 0.25,
        n_steps: int = 20,
        dropout: float = 0.25,
        input_dropout: float = 0.0,
        integrator: Literal["explicit", "split"] = "explicit",
        method: Literal["krylov", "chebyshev", "implicit"] = "krylov",
        graph: GraphSpec | None = None,
        seed: int = 0,
    ) -> None:
        init_kwargs = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        super().__init__()
        check_integrator("DiffResNet", integrator, method)
        self.init_kwargs = init_kwargs  # to rebuild with another number of members
        self.members = check_members(members)
        check_dropouts("DiffResNet", dropout=dropout, input_dropout=input_dropout)
        if hidden is None and input_dropout > 0:
            raise ConfigError("DiffResNet input_dropout needs hidden=H (the F-wide reference network has none)")
        self.tau, self.n_steps, self.dropout, self.input_dropout = tau, n_steps, dropout, input_dropout
        self.integrator, self.method, self.hidden = integrator, method, hidden
        self.in_features, self.num_classes = in_features, num_classes
        self.graph = graph or GraphSpec()
        k, f, c = members, in_features, num_classes
        if hidden is None:
            self.w1 = nn.Parameter(torch.empty(k, f, f))
            self.b1 = nn.Parameter(torch.empty(k, f))
            self.w2 = nn.Parameter(torch.empty(k, f, c))
            self.b2 = nn.Parameter(torch.empty(k, c))
        else:
            self.inp = MemberLinear(k, f, hidden)
            self.res = MemberLinear(k, hidden, hidden)
            self.out = MemberLinear(k, hidden, c)
        self.reset_parameters(member_generators(range(seed, seed + k)))
        self.diffusion_stats: DiffusionStats | None = None
        self.last_graph: str | None = None

    def reset_parameters(self, gens: Sequence[torch.Generator]) -> None:
        """nn.Linear's initialisation (fan-in F for both F-wide layers), member k drawn from gens[k]."""
        if self.hidden is None:
            for t in (self.w1, self.b1, self.w2, self.b2):
                init_uniform(t, self.in_features, gens)
        else:
            for layer in (self.inp, self.res, self.out):
                layer.reset_parameters(gens)

    def hidden_features(self, x: Tensor | SparseMatrix) -> Tensor:
        """h⁰ [N, K, width]."""
        if self.hidden is None:
            xs = as_sparse(x)
            return torch.relu(member_bias(xs.mm_stacked(self.w1), self.b1)) + xs.to_dense()[:, None, :]
        p = torch.relu(self.inp.forward_shared(x, self.input_dropout, self.training))
        return p + torch.relu(self.res(p))

    def head(self, h: Tensor) -> Tensor:
        """W₂ h without the bias [N, K, C]."""
        return member_matmul(h, self.w2 if self.hidden is None else self.out.weight)

    def forward(self, x: Tensor | SparseMatrix, graph: GraphInput = None) -> Tensor:
        h = self.hidden_features(x)
        bias = self.b2 if self.hidden is None else self.out.bias
        diffuse_on = self.n_steps > 0 and self.tau > 0
        p = self.dropout if self.training else 0.0
        if not diffuse_on:
            logits = self.head(h)
        else:
            lap = resolve_graph(self.graph, x, graph, h.dtype)
            self.last_graph = lap.describe()
            if p > 0 and self.integrator == "explicit":
                h, self.diffusion_stats = explicit_diffusion(h, lap, self.tau, self.n_steps, dropout=p)
                logits = self.head(h)
            elif self.integrator == "explicit":  # (I − τL)ⁿ commutes with the head: diffuse C columns
                logits, self.diffusion_stats = explicit_diffusion(self.head(h), lap, self.tau, self.n_steps)
            else:
                h, self.diffusion_stats = diffuse(dropout(h, p), lap, 1.0, self.tau * self.n_steps, self.method)
                logits = self.head(h)
        out = torch.log_softmax(member_bias(logits, bias), dim=-1)
        return out[:, 0] if self.members == 1 else out
