"""cdflow.heat.explicit: x ← x − τLx (the authors' layers) against (I − τL)ⁿ; first order; instability
above 2/λ_max; dropout diffusion (masks-only backward) against a plain-autograd transcription."""

from __future__ import annotations

import pytest
import torch
from heat_cases import F64, exact, graph, rand_x, rel

from cdflow.errors import ConfigError
from cdflow.graph import Laplacian
from cdflow.heat import diffuse, explicit_diffusion
from cdflow.models.layers import keep_mask


def _power(lap: Laplacian, tau: float, n: int) -> torch.Tensor:
    return torch.linalg.matrix_power(torch.eye(lap.num_nodes, dtype=F64) - tau * lap.to_dense(), n)


@pytest.mark.parametrize("shape", [(30,), (30, 3), (30, 4, 3)])
def test_equals_matrix_power_for_every_state_shape(shape: tuple[int, ...]) -> None:
    lap = graph("path")
    x = torch.randn(*shape, dtype=F64, generator=torch.Generator().manual_seed(0))
    y, st = explicit_diffusion(x, lap, 0.2, n_steps=7)
    ref = (_power(lap, 0.2, 7) @ x.reshape(30, -1)).reshape(shape)
    assert y.shape == x.shape
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
    assert st.products == st.substeps == 7


@pytest.mark.parametrize("name", ["path", "cycle"])
def test_first_order(name: str) -> None:
    lap, x, t = graph(name), rand_x(), 1.0
    ref = exact(lap, x, t)
    errs = []
    for n_steps in (20, 40, 80):  # τ ≤ 0.05, well inside the explicit bound 2/λ_max ≥ 0.5
        y, st = diffuse(x, lap, 1.0, t, "explicit", n_steps=n_steps)
        assert st.substeps == n_steps
        errs.append(rel(y, ref))
    assert errs[0] < 0.05
    for coarse, fine in zip(errs, errs[1:]):
        assert 1.8 < coarse / fine < 2.2


def test_unstable_above_the_step_bound_stable_below() -> None:
    lap, x = graph("cycle", 20), rand_x(20, 2)
    lam_max = float(torch.linalg.eigvalsh(lap.to_dense()).max())
    above, _ = explicit_diffusion(x, lap, 1.05 * 2.0 / lam_max, n_steps=400)
    below, _ = explicit_diffusion(x, lap, 0.95 * 2.0 / lam_max, n_steps=400)
    assert not torch.isfinite(above).all() or above.norm() > 1e3 * x.norm()
    assert below.norm() <= x.norm() * (1 + 1e-12)


def test_learnable_tau_gradient() -> None:
    lap, x = graph("path", 8), rand_x(8, 2)
    tau = torch.tensor(0.3, dtype=F64, requires_grad=True)
    torch.autograd.gradcheck(lambda s: explicit_diffusion(x, lap, s, n_steps=3)[0], (tau,))


# ---------------------------------------------------------------------------------------- dropout
def _transcription(x: torch.Tensor, lap: Laplacian, tau: float, n: int, p: float, block: int) -> torch.Tensor:
    """n × [inverted dropout → h ← h − τLh] by plain autograd, masks drawn as the integrator draws them:
    block by block of columns, all steps of a block first."""
    ld = lap.to_dense()
    flat = x.reshape(x.shape[0], -1)
    blocks = []
    for hb in flat.split(block, dim=1):
        for _ in range(n):
            hb = hb * keep_mask(tuple(hb.shape), p) / (1 - p)
            hb = hb - tau * ld @ hb
        blocks.append(hb)
    return torch.cat(blocks, dim=1).reshape(x.shape)


def _rownorm_knn(n: int = 25) -> Laplacian:
    pts = torch.randn(n, 2, dtype=F64, generator=torch.Generator().manual_seed(11))
    return Laplacian.from_knn(pts, k=5, graph="rownorm", eps=1.0)


@pytest.mark.parametrize("lap_name", ["path", "rownorm-knn"])
@pytest.mark.parametrize(("shape", "block"), [((25, 10), 4), ((25, 3, 5), 128), ((25,), 128)])
def test_dropout_equals_autograd_transcription(lap_name: str, shape: tuple[int, ...], block: int) -> None:
    """Outputs and gradients with the same masks; the non-symmetric I − P checks the Lᵀ of the backward."""
    lap = graph("path", 25) if lap_name == "path" else _rownorm_knn()
    assert lap.symmetric == (lap_name == "path")
    weights = torch.randn(*shape, dtype=F64, generator=torch.Generator().manual_seed(1))
    outs, grads = [], []
    for ours in (True, False):
        x = torch.randn(*shape, dtype=F64, generator=torch.Generator().manual_seed(0)).requires_grad_()
        torch.manual_seed(5)
        if ours:
            y, st = explicit_diffusion(x, lap, 0.3, n_steps=4, dropout=0.35, block=block)
            assert st.products == 4
        else:
            y = _transcription(x, lap, 0.3, 4, 0.35, block)
        (y * weights).sum().backward()
        outs.append(y.detach())
        grads.append(x.grad)
    assert outs[0].shape == shape
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-12, atol=1e-12)


def test_dropout_is_unbiased() -> None:
    """E[x_n] = (I − τL)ⁿ x: 4,000 columns with independent masks, mean within 5 standard errors."""
    lap, m = graph("path", 12), 4000
    x = rand_x(12, 1)
    y, _ = explicit_diffusion(x.expand(12, m).contiguous(), lap, 0.2, n_steps=3, dropout=0.3)
    ref = (_power(lap, 0.2, 3) @ x)[:, 0]
    se = y.std(1) / m**0.5
    assert ((y.mean(1) - ref).abs() <= 5 * se).all()
    assert (y.std(1) > 0).all()


def test_dropout_does_not_write_into_its_input_and_zero_dropout_is_plain() -> None:
    lap, x = graph("path"), rand_x()
    before = x.clone()
    explicit_diffusion(x, lap, 0.2, n_steps=3, dropout=0.5)
    assert torch.equal(x, before)
    plain, _ = explicit_diffusion(x, lap, 0.2, n_steps=3)
    zero, _ = explicit_diffusion(x, lap, 0.2, n_steps=3, dropout=0.0)
    assert torch.equal(plain, zero)


def test_dropout_backward_twice_is_an_error_not_garbage() -> None:
    """The masks are freed by the first backward; a second one (retain_graph) must fail loudly."""
    lap = graph("path", 10)
    x = rand_x(10, 3).requires_grad_()
    y, _ = explicit_diffusion(x, lap, 0.1, n_steps=3, dropout=0.3)
    y.sum().backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="second time"):
        y.sum().backward()


def test_dropout_argument_checks() -> None:
    lap, x = graph("path", 5), rand_x(5, 2)
    with pytest.raises(ConfigError, match=r"dropout must be in \[0, 1\)"):
        explicit_diffusion(x, lap, 0.1, dropout=1.0)
    with pytest.raises(ConfigError, match="learnable τ"):
        explicit_diffusion(x, lap, torch.tensor(0.1, dtype=F64, requires_grad=True), dropout=0.2)
    w = torch.ones(4, dtype=F64, requires_grad=True)
    learnable = Laplacian.from_edges(torch.tensor([[0, 1, 2, 3], [1, 2, 3, 4]]), 5, "combinatorial",
                                     edge_weight=w, dtype=F64)
    with pytest.raises(ConfigError, match="learnable weights"):
        explicit_diffusion(x, learnable, 0.1, dropout=0.2)
    with pytest.raises(ConfigError, match="n_steps must be an int"):
        explicit_diffusion(x, lap, 0.1, n_steps=0)


def test_backward_products_are_counted_when_backward_runs() -> None:
    lap, x = graph("path"), rand_x().requires_grad_()
    y, stats = explicit_diffusion(x, lap, 0.1, 7)
    assert stats.products == 7 and stats.backward_products == 0
    y.sum().backward()
    assert stats.backward_products == 7
