"""Operator splitting of dx/dt = v(x, t) − γ L x: Lie (x ← D_h C_h x) and Strang (x ← D_{h/2} C_h D_{h/2} x)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

from torch import Tensor

from cdflow.errors import ConfigError
from cdflow.graph.laplacian import Laplacian
from cdflow.heat.checks import check_steps
from cdflow.heat.diffuse import DIFFUSION_METHODS, DiffusionMethod, diffuse
from cdflow.heat.stats import DiffusionStats

SPLITTING_SCHEMES: tuple[str, ...] = ("lie", "strang")
_EXACT_METHODS = ("krylov", "chebyshev")


def split_solve(
    convect: Callable[[Tensor, float, float], Tensor],
    x0: Tensor,
    l_mat: Laplacian | Tensor,
    gamma: float | Tensor,
    t0: float,
    t1: float,
    n_steps: int,
    scheme: Literal["lie", "strang"] = "strang",
    diffusion: DiffusionMethod = "krylov",
    fuse: bool | None = None,
    **diffusion_kwargs: object,
) -> tuple[Tensor, DiffusionStats]:
    """Operator splitting for dx/dt = v(x, t) − γ L x on [t0, t1] with n_steps steps of h = (t1−t0)/n:

    lie:    x ← D_h C_{ta→tb} x                (first order)
    strang: x ← D_{h/2} C_{ta→tb} D_{h/2} x    (second order)

    with D_s = exp(−γsL) (or its approximation by `diffusion`) and `convect(x, ta, tb)` the pure-convection
    flow from ta to tb. With `fuse` (default: True for exact diffusion, krylov/chebyshev), the adjacent half
    steps of consecutive Strang steps are merged into one D_h (exact since D_{h/2}² = D_h).
    """
    if scheme not in SPLITTING_SCHEMES:
        raise ConfigError(
            f"unknown splitting scheme {scheme!r}; valid schemes: {', '.join(SPLITTING_SCHEMES)}"
        )
    if diffusion not in DIFFUSION_METHODS:
        raise ConfigError(
            f"unknown diffusion method {diffusion!r}; valid methods: {', '.join(DIFFUSION_METHODS)}"
        )
    n_steps = check_steps(n_steps)
    t0, t1 = float(t0), float(t1)
    if not (math.isfinite(t0) and math.isfinite(t1)) or t1 < t0:
        raise ConfigError(
            f"need finite t0 ≤ t1, got t0={t0}, t1={t1}; diffusion cannot be run backwards in time"
        )
    if fuse is None:
        fuse = diffusion in _EXACT_METHODS
    l_mat = Laplacian.coerce(l_mat)
    stats = DiffusionStats()
    if diffusion == "chebyshev" and diffusion_kwargs.get("lam_max") is None:
        fresh = not l_mat.bound_known
        bound = l_mat.spectral_bound()  # once for all steps
        diffusion_kwargs["lam_max"] = bound.upper
        stats.products += bound.products if fresh else 0
    h = (t1 - t0) / n_steps

    def dstep(x: Tensor, s: float) -> Tensor:
        y, st = diffuse(x, l_mat, gamma, s, diffusion, **dict(diffusion_kwargs))
        stats.merge(st)
        return y

    def cstep(x: Tensor, k: int) -> Tensor:
        ta, tb = t0 + k * h, (t1 if k == n_steps - 1 else t0 + (k + 1) * h)
        stats.convection_solves += 1
        return convect(x, ta, tb)

    x = x0
    for k in range(n_steps):
        if scheme == "lie":
            x = dstep(cstep(x, k), h)
            continue
        if k == 0 or not fuse:
            x = dstep(x, 0.5 * h)
        x = cstep(x, k)
        x = dstep(x, h if (fuse and k < n_steps - 1) else 0.5 * h)
    return x, stats
