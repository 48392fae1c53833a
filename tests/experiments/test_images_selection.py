"""The images experiment's graph model is chosen on validation accuracy only: `selection.select` takes the grid
point of highest mean validation accuracy over the seeds (ties to the smaller γ) and ignores every other
accuracy; the MNIST validation points are disjoint from the labelled ones; the grid options act or are refused."""

from __future__ import annotations

import pytest
import torch
from smoke_runner import experiments_module

from cdflow.errors import ConfigError


def _run(gamma: float, seed: int, val: float, test: float, unlabelled: float, n_steps: int = 2,
         labels: int = 1, dataset: str = "digits") -> dict:
    return {"dataset": dataset, "kind": "graph", "labels_per_class": labels, "seed": seed, "gamma": gamma,
            "n_steps": n_steps, "val_acc": val, "test_acc": test, "unlabelled_acc": unlabelled, "wall_s": 1.0}


def test_select_takes_the_best_mean_validation_accuracy_and_ignores_test_and_unlabelled():
    sel = experiments_module("images.selection")
    runs = [
        # γ = 1: best single validation run (seed 0) but mean 0.65; best test and unlabelled accuracy
        _run(1.0, 0, val=0.90, test=0.99, unlabelled=0.99), _run(1.0, 1, val=0.40, test=0.99, unlabelled=0.99),
        # γ = 3: best mean validation accuracy (0.70), worst test / unlabelled accuracy
        _run(3.0, 0, val=0.70, test=0.10, unlabelled=0.10), _run(3.0, 1, val=0.70, test=0.10, unlabelled=0.10),
        _run(10.0, 0, val=0.50, test=0.50, unlabelled=0.50), _run(10.0, 1, val=0.50, test=0.50, unlabelled=0.50),
        {"dataset": "digits", "kind": "none", "labels_per_class": 1, "seed": 0, "val_acc": 1.0, "test_acc": 1.0,
         "unlabelled_acc": 1.0, "wall_s": 1.0},  # other models are not candidates
    ]
    out = sel.select(runs)
    assert set(out) == {"digits/1"}
    s = out["digits/1"]
    assert s["chosen"] == {"gamma": 3.0, "n_steps": 2, "val_mean": pytest.approx(0.70)}
    assert [(p["gamma"], p["n"], p["seeds"]) for p in s["grid"]] == [(1.0, 2, [0, 1]), (3.0, 2, [0, 1]),
                                                                     (10.0, 2, [0, 1])]
    assert [p["val_mean"] for p in s["grid"]] == pytest.approx([0.65, 0.70, 0.50])
    assert not s["at_edge"]
    assert {r["gamma"] for r in sel.chosen_runs(runs, out)} == {3.0}
    assert len(sel.chosen_runs(runs, out)) == 2


def test_select_is_per_dataset_and_labels_breaks_ties_to_the_smaller_gamma_and_flags_the_grid_edge():
    sel = experiments_module("images.selection")
    runs = [_run(g, 0, val=v, test=0.5, unlabelled=0.5, labels=5) for g, v in ((1.0, 0.6), (3.0, 0.8), (10.0, 0.8))]
    runs += [_run(g, 0, val=v, test=0.5, unlabelled=0.5, dataset="mnist") for g, v in ((1.0, 0.9), (3.0, 0.2))]
    runs += [_run(3.0, 0, val=0.8, test=0.5, unlabelled=0.5, labels=5, n_steps=10)]  # tie at γ = 3: fewer steps
    out = sel.select(runs)
    assert set(out) == {"digits/5", "mnist/1"}
    assert (out["digits/5"]["chosen"]["gamma"], out["digits/5"]["chosen"]["n_steps"]) == (3.0, 2)
    assert not out["digits/5"]["at_edge"]
    assert out["mnist/1"]["chosen"]["gamma"] == 1.0 and out["mnist/1"]["at_edge"]


def test_mnist_validation_points_are_outside_the_labelled_points_and_stratified():
    data = experiments_module("images.mnist_data")
    y = torch.arange(10).repeat(30)  # 30 points per class
    labelled = data.labelled_mask(y, 20, seed=0)  # 20 of each class's 30 labelled: 10 left per class
    val = data.validation_mask(y, labelled, 10, seed=0)
    assert not bool((val & labelled).any())
    assert torch.equal(torch.bincount(y[val], minlength=10), torch.full((10,), 10))
    assert torch.equal(val | labelled, torch.ones_like(val))


def test_graph_grid_point_acts_and_is_refused_where_it_cannot_act():
    models = experiments_module("images.models")
    config = experiments_module("images.config")
    spec = models.diffusion_spec("graph", 3.0, 7)
    assert (spec.kind, spec.gamma, spec.n_steps) == ("graph", 3.0, 7)
    default = models.diffusion_spec("graph")
    assert (default.gamma, default.n_steps) == (config.HPARAMS["diffusion_graph"]["gamma"],
                                                config.HPARAMS["diffusion_graph"]["n_steps"])
    assert models.graph_point(spec) == {"gamma": 3.0, "n_steps": 7} and models.graph_point(
        models.diffusion_spec("none")) == {}
    for kind in ("none", "noise"):
        with pytest.raises(ConfigError, match="has none"):
            models.diffusion_spec(kind, gamma=3.0)
        with pytest.raises(ConfigError, match="has none"):
            models.diffusion_spec(kind, n_steps=3)
    for bad in ({"gamma_grid": ()}, {"gamma_grid": (-1.0,)}, {"steps_grid": (0,)}, {"mnist_val_per_class": 0}):
        with pytest.raises(ConfigError):
            config.Settings("smoke", seeds=(0,), mnist_seeds=(0,), **bad)
