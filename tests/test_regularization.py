"""RNODE's augmented states against mathematics: the kinetic energy against its closed form and quadrature,
the Hutchinson Jacobian term unbiased within its Monte Carlo error, gradients against finite differences and
backprop against the backsolve adjoint, and the settings that cannot act refused."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cdflow import ContinuousDepth, Convection, MLPVelocity, SolverSpec, solve
from cdflow.errors import ConfigError
from cdflow.regularization import (
    RegularizationSpec,
    clear_regularization,
    collect_regularization,
    regularized_solve,
)

A = torch.tensor([[-0.5, 2.0, 0.3], [-2.0, -0.5, 0.1], [0.4, -0.2, -0.3]], dtype=torch.float64)
T = 1.5
TIGHT = SolverSpec(method="dopri5", rtol=1e-10, atol=1e-10, t1=T)


class Linear(nn.Module):
    """dx/dt = A x: x(t) = exp(tA) x0, ‖∂f/∂x‖²_F = ‖A‖²_F."""

    def forward(self, t, x):
        return x @ A.T


def kinetic_closed_form(x0: torch.Tensor, t1: float) -> torch.Tensor:
    """Batch mean of ∫₀ᵀ ‖A x(t)‖² dt = x0ᵀ W x0 with W = ∫₀ᵀ exp(sAᵀ) AᵀA exp(sA) ds, from Van Loan's block
    exponential: expm([[−Aᵀ, AᵀA], [0, A]] T) = [[·, G], [0, exp(AT)]] and W = exp(AT)ᵀ G."""
    d = A.shape[0]
    m = torch.zeros(2 * d, 2 * d, dtype=torch.float64)
    m[:d, :d], m[:d, d:], m[d:, d:] = -A.T, A.T @ A, A
    e = torch.matrix_exp(m * t1)
    w = e[d:, d:].T @ e[:d, d:]
    return ((x0 @ w) * x0).sum(dim=1).mean()


def test_kinetic_energy_of_a_linear_flow_is_its_closed_form():
    torch.manual_seed(0)
    x0 = torch.randn(6, 3, dtype=torch.float64)
    _, values = regularized_solve(Linear(), x0, TIGHT, RegularizationSpec(kinetic=1.0))
    torch.testing.assert_close(values.kinetic, kinetic_closed_form(x0, T), rtol=1e-7, atol=0)
    assert values.jacobian is None
    torch.testing.assert_close(values.penalty, values.kinetic)


def test_kinetic_energy_agrees_with_gauss_legendre_quadrature_of_the_exact_solution():
    """A second, independent route: 40-point Gauss–Legendre of ‖A exp(tA) x0‖² (smooth: exact to rounding)."""
    torch.manual_seed(1)
    x0 = torch.randn(4, 3, dtype=torch.float64)
    nodes, weights = (torch.from_numpy(a) for a in __import__("numpy").polynomial.legendre.leggauss(40))
    ts, ws = (nodes + 1) * T / 2, weights * T / 2
    integrand = torch.stack([((x0 @ torch.matrix_exp(t * A).T) @ A.T).pow(2).sum(1).mean() for t in ts])
    quad = (ws * integrand).sum()
    _, values = regularized_solve(Linear(), x0, TIGHT, RegularizationSpec(kinetic=2.0))
    torch.testing.assert_close(values.kinetic, quad, rtol=1e-7, atol=0)
    torch.testing.assert_close(values.penalty, 2.0 * quad, rtol=1e-7, atol=0)


@pytest.mark.parametrize("probe", ["gaussian", "rademacher"])
def test_hutchinson_jacobian_term_is_unbiased_for_the_frobenius_norm(probe):
    """For dx/dt = Ax, e_j(T) = T‖εᵀA‖² with E = T‖A‖²_F; over B probes the batch mean lies within 4 standard
    errors (Var ‖Aᵀε‖² = 2 tr((AAᵀ)²) for Gaussian ε, 2 Σ_{i≠j} (AAᵀ)²_ij for Rademacher ε)."""
    torch.manual_seed(2)
    b = 20_000
    x0 = torch.randn(b, 3, dtype=torch.float64)
    _, values = regularized_solve(Linear(), x0, SolverSpec(method="rk4", step_size=T / 4, t1=T),
                                  RegularizationSpec(jacobian=1.0, probe=probe))
    aat = A @ A.T
    var = 2 * (aat @ aat).trace() if probe == "gaussian" else 2 * (aat.pow(2).sum() - aat.diagonal().pow(2).sum())
    se = T * math.sqrt(float(var) / b)
    exact = T * float(A.pow(2).sum())
    jac = float(values.jacobian.detach())
    assert abs(jac - exact) <= 4 * se, (jac, exact, se)
    assert values.kinetic is None


def test_jacobian_term_of_a_nonlinear_flow_matches_quadrature_of_the_exact_frobenius_norm():
    """One state x0 repeated with B independent probes: the mean of e_j is ∫‖J(x(t))‖²_F dt (J from autograd,
    trapezoid on a fine grid of the trajectory) within the Monte Carlo error; e_k is the trapezoid of ‖v‖²."""
    torch.manual_seed(3)
    v = MLPVelocity(3, width=8, depth=2, activation="tanh").double()
    x0 = torch.randn(1, 3, dtype=torch.float64)
    spec = SolverSpec(method="dopri5", rtol=1e-9, atol=1e-9, t1=1.0)
    ts = torch.linspace(0, 1, 401, dtype=torch.float64)
    with torch.no_grad():
        xs = solve(v, x0, spec, ts).ys[:, 0]
    fro2 = torch.stack([torch.autograd.functional.jacobian(lambda x, t=t: v(t, x), x).pow(2).sum()
                        for t, x in zip(ts, xs)])
    kin = torch.stack([v(t, x).pow(2).sum() for t, x in zip(ts, xs)]).detach()
    b = 4000
    _, values = regularized_solve(v, x0.expand(b, 3).clone(), spec, RegularizationSpec(kinetic=1.0, jacobian=1.0))
    torch.testing.assert_close(values.kinetic.detach(), torch.trapezoid(kin, ts), rtol=1e-4, atol=0)
    exact = float(torch.trapezoid(fro2, ts))
    # per-probe spread of ∫‖εᵀJ‖² is at most √2 × its mean for Gaussian ε (Var εᵀMε = 2‖M‖²_F ≤ 2 tr(M)²)
    assert abs(float(values.jacobian) - exact) <= 4 * math.sqrt(2) * exact / math.sqrt(b), (values.jacobian, exact)


def test_the_regularised_solve_takes_the_plain_solves_steps():
    """The integrals do not enter the error norm: same x(T), same forward NFE and steps as without them."""
    torch.manual_seed(4)
    v = MLPVelocity(4, width=16).double()
    x0 = torch.randn(8, 4, dtype=torch.float64)
    spec = SolverSpec(method="dopri5", rtol=1e-4, atol=1e-5)
    plain = solve(v, x0, spec)
    sol, _ = regularized_solve(v, x0, spec, RegularizationSpec(kinetic=1.0, jacobian=1.0))
    torch.testing.assert_close(sol.ys, plain.ys, rtol=1e-12, atol=1e-12)
    assert (sol.stats.nfe_forward, sol.stats.steps) == (plain.stats.nfe_forward, plain.stats.steps)


# -- gradients ----------------------------------------------------------------------------------------------
def _objective(v, x0, spec, reg, seed=0):
    torch.manual_seed(seed)  # the same probe ε in every evaluation
    sol, values = regularized_solve(v, x0, spec, reg)
    return values.penalty + sol.ys[-1].pow(2).sum() * 0.1


def test_gradient_of_the_regularised_loss_matches_finite_differences():
    """Backprop through rk4 (float64): d/dθ [λ_k E_k + λ_j E_j + 0.1‖x(T)‖²] against central differences. The
    Jacobian term needs the vjp's own graph (create_graph): without it its parameter gradient is missing."""
    torch.manual_seed(5)
    v = MLPVelocity(3, width=6, depth=2, activation="tanh").double()
    x0 = torch.randn(5, 3, dtype=torch.float64)
    spec = SolverSpec(method="rk4", step_size=0.25, t1=1.0)
    reg = RegularizationSpec(kinetic=0.7, jacobian=1.3)
    params = list(v.parameters())
    loss = _objective(v, x0, spec, reg)
    grads = torch.autograd.grad(loss, params)
    h = 1e-6
    for p, g in zip(params, grads):
        flat, gflat = p.data.view(-1), g.view(-1)
        for i in range(0, flat.numel(), max(1, flat.numel() // 5)):
            old = flat[i].item()
            flat[i] = old + h
            up = float(_objective(v, x0, spec, reg))
            flat[i] = old - h
            down = float(_objective(v, x0, spec, reg))
            flat[i] = old
            fd = (up - down) / (2 * h)
            assert abs(fd - gflat[i].item()) <= 1e-6 * max(1.0, abs(fd)), (p.shape, i, fd, gflat[i].item())


ADJOINT_CASES = {
    "dopri5": dict(method="dopri5", rtol=1e-9, atol=1e-9, max_steps=2000),
    "dopri5-seminorm": dict(method="dopri5", rtol=1e-9, atol=1e-9, max_steps=2000, seminorm=True),
    "rk4": dict(method="rk4", step_size=0.01),
}


@pytest.mark.parametrize("case", list(ADJOINT_CASES))
def test_backsolve_adjoint_gradients_equal_backprop_with_the_same_probe(case):
    """The adjoint solves the augmented state backwards with the ε of the forward solve: its gradients (of the
    penalty and of the state) agree with backprop through the solver (tight tolerances, or rk4 with a small
    step, where the two differ by O(h⁴))."""
    torch.manual_seed(6)
    v = MLPVelocity(3, width=8, depth=2, activation="tanh").double()
    x0 = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    reg = RegularizationSpec(kinetic=0.5, jacobian=0.5)
    opts = dict(ADJOINT_CASES[case])
    seminorm = opts.pop("seminorm", False)
    grads = {}
    for adjoint in ("none", "backsolve"):
        spec = SolverSpec(**opts, adjoint=adjoint, seminorm=seminorm and adjoint == "backsolve")
        loss = _objective(v, x0, spec, reg)
        grads[adjoint] = torch.autograd.grad(loss, [x0, *v.parameters()])
    for a, b in zip(grads["none"], grads["backsolve"]):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("method", ["dopri5", "rk4"])
def test_checkpointed_adjoint_gradients_equal_backprop_on_the_augmented_state(method):
    """adjoint='checkpoint' replays the forward's own steps with the same ε: the gradient of the regularised
    loss is backprop's to roundoff (the exact gradient of the discretised solve, unlike backsolve's)."""
    torch.manual_seed(7)
    v = MLPVelocity(3, width=8, depth=2, activation="tanh").double()
    x0 = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    reg = RegularizationSpec(kinetic=0.5, jacobian=0.5)
    opts = dict(method="dopri5", rtol=1e-5, atol=1e-6) if method == "dopri5" else dict(method="rk4", step_size=0.1)
    grads = {}
    for adjoint in ("none", "checkpoint"):
        loss = _objective(v, x0, SolverSpec(**opts, adjoint=adjoint), reg)
        grads[adjoint] = torch.autograd.grad(loss, [x0, *v.parameters()])
    for a, b in zip(grads["none"], grads["checkpoint"]):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)


class FastForcing(nn.Module):
    """dx/dt = a x + b sin(ωt) (the seminorm problem of tests/test_solve.py): the parameter adjoint oscillates at
    ω while the state, its adjoint and the integrals hardly feel b."""

    def __init__(self, omega: float = 20.0, b: float = 1e-3):
        super().__init__()
        self.omega = omega
        self.a = nn.Parameter(torch.tensor(-0.5, dtype=torch.float64))
        self.b = nn.Parameter(torch.full((4,), b, dtype=torch.float64))

    def forward(self, t, x):
        return self.a * x + self.b * torch.sin(self.omega * t)


def test_seminorm_still_saves_backward_work_on_the_augmented_state():
    """The seminorm acts on the adjoint of the augmented state: fewer backward evaluations and steps, same
    forward solve, gradients (penalty included) equal to the tolerance the full norm resolves."""
    x = torch.randn(16, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    v = FastForcing()
    reg = RegularizationSpec(kinetic=0.5, jacobian=0.5)
    stats, grads = {}, {}
    for seminorm in (False, True):
        v.zero_grad()
        block = ContinuousDepth([Convection(v)], SolverSpec(rtol=1e-6, atol=1e-6, adjoint="backsolve",
                                                            seminorm=seminorm, t1=2.0), reg)
        torch.manual_seed(0)
        out = block(x)
        (out.pow(2).sum() + block.regularization_values.penalty).backward()
        stats[seminorm] = block.stats
        grads[seminorm] = torch.cat([v.a.grad.reshape(1), v.b.grad])
    assert stats[True].nfe_forward == stats[False].nfe_forward
    assert stats[True].nfe_backward < 0.75 * stats[False].nfe_backward, (stats[True], stats[False])
    assert stats[True].backward_steps < stats[False].backward_steps
    rel = float((grads[True] - grads[False]).norm() / grads[False].norm())
    assert rel <= 1e-3, rel


# -- the block ------------------------------------------------------------------------------------------------
def test_block_integrates_the_penalty_only_in_training_mode():
    torch.manual_seed(8)
    block = ContinuousDepth([Convection(MLPVelocity(3, width=8))], SolverSpec(), RegularizationSpec(kinetic=0.1))
    x = torch.randn(4, 3)
    out_train = block(x)
    assert block.regularization_values is not None and block.regularization_values.penalty.requires_grad
    assert collect_regularization(nn.Sequential(block)).kinetic is block.regularization_values.kinetic
    nfe_train = block.stats.nfe_forward
    block.eval()
    out_eval = block(x)
    assert block.regularization_values is None and collect_regularization(block) is None
    assert block.stats.nfe_forward == nfe_train
    torch.testing.assert_close(out_eval, out_train)
    block.train()
    block(x)
    clear_regularization(block)
    assert block.regularization_values is None


def test_values_of_several_blocks_add():
    torch.manual_seed(9)
    blocks = [ContinuousDepth([Convection(MLPVelocity(3, width=8))], SolverSpec(), RegularizationSpec(kinetic=k))
              for k in (0.1, 0.2)]
    x = torch.randn(4, 3)
    for b in blocks:
        b(x)
    total = collect_regularization(nn.ModuleList(blocks))
    torch.testing.assert_close(total.kinetic, blocks[0].regularization_values.kinetic
                               + blocks[1].regularization_values.kinetic)
    torch.testing.assert_close(total.penalty, 0.1 * blocks[0].regularization_values.kinetic
                               + 0.2 * blocks[1].regularization_values.kinetic)
    assert total.jacobian is None


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"kinetic": -0.1}, "kinetic must be a finite number ≥ 0"),
    ({"jacobian": float("nan")}, "jacobian must be a finite number ≥ 0"),
    ({"kinetic": float("inf")}, "kinetic must be a finite number ≥ 0"),
    ({"jacobian": 1.0, "probe": "uniform"}, "probe must be one of gaussian, rademacher"),
    ({"probe": "rademacher"}, "which is off (jacobian = 0)"),
])
def test_settings_that_cannot_act_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        RegularizationSpec(**kwargs)


def test_regularized_solve_refuses_an_inactive_spec():
    with pytest.raises(ConfigError, match="kinetic > 0 or jacobian > 0"):
        regularized_solve(Linear(), torch.zeros(2, 3, dtype=torch.float64), TIGHT, RegularizationSpec())
