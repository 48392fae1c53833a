"""cdflow.heat.phi: φ_k of scalars against their integral definition; φ_k(−sT)e₁ of small matrices against an
eigendecomposition; φ_k(−tL)x by Lanczos against the dense answer, with gradients; the error estimate; checks."""

from __future__ import annotations

import math

import pytest
import torch
from heat_cases import F64, graph, rand_x, rel
from scipy.integrate import quad

from cdflow.errors import ConfigError
from cdflow.heat import DiffusionStats
from cdflow.heat.phi import KrylovNotConverged, phi_action_krylov, phi_krylov, phi_scalar, phi_tridiag


def _phi_quad(z: float, k: int) -> float:
    """φ_k(z) = ∫_0^1 e^{(1−σ)z} σ^{k−1}/(k−1)! dσ (k ≥ 1), φ_0 = e^z."""
    if k == 0:
        return math.exp(z)
    return quad(lambda s: math.exp((1 - s) * z) * s ** (k - 1) / math.factorial(k - 1), 0, 1,
                epsabs=0, epsrel=1e-13, limit=400)[0]


@pytest.mark.parametrize("z", [-300.0, -20.0, -1.0, -0.5, -0.4999, -0.1, -1e-9, 0.0])
def test_phi_scalar_matches_integral_definition(z: float) -> None:
    got = phi_scalar(torch.tensor(z, dtype=F64), 4)
    for k in range(5):
        want = _phi_quad(z, k)
        assert abs(float(got[k]) - want) <= 1e-12 * max(abs(want), 1e-300) + 1e-300, (z, k)


def _dense_phi(a: torch.Tensor, s: float, k: int) -> torch.Tensor:
    lam, q = torch.linalg.eigh(a)
    return q @ torch.diag(phi_scalar(-s * lam, k)[:, k]) @ q.T


def test_phi_tridiag_matches_eigendecomposition() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(3, 10, 10, dtype=F64, generator=g)
    t = a @ a.transpose(1, 2)
    for s in (1e-3, 0.7, 25.0):
        got = phi_tridiag(t, s, 3)
        for c in range(3):
            for k in range(4):
                want = _dense_phi(t[c], s, k)[:, 0]
                torch.testing.assert_close(got[c, :, k], want, rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("k", [0, 1, 2, 3])
@pytest.mark.parametrize("t", [0.3, 6.0, 80.0])
def test_phi_action_matches_dense(k: int, t: float) -> None:
    lap, x = graph("path", 30), rand_x()
    y, stats = phi_action_krylov(lap, x, t, k)
    want = _dense_phi(lap.to_dense(), t, k) @ x
    assert rel(y, want) < 1e-9
    assert 0 < stats.products == stats.krylov_dim <= 30


def test_zero_time_and_zero_vector() -> None:
    lap, x = graph("cycle", 12), rand_x(12)
    y, st = phi_action_krylov(lap, x, 0.0, 2)
    torch.testing.assert_close(y, x / 2)
    assert st.products == 0
    basis = phi_krylov(lap, torch.zeros(12, 2, dtype=F64), 1.0, [(1, 1.0)], 1e-8, DiffusionStats())
    assert basis.dim == 0 and float(basis.apply(((1, 1.0, 1.0),)).abs().max()) == 0.0


def test_one_basis_serves_every_order_and_time() -> None:
    """One Lanczos run of v gives φ_k(−τsL)v for all the (k, τ) it was asked to resolve."""
    lap, x = graph("path", 30), rand_x()
    stats = DiffusionStats()
    needs = [(1, 0.5), (2, 1.0), (3, 2.0 / 3.0)]
    basis = phi_krylov(lap, x, 4.0, needs, 1e-11 * float(x.norm()), stats)
    for k, tau in needs:
        want = _dense_phi(lap.to_dense(), 4.0 * tau, k) @ x
        assert rel(basis.apply(((k, tau, 1.0),)), want) < 1e-9
    assert stats.products == basis.dim


def test_error_estimate_bounds_the_error_and_m_max_is_reported() -> None:
    """With a loose tolerance the actual error is within the (estimated) tolerance; with too small an m_max
    the shortfall is raised, not returned silently."""
    lap, x = graph("path", 40), rand_x(40)
    want = _dense_phi(lap.to_dense(), 10.0, 1) @ x
    for tol in (1e-3, 1e-6):
        y, _ = phi_action_krylov(lap, x, 10.0, 1, tol=tol)
        assert float((y - want).norm(dim=0).max() / x.norm(dim=0).min()) < 10 * tol
    with pytest.raises(KrylovNotConverged, match="m_max=3"):
        phi_action_krylov(lap, x, 10.0, 1, m_max=3)


def test_gradients_match_dense_phi() -> None:
    lap = graph("cycle", 14)
    wts = rand_x(14, seed=3)
    grads = []
    for fn in ("krylov", "dense"):
        x = rand_x(14).requires_grad_()
        t = torch.tensor(2.5, dtype=F64, requires_grad=True)
        if fn == "krylov":
            y, _ = phi_action_krylov(lap, x, t, 2, tol=1e-13)
        else:
            y = _phi2_dense(lap.to_dense(), t) @ x
        (y * wts).sum().backward()
        grads.append((x.grad, t.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-8, atol=1e-10)


def _phi2_dense(a: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """φ_2(−tA), dense and differentiable: the top-right block of exp([[Z, I, 0], [0, 0, I], [0, 0, 0]]), Z = −tA."""
    n = a.shape[0]
    z = -t * a
    eye = torch.eye(n, dtype=F64)
    zero = torch.zeros(n, n, dtype=F64)
    big = torch.cat([torch.cat([z, eye, zero], 1), torch.cat([zero, zero, eye], 1), torch.cat([zero, zero, zero], 1)])
    return torch.linalg.matrix_exp(big)[:n, 2 * n:]


def test_gradcheck() -> None:
    lap = graph("path", 8)
    x = rand_x(8, 2).requires_grad_()
    t = torch.tensor(1.7, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, t: phi_action_krylov(lap, x, t, 1, tol=1e-13)[0], (x, t))


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"k": -1}, "k"), ({"tol": 0.0}, "tol"), ({"m_max": 0}, "m_max"), ({"reorth": "sometimes"}, "reorth"),
    ({"t": -1.0}, "≥ 0"),
])
def test_bad_arguments(kwargs: dict, match: str) -> None:
    lap, x = graph("path", 8), rand_x(8)
    args = {"t": 1.0, **kwargs}
    t = args.pop("t")
    with pytest.raises(ConfigError, match=match):
        phi_action_krylov(lap, x, t, **args)
