"""cdflow.heat.implicit: backward Euler by batched CG against dense solves; first order; adjoint-CG
gradients w.r.t. x, τ and L's values."""

from __future__ import annotations

import pytest
import torch
from heat_cases import F64, exact, graph, rand_x, rel

from cdflow.errors import ConfigError, SolverError
from cdflow.heat import diffuse, implicit_euler_diffusion


@pytest.mark.parametrize("name", ["path", "cycle"])
def test_first_order(name: str) -> None:
    lap, x, t = graph(name), rand_x(), 1.0
    ref = exact(lap, x, t)
    errs = []
    for n_steps in (20, 40, 80):
        y, st = diffuse(x, lap, 1.0, t, "implicit", n_steps=n_steps)
        assert st.substeps == n_steps
        errs.append(rel(y, ref))
    assert errs[0] < 0.05
    for coarse, fine in zip(errs, errs[1:]):
        assert 1.8 < coarse / fine < 2.2


def test_matches_dense_backward_euler() -> None:
    lap, x, tau = graph("path"), rand_x(), 0.7
    y, st = implicit_euler_diffusion(x, lap, tau, n_steps=3, cg_tol=1e-13)
    a = torch.eye(30, dtype=F64) + tau * lap.to_dense()
    ref = torch.linalg.solve(a, torch.linalg.solve(a, torch.linalg.solve(a, x)))
    assert rel(y, ref) < 1e-11
    assert st.products == st.cg_iterations + 3  # one initial-residual product per solve


def test_gradients_match_dense_solve_and_gradcheck() -> None:
    base = graph("cycle", 12).to_torch()
    idx, vals = base.indices(), base.values().clone().requires_grad_()
    x = rand_x(12, 2).requires_grad_()
    tau = torch.tensor(0.4, dtype=F64, requires_grad=True)
    weights = rand_x(12, 2, seed=3)

    sp = torch.sparse_coo_tensor(idx, vals, base.shape, is_coalesced=True, check_invariants=False)
    y, st = implicit_euler_diffusion(x, sp, tau, n_steps=2, cg_tol=1e-13)
    (y * weights).sum().backward()
    ours = (x.grad.clone(), tau.grad.clone(), vals.grad.clone())
    assert st.backward_products > 0
    x.grad = tau.grad = vals.grad = None

    dense = torch.sparse_coo_tensor(idx, vals, base.shape, check_invariants=False).to_dense()
    a = torch.eye(12, dtype=F64) + tau * dense
    (torch.linalg.solve(a, torch.linalg.solve(a, x)) * weights).sum().backward()
    for mine, ref in zip(ours, (x.grad, tau.grad, vals.grad)):
        torch.testing.assert_close(mine, ref, rtol=1e-8, atol=1e-10)

    lap = graph("cycle", 12)
    torch.autograd.gradcheck(
        lambda z, s: implicit_euler_diffusion(z, lap, s, n_steps=2, cg_tol=1e-13)[0],
        (x.detach().requires_grad_(), tau.detach().requires_grad_()),
    )


def test_bad_arguments() -> None:
    lap, x = graph("path", 5), rand_x(5, 2)
    with pytest.raises(SolverError, match="cg_max_iter=1"):
        implicit_euler_diffusion(x, lap, 1.0, 1, 1e-15, 1)
    with pytest.raises(ConfigError, match="cg_tol must be > 0"):
        implicit_euler_diffusion(x, lap, 1.0, 1, 0.0)
    with pytest.raises(ConfigError, match="tau = -1.0"):
        implicit_euler_diffusion(x, lap, -1.0)
