"""Training of the COVID forecasters by the library loop `cdflow.training.fit_members`: Adam, mean squared
error on the observed training targets, a fixed number of epochs (no early stopping: ``patience=None``).

The protocol (the COIN reference code ``covid/train.py``) tests the model after the last epoch; that test
MSE is recorded before any restore (`before_restore`). As an extra reading, each member's state with the
lowest validation MSE is kept (strictly lower; the weights before epoch e's update count as epoch e, the
final weights as epoch `epochs`: `evaluate_final`) and restored and tested too.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from cdflow.training import MemberTraining, StoppingRule, fit_members
from experiments.covid.data import CovidTask


@dataclass(frozen=True)
class CovidTraining:
    lr: float = 0.01
    weight_decay: float = 5e-4
    epochs: int = 100

    def member_training(self) -> MemberTraining:
        """The same settings for `cdflow.training.fit_members`: every epoch runs, the best state is kept."""
        return MemberTraining(lr=self.lr, weight_decay=self.weight_decay, max_epochs=self.epochs,
                              rule=StoppingRule(patience=None))


def member_mse(pred: Tensor, y: Tensor, index: Tensor) -> Tensor:
    """Per-member mean squared error over the rows `index`: pred [M, K] → [K]."""
    return ((pred[index] - y[index][:, None]) ** 2).mean(0)


def fit(model: nn.Module, task: CovidTask, graph: object, training: CovidTraining) -> tuple[list[dict], float]:
    """Train all members; returns per-member records (best epoch, val/test MSE, final-epoch test MSE) and the
    wall time."""
    final: dict[str, Tensor] = {}

    def forward() -> Tensor:
        return model(task.x, graph)

    def record_final() -> None:  # the final weights, in evaluation mode
        with torch.no_grad():
            final["test"] = member_mse(forward(), task.y, task.test)

    result = fit_members(
        model, forward,
        train_loss=lambda pred: member_mse(pred, task.y, task.train),
        val_scores=lambda pred: (member_mse(pred, task.y, task.val), None),  # selection on validation MSE only
        training=training.member_training(), deterministic=False, evaluate_final=True,
        before_restore=record_final,
    )
    stop = result.stopping
    with torch.no_grad():
        pred = forward()  # each member's best-validation state, evaluation mode
        test = member_mse(pred, task.y, task.test)
        nan = ~torch.isfinite(pred).all(0)
    records = [{"best_epoch": int(stop.best_epoch[i]), "val_mse": float(stop.best_loss[i]),
                "test_mse": float(test[i]), "test_mse_final_epoch": float(final["test"][i]), "nan": bool(nan[i])}
               for i in range(stop.members)]
    return records, result.wall_s
