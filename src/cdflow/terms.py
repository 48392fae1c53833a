"""Terms of the right-hand side dx/dt = Σ_k term_k(t, x).

A drift is a sum of terms: `Convection(v)` contributes v_θ(t, x); `GraphDiffusion(L, γ)` contributes
−γ L x. Noise (the SDE's diffusion ς dW) is not a drift term: see `cdflow.noise`.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from cdflow.errors import ConfigError
from cdflow.graph.laplacian import Laplacian


class Term(nn.Module):
    """One additive piece f_k(t, x) of the drift."""

    def forward(self, t: Tensor, x: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class Convection(Term):
    """Convection: f(t, x) = v_θ(t, x), the infinite-depth limit of a residual block."""

    def __init__(self, velocity: nn.Module) -> None:
        super().__init__()
        self.velocity = velocity

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        return self.velocity(t, x)


class GraphDiffusion(Term):
    """Graph diffusion: f(t, x) = −γ L x, with L a (sparse) graph Laplacian over the first axis of x.

    γ ≥ 0 may be learnable (parametrised as softplus of a raw parameter to stay non-negative).
    The Laplacian can be replaced per batch with `set_laplacian` (mini-batch kNN graphs).
    """

    def __init__(
        self, laplacian: Laplacian | Tensor | None = None, gamma: float = 1.0, learnable: bool = False
    ) -> None:
        super().__init__()
        if gamma < 0:
            raise ConfigError(f"diffusion coefficient gamma must be ≥ 0, got {gamma}")
        self.learnable = learnable
        if learnable:
            raw = torch.log(torch.expm1(torch.tensor(max(gamma, 1e-6), dtype=torch.float64)))
            self.raw_gamma = nn.Parameter(raw.float())
        else:
            self.register_buffer("fixed_gamma", torch.tensor(float(gamma)), persistent=False)
        self.laplacian: Laplacian | None = None if laplacian is None else Laplacian.coerce(laplacian)

    @property
    def gamma(self) -> Tensor:
        if self.learnable:
            return nn.functional.softplus(self.raw_gamma)
        return self.fixed_gamma

    def set_laplacian(self, laplacian: Laplacian | Tensor) -> None:
        """Use `laplacian` (a `cdflow.graph.Laplacian`, or an N×N matrix wrapped once here) from now on."""
        self.laplacian = Laplacian.coerce(laplacian)

    def apply_laplacian(self, x: Tensor) -> Tensor:
        """L x over the first axis of x (trailing axes are flattened into columns)."""
        if self.laplacian is None:
            raise ConfigError("GraphDiffusion has no Laplacian: call set_laplacian(L) before solving")
        return self.laplacian @ x

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        return -self.gamma.to(x) * self.apply_laplacian(x)


class Drift(nn.Module):
    """The drift f(t, x) = Σ_k term_k(t, x) of a continuous-depth block."""

    def __init__(self, terms: Iterable[nn.Module] | nn.Module) -> None:
        super().__init__()
        if isinstance(terms, nn.Module):
            terms = [terms]
        self.terms = nn.ModuleList(terms)
        if len(self.terms) == 0:
            raise ConfigError("a drift needs at least one term (e.g. Convection(MLPVelocity(dim)))")

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        out = self.terms[0](t, x)
        for term in self.terms[1:]:
            out = out + term(t, x)
        return out
