"""One toy run: full-batch SGD of `ToyDiffResNet` on one dataset, seed and protocol.

Protocols (transductive: all points go through the network and the graph in one batch):

* ``split``: a seeded random permutation gives train / val / test = 20% / 20% / 60% of the points; the
  cross-entropy is taken on the train points only; reported: test accuracy after the last SGD step, and
  test accuracy at the step of best validation accuracy (first maximum).
* ``all``: the reference scripts' protocol, every label used for training and accuracy measured on all
  points ("fit accuracy").

SGD as in the reference: lr per recipe, weight decay 5e-4; the reference builds a fresh SGD(momentum=0.9)
optimiser at every step, so the momentum buffer never carries over and each step is plain SGD (momentum 0).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

import torch
from torch import Tensor, nn

from cdflow.data.toys import make_toy
from cdflow.heat import explicit_diffusion
from experiments.toys.config import RECIPES, Settings
from experiments.toys.model import ToyDiffResNet, diffusion_propagator, toy_laplacian


def split_masks(n: int, seed: int, train_frac: float, val_frac: float) -> dict[str, Tensor]:
    """Boolean masks train / val / test from a seeded permutation of the n points."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(10_000 + seed))
    n_train, n_val = round(train_frac * n), round(val_frac * n)
    masks = {}
    for name, idx in (("train", perm[:n_train]), ("val", perm[n_train : n_train + n_val]),
                      ("test", perm[n_train + n_val :])):
        m = torch.zeros(n, dtype=torch.bool)
        m[idx] = True
        masks[name] = m
    return masks


def _accuracy(logits: Tensor, y: Tensor, mask: Tensor) -> float:
    return float((logits[mask].argmax(1) == y[mask]).float().mean())


def prepare(dataset: str, seed: int, settings: Settings, diffusion: bool) -> dict[str, Any]:
    """Data, Laplacian and (with diffusion) the propagator D = (I − τL)ⁿ, with the explicit-layer check."""
    recipe = RECIPES[dataset]
    x, y = make_toy(dataset, seed=seed, n_per_class=settings.n_per_class)  # type: ignore[arg-type]
    l_mat = toy_laplacian(x, recipe.k, recipe.eps)
    out: dict[str, Any] = {"x": x, "y": y, "laplacian": l_mat, "propagator": None, "check": None}
    if diffusion:
        d = diffusion_propagator(l_mat, recipe.tau, recipe.n_steps)
        explicit, _ = explicit_diffusion(x, l_mat, recipe.tau, recipe.n_steps)
        out["propagator"] = d
        out["check"] = float((d @ x - explicit).abs().max())
    return out


def train_run(
    dataset: str, seed: int, diffusion: bool, protocol: str, settings: Settings, prepared: dict[str, Any]
) -> tuple[dict[str, Any], ToyDiffResNet]:
    """Train one model; returns the per-run record (accuracy histories, summary numbers) and the model."""
    recipe = RECIPES[dataset]
    x, y = prepared["x"], prepared["y"]
    n = x.shape[0]
    if protocol == "split":
        masks = split_masks(n, seed, settings.train_frac, settings.val_frac)
    else:
        everything = torch.ones(n, dtype=torch.bool)
        masks = {"train": everything, "val": everything, "test": everything}
    start = time.perf_counter()
    torch.manual_seed(seed)
    model = ToyDiffResNet(prepared["propagator"])
    opt = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=0.0, weight_decay=recipe.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    hist: dict[str, list[float]] = {"loss": [], "train": [], "val": [], "test": []}
    for step in range(settings.sgd_steps + 1):
        logits = model(x)
        loss = loss_fn(logits[masks["train"]], y[masks["train"]])
        hist["loss"].append(float(loss.detach()))
        for name, m in masks.items():
            hist[name].append(_accuracy(logits.detach(), y, m))
        if step == settings.sgd_steps:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
    best = max(range(len(hist["val"])), key=lambda i: (hist["val"][i], -i))
    record = {
        "dataset": dataset, "seed": seed, "diffusion": diffusion, "protocol": protocol,
        "n_points": n, "n_train": int(masks["train"].sum()), "n_test": int(masks["test"].sum()),
        "recipe": asdict(recipe), "diffusion_steps": recipe.n_steps if diffusion else 0,
        "test_acc_final": hist["test"][-1], "test_acc_best_val": hist["test"][best], "best_val_step": best,
        "final_loss": hist["loss"][-1], "history": hist,
        "propagator_vs_explicit_max_abs_diff": prepared["check"],
        "wall_s": time.perf_counter() - start,
    }
    return record, model
