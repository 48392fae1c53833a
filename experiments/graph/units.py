"""One unit of work: a model row trained on one split for a group of initialisations (one batched model).

Seeds: random split s is `random_split(labels, SPLIT_SEEDS[s])` (the reference code's split seeds);
initialisation i of split s has seed 1000·s + i (the Planetoid split uses s = 0), the same for every row,
so rows are paired by initialisation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from cdflow.models.batched import BatchedCOIN, member_generators
from experiments.graph.configs import ModelSpec, Training
from experiments.graph.data import SPLIT_SEEDS, GraphTask, load_task
from experiments.graph.train import fit_members

_TASKS: dict[tuple[str, bool], GraphTask] = {}


def task(dataset: str, public: bool) -> GraphTask:
    """The dataset's task, loaded once per process."""
    key = (dataset, public)
    if key not in _TASKS:
        _TASKS[key] = load_task(dataset, planetoid=public)
    return _TASKS[key]


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

    def init_seeds(self) -> list[int]:
        return [1000 * self.split + i for i in self.inits]


def run_unit(unit: Unit) -> list[dict[str, Any]]:
    """Train the unit's batched model and return one record per initialisation."""
    t = task(unit.dataset, unit.public)
    masks = t.masks(unit.split)
    seeds = unit.init_seeds()
    torch.manual_seed(seeds[0] + 7919 * (len(seeds) + 1))  # dropout masks
    model = unit.spec.build(len(seeds), t.num_features, t.num_classes)
    model.reset_parameters(member_generators(seeds))
    graph = {"lap": t.lap, "adj": t.adj, "none": None}[unit.spec.graph]
    results, wall = fit_members(model, t.x, graph, t.y, masks, unit.training, unit.spec.deterministic)
    records = []
    for i, (seed, res) in enumerate(zip(seeds, results)):
        rec: dict[str, Any] = {
            "phase": unit.phase,
            "dataset": unit.dataset,
            "split_protocol": "public" if unit.public else "random",
            "model": unit.spec.key,
            "label": unit.spec.label,
            "kwargs": unit.spec.kwargs,
            "split": unit.split,
            "split_seed": None if unit.public else SPLIT_SEEDS[unit.split],
            "init": unit.inits[i],
            "init_seed": seed,
            "members_in_batch": len(seeds),
            "batch_wall_s": wall,
            "wall_s": wall / len(seeds),
            "pid": os.getpid(),
            **res.as_dict(),
        }
        if isinstance(model, BatchedCOIN) and model.last_u is not None:
            u = model.last_u[:, i]
            rec["negative_u_entries"] = int((u < 0).sum())
            rec["min_u"] = float(u.min())
            rec["nonfinite_u_entries"] = int((~torch.isfinite(u)).sum())
            if model.diffusion_stats is not None:
                rec["laplacian_products"] = model.diffusion_stats.products
        if unit.spec.family == "cdnet" and getattr(model, "stats", None) is not None:
            rec["nfe_forward_last"] = model.stats.nfe_forward
        records.append(rec)
    return records
