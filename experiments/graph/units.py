"""One unit of work: a model row trained on one split for a group of initialisations (one model with a
member axis), by the library's loop `cdflow.training.fit_members` under the row's stopping rule (the
protocol's unless the row sets its own, `ModelSpec.training`).

Seeds: random split s is `random_split(labels, SPLIT_SEEDS[s])` (the reference code's split seeds);
initialisation i of split s has seed 1000·s + i ("paired") or the Diff-ResNet reference's seed for it
("authors", `experiments.graph.data.init_seeds`); the Planetoid split uses s = 0. Under either rule the seeds
are the same for every row of a dataset, so rows are paired by initialisation. Under "authors" the Diff-ResNet
rows also draw their weights as the reference does (`ModelSpec.build(reference_init=True)`).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from cdflow.graph import Laplacian
from cdflow.models import COIN, Members
from cdflow.models.layers import member_accuracy, member_nll
from cdflow.sparse import SparseMatrix
from cdflow.training import MemberFit, fit_node_members
from experiments.graph.configs import ModelSpec, Training
from experiments.graph.data import SPLIT_SEEDS, GraphTask, Masks, init_seeds, load_task

TASKS: dict[tuple[str, bool], GraphTask] = {}


def task(dataset: str, public: bool) -> GraphTask:
    """The dataset's task, loaded once per process."""
    key = (dataset, public)
    if key not in TASKS:
        TASKS[key] = load_task(dataset, planetoid=public)
    return TASKS[key]


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


def train(model: nn.Module, x: SparseMatrix, graph: Laplacian | SparseMatrix | None, y: Tensor, masks: Masks,
          training: Training, deterministic: bool) -> tuple[list[MemberResult], MemberFit]:
    """Train every member with `training`'s early stopping (`cdflow.training.fit_members`: NLL on the
    training nodes, validation loss and accuracy for the rule), restore each member's best state and score it."""

    fit, forward = fit_node_members(model, x, graph, y, masks.train, masks.val, training.member_training(),
                                    deterministic)
    with torch.no_grad():
        out = forward()  # the restored weights, evaluation mode
        train_acc, val_acc = member_accuracy(out, y, masks.train), member_accuracy(out, y, masks.val)
        test_acc, val_loss = member_accuracy(out, y, masks.test), member_nll(out, y, masks.val)
        nan = ~torch.isfinite(out).flatten(2).all(-1).all(0)
    stop = fit.stopping
    epochs = torch.where(stop.stopped_at >= 0, stop.stopped_at + 1, training.max_epochs)
    results = [
        MemberResult(int(epochs[i]), int(stop.best_epoch[i]), float(train_acc[i]), float(val_acc[i]),
                     float(val_loss[i]), float(test_acc[i]), bool(nan[i]))
        for i in range(stop.members)
    ]
    return results, fit


@dataclass(frozen=True)
class Unit:
    """A model row on one split for the initialisations `inits` (split seeds; 'public' = Planetoid split)."""

    dataset: str
    public: bool
    spec: ModelSpec
    split: int
    inits: tuple[int, ...]
    training: Training
    phase: str = "main"  # or "tune"
    seed_rule: str = "paired"  # or "authors" (`experiments.graph.data.init_seeds`)

    def init_seeds(self) -> list[int]:
        """The seeds of the unit's initialisations (the Planetoid split takes random split 0's)."""
        labels = task(self.dataset, False).y if self.seed_rule == "authors" else None
        return init_seeds(self.seed_rule, self.split, self.inits, labels)


def run_unit(unit: Unit) -> list[dict[str, Any]]:
    """Train the unit's model and return one record per initialisation."""
    t = task(unit.dataset, unit.public)
    masks = t.masks(unit.split)
    seeds = unit.init_seeds()
    torch.manual_seed(seeds[0] + 7919 * (len(seeds) + 1))  # dropout masks
    reference_init = unit.seed_rule == "authors" and unit.spec.family == "diffresnet"
    model = unit.spec.build(seeds, t.num_features, t.num_classes, reference_init=reference_init)
    graph = {"lap": t.lap, "adj": t.adj, "none": None}[unit.spec.graph]
    training = unit.spec.training(unit.training)  # the protocol's, with the row's stopping rule
    results, fit = train(model, t.x, graph, t.y, masks, training, unit.spec.deterministic)
    records = []
    for i, (seed, res) in enumerate(zip(seeds, results)):
        rec: dict[str, Any] = {
            "phase": unit.phase,
            "dataset": unit.dataset,
            "split_protocol": "public" if unit.public else "random",
            "model": unit.spec.key,
            "label": unit.spec.row_label(training),
            "family": unit.spec.family,
            "kwargs": unit.spec.kwargs,
            "split": unit.split,
            "split_seed": None if unit.public else SPLIT_SEEDS[unit.split],
            "init": unit.inits[i],
            "init_seed": seed,
            "init_seed_rule": unit.seed_rule,
            "reference_init": reference_init,  # weights drawn as the Diff-ResNet reference's nn.Linear layers
            "stopping": training.stopping(),
            **({"consistency": vars(training.consistency_spec())} if training.consistency > 0 else {}),
            "members_in_batch": len(seeds),
            "batch_wall_s": fit.wall_s,
            "wall_s": fit.wall_s / len(seeds),
            "pid": os.getpid(),
            "n_nodes": t.data.num_nodes,
            "lam_max": t.lam_max,  # Lanczos estimate of λ_max(L), for the report's stability statement
            **res.as_dict(),
        }
        if isinstance(model, COIN) and model.last_u is not None:
            u = model.last_u[:, i]  # u(T) of the restored weights: [N, K, C] for every K (no squeeze)
            rec["negative_u_entries"] = int((u < 0).sum())
            rec["min_u"] = float(u.min())
            rec["nonfinite_u_entries"] = int((~torch.isfinite(u)).sum())
            if model.diffusion_stats is not None:
                rec["laplacian_products"] = model.diffusion_stats.products
        if isinstance(model, Members):
            stats = getattr(model.models[i], "stats", None)
            if stats is not None:
                rec["nfe_forward_last"] = stats.nfe_forward
        records.append(rec)
    return records
