"""Optimiser and learning-rate schedule choices of the classifiers."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import torch
from torch import nn

from cdflow.errors import ConfigError
from cdflow.training.member_adam import MemberAdam

OptimizerName = Literal["adam", "adamw", "sgd"]
SchedulerName = Literal["none", "multistep", "cosine"]


def build_optimizer(
    params: Iterable[nn.Parameter], name: OptimizerName, lr: float, weight_decay: float = 0.0, momentum: float = 0.9,
    members: int = 1,
) -> torch.optim.Optimizer:
    """Adam, AdamW or SGD (with `momentum`, Nesterov off) over `params`. With `members` K > 1, Adam and AdamW
    step each member's slice of a [K, ...] parameter as its own tensor (`MemberAdam`): member k then trains
    bit for bit as the one-member model."""
    if not lr > 0:
        raise ConfigError(f"lr must be > 0, got {lr}")
    if weight_decay < 0:
        raise ConfigError(f"weight_decay must be ≥ 0, got {weight_decay}")
    params = list(params)
    # the fused kernel (one pass over all tensors) is much faster than the per-tensor loop on CPU too
    fused = all(isinstance(p, torch.Tensor) and p.dtype.is_floating_point for p in params) or None
    if name in ("adam", "adamw") and members > 1:
        return MemberAdam(params, members, lr=lr, weight_decay=weight_decay, decoupled=name == "adamw")
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=fused)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise ConfigError(f"unknown optimizer {name!r}; valid: adam, adamw, sgd")


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    name: SchedulerName,
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
    max_epochs: int | None = None,
) -> dict[str, Any] | None:
    """A per-epoch LR schedule as Lightning's ``lr_scheduler`` config, or ``None`` for ``name='none'``.

    ``multistep`` multiplies the rate by `gamma` at each epoch in `milestones`; ``cosine`` anneals it to 0
    over `max_epochs` epochs.
    """
    if name == "none":
        return None
    if name == "multistep":
        if not milestones:
            raise ConfigError("scheduler='multistep' needs milestones (epochs), e.g. --model.milestones [30,45]")
        sched: torch.optim.lr_scheduler.LRScheduler = torch.optim.lr_scheduler.MultiStepLR(
            optimizer, milestones=list(milestones), gamma=gamma
        )
    elif name == "cosine":
        if max_epochs is None or max_epochs < 1:
            raise ConfigError("scheduler='cosine' needs a finite trainer.max_epochs")
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max_epochs)
    else:
        raise ConfigError(f"unknown scheduler {name!r}; valid: none, multistep, cosine")
    return {"scheduler": sched, "interval": "epoch"}


def replan_cosine(scheduler: Any, max_epochs: int | None) -> int | None:
    """Re-plan a `CosineAnnealingLR` restored from a checkpoint of a run with another ``max_epochs``: T_max becomes
    `max_epochs` and each group's rate the closed form η_min + (η₀ − η_min)(1 + cos(π e / T_max))/2 at the epoch e
    reached, from which the scheduler's recursive update goes on. Returns the old T_max, or None if nothing changed."""
    if not isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR) or not max_epochs or max_epochs < 1:
        return None
    old = scheduler.T_max
    if old == max_epochs:
        return None
    scheduler.T_max = max_epochs
    e = min(scheduler.last_epoch, max_epochs)
    rates = [scheduler.eta_min + (base - scheduler.eta_min) * (1 + math.cos(math.pi * e / max_epochs)) / 2
             for base in scheduler.base_lrs]
    for group, rate in zip(scheduler.optimizer.param_groups, rates):
        group["lr"] = rate
    scheduler._last_lr = rates
    return old
