"""`LastCheckpoint`: ``last.ckpt`` always holds the latest state, at every epoch end and every N steps.

Since Lightning 2.6, ``ModelCheckpoint(monitor=..., save_last=True)`` writes ``last.ckpt`` only when a top-k
checkpoint is written at the same step, i.e. when the monitored metric improves, so ``--ckpt_path last``
could resume from an old epoch. This callback writes ``<dirpath>/last.ckpt`` after every validation (or
training epoch without validation), optionally every `every_n_train_steps` optimizer steps as well (so a
run killed mid-epoch resumes mid-epoch), and when training ends. The ``cdflow`` CLI adds it as
``--last_checkpoint`` (``--last_checkpoint.every_n_train_steps 50``).
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.callbacks import ModelCheckpoint


class LastCheckpoint(ModelCheckpoint):
    """Keep ``<dirpath>/<filename>.ckpt`` (default ``last.ckpt``) up to date.

    Args:
        dirpath: checkpoint folder (default: Lightning's, ``<default_root_dir>/checkpoints``).
        every_n_train_steps: also save every this many optimizer steps (0: epoch ends only).
        filename: file name without extension; must start with ``last`` for ``--ckpt_path last`` to find it.
        every_n_epochs: save at every this many epoch ends (0: only when training ends — for short full-batch
            epochs, where writing the weights and optimiser state every epoch costs more than the epoch).
    """

    def __init__(
        self, dirpath: _PATH | None = None, every_n_train_steps: int = 0, filename: str = "last",
        every_n_epochs: int = 1,
    ) -> None:
        if not filename.startswith(self.CHECKPOINT_NAME_LAST):
            raise ValueError(f"filename must start with {self.CHECKPOINT_NAME_LAST!r} (for --ckpt_path last), "
                             f"got {filename!r}")
        if every_n_train_steps < 0:
            raise ValueError(f"every_n_train_steps must be ≥ 0, got {every_n_train_steps}")
        if every_n_epochs < 0:
            raise ValueError(f"every_n_epochs must be ≥ 0, got {every_n_epochs}")
        super().__init__(dirpath=dirpath, filename=filename, monitor=None, save_top_k=1, save_last=False,
                         every_n_epochs=every_n_epochs, enable_version_counter=False, auto_insert_metric_name=False)
        self.step_interval = every_n_train_steps

    @property
    def state_key(self) -> str:
        return self._generate_state_key(kind="last", filename=self.filename, every_n_train_steps=self.step_interval)

    def _save_now(self, trainer: L.Trainer) -> None:
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_none_monitor_checkpoint(trainer, self._monitor_candidates(trainer))
            self.last_model_path = self.best_model_path

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.step_interval and trainer.global_step > 0 and trainer.global_step % self.step_interval == 0:
            self._save_now(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save_now(trainer)
