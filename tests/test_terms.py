"""cdflow.terms.GraphDiffusion: −γ L x on a `Laplacian` (a plain matrix is wrapped once), and its solve."""

import pytest
import torch

from cdflow import ConfigError, DataError, Drift, GraphDiffusion, SolverSpec, solve
from cdflow.graph import Laplacian

F64 = torch.float64


def _path(n: int = 12) -> Laplacian:
    i = torch.arange(n)
    return Laplacian.from_edges(torch.stack([i[:-1], i[1:]]), n, "combinatorial", dtype=F64)


def test_graph_diffusion_is_minus_gamma_l_x_for_every_state_shape():
    lap = _path()
    term = GraphDiffusion(lap, gamma=0.7)
    assert term.laplacian is lap
    t = torch.zeros((), dtype=F64)
    for shape in ((12,), (12, 3), (12, 2, 3)):
        x = torch.randn(*shape, dtype=F64)
        ref = -0.7 * (lap.to_dense() @ x.reshape(12, -1)).reshape(shape)
        torch.testing.assert_close(term(t, x), ref)
    for plain in (lap.to_dense(), lap.to_torch()):
        term.set_laplacian(plain)
        assert isinstance(term.laplacian, Laplacian)
        torch.testing.assert_close(term(t, torch.ones(12, 2, dtype=F64)), torch.zeros(12, 2, dtype=F64))


def test_learnable_gamma_is_softplus_and_gets_a_gradient():
    term = GraphDiffusion(_path(), gamma=0.5, learnable=True)
    torch.testing.assert_close(term.gamma, torch.tensor(0.5), rtol=1e-6, atol=1e-7)
    x = torch.randn(12, 2, dtype=F64)
    term(torch.zeros(()), x).pow(2).sum().backward()
    assert term.raw_gamma.grad is not None and term.raw_gamma.grad != 0


def test_solve_matches_the_matrix_exponential():
    lap = _path()
    x = torch.randn(12, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    sol = solve(Drift([GraphDiffusion(lap, gamma=0.8)]), x, SolverSpec(method="dopri5", rtol=1e-10, atol=1e-12))
    ref = torch.linalg.matrix_exp(-0.8 * lap.to_dense()) @ x
    torch.testing.assert_close(sol.y_final, ref, rtol=1e-7, atol=1e-8)


def test_errors():
    with pytest.raises(ConfigError, match="no Laplacian"):
        GraphDiffusion()(torch.zeros(()), torch.zeros(3, 1))
    with pytest.raises(ConfigError, match="gamma must be ≥ 0"):
        GraphDiffusion(gamma=-1.0)
    with pytest.raises(DataError, match="12 nodes but the state has 5 rows"):
        GraphDiffusion(_path())(torch.zeros(()), torch.zeros(5, 1, dtype=F64))
