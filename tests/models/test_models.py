"""COIN, Diff-ResNet and the general convection–diffusion network: equations, stability, integrators."""

import pytest
import torch

from cdflow import ConfigError, SolverSpec
from cdflow.graph import laplacian_from_edges
from cdflow.models import COIN, ConvectionDiffusionNet, DiffResNet, DiffusionSpec, GraphSpec


def ring_with_hub(n: int = 30, seed: int = 0) -> torch.Tensor:
    """A cycle plus a hub joined to every third node: a graph with a spread of degrees."""
    src = torch.arange(n)
    edges = [torch.stack([src, (src + 1) % n])]
    hub = torch.full((n // 3,), n)
    edges.append(torch.stack([hub, torch.arange(0, n, 3)]))
    return torch.cat(edges, dim=1)


def features(n: int, f: int = 5, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, f, generator=torch.Generator().manual_seed(seed))


def test_coin_conserves_class_mass_and_matches_its_equation():
    ei = ring_with_hub()
    x = features(31)
    torch.manual_seed(0)
    model = COIN(5, 3, tau=0.1, n_steps=5, integrator="explicit").eval()
    out = model(x, ei)
    # u(T) rows sum to one: L·1 = 0 keeps Σ_c u_c for every node
    torch.testing.assert_close(out.exp().sum(dim=1), torch.ones(31), atol=1e-5, rtol=0)
    lap = laplacian_from_edges(ei, 31, kind="gcn").to_dense()
    u = model.base(x)
    for _ in range(5):
        u = u - 0.1 * lap @ u
    torch.testing.assert_close(out, torch.log(u.clamp_min(1e-8)), atol=1e-5, rtol=1e-5)


def test_coin_split_is_exact_where_explicit_steps_break():
    ei = ring_with_hub()
    x = features(31)
    lam_max = float(torch.linalg.eigvalsh(laplacian_from_edges(ei, 31, kind="gcn").to_dense())[-1])
    tau = 1.5 * 2 / lam_max  # beyond the explicit stability bound
    torch.manual_seed(0)
    faithful = COIN(5, 3, tau=tau, n_steps=20, integrator="explicit").eval()
    stable = COIN(5, 3, tau=tau, n_steps=20, integrator="split").eval()
    stable.load_state_dict(faithful.state_dict())
    u_explicit = faithful.base(x)
    lap = laplacian_from_edges(ei, 31, kind="gcn").to_dense()
    for _ in range(20):
        u_explicit = u_explicit - tau * lap @ u_explicit
    assert (u_explicit < 0).any()  # the authors' steps give negative "probabilities"
    u_split = stable(x, ei).exp()
    exact = torch.linalg.matrix_exp(-tau * 20 * lap.double()) @ stable.base(x).double()
    torch.testing.assert_close(u_split.double(), exact, atol=1e-4, rtol=0)
    assert (u_split >= 0).all() and torch.isfinite(u_split).all()


def test_diffresnet_ablation_and_diffusion():
    ei = ring_with_hub()
    x = features(31)
    torch.manual_seed(0)
    with_diffusion = DiffResNet(5, 3, hidden=8, tau=0.2, n_steps=4).eval()
    without = DiffResNet(5, 3, hidden=8, tau=0.2, n_steps=0).eval()
    without.load_state_dict(with_diffusion.state_dict())
    a, b = with_diffusion(x, ei), without(x, ei)
    assert a.shape == b.shape == (31, 3)
    assert not torch.allclose(a, b)
    assert with_diffusion.diffusion_stats.products == 4
    # diffusion smooths the hidden features: the Dirichlet energy hᵀLh drops
    torch.testing.assert_close(a.exp().sum(1), torch.ones(31))


def _cdnet(kind, integrator="split", **kw):
    torch.manual_seed(0)
    spec = kw.pop("solver", SolverSpec(method="dopri5", rtol=1e-6, atol=1e-6))
    return ConvectionDiffusionNet(4, 3, hidden=6, width=8, solver=spec,
                                  diffusion=DiffusionSpec(kind=kind, integrator=integrator, **kw),
                                  graph=GraphSpec(source="knn", knn_k=5, knn_k_scale=3))


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
    x, y = features(24, 4), torch.arange(24) % 3
    model = _cdnet(kind, integrator, solver=solver, n_steps=4)
    loss = torch.nn.functional.nll_loss(model(x), y)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.velocity.parameters())
    assert model.stats.nfe_forward > 0 and model.stats.nfe_backward > 0


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
    with pytest.raises(ConfigError, match="graph source 'edges' needs a batch with an edge_index"):
        COIN(4, 2)(features(5, 4))
