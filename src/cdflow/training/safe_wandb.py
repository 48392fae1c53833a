"""`SafeWandbLogger`: a `WandbLogger` whose failures during training never stop the training.

Lightning lets an exception from a logger end the run. Once started, W&B queues and retries on its own
(a network outage is not an error), but a crashed W&B service or an invalid value can still make
``run.log`` raise. This logger then warns once, stops sending to W&B, and training goes on; the run's
checkpoints, figures and (in the CLI) the metrics W&B already holds are kept.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from lightning.pytorch.loggers import WandbLogger

log = logging.getLogger(__name__)


class SafeWandbLogger(WandbLogger):
    """`WandbLogger` that turns its own failures into one warning instead of a failed run."""

    failed: str | None = None

    def _guard(self, what: str, call: Callable[[], Any]) -> None:
        if self.failed is not None:
            return
        try:
            call()
        except Exception as err:  # noqa: BLE001 — a logging failure must not cost the run
            self.failed = " ".join(f"{type(err).__name__}: {err}".split())[:300]
            log.warning("W&B %s failed (%s); no further W&B logging in this run, training goes on", what, self.failed)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self._guard("log_metrics", lambda: super(SafeWandbLogger, self).log_metrics(metrics, step))

    def log_hyperparams(self, params: Any) -> None:
        self._guard("log_hyperparams", lambda: super(SafeWandbLogger, self).log_hyperparams(params))

    def log_image(self, key: str, images: list[Any], step: int | None = None, **kwargs: Any) -> None:
        self._guard("log_image", lambda: super(SafeWandbLogger, self).log_image(key, images, step, **kwargs))

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        self._guard("after_save_checkpoint", lambda: super(SafeWandbLogger, self).after_save_checkpoint(
            checkpoint_callback))

    def finalize(self, status: str) -> None:
        self._guard("finalize", lambda: super(SafeWandbLogger, self).finalize(status))
