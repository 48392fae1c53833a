"""The reference code's F-wide Diff-ResNet: outputs and gradients equal a plain-autograd transcription."""

from __future__ import annotations

import pytest
import torch
from test_batched import bag_of_words, ring_with_chords

from cdflow.graph import laplacian_from_edges
from cdflow.models import DiffResNet
from cdflow.models.batched import SparseRows, keep_mask, stacked_nll
from cdflow.models.wide_diffresnet import BatchedWideDiffResNet


def direct(model: BatchedWideDiffResNet, x: torch.Tensor, lap: torch.Tensor, k: int) -> torch.Tensor:
    """Member k by plain autograd: h = x + ReLU(W₁x + b₁); n × [dropout → h ← h − τLh]; W₂h + b₂."""
    h = x + torch.relu(x @ model.w1[k] + model.b1[k])
    blocks = list(h.split(model.block, dim=1))  # masks are drawn block by block, all steps of one block first
    for b, hb in enumerate(blocks):
        for _ in range(model.n_steps):
            if model.training and model.dropout > 0:
                hb = hb * keep_mask(tuple(hb.shape), model.dropout) / (1 - model.dropout)
            hb = hb - model.tau * lap @ hb
        blocks[b] = hb
    h = torch.cat(blocks, dim=1)
    return torch.log_softmax(h @ model.w2[k] + model.b2[k], dim=-1)


@pytest.fixture
def graph():
    ei = ring_with_chords()
    x = bag_of_words().double()
    lap = laplacian_from_edges(ei, 40, kind="gcn", dtype=torch.float64).to_dense()
    return x, lap, torch.arange(40) % 3


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("n_steps", [0, 4])
def test_wide_diffresnet_equals_direct_autograd(graph, train, n_steps):
    x, lap, y = graph
    model = BatchedWideDiffResNet(1, 30, 3, tau=0.3, n_steps=n_steps, dropout=0.4, block=8).double().train(train)
    idx = torch.arange(0, 40, 3)
    torch.manual_seed(3)
    out = model(SparseRows.from_tensor(x), SparseRows.from_tensor(lap))
    stacked_nll(out, y, idx).sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    torch.manual_seed(3)  # the same dropout masks, drawn in the same order
    ref = direct(model, x, lap, 0)
    torch.nn.functional.nll_loss(ref[idx], y[idx]).backward()
    torch.testing.assert_close(out[:, 0], ref, atol=1e-10, rtol=1e-9)
    for g, p in zip(grads, model.parameters()):
        torch.testing.assert_close(g, p.grad, atol=1e-10, rtol=1e-9)


def test_wide_diffresnet_members_are_independent(graph):
    x, lap, y = graph
    model = BatchedWideDiffResNet(3, 30, 3, tau=0.3, n_steps=3, dropout=0.3).double()
    out = model(SparseRows.from_tensor(x), SparseRows.from_tensor(lap))
    stacked_nll(out, y, torch.arange(10))[1].backward()
    assert model.w1.grad[1].abs().max() > 0
    assert model.w1.grad[0].abs().max() == 0 and model.w1.grad[2].abs().max() == 0


def test_wide_diffresnet_member_equals_unbatched_diffresnet_without_dropout(graph):
    """Evaluation (no dropout) applies (I − τL)ⁿ after the head; the unbatched F-wide DiffResNet before it."""
    x, lap, _ = graph
    ei = ring_with_chords()
    singles = [DiffResNet(30, 3, hidden=None, tau=0.3, n_steps=5, dropout=0.4).double().eval() for _ in range(2)]
    batched = BatchedWideDiffResNet(2, 30, 3, tau=0.3, n_steps=5, dropout=0.4).double().eval()
    for k, m in enumerate(singles):
        batched.load_member(k, m)
    out = batched(SparseRows.from_tensor(x), SparseRows.from_tensor(lap))
    for k, m in enumerate(singles):
        torch.testing.assert_close(out[:, k], m(x, ei), atol=1e-10, rtol=1e-9)
