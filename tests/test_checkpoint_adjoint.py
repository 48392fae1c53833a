"""The checkpointed adjoint against mathematics: it is the gradient of the discretised solve (backprop's, to
roundoff, for every one-step method, every number of checkpoints, with and without intermediate outputs), exact
where backsolve's reverse solve is not, and its backward holds one segment's graph and at most K states."""

import math

import pytest
import torch
from torch import nn

from cdflow import ContinuousDepth, Convection, MLPVelocity, SolverSpec
from cdflow.solvers import ode_methods

ONE_STEP = sorted(m for m, info in ode_methods().items() if info.one_step)
TS = torch.tensor([0.0, 0.45, 1.3, 2.0], dtype=torch.float64)  # 0.45 and 1.3 are off the fixed grids below


def _spec(method: str, **kw) -> SolverSpec:
    if not ode_methods()[method].adaptive:
        kw.setdefault("step_size", 0.07)  # 2.0 / 0.07 is not whole: the last step is shorter
    return SolverSpec(method=method, t1=2.0, **kw)


def _run(spec: SolverSpec, v: nn.Module, x: torch.Tensor, ts=None):
    """Outputs, the gradient of a nonlinear loss of them w.r.t. (x0, θ) flattened, and the solve's stats."""
    x = x.clone().requires_grad_(True)
    block = ContinuousDepth([Convection(v)], spec)
    out = block(x, ts)
    loss = (out ** 2).sum() + out.sin().sum()
    grads = torch.autograd.grad(loss, [x, *v.parameters()])
    return out.detach(), torch.cat([g.flatten() for g in grads]), block.stats


def _mlp(dim=3, seed=0):
    torch.manual_seed(seed)
    v = MLPVelocity(dim, width=8, depth=2, activation="tanh").double()  # time-dependent: v(t, x)
    return v, torch.randn(5, dim, dtype=torch.float64)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize(("checkpoints", "ts"), [(1, None), (3, None), (None, None), (10_000, None), (3, TS),
                                                  (10_000, TS)],
                         ids=["K=1", "K=3", "K=sqrtN", "K>N", "K=3-trajectory", "K>N-trajectory"])
@pytest.mark.parametrize("method", ONE_STEP)
def test_gradient_equals_backprop(method, checkpoints, ts):
    """Replaying the recorded steps recomputes the forward's stages bit for bit, so the gradient is backprop's up
    to the order of floating-point sums (measured ≤ 5e-16 relative): K = 1 (one segment), K = 3, √N, K ≫ N (a
    segment per step), for x(T) and for outputs inside steps (interpolated). Adaptive methods choose their first
    step from x0 here (torchdiffeq's heuristic), a dependence backprop differentiates and so does the replay."""
    v, x = _mlp()
    out0, g0, _ = _run(_spec(method), v, x, ts)
    out1, g1, stats = _run(_spec(method, adjoint="checkpoint", checkpoints=checkpoints), v, x, ts)
    assert torch.equal(out1, out0)  # the forward is torchdiffeq's own solve
    assert _rel(g1, g0) <= 1e-12, _rel(g1, g0)
    assert stats.backward_steps >= 1


@pytest.mark.parametrize("method", ["dopri5", "rk4"])
def test_gradient_equals_backprop_float32_and_params_only(method):
    """float32 state (time in float64 inside torchdiffeq); x0 without gradient: the parameters' still match."""
    v, x = _mlp(seed=1)
    v = v.float()
    x = x.float()
    grads = []
    for adjoint in ("none", "checkpoint"):
        block = ContinuousDepth([Convection(v)], _spec(method, adjoint=adjoint, checkpoints=2 if adjoint != "none"
                                                       else None))
        gs = torch.autograd.grad(block(x).pow(2).sum(), list(v.parameters()))
        grads.append(torch.cat([g.flatten() for g in gs]))
    assert _rel(grads[1], grads[0]) <= 1e-6


def test_gradcheck_against_finite_differences():
    """A fixed-step solve is a smooth map of (x0, θ): central differences confirm the checkpointed gradient."""
    torch.manual_seed(2)
    v = MLPVelocity(2, width=3, depth=2).double()
    block = ContinuousDepth([Convection(v)], SolverSpec(method="rk4", step_size=0.1, t1=0.5, adjoint="checkpoint",
                                                        checkpoints=2))
    x = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
    w = v.first.weight
    assert torch.autograd.gradcheck(lambda inp, _w: block(inp), (x, w), atol=1e-7, rtol=1e-6)


class Leak(nn.Module):
    """dx₁/dt = −λ x₁ (a decaying channel), dx₂/dt = θ x₁ (a neutral channel it feeds).

    x₂(T) = x₂(0) + θ x₁(0) (1 − e^{−λT}) / λ, so ∂x₂(T)/∂θ = x₁(0)(1 − e^{−λT})/λ. A backward solve must rebuild
    x₁(t) = x₁(T) e^{λ(T−t)} from x₁(T): its error at T grows by e^{λT} on the way back, while the adjoint of x₂
    does not decay, so backsolve's ∂/∂θ = ∫ a₂ x₁ dt inherits the whole growth."""

    def __init__(self, lam: float, theta: float) -> None:
        super().__init__()
        self.lam = lam
        self.theta = nn.Parameter(torch.tensor(theta, dtype=torch.float64))

    def forward(self, t, x):
        return torch.stack([-self.lam * x[:, 0], self.theta * x[:, 0]], dim=1)


def test_exact_where_backsolve_is_not():
    """λT = 20 at rtol = atol = 1e-6. Measured: backsolve's gradient is 7.1x off backprop's (and the analytic
    one); the checkpointed one equals backprop's to 2e-17 and the analytic gradient to 2e-8 (the solve's error)."""
    lam, t1, theta = 10.0, 2.0, 0.7
    x0 = torch.tensor([[1.0, 0.0], [0.5, 1.0]], dtype=torch.float64)
    grads = {}
    for adjoint in ("none", "backsolve", "checkpoint"):
        f = Leak(lam, theta)
        x = x0.clone().requires_grad_(True)
        block = ContinuousDepth([f], SolverSpec(method="dopri5", rtol=1e-6, atol=1e-6, t1=t1, adjoint=adjoint))
        gs = torch.autograd.grad(block(x)[:, 1].sum(), [x, f.theta])
        grads[adjoint] = torch.cat([g.flatten() for g in gs])
    decay = 1 - math.exp(-lam * t1)
    exact = torch.tensor([theta * decay / lam, 1.0, theta * decay / lam, 1.0, x0[:, 0].sum() * decay / lam],
                         dtype=torch.float64)
    assert _rel(grads["checkpoint"], grads["none"]) <= 1e-12
    assert _rel(grads["checkpoint"], exact) <= 1e-6
    assert _rel(grads["backsolve"], exact) >= 1.0


class SavedBytes:
    """Peak bytes of distinct storages saved for backward and still alive (torch's saved-tensor hooks)."""

    def __init__(self) -> None:
        self.live: dict[int, list[int]] = {}
        self.peak = 0

    def pack(self, t: torch.Tensor):
        key = t.untyped_storage().data_ptr()
        entry = self.live.setdefault(key, [t.untyped_storage().nbytes(), 0])
        entry[1] += 1
        self.peak = max(self.peak, sum(n for n, _ in self.live.values()))
        return _Saved(self, key, t)

    @staticmethod
    def unpack(saved: "_Saved") -> torch.Tensor:
        return saved.tensor


class _Saved:
    def __init__(self, meter: SavedBytes, key: int, tensor: torch.Tensor) -> None:
        self.meter, self.key, self.tensor = meter, key, tensor

    def __del__(self) -> None:
        entry = self.meter.live[self.key]
        entry[1] -= 1
        if entry[1] == 0:
            del self.meter.live[self.key]


def _node(y: torch.Tensor):
    """The checkpointed solve's autograd node under x(T) = ys[-1]."""
    return y.grad_fn.next_functions[0][0]


def _peak_saved(spec: SolverSpec, v: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """Peak saved bytes of a forward + backward, and how many tensors the checkpointed solve saved (0 else)."""
    meter = SavedBytes()
    with torch.autograd.graph.saved_tensors_hooks(meter.pack, meter.unpack):
        y = ContinuousDepth([Convection(v)], spec)(x.requires_grad_(True))
        n_saved = len(_node(y).saved_tensors) if spec.adjoint == "checkpoint" else 0
        y.pow(2).sum().backward()
    assert not meter.live  # everything saved was freed
    return meter.peak, n_saved


@pytest.mark.parametrize("checkpoints", [1, 4, 40])
def test_backward_holds_K_states_and_one_segment(checkpoints):
    """rk4, N = 40 steps. Backprop's saved bytes for an n-step solve, P(n), grow with n; the checkpointed backward
    holds at most the K−1 states past the input plus one segment's graph: peak ≤ (K−1)·|x| + P(⌈N/K⌉)."""
    torch.manual_seed(0)
    v = MLPVelocity(16, width=32, depth=2).double()
    x = torch.randn(64, 16, dtype=torch.float64)
    h, n = 0.1, 40
    backprop = {m: _peak_saved(SolverSpec(method="rk4", step_size=h, t1=m * h), v, x)[0]
                for m in {n, math.ceil(n / checkpoints)}}
    assert backprop[n] > 20 * _peak_saved(SolverSpec(method="rk4", step_size=h, t1=h), v, x)[0]  # grows with n
    peak, n_saved = _peak_saved(SolverSpec(method="rk4", step_size=h, t1=n * h, adjoint="checkpoint",
                                           checkpoints=checkpoints), v, x)
    state = x.numel() * x.element_size()
    assert n_saved == checkpoints  # the input and K − 1 states
    assert peak <= (checkpoints - 1) * state + backprop[math.ceil(n / checkpoints)] * 1.01
    if checkpoints == 4:
        assert peak < backprop[n] / 3


@pytest.mark.parametrize("checkpoints", [1, 2, 3, 5, None])
def test_adaptive_solve_keeps_at_most_K_checkpoints(checkpoints):
    """An adaptive solve does not know its N in advance: the stride doubles whenever more than K states are kept,
    so at most K are (each (x_k, f_k, t_k)), in segments of a power of two of steps, < 2N/K; None keeps ≈ √(N·e)
    for e evaluations a step."""
    v, x = _mlp(seed=3)
    block = ContinuousDepth([Convection(v)], SolverSpec(method="dopri5", rtol=1e-9, atol=1e-9, t1=4.0,
                                                        adjoint="checkpoint", checkpoints=checkpoints))
    y = block(x.requires_grad_(True))
    n = block.stats.steps_accepted
    kept = (len(_node(y).saved_tensors) - 1) // 3 + 1
    stride = _node(y).run.schedule.stride
    assert n >= 16
    assert kept == math.ceil(n / stride)  # uniform segments of `stride` steps
    if checkpoints is not None:
        assert kept <= checkpoints and (stride == 1 or stride < 2 * n / checkpoints)
    else:
        e = block.stats.nfe_forward / n  # evaluations per step (dopri5: 6, and the first two)
        assert math.sqrt(n * e) / 2 <= kept <= 2 * math.sqrt(n * e) + 1
    y.pow(2).sum().backward()
    assert block.stats.backward_steps == n


def test_stats_count_replay_and_vector_jacobian_products():
    """rk4 with N steps: 4N forward evaluations; backward 4N replayed evaluations + 4N drift vjps, N steps."""
    v, x = _mlp()
    _, _, stats = _run(SolverSpec(method="rk4", step_size=0.1, t1=2.0, adjoint="checkpoint", checkpoints=3), v, x)
    n = 20
    assert (stats.nfe_forward, stats.nfe_backward, stats.backward_steps) == (4 * n, 8 * n, n)
    # dopri5 without rejected steps: the replay re-evaluates what the forward evaluated, the vjps are backprop's
    _, _, bp = _run(_spec("dopri5"), v, x)
    _, _, ck = _run(_spec("dopri5", adjoint="checkpoint", checkpoints=2), v, x)
    assert bp.steps_rejected == 0 and ck.nfe_forward == bp.nfe_forward
    assert ck.nfe_backward == bp.nfe_forward + bp.nfe_backward


def test_without_gradients_it_is_plain_odeint():
    """Evaluation (no_grad) stores nothing and gives the same outputs."""
    v, x = _mlp()
    spec = _spec("dopri5", adjoint="checkpoint")
    with torch.no_grad():
        y = ContinuousDepth([Convection(v)], spec)(x)
        y0 = ContinuousDepth([Convection(v)], _spec("dopri5"))(x)
    assert y.grad_fn is None and torch.equal(y, y0)


def test_replay_under_the_forwards_mixed_precision():
    """Under bf16 autocast the replay recomputes in bf16 as the forward did, so x0's gradient is backprop's exactly
    (replaying in float32 instead: 4e-4 off). The parameters' gradients sum bf16 products per segment and then
    across segments in float32, where backprop sums over all steps at once in bf16: equal to bf16's roundoff."""
    torch.manual_seed(0)
    v = MLPVelocity(8, width=16, depth=2)
    x = torch.randn(32, 8)
    grads = []
    for adjoint in ("none", "checkpoint"):
        block = ContinuousDepth([Convection(v)], SolverSpec(method="rk4", step_size=0.25, t1=0.5, adjoint=adjoint))
        xx = x.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = block(xx)
        grads.append(torch.autograd.grad(y.pow(2).sum(), [xx, *v.parameters()]))
    assert _rel(grads[1][0], grads[0][0]) <= 1e-6
    assert all(_rel(a, b) <= 2e-2 for a, b in zip(grads[1][1:], grads[0][1:]))
