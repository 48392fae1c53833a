"""The trainer's settings, checked before a run folder, a logger or a W&B run exist.

Lightning checks most `Trainer` arguments when it builds the trainer — after cdflow has claimed the run folder and
made the logger — and some not at all until training fails on them (``accumulate_grad_batches 0`` ends in a
``ZeroDivisionError`` in the first step). `check_trainer_settings` refuses both kinds up front with a
`ConfigError` that names the setting at fault: a bare trainer (no logger, checkpoints, callbacks or plugins) is
built from the given settings, and the ranges Lightning lets through are checked here.
"""

from __future__ import annotations

import inspect
import logging
import warnings
from collections.abc import Callable
from typing import Any

from lightning.pytorch import Trainer
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from cdflow.errors import ConfigError

#: Settings the bare trainer leaves out: cdflow makes them itself (logger, progress bar, checkpoint plugin,
#: run folder) or they write files (profiler); their own checks run when the real trainer is built.
NOT_CHECKED = frozenset({"logger", "callbacks", "plugins", "default_root_dir", "enable_checkpointing",
                         "enable_progress_bar", "enable_model_summary", "profiler"})


def _int_at_least(low: int, allow_none: bool = False) -> Callable[[Any], bool]:
    def ok(v: Any) -> bool:
        return (allow_none and v is None) or (isinstance(v, int) and not isinstance(v, bool) and v >= low)
    return ok


def _positive_interval(v: Any) -> bool:
    """val_check_interval: a fraction of an epoch in (0, 1] or a number of batches ≥ 1 (0 divides by zero)."""
    if v is None:
        return True
    if isinstance(v, bool):
        return False
    return (isinstance(v, int) and v >= 1) or (isinstance(v, float) and 0.0 < v <= 1.0)


#: Ranges Lightning accepts when it builds the trainer and fails on (or ignores) later: (test, what it takes).
RANGES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "accumulate_grad_batches": (_int_at_least(1), "an int ≥ 1"),
    "check_val_every_n_epoch": (_int_at_least(1, allow_none=True), "an int ≥ 1 or null"),
    "val_check_interval": (_positive_interval, "a fraction of an epoch in (0, 1], a number of batches ≥ 1, or null"),
    "log_every_n_steps": (_int_at_least(1, allow_none=True), "an int ≥ 1 or null"),
    "min_epochs": (_int_at_least(0, allow_none=True), "an int ≥ 0 or null"),
    "num_sanity_val_steps": (_int_at_least(-1, allow_none=True), "an int ≥ 0, -1 (all batches) or null"),
    "gradient_clip_val": (lambda v: v is None or (not isinstance(v, bool) and isinstance(v, (int, float)) and v >= 0),
                          "a number ≥ 0 or null"),
}

_ERRORS = (ValueError, TypeError, RuntimeError, MisconfigurationException)


def _build(settings: dict[str, Any]) -> Exception | None:
    """Build a bare trainer from `settings`, its device report and warnings silenced (the real trainer gives
    them); the error it raised."""
    disabled = logging.root.manager.disable
    logging.disable(logging.INFO)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            Trainer(**settings, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                    enable_model_summary=False)
    except _ERRORS as err:
        return err
    finally:
        logging.disable(disabled)
    return None


def _plain(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, (str, int, float, bool))


def _flag(key: str, value: Any) -> str:
    return f"--trainer.{key} {value}"


def check_trainer_settings(cfg: dict[str, Any]) -> None:
    """Refuse trainer settings that Lightning would refuse when it builds the trainer, or fail on while training:
    a `ConfigError` naming the setting(s) at fault (those refused alone; all given ones when only their
    combination is) and Lightning's reason."""
    out_of_range = [f"{_flag(key, cfg[key])}: takes {takes}" for key, (ok, takes) in RANGES.items()
                    if key in cfg and not ok(cfg[key])]
    if out_of_range:  # all of them at once
        raise ConfigError("; ".join(out_of_range))
    params = inspect.signature(Trainer.__init__).parameters
    given = {k: v for k, v in cfg.items()  # objects (a Strategy instance) are left alone: building mutates them
             if k in params and k not in NOT_CHECKED and _plain(v) and v != params[k].default}
    if not given:
        return
    err = _build(given)
    if err is None:
        return
    alone = [k for k in given if _build({k: given[k]}) is not None]
    flags = ", ".join(_flag(k, given[k]) for k in (alone or given))
    hint = f" (accelerators on this machine: {', '.join(usable_accelerators())})" if "accelerator" in alone else ""
    raise ConfigError(f"{flags}: {err}{hint}")


def usable_accelerators() -> list[str]:
    """The accelerator names Lightning can use here (cpu, and cuda/mps/tpu where present)."""
    from lightning.pytorch.accelerators import AcceleratorRegistry

    return sorted(n for n in AcceleratorRegistry.available_accelerators()
                  if AcceleratorRegistry[n]["accelerator"].is_available())
