"""Default networks of the classifier: shapes, the choices the CLI offers, and invalid combinations."""

from __future__ import annotations

import typing

import pytest
import torch

from cdflow.errors import ConfigError
from cdflow.solve import ContinuousDepth
from cdflow.solvers import SolverSpec
from cdflow.training.networks import ActivationName, build_classifier
from cdflow.training.stats import solve_stats
from cdflow.velocity import ACTIVATIONS

EULER = SolverSpec(method="euler", step_size=0.5)


def test_activation_choices_match_the_velocity_registry():
    assert set(typing.get_args(ActivationName)) == set(ACTIVATIONS)


@pytest.mark.parametrize(
    ("shape", "kwargs", "state"),
    [
        ((64,), {"encoder": "linear", "hidden": 12}, (12,)),
        ((64,), {"encoder": "mlp", "hidden": 12, "dropout": 0.3}, (12,)),
        ((2,), {"encoder": "none"}, (2,)),
        ((1, 8, 8), {"encoder": "linear", "hidden": 12}, (12,)),  # images flattened for an MLP velocity
        ((1, 28, 28), {"encoder": "conv", "velocity": "conv", "hidden": 8, "width": 8}, (8, 7, 7)),
        ((3, 8, 8), {"encoder": "none", "velocity": "conv", "width": 8}, (3, 8, 8)),
    ],
)
def test_shapes(shape, kwargs, state):
    net = build_classifier(shape, 5, EULER, **kwargs)
    x = torch.randn(4, *shape)
    assert net(x).shape == (4, 5)
    assert tuple(net.encoder(x).shape[1:]) == state
    assert isinstance(net.block, ContinuousDepth) and net.block.solver.method == "euler"


def test_stats_after_forward_and_backward():
    net = build_classifier((6,), 3, EULER, hidden=4, width=4)
    assert solve_stats(net) is None
    net(torch.randn(5, 6)).sum().backward()
    stats = solve_stats(net)
    assert stats is not None and (stats.nfe_forward, stats.nfe_backward, stats.steps) == (2, 2, 2)


@pytest.mark.parametrize(
    ("shape", "kwargs", "match"),
    [
        ((64,), {"velocity": "conv"}, "needs image inputs"),
        ((1, 8, 8), {"encoder": "conv"}, "needs velocity='conv'"),
        ((1, 8, 8), {"encoder": "linear", "velocity": "conv"}, "encoder='conv' or 'none'"),
        ((64,), {"dropout": 1.0}, "dropout"),
        ((64,), {"activation": "swish"}, "valid"),
    ],
)
def test_invalid_combinations(shape, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        build_classifier(shape, 5, EULER, **kwargs)


def test_one_class_is_rejected():
    with pytest.raises(ConfigError, match="num_classes"):
        build_classifier((4,), 1, EULER)


class _Reporter(torch.nn.Module):
    """A network that reports the summed stats of its own blocks (like ConvectionDiffusionNet)."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = build_classifier((3,), 2, EULER, hidden=3, width=3)

    @property
    def stats(self):
        return self.inner.block.stats

    def forward(self, x):
        return self.inner(x)


def test_stats_of_a_reporting_module_are_not_counted_twice():
    outer = torch.nn.Sequential(_Reporter())
    outer(torch.randn(2, 3))
    assert solve_stats(outer).nfe_forward == 2


def test_diffusion_products_are_summed():
    from cdflow.heat import DiffusionStats
    from cdflow.training.stats import diffusion_products

    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    assert diffusion_products(net) is None
    net[0].diffusion_stats = DiffusionStats(products=3, backward_products=1)
    net[1].diffusion_stats = DiffusionStats(products=4)
    assert diffusion_products(net) == (7, 1)
