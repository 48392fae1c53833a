"""exp(−tL) x by batched Lanczos (`cdflow.heat.lanczos`), with an a-posteriori error estimate and substepping."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from cdflow.errors import ConfigError, SolverError
from cdflow.graph.laplacian import Laplacian
from cdflow.heat.checks import as_time, check_steps, default_tol, finish, prepare, tval
from cdflow.heat.lanczos import REORTH_MODES, LanczosProcess
from cdflow.heat.stats import DiffusionStats

_REORTH = REORTH_MODES


class _SymExpm(torch.autograd.Function):
    """exp(A) for a batch of symmetric A [C, m, m] by eigh, A = V diag(λ) Vᵀ.

    Backward by the Daleckii–Krein formula Ā = V (Δ ∘ (Vᵀ Ḡ V)) Vᵀ with divided differences
    Δ_ij = (e^{λ_i} − e^{λ_j})/(λ_i − λ_j), evaluated stably as e^{max(λ_i, λ_j)}·(1 − e^{−d})/d with
    d = |λ_i − λ_j| (→ e^{λ_i} on the diagonal), so close or equal eigenvalues give no cancellation or NaN."""

    @staticmethod
    def forward(ctx, a: Tensor) -> Tensor:  # type: ignore[override]
        lam, vec = torch.linalg.eigh(a)
        ctx.save_for_backward(lam, vec)
        return (vec * torch.exp(lam)[:, None, :]) @ vec.transpose(1, 2)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        lam, vec = ctx.saved_tensors
        gap = (lam[:, :, None] - lam[:, None, :]).abs()
        top = torch.maximum(lam[:, :, None], lam[:, None, :])
        tiny = gap <= 1e-300
        ratio = torch.where(tiny, torch.ones_like(gap), -torch.expm1(-gap) / torch.where(tiny, 1.0, gap))
        inner = vec.transpose(1, 2) @ grad @ vec
        return vec @ (torch.exp(top) * ratio * inner) @ vec.transpose(1, 2)


def expm_action_krylov(
    l_mat: Laplacian | Tensor,
    x: Tensor,
    t: float | Tensor,
    *,
    m_max: int = 64,
    tol: float | None = None,
    m_min: int = 4,
    check_every: int = 2,
    reorth: Literal["partial", "full", "none"] | bool = "partial",
    max_substeps: int = 64,
) -> tuple[Tensor, DiffusionStats]:
    """exp(−tL) x by batched Lanczos: y ≈ β₀ V_m exp(−t T_m) e₁ per column, with V_m the Krylov basis of
    (L, x_c) and T_m = V_mᵀ L V_m tridiagonal. All C columns advance together (one L @ X product per
    iteration); each column has its own T_m.

    Error estimate (Saad 1992): ‖exp(−tL)x_c − y_c‖ ≈ β₀ β_m t |e_mᵀ φ₁(−tT_m) e₁|, checked from `m_min`
    on, max(check_every, m/8) iterations apart; stops when it is ≤ tol·‖x_c‖ for every column (tol default
    1e-10 in float64, 1e-5 otherwise). If m_max is reached first, the largest step t/2^p that meets the
    (proportionally reduced) tolerance is taken with the same basis and the rest of the interval is
    restarted (at most `max_substeps` substeps, else SolverError).

    reorth: "partial" (default) monitors the loss of orthogonality with Simon's ω-recurrence (O(m·C) work)
    and fully reorthogonalises two consecutive vectors when it exceeds √eps; "full" (or True) does it at
    every step (O(m²·N·C)); "none" (or False) relies on the stability of Lanczos for f(L)x. The correction,
    zero in exact arithmetic, is kept out of autograd, so memory stays O(m·N·C).
    Lucky breakdowns (invariant subspace, e.g. m ≥ N) are exact and handled. Differentiable w.r.t. x, t
    and L's values by autograd through the iteration.
    """
    x2, was_1d, l_mat = prepare(x, l_mat)
    t = as_time(t, "t")
    m_max = check_steps(m_max, "m_max")
    m_min = min(check_steps(m_min, "m_min"), m_max)
    check_every = check_steps(check_every, "check_every")
    max_substeps = check_steps(max_substeps, "max_substeps")
    tol = default_tol(x2.dtype) if tol is None else float(tol)
    if not tol > 0:
        raise ConfigError(f"tol must be > 0, got {tol}")
    reorth = {True: "full", False: "none"}.get(reorth, reorth) if isinstance(reorth, bool) else reorth
    if reorth not in _REORTH:
        raise ConfigError(f"unknown reorth {reorth!r}; valid: {', '.join(_REORTH)} (or True/False)")
    stats = DiffusionStats()
    if tval(t) == 0.0 or x2.numel() == 0:
        return finish(x2 * 1.0, was_1d), stats
    n = x2.shape[0]
    m_cap = min(m_max, n)
    remaining = 1.0  # fraction of t still to integrate
    y = x2
    while remaining > 0:
        if stats.substeps >= max_substeps:
            raise SolverError(
                f"Krylov exp(−tL)x needed more than max_substeps={max_substeps} substeps at m_max={m_max} "
                f"(t·‖L‖ too large for tol={tol:g}); raise m_max or max_substeps, or loosen tol"
            )
        y, frac = _lanczos_step(l_mat, y, t, remaining, tol, m_cap, m_min, check_every, reorth, stats)
        remaining = 0.0 if frac >= remaining * (1 - 1e-12) else remaining - frac
        stats.substeps += 1
    return finish(y, was_1d), stats


def _lanczos_step(
    l_mat: Laplacian | Tensor,
    v: Tensor,
    t: float | Tensor,
    remaining: float,
    tol: float,
    m_cap: int,
    m_min: int,
    check_every: int,
    reorth: str,
    stats: DiffusionStats,
) -> tuple[Tensor, float]:
    """One Lanczos run from v; returns (exp(−frac·t·L) v, frac) with frac = remaining or a 2^-p part of it.

    Convergence checks use one detached eigendecomposition T = S diag(θ) Sᵀ per check, which gives the
    estimate for every trial step at once; checks are spaced max(check_every, j/8) iterations apart. The
    returned coefficients exp(−τT)e₁ go through `_SymExpm` when gradients are needed.
    """
    proc = LanczosProcess(l_mat, v, reorth, stats)
    tv = tval(t)
    t_grad = isinstance(t, Tensor) and t.requires_grad
    next_check = m_min
    for j in range(1, m_cap + 1):
        proc.step()
        broke = proc.broke
        if not (broke or j == m_cap or j >= next_check):
            continue
        next_check = j + max(check_every, j // 8)
        t_mat = proc.t_mat()
        beta = proc.beta
        with torch.no_grad():
            theta, s_vec = torch.linalg.eigh(t_mat.detach())
            first, last = s_vec[:, 0, :], s_vec[:, -1, :]
        fracs = [remaining] if (broke or j < m_cap) else [remaining * 0.5**p for p in range(40)]
        for frac in fracs:
            z = -(frac * tv) * theta
            neg = z < 0
            phi = torch.where(neg, torch.expm1(z) / torch.where(neg, z, -1.0), torch.ones_like(z))
            est = float((beta.detach() * frac * tv * (last * phi * first).sum(-1).abs()).max())
            if not (broke or est <= tol * frac):
                continue
            stats.krylov_dim = max(stats.krylov_dim, j)
            stats.error_estimate = max(stats.error_estimate, est)
            if torch.is_grad_enabled() and (t_mat.requires_grad or t_grad):
                coef = _SymExpm.apply(-(frac * t) * t_mat)[:, :, 0]
            else:
                coef = (s_vec * (torch.exp(z) * first)[:, None, :]).sum(-1)
            return proc.combine(coef), frac
    raise SolverError(
        f"Krylov exp(−tL)x did not reach tol={tol:g} even for a step t/2^39 with m={m_cap}; L may be "
        "non-symmetric or non-finite — check L (is_symmetric, isfinite) or raise m_max"
    )
