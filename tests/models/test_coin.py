"""COIN with a member axis: member k of a K-member model is a 1-member model with the same weights; the
F-wide network equals its plain-autograd formula; stopped members get no gradient; COIN's equation."""

import pytest
import torch
from model_graphs import bag_of_words, features, member_state, ring_with_chords, ring_with_hub

from cdflow import ConfigError
from cdflow.graph import Laplacian, laplacian_from_edges
from cdflow.models import COIN, GraphSpec
from cdflow.models.layers import member_generators, member_nll
from cdflow.sparse import SparseMatrix

F64 = torch.float64


@pytest.fixture
def graph():
    ei = ring_with_chords()
    x = bag_of_words().double()
    lap = laplacian_from_edges(ei, 40, kind="gcn", dtype=F64).to_dense()
    return x, ei, lap, torch.arange(40) % 3


@pytest.mark.parametrize("hidden", [None, 8])
@pytest.mark.parametrize("integrator", ["explicit", "split"])
def test_members_equal_single_member_models(graph, integrator, hidden):
    x, ei, _, y = graph
    k = 3
    model = COIN(30, 3, members=k, tau=0.3, n_steps=6, integrator=integrator, hidden=hidden, chunk=8).double()
    out = model(x, ei)
    assert out.shape == (40, k, 3)
    idx = torch.arange(0, 40, 2)
    member_nll(out, y, idx).sum().backward()
    for i in range(k):
        single = COIN(30, 3, tau=0.3, n_steps=6, integrator=integrator, hidden=hidden, chunk=8).double()
        single.load_state_dict(member_state(model, i))
        ref = single(x, ei)
        assert ref.shape == (40, 3)
        torch.testing.assert_close(out[:, i], ref, atol=1e-12, rtol=1e-10)
        torch.nn.functional.nll_loss(ref[idx], y[idx]).backward()
        for (name, p), q in zip(model.named_parameters(), single.parameters()):
            torch.testing.assert_close(p.grad[i], q.grad[0], atol=1e-12, rtol=1e-10, msg=name)


@pytest.mark.parametrize("integrator", ["explicit", "split"])
def test_f_wide_coin_equals_its_formula(graph, integrator):
    """u⁰ = softmax(W₂(x + ReLU(W₁x + b₁)) + b₂), u(T) = (I − τL)ⁿu⁰ or exp(−nτL)u⁰, by plain autograd."""
    x, ei, lap, y = graph
    model = COIN(30, 3, members=2, tau=0.3, n_steps=6, integrator=integrator, chunk=8).double()
    assert model.w1.shape[1:] == (4, 30, 8)  # four chunks of 8: two zero-padding columns
    idx = torch.arange(0, 40, 2)
    out = model(x, ei)
    member_nll(out, y, idx).sum().backward()
    prop = (torch.linalg.matrix_power(torch.eye(40, dtype=F64) - 0.3 * lap, 6) if integrator == "explicit"
            else torch.linalg.matrix_exp(-0.3 * 6 * lap))
    for i in range(2):
        w1, b1, w2, b2 = (t.detach().clone().requires_grad_() for t in model.member(i))
        u = torch.softmax((x + torch.relu(x @ w1.t() + b1)) @ w2.t() + b2, dim=-1)
        ref = torch.log((prop @ u).clamp_min(1e-8))
        torch.testing.assert_close(out[:, i], ref, atol=1e-10, rtol=1e-8)
        torch.nn.functional.nll_loss(ref[idx], y[idx]).backward()
        gw1 = model.w1.grad[i].transpose(0, 1).reshape(30, -1)[:, :30]
        torch.testing.assert_close(gw1, w1.grad.t(), atol=1e-10, rtol=1e-8)
        torch.testing.assert_close(model.b1.grad[i, :30], b1.grad, atol=1e-10, rtol=1e-8)
        torch.testing.assert_close(model.w2t.grad[i, :, :30], w2.grad, atol=1e-10, rtol=1e-8)
        torch.testing.assert_close(model.b2.grad[i], b2.grad, atol=1e-10, rtol=1e-8)
    # the zero padding of the hidden layer gets no gradient
    assert model.w1.grad[:, -1, :, 30 % 8 :].abs().max() == 0
    assert model.b1.grad[:, 30:].abs().max() == 0


def test_set_member_round_trip():
    model = COIN(30, 3, members=2, chunk=8)
    layers = [torch.nn.Linear(30, 30), torch.nn.Linear(30, 3)]
    model.set_member(1, layers[0].weight, layers[0].bias, layers[1].weight, layers[1].bias)
    for mine, theirs in zip(model.member(1), (layers[0].weight, layers[0].bias, layers[1].weight, layers[1].bias)):
        torch.testing.assert_close(mine, theirs)
    assert model.w1[1, -1, :, 30 % 8 :].abs().max() == 0 and model.b1[1, 30:].abs().max() == 0


def test_member_initialisation_depends_only_on_its_seed():
    a, b = COIN(30, 3, members=3, seed=5), COIN(30, 3, members=1, seed=7)
    for mine, theirs in zip(a.member(2), b.member(0)):
        torch.testing.assert_close(mine, theirs)
    c, d = COIN(30, 3, members=3, hidden=8), COIN(30, 3, members=2, hidden=8)
    c.reset_parameters(member_generators([5, 6, 7]))
    d.reset_parameters(member_generators([7, 5]))
    torch.testing.assert_close(c.fc1.weight[2], d.fc1.weight[0])
    torch.testing.assert_close(c.proj.bias[0], d.proj.bias[1])


def test_recompute_gives_the_same_gradients(graph):
    x, ei, _, y = graph
    grads = []
    for recompute in (False, True):
        m = COIN(30, 3, members=2, n_steps=3, chunk=7, recompute=recompute)
        member_nll(m(x.float(), ei), y, torch.arange(10)).sum().backward()
        grads.append([p.grad for p in m.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def test_stopped_members_get_no_gradient_and_leave_the_others_unchanged(graph):
    x, ei, _, y = graph
    m = COIN(30, 3, members=3, n_steps=3, chunk=7).double()
    idx = torch.arange(12)
    full = m(x, ei)
    member_nll(full, y, idx).sum().backward()
    ref = [p.grad.clone() for p in m.parameters()]
    m.zero_grad()
    m.active = [0, 2]
    part = m(x, ei)  # a trainer weights the stopped member's loss by 0
    (member_nll(part, y, idx) * torch.tensor([1.0, 0.0, 1.0], dtype=F64)).sum().backward()
    for k in (0, 2):
        torch.testing.assert_close(part[:, k], full[:, k])
        for g, r in zip((p.grad for p in m.parameters()), ref):
            torch.testing.assert_close(g[k], r[k])
    assert all(p.grad[1].abs().max() == 0 for p in m.parameters())
    # the wide hidden layer is not computed for a stopped member: zero gradient even from its own loss
    m.zero_grad()
    member_nll(m(x, ei), y, idx).sum().backward()
    assert m.w1.grad[1].abs().max() == 0 and m.b1.grad[1].abs().max() == 0
    assert m.w1.grad[0].abs().max() > 0 and m.w1.grad[2].abs().max() > 0


def test_chunks_pad_as_little_as_possible():
    m = COIN(1433, 7, chunk=128)
    assert tuple(m.w1.shape[1:]) == (12, 1433, 120)  # 12 chunks of 120: 7 padding columns, not 103


@pytest.mark.parametrize("hidden", [None, 8])
def test_sparse_and_dense_features_agree(graph, hidden):
    x, ei, _, _ = graph
    m = COIN(30, 3, members=2, hidden=hidden).double().eval()
    dense = m(x, ei)
    torch.testing.assert_close(m(SparseMatrix.from_tensor(x), ei), dense)
    torch.testing.assert_close(m(x.to_sparse(), ei), dense)
    assert m.last_u.shape == (40, 2, 3) and not m.last_u.requires_grad


def test_dropout_masks_differ_per_member_and_evaluation_has_none(graph):
    x, ei, _, _ = graph
    for kw in ({"hidden": 8, "dropout": 0.5}, {"diffusion_dropout": 0.5}):
        m = COIN(30, 3, members=2, **kw)
        with torch.no_grad():  # identical members
            for p in m.parameters():
                p[1] = p[0]
        torch.manual_seed(0)
        out = m.train()(x.float(), ei)
        assert not torch.allclose(out[:, 0], out[:, 1]), kw
        out = m.eval()(x.float(), ei)
        torch.testing.assert_close(out[:, 0], out[:, 1])
        plain = COIN(30, 3, members=2, hidden=kw.get("hidden")).eval()
        plain.load_state_dict(m.state_dict())
        torch.testing.assert_close(out, plain(x.float(), ei))


# --------------------------------------------------------------------------------------- the equation
def test_coin_conserves_class_mass_and_matches_its_equation():
    ei = ring_with_hub()
    x = features(31)
    torch.manual_seed(0)
    model = COIN(5, 3, tau=0.1, n_steps=5, integrator="explicit").eval()
    out = model(x, ei)
    # u(T) rows sum to one: L·1 = 0 keeps Σ_c u_c for every node
    torch.testing.assert_close(out.exp().sum(dim=1), torch.ones(31), atol=1e-5, rtol=0)
    lap = laplacian_from_edges(ei, 31, kind="gcn").to_dense()
    u = model.base(x)[:, 0]
    for _ in range(5):
        u = u - 0.1 * lap @ u
    torch.testing.assert_close(out, torch.log(u.clamp_min(1e-8)), atol=1e-5, rtol=1e-5)
    assert model.diffusion_stats.products == 5
    assert model.last_graph == Laplacian.from_edges(ei, 31, "gcn").describe()


def test_coin_split_is_exact_where_explicit_steps_break():
    ei = ring_with_hub()
    x = features(31)
    lam_max = float(torch.linalg.eigvalsh(laplacian_from_edges(ei, 31, kind="gcn").to_dense())[-1])
    tau = 1.5 * 2 / lam_max  # beyond the explicit stability bound
    torch.manual_seed(0)
    faithful = COIN(5, 3, tau=tau, n_steps=20, integrator="explicit").eval()
    stable = COIN(5, 3, tau=tau, n_steps=20, integrator="split").eval()
    stable.load_state_dict(faithful.state_dict())
    u_explicit = faithful.base(x)[:, 0]
    lap = laplacian_from_edges(ei, 31, kind="gcn").to_dense()
    for _ in range(20):
        u_explicit = u_explicit - tau * lap @ u_explicit
    assert (u_explicit < 0).any()  # the authors' steps give negative "probabilities"
    u_split = stable(x, ei).exp()
    exact = torch.linalg.matrix_exp(-tau * 20 * lap.double()) @ stable.base(x)[:, 0].double()
    torch.testing.assert_close(u_split.double(), exact, atol=1e-4, rtol=0)
    assert (u_split >= 0).all() and torch.isfinite(u_split).all()


def test_no_diffusion_is_the_base_classifier():
    x = features(31)
    m = COIN(5, 3, n_steps=0).eval()
    torch.testing.assert_close(m(x).exp(), m.base(x)[:, 0])  # no graph needed without diffusion


def test_bad_settings():
    with pytest.raises(ConfigError, match="members must be an int ≥ 1"):
        COIN(4, 2, members=0)
    with pytest.raises(ConfigError, match="give hidden=H"):
        COIN(4, 2, dropout=0.5)
    with pytest.raises(ConfigError, match="integrator must be 'explicit' or 'split'"):
        COIN(4, 2, integrator="rk4")
    with pytest.raises(ConfigError, match="method must be one of"):
        COIN(4, 2, integrator="split", method="explicit")
    with pytest.raises(ConfigError, match="tau ≥ 0"):
        COIN(4, 2, tau=-0.1)
    with pytest.raises(ConfigError, match="graph source 'edges' needs a batch with edges"):
        COIN(4, 2, graph=GraphSpec(source="edges"))(features(5, 4))
