"""cdflow.heat.diffuse (the dispatcher) and properties shared by every integrator: mass conservation,
behaviour at a stiff step, member stacks, gradients (also through a differentiable kNN graph), errors."""

from __future__ import annotations

import pytest
import torch
from heat_cases import F64, assert_grads_match_dense, exact, graph, rand_x, rel

from cdflow.errors import ConfigError, DataError, SolverError
from cdflow.graph import Laplacian, knn_gaussian_graph, laplacian_from_weights
from cdflow.heat import (
    DIFFUSION_METHODS,
    diffuse,
    explicit_diffusion,
    expm_action_chebyshev,
    expm_action_krylov,
    implicit_euler_diffusion,
    split_solve,
)


@pytest.mark.parametrize("method", DIFFUSION_METHODS)
def test_mass_conserved(method: str) -> None:
    lap, x = graph("path"), rand_x()
    y, _ = diffuse(x, lap, 0.8, 2.5, method, **({"n_steps": 10} if method == "explicit" else {}))
    torch.testing.assert_close(y.sum(0), x.sum(0), rtol=1e-9, atol=1e-9)


def test_dispatches_to_the_integrators_with_time_gamma_h() -> None:
    lap, x = graph("cycle"), rand_x()
    t = 0.4 * 1.5  # γh
    cases = [
        ("krylov", {}, lambda: expm_action_krylov(lap, x, t)),
        ("chebyshev", {"lam_max": 4.0}, lambda: expm_action_chebyshev(lap, x, t, 4.0)),
        ("implicit", {"n_steps": 3}, lambda: implicit_euler_diffusion(x, lap, t / 3, 3)),
        ("explicit", {"n_steps": 3}, lambda: explicit_diffusion(x, lap, t / 3, 3)),
    ]
    for method, kw, direct in cases:
        y, st = diffuse(x, lap, 0.4, 1.5, method, **kw)
        y_ref, st_ref = direct()
        torch.testing.assert_close(y, y_ref, rtol=1e-13, atol=1e-13)
        assert st == st_ref, method


@pytest.mark.parametrize("method", DIFFUSION_METHODS)
def test_member_stack_diffuses_every_column_alike(method: str) -> None:
    """x [N, K, C] is diffused as the [N, K·C] block it flattens to."""
    lap = graph("path")
    x = torch.randn(30, 4, 3, dtype=F64, generator=torch.Generator().manual_seed(2))
    kw = {"n_steps": 5} if method in ("explicit", "implicit") else {}
    y, _ = diffuse(x, lap, 0.5, 1.0, method, **kw)
    flat, _ = diffuse(x.reshape(30, 12), lap, 0.5, 1.0, method, **kw)
    assert y.shape == x.shape
    torch.testing.assert_close(y.reshape(30, 12), flat, rtol=1e-12, atol=1e-12)


def test_stiff_step_ten_times_explicit_bound() -> None:
    lap, x = graph("cycle", 20), rand_x(20, 2)
    lam_max = float(torch.linalg.eigvalsh(lap.to_dense()).max())
    h = 10 * 2.0 / lam_max  # γ = 1
    ref = exact(lap, x, h)
    ye, _ = explicit_diffusion(x, lap, h, n_steps=4)
    assert not torch.isfinite(ye).all() or ye.norm() > 1e4 * x.norm()
    yk, _ = diffuse(x, lap, 1.0, h, "krylov")
    yc, _ = diffuse(x, lap, 1.0, h, "chebyshev", lam_max=lam_max * 1.01)
    assert rel(yk, ref) < 1e-8 and rel(yc, ref) < 1e-8
    yi, _ = diffuse(x, lap, 1.0, h, "implicit")
    # one backward-Euler step: stable (contractive, mean kept) but only first-order accurate
    assert torch.isfinite(yi).all() and yi.norm() <= x.norm() and rel(yi, ref) < 0.5
    torch.testing.assert_close(yi.mean(0), x.mean(0))
    yi50, _ = diffuse(x, lap, 1.0, h, "implicit", n_steps=50)
    assert rel(yi50, ref) < 0.01
    ys, st = split_solve(lambda z, ta, tb: z, x, lap, 1.0, 0.0, 2 * h, 2, scheme="strang")
    assert rel(ys, exact(lap, x, 2 * h)) < 1e-8 and st.convection_solves == 2


@pytest.mark.parametrize("method", ["krylov", "chebyshev"])
def test_gradients_match_dense_expm(method: str) -> None:
    lap, h = graph("path"), 0.9
    assert_grads_match_dense(lambda x, g: diffuse(x, lap, g, h, method, tol=1e-13)[0], lap, h)


@pytest.mark.parametrize("method", ["krylov", "chebyshev"])
def test_exact_methods_gradcheck(method: str) -> None:
    lap = graph("path", 7)
    x = rand_x(7, 2).requires_grad_()
    g = torch.tensor(0.8, dtype=F64, requires_grad=True)
    torch.autograd.gradcheck(lambda z, s: diffuse(z, lap, s, 1.1, method, tol=1e-13)[0], (x, g))


@pytest.mark.parametrize("build", ["tensor", "laplacian"])
@pytest.mark.parametrize("method", ["krylov", "chebyshev", "implicit"])
def test_gradient_through_differentiable_knn_laplacian(method: str, build: str) -> None:
    """features → differentiable kNN graph → L → diffusion: d/d(features) against dense expm / solve, with L
    given as a torch sparse tensor (wrapped by the integrator) or built by Laplacian.from_knn."""
    feat, x0, wts = rand_x(40, 2, seed=7), rand_x(40, 3, seed=8), rand_x(40, 3, seed=9)
    grads = []
    for dense in (False, True):
        f = feat.clone().requires_grad_()
        if build == "tensor":
            lap = laplacian_from_weights(knn_gaussian_graph(f, 6, 3, differentiable=True))
        else:
            lap = Laplacian.from_knn(f, 6, 3, differentiable=True)
            assert lap.requires_grad and lap.source == "knn"
        if dense:
            ld = lap.to_dense()
            if method == "implicit":
                a = torch.eye(40, dtype=F64) + 0.4 * ld
                y = torch.linalg.solve(a, torch.linalg.solve(a, torch.linalg.solve(a, x0)))
            else:
                y = torch.linalg.matrix_exp(-1.2 * ld) @ x0
        else:
            kw: dict = {"cg_tol": 1e-13, "n_steps": 3} if method == "implicit" else {"tol": 1e-13}
            if method == "chebyshev":
                kw["lam_max"] = 1.01 * float(torch.linalg.eigvalsh(lap.to_dense().detach())[-1])
            y, _ = diffuse(x0, lap, 0.8, 1.5, method, **kw)
        (y * wts).sum().backward()
        grads.append(f.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-9, atol=1e-10)


# ------------------------------------------------------------------------------------- bad inputs
_L = graph("path", 5)
_XB = rand_x(5, 2)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: diffuse(_XB, _L, 1.0, 1.0, "rk4"), ConfigError, "valid methods: krylov, chebyshev"),
        (lambda: diffuse(_XB, _L, -1.0, 1.0), ConfigError, "gamma = -1.0 must be finite and ≥ 0"),
        (lambda: diffuse(_XB, _L, 1.0, float("nan")), ConfigError, "h = nan"),
        (lambda: diffuse(_XB, _L, torch.ones(2), 1.0), ConfigError, "gamma must be a scalar"),
        (lambda: diffuse(rand_x(6, 2), _L, 1.0, 1.0), DataError, r"N = x.shape\[0\] = 6"),
        (lambda: diffuse(_XB.float(), _L, 1.0, 1.0), DataError, "L = L.to"),
        # [N, K, C] is a member stack now; four axes are still refused
        (lambda: diffuse(_XB[None, None], _L, 1.0, 1.0), DataError, r"\[N\] or \[N, C\]"),
        (lambda: diffuse(_XB, _L, 1.0, 1.0, "explicit", n_steps=0), ConfigError, "n_steps must be an int"),
        (lambda: diffuse(_XB, "L", 1.0, 1.0), DataError, "expected a cdflow.graph.Laplacian"),
        (lambda: diffuse(_XB, torch.ones(5, 4, dtype=F64), 1.0, 1.0), DataError, "square"),
        (lambda: expm_action_chebyshev(_L, _XB, 1e5, 4.0, max_degree=50), SolverError, "max_degree=50"),
    ],
)
def test_bad_inputs(call, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        call()
