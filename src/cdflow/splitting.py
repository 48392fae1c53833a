"""Stable integration of stiff graph diffusion dx/dt = −γ L x, and operator splitting with convection.

L is a symmetric PSD N×N matrix (sparse COO/CSR or dense), x is [N] or [N, C] (each column diffuses
independently), γ ≥ 0 a float or scalar tensor (possibly learnable). Integrators of x(h) = exp(−γhL) x(0):

* `explicit_diffusion`      x ← x − τ L x, n times (the Diff-ResNet layer; unstable for τ > 2/λ_max)
* `implicit_euler_diffusion` (I + τL) x_{k+1} = x_k by batched conjugate gradients, adjoint-CG backward
* `expm_action_krylov`      exp(−tL) x by batched Lanczos with an a-posteriori error estimate
* `expm_action_chebyshev`   exp(−tL) x by the Chebyshev–Bessel expansion on [0, λ_max]

One "Laplacian product" is one L @ X for the whole [N, C] block; every integrator returns
``(x_out, DiffusionStats)`` counting them. `split_solve` composes diffusion with a convection solver by
Lie (x ← D_h C_h x) or Strang (x ← D_{h/2} C_h D_{h/2} x) splitting.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from scipy.special import ive
from torch import Tensor

from cdflow.errors import ConfigError, DataError, SolverError
from cdflow.graph import spectral_bound

DiffusionMethod = Literal["krylov", "chebyshev", "implicit", "explicit"]
DIFFUSION_METHODS: tuple[str, ...] = ("krylov", "chebyshev", "implicit", "explicit")
SPLITTING_SCHEMES: tuple[str, ...] = ("lie", "strang")
_EXACT_METHODS = ("krylov", "chebyshev")
_REORTH = ("partial", "full", "none")

__all__ = [
    "DIFFUSION_METHODS",
    "SPLITTING_SCHEMES",
    "DiffusionStats",
    "diffuse",
    "expm_action_chebyshev",
    "expm_action_krylov",
    "explicit_diffusion",
    "implicit_euler_diffusion",
    "split_solve",
]


@dataclass
class DiffusionStats:
    """Work counters. products: L @ X block products in the forward pass; backward_products: those spent
    by custom backward passes (implicit solves; filled in when backward runs); krylov_dim: largest Lanczos
    dimension; substeps: time substeps taken; cg_iterations: CG iterations (forward); error_estimate:
    largest relative a-posteriori error estimate (Krylov) or coefficient-tail bound (Chebyshev);
    convection_solves: convection sub-solves (split_solve); reorthogonalisations: Lanczos steps that
    were fully reorthogonalised (Krylov)."""

    products: int = 0
    backward_products: int = 0
    krylov_dim: int = 0
    substeps: int = 0
    cg_iterations: int = 0
    error_estimate: float = 0.0
    convection_solves: int = 0
    reorthogonalisations: int = 0

    def merge(self, other: DiffusionStats) -> DiffusionStats:
        """Accumulate `other` into self (counts add, dimensions/errors take the max); returns self."""
        self.products += other.products
        self.backward_products += other.backward_products
        self.krylov_dim = max(self.krylov_dim, other.krylov_dim)
        self.substeps += other.substeps
        self.cg_iterations += other.cg_iterations
        self.error_estimate = max(self.error_estimate, other.error_estimate)
        self.convection_solves += other.convection_solves
        self.reorthogonalisations += other.reorthogonalisations
        return self


# --------------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------------
def _matmul(l_mat: Tensor, x: Tensor) -> Tensor:
    return torch.sparse.mm(l_mat, x) if l_mat.layout == torch.sparse_coo else l_mat @ x


def _operator(l_mat: Tensor) -> Tensor:
    """L in its fastest layout for repeated products: a COO L that needs no gradient becomes CSR (about
    twice as fast for L @ X on CPU); a COO L with requires_grad stays COO (autograd w.r.t. its values)."""
    if l_mat.layout == torch.sparse_coo and not l_mat.requires_grad:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "CSR support is in beta"
            return l_mat.to_sparse_csr()
    return l_mat


def _prepare(x: Tensor, l_mat: Tensor) -> tuple[Tensor, bool]:
    """Validate shapes/dtypes; return x as [N, C] and whether it was 1-D."""
    if not isinstance(x, Tensor) or x.ndim not in (1, 2):
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise DataError(f"x must be [N] or [N, C], got {shape}; flatten trailing axes with x.flatten(1)")
    if l_mat.ndim != 2 or l_mat.shape[0] != l_mat.shape[1] or l_mat.shape[0] != x.shape[0]:
        raise DataError(
            f"L must be N×N with N = x.shape[0] = {x.shape[0]}, got L of shape {tuple(l_mat.shape)}; "
            "build the Laplacian on the same node set as x"
        )
    if l_mat.dtype != x.dtype:
        raise DataError(f"L is {l_mat.dtype} but x is {x.dtype}; cast once with L = L.to(x.dtype)")
    return (x[:, None], True) if x.ndim == 1 else (x, False)


def _finish(y: Tensor, was_1d: bool) -> Tensor:
    return y[:, 0] if was_1d else y


def _as_time(t: float | Tensor, name: str) -> float | Tensor:
    """Validate a non-negative scalar time / step (float or 0-d tensor, grad kept)."""
    if isinstance(t, Tensor):
        if t.numel() != 1:
            raise ConfigError(f"{name} must be a scalar, got a tensor of shape {tuple(t.shape)}")
        val = float(t.detach())
        t = t.reshape(())
    elif isinstance(t, (int, float)) and not isinstance(t, bool):
        val = float(t)
    else:
        raise ConfigError(f"{name} must be a float or a scalar tensor, got {type(t).__name__}")
    if not math.isfinite(val) or val < 0:
        raise ConfigError(
            f"{name} = {val} must be finite and ≥ 0 (negative γ·h is the ill-posed backward heat equation); "
            "parametrise γ = softplus(raw) to keep it non-negative"
        )
    return t


def _tval(t: float | Tensor) -> float:
    return float(t.detach()) if isinstance(t, Tensor) else float(t)


def _check_steps(n_steps: object, name: str = "n_steps") -> int:
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
        raise ConfigError(f"{name} must be an int ≥ 1, got {n_steps!r}")
    return n_steps


def _default_tol(dtype: torch.dtype) -> float:
    return 1e-10 if dtype == torch.float64 else 1e-5


def _safe_div(a: Tensor, b: Tensor, ok: Tensor) -> Tensor:
    """a / b where ok, else 0, with finite gradients everywhere."""
    return torch.where(ok, a / torch.where(ok, b, torch.ones_like(b)), torch.zeros_like(a))


# --------------------------------------------------------------------------------------------------------
# explicit Euler
# --------------------------------------------------------------------------------------------------------
def explicit_diffusion(
    x: Tensor, l_mat: Tensor, tau: float | Tensor, n_steps: int = 1
) -> tuple[Tensor, DiffusionStats]:
    """The authors' diffusion layers: x ← x − τ L x, repeated n_steps times (total time n_steps·τ).

    Faithful and unguarded: it is stable only for τ ≤ 2/λ_max(L) and diverges above (by design).
    """
    x2, was_1d = _prepare(x, l_mat)
    tau = _as_time(tau, "tau")
    n_steps = _check_steps(n_steps)
    l_mat = _operator(l_mat)
    for _ in range(n_steps):
        x2 = x2 - tau * _matmul(l_mat, x2)
    return _finish(x2, was_1d), DiffusionStats(products=n_steps, substeps=n_steps)


# --------------------------------------------------------------------------------------------------------
# Krylov (Lanczos)
# --------------------------------------------------------------------------------------------------------
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
    l_mat: Tensor,
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
    x2, was_1d = _prepare(x, l_mat)
    t = _as_time(t, "t")
    m_max = _check_steps(m_max, "m_max")
    m_min = min(_check_steps(m_min, "m_min"), m_max)
    check_every = _check_steps(check_every, "check_every")
    max_substeps = _check_steps(max_substeps, "max_substeps")
    tol = _default_tol(x2.dtype) if tol is None else float(tol)
    if not tol > 0:
        raise ConfigError(f"tol must be > 0, got {tol}")
    reorth = {True: "full", False: "none"}.get(reorth, reorth) if isinstance(reorth, bool) else reorth
    if reorth not in _REORTH:
        raise ConfigError(f"unknown reorth {reorth!r}; valid: {', '.join(_REORTH)} (or True/False)")
    stats = DiffusionStats()
    if _tval(t) == 0.0 or x2.numel() == 0:
        return _finish(x2 * 1.0, was_1d), stats
    n = x2.shape[0]
    m_cap = min(m_max, n)
    l_mat = _operator(l_mat)
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
    return _finish(y, was_1d), stats


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
    l_mat: Tensor,
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
    basis = [_safe_div(v, beta0, live)]
    frozen = [basis[0].detach()]  # same storage, no autograd: used for reorthogonalisation only
    alphas: list[Tensor] = []
    betas: list[Tensor] = []
    tv = _tval(t)
    t_grad = isinstance(t, Tensor) and t.requires_grad
    next_check = m_min
    omega = _Omega(v.shape[1], eps, v.shape[0], v.dtype, v.device) if reorth == "partial" else None
    for j in range(1, m_cap + 1):
        w = _matmul(l_mat, basis[-1])
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
        basis.append(_safe_div(w, beta, ok))
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


# --------------------------------------------------------------------------------------------------------
# Chebyshev
# --------------------------------------------------------------------------------------------------------
class _BesselIve(torch.autograd.Function):
    """c_k(a) = ive(k, a) = I_k(a) e^{−a}, k = 0..K, with d/da c_k = (c_{k−1} + c_{k+1})/2 − c_k."""

    @staticmethod
    def forward(ctx, a: Tensor, degree: int) -> Tensor:  # type: ignore[override]
        vals = ive(np.arange(degree + 2), _tval(a))
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
    l_mat: Tensor,
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
    b must bound λ_max from above (default `spectral_bound(L).upper`, its Lanczos products counted in the
    stats); eigenvalues above b make T_k grow. Autograd stores the degree's T_k x (memory O(K·N·C)).
    Differentiable w.r.t. x, t (Bessel derivative) and L's values.
    """
    x2, was_1d = _prepare(x, l_mat)
    t = _as_time(t, "t")
    stats = DiffusionStats()
    if lam_max is None:
        bound = spectral_bound(l_mat)
        lam_max = bound.upper
        stats.products += bound.products
    if not (isinstance(lam_max, (int, float)) and math.isfinite(lam_max) and lam_max >= 0):
        raise ConfigError(f"lam_max must be a finite float ≥ 0 (an upper bound on λ_max), got {lam_max!r}")
    if _tval(t) == 0.0 or lam_max == 0.0:
        return _finish(x2 * 1.0, was_1d), stats
    a_val = _tval(t) * lam_max / 2.0
    if degree is None:
        tol = _default_tol(x2.dtype) if tol is None else float(tol)
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
    l_mat = _operator(l_mat)
    y = c[0] * x2
    if degree >= 1:
        t_prev, t_cur = x2, scale * _matmul(l_mat, x2) - x2
        y = y + c[1] * t_cur
        for k in range(2, degree + 1):
            t_prev, t_cur = t_cur, 2.0 * (scale * _matmul(l_mat, t_cur) - t_cur) - t_prev
            y = y + c[k] * t_cur
    stats.products += degree
    if not bool(torch.isfinite(y.detach()).all()):
        raise SolverError(
            f"Chebyshev exp(−tL)x produced non-finite values (lam_max={lam_max:g}); lam_max must bound "
            "λ_max(L) from above — use spectral_bound(L).upper"
        )
    stats.error_estimate = tail
    stats.substeps = 1
    return _finish(y, was_1d), stats


# --------------------------------------------------------------------------------------------------------
# implicit Euler (CG)
# --------------------------------------------------------------------------------------------------------
def _cg(
    l_mat: Tensor, tau: float, b: Tensor, tol: float, max_iter: int, stats: DiffusionStats, backward: bool
) -> Tensor:
    """Solve (I + τL) X = B column-wise by conjugate gradients, warm-started at X = B."""

    def count(n: int) -> None:
        if backward:
            stats.backward_products += n
        else:
            stats.products += n

    def apply(v: Tensor) -> Tensor:
        count(1)
        return v + tau * _matmul(l_mat, v)

    x = b.clone()
    r = b - apply(x)
    p = r.clone()
    rs = (r * r).sum(dim=0)
    target = (tol * b.norm(dim=0)) ** 2
    for it in range(max_iter + 1):
        active = rs > target
        if not bool(active.any()):
            if not backward:
                stats.cg_iterations += it
            return x
        if it == max_iter:
            break
        ap = apply(p)
        pap = (p * ap).sum(dim=0)
        ok = active & (pap > 0)
        alpha = torch.where(ok, rs / torch.where(ok, pap, torch.ones_like(pap)), torch.zeros_like(pap))
        x = x + alpha * p
        r = r - alpha * ap
        rs_new = (r * r).sum(dim=0)
        beta = torch.where(ok, rs_new / torch.where(ok, rs, torch.ones_like(rs)), torch.zeros_like(rs))
        p = r + beta * p
        rs = rs_new
    worst = float((rs / target.clamp(min=torch.finfo(b.dtype).tiny)).max().sqrt()) * tol
    raise SolverError(
        f"CG for (I + τL)x = b (τ={tau:g}) did not converge in cg_max_iter={max_iter} iterations "
        f"(relative residual {worst:.2e} > cg_tol={tol:g}); raise cg_max_iter, loosen cg_tol, or use fewer, "
        "smaller steps (L must be symmetric PSD)"
    )


class _ImplicitSolve(torch.autograd.Function):
    """y = (I + τL)^{-1} b. Backward (I + τL symmetric): g = (I + τL)^{-1} ȳ by CG; b̄ = g;
    τ̄ = −⟨g, L y⟩; L̄ = −τ g yᵀ (on L's sparsity pattern when L is sparse COO)."""

    @staticmethod
    def forward(ctx, b, tau, l_mat, tol, max_iter, stats):  # type: ignore[override]
        tau_f = _tval(tau)
        y = _cg(l_mat, tau_f, b, tol, max_iter, stats, backward=False)
        ctx.save_for_backward(y, tau, l_mat)
        ctx.opts = (tau_f, tol, max_iter, stats)
        return y

    @staticmethod
    def backward(ctx, gy):  # type: ignore[override]
        y, tau, l_mat = ctx.saved_tensors
        tau_f, tol, max_iter, stats = ctx.opts
        g = _cg(l_mat, tau_f, gy.contiguous(), tol, max_iter, stats, backward=True)
        g_tau = g_l = None
        if ctx.needs_input_grad[1]:
            stats.backward_products += 1
            g_tau = -(g * _matmul(l_mat, y)).sum().reshape(tau.shape).to(tau.dtype)
        if ctx.needs_input_grad[2]:
            if l_mat.layout == torch.sparse_coo:
                lc = l_mat.coalesce()
                idx = lc.indices()
                vals = -tau_f * (g[idx[0]] * y[idx[1]]).sum(dim=1)
                g_l = torch.sparse_coo_tensor(
                    idx, vals, l_mat.shape, is_coalesced=True, check_invariants=False
                )
            elif l_mat.layout == torch.strided:
                g_l = -tau_f * (g @ y.T)
            else:
                raise ConfigError("gradients w.r.t. a sparse CSR L are not supported; pass L as sparse COO")
        return g, g_tau, g_l, None, None, None


def implicit_euler_diffusion(
    x: Tensor,
    l_mat: Tensor,
    tau: float | Tensor,
    n_steps: int = 1,
    cg_tol: float | None = None,
    cg_max_iter: int = 1000,
) -> tuple[Tensor, DiffusionStats]:
    """Backward Euler for dx/dt = −Lx: (I + τL) x_{k+1} = x_k, n_steps times (total time n_steps·τ).

    Unconditionally stable and first order. Each solve is batched CG over the columns to relative residual
    cg_tol (default 1e-10 float64 / 1e-5 otherwise); the backward pass solves the adjoint system (the same
    symmetric matrix) by CG — products spent there go to `stats.backward_products`.
    """
    x2, was_1d = _prepare(x, l_mat)
    tau = _as_time(tau, "tau")
    n_steps = _check_steps(n_steps)
    cg_max_iter = _check_steps(cg_max_iter, "cg_max_iter")
    tol = _default_tol(x2.dtype) if cg_tol is None else float(cg_tol)
    if not tol > 0:
        raise ConfigError(f"cg_tol must be > 0, got {tol}")
    stats = DiffusionStats(substeps=n_steps)
    l_mat = _operator(l_mat)
    tau_t = tau if isinstance(tau, Tensor) else torch.tensor(float(tau), dtype=x2.dtype, device=x2.device)
    for _ in range(n_steps):
        x2 = _ImplicitSolve.apply(x2, tau_t, l_mat, tol, cg_max_iter, stats)
    return _finish(x2, was_1d), stats


# --------------------------------------------------------------------------------------------------------
# dispatcher and splitting
# --------------------------------------------------------------------------------------------------------
def diffuse(
    x: Tensor,
    l_mat: Tensor,
    gamma: float | Tensor,
    h: float | Tensor,
    method: DiffusionMethod = "krylov",
    **kwargs: object,
) -> tuple[Tensor, DiffusionStats]:
    """Advance dx/dt = −γ L x over a time h: x ← exp(−γhL) x (or its explicit/implicit Euler
    approximation with `n_steps` substeps of γh/n_steps). kwargs go to the chosen integrator."""
    if method not in DIFFUSION_METHODS:
        raise ConfigError(
            f"unknown diffusion method {method!r}; valid methods: {', '.join(DIFFUSION_METHODS)}"
        )
    _as_time(gamma, "gamma")
    _as_time(h, "h")
    t = gamma * h
    if method == "krylov":
        return expm_action_krylov(l_mat, x, t, **kwargs)  # type: ignore[arg-type]
    if method == "chebyshev":
        return expm_action_chebyshev(l_mat, x, t, **kwargs)  # type: ignore[arg-type]
    n_steps = _check_steps(kwargs.pop("n_steps", 1))
    if method == "implicit":
        return implicit_euler_diffusion(x, l_mat, t / n_steps, n_steps, **kwargs)  # type: ignore[arg-type]
    return explicit_diffusion(x, l_mat, t / n_steps, n_steps, **kwargs)  # type: ignore[arg-type]


def split_solve(
    convect: Callable[[Tensor, float, float], Tensor],
    x0: Tensor,
    l_mat: Tensor,
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
    n_steps = _check_steps(n_steps)
    t0, t1 = float(t0), float(t1)
    if not (math.isfinite(t0) and math.isfinite(t1)) or t1 < t0:
        raise ConfigError(
            f"need finite t0 ≤ t1, got t0={t0}, t1={t1}; diffusion cannot be run backwards in time"
        )
    if fuse is None:
        fuse = diffusion in _EXACT_METHODS
    l_mat = _operator(l_mat)  # once, not per sub-step
    stats = DiffusionStats()
    if diffusion == "chebyshev" and diffusion_kwargs.get("lam_max") is None:
        bound = spectral_bound(l_mat)  # once for all steps
        diffusion_kwargs["lam_max"] = bound.upper
        stats.products += bound.products
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
