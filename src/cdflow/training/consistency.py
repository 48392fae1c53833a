"""Consistency regularisation over stochastic forward passes (Feng et al. 2020, "Graph Random Neural Networks
for Semi-Supervised Learning on Graphs", NeurIPS; the "sharpening" of Berthelot et al. 2019, MixMatch).

S training passes of the same input under independent dropout (or noise) draws give class probabilities
p_1, …, p_S on every sample, labelled or not. With p̄ = (1/S) Σ_s p_s and the sharpened target

    q_c = p̄_c^{1/τ} / Σ_c' p̄_c'^{1/τ}      (τ ∈ (0, 1]: τ = 1 is p̄ itself, τ → 0 its arg-max one-hot),

held fixed (no gradient flows into q), the term added to the training loss is

    λ · (1/N) Σ_n (1/S) Σ_s ‖p_s(n) − q(n)‖²,

which pulls every pass towards one confident prediction: a semi-supervised use of the unlabelled samples. The
supervised part is the mean over the S passes of the usual loss on the labelled samples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from cdflow.errors import ConfigError

__all__ = ["ConsistencySpec", "consistency_loss", "consistency_objective", "sharpen"]


@dataclass(frozen=True)
class ConsistencySpec:
    """weight λ ≥ 0 of the consistency term (0: off, one pass per step); samples S ≥ 2 training passes per
    step; temperature τ ∈ (0, 1] of the sharpened target."""

    weight: float = 0.0
    samples: int = 2
    temperature: float = 0.5

    def __post_init__(self) -> None:
        if isinstance(self.weight, bool) or not isinstance(self.weight, (int, float)) or not (
                math.isfinite(self.weight) and self.weight >= 0):
            raise ConfigError(f"--model.consistency.weight must be a finite number ≥ 0 (0 turns it off), got "
                              f"{self.weight!r}")
        if isinstance(self.samples, bool) or not isinstance(self.samples, int) or self.samples < 2:
            raise ConfigError(f"--model.consistency.samples must be an int ≥ 2 (the passes compared), got "
                              f"{self.samples!r}")
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, (int, float)) or not (
                0.0 < self.temperature <= 1.0):
            raise ConfigError(f"--model.consistency.temperature must be in (0, 1] (1: no sharpening), got "
                              f"{self.temperature!r}")
        changed = [f"--model.consistency.{name} {value:g}" for name, value, default in (
            ("samples", self.samples, 2), ("temperature", self.temperature, 0.5)) if value != default]
        if self.weight == 0 and changed:
            raise ConfigError(
                f"{' and '.join(changed)}: samples and temperature act only with the term on: set "
                "--model.consistency.weight > 0, or leave samples and temperature at 2 and 0.5"
            )

    @property
    def enabled(self) -> bool:
        return self.weight > 0


def sharpen(p: Tensor, temperature: float) -> Tensor:
    """p_c^{1/τ} / Σ_c' p_c'^{1/τ} over the last axis, computed from log p for stability."""
    return torch.softmax(torch.log(p.clamp_min(torch.finfo(p.dtype).tiny)) / temperature, dim=-1)


def consistency_loss(scores: Sequence[Tensor], temperature: float) -> Tensor:
    """(1/N) Σ_n (1/S) Σ_s ‖softmax(scores_s)(n) − q(n)‖² for S passes of scores [N, *, C] (logits or
    log-probabilities; samples on the first axis, classes last): a tensor of shape [*] (one value per member
    for [N, K, C]). q is the sharpened mean of the passes' probabilities, held fixed."""
    if len(scores) < 2:
        raise ConfigError(f"consistency needs at least 2 passes, got {len(scores)}")
    probs = torch.stack([torch.softmax(s, dim=-1) for s in scores])  # [S, N, *, C]
    target = sharpen(probs.mean(0), temperature).detach()
    return (probs - target).pow(2).sum(-1).mean(0).mean(0)


def consistency_objective(losses: Sequence[Tensor], scores: Sequence[Tensor], spec: ConsistencySpec
                          ) -> tuple[Tensor, Tensor]:
    """The training objective of S passes: the mean of their supervised losses (each of shape [*], e.g. one per
    member) plus λ times `consistency_loss` of their scores. Returns (objective, the term before λ), both [*]."""
    mean = torch.stack(list(losses)).mean(0)
    term = consistency_loss(scores, spec.temperature).reshape(mean.shape)
    return mean + spec.weight * term, term
