"""The noise-injected ResNet x_{k+1} = x_k + h v(x_k) + √h ς ξ_k (h = T/n) and three ways to average it.

* `resnet_monte_carlo`: M independent noise samples per input, u_ResNet(x) ≈ (1/M) Σ f(x_n), with the
  standard error SE(x) = std(f(x_n)) / √M;
* `resnet_quadrature`: the M = ∞ limit, E f(x_n) exactly up to quadrature: the chain is time-homogeneous,
  so g_0 = f, g_{j+1}(x) = E g_j(x + h v(x) + √h ς ξ) (Gauss–Hermite in ξ, cubic-spline g_j on a grid), and
  u_ResNet = g_n; the gap to the PDE is then the discretisation bias alone (weak order 1: O(h));
* `library_estimate`: `cdflow.sde.feynman_kac` (torchsde Euler–Maruyama, step h), the same chain.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from numpy.polynomial.hermite_e import hermegauss
from scipy.interpolate import CubicSpline

from cdflow import Convection, Drift
from cdflow.noise import NoiseDiffusion
from cdflow.sde import feynman_kac
from cdflow.solvers import SolverSpec
from experiments.feynman_kac.problem import Problem, SinVelocity


def _generator(seed: int, n: int, m: int) -> torch.Generator:
    return torch.Generator().manual_seed(1_000_003 * seed + 10_007 * n + m)


@torch.no_grad()
def resnet_monte_carlo(problem: Problem, x: np.ndarray, n: int, m: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean, standard error) of f(x_n) over m noise samples per input point, float64."""
    gen = _generator(seed, n, m)
    h = problem.T / n
    state = torch.as_tensor(x, dtype=torch.float64).expand(m, -1).clone()
    for _ in range(n):
        noise = torch.randn(state.shape, generator=gen, dtype=torch.float64)
        state = state + h * problem.v_torch(state) + math.sqrt(h) * problem.sigma * noise
    values = problem.f_torch(state)
    return values.mean(0).numpy(), (values.std(0) / math.sqrt(m)).numpy()


def resnet_quadrature(
    problem: Problem, x: np.ndarray, n: int, half_width: float, dx: float, nodes: int
) -> np.ndarray:
    """E f(x_n) for M = ∞ by the backward recursion g_{j+1}(x) = Σ_q w_q g_j(x + h v(x) + √h ς z_q)."""
    z, w = hermegauss(nodes)
    w = w / w.sum()
    grid = np.linspace(-half_width, half_width, int(round(2 * half_width / dx)) + 1)
    h = problem.T / n
    g = problem.f(grid)
    landing = np.clip(grid[:, None] + h * problem.v(grid)[:, None] + math.sqrt(h) * problem.sigma * z[None, :],
                      -half_width, half_width)
    for _ in range(n):
        g = CubicSpline(grid, g)(landing) @ w
    return CubicSpline(grid, g)(x)


def library_estimate(problem: Problem, x: np.ndarray, n: int, m: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean, standard error) from `cdflow.sde.feynman_kac` with torchsde's Euler method, step T/n."""
    drift = Drift(Convection(SinVelocity(problem.amplitude)))
    noise = NoiseDiffusion("diagonal", problem.sigma, dim=1)
    spec = SolverSpec(method="euler", step_size=problem.T / n, t1=problem.T)
    x0 = torch.as_tensor(x, dtype=torch.float64)[:, None]
    mean, std = feynman_kac(drift, noise, x0, spec, m, payoff=lambda v: problem.f_torch(v[:, 0]), seed=seed)
    return mean.numpy(), (std / math.sqrt(m)).numpy()
