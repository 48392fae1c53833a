"""Baselines: each member computes its textbook formula; members are independent."""

import pytest
import torch

from cdflow.models.baselines import APPNP, GCN, MLP, SGC, gcn_adjacency
from cdflow.models.layers import member_generators, member_nll
from cdflow.sparse import SparseMatrix


@pytest.fixture
def graph():
    n = 25
    src = torch.arange(n)
    ei = torch.cat([torch.stack([src, (src + 1) % n]), torch.stack([src[::3], (src[::3] + 5) % n])], dim=1)
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(n, 12, generator=gen) < 0.3).double()
    x = x / x.sum(1, keepdim=True).clamp_min(1.0)
    return x, ei


def dense_gcn_adjacency(ei: torch.Tensor, n: int) -> torch.Tensor:
    a = torch.zeros(n, n, dtype=torch.float64)
    a[ei[0], ei[1]] = 1.0
    a[ei[1], ei[0]] = 1.0
    a.fill_diagonal_(1.0)
    d = a.sum(1).pow(-0.5)
    return d[:, None] * a * d[None, :]


def member(layer, k):
    return layer.weight[k], layer.bias[k] if layer.bias is not None else 0.0


def test_gcn_adjacency_is_the_normalised_adjacency_with_self_loops(graph):
    x, ei = graph
    adj = gcn_adjacency(ei, 25, dtype=torch.float64).to_dense()
    torch.testing.assert_close(adj, dense_gcn_adjacency(ei, 25))
    with_loops = torch.cat([ei, torch.stack([torch.arange(25), torch.arange(25)])], dim=1)
    torch.testing.assert_close(gcn_adjacency(with_loops, 25, dtype=torch.float64).to_dense(), adj)


def setup(model_cls, graph, **kw):
    x, ei = graph
    model = model_cls(12, 3, k=3, **kw).double().eval()
    model.reset_parameters(member_generators([1, 2, 3]))
    rows = SparseMatrix.from_tensor(x)
    adj = SparseMatrix.from_tensor(gcn_adjacency(ei, 25, dtype=torch.float64))
    return model, model(rows, adj), x, dense_gcn_adjacency(ei, 25)


def test_mlp_formula(graph):
    model, out, x, _ = setup(MLP, graph, hidden=7)
    for k in range(3):
        w1, b1 = member(model.l1, k)
        w2, b2 = member(model.l2, k)
        torch.testing.assert_close(out[:, k], torch.log_softmax(torch.relu(x @ w1 + b1) @ w2 + b2, -1))


def test_gcn_formula(graph):
    model, out, x, a = setup(GCN, graph, hidden=7)
    for k in range(3):
        h = torch.relu(a @ x @ model.l1.weight[k] + model.b1[k])
        torch.testing.assert_close(out[:, k], torch.log_softmax(a @ h @ model.l2.weight[k] + model.b2[k], -1))


def test_appnp_formula_and_fixed_point(graph):
    model, out, x, a = setup(APPNP, graph, hidden=7, alpha=0.1, n_iter=10)
    for k in range(3):
        w1, b1 = member(model.mlp.l1, k)
        w2, b2 = member(model.mlp.l2, k)
        h = torch.relu(x @ w1 + b1) @ w2 + b2
        z = h
        for _ in range(10):
            z = 0.9 * a @ z + 0.1 * h
        torch.testing.assert_close(out[:, k], torch.log_softmax(z, -1))
    model.n_iter = 400  # the personalised-PageRank limit α (I − (1−α)Â)⁻¹ H
    rows = SparseMatrix.from_tensor(x)
    adj = SparseMatrix.from_tensor(a.to_sparse())
    z = model(rows, adj)[:, 0]
    w1, b1 = member(model.mlp.l1, 0)
    w2, b2 = member(model.mlp.l2, 0)
    h = torch.relu(x @ w1 + b1) @ w2 + b2
    limit = 0.1 * torch.linalg.solve(torch.eye(25, dtype=torch.float64) - 0.9 * a, h)
    torch.testing.assert_close(z, torch.log_softmax(limit, -1), atol=1e-8, rtol=1e-8)


def test_sgc_formula_and_cache(graph):
    model, out, x, a = setup(SGC, graph, hops=2)
    for k in range(3):
        w, b = member(model.lin, k)
        torch.testing.assert_close(out[:, k], torch.log_softmax(a @ a @ x @ w + b, -1))
    torch.testing.assert_close(model._cache[2].to_dense(), a @ a @ x)


@pytest.mark.parametrize("model_cls", [MLP, GCN, APPNP])
def test_dropout_members_train_independently(graph, model_cls):
    x, ei = graph
    model = model_cls(12, 3, k=2).train()
    rows = SparseMatrix.from_tensor(x.float())
    adj = SparseMatrix.from_tensor(gcn_adjacency(ei, 25))
    loss = member_nll(model(rows, adj), torch.arange(25) % 3, torch.arange(10))
    loss[0].backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert all(g[1].abs().max() == 0 for g in grads)
    assert any(g[0].abs().max() > 0 for g in grads)


def test_sgc_cache_follows_new_inputs(graph):
    """S = Â^K x is cached for the same objects only: new features or a new Â — even objects that reuse the
    address of freed ones, or equal-looking copies — are smoothed afresh."""
    x, ei = graph
    model = SGC(12, 3, hops=2).double().eval()
    adj = SparseMatrix.from_tensor(gcn_adjacency(ei, 25, dtype=torch.float64))
    first = model(SparseMatrix.from_tensor(x), adj)  # the features object is freed after the call
    for seed in range(1, 6):
        gen = torch.Generator().manual_seed(seed)
        x_new = (torch.rand(25, 12, generator=gen, dtype=torch.float64) < 0.3).double()
        out = model(SparseMatrix.from_tensor(x_new), adj)
        fresh = SGC(12, 3, hops=2).double().eval()
        fresh.load_state_dict(model.state_dict())
        torch.testing.assert_close(out, fresh(SparseMatrix.from_tensor(x_new), adj))
        assert not torch.allclose(out, first)
