"""Early-stopped training of a batched model: every member keeps its own best state and patience counter.

Per epoch e, with θ_e the current weights of every member k:

1. validation loss ℓ_k and accuracy a_k of θ_e (from the training forward when the model has no dropout,
   else from an evaluation forward without gradients);
2. member k improves when ℓ_k < best ℓ_k or a_k > best a_k (as the COIN reference code `graph/train.py`;
   with `training.improve_on_tie`, ≤ / ≥ as the older Diff-ResNet code, where a tie in validation accuracy
   also counts): then best ℓ_k ← min, best a_k ← max, its
   counter ← 0 and its best state ← θ_e; otherwise its counter grows; it stops when the counter reaches
   the patience (a non-finite ℓ_k never improves);
3. one Adam step on Σ_k over running members of the mean training NLL of member k.

Training ends when every member has stopped (or at max_epochs); each member's best state is restored
and evaluated. Stopped members no longer contribute to the loss, so they neither interfere nor matter.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from cdflow.models.batched import SparseRows, stacked_nll
from experiments.graph.configs import Training
from experiments.graph.data import Masks


@dataclass
class MemberResult:
    """One initialisation's run: epochs trained, the restored epoch and its metrics."""

    epochs: int
    best_epoch: int
    train_acc: float
    val_acc: float
    val_loss: float
    test_acc: float
    nan: bool

    def as_dict(self) -> dict:
        return asdict(self)


def accuracy(logp: Tensor, y: Tensor, index: Tensor) -> Tensor:
    """Per-member accuracy over the nodes `index`: [N, K, C] → [K]."""
    return (logp[index].argmax(-1) == y[index][:, None]).to(logp.dtype).mean(0)


def fit_members(
    model: nn.Module,
    x: SparseRows,
    graph: SparseRows | None,
    y: Tensor,
    masks: Masks,
    training: Training,
    deterministic: bool,
) -> tuple[list[MemberResult], float]:
    """Train every member of `model` with early stopping; returns the members' results and the wall time."""
    start = time.perf_counter()
    params = [p for p in model.parameters() if p.requires_grad]
    k = params[0].shape[0]
    if any(p.shape[0] != k for p in params):
        raise ValueError("every parameter of a batched model must have the member axis first")
    opt = torch.optim.Adam(params, lr=training.lr, weight_decay=training.weight_decay, fused=True)
    best = [p.detach().clone() for p in params]
    best_loss = torch.full((k,), math.inf)
    best_acc = torch.full((k,), -1.0)
    best_epoch = torch.zeros(k, dtype=torch.long)
    counter = torch.zeros(k, dtype=torch.long)
    running = torch.ones(k, dtype=torch.bool)
    epochs = torch.full((k,), training.max_epochs, dtype=torch.long)
    skips_stopped = hasattr(model, "active")  # BatchedCOIN: compute only the members still running
    for epoch in range(training.max_epochs):
        if skips_stopped:
            model.active = running.nonzero().flatten().tolist()
        model.train()
        out = model(x, graph)
        loss = stacked_nll(out, y, masks.train)
        if deterministic:
            ev = out.detach()
        else:
            with torch.no_grad():
                ev = model.eval()(x, graph)
            model.train()
        with torch.no_grad():
            val_loss = stacked_nll(ev, y, masks.val)
            val_acc = accuracy(ev, y, masks.val)
            finite = torch.isfinite(val_loss)
            if training.improve_on_tie:
                better = (val_loss <= best_loss) | (val_acc >= best_acc)
            else:
                better = (val_loss < best_loss) | (val_acc > best_acc)
            improved = running & finite & better
            best_loss = torch.where(improved, torch.fmin(best_loss, val_loss), best_loss)
            best_acc = torch.where(improved, torch.fmax(best_acc, val_acc), best_acc)
            counter = torch.where(improved, 0, counter + 1)
            if improved.any():
                idx = improved.nonzero().flatten().tolist()
                for p, b in zip(params, best):  # member by member: no temporary copies of COIN's big W₁
                    for i in idx:
                        b[i].copy_(p[i])
                best_epoch[improved] = epoch
            stop = running & (counter >= training.patience)
            epochs[stop] = epoch + 1
            running &= ~stop
        if not running.any():
            break
        weights = running.to(loss.dtype)
        total = (torch.where(torch.isfinite(loss), loss, torch.zeros_like(loss)) * weights).sum()
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
    if skips_stopped:
        model.active = None
    with torch.no_grad():
        for p, b in zip(params, best):
            p.copy_(b)
        out = model.eval()(x, graph)
        train_acc, val_acc = accuracy(out, y, masks.train), accuracy(out, y, masks.val)
        test_acc, val_loss = accuracy(out, y, masks.test), stacked_nll(out, y, masks.val)
        nan = ~torch.isfinite(out).flatten(2).all(-1).all(0)
    wall = time.perf_counter() - start
    results = [
        MemberResult(int(epochs[i]), int(best_epoch[i]), float(train_acc[i]), float(val_acc[i]), float(val_loss[i]),
                     float(test_acc[i]), bool(nan[i]))
        for i in range(k)
    ]
    return results, wall
