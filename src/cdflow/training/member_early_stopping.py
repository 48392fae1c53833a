"""`MemberEarlyStopping`: the paper's early-stopping rule as a Lightning callback, for K members at once.

Every validation (the sanity check included: it scores the initial weights θ₀, as the reference loop does;
with ``validate_on_train_forward``, every training step, before its update) feeds the per-member validation
loss and accuracy of `ContinuousDepthClassifier` to `MemberStopping`: a member whose loss strictly falls or
whose accuracy strictly rises keeps its weights as its best state and resets its counter; after `patience`
evaluations without improvement it stops (no more gradient, and COIN skips its work); training ends when every
member has stopped. At the end of fit the best states are restored, so `cdflow fit` tests them (the run
summary says so). Stopping state is saved in checkpoints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from cdflow.training.member_stopping import MemberStopping, StoppingRule, member_views


class MemberEarlyStopping(Callback):
    """Args:
    patience: evaluations without improvement before a member stops (the paper: 50).
    improve_on_tie: count ties as improvements (the older Diff-ResNet code's ≤ / ≥).
    restore_best: put each member's best weights back at the end of fit (then tested).
    """

    def __init__(self, patience: int = 50, improve_on_tie: bool = False, restore_best: bool = True) -> None:
        self.rule = StoppingRule(patience, improve_on_tie)
        self.restore_best = restore_best
        self.state: MemberStopping | None = None
        self._pending: dict | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and self.state is None:
            self.state = MemberStopping(member_views(pl_module.net, pl_module.members), self.rule)
            if self._pending is not None:
                self.state.load_state_dict(self._pending)
                self._pending = None
            pl_module.member_running = self.state.running

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.state is not None:  # a resumed run: members that had stopped stay stopped
            pl_module.member_running = self.state.running

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        scores = getattr(pl_module, "member_scores", {}).pop("val", None)  # each evaluation counts once
        if self.state is None or scores is None or trainer.state.fn != "fit":
            return
        self.state.update(scores[0], scores[1], self.state.evaluations)
        pl_module.member_running = self.state.running
        if self.state.all_stopped:
            trainer.should_stop = True

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        """With ``validate_on_train_forward`` the scores of the weights before this update come from the training
        step: record them now, while those weights are still in place."""
        if not getattr(pl_module, "validate_on_train_forward", False):
            return
        self.on_validation_epoch_end(trainer, pl_module)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Restore each member's best weights and save them (weights only) as ``best.ckpt`` beside the run's
        other checkpoints, so that ``cdflow test --ckpt_path .../best.ckpt`` scores what the summary reports."""
        if self.state is not None and self.restore_best and self.state.evaluations:
            self.state.restore()
            pl_module.restored_best = True
            dirpath = next((cb.dirpath for cb in trainer.checkpoint_callbacks if getattr(cb, "dirpath", None)), None)
            if dirpath is not None and not trainer.fast_dev_run:
                path = str(Path(dirpath) / "best.ckpt")
                trainer.save_checkpoint(path, weights_only=True)
                pl_module.best_weights_path = path
        pl_module.member_running = None

    def state_dict(self) -> dict[str, Any]:
        return {} if self.state is None else {"stopping": self.state.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "stopping" in state_dict:
            if self.state is not None:
                self.state.load_state_dict(state_dict["stopping"])
            else:
                self._pending = state_dict["stopping"]
