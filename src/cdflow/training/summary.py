"""The end-of-run report of `cdflow fit`: epochs and steps (this run and in total), test metrics, and where
checkpoints, logs and figures went; after Ctrl-C, where the run stopped and the command that resumes it.

`FitStart` (a callback the CLI adds) records the epoch and step a fit started from, so a resumed run's
report tells this run's epochs from the total.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from cdflow.training.last_checkpoint import LastCheckpoint
from cdflow.training.loggers import describe_logger


class FitStart(Callback):
    """The epoch and global step at which training (re)started: (0, 0) for a new run."""

    def __init__(self) -> None:
        self.epoch: int | None = None
        self.step: int | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epoch, self.step = trainer.current_epoch, trainer.global_step

    @property
    def resumed(self) -> bool:
        return bool(self.epoch or self.step)


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


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def last_checkpoint(trainer: L.Trainer) -> str | None:
    """The ``last.ckpt`` the run wrote (`LastCheckpoint`'s, else `ModelCheckpoint.last_model_path`), if any."""
    paths = [cb.last_model_path or cb.best_model_path for cb in trainer.checkpoint_callbacks
             if isinstance(cb, LastCheckpoint)]
    paths += [cb.last_model_path for cb in trainer.checkpoint_callbacks if isinstance(cb, ModelCheckpoint)]
    return next((p for p in paths if p and Path(p).is_file()), None)


def resume_command(args: Sequence[str] | None, last: str, config: str | None = None,
                   max_epochs: int | None = None) -> str:
    """The command that resumes from `last`: `args` (the original command line, if known) with ``--ckpt_path
    <last>`` in place of any ``--ckpt_path``; else ``cdflow fit --config <config> --ckpt_path <last>``. With
    `max_epochs`, ``--trainer.max_epochs <max_epochs>`` replaces any given (a finished run trains on only to a
    larger limit)."""
    if not args:
        args = ["fit", "--config", config or "CONFIG"]
    kept: list[str] = []
    skip = False
    drop = ("--ckpt_path",) + (("--trainer.max_epochs",) if max_epochs is not None else ())
    for arg in args:
        if skip:
            skip = False
        elif arg in drop:
            skip = True
        elif not any(arg.startswith(f"{flag}=") for flag in drop):
            kept.append(arg)
    if max_epochs is not None:
        kept += ["--trainer.max_epochs", str(max_epochs)]
    return shlex.join(["cdflow", *kept, "--ckpt_path", last])


def _fit_line(trainer: L.Trainer, fit_seconds: float, start: FitStart | None) -> str:
    epoch, step = trainer.current_epoch, trainer.global_step  # epochs completed, optimizer steps taken
    head, done = (f"interrupted (Ctrl-C) in epoch {epoch} at step {step}: ", " completed") if trainer.interrupted \
        else ("", "")
    if start is None or not start.resumed:
        return f"{head}{_count(epoch, 'epoch')}{done}, {_count(step, 'step')} in {fit_seconds:.1f} s"
    e0, s0 = start.epoch or 0, start.step or 0
    return (f"{head}{_count(epoch - e0, 'epoch')}{done}, {_count(step - s0, 'step')} this run in {fit_seconds:.1f} s "
            f"({_count(epoch, 'epoch')}, {_count(step, 'step')} in total, resumed from epoch {e0}, step {s0})")


def run_summary(
    trainer: L.Trainer,
    test_results: Sequence[Mapping[str, float]] | None,
    tested_ckpt: str | None,
    fit_seconds: float | None = None,
    restored_best: bool = False,
    best_weights: str | None = None,
    start: FitStart | None = None,
    args: Sequence[str] | None = None,
    last: str | None = None,
) -> str:
    """A few lines: epochs and time, test metrics (and which weights), checkpoints, logs, config, figures.

    `start` tells a resumed run's epochs from the total; `args` (the command line) makes the resume command
    printed after an interruption; `last` is the last checkpoint (default: `last_checkpoint`; pass it when
    a test since restored the callbacks' state from an older checkpoint). Local to the calling process (no
    collectives): under DDP call it on rank 0 only.
    """
    lines = ["", "cdflow run summary"]
    if fit_seconds is not None:
        lines.append(f"  fit:         {_fit_line(trainer, fit_seconds, start)}")
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
    last = last if last and Path(last).is_file() else last_checkpoint(trainer)
    log_dir = _log_dir(trainer)
    config = Path(log_dir) / "config.yaml" if log_dir else None
    config = config if config is not None and config.is_file() else None
    if dirpath and Path(dirpath).is_dir():
        best = best_weights or getattr(ckpt, "best_model_path", "") or "-"
        more = 2 * max(1, trainer.current_epoch)  # a finished run trains on only to a larger epoch limit
        lines.append(f"  checkpoints: {_rel(dirpath)} (best: {Path(best).name}, last: {Path(last or '-').name})"
                     + (f"; train on to epoch {more}: "
                        f"{resume_command(args, _rel(last), config and _rel(config), more)}"
                        if last and not trainer.interrupted else ""))
    if trainer.interrupted:
        saved = next((getattr(cb, "_last_global_step_saved", None) for cb in trainer.checkpoint_callbacks
                      if isinstance(cb, LastCheckpoint)), None)
        held = f"  ({Path(last).name} holds step {saved})" if last and saved else ""
        lines.append(f"  resume:      {resume_command(args, _rel(last), config and _rel(config))}{held}" if last
                     else "  resume:      nothing to resume from: no last checkpoint was written")
    for logger in trainer.loggers:
        lines.append(f"  logs:        {describe_logger(logger)}")
    if config is not None:
        lines.append(f"  config:      {_rel(config)}")
    figures = Path(trainer.default_root_dir) / "figures"
    if figures.is_dir() and any(figures.glob("*.png")):
        names = ", ".join(sorted(p.name for p in figures.glob("*.png")))
        lines.append(f"  figures:     {_rel(figures)} ({names})")
    return "\n".join(lines)
