"""The continuous-depth solve against mathematics: orders, adjoints, NFE accounting, the ResNet limit."""

import math

import pytest
import torch
from torch import nn

from cdflow import (
    ContinuousDepth,
    Convection,
    Drift,
    MLPVelocity,
    SolverError,
    SolverSpec,
    solve,
)
from cdflow.solvers import ode_methods

A = torch.tensor([[-0.5, 2.0], [-2.0, -0.5]], dtype=torch.float64)
X0 = torch.tensor([[1.0, 0.5], [-0.3, 0.8]], dtype=torch.float64)
T = 2.0


class Linear(nn.Module):
    """dx/dt = A x, exact solution x(t) = exp(tA) x0."""

    def forward(self, t, x):
        return x @ A.T


def exact(t: float) -> torch.Tensor:
    return X0 @ torch.matrix_exp(t * A).T


FIXED = [m for m, info in ode_methods().items() if not info.adaptive]
ADAPTIVE = [m for m, info in ode_methods().items() if info.adaptive]


@pytest.mark.parametrize("method", FIXED)
def test_fixed_step_methods_converge_at_their_order(method):
    order = ode_methods()[method].order
    hs = [T / n for n in (32, 64, 128)] if order >= 3 else [T / n for n in (64, 128, 256)]
    errs = []
    for h in hs:
        y = solve(Linear(), X0, SolverSpec(method=method, step_size=h, t1=T)).y_final
        errs.append((y - exact(T)).abs().max().item())
    slopes = [math.log(errs[i] / errs[i + 1]) / math.log(hs[i] / hs[i + 1]) for i in range(len(hs) - 1)]
    assert abs(slopes[-1] - order) <= 0.3, (method, errs, slopes)


KNOWN_LOOSE = {
    # torchdiffeq's fehlberg2 propagates the 2nd-order solution but estimates the error of the 1st-order
    # one with weight 1/512, so its local error control underestimates the error about tenfold: measured
    # global error 2.2e-4 here at rtol = atol = 1e-6.
    "fehlberg2": "fehlberg2's embedded error estimate is ~10x too small (measured 2.2e-4 at tol 1e-6)",
}


@pytest.mark.parametrize(
    "method",
    [pytest.param(m, marks=pytest.mark.xfail(strict=True, reason=KNOWN_LOOSE[m])) if m in KNOWN_LOOSE else m
     for m in ADAPTIVE],
)
def test_adaptive_methods_meet_tolerance(method):
    sol = solve(Linear(), X0, SolverSpec(method=method, rtol=1e-6, atol=1e-6, t1=1.0))
    assert (sol.y_final - exact(1.0)).abs().max().item() <= 1e-4
    assert sol.stats.steps_accepted > 0 and sol.stats.steps == sol.stats.steps_accepted + sol.stats.steps_rejected


def test_trajectory_at_requested_times():
    ts = torch.linspace(0, T, 5, dtype=torch.float64)
    sol = solve(Linear(), X0, SolverSpec(rtol=1e-8, atol=1e-8, t1=T), ts=ts)
    assert sol.ys.shape == (5, *X0.shape)
    for t, y in zip(ts, sol.ys):
        torch.testing.assert_close(y, exact(float(t)), atol=1e-6, rtol=0)


def _mlp_problem(seed=0):
    torch.manual_seed(seed)
    v = MLPVelocity(3, width=8, depth=2, activation="tanh").double()
    x = torch.randn(5, 3, dtype=torch.float64)
    return v, x


def _grads(spec, v, x):
    x = x.clone().requires_grad_(True)
    block = ContinuousDepth([Convection(v)], spec)
    loss = (block(x) ** 2).sum()
    params = list(v.parameters())
    gs = torch.autograd.grad(loss, [x, *params])
    return torch.cat([g.flatten() for g in gs])


@pytest.mark.parametrize("seminorm", [False, True])
def test_adjoint_gradients_match_backprop(seminorm):
    v, x = _mlp_problem()
    tight = dict(method="dopri5", rtol=1e-10, atol=1e-10, t1=1.0)
    direct = _grads(SolverSpec(**tight), v, x)
    adjoint = _grads(SolverSpec(**tight, adjoint="backsolve", seminorm=seminorm), v, x)
    rel = (adjoint - direct).norm() / direct.norm()
    assert rel.item() <= 1e-6


@pytest.mark.parametrize("adjoint", ["none", "backsolve"])
def test_gradcheck(adjoint):
    torch.manual_seed(1)
    v = MLPVelocity(2, width=3, depth=2).double()
    spec = SolverSpec(method="dopri5", rtol=1e-10, atol=1e-10, t1=0.5, adjoint=adjoint)
    block = ContinuousDepth([Convection(v)], spec)
    x = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda inp: block(inp), (x,), atol=1e-6, rtol=1e-5)


class CountingVelocity(nn.Module):
    """An MLP velocity with its own counters: forward calls and backward (vjp) passes."""

    def __init__(self):
        super().__init__()
        self.net = MLPVelocity(3, width=8).double()
        self.calls = 0
        self.vjps = 0
        self.net.register_full_backward_hook(self._on_backward)

    def _on_backward(self, module, grad_in, grad_out):
        self.vjps += 1

    def forward(self, t, x):
        self.calls += 1
        return self.net(t, x)


@pytest.mark.parametrize(
    "spec",
    [
        SolverSpec(method="dopri5", rtol=1e-5, atol=1e-5),
        SolverSpec(method="rk4", step_size=0.1),
        SolverSpec(method="bosh3", rtol=1e-5, atol=1e-5, adjoint="backsolve"),
        SolverSpec(method="dopri5", rtol=1e-5, atol=1e-5, adjoint="backsolve", seminorm=True),
        SolverSpec(method="dopri5", adjoint="backsolve", adjoint_method="rk4", step_size=0.1),
    ],
    ids=["dopri5", "rk4", "bosh3-adjoint", "dopri5-seminorm", "dopri5-adjoint-rk4"],
)
def test_reported_nfe_equals_counter_inside_drift(spec):
    v = CountingVelocity()
    block = ContinuousDepth([Convection(v)], spec)
    x = torch.randn(4, 3, dtype=torch.float64)
    y = block(x)
    assert block.stats.nfe_forward == v.calls > 0
    calls_after_forward = v.calls
    (y ** 2).sum().backward()
    assert block.stats.nfe_backward == v.vjps > 0
    if spec.adjoint == "backsolve":
        assert v.calls - calls_after_forward == block.stats.nfe_backward
        assert block.stats.backward_steps > 0
    # stats are per solve: a new call starts from zero
    first = block.stats
    block(x)
    assert block.stats is not first and block.stats.nfe_backward == 0
    assert block.stats.nfe_forward == first.nfe_forward


class FastForcing(nn.Module):
    """dx/dt = a x + b sin(ωt): with b small the state hardly feels the forcing, but the parameter adjoint
    integrates ∂f/∂b · adjoint = sin(ωt) · adjoint, which oscillates at ω. The full norm resolves that
    integrand; the seminorm controls the error of the state and its adjoint only (Kidger et al. 2021)."""

    def __init__(self, omega: float = 20.0, b: float = 1e-3):
        super().__init__()
        self.omega = omega
        self.a = nn.Parameter(torch.tensor(-0.5, dtype=torch.float64))
        self.b = nn.Parameter(torch.full((4,), b, dtype=torch.float64))

    def forward(self, t, x):
        return self.a * x + self.b * torch.sin(self.omega * t)


def test_seminorm_reduces_backward_work():
    """Measured: 194 backward evaluations with the seminorm against 314 without (same forward solve); the
    margin asserted is 25%. The gradients agree to the tolerance the full norm resolves."""
    x = torch.randn(16, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    v = FastForcing()
    stats, grads = {}, {}
    for seminorm in (False, True):
        v.zero_grad()
        block = ContinuousDepth([Convection(v)], SolverSpec(rtol=1e-6, atol=1e-6, adjoint="backsolve",
                                                            seminorm=seminorm, t1=2.0))
        block(x).pow(2).sum().backward()
        stats[seminorm] = block.stats
        grads[seminorm] = torch.cat([v.a.grad.reshape(1), v.b.grad])
    assert stats[True].nfe_forward == stats[False].nfe_forward  # the seminorm acts on the backward solve only
    assert stats[True].nfe_backward < 0.75 * stats[False].nfe_backward, (stats[True], stats[False])
    assert stats[True].backward_steps < stats[False].backward_steps
    torch.testing.assert_close(grads[True], grads[False], rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("n", [1, 4, 10])
def test_euler_is_a_weight_shared_resnet(n):
    torch.manual_seed(0)
    v = MLPVelocity(4, width=16, time_input=True)
    x = torch.randn(7, 4)
    t1 = 1.5
    h = t1 / n
    out = ContinuousDepth([Convection(v)], SolverSpec(method="euler", step_size=h, t1=t1))(x)
    ref = x
    for k in range(n):
        ref = ref + h * v(torch.tensor(k * h), ref)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)


def test_drift_is_a_sum_of_terms():
    torch.manual_seed(0)
    v1, v2 = MLPVelocity(3), MLPVelocity(3)
    x, t = torch.randn(5, 3), torch.tensor(0.3)
    torch.testing.assert_close(Drift([Convection(v1), Convection(v2)])(t, x), v1(t, x) + v2(t, x))


class Blowup(nn.Module):
    """dx/dt = x² blows up at t = 1/x0."""

    def forward(self, t, x):
        return x * x


class Poison(nn.Module):
    """Returns NaN after t = 0.5."""

    def forward(self, t, x):
        return x * (float("nan") if t > 0.5 else 1.0)


@pytest.mark.parametrize(
    "drift, spec, message",
    [
        (Poison(), SolverSpec(method="rk4", step_size=0.1), "non-finite (NaN/Inf) at t="),
        (Poison(), SolverSpec(method="dopri5"), "drift returned non-finite (NaN/Inf) values at t="),
        (Blowup(), SolverSpec(method="dopri5", rtol=1e-6, atol=1e-6, t1=2.0), "at t="),
        (Linear(), SolverSpec(method="dopri5", rtol=1e-9, atol=1e-9, max_steps=3, t1=T), "max_steps=3 exceeded"),
    ],
    ids=["nan-fixed", "nan-adaptive", "blowup", "max-steps"],
)
def test_solver_failures_are_cdflow_errors(drift, spec, message):
    x0 = torch.ones(2, 2, dtype=torch.float64)
    with pytest.raises(SolverError) as info:
        solve(drift, x0, spec)
    assert message in str(info.value)


def test_step_size_underflow_message():
    with pytest.raises(SolverError, match="step-size underflow|non-finite"):
        solve(Blowup(), torch.ones(1, 1, dtype=torch.float64), SolverSpec(rtol=1e-6, atol=1e-6, t1=2.0))


def test_nan_input_names_rows():
    x0 = torch.zeros(4, 2)
    x0[2, 1] = float("nan")
    with pytest.raises(SolverError, match=r"rows \[2\]"):
        solve(Linear(), x0.double(), SolverSpec())


def test_bad_time_grid():
    from cdflow import ConfigError

    with pytest.raises(ConfigError, match="strictly increasing"):
        solve(Linear(), X0, SolverSpec(), ts=torch.tensor([0.0, 1.0, 0.5]))


@pytest.mark.parametrize("adjoint", ["none", "backsolve", "checkpoint"])
def test_fixed_step_takes_the_steps_the_span_holds(adjoint):
    """A span that is n steps up to float rounding takes n steps (torchdiffeq's ceil(span/step) in float32 would
    add a ~1e-9 step: 0.18 − 0.12 over 0.06); a span that is not a multiple keeps torchdiffeq's grid."""
    lam = torch.tensor(-0.7)

    class Linear(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = torch.nn.Parameter(lam.clone())

        def forward(self, t, x):
            return self.a * x

    x0 = torch.ones(3, 2)
    spec = SolverSpec(method="euler", step_size=0.06, t1=0.3, adjoint=adjoint)
    for ta, tb in ((0.12, 0.18), (0.24, 0.3), (0.0, 0.3)):
        sol = solve(Linear(), x0, spec, ts=torch.tensor([ta, tb]))
        n = round((tb - ta) / 0.06)
        assert sol.stats.nfe_forward == n
        torch.testing.assert_close(sol.y_final, x0 * (1 + 0.06 * lam) ** n)  # Euler's n steps of 0.06
        if adjoint != "none":
            sol.y_final.sum().backward()
    odd = solve(Linear(), x0, SolverSpec(method="euler", step_size=0.3, t1=1.0), ts=torch.tensor([0.0, 1.0]))
    assert odd.stats.nfe_forward == 4  # 0.3, 0.3, 0.3, 0.1
    torch.testing.assert_close(odd.y_final, x0 * (1 + 0.3 * lam) ** 3 * (1 + 0.1 * lam))
