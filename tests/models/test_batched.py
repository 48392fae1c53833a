"""Batched members equal separate models: same initial weights → same outputs and gradients."""

import pytest
import torch

from cdflow import SolverSpec
from cdflow.graph import laplacian_from_edges
from cdflow.models import COIN, DiffResNet
from cdflow.models.batched import (
    BatchedCDNet,
    BatchedCOIN,
    BatchedDiffResNet,
    BatchedLinear,
    SparseRows,
    dropout,
    keep_mask,
    member_generators,
    stacked_nll,
)


def ring_with_chords(n: int = 40) -> torch.Tensor:
    src = torch.arange(n)
    return torch.cat([torch.stack([src, (src + 1) % n]), torch.stack([src[::4], (src[::4] + 7) % n])], dim=1)


def bag_of_words(n: int = 40, f: int = 30, seed: int = 0) -> torch.Tensor:
    """Binary, row-normalised sparse features (about 15% non-zero, one empty row)."""
    gen = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, f, generator=gen) < 0.15).float()
    x[3] = 0.0
    return x / x.sum(1, keepdim=True).clamp_min(1.0)


@pytest.fixture
def graph():
    ei = ring_with_chords()
    x = bag_of_words()
    lap = laplacian_from_edges(ei, 40, kind="gcn", dtype=torch.float64)
    y = torch.arange(40) % 3
    return x, ei, lap, y


def test_sparse_rows_products_and_gradients():
    x = bag_of_words().double()
    rows = SparseRows.from_tensor(x)
    torch.testing.assert_close(rows.to_dense(), x)
    for width in (5, 300):
        w = torch.randn(30, width, dtype=torch.float64, requires_grad=True)
        g = torch.randn(40, width, dtype=torch.float64)
        (rows.mm(w) * g).sum().backward()
        torch.testing.assert_close(rows.mm(w.detach()), x @ w.detach())
        torch.testing.assert_close(w.grad, x.t() @ g)
    assert torch.autograd.gradcheck(lambda w: rows.mm(w), torch.randn(30, 4, dtype=torch.float64, requires_grad=True))


def test_sparse_dropout_is_independent_per_member_and_unbiased():
    x = bag_of_words()
    rows = SparseRows.from_tensor(x)
    torch.manual_seed(0)
    w = torch.randn(3, 30, 4, requires_grad=True)
    out = rows.mm_stacked_dropout(w, 0.5)
    assert out.shape == (40, 3, 4)
    assert not torch.allclose(out[:, 0], out[:, 1] @ torch.eye(4))  # different masks (weights differ too)
    # p → 0 limit is the plain product; eval mode ignores dropout
    torch.testing.assert_close(rows.mm_stacked_dropout(w, 0.5, training=False), torch.einsum("nf,kfh->nkh", x, w))
    # the same mask seen through autograd: gradient equals x_maskedᵀ g
    torch.manual_seed(1)
    same = torch.stack([w[0].detach()] * 2)
    same.requires_grad_(True)
    out = rows.mm_stacked_dropout(same, 0.3)
    out.sum().backward()
    assert torch.isfinite(same.grad).all()
    # unbiased: the Monte Carlo mean is within 5 standard errors of x W, element by element
    draws = torch.stack([rows.mm_stacked_dropout(w.detach(), 0.5) for _ in range(400)]).double()
    se = draws.std(0) / 400**0.5
    err = (draws.mean(0) - torch.einsum("nf,kfh->nkh", x, w.detach()).double()).abs()
    assert (err <= 5 * se + 1e-6).all(), f"max error/SE {(err / (se + 1e-12)).max():.1f}"


def test_batched_linear_matches_nn_linear():
    layer = BatchedLinear(3, 6, 4)
    refs = [torch.nn.Linear(6, 4) for _ in range(3)]
    for k, ref in enumerate(refs):
        layer.load_member(k, ref)
    h = torch.randn(10, 3, 6)
    out = layer(h)
    for k, ref in enumerate(refs):
        torch.testing.assert_close(out[:, k], ref(h[:, k]))


def test_member_initialisation_depends_only_on_its_seed():
    a = BatchedDiffResNet(3, 30, 3)
    b = BatchedDiffResNet(2, 30, 3)
    a.reset_parameters(member_generators([5, 6, 7]))
    b.reset_parameters(member_generators([7, 5]))
    torch.testing.assert_close(a.inp.weight[2], b.inp.weight[0])
    torch.testing.assert_close(a.out.bias[0], b.out.bias[1])


@pytest.mark.parametrize("integrator", ["explicit", "split"])
def test_batched_coin_equals_separate_coins(graph, integrator):
    x, ei, lap, y = graph
    k = 3
    torch.manual_seed(0)
    singles = [COIN(30, 3, tau=0.3, n_steps=6, integrator=integrator).double() for _ in range(k)]
    batched = BatchedCOIN(k, 30, 3, tau=0.3, n_steps=6, integrator=integrator, chunk=8).double()
    for i, m in enumerate(singles):
        batched.load_member(i, m)
    for i, m in enumerate(singles):  # round trip of the chunk-major storage
        for mine, theirs in zip(batched.member(i), (m.fc1.weight, m.fc1.bias, m.fc2.weight, m.fc2.bias)):
            torch.testing.assert_close(mine, theirs)
    xd = x.double()
    rows, lap_rows = SparseRows.from_tensor(xd), SparseRows.from_tensor(lap.double())
    out = batched(rows, lap_rows)
    idx = torch.arange(0, 40, 2)
    stacked_nll(out, y, idx).sum().backward()
    for i, m in enumerate(singles):
        ref = m(xd, ei)
        torch.testing.assert_close(out[:, i], ref, atol=1e-10, rtol=1e-8)
        torch.nn.functional.nll_loss(ref[idx], y[idx]).backward()
        g1, gb1, g2, gb2 = m.fc1.weight.grad, m.fc1.bias.grad, m.fc2.weight.grad, m.fc2.bias.grad
        chunk = batched.w1.shape[3]
        gw1 = batched.w1.grad[i].transpose(0, 1).reshape(30, -1)[:, :30]
        torch.testing.assert_close(gw1, g1.t(), atol=1e-10, rtol=1e-8)
        torch.testing.assert_close(batched.b1.grad[i, :30], gb1, atol=1e-10, rtol=1e-8)
        torch.testing.assert_close(batched.w2t.grad[i, :, :30], g2, atol=1e-10, rtol=1e-8)
        torch.testing.assert_close(batched.b2.grad[i], gb2, atol=1e-10, rtol=1e-8)
        assert chunk == 8
    # the zero padding of the hidden layer gets no gradient
    assert batched.w1.grad[:, -1, :, 30 % 8 :].abs().max() == 0
    assert batched.b1.grad[:, 30:].abs().max() == 0


def test_batched_coin_recompute_gives_the_same_gradients(graph):
    x, _, lap, y = graph
    rows, lap_rows = SparseRows.from_tensor(x), SparseRows.from_tensor(lap.float())
    grads = []
    for recompute in (False, True):
        m = BatchedCOIN(2, 30, 3, n_steps=3, chunk=7, recompute=recompute)
        stacked_nll(m(rows, lap_rows), y, torch.arange(10)).sum().backward()
        grads.append([p.grad for p in m.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("n_steps", [0, 5])
def test_batched_diffresnet_equals_separate_diffresnets(graph, n_steps):
    x, ei, lap, y = graph
    k = 3
    torch.manual_seed(0)
    singles = [DiffResNet(30, 3, hidden=8, tau=0.2, n_steps=n_steps, dropout=0.3).double().eval() for _ in range(k)]
    batched = BatchedDiffResNet(k, 30, 3, hidden=8, tau=0.2, n_steps=n_steps, dropout=0.3).double().eval()
    for i, m in enumerate(singles):
        batched.load_member(i, m)
    xd = x.double()
    out = batched(SparseRows.from_tensor(xd), SparseRows.from_tensor(lap.double()))
    idx = torch.arange(1, 40, 3)
    stacked_nll(out, y, idx).sum().backward()
    for i, m in enumerate(singles):
        ref = m(xd.to_sparse(), ei)
        torch.testing.assert_close(out[:, i], ref, atol=1e-10, rtol=1e-8)
        torch.nn.functional.nll_loss(ref[idx], y[idx]).backward()
        torch.testing.assert_close(batched.inp.weight.grad[i], m.inp.weight.grad.t(), atol=1e-10, rtol=1e-8)
        torch.testing.assert_close(batched.res.bias.grad[i], m.res.bias.grad, atol=1e-10, rtol=1e-8)


def test_batched_diffresnet_dropout_differs_per_member(graph):
    x, _, lap, _ = graph
    m = BatchedDiffResNet(2, 30, 3, hidden=8, n_steps=3, dropout=0.5)
    with torch.no_grad():  # identical members
        for p in m.parameters():
            p[1] = p[0]
    torch.manual_seed(0)
    out = m.train()(SparseRows.from_tensor(x), SparseRows.from_tensor(lap.float()))
    assert not torch.allclose(out[:, 0], out[:, 1])
    out = m.eval()(SparseRows.from_tensor(x), SparseRows.from_tensor(lap.float()))
    torch.testing.assert_close(out[:, 0], out[:, 1])


def test_batched_cdnet_members_are_independent(graph):
    x, _, lap, y = graph
    rows, lap_rows = SparseRows.from_tensor(x), SparseRows.from_tensor(lap.float())
    m = BatchedCDNet(3, 30, 3, hidden=8, width=8, gamma=1.0, dropout=0.0).eval()
    out = m(rows, lap_rows)
    assert out.shape == (40, 3, 3) and torch.isfinite(out).all()
    assert m.stats is not None and m.stats.nfe_forward > 0
    loss = stacked_nll(out, y, torch.arange(5))
    loss[1].backward()  # member 1's loss reaches member 1's weights; the shared adaptive steps leak ~1e-10
    g = m.inp.weight.grad
    assert g[1].abs().max() > 1e-4 and g[0].abs().max() < 1e-6 * g[1].abs().max()
    fixed = BatchedCDNet(3, 30, 3, hidden=8, width=8, gamma=1.0, dropout=0.0,
                         solver=SolverSpec(method="rk4", step_size=0.25)).eval()
    stacked_nll(fixed(rows, lap_rows), y, torch.arange(5))[1].backward()
    g = fixed.inp.weight.grad
    assert g[1].abs().max() > 0 and g[0].abs().max() == 0 and g[2].abs().max() == 0


@pytest.mark.parametrize("p", [0.25, 0.35, 0.8])
def test_keep_mask_rate_and_scale(p):
    torch.manual_seed(0)
    mask = keep_mask((300, 7, 11), p)
    assert mask.dtype == torch.bool and mask.shape == (300, 7, 11)
    rate = float(mask.float().mean())
    assert abs(rate - (1 - p)) < 4 * (p * (1 - p) / mask.numel()) ** 0.5
    h = torch.ones(5, 4)
    assert dropout(h, p, training=False) is h
    values = torch.unique(dropout(torch.ones(50, 50), p))
    torch.testing.assert_close(values, torch.tensor([0.0, 1.0 / (1.0 - p)]))



def test_batched_coin_inactive_members_cost_nothing_and_leave_the_others_unchanged(graph):
    x, _, lap, y = graph
    rows, lap_rows = SparseRows.from_tensor(x.double()), SparseRows.from_tensor(lap.double())
    m = BatchedCOIN(3, 30, 3, n_steps=3, chunk=7).double()
    idx = torch.arange(12)
    full = m(rows, lap_rows)
    stacked_nll(full, y, idx).sum().backward()
    ref = [p.grad.clone() for p in m.parameters()]
    m.zero_grad()
    m.active = [0, 2]
    part = m(rows, lap_rows)
    (stacked_nll(part, y, idx) * torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)).sum().backward()
    for k in (0, 2):
        torch.testing.assert_close(part[:, k], full[:, k])
        for g, r in zip((p.grad for p in m.parameters()), ref):
            torch.testing.assert_close(g[k], r[k])
    assert all(p.grad[1].abs().max() == 0 for p in m.parameters())


def test_batched_coin_chunks_pad_as_little_as_possible():
    m = BatchedCOIN(1, 1433, 7, chunk=128)
    assert tuple(m.w1.shape[1:]) == (12, 1433, 120)  # 12 chunks of 120: 7 padding columns, not 103
