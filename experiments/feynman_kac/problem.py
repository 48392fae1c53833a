"""The 1-D test problem and the run settings.

Velocity v(x) = a sin(x), noise ς, horizon T, payoff f(x) = 1/(1 + exp(−β(x − c))) (a soft classifier).
With dX = v(X) dt + ς dW and u(x, t) = E[f(X_t) | X_0 = x], u solves the backward Kolmogorov equation

    u_t = v(x) u_x + ½ ς² u_xx,   u(x, 0) = f(x).

The noise-injected ResNet with n blocks, h = T/n, is the Euler–Maruyama chain
x_{k+1} = x_k + h v(x_k) + √h ς ξ_k, ξ_k ~ N(0, 1), and u_ResNet(x) = E f(x_n) (weak order 1 in h).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class Problem:
    """v(x) = amplitude·sin(x), f(x) = sigmoid(beta (x − offset)), noise sigma, horizon T."""

    amplitude: float = 2.0
    sigma: float = 0.8
    T: float = 1.0
    beta: float = 4.0
    offset: float = 0.5

    def v(self, x: np.ndarray) -> np.ndarray:
        return self.amplitude * np.sin(x)

    def f(self, x: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.beta * (x - self.offset)))

    def v_torch(self, x: Tensor) -> Tensor:
        return self.amplitude * torch.sin(x)

    def f_torch(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.beta * (x - self.offset))


class SinVelocity(nn.Module):
    """v(t, x) = a sin(x) as a cdflow velocity field (for the `cdflow.sde.feynman_kac` cross-check)."""

    def __init__(self, amplitude: float) -> None:
        super().__init__()
        self.amplitude = amplitude

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        return self.amplitude * torch.sin(x)


@dataclass(frozen=True)
class Settings:
    """Blocks n, sample counts M, seeds, evaluation points and grid resolutions of one mode."""

    mode: str
    ns: tuple[int, ...]
    ms: tuple[int, ...]
    seeds: tuple[int, ...]
    x_lo: float = -3.0
    x_hi: float = 3.0
    n_eval: int = 61
    half_width: float = 10.0  # PDE / quadrature domain [−L, L]
    pde_dx: float = 0.005
    quad_dx: float = 0.005
    quad_nodes: int = 40
    validation_dx: tuple[float, ...] = (0.04, 0.02, 0.01, 0.005)
    check_n: int = 8
    check_m: int = 4000

    def x_eval(self) -> np.ndarray:
        return np.linspace(self.x_lo, self.x_hi, self.n_eval)


def settings_for(mode: str) -> Settings:
    """``smoke`` (CI, seconds), ``reduced`` (default) or ``full`` (10 seeds, M up to 10⁵)."""
    if mode == "smoke":
        return Settings(mode, ns=(2, 8, 32), ms=(2000,), seeds=(0,), n_eval=31, pde_dx=0.02, quad_dx=0.02,
                        quad_nodes=20, validation_dx=(0.08, 0.04, 0.02), check_m=500)
    if mode == "reduced":
        return Settings(mode, ns=(2, 4, 8, 16, 32), ms=(100, 1000, 10000), seeds=(0, 1, 2))
    if mode == "full":
        return Settings(mode, ns=(2, 4, 8, 16, 32), ms=(100, 1000, 10000, 100000), seeds=tuple(range(10)))
    raise ValueError(f"unknown mode {mode!r}; choose smoke, reduced or full")
