"""exp(−tL) x by the Chebyshev–Bessel expansion on [0, λ_max]."""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.special import ive
from torch import Tensor

from cdflow.errors import ConfigError, SolverError
from cdflow.graph.laplacian import Laplacian
from cdflow.heat.checks import as_time, default_tol, finish, prepare, tval
from cdflow.heat.stats import DiffusionStats


class _BesselIve(torch.autograd.Function):
    """c_k(a) = ive(k, a) = I_k(a) e^{−a}, k = 0..K, with d/da c_k = (c_{k−1} + c_{k+1})/2 − c_k."""

    @staticmethod
    def forward(ctx, a: Tensor, degree: int) -> Tensor:  # type: ignore[override]
        vals = ive(np.arange(degree + 2), tval(a))
        full = torch.as_tensor(vals, dtype=a.dtype, device=a.device)
        ctx.save_for_backward(full)
        return full[: degree + 1]

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        (full,) = ctx.saved_tensors
        prev = torch.cat([full[1:2], full[:-2]])  # c_{k−1}, with c_{−1} = c_1
        deriv = 0.5 * (prev + full[1:]) - full[:-1]
        return (grad * deriv).sum().reshape(()), None


def _cheb_degree(a: float, tol: float, max_degree: int) -> tuple[int, float]:
    """Smallest K with tail 2·Σ_{k>K} ive(k, a) ≤ tol; returns (K, tail)."""
    vals = ive(np.arange(max_degree + 2), a)
    tails = 2.0 * np.cumsum(vals[::-1])[::-1]  # tails[k] = 2 Σ_{j≥k} vals[j]
    ok = np.nonzero(tails[1:] <= tol)[0]
    if ok.size == 0:
        raise SolverError(
            f"Chebyshev expansion of exp(−tλ) on [0, λ_max] needs degree > max_degree={max_degree} for "
            f"tol={tol:g} (t·λ_max/2 = {a:.4g}); raise max_degree, loosen tol, or use method='krylov'"
        )
    k = int(ok[0])
    return k, float(tails[k + 1])


def expm_action_chebyshev(
    l_mat: Laplacian | Tensor,
    x: Tensor,
    t: float | Tensor,
    lam_max: float | None = None,
    *,
    degree: int | None = None,
    tol: float | None = None,
    max_degree: int = 2000,
) -> tuple[Tensor, DiffusionStats]:
    """exp(−tL) x by the Chebyshev expansion of exp(−tλ) on [0, b], b = lam_max ≥ λ_max(L):

    with a = t·b/2 and S = (2/b)L − I (spectrum in [−1, 1]),
    exp(−tL) = Σ_k c_k T_k(S),  c_0 = ive(0, a),  c_k = 2(−1)^k ive(k, a)  (ive(k, a) = I_k(a) e^{−a}),
    T_k(S)x by the three-term recurrence (one product per degree). The degree is `degree`, or the
    smallest with coefficient tail ≤ tol (relative, default 1e-10 float64 / 1e-5 otherwise).
    b must bound λ_max from above (default `L.spectral_bound().upper`, computed once per Laplacian, its Lanczos
    products counted in the stats of the call that computed it); eigenvalues above b make T_k grow.
    Autograd stores the degree's T_k x (memory O(K·N·C)).
    Differentiable w.r.t. x, t (Bessel derivative) and L's values.
    """
    x2, was_1d, l_mat = prepare(x, l_mat)
    t = as_time(t, "t")
    stats = DiffusionStats()
    if lam_max is None:
        fresh = not l_mat.bound_known
        bound = l_mat.spectral_bound()
        lam_max = bound.upper
        stats.products += bound.products if fresh else 0
    if not (isinstance(lam_max, (int, float)) and math.isfinite(lam_max) and lam_max >= 0):
        raise ConfigError(f"lam_max must be a finite float ≥ 0 (an upper bound on λ_max), got {lam_max!r}")
    if tval(t) == 0.0 or lam_max == 0.0:
        return finish(x2 * 1.0, was_1d), stats
    a_val = tval(t) * lam_max / 2.0
    if degree is None:
        tol = default_tol(x2.dtype) if tol is None else float(tol)
        if not tol > 0:
            raise ConfigError(f"tol must be > 0, got {tol}")
        degree, tail = _cheb_degree(a_val, tol, max_degree)
    else:
        if isinstance(degree, bool) or not isinstance(degree, int) or degree < 0:
            raise ConfigError(f"degree must be an int ≥ 0, got {degree!r}")
        tail = float(2.0 * ive(np.arange(degree + 1, degree + 400), a_val).sum())
    a = (
        (t * (lam_max / 2.0))
        if isinstance(t, Tensor)
        else torch.tensor(a_val, dtype=x2.dtype, device=x2.device)
    )
    c = _BesselIve.apply(a.to(x2.dtype), degree)
    signs = torch.tensor([1.0] + [2.0 * (-1) ** k for k in range(1, degree + 1)], dtype=x2.dtype)
    c = c * signs.to(x2.device)
    scale = 2.0 / lam_max
    y = c[0] * x2
    if degree >= 1:
        t_prev, t_cur = x2, scale * (l_mat @ x2) - x2
        y = y + c[1] * t_cur
        for k in range(2, degree + 1):
            t_prev, t_cur = t_cur, 2.0 * (scale * (l_mat @ t_cur) - t_cur) - t_prev
            y = y + c[k] * t_cur
    stats.products += degree
    if not bool(torch.isfinite(y.detach()).all()):
        raise SolverError(
            f"Chebyshev exp(−tL)x produced non-finite values (lam_max={lam_max:g}); lam_max must bound "
            "λ_max(L) from above — use L.spectral_bound().upper"
        )
    stats.error_estimate = tail
    stats.substeps = 1
    return finish(y, was_1d), stats
