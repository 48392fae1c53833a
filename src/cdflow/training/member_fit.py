"""`fit_members`: the plain-torch loop that trains K members of one transductive model with early stopping.

Per epoch e, with θ_e the current weights: (1) validation scores of θ_e — from the training forward when the
model is deterministic (no dropout: one forward per epoch), else from an evaluation forward without
gradients; (2) `MemberStopping.update` (the paper's rule); (3) one optimiser step on Σ_k over running members
of member k's training loss. Ends when every member has stopped (or at max_epochs) and restores each
member's best state. The same rule runs inside `cdflow fit` as the `MemberEarlyStopping` callback; this loop
skips Lightning's start-up and per-epoch machinery, for protocols of thousands of short runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from cdflow.errors import ConfigError
from cdflow.models.layers import member_accuracy, member_nll
from cdflow.training.consistency import ConsistencySpec, consistency_objective
from cdflow.training.member_stopping import MemberStopping, StoppingRule, member_views, stacked_members
from cdflow.training.optim import build_optimizer


@dataclass(frozen=True)
class MemberTraining:
    """Adam with L2 weight decay (the paper's: lr 0.01, 5e-4), at most max_epochs, the stopping rule; for node
    classification (`fit_node_members`) optionally consistency regularisation over S dropout draws."""

    lr: float = 0.01
    weight_decay: float = 5e-4
    max_epochs: int = 10_000
    rule: StoppingRule = StoppingRule()
    optimizer: str = "adam"
    consistency: ConsistencySpec = ConsistencySpec()


@dataclass
class MemberFit:
    """What `fit_members` returns: the stopping state (best epochs, stopped epochs), epochs run, wall time."""

    stopping: MemberStopping
    epochs: int
    wall_s: float


def fit_members(
    model: nn.Module,
    forward: Callable[[], Tensor],
    train_loss: Callable[[Tensor], Tensor],
    val_scores: Callable[[Tensor], tuple[Tensor, Tensor | None]],
    training: MemberTraining,
    deterministic: bool,
    members: int | None = None,
    evaluate_final: bool = False,
    before_restore: Callable[[], None] | None = None,
) -> MemberFit:
    """Train `model` (forward() → outputs with the member axis second, e.g. [N, K, C]).

    train_loss(out) → [K] training losses; val_scores(out) → ([K] validation losses, [K] accuracies or None).
    evaluate_final: after max_epochs steps, also score the final weights (as evaluation max_epochs);
    before_restore: called with the final weights in place, before the best states are restored.
    """
    start = time.perf_counter()
    k = members if members is not None else int(getattr(model, "members", 1))
    stopping = MemberStopping(member_views(model, k), training.rule)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = build_optimizer(params, training.optimizer, training.lr, training.weight_decay,  # type: ignore[arg-type]
                          members=stacked_members(model))
    skips_stopped = hasattr(model, "active")
    epoch = 0
    for epoch in range(training.max_epochs):
        if skips_stopped:
            model.active = stopping.running.nonzero().flatten().tolist()
        model.train()
        out = forward()
        if deterministic:
            ev = out.detach()
        else:
            with torch.no_grad():
                model.eval()
                ev = forward()
            model.train()
        loss_v, acc_v = val_scores(ev)
        stopping.update(loss_v, acc_v, epoch)
        if stopping.all_stopped:
            break
        loss = train_loss(out)
        weights = stopping.running.to(loss.dtype)
        total = (torch.where(torch.isfinite(loss), loss, torch.zeros_like(loss)) * weights).sum()
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
    if skips_stopped:
        model.active = None
    if evaluate_final and not stopping.all_stopped:
        with torch.no_grad():
            model.eval()
            stopping.update(*val_scores(forward()), training.max_epochs)
    if before_restore is not None:
        model.eval()
        before_restore()
    stopping.restore()
    model.eval()
    return MemberFit(stopping, epoch + 1, time.perf_counter() - start)


def fit_node_members(
    model: nn.Module,
    x: object,
    graph: object,
    y: Tensor,
    train: Tensor,
    val: Tensor,
    training: MemberTraining,
    deterministic: bool,
    members: int | None = None,
) -> tuple[MemberFit, Callable[[], Tensor]]:
    """`fit_members` for transductive node classification: NLL of the log-probabilities on the nodes `train`,
    validation loss and accuracy on the nodes `val` for the rule. Returns the fit and the forward pass (outputs
    [N, K, C], the member axis restored for one-member models) for scoring the restored weights.

    With `training.consistency` on, each training step takes S passes (independent dropout draws): the loss is
    their mean NLL on `train` plus λ times `consistency_loss` over all nodes (`cdflow.training.consistency`)."""
    cons = training.consistency
    if cons.enabled and deterministic:
        raise ConfigError("consistency regularisation compares passes under independent dropout draws; this "
                          "model is deterministic (no dropout), so its passes would be identical")

    def forward() -> Tensor:
        out = model(x, graph)
        return out[:, None] if out.ndim == 2 else out  # COIN / DiffResNet drop the member axis when K = 1

    def train_forward() -> Tensor:
        if not (cons.enabled and model.training):
            return forward()
        return torch.stack([forward() for _ in range(cons.samples)])  # [S, N, K, C]

    def train_loss(out: Tensor) -> Tensor:
        if out.ndim == 3:
            return member_nll(out, y, train)
        return consistency_objective([member_nll(o, y, train) for o in out], list(out), cons)[0]

    fit = fit_members(model, train_forward, train_loss,
                      lambda out: (member_nll(out, y, val), member_accuracy(out, y, val)),
                      training, deterministic, members)
    return fit, forward
