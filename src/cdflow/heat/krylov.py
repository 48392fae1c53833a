"""exp(−tL) x by batched Lanczos (Krylov), with an a-posteriori error estimate and substepping."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from cdflow.errors import ConfigError, SolverError
from cdflow.graph.laplacian import Laplacian
from cdflow.heat.checks import as_time, check_steps, default_tol, finish, prepare, safe_div, tval
from cdflow.heat.stats import DiffusionStats

_REORTH = ("partial", "full", "none")


def _tridiag(alphas: list[Tensor], betas: list[Tensor]) -> Tensor:
    """Batched [C, m, m] symmetric tridiagonal from diagonals α (m × [C]) and off-diagonals β (m−1 × [C])."""
    t = torch.diag_embed(torch.stack(alphas, dim=1))
    if len(betas):
        off = torch.stack(betas, dim=1)
        t = t + torch.diag_embed(off, offset=1) + torch.diag_embed(off, offset=-1)
    return t


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
    eps = torch.finfo(x2.dtype).eps
    remaining = 1.0  # fraction of t still to integrate
    y = x2
    while remaining > 0:
        if stats.substeps >= max_substeps:
            raise SolverError(
                f"Krylov exp(−tL)x needed more than max_substeps={max_substeps} substeps at m_max={m_max} "
                f"(t·‖L‖ too large for tol={tol:g}); raise m_max or max_substeps, or loosen tol"
            )
        y, frac = _lanczos_step(l_mat, y, t, remaining, tol, m_cap, m_min, check_every, reorth, eps, stats)
        remaining = 0.0 if frac >= remaining * (1 - 1e-12) else remaining - frac
        stats.substeps += 1
    return finish(y, was_1d), stats


def _gram_schmidt(frozen: list[Tensor], w: Tensor) -> Tensor:
    """Classical Gram–Schmidt correction Σ_k q_k (q_kᵀ w) per column, computed without autograd (it is zero
    in exact arithmetic, so it is applied as a constant: memory O(m·N·C), not O(m²·N·C))."""
    with torch.no_grad():
        coefs = [torch.linalg.vecdot(q, w, dim=0) for q in frozen]
        corr = torch.zeros_like(w)
        for q, c in zip(frozen, coefs):
            corr.addcmul_(q, c)
    return corr


class _Omega:
    """Simon's ω-recurrence: estimates ω_{i+1,k} ≈ q_{i+1}ᵀ q_k per column from the Lanczos coefficients,
    β_i ω_{i+1,k} = β_k ω_{i,k+1} + (α_k − α_i) ω_{i,k} + β_{k−1} ω_{i,k−1} − β_{i−1} ω_{i−1,k} + rounding,
    and asks for reorthogonalisation of two consecutive vectors when max_k |ω_{i+1,k}| > √eps."""

    def __init__(self, columns: int, eps: float, n: int, dtype: torch.dtype, device: torch.device) -> None:
        self.eps, self.sqrt_n = eps, math.sqrt(n)
        self.cur = torch.ones(columns, 1, dtype=dtype, device=device)  # ω_{i, 0..i}
        self.prev: Tensor | None = None  # ω_{i−1, 0..i−1}
        self.norm = torch.zeros(columns, dtype=dtype, device=device)  # running estimate of ‖T‖
        self.force = False

    def update(self, alphas: list[Tensor], betas: list[Tensor], beta_new: Tensor) -> bool:
        """Advance with α_0..α_i, β_0..β_{i−1} and the new β_i; True if q_{i+1} must be reorthogonalised."""
        i = len(alphas) - 1
        a = torch.stack([x.detach() for x in alphas], dim=1)
        bn = beta_new.detach()
        self.norm = torch.maximum(self.norm, a[:, i].abs() + bn + (betas[-1].detach() if betas else 0.0))
        inv = torch.where(bn > 0, 1.0 / torch.where(bn > 0, bn, 1.0), torch.zeros_like(bn))[:, None]
        noise = self.eps * self.norm[:, None] * inv
        new = torch.ones(a.shape[0], i + 2, dtype=a.dtype, device=a.device)
        if i > 0:
            b = torch.stack([x.detach() for x in betas], dim=1)  # β_0..β_{i−1}
            cur = self.cur
            rec = b * cur[:, 1 : i + 1] + (a[:, :i] - a[:, i : i + 1]) * cur[:, :i]
            rec[:, 1:] += b[:, : i - 1] * cur[:, : i - 1]
            if self.prev is not None:
                rec -= b[:, i - 1 : i] * self.prev[:, :i]
            rec = rec * inv
            new[:, :i] = rec + torch.sign(rec) * noise
        new[:, i] = (self.sqrt_n * noise)[:, 0]
        need = self.force or bool(new[:, : i + 1].abs().max() > math.sqrt(self.eps))
        if need:  # this vector and the next one are reorthogonalised: ω back to rounding level
            new[:, : i + 1] = self.eps
            self.force = not self.force
        self.prev, self.cur = self.cur, new
        return need


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
    eps: float,
    stats: DiffusionStats,
) -> tuple[Tensor, float]:
    """One Lanczos run from v; returns (exp(−frac·t·L) v, frac) with frac = remaining or a 2^-p part of it.

    Convergence checks use one detached eigendecomposition T = S diag(θ) Sᵀ per check, which gives the
    estimate for every trial step at once; checks are spaced max(check_every, j/8) iterations apart. The
    returned coefficients exp(−τT)e₁ go through `_SymExpm` when gradients are needed.
    """
    beta0 = v.norm(dim=0)
    live = beta0 > 0
    basis = [safe_div(v, beta0, live)]
    frozen = [basis[0].detach()]  # same storage, no autograd: used for reorthogonalisation only
    alphas: list[Tensor] = []
    betas: list[Tensor] = []
    tv = tval(t)
    t_grad = isinstance(t, Tensor) and t.requires_grad
    next_check = m_min
    omega = _Omega(v.shape[1], eps, v.shape[0], v.dtype, v.device) if reorth == "partial" else None
    for j in range(1, m_cap + 1):
        w = (l_mat @ basis[-1])
        stats.products += 1
        alpha = (basis[-1] * w).sum(dim=0)
        w = w - alpha * basis[-1]
        if j > 1:
            w = w - betas[-1] * basis[-2]
        beta = w.norm(dim=0)
        if reorth == "full" or (omega is not None and omega.update(alphas + [alpha], betas, beta)):
            w = w - _gram_schmidt(frozen, w)
            beta = w.norm(dim=0)
            stats.reorthogonalisations += 1
        scale = alpha.detach().abs() + (betas[-1].detach() if betas else 0.0)
        ok = live & (beta.detach() > 100 * eps * scale)
        beta = torch.where(ok, beta, torch.zeros_like(beta))
        alphas.append(alpha)
        basis.append(safe_div(w, beta, ok))
        frozen.append(basis[-1].detach())
        broke = not bool(ok.any())
        if not (broke or j == m_cap or j >= next_check):
            betas.append(beta)
            continue
        next_check = j + max(check_every, j // 8)
        t_mat = _tridiag(alphas, betas)
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
            y = basis[0] * coef[:, 0]
            for k in range(1, j):
                y = y + basis[k] * coef[:, k]
            return y * beta0, frac
        betas.append(beta)
    raise SolverError(
        f"Krylov exp(−tL)x did not reach tol={tol:g} even for a step t/2^39 with m={m_cap}; L may be "
        "non-symmetric or non-finite — check L (is_symmetric, isfinite) or raise m_max"
    )
