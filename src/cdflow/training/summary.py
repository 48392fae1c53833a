"""The end-of-run report of `cdflow fit`: test metrics and where checkpoints, logs and figures went."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from cdflow.training.loggers import describe_logger


def _rel(path: str | Path) -> str:
    """`path` relative to the working directory when it lies below it."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(Path.cwd()))
    except ValueError:
        return str(p)


def _log_dir(trainer: L.Trainer) -> str | None:
    """`trainer.log_dir` without its broadcast (a collective under DDP: the summary runs on rank 0 only)."""
    if not trainer.loggers:
        return trainer.default_root_dir
    logger = trainer.loggers[0]
    return logger.log_dir if isinstance(logger, (CSVLogger, TensorBoardLogger)) else logger.save_dir


def run_summary(
    trainer: L.Trainer,
    test_results: Sequence[Mapping[str, float]] | None,
    tested_ckpt: str | None,
    fit_seconds: float | None = None,
    restored_best: bool = False,
    best_weights: str | None = None,
) -> str:
    """A few lines: training time, test metrics (and which weights), checkpoints, logs, config, figures.

    Local to the calling process (no collectives): under DDP call it on rank 0 only.
    """
    lines = ["", "cdflow run summary"]
    if fit_seconds is not None:
        lines.append(
            f"  fit:         {trainer.current_epoch} epochs, {trainer.global_step} steps in {fit_seconds:.1f} s"
        )
    if test_results:
        metrics = {k: v for r in test_results for k, v in r.items()}
        members = {k: v for k, v in metrics.items() if k.startswith("test/acc_member")}
        shown = ", ".join(f"{k} = {v:.4f}" for k, v in sorted(metrics.items()) if k not in members)
        if tested_ckpt:
            weights = f"best checkpoint {_rel(tested_ckpt)}"
        else:
            restored = "each member's best weights, restored by MemberEarlyStopping" + (
                f" and saved as {_rel(best_weights)}" if best_weights else "")
            weights = restored if restored_best else "final weights"
        lines.append(f"  test:        {shown}  ({weights})")
        if members:
            accs = [members[k] for k in sorted(members)]
            mean = sum(accs) / len(accs)
            std = (sum((a - mean) ** 2 for a in accs) / max(1, len(accs) - 1)) ** 0.5
            lines.append(f"  members:     test/acc {100 * mean:.2f} ± {100 * std:.2f} % (mean ± sample std) over "
                         f"{len(accs)} members: "
                         + " ".join(f"{100 * a:.1f}" for a in accs))
    ckpt = trainer.checkpoint_callback
    dirpath = getattr(ckpt, "dirpath", None)
    if dirpath and Path(dirpath).is_dir():
        best = best_weights or getattr(ckpt, "best_model_path", "") or "-"
        last = getattr(ckpt, "last_model_path", "") or "-"
        lines.append(f"  checkpoints: {_rel(dirpath)} (best: {Path(best).name}, last: {Path(last).name}); "
                     "resume with --ckpt_path last")
    for logger in trainer.loggers:
        lines.append(f"  logs:        {describe_logger(logger)}")
    log_dir = _log_dir(trainer)
    if log_dir and (Path(log_dir) / "config.yaml").is_file():
        lines.append(f"  config:      {_rel(Path(log_dir) / 'config.yaml')}")
    figures = Path(trainer.default_root_dir) / "figures"
    if figures.is_dir() and any(figures.glob("*.png")):
        names = ", ".join(sorted(p.name for p in figures.glob("*.png")))
        lines.append(f"  figures:     {_rel(figures)} ({names})")
    return "\n".join(lines)
