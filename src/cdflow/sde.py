"""Stochastic continuous depth: dx = f(t, x) dt + ς(t, x) dW over t ∈ [0, T], solved with torchsde.

`solve_sde` integrates one SDE on a seeded Brownian path and returns a `Solution` whose stats are `SDEStats`;
`feynman_kac` estimates u(x) = E f(X_T) (the solution of the backward Kolmogorov equation
u_t = b·∇u + ½ tr(ς ςᵀ ∇²u), u(·, 0) = f, for the Itô SDE dX = b dt + ς dW) by Monte Carlo over paths;
`StochasticDepth` is the `nn.Module` around them, the stochastic analogue of `cdflow.solve.ContinuousDepth`.

Which method / SDE type / noise type / adjoint combinations are valid is read from torchsde: the methods'
declared SDE and noise types (`cdflow.solvers.sde_methods`), their declared Lévy-area needs, and, for the
adjoint, a tiny forward-and-backward trial solve of the same kind of SDE (cached), so a combination that
torchsde refuses in a solver constructor or fails on during the backward pass is refused here up front.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from functools import cache
from types import SimpleNamespace

import numpy as np
import torch
import torchsde
from torch import Tensor, nn

from cdflow.errors import ConfigError, SolverError
from cdflow.solve import Solution, _time_grid, solve
from cdflow.solvers import SolverSpec, ode_methods, sde_methods
from cdflow.stats import SolveStats
from cdflow.terms import Drift

# Lévy-area approximations from cheapest to dearest; the default is the first one a method accepts
# (torchsde's own defaults: 'space-time' for srk, 'foster' for log_ode, none otherwise).
_LEVY_ORDER = ("none", "space-time", "foster", "davie")


@dataclass
class SDEStats(SolveStats):
    """`SolveStats` of an SDE solve, with the diffusion's evaluations counted apart from the drift's.

    nfe_forward: drift f evaluations of the forward solve (torchsde evaluates f and g once more at t0 to check
        shapes; that evaluation is counted). nfe_diffusion: diffusion g evaluations of the forward solve.
    nfe_backward / nfe_diffusion_backward: vector–Jacobian products through f / g in the backward pass.
    steps: attempted steps (one Brownian increment each); for adaptive solves steps_accepted / steps_rejected
        (an attempt is rejected when the next one restarts from the same time). torchsde advances time by
        repeated addition of dt, so where dt does not divide the interval exactly in floating point (dt = 0.1)
        it may take one extra step of ~1e-16 (one more f and g evaluation; numerically negligible).
    backward_steps*: the same for the adjoint solve (``adjoint='backsolve'``).
    """

    nfe_diffusion: int = 0
    nfe_diffusion_backward: int = 0

    def merge(self, other: SolveStats) -> SDEStats:
        base = super().merge(other)
        out = SDEStats(**{f.name: getattr(base, f.name) for f in fields(SolveStats)})
        out.nfe_diffusion = self.nfe_diffusion + getattr(other, "nfe_diffusion", 0)
        out.nfe_diffusion_backward = self.nfe_diffusion_backward + getattr(other, "nfe_diffusion_backward", 0)
        return out


# ---------------------------------------------------------------------------------------------------------
# Validation: which combinations torchsde accepts
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SDEPlan:
    """What `check_sde` resolved: the adjoint method (``None`` without adjoint), Lévy area and step dt."""

    adjoint_method: str | None
    levy_area: str
    dt: float


def _solver_class(method: str, sde_type: str) -> type:
    from torchsde._core import methods as sde_impl

    return sde_impl.select(method, sde_type)


def _forward_methods(sde_type: str, noise_type: str) -> list[str]:
    return sorted(
        name for name, info in sde_methods().items()
        if not info.adjoint_only and sde_type in info.sde_types and noise_type in info.noise_types
    )


def default_adjoint_method(method: str, sde_type: str, noise_type: str) -> str:
    """torchsde's default adjoint method (adjoint_reversible_heun for reversible_heun, else by SDE/noise type)."""
    from torchsde._core.adjoint import _select_default_adjoint_method

    return _select_default_adjoint_method(SimpleNamespace(sde_type=sde_type, noise_type=noise_type), method, None)


class _ToySDE(nn.Module):
    """dy = −a y dt + a·(noise of the given type) dW: a minimal SDE to try an adjoint combination on."""

    def __init__(self, sde_type: str, noise_type: str) -> None:
        super().__init__()
        self.sde_type, self.noise_type = sde_type, noise_type
        self.a = nn.Parameter(torch.tensor(0.3, dtype=torch.float64))

    def f(self, t: Tensor, y: Tensor) -> Tensor:
        return -self.a * y

    def g(self, t: Tensor, y: Tensor) -> Tensor:
        if self.noise_type == "diagonal":
            return self.a * y
        if self.noise_type == "scalar":
            return (self.a * y).unsqueeze(-1)
        if self.noise_type == "additive":
            return (self.a * torch.ones_like(y)).unsqueeze(-1).expand(-1, -1, 2)
        return (self.a * y).unsqueeze(-1) * torch.tensor([1.0, 0.5], dtype=y.dtype)


@cache
def _adjoint_failure(method: str, adjoint_method: str, sde_type: str, noise_type: str, levy: str) -> str | None:
    """Why torchsde cannot differentiate `method` with `adjoint_method` on such an SDE (``None``: it can).

    Runs torchsde's `sdeint_adjoint` forward and backward for two steps on a 2×2 toy SDE of the same SDE type
    and noise type, and explains the exception it raises, if any.
    """
    m = {"diagonal": 2, "scalar": 1}.get(noise_type, 2)
    with torch.enable_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sde = _ToySDE(sde_type, noise_type)
        y0 = torch.ones(2, 2, dtype=torch.float64, requires_grad=True)
        bm = torchsde.BrownianInterval(0.0, 1.0, size=(2, m), dtype=torch.float64, entropy=0,
                                       levy_area_approximation=levy)
        try:
            ys = torchsde.sdeint_adjoint(sde, y0, torch.tensor([0.0, 1.0], dtype=torch.float64), bm=bm,
                                         method=method, adjoint_method=adjoint_method, dt=0.5)
            ys[-1].sum().backward()
        except (ValueError, RuntimeError, NotImplementedError) as err:
            return _explain_adjoint_failure(err, method, adjoint_method, noise_type)
    return None


def _explain_adjoint_failure(err: Exception, method: str, adjoint_method: str, noise_type: str) -> str:
    msg = str(err)
    if isinstance(err, NotImplementedError):
        return (f"{adjoint_method} needs the diffusion's g·∂g products, which torchsde's adjoint SDE implements "
                f"only for diagonal noise (this noise is {noise_type})")
    if "f_and_g` not defined" in msg or "`g` not defined" in msg:
        return (f"{adjoint_method} needs the diffusion matrix itself, which torchsde's adjoint SDE does not "
                "provide (it has only diffusion–vector products)")
    if adjoint_method == "adjoint_reversible_heun" and method != "reversible_heun":
        return ("adjoint_reversible_heun inverts reversible_heun's steps from its saved solver state, so it is "
                "the adjoint of method='reversible_heun' only")
    if "noise type" in msg:
        return (f"the adjoint of an SDE with {noise_type} noise has a noise type {adjoint_method} does not "
                f"support (torchsde: {msg})")
    return f"torchsde refuses it: {msg}"


def _check_step(spec: SolverSpec, dt: float) -> None:
    if spec.max_steps is not None and not spec.adaptive:
        n = max(1, math.ceil(spec.t1 / dt - 1e-9))
        if n > spec.max_steps:
            raise ConfigError(
                f"{spec.method!r} with dt={dt:g} takes {n} steps over [0, {spec.t1}], more than "
                f"max_steps={spec.max_steps}: raise max_steps or step_size"
            )


def check_sde(spec: SolverSpec, noise_type: str, levy_area: str | None = None) -> SDEPlan:
    """Validate `spec` for an SDE with `noise_type` noise; refuse what torchsde would refuse, with alternatives.

    Checks: the method is a forward SDE method (not an ODE method, not adjoint_reversible_heun); it supports
    ``spec.sde_type`` and `noise_type`; the Lévy-area approximation is one it accepts; with
    ``adjoint='backsolve'`` the adjoint method (``spec.adjoint_method`` or torchsde's default) is an SDE
    method of the same SDE type that torchsde can run on this SDE's adjoint; no seminorm and no
    ``adjoint='checkpoint'`` (ODE-only).
    The step is dt = ``spec.step_size`` or, when that is ``None``, t1/100.
    """
    table = sde_methods()
    method, sde_type = spec.method, spec.sde_type
    if method not in table:
        raise ConfigError(
            f"{method!r} is an ODE method, not an SDE method; SDE methods for {sde_type} SDEs with {noise_type} "
            f"noise: {', '.join(_forward_methods(sde_type, noise_type))}"
        )
    info = table[method]
    if info.adjoint_only:
        raise ConfigError(
            f"{method!r} only solves the adjoint (backward) SDE of reversible_heun: use method='reversible_heun', "
            f"adjoint='backsolve', adjoint_method={method!r}"
        )
    if sde_type not in info.sde_types:
        raise ConfigError(
            f"method {method!r} solves {'/'.join(info.sde_types)} SDEs, not {sde_type}: set "
            f"sde_type={info.sde_types[0]!r}, or use one of {', '.join(_forward_methods(sde_type, noise_type))} "
            f"for {sde_type} SDEs with {noise_type} noise"
        )
    if noise_type not in info.noise_types:
        raise ConfigError(
            f"method {method!r} does not support {noise_type} noise (only {', '.join(info.noise_types)}); "
            f"methods for {sde_type} SDEs with {noise_type} noise: "
            f"{', '.join(_forward_methods(sde_type, noise_type))}"
        )
    accepted = tuple(_solver_class(method, sde_type).levy_area_approximations)
    if levy_area is None:
        levy_area = next(a for a in _LEVY_ORDER if a in accepted)
    elif levy_area not in accepted:
        raise ConfigError(
            f"method {method!r} needs a Brownian motion with Lévy-area approximation in {accepted}, got "
            f"{levy_area!r}"
        )
    if spec.seminorm:
        raise ConfigError("seminorm applies to ODE adjoints only; torchsde's SDE adjoint has no seminorm option")
    if spec.adjoint == "checkpoint":
        raise ConfigError(
            "adjoint='checkpoint' replays the steps of an ODE solve and is not implemented for SDE solves: use "
            "adjoint='backsolve' (torchsde's stochastic adjoint, O(1) memory) or adjoint='none' (backprop)"
        )
    if not spec.adaptive:
        changed = [n for n in ("rtol", "atol", "adjoint_rtol", "adjoint_atol")
                   if getattr(spec, n) != SolverSpec.__dataclass_fields__[n].default]
        if changed:
            raise ConfigError(
                f"{', '.join(f'{n}={getattr(spec, n)}' for n in changed)} set, but the SDE is solved with fixed "
                f"steps (dt={spec.step_size if spec.step_size is not None else spec.t1 / 100:g}): tolerances act "
                "only with adaptive=True; set it or drop the tolerances"
            )
    if spec.adjoint == "none" and spec.adjoint_method is not None:
        raise ConfigError("adjoint_method applies to the adjoint solve: set adjoint='backsolve' or drop it")
    dt = spec.step_size if spec.step_size is not None else spec.t1 / 100
    _check_step(spec, dt)
    if spec.adjoint == "none":
        return SDEPlan(None, levy_area, dt)
    adj = spec.adjoint_method or default_adjoint_method(method, sde_type, noise_type)
    if adj not in table:
        raise ConfigError(f"adjoint_method {adj!r} is an ODE method; an SDE adjoint needs an SDE method")
    if sde_type not in table[adj].sde_types:
        raise ConfigError(
            f"adjoint_method {adj!r} solves {'/'.join(table[adj].sde_types)} SDEs, but the adjoint of a "
            f"{sde_type} SDE is {sde_type}: {_adjoint_alternatives(method, sde_type, noise_type, levy_area)}"
        )
    reason = _adjoint_failure(method, adj, sde_type, noise_type, levy_area)
    if reason is not None:
        raise ConfigError(
            f"adjoint_method {adj!r} cannot differentiate {method!r} on a {sde_type} SDE with {noise_type} noise: "
            f"{reason}; {_adjoint_alternatives(method, sde_type, noise_type, levy_area)}"
        )
    return SDEPlan(adj, levy_area, dt)


def _adjoint_alternatives(method: str, sde_type: str, noise_type: str, levy: str) -> str:
    ok = [a for a in sorted(sde_methods()) if sde_type in sde_methods()[a].sde_types
          and _adjoint_failure(method, a, sde_type, noise_type, levy) is None]
    if not ok:
        return f"no torchsde adjoint method can differentiate {method!r} here: use adjoint='none'"
    return f"valid adjoint methods for {method!r} here: {', '.join(ok)} (or adjoint='none')"


# ---------------------------------------------------------------------------------------------------------
# The SDE as torchsde sees it
# ---------------------------------------------------------------------------------------------------------
class _CountVJP(torch.autograd.Function):
    """Identity whose backward adds one to ``stats.<attr>`` (one vector–Jacobian product)."""

    @staticmethod
    def forward(ctx, out: Tensor, stats: SDEStats, attr: str) -> Tensor:  # type: ignore[override]
        ctx.stats, ctx.attr = stats, attr
        return out.view_as(out)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        setattr(ctx.stats, ctx.attr, getattr(ctx.stats, ctx.attr) + 1)
        return grad, None, None


def _nonfinite_message(method: str, t: Tensor | float) -> str:
    return (
        f"the state became non-finite (NaN/Inf) at t={float(t):.6g} with SDE method {method!r}: the drift or "
        "the noise diverged; lower the learning rate or the noise scale sigma, normalise the inputs, or reduce "
        "t1 / step_size"
    )


class _SDEFunc(nn.Module):
    """dy = f dt + g dW on the flattened state y = x.reshape(B, D): f = drift(t, x), g = noise(t, y)."""

    def __init__(self, drift: nn.Module, noise: nn.Module, shape: tuple[int, ...], stats: SDEStats,
                 sde_type: str) -> None:
        super().__init__()
        self.drift, self.noise = drift, noise
        self.noise_type: str = noise.noise_type
        self.sde_type = sde_type
        self.row_shape = tuple(shape[1:])
        self.stats = stats

    def f(self, t: Tensor, y: Tensor) -> Tensor:
        stats = self.stats
        if stats.in_forward:
            stats.nfe_forward += 1
            if not bool(torch.isfinite(y).all()):
                raise SolverError(_nonfinite_message(stats.method, t))
        out = self.drift(t, y.reshape(y.shape[0], *self.row_shape)).reshape(y.shape[0], -1)
        return _CountVJP.apply(out, stats, "nfe_backward") if out.requires_grad else out

    def g(self, t: Tensor, y: Tensor) -> Tensor:
        if self.stats.in_forward:
            self.stats.nfe_diffusion += 1
        out = self.noise(t, y)
        return _CountVJP.apply(out, self.stats, "nfe_diffusion_backward") if out.requires_grad else out


class _CountingBrownian(torchsde.BaseBrownian):
    """The Brownian path as the solver sees it: counts steps (every torchsde method draws one increment per
    step; adaptive stepping draws three per attempt: one full step and two halves) and enforces max_steps."""

    def __init__(self, base: torchsde.BaseBrownian, stats: SDEStats, adaptive: bool, max_steps: int | None):
        self.base, self.stats, self.adaptive, self.max_steps = base, stats, adaptive, max_steps
        self._draws = [0, 0]
        self._last_start: list[float | None] = [None, None]

    def __call__(self, ta, tb=None, return_U=False, return_A=False):  # noqa: N803 - torchsde's signature
        k = 0 if self.stats.in_forward else 1
        if not self.adaptive or self._draws[k] % 3 == 0:
            # The backward solve runs in reversed time: it queries [-t_next, -t_start] of the forward path.
            self._attempt(k, float(ta) if k == 0 else float(tb))
        self._draws[k] += 1
        return self.base(ta, tb, return_U=return_U, return_A=return_A)

    def _attempt(self, k: int, start: float) -> None:
        s = self.stats
        rejected = self.adaptive and start == self._last_start[k]
        self._last_start[k] = start
        if k == 0:
            s.steps += 1
            if self.adaptive:
                s.steps_rejected += int(rejected)  # type: ignore[operator]
                s.steps_accepted = s.steps - s.steps_rejected  # type: ignore[operator]
            if self.max_steps is not None and s.steps > self.max_steps:
                raise SolverError(
                    f"max_steps={self.max_steps} exceeded at t={start:.6g} with SDE method {s.method!r} "
                    f"({s.steps_rejected or 0} steps rejected): loosen rtol/atol, raise max_steps, or use fixed steps"
                )
        else:
            s.backward_steps += 1
            if self.adaptive:
                s.backward_steps_rejected += int(rejected)  # type: ignore[operator]
                s.backward_steps_accepted = s.backward_steps - s.backward_steps_rejected  # type: ignore[operator]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base!r})"

    @property
    def dtype(self):
        return self.base.dtype

    @property
    def device(self):
        return self.base.device

    @property
    def shape(self):
        return self.base.shape

    @property
    def levy_area_approximation(self):
        return self.base.levy_area_approximation


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be an integer ≥ 0, got {seed!r}")
    return int(seed)


def derive_seed(seed: int, *keys: int) -> int:
    """An independent Brownian-path entropy for the stream `keys` of run seed `seed` (NumPy SeedSequence)."""
    return int(np.random.SeedSequence([_check_seed(seed), *keys]).generate_state(1, np.uint64)[0])


def _brownian_size(noise: nn.Module, y0: Tensor, t0: Tensor) -> int:
    if hasattr(noise, "brownian_size"):
        return int(noise.brownian_size(y0.shape[1]))
    with torch.no_grad():
        g = noise(t0, y0)
    return y0.shape[1] if noise.noise_type == "diagonal" else int(g.shape[-1])


def solve_sde(
    drift: nn.Module,
    noise: nn.Module,
    x0: Tensor,
    spec: SolverSpec,
    ts: Tensor | None = None,
    *,
    seed: int = 0,
    bm: torchsde.BaseBrownian | None = None,
    levy_area: str | None = None,
) -> Solution:
    """Integrate dx = drift(t, x) dt + noise(t, x) dW, x(ts[0]) = x0, and return x at `ts` (default [0, t1]).

    ``spec.sde_type`` says whether dW is Itô or Stratonovich; the noise type (diagonal / scalar / additive /
    general) is ``noise.noise_type``. The state may have any shape (B, ...): torchsde sees it flattened to
    (B, D), the drift gets it in its own shape, the noise flattened. The Brownian path is
    ``torchsde.BrownianInterval(ts[0], ts[-1], size=(B, m), entropy=seed)`` with the Lévy-area approximation
    the method needs (space-time for srk, foster for log_ode), unless `bm` is given; the same seed gives the
    same path, and the adjoint's backward solve reuses it. Steps are fixed at dt = ``spec.step_size`` (default
    t1/100) or adaptive from dt (``spec.adaptive``, with rtol/atol). ``spec.adjoint='backsolve'`` uses
    torchsde's stochastic adjoint with ``spec.adjoint_method`` or torchsde's default for the method (for
    reversible_heun: adjoint_reversible_heun, exact up to rounding); it gives gradients for x0 and the
    parameters of `drift` and `noise` only (not for other tensors the drift closes over).

    Invalid combinations raise `ConfigError` before solving (see `check_sde`); a non-finite state raises
    `SolverError` naming the time. The returned stats are `SDEStats` (drift and diffusion counted apart).
    """
    plan = check_sde(spec, noise.noise_type, levy_area)
    t = _time_grid(spec, ts, x0)
    if not bool(torch.isfinite(x0).all()):
        bad = (~torch.isfinite(x0.reshape(x0.shape[0], -1))).any(dim=1).nonzero().flatten()[:10].tolist()
        raise SolverError(f"the initial state has NaN/Inf in rows {bad}: clean the input features")
    batch = x0.shape[0]
    y0 = x0.reshape(batch, -1)
    m = _brownian_size(noise, y0, t[0])
    if bm is None:
        bm = torchsde.BrownianInterval(
            t0=float(t[0]), t1=float(t[-1]), size=(batch, m), dtype=y0.dtype, device=y0.device,
            entropy=_check_seed(seed), levy_area_approximation=plan.levy_area,
            dt=None if spec.adaptive else plan.dt,
        )
    else:
        if tuple(bm.shape) != (batch, m):
            raise ConfigError(f"bm has shape {tuple(bm.shape)} but this SDE needs (batch, noise) = {(batch, m)}")
        accepted = _solver_class(spec.method, spec.sde_type).levy_area_approximations
        if bm.levy_area_approximation not in accepted:
            raise ConfigError(
                f"method {spec.method!r} needs a Brownian motion with Lévy-area approximation in {tuple(accepted)}"
                f", but bm has {bm.levy_area_approximation!r}"
            )
    stats = SDEStats(method=spec.method)
    if spec.adaptive:
        stats.steps_accepted, stats.steps_rejected = 0, 0
        if spec.adjoint != "none":
            stats.backward_steps_accepted, stats.backward_steps_rejected = 0, 0
    sde = _SDEFunc(drift, noise, tuple(x0.shape), stats, spec.sde_type)
    # Fixed steps were counted against max_steps in check_sde (torchsde may add one step of ~1e-16 where dt does
    # not divide the interval exactly in floating point, which must not trip max_steps).
    path = _CountingBrownian(bm, stats, spec.adaptive, spec.max_steps if spec.adaptive else None)
    common = dict(bm=path, method=spec.method, dt=plan.dt, adaptive=spec.adaptive, rtol=spec.rtol, atol=spec.atol)
    try:
        if plan.adjoint_method is None:
            ys = torchsde.sdeint(sde, y0, t, **common)
        else:
            ys = torchsde.sdeint_adjoint(
                sde, y0, t, **common, adjoint_method=plan.adjoint_method, adjoint_adaptive=spec.adaptive,
                adjoint_rtol=spec.adjoint_rtol if spec.adjoint_rtol is not None else spec.rtol,
                adjoint_atol=spec.adjoint_atol if spec.adjoint_atol is not None else spec.atol,
                adjoint_params=tuple(p for p in sde.parameters() if p.requires_grad),
            )
    finally:
        stats.in_forward = False
    finite = torch.isfinite(ys.reshape(len(t), -1)).all(dim=1)
    if not bool(finite.all()):
        raise SolverError(_nonfinite_message(spec.method, t[int((~finite).nonzero()[0])]))
    return Solution(ts=t, ys=ys.reshape(len(t), *x0.shape), stats=stats)


# ---------------------------------------------------------------------------------------------------------
# Monte Carlo over paths: Feynman–Kac, mean field, and the module
# ---------------------------------------------------------------------------------------------------------
# SDE methods whose zero-noise limit is a torchdiffeq method (same step): Euler–Maruyama, Milstein and
# Euler–Heun are Euler; the Stratonovich midpoint and log-ODE midpoint are the explicit midpoint; Heun is Heun.
_ZERO_NOISE_ODE = {"euler": "euler", "milstein": "euler", "euler_heun": "euler", "midpoint": "midpoint",
                   "log_ode": "midpoint", "heun": "heun2"}


def mean_field_spec(spec: SolverSpec) -> SolverSpec:
    """The ODE `SolverSpec` for the noise-free prediction dx/dt = f(t, x) of an SDE solved under `spec`.

    The method is the SDE method's zero-noise limit (euler, milstein, euler_heun → euler; midpoint, log_ode →
    midpoint; heun → heun2) and rk4 otherwise (reversible_heun, srk), with the SDE's step dt (default
    t1/100), t1, max_steps and adjoint mode (the ODE adjoint uses the same method; a fixed-step solve has no
    tolerances).
    """
    dt = spec.step_size if spec.step_size is not None else spec.t1 / 100
    method = _ZERO_NOISE_ODE.get(spec.method, "rk4")
    assert method in ode_methods()
    return SolverSpec(method=method, step_size=dt, t1=spec.t1, adjoint=spec.adjoint, max_steps=spec.max_steps)


def sample_paths(
    drift: nn.Module,
    noise: nn.Module,
    x: Tensor,
    spec: SolverSpec,
    n_samples: int,
    ts: Tensor | None = None,
    *,
    seed: int = 0,
    batched: bool = True,
) -> tuple[Tensor, SDEStats]:
    """`n_samples` independent paths from each row of x: states of shape (len(ts), n_samples, *x.shape).

    ``batched=True`` solves once with x repeated n_samples times along the batch axis (each row its own
    Brownian motion); this needs a drift that acts on rows independently. ``batched=False`` solves
    n_samples times with seeds `derive_seed(seed, k)`, for drifts that couple rows (e.g. `GraphDiffusion`).
    """
    if not (isinstance(n_samples, int) and n_samples >= 1):
        raise ConfigError(f"n_samples must be an integer ≥ 1, got {n_samples!r}")
    if batched:
        xr = x.unsqueeze(0).expand(n_samples, *x.shape).reshape(n_samples * x.shape[0], *x.shape[1:])
        sol = solve_sde(drift, noise, xr, spec, ts, seed=seed)
        return sol.ys.reshape(sol.ys.shape[0], n_samples, *x.shape), sol.stats  # type: ignore[return-value]
    sols = [solve_sde(drift, noise, x, spec, ts, seed=derive_seed(seed, k)) for k in range(n_samples)]
    stats = sols[0].stats
    for s in sols[1:]:
        stats = stats.merge(s.stats)
    return torch.stack([s.ys for s in sols], dim=1), stats  # type: ignore[return-value]


def feynman_kac(
    drift: nn.Module,
    noise: nn.Module,
    x: Tensor,
    spec: SolverSpec,
    n_samples: int,
    *,
    payoff: Callable[[Tensor], Tensor] | None = None,
    seed: int = 0,
    mean_field: bool = False,
    ode_spec: SolverSpec | None = None,
    batched: bool = True,
) -> tuple[Tensor, Tensor]:
    """u(x) = E[f(X_T) | X_0 = x] by Monte Carlo over `n_samples` paths: returns (mean, std) over the paths.

    For the Itô SDE dX = b dt + ς dW, u(x, T) solves the backward Kolmogorov equation
    u_t = b·∇u + ½ tr(ς ςᵀ ∇²u), u(·, 0) = f (Feynman–Kac). f = `payoff` acts row-wise on X_T (shape of x;
    default: the identity). std is the sample standard deviation (n − 1) of f(X_T) across paths, so the
    standard error of the mean is std / √n_samples. ``mean_field=True`` instead returns the noise-free ODE
    prediction (f(x(T)) for dx/dt = b, under `ode_spec`, default `mean_field_spec(spec)`) and std = 0.
    `batched` is as in `sample_paths`.
    """
    f = payoff if payoff is not None else (lambda v: v)
    if mean_field:
        out = f(solve(drift, x, ode_spec if ode_spec is not None else mean_field_spec(spec)).y_final)
        return out, torch.zeros_like(out)
    if not (isinstance(n_samples, int) and n_samples >= 2):
        raise ConfigError(f"a Monte Carlo mean with a standard deviation needs n_samples ≥ 2, got {n_samples!r}")
    ys, _ = sample_paths(drift, noise, x, spec, n_samples, seed=seed, batched=batched)
    values = f(ys[-1].reshape(n_samples * x.shape[0], *x.shape[1:]))
    if values.ndim == 0 or values.shape[0] != n_samples * x.shape[0]:
        raise ConfigError(f"payoff must act row-wise (first axis = batch), got output shape {tuple(values.shape)}")
    values = values.reshape(n_samples, x.shape[0], *values.shape[1:])
    return values.mean(dim=0), values.std(dim=0)


class StochasticDepth(nn.Module):
    """x(0) ↦ X(T) for dX = Σ terms(t, X) dt + ς(t, X) dW: a residual network with noise, in the limit of depth.

    Training: each call samples X(T) on a fresh Brownian path (entropy `derive_seed(seed, 0, call)`, with the
    call counter a persistent buffer so a resumed run continues the stream; under DDP pass seed + rank).
    Evaluation is deterministic: ``eval_mean_field=True`` returns the noise-free ODE solution (under
    `ode_solver`, default `mean_field_spec(solver)`); otherwise the Monte Carlo mean over `eval_samples` paths
    (one path when 1) of the fixed evaluation stream `derive_seed(seed, 1)`, with the std across paths in
    `last_std` (``None`` for a single path). After each call `stats` holds that call's solve statistics.
    """

    def __init__(
        self,
        terms: nn.Module | Iterable[nn.Module],
        noise: nn.Module,
        solver: SolverSpec | None = None,
        *,
        seed: int = 0,
        eval_samples: int = 1,
        eval_mean_field: bool = False,
        ode_solver: SolverSpec | None = None,
        batched: bool = True,
    ) -> None:
        super().__init__()
        self.drift = terms if isinstance(terms, Drift) else Drift(terms)
        self.noise = noise
        self.solver = solver if solver is not None else SolverSpec(method="euler")
        check_sde(self.solver, noise.noise_type)
        if not (isinstance(eval_samples, int) and eval_samples >= 1):
            raise ConfigError(f"eval_samples must be an integer ≥ 1, got {eval_samples!r}")
        self.seed = _check_seed(seed)
        self.eval_samples, self.eval_mean_field, self.batched = eval_samples, eval_mean_field, batched
        self.ode_solver = ode_solver if ode_solver is not None else mean_field_spec(self.solver)
        if eval_mean_field:
            self.ode_solver.check_ode()
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))
        self.stats: SolveStats | None = None
        self.last_std: Tensor | None = None

    def forward(self, x: Tensor, ts: Tensor | None = None) -> Tensor:
        """X(T), or the trajectory X(ts) stacked on a new first axis when `ts` is given."""
        self.last_std = None
        if self.training:
            entropy = derive_seed(self.seed, 0, int(self.calls))
            self.calls += 1
            sol = solve_sde(self.drift, self.noise, x, self.solver, ts, seed=entropy)
            self.stats = sol.stats
            return sol.ys if ts is not None else sol.ys[-1]
        if self.eval_mean_field:
            sol = solve(self.drift, x, self.ode_solver, ts)
            self.stats = sol.stats
            return sol.ys if ts is not None else sol.ys[-1]
        ys, self.stats = sample_paths(self.drift, self.noise, x, self.solver, self.eval_samples, ts,
                                      seed=derive_seed(self.seed, 1), batched=self.batched)
        if self.eval_samples > 1:
            self.last_std = ys.std(dim=1)
        ys = ys.mean(dim=1)
        if ts is None:
            self.last_std = None if self.last_std is None else self.last_std[-1]
            return ys[-1]
        return ys
