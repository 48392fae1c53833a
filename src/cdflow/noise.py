"""The noise of a stochastic continuous-depth block: the diffusion ς(t, x) of dx = f(t, x) dt + ς(t, x) dW.

`NoiseDiffusion` returns g(t, x) in torchsde's layout for the flattened state x ∈ R^{B×D}:

* ``diagonal``: one Brownian motion per coordinate, g ∈ R^{B×D}, dx_i = … + g_i(x) dW_i;
* ``scalar``: one Brownian motion shared by all coordinates, g ∈ R^{B×D×1};
* ``additive``: g ∈ R^{B×D×m} independent of x, g = diag(σ) M with a D×m mixing matrix M (default I);
* ``general``: g ∈ R^{B×D×m} that may depend on x, g_ij = σ_i h_i(x) M_ij.

The state factor h(x) ∈ R^{B×D} (``state_dependence``) is

* ``none``: h = 1 (constant noise ς = σ);
* ``linear``: h = x (multiplicative noise ς_i = σ_i x_i, as in geometric Brownian motion);
* ``mlp``: h_i = 2 sigmoid(φ(x_i)) with one small scalar MLP φ: R → R shared by all coordinates, its last
  layer zero-initialised so that h ≡ 1 (constant noise σ) at initialisation, and 0 < h < 2 always.

Every factor acts coordinate-wise (h_i depends on x_i only), which is what torchsde's ``diagonal`` noise
assumes (its Milstein, SRK and Itô-adjoint corrections drop ∂g_i/∂x_j for i ≠ j). The noise does not depend
on t. σ > 0 is a scalar or one value per coordinate, fixed or learnable (σ = softplus(raw) when learnable).
The SDE solve (`cdflow.sde.solve_sde`) always calls the noise on the state flattened to (B, D), whatever the
state's shape (e.g. images (B, C, H, W) → (B, C·H·W)).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from cdflow.errors import ConfigError

NoiseType = Literal["diagonal", "scalar", "additive", "general"]
StateDependence = Literal["none", "linear", "mlp"]
NOISE_TYPES: tuple[str, ...] = ("additive", "diagonal", "general", "scalar")
STATE_DEPENDENCE: tuple[str, ...] = ("none", "linear", "mlp")


def _inverse_softplus(y: Tensor) -> Tensor:
    """raw with softplus(raw) = y, for y > 0: raw = y + log(1 − e^{−y})."""
    return y + torch.log(-torch.expm1(-y))


class NoiseDiffusion(nn.Module):
    """The diffusion g(t, x) of dx = f dt + g dW for torchsde (see the module docstring for each noise type).

    Args:
        noise_type: ``diagonal`` | ``scalar`` | ``additive`` | ``general`` (torchsde's semantics).
        sigma: noise scale σ ≥ 0: a number, or one value per coordinate (then ``dim`` must match).
        dim: the flattened state size D; required for per-coordinate σ and for a default mixing matrix of
            ``additive`` / ``general`` noise with m ≠ D (otherwise M = I_D is built at call time).
        learnable: learn σ (σ = softplus(raw) > 0, so σ must be > 0) and the mixing matrix M.
        state_dependence: ``none`` | ``linear`` | ``mlp``: the state factor h(x); ``additive`` noise must use
            ``none``.
        mixing: the D×m matrix M of ``additive`` / ``general`` noise (default: the identity, m = D).
        brownian_dim: m, the number of Brownian motions of ``additive`` / ``general`` noise when ``mixing`` is
            not given (default D); M is then the D×m rectangular identity.
        hidden: width of the scalar MLP φ of ``state_dependence='mlp'``.
    """

    def __init__(
        self,
        noise_type: NoiseType = "diagonal",
        sigma: float | Sequence[float] | Tensor = 0.1,
        *,
        dim: int | None = None,
        learnable: bool = False,
        state_dependence: StateDependence = "none",
        mixing: Tensor | None = None,
        brownian_dim: int | None = None,
        hidden: int = 16,
    ) -> None:
        super().__init__()
        if noise_type not in NOISE_TYPES:
            raise ConfigError(f"unknown noise_type {noise_type!r}; valid noise types: {', '.join(NOISE_TYPES)}")
        if state_dependence not in STATE_DEPENDENCE:
            raise ConfigError(
                f"unknown state_dependence {state_dependence!r}; valid: {', '.join(STATE_DEPENDENCE)}"
            )
        if noise_type == "additive" and state_dependence != "none":
            raise ConfigError(
                f"additive noise does not depend on the state, but state_dependence={state_dependence!r}: use "
                "noise_type='diagonal' (or 'general') for state-dependent noise, or state_dependence='none'"
            )
        self.noise_type: str = noise_type
        self.state_dependence: str = state_dependence
        self.dim = dim
        self.learnable = learnable

        sig = torch.as_tensor(sigma, dtype=torch.get_default_dtype()).detach().clone()
        if sig.ndim > 1 or not bool(torch.isfinite(sig).all()) or bool((sig < 0).any()):
            raise ConfigError(f"sigma must be a finite number ≥ 0 or a 1-D tensor of them, got {sigma!r}")
        if sig.ndim == 1 and dim is not None and sig.numel() != dim:
            raise ConfigError(f"sigma has {sig.numel()} values but dim={dim}")
        if learnable:
            if bool((sig <= 0).any()):
                raise ConfigError("a learnable sigma is softplus(raw) > 0: give an initial sigma > 0")
            self.raw_sigma = nn.Parameter(_inverse_softplus(sig))
        else:
            self.register_buffer("fixed_sigma", sig)

        self.mixing: Tensor | None
        self.register_buffer("mixing", None)
        if noise_type in ("additive", "general"):
            if mixing is None and brownian_dim is not None:
                if dim is None:
                    raise ConfigError("brownian_dim needs dim (the state size D) to build the D×m mixing matrix")
                mixing = torch.eye(dim, brownian_dim)
            if mixing is not None:
                mixing = torch.as_tensor(mixing, dtype=torch.get_default_dtype()).detach().clone()
                if mixing.ndim != 2 or (dim is not None and mixing.shape[0] != dim):
                    raise ConfigError(f"mixing must be a D×m matrix with D = dim = {dim}, got {tuple(mixing.shape)}")
                self.mixing = nn.Parameter(mixing) if learnable else mixing
        elif mixing is not None or brownian_dim is not None:
            raise ConfigError(
                f"mixing / brownian_dim apply only to 'additive' and 'general' noise, not {noise_type!r} (which has "
                "one Brownian motion per coordinate for 'diagonal', a single one for 'scalar')"
            )

        self.phi: nn.Module | None = None
        if state_dependence == "mlp":
            self.phi = nn.Sequential(nn.Linear(1, hidden), nn.Tanh(), nn.Linear(hidden, 1))
            nn.init.zeros_(self.phi[-1].weight)
            nn.init.zeros_(self.phi[-1].bias)

    @property
    def sigma(self) -> Tensor:
        """σ: a 0-d tensor, or one value per coordinate."""
        if self.learnable:
            return nn.functional.softplus(self.raw_sigma)
        return self.fixed_sigma

    def brownian_size(self, state_dim: int) -> int:
        """m: the number of Brownian motions for a flattened state of size D = `state_dim`."""
        if self.noise_type == "diagonal":
            return state_dim
        if self.noise_type == "scalar":
            return 1
        return state_dim if self.mixing is None else int(self.mixing.shape[1])

    def factor(self, x: Tensor) -> Tensor:
        """The state factor h(x) ∈ R^{B×D} (1, x, or 2 sigmoid(φ(x_i)))."""
        if self.state_dependence == "linear":
            return x
        if self.state_dependence == "mlp":
            assert self.phi is not None
            return 2.0 * torch.sigmoid(self.phi(x.unsqueeze(-1)).squeeze(-1))
        return torch.ones_like(x)

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        """g(t, x) for a flattened state x ∈ R^{B×D}: (B, D) diagonal, (B, D, 1) scalar, (B, D, m) otherwise."""
        if x.ndim != 2:
            raise ConfigError(f"NoiseDiffusion acts on flattened states (B, D), got shape {tuple(x.shape)}")
        batch, d = x.shape
        if self.dim is not None and d != self.dim:
            raise ConfigError(f"NoiseDiffusion was built for dim={self.dim} but the state has {d} coordinates")
        sigma = self.sigma.to(x)
        if sigma.ndim == 1 and sigma.numel() != d:
            raise ConfigError(f"sigma has {sigma.numel()} values but the state has {d} coordinates")
        if self.noise_type == "additive":
            return self._mix(sigma.expand(d), d).unsqueeze(0).expand(batch, d, -1)
        g = sigma * self.factor(x)  # (B, D)
        if self.noise_type == "diagonal":
            return g
        if self.noise_type == "scalar":
            return g.unsqueeze(-1)
        return g.unsqueeze(-1) * self._mix(torch.ones(d, dtype=x.dtype, device=x.device), d).unsqueeze(0)

    def _mix(self, scale: Tensor, d: int) -> Tensor:
        """diag(scale) M ∈ R^{D×m} (M = I_D when no mixing matrix was given)."""
        if self.mixing is None:
            return torch.diag(scale)
        if self.mixing.shape[0] != d:
            raise ConfigError(f"mixing matrix is {tuple(self.mixing.shape)} but the state has {d} coordinates")
        return scale.unsqueeze(-1) * self.mixing.to(scale)

    def extra_repr(self) -> str:
        sig = self.sigma.detach()
        sig_repr = f"{float(sig):.4g}" if sig.ndim == 0 else f"[{sig.numel()} values]"
        return (
            f"noise_type={self.noise_type!r}, sigma={sig_repr}, state_dependence={self.state_dependence!r}, "
            f"learnable={self.learnable}"
        )

