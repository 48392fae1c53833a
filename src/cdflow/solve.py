"""One entry point: integrate dx/dt = Σ terms(t, x) over depth t ∈ [0, T] under a `SolverSpec`.

`solve` returns the state at the requested times and the `SolveStats` of that solve;
`ContinuousDepth` is the `nn.Module` around it (x(0) ↦ x(T)), the infinite-depth residual network.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from torchdiffeq import odeint, odeint_adjoint

from cdflow.checkpoint_adjoint import checkpointed_odeint
from cdflow.errors import ConfigError, SolverError
from cdflow.solvers import SolverSpec, ode_method
from cdflow.stats import SolveStats, count_backward
from cdflow.terms import Convection, Drift

if TYPE_CHECKING:
    from cdflow.regularization import RegularizationSpec, RegularizationValues


@dataclass
class Solution:
    """States `ys[i]` at times `ts[i]` and the statistics of the solve that produced them."""

    ts: Tensor
    ys: Tensor
    stats: SolveStats

    @property
    def y_final(self) -> Tensor:
        return self.ys[-1]


def _fast_path(drift: nn.Module) -> nn.Module:
    """The innermost module that computes the same drift: a lone Convection term is its velocity field.

    Skipping the Drift and Convection wrappers saves two Python module calls per evaluation, which is
    most of the framework's overhead on small drifts.
    """
    if isinstance(drift, Drift) and len(drift.terms) == 1:
        drift = drift.terms[0]
    if isinstance(drift, Convection):
        drift = drift.velocity
    return drift


class _Instrumented:
    """The drift as torchdiffeq sees it during one solve: counts evaluations, vjps and steps.

    torchdiffeq calls `callback_step` / `callback_accept_step` / `callback_reject_step` (and their
    `_adjoint` twins during the backward solve); only the callbacks the chosen methods support are
    attached, so torchdiffeq does not warn.
    """

    def __init__(self, drift: nn.Module, stats: SolveStats, spec: SolverSpec, adaptive: bool,
                 adjoint_adaptive: bool | None, check_finite: bool = False) -> None:
        self.drift = drift
        self.fn = _fast_path(drift)
        self.stats = stats
        self.check_finite = check_finite
        self.max_steps = spec.max_steps
        self.last_t: Tensor | None = None
        self.last_y: Tensor | None = None
        self.last_dts: list[Tensor] = []
        self.callback_step = self._step
        if adaptive:
            stats.steps_accepted, stats.steps_rejected = 0, 0
            self.callback_accept_step = self._accept
            self.callback_reject_step = self._reject
        if adjoint_adaptive is not None:
            self.callback_step_adjoint = self._step_adjoint
            if adjoint_adaptive:
                stats.backward_steps_accepted, stats.backward_steps_rejected = 0, 0
                self.callback_accept_step_adjoint = self._accept_adjoint
                self.callback_reject_step_adjoint = self._reject_adjoint

    def __call__(self, t: Tensor, x: Tensor) -> Tensor:
        stats = self.stats
        if stats.in_forward:
            stats.nfe_forward += 1
        out = self.fn(t, x)
        if out.requires_grad:
            out = count_backward(out, stats)
        return out

    # -- step callbacks (arguments: t0, y0, dt) -------------------------------------------------------
    def _step(self, t0: Tensor, y0: Tensor, dt: Tensor) -> None:
        stats = self.stats
        stats.steps += 1
        self.last_t, self.last_y = t0, y0
        self.last_dts = [self.last_dts[-1], dt] if self.last_dts else [dt]
        if self.max_steps is not None and stats.steps > self.max_steps:
            raise SolverError(
                f"max_steps={self.max_steps} exceeded at t={float(t0.detach()):.6g} with method {stats.method!r} "
                f"({stats.steps_rejected or 0} steps rejected): loosen rtol/atol, raise max_steps, or use a "
                "fixed-step method (e.g. rk4 with step_size)"
            )
        if self.check_finite and not bool(torch.isfinite(y0).all()):
            raise SolverError(_nonfinite_message(stats.method, t0))

    def _accept(self, t0: Tensor, y0: Tensor, dt: Tensor) -> None:
        self.stats.steps_accepted += 1  # type: ignore[operator]

    def _reject(self, t0: Tensor, y0: Tensor, dt: Tensor) -> None:
        self.stats.steps_rejected += 1  # type: ignore[operator]

    def _step_adjoint(self, t0: Tensor, y0: Tensor, dt: Tensor) -> None:
        self.stats.backward_steps += 1

    def _accept_adjoint(self, t0: Tensor, y0: Tensor, dt: Tensor) -> None:
        self.stats.backward_steps_accepted += 1  # type: ignore[operator]

    def _reject_adjoint(self, t0: Tensor, y0: Tensor, dt: Tensor) -> None:
        self.stats.backward_steps_rejected += 1  # type: ignore[operator]


def _nonfinite_message(method: str, t: Tensor | float | None) -> str:
    where = "" if t is None else f" at t={float(t.detach() if isinstance(t, Tensor) else t):.6g}"
    return (
        f"the state became non-finite (NaN/Inf){where} with method {method!r}: the drift diverged; lower "
        "the learning rate, normalise the inputs, or reduce the depth t1 / step_size"
    )


def _time_grid(spec: SolverSpec, ts: Tensor | None, like: Tensor) -> Tensor:
    dtype = like.dtype if like.is_floating_point() else torch.get_default_dtype()
    if ts is None:
        return torch.tensor([0.0, spec.t1], dtype=dtype, device=like.device)
    ts = torch.as_tensor(ts, dtype=dtype, device=like.device)
    if ts.ndim != 1 or ts.numel() < 2:
        raise ConfigError(f"ts must be a 1-D tensor of at least 2 times, got shape {tuple(ts.shape)}")
    if not bool((ts[1:] > ts[:-1]).all()):
        raise ConfigError(f"ts must be strictly increasing, got {ts.tolist()}")
    return ts


def _fixed_grid(step: float | None, t: Tensor) -> dict[str, object]:
    """torchdiffeq's option for a fixed step over [t[0], t[-1]]: ``step_size``, or a uniform grid of n steps
    when the span is n steps up to rounding (relative 1e-6). torchdiffeq lays its grid by ceil(span/step) in the
    dtype of t: a float32 span 0.18 − 0.12 with step 0.06 gives a ratio just above 1 and a second step of ~1e-9
    (two evaluations where one was asked)."""
    if step is None or t.numel() < 2:
        return {"step_size": step}
    ratio = abs(float(t[-1]) - float(t[0])) / step
    n = round(ratio)
    if n < 1 or abs(ratio - n) > 1e-6 * max(1.0, ratio):
        return {"step_size": step}

    def grid(func: object, y0: Tensor, ts: Tensor) -> Tensor:
        return torch.linspace(float(ts[0]), float(ts[-1]), n + 1, dtype=ts.dtype, device=ts.device)

    return {"grid_constructor": grid}


def solve(drift: nn.Module, x0: Tensor, spec: SolverSpec, ts: Tensor | None = None,
          state_norm: Callable[[Tensor], Tensor] | None = None) -> Solution:
    """Integrate dx/dt = drift(t, x), x(ts[0]) = x0, and return x at `ts` (default [0, spec.t1]).

    Gradients flow by backpropagation through the solver (``spec.adjoint='none'``), by the adjoint
    method (``'backsolve'``, optionally with the seminorm) or by backpropagation replayed segment by segment
    from checkpoints (``'checkpoint'``, see `cdflow.checkpoint_adjoint`). `state_norm` replaces torchdiffeq's
    RMS error norm of the state (forward and adjoint; e.g. to leave augmented states out of step-size control).
    Failures raise `SolverError`.
    """
    info = spec.check_ode()
    t = _time_grid(spec, ts, x0)
    if not bool(torch.isfinite(x0).all()):
        bad = (~torch.isfinite(x0.reshape(x0.shape[0], -1))).any(dim=1).nonzero().flatten()[:10].tolist()
        raise SolverError(f"the initial state has NaN/Inf in rows {bad}: clean the input features")
    stats = SolveStats(method=spec.method)
    if info.adaptive:
        # Step exactly onto the output times rather than interpolating past them: torchdiffeq's dense
        # output is far less accurate than its steps for low-order methods (dopri8 at rtol 1e-6: 6e-5
        # interpolated vs 1e-7 stepped, on dx/dt = Ax in the tests).
        options = {"step_t": t[1:], **info.options}
        if spec.step_size is not None:  # the first step of an adaptive method (torchdiffeq's own estimate else)
            options["first_step"] = spec.step_size
    else:
        options = {**_fixed_grid(spec.step_size, t), **info.options}
    if state_norm is not None:
        options["norm"] = state_norm
    adj_info = ode_method(spec.adjoint_method or spec.method) if spec.adjoint == "backsolve" else None
    func = _Instrumented(drift, stats, spec, info.adaptive, None if adj_info is None else adj_info.adaptive)
    try:
        if spec.adjoint == "checkpoint":
            ys = checkpointed_odeint(func, x0, t, rtol=spec.rtol, atol=spec.atol, method=spec.method, options=options,
                                     checkpoints=spec.checkpoints, stats=stats,
                                     params=tuple(p for p in drift.parameters() if p.requires_grad))
        elif adj_info is None:
            ys = odeint(func, x0, t, rtol=spec.rtol, atol=spec.atol, method=spec.method, options=options)
        else:
            adj_options = dict(adj_info.options)
            if not adj_info.adaptive:
                adj_options.update(_fixed_grid(spec.step_size, t))
            elif spec.step_size is not None:
                adj_options["first_step"] = spec.step_size
            if spec.seminorm:
                adj_options["norm"] = "seminorm"
            ys = odeint_adjoint(
                func, x0, t, rtol=spec.rtol, atol=spec.atol, method=spec.method, options=options,
                adjoint_method=adj_info.name,
                adjoint_rtol=spec.adjoint_rtol if spec.adjoint_rtol is not None else spec.rtol,
                adjoint_atol=spec.adjoint_atol if spec.adjoint_atol is not None else spec.atol,
                adjoint_options=adj_options,
                adjoint_params=tuple(p for p in drift.parameters() if p.requires_grad),
            )
    except AssertionError as err:
        raise _translate(err, func, spec) from None
    finally:
        stats.in_forward = False
    if not bool(torch.isfinite(ys[-1]).all()):
        raise SolverError(_nonfinite_message(spec.method, _first_nonfinite_time(drift, x0, t, spec, options)))
    return Solution(ts=t, ys=ys, stats=stats)


def _first_nonfinite_time(drift: nn.Module, x0: Tensor, t: Tensor, spec: SolverSpec, options: dict) -> float | None:
    """Re-run a failed solve without gradients, checking the state at every step, to say where it broke.

    Only called after a failure, so the solves that succeed pay nothing for the check.
    """
    probe = _Instrumented(drift, SolveStats(method=spec.method), spec, ode_method(spec.method).adaptive, None,
                          check_finite=True)
    try:
        with torch.no_grad():
            odeint(probe, x0, t, rtol=spec.rtol, atol=spec.atol, method=spec.method, options=options)
    except SolverError:
        return None if probe.last_t is None else float(probe.last_t.detach())
    except AssertionError:
        return None if probe.last_t is None else float(probe.last_t.detach())
    return float(t[-1])


def _translate(err: AssertionError, func: _Instrumented, spec: SolverSpec) -> SolverError:
    """Turn torchdiffeq's assertions into SolverErrors that say what happened and what to do."""
    msg = str(err)
    last_y = func.last_y
    if "non-finite" in msg or (last_y is not None and not bool(torch.isfinite(last_y).all())):
        return SolverError(_nonfinite_message(spec.method, func.last_t))
    where = "" if func.last_t is None else f" at t={float(func.last_t.detach()):.6g}"
    if "underflow" in msg and last_y is not None and func.last_t is not None:
        # Diagnose once, after the failure: did the drift itself return NaN/Inf over the last attempted step?
        t0 = func.last_t.to(last_y.dtype)
        probes = [t0] + [t0 + float(dt.detach()) * c for dt in func.last_dts if torch.isfinite(dt) for c in (0.5, 1.0)]
        with torch.no_grad():
            finite = all(bool(torch.isfinite(func.drift(tp, last_y)).all()) for tp in probes)
        if not finite:
            return SolverError(
                f"the drift returned non-finite (NaN/Inf) values{where} with method {spec.method!r}, so every "
                "step was rejected: check the velocity field for overflow or invalid operations"
            )
    if "underflow" in msg and last_y is not None and last_y.dtype == torch.float16:
        return SolverError(
            f"step-size underflow{where} with method {spec.method!r}: the state is float16 (about 3 significant "
            f"digits), too coarse for rtol={spec.rtol}, atol={spec.atol}; compute in float32 (--trainer.precision "
            "32-true, or bf16-true / bf16-mixed) or use a fixed-step method (e.g. method='rk4', step_size=0.05)"
        )
    if "underflow" in msg:
        return SolverError(
            f"step-size underflow{where} with method {spec.method!r} (rtol={spec.rtol}, atol={spec.atol}): "
            "the problem is too stiff or the drift too steep; loosen rtol/atol, use a fixed-step method "
            "(e.g. method='rk4', step_size=0.05), or integrate stiff diffusion with the split integrator"
        )
    if "max_num_steps" in msg:
        return SolverError(f"max_steps exceeded{where}: loosen rtol/atol or raise max_steps")
    return SolverError(f"solver {spec.method!r} failed{where}: {msg}")


class ContinuousDepth(nn.Module):
    """x(0) ↦ x(T): a residual network in the limit of infinite depth, dx/dt = Σ terms(t, x).

    After each call, `self.stats` holds the `SolveStats` of that call (a fresh object per call; its
    backward counts fill in during ``loss.backward()``). With an active `regularization` (RNODE, see
    `cdflow.regularization`), a call in training mode also integrates the kinetic energy and Jacobian norm and
    leaves them, with their penalty, in `self.regularization_values` (``None`` after an evaluation-mode call,
    which solves for x alone).
    """

    def __init__(self, terms: nn.Module | Iterable[nn.Module], solver: SolverSpec | None = None,
                 regularization: RegularizationSpec | None = None) -> None:
        super().__init__()
        self.drift = terms if isinstance(terms, Drift) else Drift(terms)
        self.solver = solver if solver is not None else SolverSpec()
        self.solver.check_ode()
        self.regularization = regularization
        self.stats: SolveStats | None = None
        self.regularization_values: RegularizationValues | None = None

    def forward(self, x: Tensor, ts: Tensor | None = None) -> Tensor:
        """x(T), or the trajectory x(ts) stacked on a new first axis when `ts` is given."""
        if self.training and self.regularization is not None and self.regularization.active:
            from cdflow.regularization import regularized_solve  # it builds on solve: imported here, not above

            sol, self.regularization_values = regularized_solve(self.drift, x, self.solver, self.regularization, ts)
        else:
            sol, self.regularization_values = solve(self.drift, x, self.solver, ts), None
        self.stats = sol.stats
        return sol.ys if ts is not None else sol.ys[-1]
