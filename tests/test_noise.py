"""NoiseDiffusion: torchsde layouts of g(t, x) per noise type, state factors, learnable σ, refusals."""

import pytest
import torch

from cdflow.errors import ConfigError
from cdflow.noise import NoiseDiffusion

B, D = 5, 3
T0 = torch.tensor(0.0)


def _x() -> torch.Tensor:
    return torch.linspace(-1.0, 2.0, B * D).reshape(B, D)


@pytest.mark.parametrize(
    "noise_type, kwargs, shape",
    [
        ("diagonal", {}, (B, D)),
        ("scalar", {}, (B, D, 1)),
        ("additive", {}, (B, D, D)),
        ("additive", {"brownian_dim": 2, "dim": D}, (B, D, 2)),
        ("general", {}, (B, D, D)),
        ("general", {"mixing": torch.ones(D, 4)}, (B, D, 4)),
    ],
)
def test_layout_per_noise_type(noise_type, kwargs, shape):
    noise = NoiseDiffusion(noise_type, 0.5, **kwargs)
    g = noise(T0, _x())
    assert g.shape == shape
    assert noise.brownian_size(D) == (D if noise_type == "diagonal" else shape[-1])


def test_constant_noise_values():
    sigma = torch.tensor([0.1, 0.2, 0.3])
    x = _x()
    assert torch.allclose(NoiseDiffusion("diagonal", sigma, dim=D)(T0, x), sigma.expand(B, D))
    assert torch.allclose(NoiseDiffusion("scalar", sigma, dim=D)(T0, x), sigma.expand(B, D).unsqueeze(-1))
    # additive: g = diag(σ) M, the same for every row and independent of x
    g = NoiseDiffusion("additive", sigma, dim=D)(T0, x)
    assert torch.allclose(g, torch.diag(sigma).expand(B, D, D))
    assert torch.equal(g, NoiseDiffusion("additive", sigma, dim=D)(T0, 10 * x))


def test_linear_noise_is_multiplicative():
    x = _x()
    assert torch.allclose(NoiseDiffusion("diagonal", 0.4, state_dependence="linear")(T0, x), 0.4 * x)
    mixing = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.0, 2.0]])
    g = NoiseDiffusion("general", 0.4, state_dependence="linear", mixing=mixing)(T0, x)
    assert torch.allclose(g, 0.4 * x.unsqueeze(-1) * mixing)


def test_mlp_noise_starts_constant_is_bounded_and_coordinatewise():
    noise = NoiseDiffusion("diagonal", 0.3, state_dependence="mlp")
    x = _x()
    assert torch.allclose(noise(T0, x), torch.full((B, D), 0.3))  # zero-initialised last layer: h ≡ 1
    with torch.no_grad():
        for p in noise.phi.parameters():
            p.normal_(0.0, 2.0)
    g = noise(T0, 5 * x)
    assert bool(((g > 0) & (g < 0.6)).all())  # 0 < σ · 2 sigmoid(·) < 2σ
    # diagonal noise must act coordinate-wise: ∂g_i/∂x_j = 0 for i ≠ j (torchsde's Milstein/SRK assume it)
    jac = torch.autograd.functional.jacobian(lambda v: noise(T0, v.unsqueeze(0)).squeeze(0), x[0])
    assert torch.count_nonzero(jac - torch.diag(torch.diagonal(jac))) == 0


def test_learnable_sigma_is_positive_and_trained():
    noise = NoiseDiffusion("diagonal", [0.2, 0.5, 1.0], dim=D, learnable=True)
    assert torch.allclose(noise.sigma, torch.tensor([0.2, 0.5, 1.0]), atol=1e-6)
    noise(T0, _x()).sum().backward()
    assert noise.raw_sigma.grad is not None and bool((noise.raw_sigma.grad != 0).all())
    with torch.no_grad():
        noise.raw_sigma.fill_(-50.0)
    assert bool((noise.sigma > 0).all())


def test_learnable_mixing_is_a_parameter():
    noise = NoiseDiffusion("general", 0.5, learnable=True, dim=D, brownian_dim=2)
    names = {n for n, _ in noise.named_parameters()}
    assert names == {"raw_sigma", "mixing"}
    fixed = NoiseDiffusion("general", 0.5, dim=D, brownian_dim=2)
    assert "mixing" in dict(fixed.named_buffers()) and not list(fixed.parameters())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"noise_type": "colored"}, "unknown noise_type 'colored'; valid noise types: additive, diagonal"),
        ({"noise_type": "additive", "state_dependence": "linear"}, "additive noise does not depend on the state"),
        ({"state_dependence": "quadratic"}, "unknown state_dependence"),
        ({"sigma": -0.1}, "sigma must be a finite number ≥ 0"),
        ({"sigma": 0.0, "learnable": True}, "learnable sigma is softplus"),
        ({"sigma": [0.1, 0.2], "dim": 3}, "sigma has 2 values but dim=3"),
        ({"noise_type": "diagonal", "mixing": torch.eye(3)}, "apply only to 'additive' and 'general'"),
        ({"noise_type": "general", "brownian_dim": 2}, "brownian_dim needs dim"),
        ({"noise_type": "general", "mixing": torch.eye(2), "dim": 3}, "mixing must be a D×m matrix"),
    ],
)
def test_invalid_settings_are_refused(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        NoiseDiffusion(**kwargs)


def test_shape_mismatch_at_call():
    with pytest.raises(ConfigError, match="built for dim=4"):
        NoiseDiffusion("diagonal", 0.1, dim=4)(T0, _x())
    with pytest.raises(ConfigError, match="flattened states"):
        NoiseDiffusion("diagonal", 0.1)(T0, torch.zeros(2, 3, 4))
