"""The batched Lanczos process for a symmetric L: the one iteration behind `krylov` (exp(−tL)x) and `phi` (φ_k(−tL)v).

For each column v_c of V [N, C] it builds an orthonormal basis q_0 = v_c/β₀, q_1, … of the Krylov space
span{v_c, L v_c, L² v_c, …} and the tridiagonal T_j = Q_jᵀ L Q_j (diagonal α, off-diagonal β), so that
f(L) v_c ≈ β₀ Q_j f(T_j) e₁. All columns advance together: one L @ X block product per iteration.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from cdflow.graph.laplacian import Laplacian
from cdflow.heat.checks import safe_div
from cdflow.heat.stats import DiffusionStats

REORTH_MODES = ("partial", "full", "none")


def tridiag(alphas: list[Tensor], betas: list[Tensor]) -> Tensor:
    """Batched [C, m, m] symmetric tridiagonal from diagonals α (m × [C]) and off-diagonals β (m−1 × [C])."""
    t = torch.diag_embed(torch.stack(alphas, dim=1))
    if len(betas):
        off = torch.stack(betas, dim=1)
        t = t + torch.diag_embed(off, offset=1) + torch.diag_embed(off, offset=-1)
    return t


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


class LanczosProcess:
    """Lanczos on (L, V) for all columns of V [N, C] at once, one iteration per `step()`.

    After j steps: `basis` holds q_0..q_j (q_j is the next, not yet used, vector), `alphas` α_0..α_{j−1},
    `betas` β_0..β_{j−2} (so `t_mat()` is the j×j T_j) and `beta` the newest β_{j−1} (the residual norm
    that enters a-posteriori error estimates: L Q_j = Q_j T_j + β_{j−1} q_j e_jᵀ). `broke` says that every
    column hit an invariant subspace (lucky breakdown: T_j is then exact).

    reorth: "partial" monitors the loss of orthogonality with Simon's ω-recurrence (O(j·C) work) and fully
    reorthogonalises two consecutive vectors when it exceeds √eps; "full" does it at every step
    (O(j²·N·C)); "none" relies on the stability of Lanczos for f(L)v. The correction, zero in exact
    arithmetic, is kept out of autograd, so memory stays O(j·N·C). Differentiable w.r.t. v and L's values
    by autograd through the iteration. Every L @ X product is counted in `stats.products`.
    """

    def __init__(self, l_mat: Laplacian, v: Tensor, reorth: str, stats: DiffusionStats) -> None:
        self.l_mat, self.reorth, self.stats = l_mat, reorth, stats
        self.eps = torch.finfo(v.dtype).eps
        self.beta0 = v.norm(dim=0)
        self.live = self.beta0 > 0
        self.basis = [safe_div(v, self.beta0, self.live)]
        self.frozen = [self.basis[0].detach()]  # same storage, no autograd: used for reorthogonalisation only
        self.alphas: list[Tensor] = []
        self.betas: list[Tensor] = []
        self.beta: Tensor | None = None
        self.broke = False
        self.omega = _Omega(v.shape[1], self.eps, v.shape[0], v.dtype, v.device) if reorth == "partial" else None

    @property
    def dim(self) -> int:
        return len(self.alphas)

    def step(self) -> None:
        """One Lanczos iteration (one L @ X product): appends α_j, q_{j+1} and sets the new β_j."""
        if self.beta is not None:
            self.betas.append(self.beta)
        q = self.basis[-1]
        w = self.l_mat @ q
        self.stats.products += 1
        alpha = (q * w).sum(dim=0)
        w = w - alpha * q
        if self.betas:
            w = w - self.betas[-1] * self.basis[-2]
        beta = w.norm(dim=0)
        if self.reorth == "full" or (self.omega is not None and self.omega.update(self.alphas + [alpha],
                                                                                   self.betas, beta)):
            w = w - _gram_schmidt(self.frozen, w)
            beta = w.norm(dim=0)
            self.stats.reorthogonalisations += 1
        scale = alpha.detach().abs() + (self.betas[-1].detach() if self.betas else 0.0)
        ok = self.live & (beta.detach() > 100 * self.eps * scale)
        beta = torch.where(ok, beta, torch.zeros_like(beta))
        self.alphas.append(alpha)
        self.basis.append(safe_div(w, beta, ok))
        self.frozen.append(self.basis[-1].detach())
        self.beta = beta
        self.broke = not bool(ok.any())

    def t_mat(self) -> Tensor:
        """T_j [C, j, j] (with autograd)."""
        return tridiag(self.alphas, self.betas)

    def combine(self, coef: Tensor) -> Tensor:
        """β₀ Σ_k q_k coef[:, k] for coefficients coef [C, j] in the basis q_0..q_{j−1}: the [N, C] action."""
        y = self.basis[0] * coef[:, 0]
        for k in range(1, coef.shape[1]):
            y = y + self.basis[k] * coef[:, k]
        return y * self.beta0
