"""The general convection–diffusion network: equations, integrators, inputs. (COIN and Diff-ResNet: test_coin.py,
test_diffresnet.py.)"""

import pytest
import torch
from model_graphs import features

from cdflow import ConfigError, SolverSpec
from cdflow.models import ConvectionDiffusionNet, DiffusionSpec, GraphSpec
from cdflow.sparse import SparseMatrix


def _cdnet(kind, integrator="split", **kw):
    torch.manual_seed(0)
    spec = kw.pop("solver", SolverSpec(method="dopri5", rtol=1e-6, atol=1e-6))
    graph = kw.pop("graph", GraphSpec(source="knn", knn_k=5, knn_k_scale=3))
    net_kw = {name: kw.pop(name) for name in ("encoder_activation", "hidden_dropout", "time_input") if name in kw}
    return ConvectionDiffusionNet(4, 3, hidden=6, width=8, solver=spec,
                                  diffusion=DiffusionSpec(kind=kind, integrator=integrator, **kw),
                                  graph=graph, **net_kw)


def test_cdnet_split_and_drift_solve_the_same_equation():
    x = features(40, 4)
    drift = _cdnet("graph", "drift", gamma=0.5).eval()
    split = _cdnet("graph", "split", gamma=0.5, n_steps=32, scheme="strang").eval()
    split.load_state_dict(drift.state_dict())
    a, b = drift(x), split(x)
    assert (a.exp() - b.exp()).abs().max() < 1e-3
    lie = _cdnet("graph", "split", gamma=0.5, n_steps=32, scheme="lie").eval()
    lie.load_state_dict(drift.state_dict())
    # Strang (2nd order) is closer to the drift solve than Lie (1st order) at the same step
    assert (a.exp() - b.exp()).abs().max() < (a.exp() - lie(x).exp()).abs().max()


@pytest.mark.parametrize(
    "kind, integrator, solver",
    [
        ("none", "split", SolverSpec()),
        ("graph", "drift", SolverSpec()),
        ("graph", "explicit", SolverSpec()),
        ("graph", "split", SolverSpec(adjoint="backsolve")),
        ("noise", "split", SolverSpec(method="euler", step_size=0.25)),
    ],
)
def test_cdnet_every_diffusion_kind_trains(kind, integrator, solver):
    """Gradients reach the velocity through every integrator (and the adjoint); a few Adam steps change the
    weights and lower the evaluation loss (fixed Feynman–Kac paths for the noise model); and the diffusion acts:
    the same weights with the diffusion off (γ = 0; the noise model: its noise-free ODE) give other outputs."""
    nll = torch.nn.functional.nll_loss
    x, y = features(24, 4), torch.arange(24) % 3
    model = _cdnet(kind, integrator, solver=solver, n_steps=4)

    def eval_loss() -> float:
        with torch.no_grad():
            return float(nll(model.eval()(x), y))

    before = eval_loss()
    start = {name: p.detach().clone() for name, p in model.named_parameters()}
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    for step in range(6):
        opt.zero_grad()
        loss = nll(model.train()(x), y)
        loss.backward()
        assert torch.isfinite(loss)
        if step == 0:
            assert all(p.grad is not None and p.grad.abs().max() > 0 for p in model.velocity.parameters())
            assert model.stats.nfe_forward > 0 and model.stats.nfe_backward > 0
        opt.step()
    after = eval_loss()
    assert after < before - 0.05, (before, after)
    for name, p in model.named_parameters():
        assert not torch.equal(p.detach(), start[name]), f"{name} did not change"
    if kind == "none":
        return
    if kind == "graph":
        off = _cdnet(kind, integrator, solver=solver, n_steps=4, gamma=0.0)
        off.load_state_dict(model.state_dict())
    else:
        off = _cdnet("none", solver=solver)
        off.load_state_dict(model.state_dict(), strict=False)  # without the noise's buffers
    with torch.no_grad():
        gap = (model.eval()(x).exp() - off.eval()(x).exp()).abs().max()
    assert gap > 1e-2, f"diffusion changes the class probabilities by {gap:.2e} only"


def test_noise_model_feynman_kac_evaluation():
    x = features(10, 4)
    model = _cdnet("noise", solver=SolverSpec(method="euler", step_size=0.25), n_samples=16, sigma=0.5).eval()
    logp = model(x)
    torch.testing.assert_close(logp.exp().sum(1), torch.ones(10), atol=1e-5, rtol=0)
    assert model.last_uncertainty.shape == (10, 3) and (model.last_uncertainty > 0).all()
    torch.testing.assert_close(model(x), logp)  # evaluation paths are fixed: deterministic
    mf = _cdnet("noise", solver=SolverSpec(method="euler", step_size=0.25), mean_field=True).eval()
    mf.load_state_dict(model.state_dict())
    ode = _cdnet("none", solver=SolverSpec(method="euler", step_size=0.25)).eval()
    ode.load_state_dict(model.state_dict(), strict=False)
    torch.testing.assert_close(mf(x), ode(x))


def test_bad_diffusion_settings():
    with pytest.raises(ConfigError, match="diffusion.kind='heat' is invalid; valid: none, noise, graph"):
        DiffusionSpec(kind="heat")
    with pytest.raises(ConfigError, match="valid: krylov, chebyshev, implicit, explicit"):
        DiffusionSpec(method="lanczos")
    for integrator in ("explicit", "drift"):  # the split's sub-step settings do nothing there: refused
        with pytest.raises(ConfigError, match=f"method='chebyshev' does not act on integrator='{integrator}'"):
            DiffusionSpec(kind="graph", integrator=integrator, method="chebyshev")
        with pytest.raises(ConfigError, match=f"scheme='lie' does not act on integrator='{integrator}'"):
            DiffusionSpec(kind="graph", integrator=integrator, scheme="lie")
    DiffusionSpec(kind="graph", integrator="split", method="chebyshev", scheme="lie")
    with pytest.raises(ConfigError, match="graph source 'edges' needs a batch with edges"):
        _cdnet("graph", graph=GraphSpec(source="edges"))(features(5, 4))
    with pytest.raises(ConfigError, match=r"hidden_dropout must be in \[0, 1\)"):
        ConvectionDiffusionNet(4, 3, hidden_dropout=1.0)
    with pytest.raises(ConfigError, match="unknown activation 'swish'"):
        ConvectionDiffusionNet(4, 3, encoder_activation="swish")


def test_sparse_features_equal_dense_features():
    x = features(24, 4)
    x[x.abs() < 0.7] = 0.0
    model = _cdnet("graph", "split", gamma=0.5, n_steps=4).eval()
    torch.testing.assert_close(model(SparseMatrix.from_tensor(x)), model(x))


def test_encoder_options():
    """encoder_activation, hidden_dropout (training only) and time_input change the network as documented."""
    x = features(24, 4)
    base = _cdnet("none").eval()
    relu = _cdnet("none", encoder_activation="relu").eval()
    relu.load_state_dict(base.state_dict())
    z = x @ base.encoder.weight.T + base.encoder.bias
    torch.testing.assert_close(base.encode(x), torch.tanh(z))
    torch.testing.assert_close(relu.encode(x), torch.relu(z))
    dropped = _cdnet("none", hidden_dropout=0.5)
    dropped.load_state_dict(base.state_dict())
    torch.manual_seed(0)
    h = dropped.train().encode(x)
    assert ((h == 0) | torch.isclose(h, 2 * torch.tanh(z))).all() and (h == 0).any()
    torch.testing.assert_close(dropped.eval()(x), base(x))
    no_t = _cdnet("none", time_input=False)
    assert no_t.velocity.first.in_features == base.velocity.first.in_features - 1


def _zero_velocity(model: ConvectionDiffusionNet) -> ConvectionDiffusionNet:
    with torch.no_grad():
        for p in model.velocity.parameters():
            p.zero_()
    return model


@pytest.mark.parametrize("integrator, method", [("split", "chebyshev"), ("split", "krylov"), ("drift", "krylov")])
def test_predict_then_propagate_commutes_with_the_head_without_convection(integrator, method):
    """With v ≡ 0 the solve is exp(−γTL), which commutes with the linear head (bias included, as L1 = 0 for the
    GCN-form L): propagate='logits' (head, then diffuse) gives propagate='features' (diffuse, then head). With a
    convection the two differ, and the logits model's velocity acts on the C class scores."""
    from model_graphs import ring_with_chords

    from cdflow.graph import Laplacian

    n, x = 24, features(24, 4)
    lap = Laplacian.from_edges(ring_with_chords(n), n, kind="gcn")
    solver = SolverSpec(method="dopri5", rtol=1e-7, atol=1e-7) if integrator == "drift" else \
        SolverSpec(method="euler", step_size=0.5)

    def net(propagate: str) -> ConvectionDiffusionNet:
        torch.manual_seed(0)
        return ConvectionDiffusionNet(4, 3, hidden=6, width=8, solver=solver, propagate=propagate,
                                      diffusion=DiffusionSpec(kind="graph", integrator=integrator, gamma=1.5,
                                                              n_steps=2, method=method)).eval()

    feats, logits = net("features"), net("logits")
    assert logits.velocity.first.in_features == 3 + 1 and feats.velocity.first.in_features == 6 + 1  # + time
    logits.encoder.load_state_dict(feats.encoder.state_dict())
    logits.head.load_state_dict(feats.head.state_dict())
    moving = (feats(x, lap).exp() - logits(x, lap).exp()).abs().max()
    assert moving > 1e-3  # different convections
    _zero_velocity(feats), _zero_velocity(logits)
    with torch.no_grad():
        a, b = feats(x, lap), logits(x, lap)
        h0 = feats.encode(x)
    torch.testing.assert_close(a, b, atol=2e-5, rtol=0)
    assert (a.exp() - torch.softmax(feats.head(h0), -1)).abs().max() > 1e-2  # and the diffusion acts


def test_head_dropout_acts_on_the_final_state_in_training_only():
    x = features(24, 4)
    base = _cdnet("none").eval()
    torch.manual_seed(0)
    dropped = ConvectionDiffusionNet(4, 3, hidden=6, width=8, solver=SolverSpec(method="dopri5", rtol=1e-6, atol=1e-6),
                                     head_dropout=0.5)
    dropped.load_state_dict(base.state_dict())
    z = torch.randn(24, 6)
    torch.testing.assert_close(dropped.eval().readout(z), base.readout(z))
    torch.testing.assert_close(dropped(x), base(x))
    torch.manual_seed(1)
    got = dropped.train().readout(z)
    torch.manual_seed(1)
    mask = torch.nn.functional.dropout(torch.ones_like(z), 0.5)
    torch.testing.assert_close(got, base.head(z * mask))
    assert not torch.allclose(got, base.head(z))


def test_bad_head_settings():
    with pytest.raises(ConfigError, match="propagate=.output. is invalid; valid: features, logits, probabilities"):
        ConvectionDiffusionNet(4, 3, propagate="output")
    with pytest.raises(ConfigError, match="with propagate='logits' the head comes first"):
        ConvectionDiffusionNet(4, 3, propagate="logits", head_dropout=0.5)
    with pytest.raises(ConfigError, match=r"head_dropout must be in \[0, 1\)"):
        ConvectionDiffusionNet(4, 3, head_dropout=-0.1)
    net = ConvectionDiffusionNet(4, 3, hidden=6, encoder_activation="identity", time_input=False).eval()
    x = features(5, 4)
    torch.testing.assert_close(net.encode(x), net.encoder(x))


def test_residual_encoder_is_x_plus_the_layer_for_dense_and_sparse_inputs():
    """encoder='residual': h = x + act(Wx + b) (F-wide), the same for dense and sparse features."""
    x = features(24, 4)
    x[x.abs() < 0.5] = 0.0
    torch.manual_seed(0)
    net = ConvectionDiffusionNet(4, 3, hidden=4, width=8, encoder="residual", encoder_activation="relu").eval()
    want = x + torch.relu(x @ net.encoder.weight.T + net.encoder.bias)
    torch.testing.assert_close(net.encode(x), want)
    torch.testing.assert_close(net.encode(SparseMatrix.from_tensor(x)), want)


def test_propagate_probabilities_without_convection_is_coin_split_diffusion():
    """propagate='probabilities' with v ≡ 0 and exact diffusion: log(exp(−γTL) softmax(head(h))), COIN's split
    integrator (the probabilities stay normalised since L1 = 0); with the convection the result differs."""
    from model_graphs import ring_with_chords

    from cdflow.graph import Laplacian

    n, x = 24, features(24, 4).double()
    lap = Laplacian.from_edges(ring_with_chords(n), n, kind="gcn", dtype=torch.float64)
    torch.manual_seed(0)
    net = ConvectionDiffusionNet(4, 3, hidden=6, width=8, propagate="probabilities",
                                 solver=SolverSpec(method="euler", step_size=0.5),
                                 diffusion=DiffusionSpec(kind="graph", integrator="split", gamma=1.5, n_steps=2,
                                                         method="krylov")).double().eval()
    with torch.no_grad():
        u0 = torch.softmax(net.head(net.encoder_activation(net.encoder(x))), -1)
        moving = net(x, lap)
        _zero_velocity(net)
        got = net(x, lap)
    want = torch.log(torch.linalg.matrix_exp(-1.5 * lap.to_dense()) @ u0)
    torch.testing.assert_close(got, want, atol=1e-7, rtol=0)
    torch.testing.assert_close(got.exp().sum(-1), torch.ones(n, dtype=torch.float64))
    assert (moving - got).abs().max() > 1e-3


def test_bad_encoder_settings():
    with pytest.raises(ConfigError, match="encoder='wide' is invalid; valid: mlp, residual"):
        ConvectionDiffusionNet(4, 3, encoder="wide")
    with pytest.raises(ConfigError, match=r"hidden must equal in_features \(4\), got hidden=64"):
        ConvectionDiffusionNet(4, 3, encoder="residual")
    with pytest.raises(ConfigError, match="with propagate='probabilities' the head comes first"):
        ConvectionDiffusionNet(4, 3, propagate="probabilities", head_dropout=0.5)


@pytest.mark.parametrize("name", ["hidden", "width", "depth", "in_features"])
@pytest.mark.parametrize("value", [0, -5])
def test_bad_sizes_refused(name, value):
    kw = {"in_features": 4, "num_classes": 3, name: value}
    with pytest.raises(ConfigError, match=f"{name} must be an int ≥ 1, got {value}"):
        ConvectionDiffusionNet(**kw)
