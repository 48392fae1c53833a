"""φ-function actions φ_k(−sL) v by batched Lanczos, for exponential integrators.

    φ_0(z) = e^z,   φ_{k+1}(z) = (φ_k(z) − 1/k!) / z,   i.e. φ_k(z) = ∫_0^1 e^{(1−σ)z} σ^{k−1}/(k−1)! dσ (k ≥ 1).

One Lanczos basis of v (`cdflow.heat.lanczos`) gives φ_k(−τ s L) v ≈ β₀ Q_j φ_k(−τ s T_j) e₁ for every k and
every τ at once, so a vector that an exponential Runge–Kutta step needs at several stage times and φ-orders
costs one Krylov run. The small functions φ_k(−τ s T_j) e₁ come from one matrix exponential of the augmented
(j+p)×(j+p) matrix [[−τ s T_j, e₁ e₁ᵀ], [0, J_p]] (J_p the nilpotent shift; Sidje 1998, Al-Mohy & Higham
2011): its top-right block holds [φ_1 e₁, …, φ_p e₁], and autograd differentiates it w.r.t. T_j and s.

A-posteriori error estimate (Saad 1992, extended to φ_k as in Niesen & Wright 2012):
‖φ_k(−τsL)v − β₀Q_jφ_k(−τsT_j)e₁‖ ≈ β₀ β_j τs |e_jᵀ φ_{k+1}(−τsT_j) e₁|.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor

from cdflow.errors import ConfigError, SolverError
from cdflow.graph.laplacian import Laplacian
from cdflow.heat.checks import as_time, check_steps, default_tol, finish, prepare, tval
from cdflow.heat.lanczos import REORTH_MODES, LanczosProcess
from cdflow.heat.stats import DiffusionStats

#: Σ coef · φ_k(−τ s L): a tuple of (k, τ, coef)
PhiComb = tuple[tuple[int, float, float], ...]


class KrylovNotConverged(SolverError):
    """The Lanczos estimate for a φ-action did not meet its tolerance within m_max iterations."""


def phi_scalar(z: Tensor, p: int) -> Tensor:
    """[φ_0(z), …, φ_p(z)] stacked on a new last axis, for real z ≤ 0 (any shape).

    |z| < 1/2: the Taylor series Σ_i z^i/(i+k)! (18 terms, below rounding); else the recurrence
    φ_{k+1} = (φ_k − 1/k!)/z from e^z, which loses at most a few digits for |z| ≥ 1/2 and k ≤ 6."""
    small = z.abs() < 0.5
    zs = torch.where(small, z, torch.zeros_like(z))
    zl = torch.where(small, -torch.ones_like(z), z)
    powers = zs[..., None] ** torch.arange(18, dtype=z.dtype, device=z.device)
    inv_fact = torch.tensor([[1.0 / math.factorial(i + k) for k in range(p + 1)] for i in range(18)],
                            dtype=z.dtype, device=z.device)
    series = powers @ inv_fact
    rec = [torch.exp(zl)]
    for k in range(p):
        rec.append((rec[-1] - 1.0 / math.factorial(k)) / zl)
    return torch.where(small[..., None], series, torch.stack(rec, dim=-1))


def phi_tridiag(t_mat: Tensor, s: float | Tensor, p: int) -> Tensor:
    """[φ_0(−sT)e₁, …, φ_p(−sT)e₁] as [C, m, p+1] for a batch of symmetric T [C, m, m], by one matrix
    exponential of the augmented matrix (see the module docstring), computed in float64 and differentiable
    w.r.t. T and s."""
    c, m, _ = t_mat.shape
    x = -(s if not isinstance(s, Tensor) else s.to(torch.float64)) * t_mat.to(torch.float64)
    if p == 0:
        return torch.linalg.matrix_exp(x)[:, :, :1].to(t_mat.dtype)
    aug = torch.zeros(c, m + p, m + p, dtype=torch.float64, device=t_mat.device)
    aug[:, :m, :m] = x
    aug[:, 0, m] = 1.0
    for i in range(p - 1):
        aug[:, m + i, m + i + 1] = 1.0
    e = torch.linalg.matrix_exp(aug)
    return torch.cat([e[:, :m, :1], e[:, :m, m:]], dim=2).to(t_mat.dtype)


class PhiKrylov:
    """The Lanczos basis of one block of vectors V [N, C] and its tridiagonals, ready to apply any
    combination Σ coef·φ_k(−τ s L) V (`apply`). A zero block is answered with zeros at no cost."""

    def __init__(self, proc: LanczosProcess | None, s: float | Tensor, like: Tensor) -> None:
        self.proc, self.s, self.like = proc, s, like
        self._cache: dict[float, Tensor] = {}

    @property
    def dim(self) -> int:
        return 0 if self.proc is None else self.proc.dim

    def _phis(self, tau: float, p: int) -> Tensor:
        got = self._cache.get(tau)
        if got is None or got.shape[2] <= p:
            assert self.proc is not None
            got = phi_tridiag(self.proc.t_mat(), tau * self.s, p)
            self._cache[tau] = got
        return got

    def apply(self, comb: PhiComb) -> Tensor:
        """Σ coef · φ_k(−τ s L) V for comb = ((k, τ, coef), …), as [N, C]."""
        if self.proc is None or not comb:
            return torch.zeros_like(self.like)
        p_of: dict[float, int] = {}
        for k, tau, _ in comb:
            p_of[tau] = max(p_of.get(tau, 0), k)
        coef = None
        for k, tau, w in comb:
            term = w * self._phis(tau, p_of[tau])[:, :, k]
            coef = term if coef is None else coef + term
        return self.proc.combine(coef)


def phi_krylov(
    l_mat: Laplacian,
    v: Tensor,
    s: float | Tensor,
    needs: Iterable[tuple[int, float]],
    tol: Tensor | float,
    stats: DiffusionStats,
    *,
    m_max: int = 128,
    m_min: int = 1,
    check_every: int = 1,
    reorth: str = "partial",
) -> PhiKrylov:
    """Lanczos on (L, v) [N, C] until the estimate (module docstring) of every needed φ_k(−τ s L) v,
    needs = ((k, τ), …), is ≤ tol (absolute, per column: a float or [C]) in every column, or breakdown.

    Checks start at `m_min` and are max(check_every, j/8) iterations apart; each uses one detached
    eigendecomposition of T_j. Raises `KrylovNotConverged` when m_max iterations do not suffice (an adaptive
    caller then shortens its step)."""
    needs = tuple(needs)
    kmax = max(k for k, _ in needs)
    beta0 = v.detach().norm(dim=0)
    if not bool((beta0 > 0).any()):
        return PhiKrylov(None, s, v)
    proc = LanczosProcess(l_mat, v, reorth, stats)
    sv = tval(s)
    tol_t = torch.as_tensor(tol, dtype=v.dtype, device=v.device)
    m_cap = min(m_max, v.shape[0])
    next_check = m_min
    for j in range(1, m_cap + 1):
        proc.step()
        if not (proc.broke or j == m_cap or j >= next_check):
            continue
        next_check = j + max(check_every, j // 8)
        if proc.broke:
            break
        with torch.no_grad():
            theta, vec = torch.linalg.eigh(proc.t_mat().detach())
            first, last = vec[:, 0, :], vec[:, -1, :]
            taus = sorted({tau for _, tau in needs})
            tau_t = torch.tensor(taus, dtype=theta.dtype, device=theta.device)
            phis = phi_scalar(-sv * tau_t[:, None, None] * theta, kmax + 1)
            est = torch.zeros_like(beta0)
            for k, tau in needs:
                proj = (last * phis[taus.index(tau), :, :, k + 1] * first).sum(-1).abs()
                est = torch.maximum(est, beta0 * proc.beta.detach() * tau * sv * proj)
        if bool((est <= tol_t).all()):
            stats.error_estimate = max(stats.error_estimate, float((est / beta0.clamp_min(1e-300)).max()))
            break
        if j == m_cap:
            stats.krylov_dim = max(stats.krylov_dim, j)
            raise KrylovNotConverged(
                f"Krylov φ-action did not reach its tolerance with m_max={m_max} (estimate "
                f"{float(est.max()):.3g} > {float(tol_t.max()):.3g}): shorten the step or raise m_max"
            )
    stats.krylov_dim = max(stats.krylov_dim, proc.dim)
    return PhiKrylov(proc, s, v)


def phi_action_krylov(
    l_mat: Laplacian | Tensor,
    x: Tensor,
    t: float | Tensor,
    k: int = 1,
    *,
    tol: float | None = None,
    m_max: int = 128,
    reorth: str = "partial",
) -> tuple[Tensor, DiffusionStats]:
    """φ_k(−tL) x for x [N] or [N, C] by one Lanczos run, to a relative tolerance `tol` per column (default
    1e-10 in float64, 1e-5 otherwise). Differentiable w.r.t. x, t and L's values. Returns (y, DiffusionStats)."""
    x2, was_1d, lap = prepare(x, l_mat)
    t = as_time(t, "t")
    k = check_steps(k + 1, "k + 1") - 1
    m_max = check_steps(m_max, "m_max")
    if reorth not in REORTH_MODES:
        raise ConfigError(f"unknown reorth {reorth!r}; valid: {', '.join(REORTH_MODES)}")
    tol = default_tol(x2.dtype) if tol is None else float(tol)
    if not tol > 0:
        raise ConfigError(f"tol must be > 0, got {tol}")
    stats = DiffusionStats()
    if tval(t) == 0.0:
        return finish(x2 / math.factorial(k), was_1d), stats
    basis = phi_krylov(lap, x2, t, [(k, 1.0)], tol * x2.detach().norm(dim=0), stats, m_max=m_max, reorth=reorth)
    return finish(basis.apply(((k, 1.0, 1.0),)), was_1d), stats
