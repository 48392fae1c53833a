"""cdflow.models.Members: K copies of a network without a member axis (here the convection–diffusion net)."""

import pytest
import torch
from model_graphs import bag_of_words, ring_with_chords

from cdflow import ConfigError, SolverSpec
from cdflow.models import ConvectionDiffusionNet, DiffusionSpec, GraphSpec, Members
from cdflow.models.layers import member_nll


def _cdnets(k: int = 3, solver: SolverSpec | None = None) -> Members:
    def factory(i: int) -> ConvectionDiffusionNet:
        torch.manual_seed(i)
        return ConvectionDiffusionNet(30, 3, hidden=8, width=8, solver=solver,
                                      diffusion=DiffusionSpec(kind="graph", integrator="drift", gamma=1.0),
                                      graph=GraphSpec(source="edges"))

    return Members(factory, k)


@pytest.mark.parametrize("solver", [None, SolverSpec(method="rk4", step_size=0.25)])
def test_cdnet_members_are_independent(solver):
    x, ei, y = bag_of_words(), ring_with_chords(), torch.arange(40) % 3
    m = _cdnets(solver=solver).eval()
    out = m(x, ei)
    assert out.shape == (40, 3, 3) and torch.isfinite(out).all()
    for k, net in enumerate(m.models):
        assert net.stats is not None and net.stats.nfe_forward > 0
        torch.testing.assert_close(out[:, k], net(x, ei))
    member_nll(out, y, torch.arange(5))[1].backward()
    grads = [net.encoder.weight.grad for net in m.models]
    assert grads[1].abs().max() > 1e-4
    assert all(g is None or g.abs().max() == 0 for g in (grads[0], grads[2]))


def test_stopped_members_cost_no_gradient():
    x, ei, y = bag_of_words(), ring_with_chords(), torch.arange(40) % 3
    m = _cdnets().eval()
    full = m(x, ei).detach()
    m.active = [0, 2]
    part = m(x, ei)
    torch.testing.assert_close(part, full)
    member_nll(part, y, torch.arange(10)).sum().backward()  # no loss weighting: the member is detached
    for p in m.models[1].parameters():
        assert p.grad is None or p.grad.abs().max() == 0
    assert m.models[0].encoder.weight.grad.abs().max() > 0 and m.models[2].encoder.weight.grad.abs().max() > 0


def test_bad_member_count():
    with pytest.raises(ConfigError, match="members must be an int ≥ 1"):
        Members(lambda k: torch.nn.Linear(2, 2), 0)
