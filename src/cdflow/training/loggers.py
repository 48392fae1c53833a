"""Experiment logging: Weights & Biases by default (offline without an API key), CSV as the fallback.

`make_logger` starts the W&B run at once, so a W&B that cannot start (not installed, bad settings, no
credentials for online mode, server unreachable) is noticed before training and replaced by a `CSVLogger`
in the same run directory, with a one-line warning: no run is lost. In online mode the server is first
probed with a TCP connection (`cdflow.training.wandb_preflight`), and ``wandb.init`` gets
``init_timeout`` = ``$WANDB_INIT_TIMEOUT`` or 30 s, so an unreachable server costs seconds, not minutes.
"""

from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger, Logger

log = logging.getLogger(__name__)

WANDB_HOST = "api.wandb.ai"


def _has_wandb_credentials() -> bool:
    """An API key in ``WANDB_API_KEY`` or in ``~/.netrc`` (what ``wandb login`` writes)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators(WANDB_HOST) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_mode() -> str:
    """``WANDB_MODE`` if set (``online``, ``offline``, ``disabled``), else online with credentials, else offline."""
    mode = os.environ.get("WANDB_MODE", "").strip().lower()
    if mode == "dryrun":
        return "offline"
    if mode:
        return mode
    return "online" if _has_wandb_credentials() else "offline"


def csv_logger(save_dir: str | Path) -> CSVLogger:
    """Metrics as ``<save_dir>/csv/version_<n>/metrics.csv`` (hyper-parameters in ``hparams.yaml``)."""
    return CSVLogger(save_dir=str(save_dir), name="csv")


def make_logger(
    save_dir: str | Path,
    project: str = "cdflow",
    name: str | None = None,
    entity: str | None = None,
    group: str | None = None,
    tags: list[str] | None = None,
) -> Logger:
    """A started `SafeWandbLogger` under ``<save_dir>/wandb``, or a `CSVLogger` if W&B is off or fails.

    W&B is off with ``WANDB_MODE=disabled``. Checkpoints are never uploaded (``log_model=False``); the run
    name defaults to the run directory's name.
    """
    save_dir = Path(save_dir)
    mode = wandb_mode()
    if mode == "disabled":
        log.info("W&B disabled (WANDB_MODE=disabled): logging to CSV under %s", save_dir / "csv")
        return csv_logger(save_dir)
    try:
        import wandb

        from cdflow.training.safe_wandb import SafeWandbLogger
        from cdflow.training.wandb_preflight import init_timeout, unreachable_reason

        if mode == "online" and (reason := unreachable_reason()) is not None:
            raise ConnectionError(reason)
        save_dir.mkdir(parents=True, exist_ok=True)
        logger = SafeWandbLogger(
            project=project, name=name or save_dir.resolve().name, save_dir=str(save_dir), log_model=False,
            entity=entity, group=group, tags=tags or None, mode=mode,
            settings=wandb.Settings(init_timeout=init_timeout()),
        )
        # Lightning passes wandb.init an `anonymous` setting that current wandb only warns about.
        init_kwargs = getattr(logger, "_wandb_init", None)
        if isinstance(init_kwargs, dict) and init_kwargs.get("anonymous") is None:
            init_kwargs.pop("anonymous", None)
        logger.experiment  # noqa: B018 — start the run now, so that a failure falls back before training
        return logger
    except Exception as err:  # noqa: BLE001 — any failure to start W&B must not cost the run
        reason = " ".join(f"{type(err).__name__}: {err}".split())[:300]
        log.warning("W&B could not start (%s); logging to CSV under %s instead", reason, save_dir / "csv")
        return csv_logger(save_dir)


def finish_wandb(exit_code: int | None = None) -> None:
    """Finish the current W&B run, if any, so that its summary and files are written (offline runs too)."""
    try:
        import wandb
    except ImportError:
        return
    if wandb.run is not None:
        wandb.finish(exit_code=exit_code)


def describe_logger(logger: Logger) -> str:
    """Where a logger's files are, and for offline W&B runs how to upload them."""
    from lightning.pytorch.loggers import WandbLogger

    if isinstance(logger, WandbLogger):
        run = logger.experiment
        run_dir = Path(run.dir).parent
        if run.offline:
            return f"W&B offline run {run_dir} (upload: wandb sync {run_dir})"
        return f"W&B run {run.url or run_dir} (local files: {run_dir})"
    if isinstance(logger, CSVLogger):
        return f"CSV metrics {Path(logger.log_dir) / 'metrics.csv'}"
    return f"{type(logger).__name__} in {logger.log_dir or logger.save_dir}"
