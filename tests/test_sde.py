"""The SDE solve against mathematics: OU laws, Feynman–Kac, strong orders, adjoint gradients, seeds, refusals."""

import math
import warnings

import pytest
import torch
import torchsde
from torch import nn

from cdflow import Convection, Drift, MLPVelocity, solve
from cdflow.errors import ConfigError, SolverError
from cdflow.noise import NoiseDiffusion
from cdflow.sde import (
    SDEStats,
    StochasticDepth,
    check_sde,
    derive_seed,
    feynman_kac,
    mean_field_spec,
    sample_paths,
    solve_sde,
)
from cdflow.solvers import SolverSpec, sde_methods

F64 = torch.float64


class Linear(nn.Module):
    """f(t, x) = a x."""

    def __init__(self, a: float) -> None:
        super().__init__()
        self.a = a

    def forward(self, t, x):
        return self.a * x


class Constant(nn.Module):
    """f(t, x) = b."""

    def __init__(self, b: torch.Tensor) -> None:
        super().__init__()
        self.b = b

    def forward(self, t, x):
        return self.b.expand_as(x)


def _moments(y: torch.Tensor):
    """Sample mean, variance and their standard errors per column (SE of s²: √((m4 − (n−3)/(n−1) s⁴)/n))."""
    n = y.shape[0]
    mean, var = y.mean(0), y.var(0)
    m4 = ((y - mean) ** 4).mean(0)
    return mean, var, (var / n).sqrt(), ((m4 - (n - 3) / (n - 1) * var**2) / n).sqrt()


# --- Ornstein–Uhlenbeck: dX = −θ X dt + ς dW ------------------------------------------------------------
OU_MIX = torch.tensor([[0.6, 0.8, 0.0], [0.0, 0.6, 0.8]], dtype=F64)  # unit rows, (M Mᵀ)_12 = 0.48


@pytest.mark.parametrize("noise_type", ["diagonal", "scalar", "general"])
def test_ornstein_uhlenbeck_mean_and_variance(noise_type):
    """X_T ~ N(x0 e^{−θT}, (ς ςᵀ)(1 − e^{−2θT})/(2θ)): 20,000 Euler paths, dt = 1/400, within 4 SE."""
    theta, T, n = 1.0, 1.0, 20_000
    sigma = torch.tensor([0.5, 1.2], dtype=F64)
    x0 = torch.tensor([1.0, -2.0], dtype=F64)
    kwargs = {"mixing": OU_MIX} if noise_type == "general" else {}
    noise = NoiseDiffusion(noise_type, sigma, dim=2, **kwargs)
    y = solve_sde(Linear(-theta), noise, x0.expand(n, 2).clone(), SolverSpec(method="euler", step_size=1 / 400),
                  seed=7).ys[-1]
    decay = (1 - math.exp(-2 * theta * T)) / (2 * theta)
    mean, var, se_mean, se_var = _moments(y)
    assert torch.all((mean - x0 * math.exp(-theta * T)).abs() < 4 * se_mean), (mean, se_mean)
    assert torch.all((var - sigma**2 * decay).abs() < 4 * se_var), (var, se_var)
    # cross-covariance: ς ςᵀ is σσᵀ for scalar noise (one Brownian motion), diag(σ²) for diagonal, σσᵀ∘MMᵀ general
    mix = {"diagonal": 0.0, "scalar": 1.0, "general": float(OU_MIX[0] @ OU_MIX[1])}[noise_type]
    prod = (y[:, 0] - mean[0]) * (y[:, 1] - mean[1])
    cov_exact = sigma[0] * sigma[1] * mix * decay
    assert abs(prod.mean() - cov_exact) < 4 * prod.std() / math.sqrt(n)
    if noise_type == "scalar":  # both coordinates are the same linear functional of one path
        assert torch.corrcoef(y.T)[0, 1] > 1 - 1e-9


def test_additive_identity_noise_is_diagonal_constant_noise():
    x0 = torch.randn(6, 3, dtype=F64)
    spec = SolverSpec(method="euler", step_size=0.05)
    a = solve_sde(Linear(-0.5), NoiseDiffusion("additive", [0.1, 0.2, 0.3], dim=3), x0, spec, seed=4).ys
    d = solve_sde(Linear(-0.5), NoiseDiffusion("diagonal", [0.1, 0.2, 0.3], dim=3), x0, spec, seed=4).ys
    assert torch.allclose(a, d, rtol=0, atol=1e-14)


# --- Feynman–Kac -------------------------------------------------------------------------------------------
B_DRIFT = torch.tensor([0.3, -0.5], dtype=F64)
S_NOISE = torch.tensor([0.7, 0.4], dtype=F64)


def _u_exact(x: torch.Tensor, T) -> torch.Tensor:
    """u(x, T) = |x + bT|² + |s|² T."""
    return ((x + B_DRIFT * T) ** 2).sum(-1) + (S_NOISE**2).sum() * T


def test_closed_form_solves_the_kolmogorov_equation():
    """u_T = b·∇u + ½ Σ s_i² ∂²u/∂x_i², u(·, 0) = |x|², checked by autograd at a few points."""
    x = torch.randn(4, 2, dtype=F64, requires_grad=True)
    T = torch.full((4, 1), 0.7, dtype=F64, requires_grad=True)
    u = ((x + B_DRIFT * T) ** 2).sum(-1) + (S_NOISE**2).sum() * T[:, 0]
    u_t, grad = torch.autograd.grad(u.sum(), [T, x], create_graph=True)
    hess_diag = torch.stack([torch.autograd.grad(grad[:, i].sum(), x, retain_graph=True)[0][:, i] for i in range(2)], 1)
    rhs = (grad * B_DRIFT).sum(-1) + 0.5 * (S_NOISE**2 * hess_diag).sum(-1)
    assert torch.allclose(u_t[:, 0], rhs, atol=1e-12)
    assert torch.allclose(u, _u_exact(x, 0.7)) and torch.allclose(_u_exact(x, 0.0), (x**2).sum(-1))


def test_feynman_kac_monte_carlo_matches_closed_form():
    """E|X_T|² for dX = b dt + s dW is (x + bT)² + s²T: 20,000 paths, within 4 standard errors."""
    T, n = 1.5, 20_000
    x = torch.tensor([[0.0, 0.0], [1.0, -1.0], [-0.5, 2.0]], dtype=F64)
    noise = NoiseDiffusion("diagonal", S_NOISE, dim=2)
    mean, std = feynman_kac(Constant(B_DRIFT), noise, x, SolverSpec(method="euler", step_size=T / 10, t1=T), n,
                            payoff=lambda v: (v**2).sum(-1), seed=3)
    assert mean.shape == std.shape == (3,)
    assert torch.all((mean - _u_exact(x, T)).abs() < 4 * std / math.sqrt(n)), (mean, _u_exact(x, T))
    # Var |X_T|² for X_T ~ N(m, S): 2 tr(S²) + 4 mᵀ S m, S = s² T
    m, S = x + B_DRIFT * T, S_NOISE**2 * T
    var_exact = 2 * (S**2).sum() + 4 * (m**2 * S).sum(-1)
    assert torch.allclose(std**2, var_exact, rtol=0.05)


def test_feynman_kac_shapes_and_mean_field():
    torch.manual_seed(0)
    drift = Drift(Convection(MLPVelocity(3, width=8)))
    noise = NoiseDiffusion("diagonal", 0.2)
    x = torch.randn(4, 3)
    spec = SolverSpec(method="euler", step_size=0.1)
    mean, std = feynman_kac(drift, noise, x, spec, 16, seed=1)
    assert mean.shape == std.shape == x.shape and bool((std > 0).all())
    mean, std = feynman_kac(drift, noise, x, spec, 16, payoff=lambda v: v.norm(dim=-1), seed=1)
    assert mean.shape == std.shape == (4,)
    # mean field: the ODE solve of the same drift, with the default spec and with a given one
    mf, mf_std = feynman_kac(drift, noise, x, spec, 16, mean_field=True)
    assert torch.equal(mf, solve(drift, x, SolverSpec(method="euler", step_size=0.1)).y_final)
    assert torch.count_nonzero(mf_std) == 0
    ode = SolverSpec(method="dopri5", rtol=1e-6, atol=1e-8)
    mf, _ = feynman_kac(drift, noise, x, spec, 16, mean_field=True, ode_spec=ode)
    assert torch.equal(mf, solve(drift, x, ode).y_final)
    with pytest.raises(ConfigError, match="n_samples ≥ 2"):
        feynman_kac(drift, noise, x, spec, 1)


def test_unbatched_paths_for_row_coupled_drifts():
    """batched=False: one solve per path with seed derive_seed(seed, k), for drifts that couple rows."""

    class Coupled(nn.Module):
        def forward(self, t, x):
            return -(x - x.mean(0, keepdim=True))

    x, spec, noise = torch.randn(5, 2, dtype=F64), SolverSpec(method="euler", step_size=0.125), NoiseDiffusion()
    ys, stats = sample_paths(Coupled(), noise, x, spec, 3, seed=9, batched=False)
    assert ys.shape == (2, 3, 5, 2) and isinstance(stats, SDEStats) and stats.steps == 3 * 8
    for k in range(3):
        assert torch.equal(ys[:, k], solve_sde(Coupled(), noise, x, spec, seed=derive_seed(9, k)).ys)


@pytest.mark.parametrize("method, sde_type", [("euler", "ito"), ("milstein", "ito"), ("euler_heun", "stratonovich"),
                                              ("midpoint", "stratonovich"), ("heun", "stratonovich"),
                                              ("log_ode", "stratonovich")])
def test_zero_noise_limit_is_the_mean_field_ode(method, sde_type):
    """With ς = 0 each SDE method is the ODE method `mean_field_spec` names, step for step."""
    torch.manual_seed(0)
    drift = Drift(Convection(MLPVelocity(3, width=8))).double()
    x0 = torch.randn(4, 3, dtype=F64)
    spec = SolverSpec(method=method, sde_type=sde_type, step_size=0.05)
    y = solve_sde(drift, NoiseDiffusion("diagonal", 0.0), x0, spec).y_final
    assert torch.allclose(y, solve(drift, x0, mean_field_spec(spec)).y_final, rtol=0, atol=1e-13)


# --- strong order on geometric Brownian motion ---------------------------------------------------------------
@pytest.mark.parametrize("method, order", [("euler", 0.5), ("milstein", 1.0)])
def test_strong_order_on_geometric_brownian_motion(method, order):
    """dX = μX dt + σX dW (Itô), X_T = X0 exp((μ − σ²/2)T + σ W_T) on the same path: E|X_h − X_T| ~ h^order."""
    mu, sig, T, n = 0.5, 0.8, 1.0, 4000
    bm = torchsde.BrownianInterval(0.0, T, size=(n, 1), dtype=F64, entropy=123)
    x0 = torch.ones(n, 1, dtype=F64)
    exact = x0 * torch.exp((mu - sig**2 / 2) * T + sig * bm(0.0, T))
    noise = NoiseDiffusion("diagonal", sig, state_dependence="linear")
    hs = [T / 2**k for k in range(3, 8)]
    errs = [(solve_sde(Linear(mu), noise, x0, SolverSpec(method=method, step_size=h, t1=T), bm=bm).y_final - exact)
            .abs().mean().item() for h in hs]
    lh, le = torch.log(torch.tensor(hs)), torch.log(torch.tensor(errs))
    slope = float(((lh - lh.mean()) * (le - le.mean())).sum() / ((lh - lh.mean()) ** 2).sum())
    assert abs(slope - order) <= 0.2, (errs, slope)  # measured: euler 0.47, milstein 0.96


# --- adjoint gradients ------------------------------------------------------------------------------------
def _grads(method, sde_type, adjoint, dt, adjoint_method=None):
    torch.manual_seed(0)
    drift = Drift(Convection(MLPVelocity(3, width=8))).double()
    noise = NoiseDiffusion("diagonal", [0.3, 0.2, 0.4], dim=3, learnable=True, state_dependence="mlp").double()
    with torch.no_grad():
        for p in noise.phi.parameters():
            p.normal_(0.0, 0.5)
    x0 = torch.randn(4, 3, dtype=F64, requires_grad=True)
    spec = SolverSpec(method=method, sde_type=sde_type, step_size=dt, adjoint=adjoint, adjoint_method=adjoint_method)
    sol = solve_sde(drift, noise, x0, spec, seed=11)
    params = [x0, *drift.parameters(), *noise.parameters()]
    grads = torch.autograd.grad((sol.y_final**2).sum(), params)
    return torch.cat([g.flatten() for g in grads]), sol


def test_reversible_heun_adjoint_equals_backprop():
    """Stratonovich reversible Heun is algebraically reversible: the adjoint reproduces backprop to rounding."""
    direct, sol_d = _grads("reversible_heun", "stratonovich", "none", 0.05)
    adjoint, sol_a = _grads("reversible_heun", "stratonovich", "backsolve", 0.05)
    assert torch.equal(sol_d.ys, sol_a.ys)  # same seed, same forward path
    assert ((direct - adjoint).norm() / direct.norm()).item() < 1e-6  # measured 1e-9
    assert sol_a.stats.backward_steps == sol_a.stats.steps == 20
    assert sol_a.stats.nfe_backward > 0 and sol_a.stats.nfe_diffusion_backward > 0


def test_ito_adjoint_converges_to_backprop():
    """Itô Euler with torchsde's default adjoint (Milstein for diagonal noise): gap O(dt) (measured 2.5e-2, 6e-3)."""
    gaps = []
    for dt in (0.04, 0.01):
        direct, _ = _grads("euler", "ito", "none", dt)
        adjoint, sol = _grads("euler", "ito", "backsolve", dt)
        gaps.append(((direct - adjoint).norm() / direct.norm()).item())
    assert gaps[1] < 0.02 and gaps[0] / gaps[1] > 2.0, gaps


# --- seeds, shapes, statistics, failures ---------------------------------------------------------------------
def test_seed_determines_the_path():
    x0 = torch.randn(8, 3)
    spec = SolverSpec(method="euler", step_size=0.05)
    noise = NoiseDiffusion("diagonal", 0.3)
    a = solve_sde(Linear(-1.0), noise, x0, spec, seed=5).ys
    assert torch.equal(a, solve_sde(Linear(-1.0), noise, x0, spec, seed=5).ys)
    assert not torch.allclose(a[-1], solve_sde(Linear(-1.0), noise, x0, spec, seed=6).ys[-1])
    assert derive_seed(5, 0, 1) != derive_seed(5, 0, 2) and derive_seed(5, 1) == derive_seed(5, 1)
    with pytest.raises(ConfigError, match="seed must be an integer ≥ 0"):
        solve_sde(Linear(-1.0), noise, x0, spec, seed=-1)


def test_image_states_are_flattened_for_torchsde_only():
    shapes = []

    class Elementwise(nn.Module):
        def forward(self, t, x):
            shapes.append(tuple(x.shape[1:]))
            return -x

    x0 = torch.randn(2, 3, 4, 4, dtype=F64)
    spec = SolverSpec(method="milstein", step_size=0.1)
    noise = NoiseDiffusion("diagonal", 0.2, state_dependence="linear")
    img = solve_sde(Elementwise(), noise, x0, spec, torch.tensor([0.0, 0.5, 1.0]), seed=2)
    assert img.ys.shape == (3, 2, 3, 4, 4) and set(shapes) == {(3, 4, 4)}
    flat = solve_sde(Linear(-1.0), noise, x0.reshape(2, -1), spec, torch.tensor([0.0, 0.5, 1.0]), seed=2)
    assert torch.equal(img.ys.reshape(3, 2, -1), flat.ys)


def test_stats_count_drift_and_diffusion_apart():
    x0 = torch.randn(4, 3, requires_grad=True)
    drift = Drift(Convection(MLPVelocity(3, width=8)))
    sol = solve_sde(drift, NoiseDiffusion("diagonal", 0.2, learnable=True), x0, SolverSpec(method="euler",
                                                                                          step_size=0.125))
    s = sol.stats
    assert isinstance(s, SDEStats) and s.steps == 8 and s.steps_accepted is None
    assert s.nfe_forward == s.nfe_diffusion == 9  # one per step + torchsde's shape check at t0
    sol.y_final.sum().backward()
    assert s.nfe_backward == s.nfe_diffusion_backward == 8 and s.backward_steps == 0
    assert s.as_dict()["nfe_diffusion"] == 9 and s.merge(s).nfe_diffusion == 18
    ad = solve_sde(Linear(-1.0), NoiseDiffusion("additive", 0.2), x0.detach(),
                   SolverSpec(method="euler", step_size=0.25, adaptive=True, rtol=1e-4, atol=1e-4)).stats
    assert ad.steps_rejected > 0 and ad.steps_accepted + ad.steps_rejected == ad.steps
    assert ad.nfe_forward == 3 * ad.steps + 1  # a full step and two half steps per attempt


def test_nonfinite_state_names_the_time():
    class BlowsUp(nn.Module):
        def forward(self, t, x):
            return torch.where(t > 0.5, torch.full_like(x, float("nan")), -x)

    with pytest.raises(SolverError, match=r"non-finite \(NaN/Inf\) at t=0\.75 with SDE method 'euler'"):
        solve_sde(BlowsUp(), NoiseDiffusion(), torch.ones(2, 2), SolverSpec(method="euler", step_size=0.125))
    with pytest.raises(SolverError, match=r"NaN/Inf in rows \[1\]"):
        solve_sde(Linear(-1.0), NoiseDiffusion(), torch.tensor([[0.0], [float("nan")]]), SolverSpec(method="euler"))


def test_max_steps():
    with pytest.raises(ConfigError, match="takes 100 steps .* more than max_steps=10"):
        solve_sde(Linear(-1.0), NoiseDiffusion(), torch.ones(2, 2), SolverSpec(method="euler", max_steps=10))
    with pytest.raises(SolverError, match="max_steps=3 exceeded"):
        solve_sde(Linear(-1.0), NoiseDiffusion("additive", 0.1), torch.ones(2, 2),
                  SolverSpec(method="euler", step_size=0.1, adaptive=True, max_steps=3))


# --- refusals: exactly what torchsde forbids ---------------------------------------------------------------
REFUSED = [
    # (method, sde_type, noise_type, adjoint, adjoint_method, levy_area, error text)
    ("milstein", "ito", "general", "none", None, None, "'milstein' does not support general noise .* ito SDEs with "
     "general noise: euler"),
    ("srk", "ito", "general", "none", None, None, "'srk' does not support general noise"),
    ("euler", "stratonovich", "diagonal", "none", None, None, "'euler' solves ito SDEs, not stratonovich: set "
     "sde_type='ito', or use one of euler_heun, heun, log_ode, midpoint, milstein, reversible_heun"),
    ("reversible_heun", "ito", "diagonal", "none", None, None, "'reversible_heun' solves stratonovich SDEs, not ito"),
    ("adjoint_reversible_heun", "stratonovich", "diagonal", "none", None, None, "only solves the adjoint"),
    ("dopri5", "ito", "diagonal", "none", None, None, "'dopri5' is an ODE method"),
    ("srk", "ito", "diagonal", "none", None, "none", "Lévy-area approximation in"),
    ("log_ode", "stratonovich", "diagonal", "none", None, "space-time", "Lévy-area approximation in"),
    ("euler", "ito", "diagonal", "backsolve", "srk", None, "Stochastic Runge–Kutta methods cannot be used for adjoint"
     " SDEs.*valid adjoint methods for 'euler' here: euler, milstein"),
    ("midpoint", "stratonovich", "diagonal", "backsolve", "log_ode", None, "Log-ODE schemes cannot be used"),
    ("midpoint", "stratonovich", "diagonal", "backsolve", "adjoint_reversible_heun", None,
     "the adjoint of method='reversible_heun' only"),
    ("reversible_heun", "stratonovich", "diagonal", "backsolve", "reversible_heun", None,
     "needs the diffusion matrix itself"),
    ("euler", "ito", "scalar", "backsolve", "milstein", None, "implements only for diagonal noise"),
    ("euler", "ito", "additive", "backsolve", "milstein", None, "the adjoint of an SDE with additive noise has a noise"
     " type milstein does not support"),
    ("midpoint", "stratonovich", "diagonal", "backsolve", "euler", None, "the adjoint of a stratonovich SDE is "
     "stratonovich"),
    ("euler", "ito", "diagonal", "backsolve", "dopri5", None, "adjoint_method 'dopri5' is an ODE method"),
]


@pytest.mark.parametrize("method, sde_type, noise_type, adjoint, adjoint_method, levy, match", REFUSED)
def test_refused_combinations(method, sde_type, noise_type, adjoint, adjoint_method, levy, match):
    spec = SolverSpec(method=method, sde_type=sde_type, adjoint=adjoint, adjoint_method=adjoint_method, step_size=0.1)
    with pytest.raises(ConfigError, match=match):
        check_sde(spec, noise_type, levy)
    x0 = torch.ones(2, 2)
    with pytest.raises(ConfigError, match=match):  # solve_sde refuses before touching torchsde
        solve_sde(Linear(-1.0), NoiseDiffusion(noise_type, 0.1), x0, spec, levy_area=levy)


def test_checkpoint_adjoint_is_refused():
    spec = SolverSpec(method="euler", adjoint="checkpoint")
    with pytest.raises(ConfigError, match="adjoint='checkpoint' replays the steps of an ODE solve"):
        check_sde(spec, "diagonal")


def test_seminorm_is_refused():
    spec = SolverSpec(method="euler", adjoint="backsolve", seminorm=True)
    with pytest.raises(ConfigError, match="seminorm applies to ODE adjoints only"):
        check_sde(spec, "diagonal")


class _RawToy(nn.Module):
    """A torchsde SDE written directly (not through cdflow) to ask torchsde itself what it accepts."""

    def __init__(self, sde_type, noise_type):
        super().__init__()
        self.sde_type, self.noise_type = sde_type, noise_type

    def f(self, t, y):
        return -y

    def g(self, t, y):
        return {"diagonal": 0.1 * y, "scalar": 0.1 * y.unsqueeze(-1),
                "additive": 0.1 * torch.ones(*y.shape, 2), "general": 0.1 * y.unsqueeze(-1).expand(-1, -1, 2)}[
            self.noise_type]


NOISE_TYPES = ["additive", "diagonal", "general", "scalar"]


@pytest.mark.parametrize("sde_type", ["ito", "stratonovich"])
@pytest.mark.parametrize("noise_type", NOISE_TYPES)
def test_forward_refusals_are_exactly_torchsdes(sde_type, noise_type):
    for method in sde_methods():
        spec = SolverSpec(method=method, sde_type=sde_type, step_size=0.5)
        try:
            check_sde(spec, noise_type)
            accepted = True
        except ConfigError:
            accepted = False
        try:
            torchsde.sdeint(_RawToy(sde_type, noise_type), torch.ones(2, 2), [0.0, 1.0], method=method, dt=0.5)
            runs = True
        except ValueError:
            runs = False
        assert accepted == runs, (method, sde_type, noise_type, accepted, runs)


@pytest.mark.parametrize("sde_type", ["ito", "stratonovich"])
@pytest.mark.parametrize("noise_type", NOISE_TYPES)
def test_every_accepted_adjoint_pair_differentiates(sde_type, noise_type):
    """Every (method, adjoint_method) that check_sde accepts runs forward and backward through solve_sde."""
    state = "none" if noise_type == "additive" else "linear"
    noise = NoiseDiffusion(noise_type, 0.3, learnable=True, state_dependence=state, dim=2).double()
    drift = Drift(Convection(MLPVelocity(2, width=4))).double()
    n_ok = 0
    for method in sde_methods():
        for adj in sde_methods():
            spec = SolverSpec(method=method, sde_type=sde_type, adjoint="backsolve", adjoint_method=adj, step_size=0.5)
            try:
                check_sde(spec, noise_type)
            except ConfigError:
                continue
            x0 = torch.ones(2, 2, dtype=F64, requires_grad=True)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sol = solve_sde(drift, noise, x0, spec, seed=1)
                grads = torch.autograd.grad(sol.y_final.sum(), [x0, noise.raw_sigma])
            assert all(bool(torch.isfinite(g).all()) for g in grads), (method, adj)
            n_ok += 1
    assert n_ok >= 1


# --- the module --------------------------------------------------------------------------------------------
def test_stochastic_depth_train_and_eval():
    torch.manual_seed(0)
    noise = NoiseDiffusion("diagonal", 0.1, learnable=True)
    spec = SolverSpec(method="euler", step_size=0.1)
    block = StochasticDepth(Convection(MLPVelocity(3, width=8)), noise, spec, seed=3, eval_samples=8)
    x = torch.randn(4, 3)
    a, b = block(x), block(x)
    assert not torch.allclose(a, b) and int(block.calls) == 2  # fresh noise per training call
    assert isinstance(block.stats, SDEStats) and block.stats.steps == 10
    b.sum().backward()
    assert noise.raw_sigma.grad is not None and bool((noise.raw_sigma.grad != 0).all())  # σ is learnt
    assert "calls" in block.state_dict()
    block.eval()
    with torch.no_grad():
        m1, m2 = block(x), block(x)
        assert torch.equal(m1, m2) and block.last_std.shape == x.shape  # deterministic evaluation
        ys, _ = sample_paths(block.drift, noise, x, spec, 8, seed=derive_seed(3, 1))
        assert torch.allclose(m1, ys[-1].mean(0))
        traj = block(x, torch.tensor([0.0, 0.5, 1.0]))
        assert traj.shape == (3, 4, 3) and torch.allclose(traj[-1], m1)
    mf = StochasticDepth(block.drift, noise, spec, eval_mean_field=True).eval()
    with torch.no_grad():
        assert torch.equal(mf(x), solve(block.drift, x, mean_field_spec(spec)).y_final)
    with pytest.raises(ConfigError, match="does not support general noise"):
        StochasticDepth(Convection(MLPVelocity(3)), NoiseDiffusion("general"), SolverSpec(method="milstein"))
