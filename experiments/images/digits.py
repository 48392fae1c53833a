"""Digits (8×8, 1,797 points), transductive, through the LightningModule and a Lightning Trainer.

Equivalent CLI (``experiments/configs/digits_semi.yaml`` sets ``network: cdnet``)::

    cdflow fit --config experiments/configs/digits_semi.yaml --data.init_args.labels_per_class L \
        --model.diffusion.kind none|graph|noise [--model.diffusion.n_steps 2] \
        [--model.solver.method euler --model.solver.step_size 0.1 --model.diffusion.sigma 0.5]

except that the final weights are scored (no checkpoint chosen on the labelled validation split; that split's
accuracy chooses the graph model's γ, see ``selection.py``). Every model
is the same `ConvectionDiffusionNet` (``network="cdnet"``); ``none_default`` is the module's default encoder →
ODE → head network (``network="default"``: linear encoder without tanh, dropout after it).
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import lightning as L
import torch

from cdflow.data.modules import DigitsDataModule
from cdflow.training.module import ContinuousDepthClassifier
from experiments.images.config import HPARAMS, Settings
from experiments.images.metrics import masked_accuracy
from experiments.images.models import diffusion_spec, graph_point, graph_spec, solver_spec


def _module(kind: str, dm: DigitsDataModule, seed: int, gamma: float | None,
            n_steps: int | None) -> ContinuousDepthClassifier:
    """The module for `kind`: the ConvectionDiffusionNet (network="cdnet"), or the default net for none_default."""
    hp = HPARAMS
    base = "none" if kind == "none_default" else kind
    return ContinuousDepthClassifier(
        num_classes=dm.num_classes, input_shape=dm.input_shape, encoder="linear", hidden=hp["hidden"],
        velocity="mlp", width=hp["width"], depth=hp["depth"], activation=hp["activation"], dropout=hp["dropout"],
        solver=solver_spec(base), diffusion=diffusion_spec(base, gamma, n_steps), graph=graph_spec(), lr=hp["lr"],
        weight_decay=hp["weight_decay"], seed=seed, network="default" if kind == "none_default" else "cdnet",
    )


def run_digits(kind: str, labels: int, seed: int, settings: Settings, gamma: float | None = None,
               n_steps: int | None = None) -> dict[str, Any]:
    """Train one digits model for `settings.digits_epochs` full-batch steps; score its final weights on the
    validation split (``val_acc``), on every point neither labelled nor in that split (``unlabelled_acc``) and on
    the test split (``test_acc``). `gamma`, `n_steps`: the graph model's grid point (default ``HPARAMS``)."""
    L.seed_everything(seed, verbose=False)
    dm = DigitsDataModule(transductive=True, labels_per_class=labels, seed=seed)
    dm.setup("fit")
    model = _module(kind, dm, seed, gamma, n_steps)
    trainer = L.Trainer(
        max_epochs=settings.digits_epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0, accelerator="cpu", devices=1,
    )
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(does not have many workers|val_dataloader|LeafSpec).*")
        trainer.fit(model, datamodule=dm)
    fit_s = time.perf_counter() - start
    batch = dm.batch
    assert batch is not None
    model.eval()
    with torch.no_grad():
        logits = model(batch["x"], None)
    unlabelled = ~(batch["train_mask"] | batch["val_mask"])
    return {
        "dataset": "digits", "kind": kind, "labels_per_class": labels, "seed": seed,
        **graph_point(model.diffusion),
        "n_points": int(batch["y"].shape[0]), "n_labelled": int(batch["train_mask"].sum()),
        "n_val": int(batch["val_mask"].sum()), "n_scored": int(unlabelled.sum()),
        "epochs": settings.digits_epochs,
        "val_acc": masked_accuracy(logits, batch["y"], batch["val_mask"]),
        "unlabelled_acc": masked_accuracy(logits, batch["y"], unlabelled),
        "test_acc": masked_accuracy(logits, batch["y"], batch["test_mask"]),
        "train_loss_final": float(trainer.callback_metrics.get("train/loss", torch.tensor(float("nan")))),
        "wall_s": fit_s,
    }
