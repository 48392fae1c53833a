"""MNIST semi-supervised: a plain full-batch torch loop over a `ConvectionDiffusionNet` on PCA features.

All points (a stratified subset, or the 70,000 with --full) form one batch; the loss uses the labelled
points only; `Settings.mnist_val_per_class` labelled validation points per class, drawn from the others, choose
the graph model's γ; accuracy is reported on every point neither labelled nor in validation. The kNN graph of
the graph model is built once over the PCA features (self-tuning Gaussian kNN, `cdflow.graph.knn_gaussian_graph`).
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn.functional as F

from experiments.images.config import HPARAMS, Settings
from experiments.images.metrics import masked_accuracy
from experiments.images.mnist_data import labelled_mask, validation_mask
from experiments.images.models import build_net, diffusion_spec, graph_point


def run_mnist(
    kind: str, labels: int, seed: int, x: torch.Tensor, y: torch.Tensor, settings: Settings,
    gamma: float | None = None, n_steps: int | None = None,
) -> dict[str, Any]:
    """Train on the labelled points of (x, y) for `settings.mnist_epochs` full-batch Adam steps; score the
    validation points (``val_acc``) and every other unlabelled point (``unlabelled_acc``). `gamma`, `n_steps`:
    the graph model's grid point (default ``HPARAMS``)."""
    torch.manual_seed(seed)
    train = labelled_mask(y, labels, seed)
    val = validation_mask(y, train, settings.mnist_val_per_class, seed)
    scored = ~(train | val)
    net = build_net(kind, x.shape[1], 10, seed, gamma, n_steps)
    opt = torch.optim.Adam(net.parameters(), lr=HPARAMS["lr"], weight_decay=HPARAMS["weight_decay"])
    start = time.perf_counter()
    losses: list[float] = []
    for _ in range(settings.mnist_epochs):
        net.train()
        opt.zero_grad()
        loss = F.nll_loss(net(x)[train], y[train])
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    fit_s = time.perf_counter() - start
    net.eval()
    with torch.no_grad():
        scores = net(x)
    return {
        "dataset": "mnist", "kind": kind, "labels_per_class": labels, "seed": seed,
        **graph_point(diffusion_spec(kind, gamma, n_steps)),
        "n_points": int(y.shape[0]), "n_labelled": int(train.sum()), "n_val": int(val.sum()),
        "n_scored": int(scored.sum()), "pca_dim": int(x.shape[1]), "epochs": settings.mnist_epochs,
        "val_acc": masked_accuracy(scores, y, val),
        "unlabelled_acc": masked_accuracy(scores, y, scored),
        "train_loss_final": losses[-1], "loss_history": losses[:: max(1, len(losses) // 20)],
        "wall_s": fit_s, "eval_s": time.perf_counter() - start - fit_s,
    }
