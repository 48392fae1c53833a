"""cdflow.heat.chebyshev: exp(−tL)x by the Chebyshev–Bessel expansion against the eigendecomposition; the
memoised λ_max bound and its product count; gradients and argument checks."""

from __future__ import annotations

import pytest
import torch
from heat_cases import F64, assert_grads_match_dense, exact, graph, rand_x, rel
from scipy.special import ive

from cdflow.errors import ConfigError, DataError, SolverError
from cdflow.graph import Laplacian
from cdflow.heat import expm_action_chebyshev


@pytest.mark.parametrize("name", ["path", "cycle"])
@pytest.mark.parametrize("t", [0.3, 3.0, 40.0])
def test_matches_eigendecomposition(name: str, t: float) -> None:
    lap, x = graph(name), rand_x()
    y, st = expm_action_chebyshev(lap, x, t, lam_max=4.0)
    assert rel(y, exact(lap, x, t)) <= 1e-8
    assert st.products >= 1 and st.substeps == 1


def test_fixed_degree_counts_one_product_per_degree_and_reports_the_tail() -> None:
    lap, x = graph("cycle"), rand_x()
    y, st = expm_action_chebyshev(lap, x, 1.0, lam_max=4.0, degree=30)
    assert st.products == 30 and rel(y, exact(lap, x, 1.0)) < 1e-12
    assert st.error_estimate == pytest.approx(2.0 * ive(range(31, 431), 2.0).sum(), rel=1e-6)
    y0, st0 = expm_action_chebyshev(lap, x, 1.0, lam_max=4.0, degree=0)
    torch.testing.assert_close(y0, float(ive(0, 2.0)) * x)
    assert st0.products == 0


def test_spectral_bound_is_memoised_and_counted_once() -> None:
    """Without lam_max the bound comes from L.spectral_bound(): its Lanczos products are counted by the
    call that computed it, not by later calls on the same Laplacian (a plain matrix is a new one each call)."""
    lap, x = graph("cycle"), rand_x()
    _, given = expm_action_chebyshev(lap, x, 2.0, lam_max=lap.spectral_bound().upper)
    assert lap.bound_known
    fresh = graph("cycle")
    assert not fresh.bound_known
    y1, first = expm_action_chebyshev(fresh, x, 2.0)
    bound = fresh.spectral_bound()
    assert fresh.bound_known and bound.products > 0
    assert first.products == given.products + bound.products
    y2, second = expm_action_chebyshev(fresh, x, 2.0)
    assert second.products == given.products and torch.equal(y1, y2)
    assert rel(y1, exact(lap, x, 2.0)) < 1e-8
    dense = lap.to_dense()
    for _ in range(2):  # a plain matrix is wrapped anew: its bound is computed (and counted) every call
        _, st = expm_action_chebyshev(dense, x, 2.0)
        assert st.products == first.products


def test_own_bound_costs_more_than_a_given_one() -> None:
    lap, x = graph("cycle"), rand_x()
    _, given = expm_action_chebyshev(lap, x, 2.0, lam_max=4.0)
    y, own = expm_action_chebyshev(lap, x, 2.0)
    assert own.products > given.products and rel(y, exact(lap, x, 2.0)) < 1e-8


def test_gradients_match_dense_expm() -> None:
    lap, h = graph("path"), 0.9
    assert_grads_match_dense(lambda x, g: expm_action_chebyshev(lap, x, g * h, tol=1e-13)[0], lap, h)


def test_gradcheck() -> None:
    lap = graph("path", 7)
    x = rand_x(7, 2).requires_grad_()
    t = torch.tensor(0.8, dtype=F64, requires_grad=True)
    torch.autograd.gradcheck(lambda z, s: expm_action_chebyshev(lap, z, s * 1.1, tol=1e-13)[0], (x, t))


def test_bad_arguments() -> None:
    lap, x = graph("path", 5), rand_x(5, 2)
    with pytest.raises(ConfigError, match="lam_max"):
        expm_action_chebyshev(lap, x, 1.0, lam_max=-1.0)
    with pytest.raises(SolverError, match="max_degree=50"):
        expm_action_chebyshev(lap, x, 1e5, 4.0, max_degree=50)
    with pytest.raises(ConfigError, match="degree must be an int"):
        expm_action_chebyshev(lap, x, 1.0, 4.0, degree=-1)
    rw = Laplacian.from_edges(torch.tensor([[0, 1], [1, 2]]), 3, "rw", dtype=F64)
    with pytest.raises(DataError, match="symmetric"):  # no λ_max bound by Lanczos for a non-symmetric L
        expm_action_chebyshev(rw, rand_x(3, 1), 1.0)
