"""cdflow.heat.krylov: exp(−tL)x by Lanczos against the eigendecomposition; substeps, reorthogonalisation,
the exp(T) backward, gradients and argument checks."""

from __future__ import annotations

import pytest
import torch
from heat_cases import F64, assert_grads_match_dense, edges, exact, graph, rand_x, rel

from cdflow.errors import ConfigError
from cdflow.graph import Laplacian
from cdflow.heat import diffuse, expm_action_krylov
from cdflow.heat.krylov import _SymExpm


@pytest.mark.parametrize("name", ["path", "cycle"])
@pytest.mark.parametrize("t", [0.3, 3.0, 40.0])
def test_matches_eigendecomposition(name: str, t: float) -> None:
    lap, x = graph(name), rand_x()
    y, st = expm_action_krylov(lap, x, t)
    assert rel(y, exact(lap, x, t)) <= 1e-8
    assert st.products == st.krylov_dim * st.substeps >= 1


def test_plain_matrices_are_accepted_and_give_the_same_result() -> None:
    lap, x = graph("path"), rand_x()
    y, _ = expm_action_krylov(lap, x, 2.0)
    for plain in (lap.to_torch(), lap.to_dense()):
        y2, _ = expm_action_krylov(plain, x, 2.0)
        torch.testing.assert_close(y2, y, rtol=1e-12, atol=1e-12)


def test_one_dimensional_state_and_zero_time() -> None:
    lap, x = graph("cycle"), rand_x(c=1)[:, 0]
    y, _ = expm_action_krylov(lap, x, 2.0)
    assert y.shape == (30,) and rel(y, exact(lap, x[:, None], 2.0)[:, 0]) < 1e-8
    y0, st = diffuse(x, lap, 0.0, 1.0, "krylov")
    assert torch.equal(y0, x) and st.products == 0


def test_substeps_when_m_max_small() -> None:
    lap, x = graph("path", 200), rand_x(200, 2)
    y, st = expm_action_krylov(lap, x, 50.0, m_max=12)
    assert st.substeps > 1 and st.krylov_dim <= 12
    assert rel(y, exact(lap, x, 50.0)) < 1e-8


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_reorth_modes(dtype: torch.dtype) -> None:
    # path + two hubs: isolated top eigenvalues (28, 42) converge fast, so Lanczos loses orthogonality
    n, i = 300, torch.arange(300)
    spec = ((0, 100, 40), (200, 230, 25))  # (hub, first leaf, leaves)
    hubs = [torch.stack([torch.full((m,), h), torch.arange(s, s + m)]) for h, s, m in spec]
    ei = torch.cat([torch.stack([i[:-1], i[1:]]), *hubs], 1)
    lap = Laplacian.from_edges(ei, n, "combinatorial", dtype=F64)
    x = rand_x(n, 3)
    ref = exact(lap, x, 30.0)
    tol = 1e-9 if dtype == torch.float64 else 1e-5
    counts = {}
    for mode in ("partial", "full", "none"):
        y, st = expm_action_krylov(lap.to(dtype), x.to(dtype), 30.0, reorth=mode, tol=tol)
        assert rel(y.double(), ref) < 50 * tol, mode
        counts[mode] = st.reorthogonalisations
    assert counts["none"] == 0 and 0 < counts["partial"] < counts["full"]


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


def test_gradients_match_dense_expm() -> None:
    lap, h = graph("path"), 0.9
    assert_grads_match_dense(lambda x, g: expm_action_krylov(lap, x, g * h, tol=1e-13)[0], lap, h)


def test_gradient_wrt_edge_weights() -> None:
    """A Laplacian with learnable (symmetric) edge weights: d/dweights against the dense matrix exponential."""
    ei, weights, x = edges("cycle", 10), rand_x(10, 2, seed=3), rand_x(10, 2)
    grads = []
    for dense in (False, True):
        w = torch.linspace(0.5, 2.0, 10, dtype=F64).requires_grad_()
        lap = Laplacian.from_edges(ei, 10, "combinatorial", edge_weight=w, dtype=F64)
        assert lap.requires_grad
        if dense:
            y = torch.linalg.matrix_exp(-0.7 * lap.to_dense()) @ x
        else:
            y, _ = expm_action_krylov(lap, x, 0.7, tol=1e-13)
        (y * weights).sum().backward()
        grads.append(w.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-8, atol=1e-10)


def test_gradcheck() -> None:
    lap = graph("path", 7)
    x = rand_x(7, 2).requires_grad_()
    t = torch.tensor(0.8, dtype=F64, requires_grad=True)
    torch.autograd.gradcheck(lambda z, s: expm_action_krylov(lap, z, s * 1.1, tol=1e-13)[0], (x, t))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"tol": 0.0}, "tol must be > 0"), ({"reorth": "some"}, "partial, full, none"), ({"m_max": 0}, "m_max")],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        expm_action_krylov(graph("path", 5), rand_x(5, 2), 1.0, **kwargs)
