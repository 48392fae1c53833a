"""COIN, the COnvection dIffusion Network (arXiv 2403.15726): diffusion of the classifier output u.

    h = x + ReLU(W₁ x + b₁)            (convection: one residual step of the base model; W₁ is F×F)
    u⁰ = softmax(W₂ h + b₂)            (base classifier)
    du/dt = −L u,  u(T) with T = n·τ    (diffusion of the output over the graph)
    loss = NLL(log max(u(T), ε))

`integrator="explicit"` takes the authors' n steps u ← u − τ L u (faithful; unstable for τ > 2/λ_max);
`integrator="split"` applies exp(−nτ L) by `method` (Krylov, Chebyshev, implicit Euler): no step bound.
`hidden=H` first projects x to H features (h = p + ReLU(W₁p + b₁), p = W_p x + b_p): the network for large
or dense inputs. `members=K` trains K initialisations as one model (every parameter [K, ...], one graph
product for all members): outputs [N, K, C], or [N, C] when K = 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from cdflow.errors import ConfigError
from cdflow.heat import DiffusionStats, diffuse, explicit_diffusion
from cdflow.models.graph_source import GraphInput, GraphSpec, resolve_graph
from cdflow.models.layers import (
    MemberLinear,
    as_sparse,
    check_dropouts,
    check_members,
    dropout,
    init_uniform,
    keep_mask,
    member_bias,
    member_generators,
)
from cdflow.models.residual_head import residual_head
from cdflow.models.wide_residual import WideResidual
from cdflow.sparse import SparseMatrix

INTEGRATORS = ("explicit", "split")
SPLIT_METHODS = ("krylov", "chebyshev", "implicit")


def check_integrator(model: str, integrator: str, method: str) -> None:
    if integrator not in INTEGRATORS:
        raise ConfigError(f"{model} integrator must be 'explicit' or 'split', got {integrator!r}")
    if method not in SPLIT_METHODS:
        raise ConfigError(f"{model} method must be one of {', '.join(SPLIT_METHODS)}, got {method!r}")


class COIN(nn.Module):
    """Returns log max(u(T), ε), the clamped log-probabilities (train with NLL on them: `output`).

    Parameters of the F-wide network (hidden=None): w1 [K, n_chunks, F, chunk] (W₁ᵀ, columns zero-padded to
    n_chunks·chunk; the padding stays zero in training since its gradient is zero), b1 [K, P], w2t [K, C, P]
    (W₂; columns ≥ F multiply the zero padding), b2 [K, C]. Member k is initialised as nn.Linear from a
    generator seeded with seed + k. `diffusion_dropout` > 0 applies dropout to u before every explicit step
    (before the exponential for the split integrator). After a call, `last_u` holds u(T) (detached) and
    `diffusion_stats` the Laplacian products. `active` (member indices, or None for all) restricts the
    wide hidden layer to those members: a trainer sets it to the members still training.

    Args:
        in_features, num_classes: F and C.
        members: K initialisations trained together (member k seeded ``seed + k``).
        tau, n_steps: the diffusion step τ and the number of steps n (diffusion time T = n·τ); n = 0 (or τ = 0)
            is the ablation without diffusion.
        integrator: ``explicit`` (n steps u ← u − τLu, stable only for τ ≤ 2/λ_max) or ``split`` (exp(−nτL)u by
            `method`: ``krylov``, ``chebyshev`` or ``implicit``; no step bound).
        hidden: None (the paper's F-wide network) or H (project x to H features first; `dropout` acts there).
        dropout, diffusion_dropout: dropout on the projected features and before the head (hidden=H only);
            dropout on u before every diffusion step.
        eps: the clamp of u before the log.
        graph: where L comes from (`GraphSpec`; by default the batch's edges, or a kNN graph of x without them).
        seed, chunk, recompute: initialisation seed; hidden columns per chunk of the F-wide layer; recompute its
            activations in the backward instead of keeping them (less memory, more time).
    """

    output = "log_probs"  # what forward returns: cdflow's trainers use NLL, not cross-entropy, on it
    sparse_input = True  # takes x as a cdflow.sparse.SparseMatrix

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        members: int = 1,
        tau: float = 0.35,
        n_steps: int = 20,
        integrator: Literal["explicit", "split"] = "explicit",
        method: Literal["krylov", "chebyshev", "implicit"] = "krylov",
        hidden: int | None = None,
        dropout: float = 0.0,
        diffusion_dropout: float = 0.0,
        eps: float = 1e-8,
        graph: GraphSpec | None = None,
        seed: int = 0,
        chunk: int = 128,
        recompute: bool = False,
    ) -> None:
        init_kwargs = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        super().__init__()
        check_integrator("COIN", integrator, method)
        self.init_kwargs = init_kwargs  # to rebuild with another number of members
        self.members = check_members(members)
        check_dropouts("COIN", dropout=dropout, diffusion_dropout=diffusion_dropout)
        if hidden is None and dropout > 0:
            raise ConfigError(
                "COIN dropout acts on the projected features: give hidden=H, or use diffusion_dropout (the paper's "
                "F-wide COIN has no dropout)"
            )
        if tau < 0 or n_steps < 0:
            raise ConfigError(f"COIN needs tau ≥ 0 and n_steps ≥ 0, got tau={tau}, n_steps={n_steps}")
        self.tau, self.n_steps, self.integrator, self.method = tau, n_steps, integrator, method
        self.eps, self.recompute, self.dropout, self.diffusion_dropout = eps, recompute, dropout, diffusion_dropout
        self.in_features, self.num_classes, self.hidden = in_features, num_classes, hidden
        self.graph = graph or GraphSpec()
        k, f, c = members, in_features, num_classes
        if hidden is None:
            n_chunks = -(-f // min(chunk, f))
            chunk = -(-f // n_chunks)  # the same number of chunks, as little zero padding as possible
            self.w1 = nn.Parameter(torch.zeros(k, n_chunks, f, chunk))
            self.b1 = nn.Parameter(torch.zeros(k, n_chunks * chunk))
            self.w2t = nn.Parameter(torch.zeros(k, c, n_chunks * chunk))
            self.b2 = nn.Parameter(torch.zeros(k, c))
        else:
            self.proj = MemberLinear(k, f, hidden)
            self.fc1 = MemberLinear(k, hidden, hidden)
            self.fc2 = MemberLinear(k, hidden, c)
        self.reset_parameters(member_generators(range(seed, seed + k)))
        self.last_u: Tensor | None = None
        self.active: list[int] | None = None
        self.diffusion_stats: DiffusionStats | None = None
        self.last_graph: str | None = None

    # -- parameters -----------------------------------------------------------------------------------
    def reset_parameters(self, gens: Sequence[torch.Generator]) -> None:
        """nn.Linear's initialisation of every layer, member k drawn from gens[k]."""
        if self.hidden is not None:
            for layer in (self.proj, self.fc1, self.fc2):
                layer.reset_parameters(gens)
            return
        f, c = self.in_features, self.num_classes
        w1, b1, w2, b2 = (torch.empty(len(gens), *shape) for shape in ((f, f), (f,), (c, f), (c,)))
        for t in (w1, b1, w2, b2):
            init_uniform(t, f, gens)
        for k in range(len(gens)):
            self.set_member(k, w1[k], b1[k], w2[k], b2[k])

    def set_member(self, k: int, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor) -> None:
        """Member k's W₁ [F, F] and W₂ [C, F] (nn.Linear layout: [out, in]) and biases (F-wide network)."""
        f = self.in_features
        with torch.no_grad():
            pad = torch.zeros(f, self.b1.shape[1], dtype=self.w1.dtype)
            pad[:, :f] = w1.t()
            self.w1[k] = pad.view(f, -1, self.w1.shape[3]).transpose(0, 1)
            self.b1[k].zero_()[:f] = b1
            self.w2t[k].zero_()[:, :f] = w2
            self.b2[k] = b2

    def member(self, k: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Member k's (W₁ [F, F], b₁ [F], W₂ [C, F], b₂ [C]) in nn.Linear layout (F-wide network)."""
        f = self.in_features
        w1t = self.w1[k].transpose(0, 1).reshape(f, -1)[:, :f]
        return w1t.t(), self.b1[k, :f], self.w2t[k, :, :f], self.b2[k]

    # -- forward --------------------------------------------------------------------------------------
    def base(self, x: Tensor | SparseMatrix) -> Tensor:
        """u⁰ [N, K, C]."""
        if self.hidden is None:
            xs = as_sparse(x)
            w2_x = self.w2t[:, :, : self.in_features].transpose(1, 2)  # the x in h = x + ReLU(W₁x + b₁)
            logits = member_bias(xs.mm_stacked(w2_x), self.b2)
            logits = logits + WideResidual.apply(self.w1, self.b1, self.w2t, xs, self.recompute, self.active)
            return torch.softmax(logits, dim=-1)
        p = self.proj.forward_shared(x, self.dropout, self.training)
        mask = None
        if self.training and self.dropout > 0:
            mask = keep_mask(tuple(p.shape), self.dropout, p.device).to(p.dtype).mul_(1.0 / (1.0 - self.dropout))
        logits = residual_head(p, self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias, mask)
        return torch.softmax(logits, dim=-1)

    def forward(self, x: Tensor | SparseMatrix, graph: GraphInput = None) -> Tensor:
        """Log-probabilities log max(u(T), ε): [N, C] for one member, [N, K, C] for K.

        x: node features [N, F] — a `cdflow.sparse.SparseMatrix` (fast), or a dense / torch sparse tensor
        (converted on every call). graph: a `cdflow.graph.Laplacian` (used as is), a `cdflow.graph.Graph`
        (its Laplacian, built once), an edge_index [2, E] (built on every call), or None (a kNN graph of x);
        ``last_graph`` then names the graph used.
        """
        u = self.base(x)
        p = self.diffusion_dropout if self.training else 0.0
        if self.n_steps > 0 and self.tau > 0:
            lap = resolve_graph(self.graph, x, graph, u.dtype)
            self.last_graph = lap.describe()
            if self.integrator == "explicit":
                u, self.diffusion_stats = explicit_diffusion(u, lap, self.tau, self.n_steps, dropout=p)
            else:
                u, self.diffusion_stats = diffuse(dropout(u, p), lap, 1.0, self.tau * self.n_steps, self.method)
        self.last_u = u.detach()
        out = torch.log(u.clamp_min(self.eps))
        return out[:, 0] if self.members == 1 else out


__all__ = ["COIN"]
