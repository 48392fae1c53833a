"""Lightning callbacks drawing figures at the end of testing, saved as PNG and logged to W&B.

* `ConfusionMatrixFigure`: every classifier (needs ``test_step`` to return ``preds`` and ``target``).
* `DecisionBoundaryFigure`, `TrajectoryFigure`: 2-D inputs only (toys); they do nothing otherwise.
* `ConfigToLoggers`: the CLI's config, saved next to the logs and logged as the W&B run config.
* `CompactRichProgressBar`: the CLI's progress bar, with short metric names.

Figures go to ``<trainer.default_root_dir>/figures/<name>.png`` and, with a `WandbLogger`, to the run as
images under ``figures/<name>``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import yaml
from lightning.pytorch.callbacks import Callback, RichProgressBar
from lightning.pytorch.cli import SaveConfigCallback
from matplotlib.figure import Figure
from torch import Tensor

from cdflow.solve import ContinuousDepth
from cdflow.training.figures import confusion_matrix_figure, decision_boundary_figure, trajectories_figure

log = logging.getLogger(__name__)


def save_figure(trainer: L.Trainer, fig: Figure, name: str, dpi: int = 120) -> Path:
    """Write `fig` to ``<default_root_dir>/figures/<name>.png`` and log it to every W&B logger."""
    path = Path(trainer.default_root_dir) / "figures" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    from lightning.pytorch.loggers import WandbLogger

    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            try:
                logger.log_image(key=f"figures/{name}", images=[str(path)])
            except Exception as err:  # noqa: BLE001 — a figure must never fail a run
                log.warning("could not log figure %s to W&B: %s", name, err)
    return path


class ConfusionMatrixFigure(Callback):
    """Confusion matrix of the test predictions, drawn when testing ends."""

    def __init__(self) -> None:
        self._preds: list[Tensor] = []
        self._targets: list[Tensor] = []
        self.path: Path | None = None

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._preds, self._targets = [], []

    def on_test_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if isinstance(outputs, dict) and "preds" in outputs and "target" in outputs:
            self._preds.append(outputs["preds"].detach().cpu())
            self._targets.append(outputs["target"].detach().cpu())

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._preds or not trainer.is_global_zero:
            return
        preds, target = torch.cat(self._preds), torch.cat(self._targets)
        k = int(getattr(pl_module, "num_classes", 0) or int(max(preds.max(), target.max())) + 1)
        cm = torch.bincount(target * k + preds, minlength=k * k).reshape(k, k).numpy()
        self.path = save_figure(trainer, confusion_matrix_figure(cm), "confusion_matrix")


class _TestPoints2D(Callback):
    """Collects the 2-D test inputs and labels (mini-batches, or a graph-free full batch's test mask)."""

    def __init__(self) -> None:
        self._x: list[Tensor] = []
        self._y: list[Tensor] = []
        self.path: Path | None = None

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._x, self._y = [], []

    def on_test_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if isinstance(batch, dict):
            if batch.get("edge_index") is not None:
                return  # a graph: the model's output depends on the neighbours, not on a point alone
            x, y = batch["x"][batch["test_mask"]], batch["y"][batch["test_mask"]]
        elif isinstance(batch, (tuple, list)) and len(batch) >= 2:
            x, y = batch[0], batch[1]
        else:
            return
        if x.ndim == 2 and x.shape[1] == 2:
            self._x.append(x.detach().cpu())
            self._y.append(y.detach().cpu())

    def points(self) -> tuple[Tensor, Tensor] | None:
        if not self._x:
            return None
        return torch.cat(self._x), torch.cat(self._y)


class DecisionBoundaryFigure(_TestPoints2D):
    """Class regions of a classifier of 2-D points over the test set's bounding box.

    Args:
        grid_size: points per axis of the evaluation grid.
    """

    def __init__(self, grid_size: int = 150) -> None:
        super().__init__()
        self.grid_size = grid_size

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pts = self.points()
        if pts is None or not trainer.is_global_zero:
            return
        x, y = pts

        def predict_proba(grid: np.ndarray) -> np.ndarray:
            out = []
            with torch.no_grad():
                for chunk in torch.from_numpy(grid).split(8192):
                    out.append(pl_module(chunk.to(pl_module.device, x.dtype)).softmax(-1).cpu())
            return torch.cat(out).numpy()

        fig = decision_boundary_figure(predict_proba, x.numpy(), y.numpy(), grid_size=self.grid_size)
        self.path = save_figure(trainer, fig, "decision_boundary")


class TrajectoryFigure(_TestPoints2D):
    """Paths of test points through the first continuous-depth block, x(t) for t ∈ [0, T].

    The block's input is captured with a forward pre-hook, then the block is solved again on a grid of
    `num_times` depths. States of more than two dimensions are shown on their top two principal components.

    Args:
        num_points: test points drawn (the first ones).
        num_times: depths at which each path is evaluated.
    """

    def __init__(self, num_points: int = 200, num_times: int = 40) -> None:
        super().__init__()
        self.num_points = num_points
        self.num_times = num_times

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pts = self.points()
        block = next((m for m in pl_module.modules() if isinstance(m, ContinuousDepth)), None)
        if pts is None or block is None or not trainer.is_global_zero:
            return
        x, y = pts[0][: self.num_points], pts[1][: self.num_points]
        captured: list[Tensor] = []
        handle = block.register_forward_pre_hook(lambda _m, args: captured.append(args[0].detach()))
        try:
            with torch.no_grad():
                pl_module(x.to(pl_module.device))
        finally:
            handle.remove()
        if not captured:
            return
        ts = torch.linspace(0.0, block.solver.t1, self.num_times, device=pl_module.device)
        with torch.no_grad():
            traj = block(captured[0], ts=ts)
        fig = trajectories_figure(traj.cpu().numpy(), y.numpy(), ts.cpu().numpy())
        self.path = save_figure(trainer, fig, "trajectories")


class ConfigToLoggers(SaveConfigCallback):
    """Save the resolved CLI config as ``config.yaml`` in the log directory and log it to every logger.

    In W&B the config appears under ``config`` (``config.model.solver.method``, …).
    """

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        config = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
        config.pop("config", None)  # the list of config files read, not a setting
        for logger in trainer.loggers:
            logger.log_hyperparams({"config": config})


class CompactRichProgressBar(RichProgressBar):
    """Rich progress bar showing ``loss``, ``nfe_f`` / ``nfe_b`` (solver evaluations) and ``val_acc``."""

    RENAME = {"train/loss": "loss", "train/nfe_forward": "nfe_f", "train/nfe_backward": "nfe_b", "val/acc": "val_acc"}

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, int | str | float]:
        out: dict[str, int | str | float] = {}
        for key, value in super().get_metrics(trainer, pl_module).items():
            name = self.RENAME.get(key, key)
            if name.startswith("nfe") and isinstance(value, float):
                value = int(round(value))
            out[name] = value
        return out
