"""cdflow.heat.checks and cdflow.heat.stats: the argument checks shared by the integrators, and the counters."""

from __future__ import annotations

import pytest
import torch
from heat_cases import F64, graph, rand_x

from cdflow.errors import ConfigError, DataError
from cdflow.graph import Laplacian
from cdflow.heat import DiffusionStats
from cdflow.heat.checks import as_time, check_steps, finish, prepare, safe_div


def test_as_time_keeps_floats_and_scalar_tensors_with_grad() -> None:
    assert as_time(0.5, "t") == 0.5 and as_time(2, "t") == 2
    t = torch.tensor([0.3], dtype=F64, requires_grad=True)
    out = as_time(t, "t")
    assert out.shape == () and out.requires_grad
    for bad, match in ((-1.0, "t = -1.0 must be finite and ≥ 0"), (float("inf"), "t = inf"),
                       (torch.ones(2), "t must be a scalar"), (True, "t must be a float"), ("1", "t must be a float")):
        with pytest.raises(ConfigError, match=match):
            as_time(bad, "t")


def test_check_steps() -> None:
    assert check_steps(3) == 3
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigError, match="n_steps must be an int ≥ 1"):
            check_steps(bad)


def test_prepare_wraps_plain_matrices_and_flags_vectors() -> None:
    lap = graph("path", 6)
    x = rand_x(6, 2)
    x2, was_1d, lap2 = prepare(x, lap)
    assert x2 is x and not was_1d and lap2 is lap
    v2, was_1d, wrapped = prepare(x[:, 0], lap.to_dense())
    assert v2.shape == (6, 1) and was_1d and isinstance(wrapped, Laplacian)
    assert finish(v2, True).shape == (6,) and finish(x, False) is x
    with pytest.raises(DataError, match="L = L.to"):
        prepare(x.float(), lap)


def test_safe_div_has_finite_gradients() -> None:
    b = torch.tensor([2.0, 0.0], requires_grad=True)
    a = torch.tensor([1.0, 1.0], requires_grad=True)
    out = safe_div(a, b, b > 0)
    out.sum().backward()
    assert torch.equal(out.detach(), torch.tensor([0.5, 0.0]))
    assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()


def test_stats_merge() -> None:
    a = DiffusionStats(products=3, backward_products=1, krylov_dim=5, substeps=1, cg_iterations=2,
                       error_estimate=1e-9, convection_solves=1, reorthogonalisations=2)
    b = DiffusionStats(products=4, backward_products=2, krylov_dim=3, substeps=2, cg_iterations=1,
                       error_estimate=1e-8, convection_solves=2, reorthogonalisations=1)
    assert a.merge(b) is a
    assert a == DiffusionStats(products=7, backward_products=3, krylov_dim=5, substeps=3, cg_iterations=3,
                               error_estimate=1e-8, convection_solves=3, reorthogonalisations=3)
