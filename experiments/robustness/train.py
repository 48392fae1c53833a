"""Mini-batch training of the robustness models (Adam, cosine schedule, cross-entropy on log-probabilities)."""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from experiments.robustness.config import HPARAMS, Settings


def train_model(model: nn.Module, x: Tensor, y: Tensor, settings: Settings, seed: int) -> dict[str, Any]:
    """Train `model` on (x, y) for `settings.epochs` epochs; returns losses, time per epoch and NFE per step."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=HPARAMS["lr"])
    steps_per_epoch = -(-len(y) // settings.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=settings.epochs * steps_per_epoch)
    epoch_s: list[float] = []
    losses: list[float] = []
    nfe = 0
    for _ in range(settings.epochs):
        model.train()
        start = time.perf_counter()
        order = torch.randperm(len(y), generator=gen)
        total = 0.0
        for i in range(0, len(y), settings.batch_size):
            idx = order[i:i + settings.batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        stats = getattr(getattr(model, "net", None), "stats", None)
        nfe = int(stats.nfe_forward) if stats is not None else 0
        epoch_s.append(time.perf_counter() - start)
        losses.append(total / len(y))
    return {"epoch_loss": losses, "epoch_s": epoch_s, "nfe_forward_per_step": nfe}
