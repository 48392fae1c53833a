"""ConvectionDiffusionNet with ``DiffusionSpec(integrator="exponential")``: the same network as with −γL in the
drift (equal logits at tight tolerances), gradients by backprop and by the exponential adjoint (a learnable γ
included), solver statistics, and the settings that cannot act refused."""

from __future__ import annotations

import pytest
import torch

from cdflow.errors import ConfigError
from cdflow.graph import Laplacian
from cdflow.models import ConvectionDiffusionNet
from cdflow.models.diffusion_spec import DiffusionSpec
from cdflow.solvers import SolverSpec

F64 = torch.float64
N, F = 14, 5


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, F, dtype=F64, generator=g)
    i = torch.arange(N)
    lap = Laplacian.from_edges(torch.stack([i, (i + 1) % N]), N, "sym", dtype=F64)
    return x, lap


def _net(integrator: str, solver: SolverSpec, learnable: bool = False, **diff) -> ConvectionDiffusionNet:
    torch.manual_seed(0)
    spec = DiffusionSpec(kind="graph", integrator=integrator, gamma=8.0, learnable=learnable, **diff)
    return ConvectionDiffusionNet(F, 3, hidden=4, width=8, depth=2, solver=solver, diffusion=spec).double()


def test_exponential_equals_drift_at_tight_tolerance() -> None:
    x, lap = _data()
    tight = SolverSpec(rtol=1e-7, atol=1e-9)
    with torch.no_grad():
        exp = _net("exponential", tight)
        drift = _net("drift", tight)
        torch.testing.assert_close(exp(x, lap), drift(x, lap), rtol=1e-5, atol=1e-6)
    assert exp.stats.nfe_forward > 0 and exp.stats.steps_accepted > 0
    assert exp.diffusion_stats.products > 0 and exp.diffusion_stats.substeps == exp.stats.steps_accepted


def test_gradients_with_learnable_gamma() -> None:
    """Backprop and the exponential adjoint give the same gradients (γ and the weights) to the tolerance."""
    x, lap = _data()
    grads = {}
    for mode in ("none", "backsolve"):
        net = _net("exponential", SolverSpec(rtol=1e-6, atol=1e-8, adjoint=mode, t1=0.5), learnable=True)
        net(x, lap).sum().backward()
        grads[mode] = {k: p.grad.clone() for k, p in net.named_parameters() if p.grad is not None}
        assert net.stats.nfe_backward > 0
        assert "raw_gamma" in grads[mode] and float(grads[mode]["raw_gamma"].abs()) > 0
    assert net.diffusion_stats.backward_products > 0 and net.stats.backward_steps > 0
    for k, g in grads["none"].items():
        torch.testing.assert_close(grads["backsolve"][k], g, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize(("diff", "solver", "match"), [
    ({"n_steps": 5}, {}, "n_steps"),
    ({"scheme": "lie"}, {}, "scheme"),
    ({"method": "chebyshev"}, {}, "method"),
    ({}, {"method": "bosh3"}, "solver.method"),
    ({}, {"adjoint": "backsolve", "adjoint_method": "dopri5"}, "adjoint_method"),
    ({}, {"adjoint": "checkpoint"}, "checkpoint"),
    ({}, {"adjoint": "checkpoint", "checkpoints": 2}, "checkpoint"),
])
def test_settings_that_cannot_act_are_refused(diff: dict, solver: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        _net("exponential", SolverSpec(**solver), **diff)


def test_exp_method_needs_the_exponential_integrator() -> None:
    with pytest.raises(ConfigError, match="exp_method"):
        DiffusionSpec(kind="graph", integrator="split", exp_method="exprk21")
    with pytest.raises(ConfigError, match="exp_method"):
        DiffusionSpec(kind="graph", integrator="exponential", exp_method="rk4")
    assert DiffusionSpec(kind="graph", integrator="exponential", exp_method="exprk21").exp_method == "exprk21"
