"""`ConvectionDiffusionNet.forward_members`: the members of a `Members` stack through one solve, equal to each
member alone (values, gradients, dropout draws), one Laplacian product per step for all, and refused where the
solve would couple the members."""

import copy

import pytest
import torch
from model_graphs import bag_of_words, ring_with_chords

from cdflow import SolverSpec
from cdflow.models import ConvectionDiffusionNet, DiffusionSpec, GraphSpec, Members
from cdflow.models.layers import member_nll
from cdflow.velocity import ConcatVelocity, MLPVelocity

SPLIT = DiffusionSpec(kind="graph", integrator="split", method="chebyshev", gamma=3.0, n_steps=2)
EXPLICIT = DiffusionSpec(kind="graph", integrator="explicit", gamma=1.0, n_steps=5)
EULER = SolverSpec(method="euler", step_size=0.25, t1=0.5)


def _members(diffusion: DiffusionSpec, solver: SolverSpec, k: int = 3, **kw) -> Members:
    def factory(i: int) -> ConvectionDiffusionNet:
        torch.manual_seed(10 + i)
        return ConvectionDiffusionNet(30, 3, hidden=8, width=8, solver=solver, diffusion=diffusion,
                                      graph=GraphSpec(source="edges"), dropout=0.3, hidden_dropout=0.2, **kw)

    return Members(factory, k).double()


@pytest.mark.parametrize(("diffusion", "kw"), [
    (SPLIT, {}), (EXPLICIT, {}), (SPLIT, {"propagate": "logits"}),
    (SPLIT, {"propagate": "probabilities", "convection_init": "zero"}),
])
def test_joint_solve_equals_each_member_alone(diffusion, kw):
    x, ei, y = bag_of_words().double(), ring_with_chords(), torch.arange(40) % 3
    joint = _members(diffusion, EULER, **kw).train()
    alone = copy.deepcopy(joint)
    assert ConvectionDiffusionNet.joint_refusal(list(joint.models)) is None
    torch.manual_seed(0)
    out = joint(x, ei)
    torch.manual_seed(0)  # the same dropout draws: member k encodes k-th in both
    ref = torch.stack([net(x, ei) for net in alone.models], dim=1)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    member_nll(out, y, torch.arange(12)).sum().backward()
    member_nll(ref, y, torch.arange(12)).sum().backward()
    for a, b in zip(joint.parameters(), alone.parameters()):
        assert a.grad is not None
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-12)


def test_joint_solve_counts_one_product_per_step_for_all_members():
    x, ei = bag_of_words().double(), ring_with_chords()
    joint = _members(EXPLICIT, EULER).eval()
    joint(x, ei)
    assert joint.diffusion_stats is not None and joint.diffusion_stats.products == EXPLICIT.n_steps
    assert joint.stats is not None and joint.stats.nfe_forward == EXPLICIT.n_steps  # one Euler step per split step
    assert all(net.stats is None and net.diffusion_stats is None for net in joint.models)


def test_stopped_members_get_no_gradient_in_the_joint_solve():
    x, ei, y = bag_of_words().double(), ring_with_chords(), torch.arange(40) % 3
    m = _members(SPLIT, EULER).eval()
    full = m(x, ei).detach()
    m.active = [0, 2]
    part = m(x, ei)
    torch.testing.assert_close(part, full)
    member_nll(part, y, torch.arange(10)).sum().backward()
    assert all(p.grad is None or p.grad.abs().max() == 0 for p in m.models[1].parameters())
    assert m.models[0].velocity.first.weight.grad.abs().max() > 0


@pytest.mark.parametrize(("diffusion", "solver", "why"), [
    (DiffusionSpec(kind="graph", integrator="split", method="krylov", gamma=1.0, n_steps=2), EULER, "Krylov"),
    (DiffusionSpec(kind="graph", integrator="split", method="implicit", gamma=1.0, n_steps=2), EULER, "CG"),
    (SPLIT, SolverSpec(method="dopri5", t1=0.5), "adaptive"),
    (DiffusionSpec(kind="graph", integrator="split", method="chebyshev", gamma=1.0, learnable=True), EULER,
     "learnable"),
    (DiffusionSpec(kind="graph", integrator="drift", gamma=1.0), EULER, "integrator='drift'"),
])
def test_coupling_solves_run_member_by_member(diffusion, solver, why):
    x, ei = bag_of_words().double(), ring_with_chords()
    m = _members(diffusion, solver, k=2).eval()
    assert why in ConvectionDiffusionNet.joint_refusal(list(m.models))
    out = m(x, ei)
    assert m.stats is None and all(net.stats is not None for net in m.models)
    for k, net in enumerate(m.models):
        torch.testing.assert_close(out[:, k], net(x, ei))


def test_concat_velocity_applies_each_field_to_its_columns():
    torch.manual_seed(0)
    f1, f2 = MLPVelocity(2, width=4), MLPVelocity(3, width=4)
    v = ConcatVelocity([f1, f2], [2, 3])
    x, t = torch.randn(6, 5), torch.tensor(0.3)
    torch.testing.assert_close(v(t, x), torch.cat([f1(t, x[:, :2]), f2(t, x[:, 2:])], dim=1))


def test_zero_init_convection_starts_as_pure_diffusion():
    x = bag_of_words()
    torch.manual_seed(0)
    net = ConvectionDiffusionNet(30, 3, hidden=8, width=8, solver=EULER, diffusion=SPLIT,
                                 graph=GraphSpec(source="edges"), convection_init="zero", propagate="logits").eval()
    z0 = net.encode(x)
    assert torch.count_nonzero(net.velocity(torch.tensor(0.0), z0)) == 0
    torch.manual_seed(0)
    default = ConvectionDiffusionNet(30, 3, hidden=8, width=8, solver=EULER, diffusion=SPLIT,
                                     graph=GraphSpec(source="edges"), propagate="logits")
    # the zeroed layer is drawn first and then cleared: every other weight is the default initialisation's
    torch.testing.assert_close(default.encoder.weight, net.encoder.weight)
    assert default.velocity.net[-1].weight.abs().max() > 0


@pytest.mark.parametrize("activation", ["relu", "tanh", "identity"])
@pytest.mark.parametrize("propagate", ["logits", "probabilities"])
def test_residual_encoder_kernel_equals_the_plain_path(monkeypatch, activation, propagate):
    """The F-wide residual encoder through `WideResidual` (chunked, masks inside) gives the plain path's z(0) and
    gradients, with the same dropout draws (x's non-zeros, then h)."""
    from cdflow.models import cdnet as cdnet_module
    from cdflow.sparse import SparseMatrix

    x = SparseMatrix.from_tensor(bag_of_words(f=300).double())  # 300 features: 3 chunks, 84 padded columns
    torch.manual_seed(3)
    net = ConvectionDiffusionNet(300, 3, hidden=300, width=8, encoder="residual", encoder_activation=activation,
                                 propagate=propagate, dropout=0.4, hidden_dropout=0.3, solver=EULER,
                                 diffusion=SPLIT, graph=GraphSpec(source="edges")).double()
    plain = copy.deepcopy(net)
    for training in (True, False):
        net.train(training), plain.train(training)
        torch.manual_seed(7)
        z = net.encode(x)
        monkeypatch.setattr(cdnet_module, "WIDE_ACTIVATIONS", ())
        torch.manual_seed(7)
        ref = plain.encode(x)
        monkeypatch.undo()
        torch.testing.assert_close(z, ref, rtol=1e-12, atol=1e-12)
        w = torch.randn_like(z)
        (z * w).sum().backward()
        (ref * w).sum().backward()
        for (name, a), b in zip(net.named_parameters(), plain.parameters()):
            if b.grad is None:
                assert a.grad is None or a.grad.abs().max() == 0, name
                continue
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-12, msg=name)
        net.zero_grad(), plain.zero_grad()


def test_joint_stats_count_the_backward_too():
    """The shared solve's counters are read after backward (merged then), as a single net's are."""
    x, ei, y = bag_of_words().double(), ring_with_chords(), torch.arange(40) % 3
    solo = _members(SPLIT, EULER, k=1).train()
    joint = _members(SPLIT, EULER).train()
    out = joint(x, ei)
    assert joint.joint_refusal is None and joint.stats.nfe_backward == 0
    member_nll(out, y, torch.arange(12)).sum().backward()
    single = solo.models[0]
    member_nll(single(x, ei)[:, None], y, torch.arange(12)).sum().backward()
    assert single.stats.nfe_backward > 0
    assert joint.stats.nfe_backward == single.stats.nfe_backward  # one shared backward per step, like one net
    assert joint.stats.nfe_forward == single.stats.nfe_forward


def test_refusal_names_the_reason_for_any_stack():
    assert ConvectionDiffusionNet.joint_refusal([]) == "no members"
    m = _members(DiffusionSpec(kind="none"), EULER, k=2)
    assert "kind='none'" in ConvectionDiffusionNet.joint_refusal(list(m.models))


def test_probabilities_stay_on_the_simplex():
    """propagate='probabilities': the replicator convection has Σ_i v_i = 0 and v_i = 0 where z_i = 0, and with the
    GCN-form Laplacian (zero row sums) the whole split solve keeps every node's z a probability vector."""
    from cdflow.velocity import SimplexVelocity

    torch.manual_seed(0)
    field = MLPVelocity(4, width=8)
    v = SimplexVelocity(field)
    z = torch.softmax(torch.randn(50, 4, dtype=torch.float64), -1)
    z[:5, 0] = 0.0
    z = z / z.sum(-1, keepdim=True)
    out = v(torch.tensor(0.0), z.float()).double()
    assert out.sum(-1).abs().max() < 1e-6 and out[:5, 0].abs().max() == 0
    x, ei = bag_of_words().double(), ring_with_chords()
    torch.manual_seed(1)
    net = ConvectionDiffusionNet(30, 3, hidden=8, width=8, solver=EULER, diffusion=SPLIT, propagate="probabilities",
                                 graph=GraphSpec(source="edges")).double().eval()
    with torch.no_grad():
        for p in net.velocity.parameters():  # a strong convection: an additive one leaves the simplex
            p.mul_(3.0)
        z0 = net.encode(x)
        zt = net._split(z0, net._laplacian(x, ei, z0))
    assert (zt - z0).abs().max() > 1e-2  # it moved
    # up to the Chebyshev expansion's error at λ = 0 (its tolerance): exp(−γsL)1 = 1 exactly
    torch.testing.assert_close(zt.sum(-1), torch.ones(40, dtype=torch.float64), rtol=0, atol=1e-9)
    assert zt.min() >= 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_training_step_runs_on_cuda():
    """The residual encoder's dropout draws (x's non-zeros, then h) and the split diffusion are made on the
    features' device: a training forward and backward on CUDA (the dropout masks were once drawn on the CPU)."""
    from cdflow.sparse import SparseMatrix

    dev = torch.device("cuda")
    x = SparseMatrix.from_tensor(bag_of_words(f=300)).to(dev)
    torch.manual_seed(3)
    net = ConvectionDiffusionNet(300, 3, hidden=300, width=8, encoder="residual", dropout=0.4, hidden_dropout=0.3,
                                 solver=EULER, diffusion=SPLIT, graph=GraphSpec(source="edges")).to(dev).train()
    out = net(x, graph=ring_with_chords().to(dev))
    out.sum().backward()
    assert out.device.type == "cuda" and torch.isfinite(out).all()
    assert all(p.grad is None or p.grad.device.type == "cuda" for p in net.parameters())
