"""A callback that presses Ctrl-C at the end of a training epoch (not a test module: the CLI tests load it)."""

from __future__ import annotations

import lightning as L


class CtrlC(L.Callback):
    """Raise `KeyboardInterrupt` at the end of training epoch `epoch` (what Ctrl-C does at that moment), in a run
    started from scratch only: pressed once, the resumed run goes on."""

    def __init__(self, epoch: int = 1) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.epoch and trainer.ckpt_path is None:
            raise KeyboardInterrupt
