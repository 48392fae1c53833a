"""Adaptive exponential Runge–Kutta integration of convection + graph diffusion:

    dx/dt = N(t, x) − γ L x,   x(t0) = x0,   L symmetric positive semi-definite, γ ≥ 0.

The linear part A = −γL is taken exactly through φ-function actions φ_k(τ hA) v (Lanczos, `cdflow.heat.phi`);
the convection N by the stages of an embedded exponential Runge–Kutta pair (`cdflow.heat.exprk_tableaux`:
``exprk32``, Hochbruck–Ostermann order 3 with an order-2 estimate, or ``exprk21``, Cox–Matthews ETD2RK
with exponential Euler). Because the stiff part is exact, the step size follows the accuracy of the
convection, not the stability bound 2/(γλ_max) of an explicit method. With N ≡ 0 a step is exp(hA) x.

Step control (adaptive mode): err = max over components of RMS(e / (atol + rtol·max(|x_n|, |x_{n+1}|))) with
e the difference of the pair; a step is accepted when err ≤ 1, and h ← h·clip(0.9·err^(−1/(p̂+1)), 0.2, 10)
(no growth right after a rejection), p̂ the embedded order. The first step is Hairer's estimate on the
full drift unless given. Krylov tolerance per column: krylov_safety·(atol·√N + rtol·‖x_n‖); a φ-action
that needs more than m_max Lanczos steps rejects the step (h halved). Fixed-step mode: n = ⌈T/step_size⌉
equal steps; rtol/atol then only set the Krylov accuracy.

Gradients: by backpropagation through the steps (``adjoint=False``), or by the adjoint method
(``adjoint=True``): the forward pass keeps only the accepted states x_n, and the backward pass solves

    da/dt = −(∂N/∂x)ᵀ a + γ L a,   dθ̄/dt = −aᵀ ∂N/∂θ,   dγ̄/dt = aᵀ L x,   a(T) = ∂loss/∂x(T)

backwards over each forward step [t_n, t_{n+1}] with the same exponential pair (L is symmetric, so the
linear part is −γL again in reversed time; θ̄ and γ̄ are integrated with the pair's weights at hA = 0), with
its own step control (adjoint_rtol/atol; the error norm covers a alone with ``seminorm``, else a, θ̄, γ̄).
The state at an adjoint stage time t ∈ (t_n, t_{n+1}) is recomputed by one step of size t − t_n from x_n.
Backward diffusion is ill-posed, so the state is never integrated backwards. Memory: the accepted states.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from cdflow.errors import ConfigError, DataError, SolverError
from cdflow.graph.laplacian import Laplacian
from cdflow.heat.checks import as_time, check_steps, tval
from cdflow.heat.exprk_tableaux import ExpRKTableau, at_zero, difference, exprk_tableau
from cdflow.heat.lanczos import REORTH_MODES
from cdflow.heat.phi import KrylovNotConverged, PhiKrylov, phi_krylov
from cdflow.heat.stats import DiffusionStats
from cdflow.stats import SolveStats, count_backward

Velocity = Callable[[Tensor, Tensor], Tensor]
#: f(t, [x, *free]) → [N(t, x), *d free/dt]: the non-linear part of every component (component 0 has A)
Dynamics = Callable[[float, list[Tensor]], list[Tensor]]

_SAFETY, _IFACTOR, _DFACTOR = 0.9, 10.0, 0.2


@dataclass
class ExponentialSolution:
    """x(t1), the solve's `SolveStats` (velocity evaluations, steps; backward fields fill in during
    ``backward()``), its `DiffusionStats` (Laplacian products, largest Krylov dimension, accepted steps
    as substeps) and the accepted step times."""

    y: Tensor
    stats: SolveStats
    diffusion: DiffusionStats
    ts: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class _Settings:
    tab: ExpRKTableau
    rtol: float
    atol: float
    step_size: float | None
    adaptive: bool
    max_steps: int | None
    m_max: int
    krylov_safety: float
    reorth: str
    n_err: int = 1  # components that enter the error norm


def _flat(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1)


def _step(lap: Laplacian, gamma: float | Tensor, f: Dynamics, st: _Settings, t: float, h: float,
          y: list[Tensor], f0: list[Tensor], stats: DiffusionStats) -> tuple[list[Tensor], list[Tensor]]:
    """One step of the pair from (t, y) with N(t, y) = f0: returns (y_{n+1}, y_{n+1} − ŷ_{n+1})."""
    tab = st.tab
    x0 = _flat(y[0])
    s = gamma * h
    w = _flat(f0[0]) - gamma * (lap @ x0)
    stats.products += 1
    ktol = st.krylov_safety * (st.atol * math.sqrt(x0.shape[0]) + st.rtol * x0.detach().norm(dim=0)) / h

    def krylov(v: Tensor, needs: Sequence[tuple[int, float]], scale: float) -> PhiKrylov:
        if not needs:
            return PhiKrylov(None, s, v)
        return phi_krylov(lap, v, s, needs, ktol / scale, stats, m_max=st.m_max, reorth=st.reorth)

    kry = [krylov(w, [(1, c) for c in tab.c[1:]] + [(1, 1.0)], 1.0)]
    ds: list[list[Tensor]] = [[]]
    for i in range(1, tab.stages):
        ci = tab.c[i]
        xi = x0 + h * kry[0].apply(((1, ci, ci),))
        for j in range(1, i):
            xi = xi + h * kry[j].apply(tab.a[i - 1][j - 1])
        ui = [xi.view_as(y[0])]
        for m in range(1, len(y)):
            um = y[m] + (h * ci) * f0[m]
            for j in range(1, i):
                um = um + (h * at_zero(tab.a[i - 1][j - 1])) * ds[j][m]
            ui.append(um)
        fi = f(t + ci * h, ui)
        ds.append([a - b for a, b in zip(fi, f0)])
        kry.append(krylov(_flat(ds[i][0]), tab.needs(i), tab.weight_bound(i)))
    x1 = x0 + h * kry[0].apply(((1, 1.0, 1.0),))
    e0 = torch.zeros_like(x0)
    for j in range(1, tab.stages):
        x1 = x1 + h * kry[j].apply(tab.b[j - 1])
        e0 = e0 + h * kry[j].apply(difference(tab.b[j - 1], tab.b_hat[j - 1]))
    y1, err = [x1.view_as(y[0])], [e0.view_as(y[0])]
    for m in range(1, len(y)):
        ym, em = y[m] + h * f0[m], torch.zeros_like(y[m])
        for j in range(1, tab.stages):
            ym = ym + (h * at_zero(tab.b[j - 1])) * ds[j][m]
            em = em + (h * (at_zero(tab.b[j - 1]) - at_zero(tab.b_hat[j - 1]))) * ds[j][m]
        y1.append(ym)
        err.append(em)
    return y1, err


def _norm(err: list[Tensor], y0: list[Tensor], y1: list[Tensor], st: _Settings, rtol: float, atol: float) -> float:
    """max over the first n_err components of RMS(e / (atol + rtol·max(|y0|, |y1|)))."""
    out = 0.0
    for e, a, b in list(zip(err, y0, y1))[: st.n_err]:
        if e.numel() == 0:
            continue
        scale = atol + rtol * torch.maximum(a.detach().abs(), b.detach().abs())
        val = float((e.detach() / scale).pow(2).mean().sqrt())
        out = max(out, val if math.isfinite(val) else math.inf)
    return out


def _initial_step(lap: Laplacian, gamma: float | Tensor, f: Dynamics, st: _Settings, t0: float, y0: list[Tensor],
                  f0: list[Tensor], stats: DiffusionStats) -> float:
    """Hairer, Nørsett & Wanner's starting step on the full drift A x + N (order p of the method)."""
    g = tval(gamma)
    with torch.no_grad():
        x0 = y0[0].detach()
        full0 = f0[0].detach() - g * (lap @ x0).view_as(x0)
        stats.products += 1
        scale = st.atol + st.rtol * x0.abs()
        d0 = float((x0 / scale).pow(2).mean().sqrt())
        d1 = float((full0 / scale).pow(2).mean().sqrt())
        h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
        x1 = x0 + h0 * full0
        full1 = f(t0 + h0, [x1] + [v.detach() for v in y0[1:]])[0].detach() - g * (lap @ x1).view_as(x1)
        stats.products += 1
        d2 = float(((full1 - full0) / scale).pow(2).mean().sqrt()) / h0
    p = st.tab.order
    h1 = max(1e-6, h0 * 1e-3) if max(d1, d2) <= 1e-15 else (0.01 / max(d1, d2)) ** (1.0 / (p + 1))
    return min(100 * h0, h1)


def _integrate(lap: Laplacian, gamma: float | Tensor, f: Dynamics, st: _Settings, y0: list[Tensor], t0: float,
               t1: float, stats: SolveStats, dstats: DiffusionStats, *, backward: bool = False,
               first_step: float | None = None, keep: bool = False) -> tuple[list[Tensor], list[float],
                                                                            list[list[Tensor]]]:
    """Integrate from t0 to t1; returns (y(t1), accepted times, accepted states if `keep`)."""
    key = "backward_steps" if backward else "steps"
    span = t1 - t0
    if st.adaptive:
        setattr(stats, key + "_accepted", getattr(stats, key + "_accepted") or 0)
        setattr(stats, key + "_rejected", getattr(stats, key + "_rejected") or 0)
        h = first_step
    else:
        n = max(1, math.ceil(span / st.step_size - 1e-9))
        h = span / n
    t, y = t0, y0
    f0: list[Tensor] | None = None
    ts, ys = [t0], ([y0] if keep else [])
    attempts, after_reject = 0, False
    while t1 - t > 1e-12 * max(1.0, abs(t1)):
        if f0 is None:
            f0 = f(t, y)
        if h is None:
            h = _initial_step(lap, gamma, f, st, t, y, f0, dstats)
        attempts += 1
        if st.max_steps is not None and attempts > st.max_steps:
            raise SolverError(f"max_steps={st.max_steps} exceeded at t={t:.6g} with the exponential method "
                              f"{st.tab.name!r}: loosen rtol/atol or raise max_steps")
        land = t + h >= t1 - 1e-10 * abs(span)
        h_try = t1 - t if land else h
        setattr(stats, key, getattr(stats, key) + 1)
        try:
            y1, err = _step(lap, gamma, f, st, t, h_try, y, f0, dstats)
        except KrylovNotConverged as exc:
            if not st.adaptive:
                raise SolverError(f"{exc} (fixed step {h_try:.3g} at t={t:.6g}: lower step_size or raise m_max)"
                                  ) from None
            setattr(stats, key + "_rejected", getattr(stats, key + "_rejected") + 1)
            h, after_reject = 0.5 * h_try, True
            continue
        if st.adaptive:
            en = _norm(err, y, y1, st, st.rtol, st.atol)
            if en == 0.0:
                factor = _IFACTOR
            elif math.isfinite(en):
                factor = min(_IFACTOR, max(_DFACTOR, _SAFETY * en ** (-1.0 / (st.tab.embedded_order + 1))))
            else:
                factor = _DFACTOR
            if en > 1.0:
                setattr(stats, key + "_rejected", getattr(stats, key + "_rejected") + 1)
                h, after_reject = h_try * min(factor, 1.0), True
                if h < 1e-14 * max(1.0, abs(t)):
                    raise SolverError(f"step-size underflow at t={t:.6g} with the exponential method "
                                      f"{st.tab.name!r}: the convection is too steep or non-finite; loosen rtol/atol")
                continue
            setattr(stats, key + "_accepted", getattr(stats, key + "_accepted") + 1)
            h = h_try * (min(factor, 1.0) if after_reject else factor)
            after_reject = False
        t = t1 if land else t + h_try
        y, f0 = y1, None
        ts.append(t)
        if keep:
            ys.append(y)
        dstats.substeps += 1
    return y, ts, ys


def _velocity_dynamics(velocity: Velocity, stats: SolveStats, backward: bool) -> Dynamics:
    def f(t: float, y: list[Tensor]) -> list[Tensor]:
        x = y[0]
        if backward:
            stats.nfe_backward += 1
        else:
            stats.nfe_forward += 1
        out = velocity(torch.tensor(t, dtype=x.dtype, device=x.device), x)
        if out.requires_grad and not backward:
            out = count_backward(out, stats)
        return [out]

    return f


@dataclass
class _Problem:
    velocity: Velocity
    lap: Laplacian
    gamma: float | Tensor
    t0: float
    t1: float
    st: _Settings
    adj: _Settings
    first_step: float | None
    stats: SolveStats
    dstats: DiffusionStats
    params: tuple[Tensor, ...]
    ts: list[float] = field(default_factory=list)


class _ExpAdjoint(torch.autograd.Function):
    """x0, γ, θ ↦ x(t1) by the exponential integrator; backward by the adjoint equation (module docstring)."""

    @staticmethod
    def forward(ctx, prob: _Problem, x0: Tensor, gamma: Tensor | None, *params: Tensor) -> Tensor:  # type: ignore[override]
        g = prob.gamma if gamma is None else gamma.detach()
        f = _velocity_dynamics(prob.velocity, prob.stats, backward=False)
        y, ts, ys = _integrate(prob.lap, g, f, prob.st, [x0.detach()], prob.t0, prob.t1, prob.stats, prob.dstats,
                               first_step=prob.first_step, keep=True)
        prob.ts = ts
        ctx.prob, ctx.ys, ctx.gamma_grad = prob, [v[0] for v in ys], gamma is not None
        return y[0]

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple:  # type: ignore[override]
        prob: _Problem = ctx.prob
        x_grad, g_grad, p_grads = _adjoint(prob, ctx.ys, grad, ctx.gamma_grad)
        return (None, x_grad, g_grad, *p_grads)


def _adjoint(prob: _Problem, xs: list[Tensor], grad: Tensor, gamma_grad: bool) -> tuple[Tensor, Tensor | None,
                                                                                         list[Tensor]]:
    """Solve the adjoint equations backwards over the forward's accepted steps (module docstring)."""
    lap, g, stats = prob.lap, tval(prob.gamma), prob.stats
    bstats = DiffusionStats()
    params = prob.params
    fwd = _velocity_dynamics(prob.velocity, stats, backward=True)
    a = grad.detach()
    pbar = [torch.zeros_like(p) for p in params]
    gbar = torch.zeros((), dtype=a.dtype, device=a.device)
    for n in range(len(xs) - 2, -1, -1):
        ta, tb, xa, xb = prob.ts[n], prob.ts[n + 1], xs[n], xs[n + 1]
        memo: dict[str, list[Tensor]] = {}

        def state_at(t: float, ta: float = ta, tb: float = tb, xa: Tensor = xa, xb: Tensor = xb,
                     memo: dict = memo) -> Tensor:
            if abs(t - tb) <= 1e-12 * max(1.0, abs(tb)):
                return xb
            if abs(t - ta) <= 1e-12 * max(1.0, abs(ta)):
                return xa
            if "f0" not in memo:
                memo["f0"] = fwd(ta, [xa])
            y, _ = _step(lap, g, fwd, prob.st, ta, t - ta, [xa], memo["f0"], bstats)
            return y[0]

        def dyn(sigma: float, y: list[Tensor], tb: float = tb, state_at: Callable = state_at) -> list[Tensor]:
            t = tb - sigma
            u = state_at(t)
            with torch.enable_grad():
                uu = u.detach().requires_grad_(True)
                out = prob.velocity(torch.tensor(t, dtype=u.dtype, device=u.device), uu)
                got = torch.autograd.grad(out, (uu, *params), grad_outputs=y[0], allow_unused=True)
            stats.nfe_backward += 1
            res = [torch.zeros_like(uu) if got[0] is None else got[0]]
            res += [torch.zeros_like(p) if gp is None else gp for p, gp in zip(params, got[1:])]
            if gamma_grad:
                res.append(-(_flat(y[0]) * (lap @ _flat(u))).sum())
                bstats.products += 1
            return res

        y0 = [a, *pbar] + ([gbar] if gamma_grad else [])
        y, _, _ = _integrate(lap, g, dyn, prob.adj, y0, 0.0, tb - ta, stats, bstats, backward=True,
                             first_step=tb - ta)
        a, pbar = y[0], list(y[1 : 1 + len(params)])
        if gamma_grad:
            gbar = y[-1]
    prob.dstats.backward_products += bstats.products
    return a, (gbar if gamma_grad else None), pbar


def exponential_solve(
    velocity: Velocity,
    x0: Tensor,
    l_mat: Laplacian | Tensor,
    gamma: float | Tensor,
    t0: float = 0.0,
    t1: float = 1.0,
    *,
    method: str = "exprk32",
    rtol: float = 1e-3,
    atol: float = 1e-4,
    step_size: float | None = None,
    adaptive: bool = True,
    adjoint: bool = False,
    adjoint_rtol: float | None = None,
    adjoint_atol: float | None = None,
    seminorm: bool = True,
    max_steps: int | None = None,
    m_max: int = 128,
    krylov_safety: float = 0.1,
    reorth: str = "partial",
) -> ExponentialSolution:
    """x(t1) of dx/dt = N(t, x) − γ L x, x(t0) = x0, by an exponential Runge–Kutta pair (module docstring).

    velocity: N(t, x) (t a 0-d tensor; an `nn.Module` for parameter gradients by the adjoint); x0: [N],
    [N, C] or [N, K, C] (N the graph's nodes; the velocity sees x in this shape); l_mat: a symmetric
    `Laplacian`; gamma ≥ 0 (a tensor for its gradient); method: ``exprk32`` (order 3(2)) or ``exprk21``
    (2(1)); adaptive: step control by rtol/atol with `step_size` as the first step (default: estimated),
    or (False) fixed steps of at most `step_size`; adjoint: gradients by the adjoint equation (adjoint_rtol
    /atol default to rtol/atol; `seminorm` leaves the parameter gradients out of its error norm);
    max_steps: SolverError beyond this many attempted steps; m_max: Lanczos dimension cap per φ-action;
    krylov_safety: the Krylov tolerance as a fraction of the step tolerance; reorth: Lanczos
    reorthogonalisation (partial, full, none)."""
    tab = exprk_tableau(method)
    if not isinstance(x0, Tensor) or x0.ndim < 1 or not x0.is_floating_point():
        raise DataError("x0 must be a floating-point tensor [N], [N, C] or [N, K, C]")
    lap = Laplacian.coerce(l_mat)
    if lap.num_nodes != x0.shape[0]:
        raise DataError(f"L has {lap.num_nodes} nodes but x0 has {x0.shape[0]} rows; build L on x0's node set")
    if lap.dtype != x0.dtype:
        raise DataError(f"L is {lap.dtype} but x0 is {x0.dtype}; cast once with L = L.to(x0.dtype)")
    if not lap.symmetric:
        raise ConfigError("the exponential integrator needs a symmetric L (Lanczos φ-actions); use the symmetric "
                          "normalised Laplacian (kind='sym') instead of the random-walk one")
    gamma = as_time(gamma, "gamma")
    t0, t1 = float(t0), float(t1)
    if not (math.isfinite(t0) and math.isfinite(t1)) or not t1 > t0:
        raise ConfigError(f"need finite t0 < t1, got t0={t0}, t1={t1}; diffusion cannot run backwards in time")
    for name, value in (("rtol", rtol), ("atol", atol), ("adjoint_rtol", adjoint_rtol),
                        ("adjoint_atol", adjoint_atol), ("krylov_safety", krylov_safety)):
        if value is not None and not (value > 0 and math.isfinite(value)):
            raise ConfigError(f"{name} must be a positive finite number, got {value!r}")
    if step_size is not None and not (step_size > 0 and math.isfinite(step_size)):
        raise ConfigError(f"step_size must be > 0, got {step_size!r}")
    if not adaptive and step_size is None:
        raise ConfigError("fixed-step exponential integration (adaptive=False) needs step_size")
    if max_steps is not None:
        check_steps(max_steps, "max_steps")
    m_max = check_steps(m_max, "m_max")
    if reorth not in REORTH_MODES:
        raise ConfigError(f"unknown reorth {reorth!r}; valid: {', '.join(REORTH_MODES)}")
    if not adjoint and (adjoint_rtol is not None or adjoint_atol is not None):
        raise ConfigError("adjoint_rtol/adjoint_atol apply to the adjoint solve: set adjoint=True or drop them")
    st = _Settings(tab, rtol, atol, step_size, adaptive, max_steps, m_max, krylov_safety, reorth)
    stats = SolveStats(method=tab.name)
    dstats = DiffusionStats()
    first = step_size if adaptive else None
    if not adjoint:
        f = _velocity_dynamics(velocity, stats, backward=False)
        y, ts, _ = _integrate(lap, gamma, f, st, [x0], t0, t1, stats, dstats, first_step=first)
        stats.in_forward = False
        return ExponentialSolution(y[0], stats, dstats, ts)
    if lap.requires_grad:
        raise ConfigError("the exponential adjoint gives no gradients w.r.t. the Laplacian's values (a "
                          "differentiable kNN graph): use adjoint=False (backpropagation through the steps)")
    params = tuple(p for p in velocity.parameters() if p.requires_grad) if isinstance(velocity, nn.Module) else ()
    # the adjoint starts each forward interval with one step over it (fixed-step mode: exactly one step)
    adj = _Settings(tab, adjoint_rtol or rtol, adjoint_atol or atol, None if adaptive else math.inf, adaptive,
                    max_steps, m_max, krylov_safety, reorth, n_err=1 if seminorm else 1_000_000)
    gamma_t = gamma if isinstance(gamma, Tensor) and gamma.requires_grad else None
    prob = _Problem(velocity, lap, gamma, t0, t1, st, adj, first, stats, dstats, params)
    y = _ExpAdjoint.apply(prob, x0, gamma_t, *params)
    stats.in_forward = False
    return ExponentialSolution(y, stats, dstats, prob.ts)
