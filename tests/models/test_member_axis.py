"""Member k of a K-member model trains bit for bit as the one-member model seeded k: every per-member
reduction (bias gradients, GEMMs, losses) rounds the same whatever K, so early stopping — which compares
validation scores strictly — makes the same decisions in `--model.members K` as in K separate runs."""

from __future__ import annotations

import pytest
import torch

from cdflow.graph import Laplacian
from cdflow.models import COIN, DiffResNet
from cdflow.models.layers import member_nll
from cdflow.sparse import SparseMatrix

N, F, C, K = 300, 120, 5, 5


@pytest.fixture(scope="module")
def problem():
    gen = torch.Generator().manual_seed(0)
    x = SparseMatrix.from_tensor((torch.rand(N, F, generator=gen) < 0.05).float())
    edges = torch.randint(0, N, (2, 1500), generator=gen)
    lap = Laplacian.from_edges(edges[:, edges[0] != edges[1]], N)
    y = torch.randint(0, C, (N,), generator=gen)
    return x, lap, y, torch.arange(0, N, 3)


@pytest.mark.parametrize("make", [
    lambda **kw: COIN(F, C, **kw),
    lambda **kw: COIN(F, C, hidden=16, **kw),
    lambda **kw: DiffResNet(F, C, dropout=0.0, **kw),
    lambda **kw: DiffResNet(F, C, hidden=16, dropout=0.0, **kw),
], ids=["coin", "coin-hidden", "diffresnet", "diffresnet-hidden"])
def test_member_k_is_bitwise_the_one_member_model(problem, make):
    x, lap, y, idx = problem
    for k in (0, 3):
        stack, alone = make(members=K), make(seed=k)
        out_stack, out_alone = stack(x, lap), alone(x, lap)
        assert torch.equal(out_stack[:, k], out_alone)
        member_nll(out_stack, y, idx).sum().backward()
        member_nll(out_alone[:, None], y, idx).sum().backward()
        for (name, ps), pa in zip(stack.named_parameters(), alone.parameters()):
            assert torch.equal(ps.grad[k], pa.grad[0]), name
