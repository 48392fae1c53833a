"""cdflow.training.consistency: the consistency term against its formula, the sharpened target, the gradient
(the target held fixed), the spec's refusals; the S passes in `fit_node_members` and in the LightningModule."""

from __future__ import annotations

import pytest
import torch

from cdflow.errors import ConfigError
from cdflow.models import COIN, ConvectionDiffusionNet, DiffusionSpec
from cdflow.training import ContinuousDepthClassifier, MemberTraining, StoppingRule, fit_node_members
from cdflow.training.consistency import ConsistencySpec, consistency_loss, sharpen


def _passes(s: int = 3, n: int = 5, k: int = 2, c: int = 4, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(n, k, c, dtype=torch.float64, generator=gen) for _ in range(s)]


def test_loss_is_the_formula():
    """(1/N) Σ_n (1/S) Σ_s ‖p_s(n) − q(n)‖², q_c ∝ p̄_c^{1/τ}, written out with loops."""
    scores, tau = _passes(), 0.4
    got = consistency_loss(scores, tau)
    s, n, k = len(scores), scores[0].shape[0], scores[0].shape[1]
    want = torch.zeros(k, dtype=torch.float64)
    for member in range(k):
        for node in range(n):
            ps = [torch.softmax(sc[node, member], -1) for sc in scores]
            mean = sum(ps) / s
            q = mean ** (1 / tau) / (mean ** (1 / tau)).sum()
            want[member] += sum(((p - q) ** 2).sum() for p in ps) / s / n
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)


def test_temperature_one_gives_the_variance_of_the_passes():
    """τ = 1: q = p̄, so the term is the mean squared spread of the passes about their mean; zero for equal passes."""
    scores = _passes(s=4)
    probs = torch.stack([torch.softmax(sc, -1) for sc in scores])
    var = (probs - probs.mean(0)).pow(2).sum(-1).mean(0).mean(0)
    torch.testing.assert_close(consistency_loss(scores, 1.0), var, rtol=1e-12, atol=1e-14)
    same = [scores[0]] * 3
    assert consistency_loss(same, 1.0).abs().max() < 1e-15


def test_sharpen_limits():
    p = torch.softmax(torch.randn(6, 5, dtype=torch.float64), -1)
    torch.testing.assert_close(sharpen(p, 1.0), p)
    torch.testing.assert_close(sharpen(p, 1e-6), torch.nn.functional.one_hot(p.argmax(-1), 5).double())
    s = sharpen(p, 0.5)
    torch.testing.assert_close(s.sum(-1), torch.ones(6, dtype=torch.float64))
    assert (s.max(-1).values >= p.max(-1).values - 1e-15).all()  # sharper: the top class gains


def test_gradient_holds_the_target_fixed():
    """∂/∂p_s = 2(p_s − q)/(S·N) with q a constant, pulled back through the softmax: p ⊙ (g − ⟨p, g⟩)."""
    scores = [sc.requires_grad_() for sc in _passes(s=2, k=1)]
    tau = 0.5
    consistency_loss(scores, tau).sum().backward()
    probs = [torch.softmax(sc.detach(), -1) for sc in scores]
    q = sharpen((probs[0] + probs[1]) / 2, tau)
    n = scores[0].shape[0]
    for sc, p in zip(scores, probs):
        g = 2 * (p - q) / (2 * n)
        want = p * (g - (p * g).sum(-1, keepdim=True))
        torch.testing.assert_close(sc.grad, want, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("kwargs, match", [
    ({"weight": -1.0}, "weight"), ({"weight": float("nan")}, "weight"), ({"samples": 1}, "samples"),
    ({"samples": 2.5}, "samples"), ({"temperature": 0.0}, "temperature"), ({"temperature": 1.5}, "temperature"),
])
def test_spec_refuses_bad_values(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        ConsistencySpec(**kwargs)
    with pytest.raises(ConfigError, match=r"^--model\.consistency\.samples 3: .*act only with the term on"):
        ConsistencySpec(weight=0.0, samples=3)  # settings that would do nothing; only the one set is named
    with pytest.raises(ConfigError, match="at least 2"):
        consistency_loss(_passes(s=1), 0.5)


def _graph_problem(n: int = 60, f: int = 12, c: int = 3):
    gen = torch.Generator().manual_seed(0)
    y = torch.arange(n) % c
    x = torch.randn(n, f, generator=gen) + 1.5 * torch.nn.functional.one_hot(y, f).float()
    src = torch.arange(n)
    ei = torch.cat([torch.stack([src, (src + c) % n]), torch.stack([src, (src + 2 * c) % n])], 1)
    return x, ei, y


def _net(dropout: float) -> ConvectionDiffusionNet:
    torch.manual_seed(0)
    return ConvectionDiffusionNet(12, 3, hidden=16, width=8, dropout=dropout,
                                  diffusion=DiffusionSpec(kind="graph", integrator="split", gamma=1.0, n_steps=2))


def test_fit_takes_s_passes_per_step():
    x, ei, y = _graph_problem()
    train, val = torch.arange(0, 15), torch.arange(15, 30)
    calls = []

    def fit(spec: ConsistencySpec):
        net = _net(0.5)
        forward = net.forward
        net.forward = lambda *a, **k: calls.append(net.training) or forward(*a, **k)
        torch.manual_seed(1)
        training = MemberTraining(max_epochs=4, rule=StoppingRule(100), consistency=spec)
        fit_node_members(net, x, ei, y, train, val, training, deterministic=False)
        return torch.cat([p.detach().flatten() for p in net.parameters()])

    plain = fit(ConsistencySpec())
    assert calls.count(True) == 4  # one training pass per epoch
    calls.clear()
    on = fit(ConsistencySpec(weight=1.0, samples=3))
    assert calls.count(True) == 12 and calls.count(False) >= 4  # S = 3 training passes, one evaluation per epoch
    assert not torch.equal(on, plain)


def test_fit_refuses_a_deterministic_model():
    x, ei, y = _graph_problem()
    with pytest.raises(ConfigError, match="deterministic"):
        fit_node_members(COIN(12, 3, tau=0.2, n_steps=2), x, ei, y, torch.arange(10), torch.arange(10, 20),
                         MemberTraining(max_epochs=2, consistency=ConsistencySpec(weight=1.0)), deterministic=True)


def test_module_step_adds_the_term_and_refuses_a_network_without_dropout():
    with pytest.raises(ConfigError, match=r"neither.*--model\.model\.init_args\.<name>: dropout"):
        ContinuousDepthClassifier(3, (12,), model=_net(0.0), consistency={"weight": 1.0})
    with pytest.raises(ConfigError, match=r"neither.*--model\.dropout"):  # the default network: its own flag
        ContinuousDepthClassifier(3, (12,), consistency={"weight": 1.0})
    with pytest.raises(ConfigError, match="neither"):  # noise of scale 0 draws nothing
        ContinuousDepthClassifier(3, (12,), diffusion={"kind": "noise", "sigma": 0.0}, consistency={"weight": 1.0},
                                  solver={"method": "euler", "step_size": 0.25})
    x, ei, y = _graph_problem()
    mask = torch.zeros(60, dtype=torch.bool)
    mask[:15] = True
    batch = {"x": x, "y": y, "edge_index": ei, "train_mask": mask, "val_mask": ~mask, "test_mask": ~mask}
    weight = 2.0
    module = ContinuousDepthClassifier(3, (12,), model=_net(0.5), consistency={"weight": weight, "samples": 2})
    logged = {}
    module.log = lambda name, value, **kw: logged.__setitem__(name, value)
    torch.manual_seed(5)
    loss = module.training_step(batch, 0)
    torch.manual_seed(5)  # the same two dropout draws, by hand
    outs = [module(x, ei) for _ in range(2)]
    nll = sum(torch.nn.functional.cross_entropy(o[mask], y[mask]) for o in outs) / 2
    want = nll + weight * consistency_loss(outs, 0.5)
    torch.testing.assert_close(loss, want.reshape(loss.shape), rtol=1e-6, atol=1e-7)
    assert float(logged["train/consistency"]) > 0


def test_module_counts_the_work_of_every_pass():
    """train/laplacian_products, nfe_forward and nfe_backward of a consistency step are the S passes' sums."""
    x, ei, y = _graph_problem()
    mask = torch.zeros(60, dtype=torch.bool)
    mask[:15] = True
    batch = {"x": x, "y": y, "edge_index": ei, "train_mask": mask, "val_mask": ~mask, "test_mask": ~mask}
    logged = {}

    def step(samples: int | None):
        cons = {"weight": 1.0, "samples": samples} if samples else {}
        module = ContinuousDepthClassifier(3, (12,), model=_net(0.5), consistency=cons)
        module.log = lambda name, value, **kw: logged.__setitem__(name, value)
        module.training_step(batch, 0).backward()
        module.on_after_backward()
        return tuple(float(logged[f"train/{k}"]) for k in ("laplacian_products", "nfe_forward", "nfe_backward"))

    one = step(None)
    assert min(one) > 0
    assert step(3) == tuple(3 * v for v in one)


def test_a_stochastic_depth_block_is_noise_unless_its_noise_is_silent():
    """A `StochasticDepth` block draws a Brownian path per pass, whatever its noise module, unless that is a
    `NoiseDiffusion` of fixed σ = 0."""
    from torch import nn

    from cdflow import Convection, MLPVelocity, NoiseDiffusion, SolverSpec, StochasticDepth

    class OwnNoise(nn.Module):
        noise_type, sde_type = "diagonal", "ito"

        def forward(self, t, x):
            return 0.1 * torch.ones_like(x)

    def net(noise):
        block = StochasticDepth(Convection(MLPVelocity(12, width=8)), noise, SolverSpec(method="euler",
                                                                                         step_size=0.5))
        return nn.Sequential(block, nn.Linear(12, 3))

    for noise in (OwnNoise(), NoiseDiffusion("diagonal", sigma=0.2)):
        ContinuousDepthClassifier(3, (12,), model=net(noise), consistency={"weight": 1.0})
    with pytest.raises(ConfigError, match="neither"):
        ContinuousDepthClassifier(3, (12,), model=net(NoiseDiffusion("diagonal", sigma=0.0)),
                                  consistency={"weight": 1.0})
