"""Checkpointed adjoint: the exact gradient of the discretised solve, with memory bounded by checkpoints.

A one-step method maps the state s_k at step k to s_{k+1} = Φ(s_k; t_k, h_k, t_{k+1}, θ), k = 0 … N−1, and
the outputs are y_j = Ψ(s_k, s_{k+1}; t_j) for the step k(j) whose interval holds the output time t_j
(torchdiffeq's interpolation, which at a step's end is that step's end state). For torchdiffeq's fixed-grid
methods s_k = x_k; for its Runge–Kutta tableaux (dopri5, bosh3, …) s_k = (x_k, f_k), the state and the
derivative the next step starts from (the last stage of the step before: first-same-as-last).

Forward: the solve runs under ``no_grad`` through torchdiffeq's own solver object (same step-size control, same
arithmetic: its values are bit for bit those of ``odeint``), and keeps

* the (t_k, h_k, t_{k+1}) of every accepted step (three scalars a step), and
* the state s_k at K checkpoints k ∈ {0 = c_0 < c_1 < … < c_{K−1}} (s_0 is the input x_0, already held).

Backward: reverse-mode through the same map, one segment [c_i, c_{i+1}) at a time, last to first. The segment
is replayed with gradients from s_{c_i} with the recorded steps — the same step function on the same state and
times, so it recomputes the forward's stages bit for bit — and its vector–Jacobian product is applied:

    s̄_{c_i} = (∂s_{c_{i+1}}/∂s_{c_i})ᵀ s̄_{c_{i+1}} + Σ_{j: k(j) ∈ segment} (∂y_j/∂s_{c_i})ᵀ ȳ_j,
    θ̄ += the same products with ∂/∂θ,

after which the segment's graph is freed. The result is backprop's gradient for the steps the solve took (not an
approximation to the continuous adjoint, as ``backsolve``'s is): it equals ``adjoint='none'``'s up to the order
of floating-point sums. As backprop does, the replay also differentiates torchdiffeq's initial step-size heuristic
(the first step h_0 depends on x_0 and θ when ``first_step`` is not given): the step times carry that derivative
until a step lands on an output time (leaving it out was 3e-7 to 5e-6 relative off backprop at default tolerances).

Checkpoints (uniform, not binomial): with ``checkpoints=K`` a fixed-step solve of N steps keeps every
⌈N/K⌉-th state; an adaptive solve, whose N is unknown until it ends, keeps every stride-th state and doubles the
stride, dropping every other kept state, whenever more than K are kept, so segments are a power of two of steps,
< 2N/K. ``checkpoints=None`` balances the two memories: a checkpoint holds two states (x_k, f_k), a step's graph
at least e (one state-sized stage per drift evaluation, e evaluations a step), and the uniform schedule of least
memory keeps about √(N·e) states of about √(N/e) steps; the stride doubles whenever the states kept exceed e
times the stride (e measured on the forward solve so far). Memory: K states + one segment's graph (N/K steps of
stages), against backprop's graph of N steps; the step times are O(N) scalars. Cost: one more forward solve
than backprop (the replay).

Mixed precision: the replay runs under the forward's autocast state, so it recomputes the same low-precision
stages; the parameters' gradients are then summed per segment and across segments in their own dtype, where
backprop sums the low-precision products of all steps at once: the two agree to the low precision's roundoff.

Counted into `SolveStats`: ``nfe_forward`` the forward solve's evaluations; ``nfe_backward`` the replay's
evaluations plus the drift vector–Jacobian products; ``backward_steps`` the replayed steps.

The solver objects' internals used here (``_adaptive_step``, ``_step_func``, ``_runge_kutta_step``,
``_interp_fit``/``_interp_evaluate``, ``_linear_interp``) are torchdiffeq's; the tests replay every one-step
method of the installed torchdiffeq against its own backprop, so a change there shows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from cdflow.stats import SolveStats

State = tuple[Tensor, ...]


class _Schedule:
    """Which step starts keep their state: every `stride`-th. Past `limit` kept states the stride doubles and the
    states off the new stride are dropped, so a solve of unknown length keeps at most `limit`. Step 0 (the input)
    is implicit. Without a limit, the limit is e·stride for e the drift evaluations per step so far (at least 2):
    that keeps about √(N·e) states of about √(N/e) steps, the uniform schedule of least memory when a checkpoint
    costs two states (x, f) and a step's graph at least e (one state-sized stage per evaluation)."""

    def __init__(self, limit: int | None, stride: int, evals_per_step: Callable[[], float]) -> None:
        self.limit = limit
        self.stride = max(1, stride)
        self.evals_per_step = evals_per_step
        self.kept: dict[int, State] = {}
        self.live: dict[int, bool] = {}  # per kept state: whether its last entry (the time) carries a derivative

    def wants(self, k: int) -> bool:
        return k > 0 and k % self.stride == 0

    def _limit(self) -> float:
        return self.limit if self.limit is not None else max(2.0, self.evals_per_step()) * self.stride

    def keep(self, k: int, state: State, live_time: bool = False) -> None:
        self.kept[k] = state
        self.live[k] = live_time
        while 1 + len(self.kept) > self._limit():
            self.stride *= 2
            self.kept = {i: s for i, s in self.kept.items() if i % self.stride == 0}

    def starts(self) -> list[int]:
        return [0, *sorted(self.kept)]


class _Replayable:
    """The drift as the checkpointed solve calls it: evaluations made while replaying count as backward work.

    torchdiffeq reads its step callbacks off the function it is given, so they are passed through."""

    def __init__(self, func: Callable[[Tensor, Tensor], Tensor], stats: SolveStats) -> None:
        self.func = func
        self.stats = stats
        self.replaying = False
        self.calls = 0  # evaluations of the forward solve

    def __call__(self, t: Tensor, x: Tensor) -> Tensor:
        if self.replaying:
            self.stats.nfe_backward += 1
        else:
            self.calls += 1
        return self.func(t, x)

    def __getattr__(self, name: str):  # noqa: ANN204 — torchdiffeq's callback_* attributes
        if name.startswith("callback_"):
            return getattr(self.__dict__["func"], name)
        raise AttributeError(name)


class CheckpointedSolve:
    """One checkpointed solve: the recording forward and the segment-by-segment backward (see the module doc)."""

    def __init__(self, func: Callable[[Tensor, Tensor], Tensor], t: Tensor, *, rtol: float, atol: float,
                 method: str, options: dict, checkpoints: int | None, params: Sequence[Tensor],
                 stats: SolveStats) -> None:
        self.func = _Replayable(func, stats)
        self.t, self.rtol, self.atol, self.method, self.options = t, rtol, atol, method, dict(options)
        self.checkpoints = checkpoints
        self.params = tuple(params)
        self.stats = stats
        # each accepted step, ending with t_{k+1}: (t_k, h_k, t_{k+1}) for fixed-grid methods; for adaptive ones
        # (the step size tried, whether it was the initial step h_0, t_{k+1}), from which t_k gives h_k
        self.steps: list[tuple] = []

    # -- forward ----------------------------------------------------------------------------------------------
    def forward(self, x0: Tensor) -> Tensor:
        from torchdiffeq._impl.misc import _check_inputs
        from torchdiffeq._impl.odeint import SOLVERS
        from torchdiffeq._impl.rk_common import RKAdaptiveStepsizeODESolver

        _, pfunc, y0, t, rtol, atol, method, options, _, reversed_t = _check_inputs(
            self.func, x0, self.t, self.rtol, self.atol, self.method, self.options, None, SOLVERS)
        assert not reversed_t and y0 is x0, "cdflow solves forward in time on a tensor state"
        solver = SOLVERS[method](func=pfunc, y0=y0, rtol=rtol, atol=atol, **options)
        self.solver, self.pfunc = solver, pfunc
        self.adaptive = isinstance(solver, RKAdaptiveStepsizeODESolver)
        device = x0.device.type
        # the replay computes as the forward did: under the same autocast (mixed precision), if any
        self.autocast = (device, torch.is_autocast_enabled(device), torch.get_autocast_dtype(device))

        def evals_per_step() -> float:
            return self.func.calls / max(1, len(self.steps))

        if self.adaptive:
            self._step = self._rk_step
            self.schedule = _Schedule(self.checkpoints, 1, evals_per_step)
            self._hook_adaptive(solver, pfunc)
            self.t_out = t.to(solver.dtype)  # the times as the adaptive solver compares and interpolates them
        else:
            assert getattr(solver, "interp", "linear") == "linear", "cdflow's fixed-grid solves interpolate linearly"
            self._step = self._grid_step
            n = len(solver.grid_constructor(pfunc, y0, t)) - 1
            stride = math.ceil(n / self.checkpoints) if self.checkpoints is not None else 1
            self.schedule = _Schedule(self.checkpoints, stride, evals_per_step)
            self._hook_fixed(solver)
            self.t_out = t
        ys = solver.integrate(t)
        if hasattr(solver, "rk_state"):
            solver.rk_state = None  # the last step's state and interpolation coefficients: not needed any more
        # output j (≥ 1) comes from the first accepted step that ends at or after t_j (torchdiffeq's own rule)
        self.outputs: dict[int, list[int]] = {}
        k = 0
        for j in range(1, len(self.t_out)):
            while not bool(self.steps[k][-1] >= self.t_out[j]):
                k += 1
            self.outputs.setdefault(k, []).append(j)
        return ys

    def _hook_adaptive(self, solver, pfunc) -> None:  # noqa: ANN001 — torchdiffeq's solver and wrapped func
        attempted: list[Tensor] = []  # the step sizes tried since the last accepted step
        accepted: list[bool] = []
        on_step, on_accept = pfunc.callback_step, pfunc.callback_accept_step
        # the first step h_0 comes from torchdiffeq's initial-step heuristic, a function of x_0 (and θ) that
        # backprop differentiates, unless given; the times carry its derivative until a step lands on an output time
        self.live_time = solver.first_step is None

        def step_cb(t0: Tensor, y0: Tensor, dt: Tensor) -> None:
            attempted.append(dt)
            on_step(t0, y0, dt)

        def accept_cb(t0: Tensor, y0: Tensor, dt: Tensor) -> None:
            accepted.append(True)
            on_accept(t0, y0, dt)

        step = solver._adaptive_step

        def adaptive_step(rk_state):  # noqa: ANN001, ANN202 — torchdiffeq's _RungeKuttaState
            new = step(rk_state)
            if accepted:
                accepted.clear()
                k = len(self.steps)
                if self.schedule.wants(k):  # f1 is a view of all the stages: keep a copy of it alone
                    self.schedule.keep(k, (rk_state.y1, rk_state.f1.clone(), rk_state.t1), self.live_time)
                first = k == 0 and len(attempted) == 1  # h_0 itself was accepted
                if k == 0:
                    self.live_time = self.live_time and first
                self.steps.append((attempted[-1], first, new.t1))
                if bool(new.t1 != new.t0 + attempted[-1]):  # clamped onto an output time: t_{k+1} is a constant
                    self.live_time = False
                attempted.clear()
            return new

        pfunc.callback_step, pfunc.callback_accept_step = step_cb, accept_cb
        solver._adaptive_step = adaptive_step

    def _hook_fixed(self, solver) -> None:  # noqa: ANN001 — torchdiffeq's solver
        step = solver._step_func
        self._fixed_step = step

        def step_func(func, t0: Tensor, dt: Tensor, t1: Tensor, y0: Tensor):  # noqa: ANN001, ANN202
            k = len(self.steps)
            if self.schedule.wants(k):
                self.schedule.keep(k, (y0,))
            self.steps.append((t0, dt, t1))
            return step(func, t0, dt, t1, y0)

        solver._step_func = step_func

    def saved(self, x0: Tensor) -> list[Tensor]:
        """The tensors the backward needs: the input and the checkpointed states (for save_for_backward)."""
        return [x0, *(s for k in self.schedule.starts()[1:] for s in self.schedule.kept[k])]

    # -- replay -----------------------------------------------------------------------------------------------
    def _rk_step(self, k: int, state: State) -> tuple[State, Callable[[Tensor], Tensor]]:
        """torchdiffeq's accepted adaptive step k, as `RKAdaptiveStepsizeODESolver._adaptive_step` takes it."""
        from torchdiffeq._impl.interp import _interp_evaluate
        from torchdiffeq._impl.rk_common import _runge_kutta_step

        y0, f0, t0 = state
        dt_tried, first, t1_taken = self.steps[k]
        dt = self._h0 if first else dt_tried
        t1 = t0 + dt
        if bool(t1 != t1_taken):  # the step was clamped onto an output time
            t1 = t1_taken
            dt = t1 - t0
        y1, f1, _, stages = _runge_kutta_step(self.pfunc, y0, f0, t0, dt, t1, tableau=self.solver.tableau)

        def interp(t: Tensor) -> Tensor:
            return _interp_evaluate(self.solver._interp_fit(y0, y1, stages, dt), t0, t1, t)

        return (y1, f1, t1), interp

    def _rk_start(self, x0: Tensor) -> State:
        """The state torchdiffeq begins from: f_0 = f(t_0, x_0), and the first step h_0 (differentiable)."""
        from torchdiffeq._impl.misc import _select_initial_step

        solver, t0 = self.solver, self.t_out[0]
        f0 = self.pfunc(t0, x0)
        if self.steps[0][1]:
            h0 = solver.first_step
            if h0 is None:
                h0 = _select_initial_step(self.pfunc, t0, x0, solver.order - 1, solver.rtol, solver.atol,
                                          solver.norm, f0=f0)
            if not torch.isfinite(h0):
                h0 = solver.min_step
            self._h0 = h0.clamp(solver.min_step, solver.max_step)
        return (x0, f0, t0)

    def _grid_step(self, k: int, state: State) -> tuple[State, Callable[[Tensor], Tensor]]:
        (y0,) = state
        t0, dt, t1 = self.steps[k]
        dy, _ = self._fixed_step(self.pfunc, t0, dt, t1, y0)
        y1 = y0 + dy
        return (y1,), lambda t: self.solver._linear_interp(t0, t1, y0, y1, t)

    def _replay(self, start: int, stop: int, state: State) -> tuple[State, list[tuple[int, Tensor]]]:
        """Steps start … stop−1 from `state` (with gradients when enabled), and the outputs they produce."""
        if self.adaptive and start == 0:
            state = self._rk_start(state[0])
        outs = []
        for k in range(start, stop):
            state, interp = self._step(k, state)
            outs += [(j, interp(self.t_out[j])) for j in self.outputs.get(k, ())]
        return state, outs

    # -- backward ---------------------------------------------------------------------------------------------
    def backward(self, grad_ys: Tensor, saved: Sequence[Tensor]) -> tuple[Tensor, list[Tensor | None]]:
        starts = self.schedule.starts()
        width = 3 if self.adaptive else 1
        states = [(saved[0],)] + [tuple(saved[1 + i * width:1 + (i + 1) * width]) for i in range(len(starts) - 1)]
        bounds = [*starts, len(self.steps)]
        adj: tuple[Tensor | None, ...] = ()
        grad_params: list[Tensor | None] = [None] * len(self.params)
        self.func.replaying = True
        try:
            for i in reversed(range(len(starts))):
                live = [True] * len(states[i])
                if self.adaptive and i > 0:
                    live[-1] = self.schedule.live[starts[i]]  # the time: a leaf only where it has a derivative
                device, enabled, dtype = self.autocast
                with torch.enable_grad(), torch.autocast(device, dtype=dtype, enabled=enabled):
                    leaves = tuple(s.detach().requires_grad_(d) for s, d in zip(states[i], live))
                    end, outs = self._replay(bounds[i], bounds[i + 1], leaves)
                    pairs = [(e, g) for e, g in zip(end, adj) if g is not None]
                    pairs += [(y, grad_ys[j]) for j, y in outs]
                    pairs = [(y, g) for y, g in pairs if y.requires_grad]
                self.stats.backward_steps += bounds[i + 1] - bounds[i]
                wrt = [leaf for leaf in leaves if leaf.requires_grad]
                grads: Sequence[Tensor | None] = (None,) * (len(wrt) + len(self.params))
                if pairs:  # else nothing downstream depends on this segment
                    grads = torch.autograd.grad([y for y, _ in pairs], [*wrt, *self.params],
                                                [g for _, g in pairs], allow_unused=True)
                del pairs, end, outs  # free the segment's graph before the next replay
                it = iter(grads[:len(wrt)])
                adj = tuple(next(it) if leaf.requires_grad else None for leaf in leaves)
                for n, g in enumerate(grads[len(wrt):]):
                    if g is not None:
                        grad_params[n] = g if grad_params[n] is None else grad_params[n] + g
        finally:
            self.func.replaying = False
        grad_x0 = grad_ys[0] if adj[0] is None else adj[0] + grad_ys[0]
        return grad_x0, grad_params


class _CheckpointedFunction(torch.autograd.Function):
    """x_0, θ ↦ x(t_0 … t_n) by a `CheckpointedSolve`, differentiated by its segment-by-segment backward."""

    @staticmethod
    def forward(ctx, run: CheckpointedSolve, x0: Tensor, *params: Tensor) -> Tensor:  # type: ignore[override]
        ys = run.forward(x0)
        ctx.run = run
        ctx.save_for_backward(*run.saved(x0))
        return ys

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_ys: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        grad_x0, grad_params = ctx.run.backward(grad_ys, ctx.saved_tensors)
        return (None, grad_x0 if ctx.needs_input_grad[1] else None, *grad_params)


def checkpointed_odeint(func: Callable[[Tensor, Tensor], Tensor], x0: Tensor, t: Tensor, *, rtol: float,
                        atol: float, method: str, options: dict, checkpoints: int | None,
                        params: Sequence[Tensor], stats: SolveStats) -> Tensor:
    """torchdiffeq's ``odeint(func, x0, t, …)`` (same values), differentiated by the checkpointed adjoint.

    `func` is the drift as torchdiffeq should see it (with its step callbacks), `params` the tensors gradients
    flow to besides `x0` (the drift's parameters), `checkpoints` the number of checkpoints (``None``: about
    √(N·e), e the evaluations per step),
    `method` a one-step method (see `cdflow.solvers.ODEMethod.one_step`). Without anything to differentiate
    (no grad mode, or neither `x0` nor `params` requiring grad) it is torchdiffeq's ``odeint`` itself.
    """
    params = tuple(params)
    if not torch.is_grad_enabled() or not (x0.requires_grad or any(p.requires_grad for p in params)):
        from torchdiffeq import odeint

        return odeint(func, x0, t, rtol=rtol, atol=atol, method=method, options=options)
    run = CheckpointedSolve(func, t, rtol=rtol, atol=atol, method=method, options=options, checkpoints=checkpoints,
                            params=params, stats=stats)
    return _CheckpointedFunction.apply(run, x0, *params)
