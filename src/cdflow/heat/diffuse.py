"""`diffuse`: advance dx/dt = −γ L x over a time h with an integrator chosen by name."""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from cdflow.errors import ConfigError
from cdflow.graph.laplacian import Laplacian
from cdflow.heat.chebyshev import expm_action_chebyshev
from cdflow.heat.checks import as_time, check_steps
from cdflow.heat.explicit import explicit_diffusion
from cdflow.heat.implicit import implicit_euler_diffusion
from cdflow.heat.krylov import expm_action_krylov
from cdflow.heat.stats import DiffusionStats

DiffusionMethod = Literal["krylov", "chebyshev", "implicit", "explicit"]
DIFFUSION_METHODS: tuple[str, ...] = ("krylov", "chebyshev", "implicit", "explicit")


def diffuse(
    x: Tensor,
    l_mat: Laplacian | Tensor,
    gamma: float | Tensor,
    h: float | Tensor,
    method: DiffusionMethod = "krylov",
    **kwargs: object,
) -> tuple[Tensor, DiffusionStats]:
    """Advance dx/dt = −γ L x over a time h: x ← exp(−γhL) x, or its Euler approximation.

    method: ``krylov`` (`expm_action_krylov`: tol, m_max, …), ``chebyshev`` (`expm_action_chebyshev`: lam_max,
    degree, tol), ``implicit`` (`implicit_euler_diffusion`: n_steps, cg_tol, cg_max_iter) or ``explicit``
    (`explicit_diffusion`: n_steps, dropout; stable only for γh/n_steps ≤ 2/λ_max). kwargs go to the chosen
    integrator; x is [N], [N, C] or a member stack [N, K, C]. Returns (x(h), DiffusionStats)."""
    if method not in DIFFUSION_METHODS:
        raise ConfigError(
            f"unknown diffusion method {method!r}; valid methods: {', '.join(DIFFUSION_METHODS)}"
        )
    as_time(gamma, "gamma")
    as_time(h, "h")
    if isinstance(x, Tensor) and x.ndim == 3:  # a member stack [N, K, C]: every column diffuses alike
        y, stats = diffuse(x.reshape(x.shape[0], -1), l_mat, gamma, h, method, **kwargs)
        return y.view(x.shape), stats
    t = gamma * h
    if method == "krylov":
        return expm_action_krylov(l_mat, x, t, **kwargs)  # type: ignore[arg-type]
    if method == "chebyshev":
        return expm_action_chebyshev(l_mat, x, t, **kwargs)  # type: ignore[arg-type]
    n_steps = check_steps(kwargs.pop("n_steps", 1))
    if method == "implicit":
        return implicit_euler_diffusion(x, l_mat, t / n_steps, n_steps, **kwargs)  # type: ignore[arg-type]
    return explicit_diffusion(x, l_mat, t / n_steps, n_steps, **kwargs)  # type: ignore[arg-type]
