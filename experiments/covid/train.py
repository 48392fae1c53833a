"""Training of the COVID forecasters: Adam, mean squared error on the observed training targets, a fixed
number of epochs; each member's state with the lowest validation MSE is restored and tested.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from experiments.covid.data import CovidTask


@dataclass(frozen=True)
class CovidTraining:
    lr: float = 0.01
    weight_decay: float = 5e-4
    epochs: int = 100


def member_mse(pred: Tensor, y: Tensor, index: Tensor) -> Tensor:
    """Per-member mean squared error over the rows `index`: pred [M, K] → [K]."""
    return ((pred[index] - y[index][:, None]) ** 2).mean(0)


def fit(model: nn.Module, task: CovidTask, graph: object, training: CovidTraining) -> tuple[list[dict], float]:
    """Train all members; returns per-member records (best epoch, val/test MSE, final-epoch test MSE)."""
    start = time.perf_counter()
    params = [p for p in model.parameters() if p.requires_grad]
    k = params[0].shape[0]
    opt = torch.optim.Adam(params, lr=training.lr, weight_decay=training.weight_decay)
    best = [p.detach().clone() for p in params]
    best_val = torch.full((k,), math.inf)
    best_epoch = torch.zeros(k, dtype=torch.long)
    for epoch in range(training.epochs):
        with torch.no_grad():
            val = member_mse(model.eval()(task.x, graph), task.y, task.val)
            better = val < best_val
            if better.any():
                for i in better.nonzero().flatten().tolist():
                    for p, b in zip(params, best):
                        b[i].copy_(p[i])
                best_val = torch.where(better, val, best_val)
                best_epoch[better] = epoch
        loss = member_mse(model.train()(task.x, graph), task.y, task.train)
        opt.zero_grad(set_to_none=True)
        torch.where(torch.isfinite(loss), loss, torch.zeros_like(loss)).sum().backward()
        opt.step()
    with torch.no_grad():
        pred = model.eval()(task.x, graph)
        val = member_mse(pred, task.y, task.val)
        final_test = member_mse(pred, task.y, task.test)
        better = val < best_val
        for p, b in zip(params, best):  # the final state counts as epoch `epochs`
            p.copy_(torch.where(better.view(-1, *([1] * (p.dim() - 1))), p, b))
        best_epoch = torch.where(better, training.epochs, best_epoch)
        best_val = torch.where(better, val, best_val)
        pred = model.eval()(task.x, graph)
        test = member_mse(pred, task.y, task.test)
        nan = ~torch.isfinite(pred).all(0)
    wall = time.perf_counter() - start
    records = [{"best_epoch": int(best_epoch[i]), "val_mse": float(best_val[i]), "test_mse": float(test[i]),
                "test_mse_final_epoch": float(final_test[i]), "nan": bool(nan[i])} for i in range(k)]
    return records, wall
