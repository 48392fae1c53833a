"""cdflow.heat.splitting: Lie is first order and Strang second order on a non-commuting linear problem;
fused Strang steps; gradients; the Chebyshev bound computed once per solve; argument checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from heat_cases import F64, exact, graph, rand_x, rel

from cdflow.errors import ConfigError
from cdflow.heat import split_solve

_ID = lambda z, a, b: z  # noqa: E731


def test_strang_second_order_lie_first_order() -> None:
    n, gamma, t1 = 6, 1.0, 1.0
    lap = graph("path", n)
    a = torch.randn(n, n, dtype=F64, generator=torch.Generator().manual_seed(1))
    assert (a @ lap.to_dense() - lap.to_dense() @ a).norm() > 1.0  # does not commute with L
    x0 = rand_x(n, 2)
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
            errs.append(rel(y, ref))
        slopes[scheme] = -np.polyfit(np.log(steps), np.log(errs), 1)[0]
    assert abs(slopes["lie"] - 1.0) <= 0.3
    assert abs(slopes["strang"] - 2.0) <= 0.3


def test_strang_fusing_saves_diffusions() -> None:
    lap, x = graph("path", 10), rand_x(10, 2)
    conv = lambda z, ta, tb: z * math.exp(-(tb - ta))  # noqa: E731
    y1, s1 = split_solve(conv, x, lap, 0.5, 0.0, 1.0, 5, diffusion="krylov")
    y2, s2 = split_solve(conv, x, lap, 0.5, 0.0, 1.0, 5, diffusion="krylov", fuse=False)
    torch.testing.assert_close(y1, y2, rtol=1e-9, atol=1e-9)
    assert s1.substeps == 6 and s2.substeps == 10 and s1.products < s2.products


def test_pure_diffusion_is_exact_at_a_stiff_step() -> None:
    lap, x = graph("cycle", 20), rand_x(20, 2)
    h = 10 * 2.0 / float(torch.linalg.eigvalsh(lap.to_dense()).max())
    ys, st = split_solve(_ID, x, lap, 1.0, 0.0, 2 * h, 2, scheme="strang")
    assert rel(ys, exact(lap, x, 2 * h)) < 1e-8 and st.convection_solves == 2


def test_chebyshev_bound_computed_once_per_laplacian() -> None:
    """The λ_max bound is memoised on the Laplacian: counted by the first solve only, and equal results."""
    lap, x = graph("path", 10), rand_x(10, 2)
    given, s_given = split_solve(_ID, x, lap, 0.5, 0.0, 1.0, 4, diffusion="chebyshev", lam_max=4.0)
    fresh = graph("path", 10)
    y1, s1 = split_solve(_ID, x, fresh, 0.5, 0.0, 1.0, 4, diffusion="chebyshev")
    y2, s2 = split_solve(_ID, x, fresh, 0.5, 0.0, 1.0, 4, diffusion="chebyshev")
    bound = fresh.spectral_bound()
    assert torch.equal(y1, y2) and rel(y1, exact(lap, x, 0.5)) < 1e-8
    assert s2.products + bound.products == s1.products
    torch.testing.assert_close(given, y1, rtol=1e-8, atol=1e-10)
    assert s_given.products > 0


def test_gradcheck() -> None:
    lap = graph("path", 5)
    a = 0.5 * torch.randn(5, 5, dtype=F64, generator=torch.Generator().manual_seed(6))
    conv = lambda z, ta, tb: torch.linalg.matrix_exp(a * (tb - ta)) @ z  # noqa: E731
    x = rand_x(5, 2).requires_grad_()
    g = torch.tensor(0.7, dtype=F64, requires_grad=True)
    for diffusion in ("krylov", "implicit"):
        kw = {"tol": 1e-13} if diffusion == "krylov" else {"cg_tol": 1e-13}
        fn = lambda z, s, d=diffusion, k=kw: split_solve(conv, z, lap, s, 0.0, 1.0, 3, diffusion=d, **k)[0]  # noqa: E731
        torch.autograd.gradcheck(fn, (x, g))


_L = graph("path", 5)
_XB = rand_x(5, 2)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: split_solve(_ID, _XB, _L, 1.0, 0.0, 1.0, 2, "yoshida"), "lie, strang"),
        (lambda: split_solve(_ID, _XB, _L, 1.0, 1.0, 0.0, 2), "t0 ≤ t1"),
        (lambda: split_solve(_ID, _XB, _L, 1.0, 0.0, 1.0, 2, diffusion="x"), "valid"),
        (lambda: split_solve(_ID, _XB, _L, 1.0, 0.0, 1.0, 0), "n_steps must be an int"),
    ],
)
def test_bad_inputs(call, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        call()
