"""The ``cdflow`` command: Lightning's CLI over `ContinuousDepthClassifier` and cdflow's DataModules.

    cdflow fit --config experiments/configs/digits.yaml --model.solver.method rk4 --model.solver.step_size 0.1
    cdflow fit --config experiments/configs/digits.yaml --ckpt_path last        # resume
    cdflow fit ... --last_checkpoint.every_n_train_steps 50                     # also save last.ckpt mid-epoch
    cdflow fit ... --trainer.accelerator gpu --trainer.strategy ddp --trainer.devices 4   # see docs/distributed.md
    cdflow test --config experiments/configs/digits.yaml --ckpt_path runs/digits/checkpoints/last.ckpt
    cdflow fit --config experiments/configs/digits.yaml --print_config          # the resolved config

Every run lives in ``--trainer.default_root_dir`` (default ``runs/cdflow``): ``checkpoints/`` (best by
``val/acc``, and ``last.ckpt`` after every epoch and, with ``--last_checkpoint.every_n_train_steps``, every
N steps; all written atomically), ``wandb/`` (or ``csv/`` when W&B is off or fails), ``config.yaml`` and
``figures/`` (drawn by the default ``trainer.callbacks``; a config that sets ``trainer.callbacks`` replaces
them, ``--trainer.callbacks+=...`` appends). After ``fit`` the best checkpoint is tested and a summary
printed (``--test_after_fit false`` skips that). Invalid settings (e.g. ``--model.solver.method dopri9``)
stop before any training with a message listing the valid choices.

The data module is required (``--data`` or a config); ``num_classes`` and ``input_shape`` come from it.
A ready network replaces the default one with ``--model.model <class path> --model.model.<arg> ...``
(its own sizes, e.g. ``in_features``, are not linked and must be given).
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI
from lightning.pytorch.plugins.io import CheckpointIO

from cdflow.errors import CdflowError
from cdflow.training.alloc import keep_freed_memory
from cdflow.training.atomic_checkpoint import AtomicCheckpointIO
from cdflow.training.callbacks import CompactRichProgressBar, ConfigToLoggers
from cdflow.training.last_checkpoint import LastCheckpoint
from cdflow.training.loggers import finish_wandb, make_logger
from cdflow.training.module import ContinuousDepthClassifier
from cdflow.training.summary import run_summary

DEFAULT_ROOT = "runs/cdflow"
TRAINER_DEFAULTS: dict[str, Any] = {"default_root_dir": DEFAULT_ROOT, "log_every_n_steps": 1}
DEFAULT_CALLBACKS = [
    {"class_path": "cdflow.training.callbacks.ConfusionMatrixFigure"},
    {"class_path": "cdflow.training.callbacks.DecisionBoundaryFigure"},
    {"class_path": "cdflow.training.callbacks.TrajectoryFigure"},
]


@dataclass
class WandbOptions:
    """Weights & Biases run settings (the run is offline unless an API key is configured).

    Args:
        project: W&B project.
        name: run name (default: the run directory's name).
        entity: W&B user or team.
        group: run group.
        tags: run tags.
    """

    project: str = "cdflow"
    name: str | None = None
    entity: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)


def _checkpoint_dir(root: str | None) -> str:
    return str(Path(root or DEFAULT_ROOT) / "checkpoints")


def _cdflow_cause(err: BaseException) -> CdflowError | None:
    """The `CdflowError` behind `err` (itself or along its cause / context chain), if any."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, CdflowError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


class CdflowCLI(LightningCLI):
    """LightningCLI with cdflow's defaults: run directory, W&B/CSV logger, checkpoints, figures, test after fit."""

    def __init__(self, args: ArgsType = None, run: bool = True, **kwargs: Any) -> None:
        self._fit_started: float | None = None
        self.test_results: list[dict[str, float]] | None = None
        kwargs.setdefault("model_class", ContinuousDepthClassifier)
        kwargs.setdefault("datamodule_class", LightningDataModule)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("save_config_callback", ConfigToLoggers)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("trainer_defaults", dict(TRAINER_DEFAULTS))
        kwargs.setdefault("seed_everything_default", 0)
        kwargs.setdefault("auto_configure_optimizers", False)
        super().__init__(args=args, run=run, **kwargs)

    # -- parser -----------------------------------------------------------------------------------------
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.input_shape", "model.input_shape", apply_on="instantiate")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.add_lightning_class_args(LastCheckpoint, "last_checkpoint")
        parser.set_defaults({
            "checkpoint.monitor": "val/acc",
            "checkpoint.mode": "max",
            "checkpoint.save_last": True,  # on improvement only (Lightning ≥ 2.6); LastCheckpoint keeps it current
            "checkpoint.save_top_k": 1,
            "checkpoint.filename": "best-epoch{epoch:03d}",
            "checkpoint.auto_insert_metric_name": False,
            "checkpoint.enable_version_counter": False,
            "trainer.callbacks": DEFAULT_CALLBACKS,
        })
        parser.link_arguments("trainer.default_root_dir", "checkpoint.dirpath", compute_fn=_checkpoint_dir)
        parser.link_arguments("trainer.default_root_dir", "last_checkpoint.dirpath", compute_fn=_checkpoint_dir)
        parser.add_class_arguments(WandbOptions, "wandb", help="Weights & Biases run settings")
        parser.add_argument("--test_after_fit", type=bool, default=True,
                            help="after fit, test the best checkpoint and print where everything went")

    # -- instantiation ----------------------------------------------------------------------------------
    def instantiate_classes(self) -> None:
        """Instantiate; a cdflow configuration error ends the program like a parse error (message, exit code 2)."""
        try:
            super().instantiate_classes()
        except Exception as err:
            cause = _cdflow_cause(err)
            if cause is None:
                raise
            prog = f"cdflow {self.subcommand}" if self.subcommand else "cdflow"
            print(f"{prog}: error: {type(cause).__name__}: {cause}\n(options: {prog} --help)", file=sys.stderr)
            raise SystemExit(2) from None

    def _check_data_root(self) -> None:
        """A data module given an explicit ``root`` that does not exist fails now, before any run directory."""
        root = getattr(getattr(self.datamodule, "hparams", None), "root", None)
        if root:
            from cdflow.data.paths import data_root

            data_root(root)

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """The trainer, with the default logger (W&B, else CSV), a Rich progress bar unless turned off, and
        atomic checkpoint writes (`AtomicCheckpointIO`) unless a `CheckpointIO` plugin is given."""
        self._check_data_root()
        cfg = self._get(self.config_init, "trainer", default={})
        root = Path(cfg.get("default_root_dir") or DEFAULT_ROOT)
        if "logger" not in kwargs and cfg.get("logger") in (None, True):
            if cfg.get("fast_dev_run") or self.subcommand == "predict":
                kwargs["logger"] = False
            else:
                opts = self._get(self.config_init, "wandb")
                kwargs["logger"] = make_logger(root, **(asdict(opts) if opts is not None else {}))
        callbacks = list(cfg.get("callbacks") or [])
        if cfg.get("enable_progress_bar", True) is not False and not any(isinstance(c, ProgressBar) for c in callbacks):
            kwargs["callbacks"] = [*callbacks, CompactRichProgressBar()]
        plugins = cfg.get("plugins")
        plugins = list(plugins) if isinstance(plugins, (list, tuple)) else ([] if plugins is None else [plugins])
        if "plugins" not in kwargs and not any(isinstance(p, CheckpointIO) for p in plugins):
            kwargs["plugins"] = [*plugins, AtomicCheckpointIO()]
        return super().instantiate_trainer(**kwargs)

    # -- subcommand hooks -------------------------------------------------------------------------------
    def before_fit(self) -> None:
        self._fit_started = time.perf_counter()

    def after_fit(self) -> None:
        """Test the best checkpoint (or the final weights without one) and print the run summary."""
        trainer = self.trainer
        fit_seconds = None if self._fit_started is None else time.perf_counter() - self._fit_started
        if trainer.interrupted or not self._get(self.config, "test_after_fit", True):
            if trainer.is_global_zero:
                print(run_summary(trainer, None, None, fit_seconds))
            return
        best = next((cb for cb in trainer.checkpoint_callbacks
                     if isinstance(cb, ModelCheckpoint) and cb.monitor is not None), None)
        ckpt = getattr(best, "best_model_path", "") or None
        if ckpt is not None and not Path(ckpt).is_file():
            ckpt = None
        if getattr(self.model, "restored_best", False):  # MemberEarlyStopping put each member's best weights back
            ckpt = None
        self.test_results = trainer.test(self.model, datamodule=self.datamodule, ckpt_path=ckpt)
        if trainer.is_global_zero:  # the summary is rank-local (no collectives)
            print(run_summary(trainer, self.test_results, ckpt, fit_seconds,
                              restored_best=getattr(self.model, "restored_best", False),
                              best_weights=getattr(self.model, "best_weights_path", None)))


def run_cli(args: ArgsType = None) -> CdflowCLI:
    """Run the CLI on `args` (default: ``sys.argv``) and return it; cdflow errors exit with status 1."""
    try:
        cli = CdflowCLI(args=args)
    except CdflowError as err:
        finish_wandb(exit_code=1)
        print(f"cdflow: error: {type(err).__name__}: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    except BaseException:
        finish_wandb(exit_code=1)
        raise
    finish_wandb()
    return cli


def main() -> None:
    """Entry point of the ``cdflow`` console script."""
    # An upstream deprecation inside Lightning's pytree helpers, printed on every run with torch ≥ 2.10.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    if os.environ.get("CDFLOW_KEEP_FREED_MEMORY", "1") != "0":
        keep_freed_memory()  # tensors freed every epoch are reused, not page-faulted back in (see alloc.py)
    run_cli()


if __name__ == "__main__":
    main()
