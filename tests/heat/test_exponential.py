"""cdflow.heat.exponential: convergence orders of the exponential pairs on a problem with a known solution, exact
heat flow for N ≡ 0, adaptive error against tolerance on a stiff case, step sizes that follow the convection
and not γ, work counters, gradients (gradcheck of backprop; adjoint against backprop), argument checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from heat_cases import F64, exact, graph, rand_x, rel

from cdflow.errors import ConfigError, DataError, SolverError
from cdflow.graph import Laplacian
from cdflow.heat import EXPRK_METHODS, exponential_solve
from cdflow.heat.exprk_tableaux import at_zero
from cdflow.velocity import MLPVelocity

N = 12


def _linear_case(gamma: float, n: int = N):
    """dx/dt = Bx − γLx on the path graph with B random (does not commute with L): x(T) = exp((B − γL)T) x0."""
    lap = graph("path", n)
    b = 0.5 * torch.randn(n, n, dtype=F64, generator=torch.Generator().manual_seed(1))
    assert (b @ lap.to_dense() - lap.to_dense() @ b).norm() > 1.0
    x0 = rand_x(n, 2)
    return lap, (lambda t, x: b @ x), x0, (lambda t1: torch.linalg.matrix_exp((b - gamma * lap.to_dense()) * t1) @ x0)


def _mlp(dim: int = 2, seed: int = 0) -> MLPVelocity:
    torch.manual_seed(seed)
    return MLPVelocity(dim, width=8, depth=2, activation="tanh").double()


@pytest.mark.parametrize("method", sorted(EXPRK_METHODS))
def test_convergence_order_on_linear_problem(method: str) -> None:
    """Fixed steps h, h/2, h/4, h/8: the error's log-log slope is the pair's order ±0.3."""
    lap, vel, x0, sol = _linear_case(gamma=5.0)
    ref = sol(1.0)
    steps = [4, 8, 16, 32]
    errs = [rel(exponential_solve(vel, x0, lap, 5.0, 0.0, 1.0, method=method, adaptive=False, step_size=1 / n,
                                  rtol=1e-13, atol=1e-13).y, ref) for n in steps]
    slope = -np.polyfit(np.log(steps), np.log(errs), 1)[0]
    assert abs(slope - EXPRK_METHODS[method].order) <= 0.3, (errs, slope)


@pytest.mark.parametrize("method", sorted(EXPRK_METHODS))
def test_embedded_estimate_has_the_embedded_order(method: str) -> None:
    """One step of size h: the error estimate ‖y − ŷ‖ shrinks like h^(p̂+1) (local error of the embedded method)."""
    lap, vel, x0, _ = _linear_case(gamma=2.0)
    from cdflow.heat.exponential import _Settings, _step
    from cdflow.heat.stats import DiffusionStats

    tab = EXPRK_METHODS[method]
    st = _Settings(tab, 1e-13, 1e-13, None, True, None, 128, 0.1, "full")
    hs = [0.2, 0.1, 0.05, 0.025]
    ests = []
    for h in hs:
        f0 = [vel(None, x0)]
        _, err = _step(lap, 2.0, lambda t, y: [vel(t, y[0])], st, 0.0, h, [x0], f0, DiffusionStats())
        ests.append(float(err[0].norm()))
    slope = np.polyfit(np.log(hs), np.log(ests), 1)[0]
    assert abs(slope - (tab.embedded_order + 1)) <= 0.3, (ests, slope)


@pytest.mark.parametrize("method", sorted(EXPRK_METHODS))
def test_pure_heat_flow_is_exact(method: str) -> None:
    """N ≡ 0: every step is exp(hA)x, so one fixed step of the whole stiff interval is exact, and the
    adaptive solve is exact whatever steps it takes."""
    lap, x0 = graph("cycle", 20), rand_x(20)
    gamma = 200.0  # γ·λ_max = 800: 400× the explicit Euler bound over T = 1
    want = exact(lap, x0, gamma)
    zero = lambda t, x: torch.zeros_like(x)  # noqa: E731
    one = exponential_solve(zero, x0, lap, gamma, method=method, adaptive=False, step_size=1.0, rtol=1e-12,
                            atol=1e-14)
    assert one.stats.steps == 1 and rel(one.y, want) < 1e-10
    ad = exponential_solve(zero, x0, lap, gamma, method=method, rtol=1e-9, atol=1e-12)
    assert rel(ad.y, want) < 1e-8


def _drift_reference(vel, lap: Laplacian, gamma: float, x0: torch.Tensor, t1: float) -> torch.Tensor:
    from cdflow import Convection, GraphDiffusion, SolverSpec, solve
    from cdflow.terms import Drift

    drift = Drift([Convection(vel), GraphDiffusion(lap, gamma)])
    with torch.no_grad():
        return solve(drift, x0, SolverSpec(method="dopri5", rtol=1e-10, atol=1e-12, t1=t1, max_steps=100_000)).y_final


@pytest.mark.parametrize("method", ["exprk32", "exprk21"])
def test_adaptive_error_follows_tolerance_on_a_stiff_case(method: str) -> None:
    """γλ_max = 80 (γT = 20, 40× the explicit Euler bound): the error of the adaptive solve is within a small
    multiple of rtol = atol and falls with it."""
    lap, x0 = graph("cycle", 12), rand_x(12, 2)
    vel = _mlp()
    ref = _drift_reference(vel, lap, 20.0, x0, 1.0)
    errs = []
    for tol in (1e-3, 1e-5):
        with torch.no_grad():
            y = exponential_solve(vel, x0, lap, 20.0, rtol=tol, atol=tol, method=method).y
        errs.append(float((y - ref).abs().max()))  # noqa: PERF401
        assert errs[-1] <= 10 * tol, (tol, errs)
    assert errs[1] < errs[0] / 10


def test_steps_follow_the_convection_not_the_stiffness() -> None:
    """100× larger γ (far beyond any explicit stability bound) does not multiply the number of steps: the
    stiff part is exact, so the step size is set by the convection's accuracy."""
    lap, x0 = graph("cycle", 16), rand_x(16, 2)
    vel = _mlp()
    steps = {}
    for gamma in (1.0, 100.0):
        with torch.no_grad():
            sol = exponential_solve(vel, x0, lap, gamma, rtol=1e-5, atol=1e-5)
        steps[gamma] = sol.stats.steps_accepted
    assert steps[100.0] <= 2 * steps[1.0], steps


def test_work_counters_are_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    """Velocity evaluations and Laplacian products counted independently of the integrator agree with its
    statistics; fixed steps cost `stages` evaluations each; attempted = accepted + rejected."""
    products = {"n": 0}
    matmul = Laplacian.__matmul__

    def counting(self: Laplacian, x: torch.Tensor) -> torch.Tensor:
        products["n"] += 1
        return matmul(self, x)

    monkeypatch.setattr(Laplacian, "__matmul__", counting)
    lap, x0 = graph("cycle", 16), rand_x(16, 2)
    mlp = _mlp()
    calls = {"n": 0}

    def vel(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        return mlp(t, x)

    with torch.no_grad():
        fixed = exponential_solve(vel, x0, lap, 10.0, method="exprk32", adaptive=False, step_size=0.1)
    assert fixed.stats.steps == 10 and fixed.stats.steps_accepted is None
    assert fixed.stats.nfe_forward == calls["n"] == 3 * 10
    assert fixed.diffusion.products == products["n"] and fixed.diffusion.substeps == 10
    calls["n"] = products["n"] = 0
    with torch.no_grad():
        ad = exponential_solve(vel, x0, lap, 10.0, method="exprk32s4", rtol=1e-6, atol=1e-6, m_max=4)
    s = ad.stats
    assert s.nfe_forward == calls["n"] and ad.diffusion.products == products["n"]
    assert s.steps == s.steps_accepted + s.steps_rejected and s.steps_rejected > 0  # m_max = 4 forces rejections
    assert s.steps_accepted == ad.diffusion.substeps == len(ad.ts) - 1
    # 4 stages per attempted step, plus one evaluation for the starting-step estimate; a step rejected for
    # its Krylov dimension may stop before its last stages
    assert s.nfe_forward <= 4 * s.steps + 1 and s.nfe_forward >= 4 * s.steps_accepted + 1
    assert ad.diffusion.krylov_dim <= 4


def test_quadrature_weights_at_zero_are_runge_kutta_weights() -> None:
    """At hA = 0 each pair reduces to an explicit Runge–Kutta method: its weights integrate polynomials of
    degree < order exactly (Σ b_i c_i^q = 1/(q+1))."""
    for tab in EXPRK_METHODS.values():
        for weights, order in ((tab.b, tab.order), (tab.b_hat, tab.embedded_order)):
            w = [1.0 - sum(at_zero(c) for c in weights)] + [at_zero(c) for c in weights]
            for q in range(order):
                assert math.isclose(sum(wi * ci**q for wi, ci in zip(w, tab.c)), 1.0 / (q + 1), abs_tol=1e-14), tab.name


def test_backprop_gradcheck() -> None:
    """Backpropagation through fixed steps (Lanczos, φ-coefficients, velocity) is the derivative of the
    discrete solve: torch.autograd.gradcheck w.r.t. x0 and γ in float64."""
    lap = graph("path", 8)
    vel = _mlp()
    x0 = rand_x(8, 2).requires_grad_()
    gamma = torch.tensor(2.0, dtype=F64, requires_grad=True)

    def fn(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return exponential_solve(vel, x, lap, g, 0.0, 0.5, adaptive=False, step_size=0.25, rtol=1e-12, atol=1e-12).y

    assert torch.autograd.gradcheck(fn, (x0, gamma))


def _grads(adjoint: bool, tol: float, seminorm: bool = True):
    lap = graph("cycle", 8)
    vel = _mlp(3)
    x0 = rand_x(8, 3).requires_grad_()
    gamma = torch.tensor(3.0, dtype=F64, requires_grad=True)
    sol = exponential_solve(vel, x0, lap, gamma, 0.0, 0.5, rtol=tol, atol=tol, adjoint=adjoint, seminorm=seminorm)
    (sol.y * rand_x(8, 3, seed=5)).sum().backward()
    return [x0.grad, gamma.grad] + [p.grad for p in vel.parameters()], sol


def test_adjoint_gradients_match_backprop_within_tolerance() -> None:
    """The adjoint's gradients (w.r.t. x0, γ and every velocity parameter) agree with backprop through the
    same forward solve to the solver tolerance, and closer at a tighter tolerance."""
    diffs = {}
    for tol in (1e-4, 1e-7):
        ref, _ = _grads(False, tol)
        got, sol = _grads(True, tol)
        diffs[tol] = max(float((a - b).norm() / b.norm()) for a, b in zip(got, ref))
        s = sol.stats
        assert s.nfe_backward > 0 and s.backward_steps == s.backward_steps_accepted + s.backward_steps_rejected
        assert s.backward_steps_accepted >= len(sol.ts) - 1 and sol.diffusion.backward_products > 0
    assert diffs[1e-4] < 1e-2 and diffs[1e-7] < 1e-5 and diffs[1e-7] < diffs[1e-4] / 10, diffs


def test_adjoint_seminorm_option_acts() -> None:
    """Without the seminorm the parameter gradients enter the adjoint's error norm: here they need more
    adjoint steps than the adjoint state alone (20 vs 24 when measured)."""
    _, semi = _grads(True, 1e-5, seminorm=True)
    _, full = _grads(True, 1e-5, seminorm=False)
    assert full.stats.backward_steps > semi.stats.backward_steps


def test_member_stack_matches_separate_solves() -> None:
    """x0 [N, K, C]: the velocity sees the stack, −γL acts on every member; same as K separate solves."""
    lap = graph("cycle", N)
    vel = _mlp(3)
    x0 = torch.randn(N, 2, 3, dtype=F64, generator=torch.Generator().manual_seed(3))
    kw = dict(adaptive=False, step_size=0.1, rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        both = exponential_solve(vel, x0, lap, 4.0, **kw).y
        parts = [exponential_solve(vel, x0[:, k], lap, 4.0, **kw).y for k in range(2)]
    torch.testing.assert_close(both, torch.stack(parts, 1), rtol=1e-10, atol=1e-12)


def test_failures_are_solver_errors() -> None:
    lap, x0 = graph("cycle", N), rand_x(N)
    vel = _mlp(3)
    with pytest.raises(SolverError, match="max_steps=2"), torch.no_grad():
        exponential_solve(vel, x0, lap, 10.0, rtol=1e-9, atol=1e-9, max_steps=2)
    with pytest.raises(SolverError, match="m_max"), torch.no_grad():
        exponential_solve(vel, x0, lap, 100.0, adaptive=False, step_size=1.0, m_max=2)


@pytest.mark.parametrize(("kwargs", "err", "match"), [
    ({"method": "rk4"}, ConfigError, "exprk32"),
    ({"gamma": -1.0}, ConfigError, "≥ 0"),
    ({"t1": 0.0}, ConfigError, "t0 < t1"),
    ({"adaptive": False}, ConfigError, "step_size"),
    ({"rtol": 0.0}, ConfigError, "rtol"),
    ({"adjoint_rtol": 1e-6}, ConfigError, "adjoint=True"),
    ({"reorth": "maybe"}, ConfigError, "reorth"),
    ({"m_max": 0}, ConfigError, "m_max"),
    ({"x0": rand_x(N + 1)}, DataError, "rows"),
])
def test_bad_arguments(kwargs: dict, err: type, match: str) -> None:
    lap = graph("cycle", N)
    args = {"x0": rand_x(N), "gamma": 1.0, "t1": 1.0, **kwargs}
    x0, gamma, t1 = args.pop("x0"), args.pop("gamma"), args.pop("t1")
    with pytest.raises(err, match=match):
        exponential_solve(_mlp(3), x0, lap, gamma, 0.0, t1, **args)


def test_non_symmetric_laplacian_and_adjoint_with_graph_gradients_are_refused() -> None:
    i = torch.arange(N)
    rw = Laplacian.from_edges(torch.stack([i, (i + 1) % N]), N, "rw", dtype=F64)
    with pytest.raises(ConfigError, match="symmetric"):
        exponential_solve(_mlp(3), rand_x(N), rw, 1.0)
    feats = torch.randn(N, 3, dtype=F64, requires_grad=True)
    knn = Laplacian.from_knn(feats, k=3, k_scale=2, differentiable=True)
    with pytest.raises(ConfigError, match="adjoint=False"):
        exponential_solve(_mlp(3), rand_x(N), knn, 1.0, adjoint=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_solves_on_the_device_of_its_inputs() -> None:
    """Every tensor the solver makes lives on its inputs' device: a CUDA solve equals the CPU one (the φ-function
    arguments were once made on the CPU, and the GPU benchmark stopped with a device mismatch)."""
    lap, vel, x0 = graph("cycle", 20), _mlp(), rand_x(20, 2)
    cpu = exponential_solve(vel, x0, lap, 3.0, method="exprk32", rtol=1e-8, atol=1e-10)
    dev = torch.device("cuda")
    gpu = exponential_solve(vel.to(dev), x0.to(dev), lap.to(dev), 3.0, method="exprk32", rtol=1e-8, atol=1e-10)
    assert gpu.y.device.type == "cuda"
    assert rel(gpu.y.cpu(), cpu.y) < 1e-8
