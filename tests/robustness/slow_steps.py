"""A callback that slows training down, so that a test can kill the run mid-epoch (not a test module)."""

from __future__ import annotations

import time

import lightning as L


class SlowSteps(L.Callback):
    """Sleep `seconds` after every training batch."""

    def __init__(self, seconds: float = 0.3) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        time.sleep(self.seconds)
