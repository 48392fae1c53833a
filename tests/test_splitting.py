"""Tests of cdflow.splitting: heat equation on path/cycle graphs against the eigendecomposition,
convergence orders, stiffness, splitting orders, gradients and error messages."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cdflow.errors import ConfigError, DataError, SolverError
from cdflow.graph import laplacian_from_edges
from cdflow.splitting import (
    DIFFUSION_METHODS,
    _SymExpm,
    diffuse,
    explicit_diffusion,
    expm_action_chebyshev,
    expm_action_krylov,
    implicit_euler_diffusion,
    split_solve,
)

F64 = torch.float64


def _graph(name: str, n: int = 30) -> torch.Tensor:
    i = torch.arange(n)
    ei = torch.stack([i[:-1], i[1:]]) if name == "path" else torch.stack([i, (i + 1) % n])
    return laplacian_from_edges(ei, n, "combinatorial", dtype=F64)


def _exact(lap: torch.Tensor, x: torch.Tensor, t: float) -> torch.Tensor:
    """exp(−tL)x from torch.linalg.eigh (float64)."""
    lam, q = torch.linalg.eigh(lap.to_dense())
    return q @ (torch.exp(-t * lam)[:, None] * (q.T @ x))


def _x(n: int = 30, c: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, c, dtype=F64, generator=torch.Generator().manual_seed(seed))


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


# ---------------------------------------------------------------------------------- heat equation
@pytest.mark.parametrize("graph", ["path", "cycle"])
@pytest.mark.parametrize("t", [0.3, 3.0, 40.0])
def test_exact_integrators_match_eigendecomposition(graph: str, t: float) -> None:
    lap, x = _graph(graph), _x()
    ref = _exact(lap, x, t)
    yk, sk = expm_action_krylov(lap, x, t)
    yc, sc = expm_action_chebyshev(lap, x, t, lam_max=4.0)
    assert _rel(yk, ref) <= 1e-8 and _rel(yc, ref) <= 1e-8
    assert sk.products == sk.krylov_dim * sk.substeps >= 1 and sc.products >= 1


@pytest.mark.parametrize("graph", ["path", "cycle"])
@pytest.mark.parametrize("method", ["explicit", "implicit"])
def test_euler_methods_first_order(graph: str, method: str) -> None:
    lap, x, t = _graph(graph), _x(), 1.0
    ref = _exact(lap, x, t)
    errs = []
    for n_steps in (20, 40, 80):  # τ ≤ 0.05, well inside the explicit bound 2/λ_max ≥ 0.5
        y, st = diffuse(x, lap, 1.0, t, method, n_steps=n_steps)
        assert st.substeps == n_steps
        errs.append(_rel(y, ref))
    assert errs[0] < 0.05
    for coarse, fine in zip(errs, errs[1:]):
        assert 1.8 < coarse / fine < 2.2


def test_implicit_matches_dense_backward_euler() -> None:
    lap, x, tau = _graph("path"), _x(), 0.7
    y, st = implicit_euler_diffusion(x, lap, tau, n_steps=3, cg_tol=1e-13)
    a = torch.eye(30, dtype=F64) + tau * lap.to_dense()
    ref = torch.linalg.solve(a, torch.linalg.solve(a, torch.linalg.solve(a, x)))
    assert _rel(y, ref) < 1e-11
    assert st.products == st.cg_iterations + 3  # one initial-residual product per solve


@pytest.mark.parametrize("method", DIFFUSION_METHODS)
def test_mass_conserved(method: str) -> None:
    lap, x = _graph("path"), _x()
    y, _ = diffuse(x, lap, 0.8, 2.5, method, **({"n_steps": 10} if method == "explicit" else {}))
    torch.testing.assert_close(y.sum(0), x.sum(0), rtol=1e-9, atol=1e-9)


def test_one_dimensional_state_and_zero_time() -> None:
    lap, x = _graph("cycle"), _x(c=1)[:, 0]
    y, _ = expm_action_krylov(lap, x, 2.0)
    assert y.shape == (30,) and _rel(y, _exact(lap, x[:, None], 2.0)[:, 0]) < 1e-8
    y0, st = diffuse(x, lap, 0.0, 1.0, "krylov")
    assert torch.equal(y0, x) and st.products == 0


def test_krylov_substeps_when_m_max_small() -> None:
    lap, x = _graph("path", 200), _x(200, 2)
    y, st = expm_action_krylov(lap, x, 50.0, m_max=12)
    assert st.substeps > 1 and st.krylov_dim <= 12
    assert _rel(y, _exact(lap, x, 50.0)) < 1e-8


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_krylov_reorth_modes(dtype: torch.dtype) -> None:
    # path + two hubs: isolated top eigenvalues (28, 42) converge fast, so Lanczos loses orthogonality
    n, i = 300, torch.arange(300)
    spec = ((0, 100, 40), (200, 230, 25))  # (hub, first leaf, leaves)
    hubs = [torch.stack([torch.full((m,), h), torch.arange(s, s + m)]) for h, s, m in spec]
    edges = torch.cat([torch.stack([i[:-1], i[1:]]), *hubs], 1)
    lap = laplacian_from_edges(edges, n, "combinatorial", dtype=F64)
    x = _x(n, 3)
    ref = _exact(lap, x, 30.0)
    tol = 1e-9 if dtype == torch.float64 else 1e-5
    counts = {}
    for mode in ("partial", "full", "none"):
        y, st = expm_action_krylov(lap.to(dtype), x.to(dtype), 30.0, reorth=mode, tol=tol)
        assert _rel(y.double(), ref) < 50 * tol, mode
        counts[mode] = st.reorthogonalisations
    assert counts["none"] == 0 and 0 < counts["partial"] < counts["full"]


def test_chebyshev_counts_its_spectral_bound() -> None:
    lap, x = _graph("cycle"), _x()
    _, given = expm_action_chebyshev(lap, x, 2.0, lam_max=4.0)
    y, own = expm_action_chebyshev(lap, x, 2.0)
    assert own.products > given.products and _rel(y, _exact(lap, x, 2.0)) < 1e-8


# -------------------------------------------------------------------------------------- stiffness
def test_stiff_step_ten_times_explicit_bound() -> None:
    lap, x = _graph("cycle", 20), _x(20, 2)
    lam_max = float(torch.linalg.eigvalsh(lap.to_dense()).max())
    h = 10 * 2.0 / lam_max  # γ = 1
    ref = _exact(lap, x, h)
    ye, _ = explicit_diffusion(x, lap, h, n_steps=4)
    assert not torch.isfinite(ye).all() or ye.norm() > 1e4 * x.norm()
    yk, _ = diffuse(x, lap, 1.0, h, "krylov")
    yc, _ = diffuse(x, lap, 1.0, h, "chebyshev", lam_max=lam_max * 1.01)
    assert _rel(yk, ref) < 1e-8 and _rel(yc, ref) < 1e-8
    yi, _ = diffuse(x, lap, 1.0, h, "implicit")
    # one backward-Euler step: stable (contractive, mean kept) but only first-order accurate
    assert torch.isfinite(yi).all() and yi.norm() <= x.norm() and _rel(yi, ref) < 0.5
    torch.testing.assert_close(yi.mean(0), x.mean(0))
    yi50, _ = diffuse(x, lap, 1.0, h, "implicit", n_steps=50)
    assert _rel(yi50, ref) < 0.01
    ys, st = split_solve(lambda z, ta, tb: z, x, lap, 1.0, 0.0, 2 * h, 2, scheme="strang")
    assert _rel(ys, _exact(lap, x, 2 * h)) < 1e-8 and st.convection_solves == 2


# -------------------------------------------------------------------------------------- splitting
def test_strang_second_order_lie_first_order() -> None:
    n, gamma, t1 = 6, 1.0, 1.0
    lap = _graph("path", n)
    a = torch.randn(n, n, dtype=F64, generator=torch.Generator().manual_seed(1))
    assert (a @ lap.to_dense() - lap.to_dense() @ a).norm() > 1.0  # does not commute with L
    x0 = _x(n, 2)
    ref = torch.linalg.matrix_exp((a - gamma * lap.to_dense()) * t1) @ x0

    def convect(x: torch.Tensor, ta: float, tb: float) -> torch.Tensor:
        return torch.linalg.matrix_exp(a * (tb - ta)) @ x

    steps = [4, 8, 16, 32]
    slopes = {}
    for scheme in ("lie", "strang"):
        errs = []
        for n_steps in steps:
            y, st = split_solve(convect, x0, lap, gamma, 0.0, t1, n_steps, scheme=scheme, tol=1e-14)
            assert st.convection_solves == n_steps
            errs.append(_rel(y, ref))
        slopes[scheme] = -np.polyfit(np.log(steps), np.log(errs), 1)[0]
    assert abs(slopes["lie"] - 1.0) <= 0.3
    assert abs(slopes["strang"] - 2.0) <= 0.3


def test_strang_fusing_saves_diffusions() -> None:
    lap, x = _graph("path", 10), _x(10, 2)
    conv = lambda z, ta, tb: z * math.exp(-(tb - ta))  # noqa: E731
    y1, s1 = split_solve(conv, x, lap, 0.5, 0.0, 1.0, 5, diffusion="krylov")
    y2, s2 = split_solve(conv, x, lap, 0.5, 0.0, 1.0, 5, diffusion="krylov", fuse=False)
    torch.testing.assert_close(y1, y2, rtol=1e-9, atol=1e-9)
    assert s1.substeps == 6 and s2.substeps == 10 and s1.products < s2.products


# -------------------------------------------------------------------------------------- gradients
def _dense_reference(x, gamma, lap, h):
    return torch.linalg.matrix_exp(-gamma * h * lap.to_dense()) @ x


@pytest.mark.parametrize("method", ["krylov", "chebyshev"])
def test_gradients_match_dense_expm(method: str) -> None:
    lap, h = _graph("path"), 0.9
    weights = _x(seed=2)
    grads = []
    ours = lambda x, g: diffuse(x, lap, g, h, method, tol=1e-13)[0]  # noqa: E731
    for fn in (ours, lambda x, g: _dense_reference(x, g, lap, h)):
        x = _x().requires_grad_()
        g = torch.tensor(1.3, dtype=F64, requires_grad=True)
        (fn(x, g) * weights).sum().backward()
        grads.append((x.grad, g.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-8, atol=1e-10)


def test_implicit_gradients_match_dense_solve_and_gradcheck() -> None:
    lap = _graph("cycle", 12)
    idx, vals = lap.indices(), lap.values().clone().requires_grad_()
    x = _x(12, 2).requires_grad_()
    tau = torch.tensor(0.4, dtype=F64, requires_grad=True)
    weights = _x(12, 2, seed=3)

    sp = torch.sparse_coo_tensor(idx, vals, lap.shape, is_coalesced=True, check_invariants=False)
    y, st = implicit_euler_diffusion(x, sp, tau, n_steps=2, cg_tol=1e-13)
    (y * weights).sum().backward()
    ours = (x.grad.clone(), tau.grad.clone(), vals.grad.clone())
    assert st.backward_products > 0
    x.grad = tau.grad = vals.grad = None

    dense = torch.sparse_coo_tensor(idx, vals, lap.shape, check_invariants=False).to_dense()
    a = torch.eye(12, dtype=F64) + tau * dense
    (torch.linalg.solve(a, torch.linalg.solve(a, x)) * weights).sum().backward()
    for mine, ref in zip(ours, (x.grad, tau.grad, vals.grad)):
        torch.testing.assert_close(mine, ref, rtol=1e-8, atol=1e-10)

    torch.autograd.gradcheck(
        lambda z, s: implicit_euler_diffusion(z, lap, s, n_steps=2, cg_tol=1e-13)[0],
        (x.detach().requires_grad_(), tau.detach().requires_grad_()),
    )


@pytest.mark.parametrize("method", ["krylov", "chebyshev", "implicit"])
def test_gradient_through_differentiable_knn_laplacian(method: str) -> None:
    """features → differentiable kNN graph → L → diffusion: d/d(features) against dense expm / solve."""
    from cdflow.graph import knn_gaussian_graph, laplacian_from_weights

    feat, x0, wts = _x(40, 2, seed=7), _x(40, 3, seed=8), _x(40, 3, seed=9)
    grads = []
    for dense in (False, True):
        f = feat.clone().requires_grad_()
        lap = laplacian_from_weights(knn_gaussian_graph(f, 6, 3, differentiable=True))
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
                kw["lam_max"] = 1.01 * float(torch.linalg.eigvalsh(lap.detach().to_dense())[-1])
            y, _ = diffuse(x0, lap, 0.8, 1.5, method, **kw)
        (y * wts).sum().backward()
        grads.append(f.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-9, atol=1e-10)


def test_sym_expm_backward_with_repeated_eigenvalues() -> None:
    q, _ = torch.linalg.qr(torch.randn(4, 4, dtype=F64, generator=torch.Generator().manual_seed(4)))
    a = (q @ torch.diag(torch.tensor([-3.0, -1.0, -1.0, 0.5], dtype=F64)) @ q.T)[None]
    g = torch.randn(1, 4, 4, dtype=F64, generator=torch.Generator().manual_seed(5))
    grads = []
    for fn in (_SymExpm.apply, torch.linalg.matrix_exp):
        z = a.clone().requires_grad_()
        (fn(z) * g).sum().backward()
        grads.append(z.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-10, atol=1e-12)


def test_split_solve_gradcheck() -> None:
    lap = _graph("path", 5)
    a = 0.5 * torch.randn(5, 5, dtype=F64, generator=torch.Generator().manual_seed(6))
    conv = lambda z, ta, tb: torch.linalg.matrix_exp(a * (tb - ta)) @ z  # noqa: E731
    x = _x(5, 2).requires_grad_()
    g = torch.tensor(0.7, dtype=F64, requires_grad=True)
    for diffusion in ("krylov", "implicit"):
        kw = {"tol": 1e-13} if diffusion == "krylov" else {"cg_tol": 1e-13}
        fn = lambda z, s, d=diffusion, k=kw: split_solve(conv, z, lap, s, 0.0, 1.0, 3, diffusion=d, **k)[0]  # noqa: E731
        torch.autograd.gradcheck(fn, (x, g))


@pytest.mark.parametrize("method", ["krylov", "chebyshev"])
def test_exact_methods_gradcheck(method: str) -> None:
    lap = _graph("path", 7)
    x = _x(7, 2).requires_grad_()
    g = torch.tensor(0.8, dtype=F64, requires_grad=True)
    torch.autograd.gradcheck(lambda z, s: diffuse(z, lap, s, 1.1, method, tol=1e-13)[0], (x, g))


# ------------------------------------------------------------------------------------- bad inputs
_L = _graph("path", 5)
_XB = _x(5, 2)
_ID = lambda z, a, b: z  # noqa: E731


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: diffuse(_XB, _L, 1.0, 1.0, "rk4"), ConfigError, "valid methods: krylov, chebyshev"),
        (lambda: diffuse(_XB, _L, -1.0, 1.0), ConfigError, "gamma = -1.0 must be finite and ≥ 0"),
        (lambda: diffuse(_XB, _L, 1.0, float("nan")), ConfigError, "h = nan"),
        (lambda: diffuse(_XB, _L, torch.ones(2), 1.0), ConfigError, "gamma must be a scalar"),
        (lambda: diffuse(_x(6, 2), _L, 1.0, 1.0), DataError, r"N = x.shape\[0\] = 6"),
        (lambda: diffuse(_XB.float(), _L, 1.0, 1.0), DataError, "L = L.to"),
        (lambda: diffuse(_XB[None], _L, 1.0, 1.0), DataError, r"\[N\] or \[N, C\]"),
        (lambda: diffuse(_XB, _L, 1.0, 1.0, "explicit", n_steps=0), ConfigError, "n_steps must be an int"),
        (lambda: expm_action_krylov(_L, _XB, 1.0, tol=0.0), ConfigError, "tol must be > 0"),
        (lambda: expm_action_chebyshev(_L, _XB, 1.0, lam_max=-1.0), ConfigError, "lam_max"),
        (lambda: expm_action_chebyshev(_L, _XB, 1e5, 4.0, max_degree=50), SolverError, "max_degree=50"),
        (lambda: implicit_euler_diffusion(_XB, _L, 1.0, 1, 1e-15, 1), SolverError, "cg_max_iter=1"),
        (lambda: expm_action_krylov(_L, _XB, 1.0, reorth="some"), ConfigError, "partial, full, none"),
        (lambda: split_solve(_ID, _XB, _L, 1.0, 0.0, 1.0, 2, "yoshida"), ConfigError, "lie, strang"),
        (lambda: split_solve(_ID, _XB, _L, 1.0, 1.0, 0.0, 2), ConfigError, "t0 ≤ t1"),
        (lambda: split_solve(_ID, _XB, _L, 1.0, 0.0, 1.0, 2, diffusion="x"), ConfigError, "valid"),
    ],
)
def test_bad_inputs(call, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        call()
