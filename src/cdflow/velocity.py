"""Velocity fields v_θ(t, x): the convection of dx/dt = v_θ(x, t)."""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import Tensor, nn

from cdflow.errors import ConfigError

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "softplus": nn.Softplus,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "sigmoid": nn.Sigmoid,
    "identity": nn.Identity,
}


def make_activation(name: str) -> nn.Module:
    """Instantiate an activation by name, or raise a ConfigError listing the valid names."""
    if name not in ACTIVATIONS:
        raise ConfigError(f"unknown activation {name!r}; valid: {', '.join(sorted(ACTIVATIONS))}")
    return ACTIVATIONS[name]()


class TimeLinear(nn.Linear):
    """y = W [x, t] + b computed as x W_xᵀ + (b + t w_t): the time input without concatenating a column."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__(in_features + 1, out_features)

    def forward(self, t: Tensor, x: Tensor) -> Tensor:  # type: ignore[override]
        w = self.weight
        shift = self.bias + t.to(x) * w[:, -1]
        if x.dim() == 2:
            return torch.addmm(shift, x, w[:, :-1].t())
        return nn.functional.linear(x, w[:, :-1], shift)


class MLPVelocity(nn.Module):
    """v(t, x) = W_L σ(… σ(W_1 [x, t] + b_1) …) + b_L, an MLP on the state (and depth t if `time_input`).

    zero_init: W_L = 0 and b_L = 0 at initialisation, so that v ≡ 0 and the flow starts as the identity (the
    network starts as its base model; training moves it from there)."""

    def __init__(
        self,
        dim: int,
        width: int = 64,
        depth: int = 2,
        activation: str = "tanh",
        time_input: bool = True,
        zero_init: bool = False,
    ) -> None:
        super().__init__()
        if dim < 1 or width < 1 or depth < 1:
            raise ConfigError(f"MLPVelocity needs dim, width, depth ≥ 1, got {dim}, {width}, {depth}")
        self.time_input = time_input
        first_out = width if depth > 1 else dim
        self.first: nn.Module = TimeLinear(dim, first_out) if time_input else nn.Linear(dim, first_out)
        layers: list[nn.Module] = []
        for i in range(depth - 1):
            layers.append(make_activation(activation))
            layers.append(nn.Linear(width, width if i < depth - 2 else dim))
        self.net = nn.Sequential(*layers)
        self.zero_init = zero_init
        self._zero_last()

    def _zero_last(self) -> None:
        if self.zero_init:
            last = self.net[-1] if len(self.net) else self.first
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    def reset_parameters(self) -> None:
        """Every layer's own initialisation, in order, then the zeroed output layer of `zero_init`."""
        for layer in (self.first, *self.net):
            if hasattr(layer, "reset_parameters"):
                layer.reset_parameters()
        self._zero_last()

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        h = self.first(t, x) if self.time_input else self.first(x)
        return self.net(h)


class SimplexVelocity(nn.Module):
    """Replicator dynamics: v_i(t, z) = z_i (f_i(t, z) − Σ_j z_j f_j(t, z)), the convection of a state z on the
    probability simplex. Σ_i v_i = 0 (the total is kept exactly, by any Runge–Kutta step too) and v_i = 0 where
    z_i = 0 (the flow keeps z ≥ 0; an explicit step of size h does while h (f_i − f̄) ≥ −1). In log-coordinates
    it is d log z_i/dt = f_i − f̄: a convection of the log-probabilities by f."""

    def __init__(self, field: nn.Module) -> None:
        super().__init__()
        self.field = field

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        f = self.field(t, z)
        return z * (f - (z * f).sum(-1, keepdim=True))


class ConcatVelocity(nn.Module):
    """Fields side by side: v(t, [x_1 … x_K]) = [v_1(t, x_1) … v_K(t, x_K)] over the last axis, x_k of
    `sizes[k]` columns. The fields in `frozen` run without gradients (their outputs carry none)."""

    def __init__(self, fields: list[nn.Module], sizes: list[int], frozen: list[int] | None = None) -> None:
        super().__init__()
        if len(fields) != len(sizes) or not fields:
            raise ConfigError(f"ConcatVelocity needs one size per field, got {len(fields)} fields, {len(sizes)} sizes")
        self.fields = nn.ModuleList(fields)
        self.sizes = list(sizes)
        self.frozen = set(frozen or ())

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        if x.shape[-1] != sum(self.sizes):
            raise ConfigError(f"ConcatVelocity expects {sum(self.sizes)} columns, got {x.shape[-1]}")
        outs = []
        for k, (field, xk) in enumerate(zip(self.fields, x.split(self.sizes, dim=-1))):
            with torch.no_grad() if k in self.frozen else nullcontext():
                outs.append(field(t, xk))
        return torch.cat(outs, dim=-1)


class _TimeConv(nn.Module):
    """3×3 convolution whose input carries depth t as one extra constant channel."""

    def __init__(self, c_in: int, c_out: int, time_input: bool) -> None:
        super().__init__()
        self.time_input = time_input
        self.conv = nn.Conv2d(c_in + int(time_input), c_out, kernel_size=3, padding=1)

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        if self.time_input:
            tt = t.to(x).expand(x.shape[0], 1, *x.shape[2:])
            x = torch.cat([x, tt], dim=1)
        return self.conv(x)


class ConvVelocity(nn.Module):
    """v(t, x) = conv(σ(norm(conv(σ(norm(x)), t))), t): the ODE-Net block of Chen et al. 2018 for images."""

    def __init__(
        self,
        channels: int,
        hidden: int = 64,
        activation: str = "relu",
        time_input: bool = True,
        groups: int = 8,
    ) -> None:
        super().__init__()
        g_in, g_hid = _groups(channels, groups), _groups(hidden, groups)
        self.norm1 = nn.GroupNorm(g_in, channels)
        self.conv1 = _TimeConv(channels, hidden, time_input)
        self.norm2 = nn.GroupNorm(g_hid, hidden)
        self.conv2 = _TimeConv(hidden, channels, time_input)
        self.act = make_activation(activation)

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        h = self.conv1(t, self.act(self.norm1(x)))
        return self.conv2(t, self.act(self.norm2(h)))


def _groups(channels: int, groups: int) -> int:
    """Largest divisor of `channels` not above `groups` (GroupNorm needs one)."""
    g = min(groups, channels)
    while channels % g:
        g -= 1
    return g
