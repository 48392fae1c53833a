"""Early stopping of K members trained together, each with its own best state and patience counter.

The paper's rule (the COIN reference code ``graph/train.py``): after evaluating the weights θ_e of member k,

    improved_k = ℓ_k < best ℓ_k  or  a_k > best a_k        (validation loss ℓ, accuracy a; strict)

(with ``improve_on_tie`` ≤ / ≥, as the older Diff-ResNet code). On improvement best ℓ_k ← min, best a_k ← max,
the counter resets and θ_e is kept as the member's best state; otherwise the counter grows, and the member
stops when it reaches the patience. A non-finite ℓ_k never improves. At the end each member's best state is
restored. Pure torch: used by the Lightning callback and by `cdflow.training.member_fit`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from cdflow.errors import ConfigError
from cdflow.models.members import Members


@dataclass(frozen=True)
class StoppingRule:
    """patience: epochs without improvement before a member stops (None: never stop, only keep the best);
    improve_on_tie: count ties as improvements (≤ / ≥)."""

    patience: int | None = 50
    improve_on_tie: bool = False

    def __post_init__(self) -> None:
        if self.patience is not None and (isinstance(self.patience, bool) or self.patience < 1):
            raise ConfigError(f"patience must be an int ≥ 1 or None, got {self.patience!r}")


def stacked_members(model: nn.Module) -> int:
    """K for a model with a member axis in every parameter (COIN, DiffResNet, the baselines: an int
    ``members`` attribute), else 1 (`Members` wraps separate networks; any other network has one member)."""
    native = getattr(model, "members", None)
    return native if isinstance(native, int) and not isinstance(model, Members) else 1


def member_views(model: nn.Module, members: int) -> list[list[Tensor]]:
    """For each member, the tensors that hold its trainable weights.

    A model with a member axis (COIN, DiffResNet, the baselines: a ``members`` attribute) → p[k] of every
    parameter; `Members` → the parameters of its k-th network; any other network → its parameters (K = 1).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if isinstance(model, Members):
        return [[p for p in m.parameters() if p.requires_grad] for m in model.models]
    native = getattr(model, "members", None)
    if isinstance(native, int):
        if native != members:
            raise ConfigError(f"the model has {native} members but {members} are being tracked")
        return [[p[k] for p in params] for k in range(members)]
    if members != 1:
        raise ConfigError("a model without a member axis has one member: wrap it in cdflow.models.Members")
    return [params]


class MemberStopping:
    """Per-member early stopping state for `views` (see `member_views`) under `rule`."""

    def __init__(self, views: list[list[Tensor]], rule: StoppingRule = StoppingRule()) -> None:
        self.views, self.rule = views, rule
        k = len(views)
        self.best = [[t.detach().clone() for t in member] for member in views]
        self.best_loss = torch.full((k,), math.inf)
        self.best_acc = torch.full((k,), -math.inf)
        self.best_epoch = torch.zeros(k, dtype=torch.long)
        self.counter = torch.zeros(k, dtype=torch.long)
        self.running = torch.ones(k, dtype=torch.bool)
        self.stopped_at = torch.full((k,), -1, dtype=torch.long)
        self.evaluations = 0

    @property
    def members(self) -> int:
        return len(self.views)

    @property
    def all_stopped(self) -> bool:
        return not bool(self.running.any())

    @torch.no_grad()
    def update(self, val_loss: Tensor, val_acc: Tensor | None, epoch: int) -> Tensor:
        """Record the validation scores [K] of the current weights (evaluation number `epoch`); returns the
        members that improved (their current weights are now their best state)."""
        loss = val_loss.detach().float().cpu()
        acc = None if val_acc is None else val_acc.detach().float().cpu()
        finite = torch.isfinite(loss)
        if self.rule.improve_on_tie:
            better = loss <= self.best_loss
            if acc is not None:
                better |= acc >= self.best_acc
        else:
            better = loss < self.best_loss
            if acc is not None:
                better |= acc > self.best_acc
        improved = self.running & finite & better
        self.best_loss = torch.where(improved, torch.fmin(self.best_loss, loss), self.best_loss)
        if acc is not None:
            self.best_acc = torch.where(improved, torch.fmax(self.best_acc, acc), self.best_acc)
        self.counter = torch.where(improved, 0, self.counter + 1)
        for i in improved.nonzero().flatten().tolist():  # member by member: no copies of COIN's big W₁
            for b, v in zip(self.best[i], self.views[i]):
                b.copy_(v)
        self.best_epoch[improved] = epoch
        if self.rule.patience is not None:
            stop = self.running & (self.counter >= self.rule.patience)
            self.stopped_at[stop] = epoch
            self.running &= ~stop
        self.evaluations += 1
        return improved

    @torch.no_grad()
    def restore(self) -> None:
        """Put every member's best state back into the model."""
        for member_best, member_views_ in zip(self.best, self.views):
            for b, v in zip(member_best, member_views_):
                v.copy_(b)

    def state_dict(self) -> dict:
        return {"best": self.best, "best_loss": self.best_loss, "best_acc": self.best_acc,
                "best_epoch": self.best_epoch, "counter": self.counter, "running": self.running,
                "stopped_at": self.stopped_at, "evaluations": self.evaluations}

    def load_state_dict(self, state: dict) -> None:
        for name, value in state.items():
            if name == "best":
                for mine, theirs in zip(self.best, value):
                    for b, t in zip(mine, theirs):
                        b.copy_(t)
            else:
                setattr(self, name, value)
