"""Diff-ResNet with a member axis: the F-wide network with dropout equals a plain-autograd transcription
(outputs and gradients, same masks); member k of a K-member model is a 1-member model with the same weights."""

from __future__ import annotations

import pytest
import torch
from model_graphs import bag_of_words, features, member_state, ring_with_chords, ring_with_hub

from cdflow import ConfigError
from cdflow.graph import laplacian_from_edges
from cdflow.models import DiffResNet
from cdflow.models.layers import keep_mask, member_generators, member_nll

F64 = torch.float64


@pytest.fixture
def graph():
    ei = ring_with_chords()
    lap = laplacian_from_edges(ei, 40, kind="gcn", dtype=F64).to_dense()
    return ei, lap, torch.arange(40) % 3


def direct(model: DiffResNet, x: torch.Tensor, lap: torch.Tensor, block: int = 128) -> torch.Tensor:
    """The F-wide network by plain autograd: h_k = x + ReLU(x W₁_k + b₁_k); n × [dropout → h ← h − τLh] on the
    member stack [N, K·F], masks drawn block by block of columns (all steps of a block first), as the
    integrator draws them; log_softmax(h_k W₂_k + b₂_k)."""
    k, n = model.members, x.shape[0]
    h = torch.stack([x + torch.relu(x @ model.w1[m] + model.b1[m]) for m in range(k)], dim=1)
    if model.n_steps > 0 and model.tau > 0:
        blocks = []
        for hb in h.reshape(n, -1).split(block, dim=1):
            for _ in range(model.n_steps):
                if model.training and model.dropout > 0:
                    hb = hb * keep_mask(tuple(hb.shape), model.dropout) / (1 - model.dropout)
                hb = hb - model.tau * lap @ hb
            blocks.append(hb)
        h = torch.cat(blocks, dim=1).view(n, k, -1)
    logits = torch.stack([h[:, m] @ model.w2[m] + model.b2[m] for m in range(k)], dim=1)
    out = torch.log_softmax(logits, dim=-1)
    return out[:, 0] if k == 1 else out


@pytest.mark.parametrize("members", [1, 3])
@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("n_steps", [0, 4])
def test_f_wide_diffresnet_equals_direct_autograd(graph, members, train, n_steps):
    """F = 50: with three members the stack has 150 columns, two dropout blocks."""
    ei, lap, y = graph
    x = bag_of_words(40, 50).double()
    model = DiffResNet(50, 3, members=members, tau=0.3, n_steps=n_steps, dropout=0.4).double().train(train)
    idx = torch.arange(0, 40, 3)
    torch.manual_seed(3)
    out = model(x, ei)
    losses = member_nll(out if members > 1 else out[:, None], y, idx)
    (losses * torch.arange(1.0, members + 1, dtype=F64)).sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    torch.manual_seed(3)  # the same dropout masks, drawn in the same order
    ref = direct(model, x, lap)
    ref_losses = member_nll(ref if members > 1 else ref[:, None], y, idx)
    (ref_losses * torch.arange(1.0, members + 1, dtype=F64)).sum().backward()
    torch.testing.assert_close(out, ref, atol=1e-10, rtol=1e-9)
    for g, p in zip(grads, model.parameters()):
        torch.testing.assert_close(g, p.grad, atol=1e-10, rtol=1e-9)
    if n_steps:
        assert model.diffusion_stats.products == n_steps


@pytest.mark.parametrize("hidden", [None, 8])
@pytest.mark.parametrize(("integrator", "n_steps"), [("explicit", 5), ("split", 5), ("explicit", 0)])
def test_members_equal_single_member_models(graph, hidden, integrator, n_steps):
    ei, _, y = graph
    x = bag_of_words().double()
    k = 3
    model = DiffResNet(30, 3, members=k, hidden=hidden, tau=0.2, n_steps=n_steps, integrator=integrator,
                       dropout=0.3).double().eval()
    out = model(x.to_sparse(), ei)
    idx = torch.arange(1, 40, 3)
    member_nll(out, y, idx).sum().backward()
    for i in range(k):
        single = DiffResNet(30, 3, hidden=hidden, tau=0.2, n_steps=n_steps, integrator=integrator,
                            dropout=0.3).double().eval()
        single.load_state_dict(member_state(model, i))
        ref = single(x, ei)
        torch.testing.assert_close(out[:, i], ref, atol=1e-10, rtol=1e-8)
        torch.nn.functional.nll_loss(ref[idx], y[idx]).backward()
        for (name, p), q in zip(model.named_parameters(), single.parameters()):
            torch.testing.assert_close(p.grad[i], q.grad[0], atol=1e-10, rtol=1e-8, msg=name)


@pytest.mark.parametrize("hidden", [None, 8])
def test_diffusing_after_the_head_equals_diffusing_the_features(graph, hidden):
    """Without dropout, evaluation applies (I − τL)ⁿ to the C head columns; training (p = 0) to the features."""
    ei, _, _ = graph
    x = bag_of_words().double()
    m = DiffResNet(30, 3, members=2, hidden=hidden, tau=0.2, n_steps=5, dropout=0.0).double()
    torch.testing.assert_close(m.train()(x, ei), m.eval()(x, ei), atol=1e-12, rtol=1e-10)


def test_dropout_differs_per_member(graph):
    ei, _, _ = graph
    x = bag_of_words()
    for hidden in (None, 8):
        m = DiffResNet(30, 3, members=2, hidden=hidden, n_steps=3, dropout=0.5)
        with torch.no_grad():  # identical members
            for p in m.parameters():
                p[1] = p[0]
        torch.manual_seed(0)
        out = m.train()(x, ei)
        assert not torch.allclose(out[:, 0], out[:, 1])
        out = m.eval()(x, ei)
        torch.testing.assert_close(out[:, 0], out[:, 1])


def test_members_are_independent_under_dropout(graph):
    ei, _, y = graph
    x = bag_of_words().double()
    for hidden, name in ((None, "w1"), (8, "inp.weight")):
        model = DiffResNet(30, 3, members=3, hidden=hidden, tau=0.3, n_steps=3, dropout=0.3,
                           input_dropout=0.2 if hidden else 0.0).double()
        member_nll(model(x, ei), y, torch.arange(10))[1].backward()
        g = model.get_parameter(name).grad
        assert g[1].abs().max() > 0
        assert g[0].abs().max() == 0 and g[2].abs().max() == 0


def test_member_initialisation_depends_only_on_its_seed():
    a, b = DiffResNet(30, 3, members=3, hidden=8), DiffResNet(30, 3, members=2, hidden=8)
    a.reset_parameters(member_generators([5, 6, 7]))
    b.reset_parameters(member_generators([7, 5]))
    torch.testing.assert_close(a.inp.weight[2], b.inp.weight[0])
    torch.testing.assert_close(a.out.bias[0], b.out.bias[1])
    c, d = DiffResNet(30, 3, members=3, seed=4), DiffResNet(30, 3, seed=6)
    for name in ("w1", "b1", "w2", "b2"):
        torch.testing.assert_close(getattr(c, name)[2], getattr(d, name)[0])


def _dirichlet_energy(s: torch.Tensor, lap: torch.Tensor) -> float:
    """tr(Sᵀ L S) = ½ Σ_ij w_ij ‖s_i − s_j‖² for L = diag(W·1) − W: how much S varies along the edges."""
    return float(torch.trace(s.T @ lap @ s))


def test_diffresnet_ablation_and_diffusion():
    """n = 0 is the ResNet ablation; with n > 0 (evaluation, no dropout) the class scores are (I − τL)ⁿ times
    the ablation's: diffusion smooths them, and their Dirichlet energy tr(Sᵀ L S) drops."""
    ei = ring_with_hub()
    x = features(31).double()
    lap = laplacian_from_edges(ei, 31, kind="gcn", dtype=F64).to_dense()
    torch.manual_seed(0)
    with_diffusion = DiffResNet(5, 3, hidden=8, tau=0.2, n_steps=4).double().eval()
    without = DiffResNet(5, 3, hidden=8, tau=0.2, n_steps=0).double().eval()
    without.load_state_dict(with_diffusion.state_dict())
    with torch.no_grad():
        a, b = with_diffusion(x, ei), without(x, ei)
    assert a.shape == b.shape == (31, 3)
    assert with_diffusion.diffusion_stats.products == 4
    assert with_diffusion.last_graph.startswith("edges graph, gcn Laplacian, 31 nodes")
    # log-softmax subtracts one constant per node: centring over the classes recovers the scores S J (J the
    # centring matrix), and L·1 = 0 keeps the head's bias row out of the diffusion
    sa, sb = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    propagator = torch.linalg.matrix_power(torch.eye(31, dtype=F64) - 0.2 * lap, 4)
    torch.testing.assert_close(sa, propagator @ sb, atol=1e-12, rtol=1e-10)
    smooth, rough = _dirichlet_energy(sa, lap), _dirichlet_energy(sb, lap)
    assert rough > 0 and smooth < 0.5 * rough, (smooth, rough)


def test_bad_settings():
    with pytest.raises(ConfigError, match="input_dropout needs hidden=H"):
        DiffResNet(4, 2, input_dropout=0.1)
    with pytest.raises(ConfigError, match=r"dropout must be in \[0, 1\)"):
        DiffResNet(4, 2, dropout=1.0)
    with pytest.raises(ConfigError, match="members must be an int ≥ 1"):
        DiffResNet(4, 2, members=0)
    with pytest.raises(ConfigError, match="method must be one of"):
        DiffResNet(4, 2, method="euler")
