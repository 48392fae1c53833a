"""Divergence during training: a non-finite loss or gradient, or a failed solve (`SolverError`).

`FailureGuard` decides, for the LightningModule, what a failed training step does:

* ``stop`` (default): raise `TrainingDiverged`, whose message names the epoch, the batch, the global step,
  the cause and the solver statistics, and says that the weights were not updated (so the last checkpoint
  holds the last good weights; `AtomicCheckpointIO` also refuses to write non-finite weights).
* ``skip``: drop the step (no optimizer update: the gradients are discarded) and count it; the count is
  logged as ``train/skipped_steps``. More than `max_consecutive_skips` failures in a row stop the run.

Under DDP every rank must take the same decision (a rank that skips its backward pass while another runs
it would hang the gradient all-reduce), so a failure on any rank fails the step on all of them.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from cdflow.errors import ConfigError, SolverError
from cdflow.stats import SolveStats

FailureMode = Literal["stop", "skip"]
FAILURE_MODES = ("stop", "skip")


class TrainingDiverged(SolverError):
    """Training stopped on a failed step (non-finite loss or gradients, or a failed solve)."""


@dataclass
class StepContext:
    """Where a failure happened."""

    epoch: int
    batch: int
    global_step: int


def describe_stats(stats: SolveStats | None) -> str:
    """One line of solver statistics (method, evaluations, steps), or a note that there are none."""
    if stats is None:
        return "no solver statistics (the network has no continuous-depth block exposing .stats)"
    return f"method {stats.method!r}, " + ", ".join(f"{k}={v}" for k, v in stats.as_dict().items())


def nonfinite_grads(module: nn.Module) -> list[str]:
    """Names of the parameters whose gradient holds NaN or Inf.

    One fused check first: the squared norms of all gradients (torch._foreach_norm) are finite unless a
    gradient holds NaN/Inf — or is so large that its norm overflows, which the exact per-tensor check below
    then tells apart. Only then is every gradient scanned."""
    named = [(name, p.grad) for name, p in module.named_parameters() if p.grad is not None]
    if not named:
        return []
    norms = torch._foreach_norm([g for _, g in named])
    if bool(torch.isfinite(torch.stack([n.float() for n in norms])).all()):
        return []
    return [name for name, g in named if not bool(torch.isfinite(g).all())]


def latest_checkpoint(trainer: Any) -> str | None:
    """The most recently written checkpoint of the trainer's checkpoint callbacks (``last`` ones first)."""
    if trainer is None:
        return None
    paths = [p for cb in getattr(trainer, "checkpoint_callbacks", [])
             for p in (getattr(cb, "last_model_path", ""), getattr(cb, "best_model_path", "")) if p]
    existing = [p for p in paths if os.path.isfile(p)]
    return max(existing, key=os.path.getmtime) if existing else (paths[0] if paths else None)


def loss_failure(loss: Tensor) -> str | None:
    """Why a loss is unusable (``None`` when it is finite)."""
    if bool(torch.isfinite(loss.detach()).all()):
        return None
    return f"the loss is {float(loss.detach()):g} (non-finite)"


class FailureGuard:
    """Counts failed steps and applies the failure mode; one per LightningModule.

    Args:
        mode: ``stop`` or ``skip`` (see the module docstring).
        max_consecutive_skips: in ``skip`` mode, stop after this many failed steps in a row (≥ 1).
    """

    def __init__(self, mode: FailureMode = "stop", max_consecutive_skips: int = 20) -> None:
        if mode not in FAILURE_MODES:
            raise ConfigError(f"on_failure must be one of {', '.join(FAILURE_MODES)}, got {mode!r}")
        if isinstance(max_consecutive_skips, bool) or not isinstance(max_consecutive_skips, int) \
                or max_consecutive_skips < 1:
            raise ConfigError(f"max_consecutive_skips must be an int ≥ 1, got {max_consecutive_skips!r}")
        self.mode = mode
        self.max_consecutive_skips = max_consecutive_skips
        self.skipped = 0
        self.consecutive = 0

    def succeeded(self) -> None:
        """A step went through: reset the run of consecutive failures."""
        self.consecutive = 0

    def failed(
        self, cause: str, where: StepContext, stats: SolveStats | None, checkpoint: str | None,
        stats_are_current: bool = True,
    ) -> None:
        """A step failed because of `cause`: raise `TrainingDiverged` (stop) or count the skip (skip).

        `stats` are the failing step's solver statistics, or (``stats_are_current=False``, a solve that
        raised) those of the last solve that completed.
        """
        self.consecutive += 1
        if self.mode == "skip" and self.consecutive <= self.max_consecutive_skips:
            self.skipped += 1
            warnings.filterwarnings("ignore", message=r".*`training_step` returned `None`.*")
            return
        kept = f"the last checkpoint, {checkpoint}, is kept as it was" if checkpoint else "no checkpoint was written"
        if self.mode == "skip":
            head = f"{self.consecutive} training steps failed in a row (max_consecutive_skips="
            head += f"{self.max_consecutive_skips}); the last one"
        else:
            head = "training step failed"
        raise TrainingDiverged(
            f"{head} at epoch {where.epoch}, batch {where.batch} (global step {where.global_step}): {cause}. "
            f"Solver statistics{'' if stats_are_current else ' (last completed solve)'}: {describe_stats(stats)}. "
            f"The weights were not updated and {kept}. "
            "Fix: lower the learning rate, clip gradients (--trainer.gradient_clip_val 1.0), normalise the inputs, "
            "use a fixed-step solver (--model.solver.method rk4 --model.solver.step_size 0.1) or loosen "
            "rtol/atol; or skip such steps with --model.on_failure skip (counted in train/skipped_steps)"
        )
