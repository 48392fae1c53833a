"""The default network of `ContinuousDepthClassifier`: encoder → continuous-depth block → head.

Tabular / graph features use an MLP velocity on vectors; images use a convolutional encoder that
downsamples by 4 (e.g. 1×28×28 → hidden×7×7), a `ConvVelocity` ODE block and a pooled linear head
(the ODE-Net of Chen et al. 2018).
"""

from __future__ import annotations

import math
from typing import Literal

from torch import Tensor, nn

from cdflow.errors import ConfigError
from cdflow.solve import ContinuousDepth
from cdflow.solvers import SolverSpec
from cdflow.terms import Convection
from cdflow.velocity import ConvVelocity, MLPVelocity, make_activation

EncoderKind = Literal["none", "linear", "mlp", "conv"]
VelocityKind = Literal["mlp", "conv"]
ActivationName = Literal["tanh", "relu", "softplus", "elu", "gelu", "silu", "sigmoid", "identity"]


class EncodeFlowHead(nn.Module):
    """x ↦ head(block(encoder(x))): a classifier whose middle is a continuous-depth block."""

    def __init__(self, encoder: nn.Module, block: ContinuousDepth, head: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.block = block
        self.head = head

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.block(self.encoder(x)))


def _group_norm(channels: int, groups: int = 8) -> nn.GroupNorm:
    """GroupNorm with the largest divisor of `channels` not above `groups` as the number of groups."""
    g = min(groups, channels)
    while channels % g:
        g -= 1
    return nn.GroupNorm(g, channels)


def _conv_encoder(channels: int, hidden: int, activation: str) -> nn.Sequential:
    """3×3 conv to `hidden` channels, then two stride-2 4×4 convs (spatial size / 4)."""
    def norm() -> nn.GroupNorm:
        return _group_norm(hidden)

    return nn.Sequential(
        nn.Conv2d(channels, hidden, kernel_size=3, padding=1),
        norm(), make_activation(activation),
        nn.Conv2d(hidden, hidden, kernel_size=4, stride=2, padding=1),
        norm(), make_activation(activation),
        nn.Conv2d(hidden, hidden, kernel_size=4, stride=2, padding=1),
    )


def _vector_encoder(
    kind: EncoderKind, in_dim: int, hidden: int, activation: str, flatten: bool
) -> tuple[nn.Module, int]:
    """(encoder, state dimension) for vector inputs."""
    layers: list[nn.Module] = [nn.Flatten()] if flatten else []
    if kind == "none":
        return (nn.Sequential(*layers) if layers else nn.Identity()), in_dim
    layers.append(nn.Linear(in_dim, hidden))
    if kind == "mlp":
        layers += [make_activation(activation), nn.Linear(hidden, hidden)]
    return nn.Sequential(*layers), hidden


def build_classifier(
    input_shape: tuple[int, ...],
    num_classes: int,
    solver: SolverSpec,
    encoder: EncoderKind = "linear",
    hidden: int = 64,
    velocity: VelocityKind = "mlp",
    width: int = 64,
    depth: int = 2,
    activation: ActivationName = "tanh",
    time_input: bool = True,
    dropout: float = 0.0,
) -> EncodeFlowHead:
    """Build encoder → `ContinuousDepth(Convection(velocity))` → head for inputs of `input_shape`.

    Args:
        input_shape: one example's shape: ``(F,)`` for features, ``(C, H, W)`` for images.
        num_classes: output logits.
        solver: how the block integrates over depth.
        encoder: ``none`` (the flow acts on the input itself, flattened), ``linear`` / ``mlp`` (to `hidden`
            features), ``conv`` (images: to `hidden` channels at 1/4 resolution; needs ``velocity='conv'``).
        hidden: state size of the flow (features or channels).
        velocity: ``mlp`` (vector state) or ``conv`` (image state, `ConvVelocity`).
        width, depth: hidden width and number of linear layers of the MLP velocity (width is the hidden
            channels of the conv velocity).
        activation: nonlinearity of encoder and velocity.
        time_input: the velocity sees depth t.
        dropout: dropout on the encoder output and before the head (vector states).
    """
    if num_classes < 2:
        raise ConfigError(f"num_classes must be ≥ 2, got {num_classes}")
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
    if len(input_shape) == 0 or any(s < 1 for s in input_shape):
        raise ConfigError(f"input_shape must be non-empty positive sizes, got {input_shape}")
    image = len(input_shape) == 3
    if velocity == "conv":
        if not image:
            raise ConfigError(f"velocity='conv' needs image inputs (C, H, W), got input_shape={input_shape}")
        if encoder == "conv":
            enc, channels = _conv_encoder(input_shape[0], hidden, activation), hidden
        elif encoder == "none":
            enc, channels = nn.Identity(), input_shape[0]
        else:
            raise ConfigError(f"velocity='conv' needs encoder='conv' or 'none', got encoder={encoder!r}")
        field = ConvVelocity(channels, hidden=width, activation=activation, time_input=time_input)
        head: nn.Module = nn.Sequential(
            _group_norm(channels), make_activation(activation),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes),
        )
        return EncodeFlowHead(enc, ContinuousDepth(Convection(field), solver), head)
    if encoder == "conv":
        raise ConfigError("encoder='conv' needs velocity='conv'")
    in_dim = math.prod(input_shape)
    enc, dim = _vector_encoder(encoder, in_dim, hidden, activation, flatten=len(input_shape) > 1)
    if dropout > 0:
        enc = nn.Sequential(enc, nn.Dropout(dropout))
    field = MLPVelocity(dim, width=width, depth=depth, activation=activation, time_input=time_input)
    head = nn.Linear(dim, num_classes)
    if dropout > 0:
        head = nn.Sequential(nn.Dropout(dropout), head)
    return EncodeFlowHead(enc, ContinuousDepth(Convection(field), solver), head)
