"""The ``cdflow`` command: Lightning's CLI over `ContinuousDepthClassifier` and cdflow's DataModules.

    cdflow fit --config experiments/configs/digits.yaml --model.solver.method rk4 --model.solver.step_size 0.1
    cdflow fit --config experiments/configs/digits.yaml --ckpt_path last        # resume
    cdflow fit ... --last_checkpoint.every_n_train_steps 50                     # also save last.ckpt mid-epoch
    cdflow fit ... --trainer.accelerator gpu --trainer.strategy ddp --trainer.devices 4   # see docs/distributed.md
    cdflow test --config experiments/configs/digits.yaml --ckpt_path runs/digits/checkpoints/last.ckpt
    cdflow fit --config experiments/configs/digits.yaml --print_config          # the resolved config
    cdflow predict --config runs/digits/config.yaml --ckpt_path runs/digits/checkpoints/last.ckpt

Every run lives in ``--trainer.default_root_dir`` (default ``runs/cdflow``): ``checkpoints/`` (best by
``val/acc``, and ``last.ckpt`` after every epoch and, with ``--last_checkpoint.every_n_train_steps``, every
N steps; all written atomically), ``wandb/`` (or ``csv/`` when W&B is off or fails), ``config.yaml`` and
``figures/`` (drawn by the default ``trainer.callbacks``; a config that sets ``trainer.callbacks`` replaces
them, ``--trainer.callbacks+=...`` appends). After ``fit`` the best checkpoint is tested and a summary
printed (``--test_after_fit false`` skips that). Invalid settings (e.g. ``--model.solver.method dopri9``)
stop before any training with a message listing the valid choices.

A new ``fit`` never writes over another run's files (`cdflow.training.run_folder`). After three runs::

    runs/cdflow/              run 1 (checkpoints/, wandb/, config.yaml, figures/)
    runs/cdflow/version_1/    run 2
    runs/cdflow/version_2/    run 3

The first run writes into ``default_root_dir`` itself, each later one into the next ``version_<n>``; the
folder is printed at the start (``cdflow: run folder runs/cdflow/version_1 ...``). ``--ckpt_path
<folder>/checkpoints/last.ckpt`` resumes that run in ``<folder>``; ``--ckpt_path last`` is the most
recently written ``last.ckpt`` of ``default_root_dir`` and its version folders (printed too). A run holds
``<folder>/.cdflow.lock`` (its PID) while it writes: a second writer into that folder, e.g. resuming a
run still going, stops with ``RunFolderInUse`` naming the PID; a lock whose process is gone is taken
over. A folder that cannot be written stops with ``RunFolderError`` before anything starts. Ctrl-C ends
with the summary, where the run stopped and the command that resumes it.

``cdflow predict`` writes ``predictions-<checkpoint name>.csv`` into the run folder of ``--ckpt_path`` (the
folder holding its ``checkpoints/``; ``--predictions_file PATH`` chooses another file) and prints where: one
row per example of the data module's predict set (its test split; every node of a graph, with a ``split``
column), the true ``label``, the ``prediction`` and ``p_<class>`` of every class, and for SDE noise
``std_<class>``, the spread of that probability over the Monte Carlo paths (see
:mod:`cdflow.training.predictions`). Classes are named by the data module's ``label_names`` or the run's
``labels.json``, else numbered. ``validate``, ``test`` and ``predict`` need ``--ckpt_path`` (a file, or
``last``: the newest ``last.ckpt`` of the run folders); bad checkpoints (missing, a folder, empty,
truncated, a config file, a model of other sizes) and other bad flags stop with a one-line error.

The data module is required (``--data`` or a config); ``num_classes`` and ``input_shape`` come from it.
A ready network replaces the default one with ``--model.model <class path> --model.model.<arg> ...``
(its own sizes, e.g. ``in_features``, are not linked and must be given).
"""

from __future__ import annotations

import os
import pickle
import sys
import time
import warnings
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningDataModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI
from lightning.pytorch.plugins.io import CheckpointIO

import cdflow.data.graph_files
import cdflow.data.modules
import cdflow.data.tabular  # noqa: F401 — cdflow's data modules, known to --data by short name and listed in --help
from cdflow.cli_parser import (
    DESCRIPTION,
    EPILOG,
    CdflowArgumentParser,
    CdflowHelpFormatter,
    check_data_flag,
    refuse,
)
from cdflow.errors import CdflowError, ConfigError, DataError, RunFolderError
from cdflow.training.alloc import keep_freed_memory
from cdflow.training.atomic_checkpoint import AtomicCheckpointIO
from cdflow.training.callbacks import CompactRichProgressBar, ConfigToLoggers
from cdflow.training.checkpoint_files import (
    EVAL_SUBCOMMANDS,
    check_checkpoint_file,
    eval_checkpoint,
    unreadable_checkpoint,
)
from cdflow.training.last_checkpoint import LastCheckpoint
from cdflow.training.loggers import finish_wandb, make_logger
from cdflow.training.module import FLOAT16_ON_ANY_DEVICE, ContinuousDepthClassifier, adaptive_solvers, check_precision
from cdflow.training.predictions import default_predictions_path, run_config_of, run_dir_of, write_predictions
from cdflow.training.run_folder import RunFolder, claim_run_folder, run_name, worker_run_folder
from cdflow.training.summary import FitStart, last_checkpoint, run_summary
from cdflow.training.trainer_settings import check_trainer_settings

DEFAULT_ROOT = "runs/cdflow"
#: Set by the process that claimed the run folder, for the DDP workers it launches (they write there too).
RUN_FOLDER_ENV = "CDFLOW_RUN_FOLDER"
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
        name: run name (default: the run folder's name, e.g. ``digits``, or ``digits-version_1``).
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


def _flat(section: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config section (jsonargparse Namespace or dict) as {"a.b": value}."""
    if section is None:
        return {}
    items = section.as_dict() if hasattr(section, "as_dict") else section
    if not isinstance(items, dict):
        return {prefix.rstrip("."): items} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in items.items():
        if isinstance(value, dict) or hasattr(value, "as_dict"):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _planned_epochs(config: Path) -> int | None:
    """trainer.max_epochs of a run's config.yaml, or None (unreadable, or no limit)."""
    import yaml

    try:
        value = (yaml.safe_load(config.read_text()) or {}).get("trainer", {}).get("max_epochs")
    except (OSError, ValueError, AttributeError, yaml.YAMLError):
        return None
    return value if isinstance(value, int) and value > 0 else None


def _epochs_completed(checkpoint: dict[str, Any]) -> int | None:
    """The epochs a Lightning checkpoint has trained: its fit loop's ``processed`` epochs (increased before
    ``on_train_epoch_end``, where checkpoints are saved; Lightning stops once it reaches ``max_epochs``), or
    ``completed`` for checkpoints without it, if it says."""
    try:
        current = checkpoint["loops"]["fit_loop"]["epoch_progress"]["current"]
        return int(current.get("processed", current["completed"]))
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def _launched_worker() -> bool:
    """Whether this process is a DDP worker other than the first (its rank, local rank or node rank > 0)."""
    ranks = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")
    return any(os.environ.get(key, "0").strip() not in ("", "0") for key in ranks)


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
        self._fit_seconds: float | None = None
        self._last_ckpt: str | None = None
        self.test_results: list[dict[str, float]] | None = None
        self.run_folder: RunFolder | None = None  # the locked folder of a fit (see cdflow.training.run_folder)
        self.fit_start = FitStart()
        # The command line, for the resume command printed after Ctrl-C.
        self.argv: list[str] | None = (sys.argv[1:] if args is None
                                       else [str(a) for a in args] if isinstance(args, (list, tuple)) else None)
        kwargs.setdefault("model_class", ContinuousDepthClassifier)
        kwargs.setdefault("datamodule_class", LightningDataModule)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("save_config_callback", ConfigToLoggers)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("trainer_defaults", dict(TRAINER_DEFAULTS))
        kwargs.setdefault("seed_everything_default", 0)
        kwargs.setdefault("auto_configure_optimizers", False)
        kwargs.setdefault("parser_class", CdflowArgumentParser)  # short parse errors, without the usage text
        # allow_abbrev=False: a typo such as --trainer.max_epoch is an error, not a prefix of max_epochs
        kwargs.setdefault("parser_kwargs", {"description": DESCRIPTION, "epilog": EPILOG,
                                            "formatter_class": CdflowHelpFormatter, "allow_abbrev": False})
        self.predictions_path: Path | None = None  # where `cdflow predict` wrote its table
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
        parser.add_argument("--predictions_file", type=str | None, default=None,
                            help="predict: the CSV to write (default: predictions-<checkpoint name>.csv in the "
                                 "run folder of --ckpt_path)")

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        """Parse, then check what is cheap to check before anything loads or runs: ``--ckpt_path`` (a readable
        checkpoint; required by validate/test/predict, where ``last`` is resolved to the newest
        ``last.ckpt`` of the run folders) and ``--trainer.precision`` against the solver."""
        if args is None or isinstance(args, (list, tuple)):
            check_data_flag([str(a) for a in (sys.argv[1:] if args is None else args)])
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        if subcommand is None:
            return
        section = self.config[subcommand]
        if subcommand in EVAL_SUBCOMMANDS:  # the run's config.yaml describes the fit of its checkpoints: keep it
            self.save_config_kwargs = {**self.save_config_kwargs, "save_to_log_dir": False}
        try:
            ckpt_path = section.get("ckpt_path")
            if subcommand in EVAL_SUBCOMMANDS:
                from cdflow.training.run_folder import find_last_checkpoint

                root = section.get("trainer.default_root_dir") or DEFAULT_ROOT
                last = find_last_checkpoint(root) if ckpt_path in (None, "last") else None
                section["ckpt_path"] = eval_checkpoint(subcommand, ckpt_path, last)
            elif ckpt_path is not None:
                if ckpt_path == "last":  # resolved now, so that fit reads its settings as for any other path
                    from cdflow.training.run_folder import find_last_checkpoint

                    last = find_last_checkpoint(section.get("trainer.default_root_dir") or DEFAULT_ROOT)
                    if last is not None:
                        section["ckpt_path"] = ckpt_path = str(last)
                        print(f"cdflow: --ckpt_path last is {last} (the most recently written last.ckpt)")
                check_checkpoint_file(ckpt_path)
        except CdflowError as err:
            refuse(f"cdflow {subcommand}", err)

    def _parse_ckpt_path(self) -> None:
        """Lightning reads the model's hyper-parameters from ``--ckpt_path`` here, replacing the given ones (the
        weights need the model they were trained with): every setting it replaces is printed. A file torch
        cannot load (corrupt past the checks of `check_checkpoint_file`) is refused naming the fix."""
        subcommand = self.config.get("subcommand")
        before = _flat(self.config[subcommand].get("model")) if subcommand else {}
        try:
            super()._parse_ckpt_path()
        except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as err:
            if _cdflow_cause(err) is not None:
                raise
            subcommand = self.config.get("subcommand")
            path = self.config[subcommand].get("ckpt_path") if subcommand else None
            refuse(f"cdflow {subcommand}", unreadable_checkpoint(path, err))
        if subcommand:
            after = _flat(self.config[subcommand].get("model"))
            replaced = [f"--model.{k} {before[k]} → {after[k]}" for k in sorted(before.keys() & after.keys())
                        if before[k] != after[k] and k not in ("num_classes", "input_shape")]
            if replaced:
                print(f"cdflow: the checkpoint's model settings replace the given ones: {'; '.join(replaced)}",
                      file=sys.stderr)

    # -- instantiation ----------------------------------------------------------------------------------
    def instantiate_classes(self) -> None:
        """Instantiate; a cdflow configuration error ends the program like a parse error (message, exit code 2)."""
        try:
            super().instantiate_classes()
        except RunFolderError:
            raise  # not a setting: `run_cli` prints it and exits with status 1
        except Exception as err:
            cause = _cdflow_cause(err)
            if cause is None:
                raise
            refuse(f"cdflow {self.subcommand}" if self.subcommand else "cdflow", cause)

    def _check_checkpoint_fits(self) -> None:
        """A ``--ckpt_path`` written by a model of other sizes fails now, naming them, before any run folder or
        config.yaml is written (the module checks again when Lightning restores it)."""
        path = self._get(self.config, "ckpt_path")
        check = getattr(self.model, "check_checkpoint_fits", None)
        if not path or check is None or not Path(path).is_file():
            return
        try:  # memory-mapped: only the shapes are read
            checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception:
            return  # Lightning loads it itself (and says what is wrong)
        check(checkpoint, path)
        # the data module's state (e.g. a table's class names) and the epochs left, checked before the run
        # folder and its config.yaml are touched: a resume that cannot go on leaves them as they were
        state = checkpoint.get(type(self.datamodule).__name__)
        if state is not None and hasattr(self.datamodule, "load_state_dict"):
            self.datamodule.load_state_dict(state)
        if self.subcommand == "fit":
            done = _epochs_completed(checkpoint)
            trainer_cfg = self._get(self.config_init, "trainer", default={})
            max_epochs = trainer_cfg.get("max_epochs")
            if max_epochs is None and trainer_cfg.get("max_steps") in (None, -1) and not trainer_cfg.get("max_time"):
                beside = run_config_of(path)
                planned = None if beside is None else _planned_epochs(beside)
                if planned is not None:
                    raise ConfigError(f"--ckpt_path {path} resumes a run planned for {planned} epochs ({beside}), but "
                                      f"no --trainer.max_epochs is given: Lightning would train on to its default of "
                                      f"1000 epochs. Give --trainer.max_epochs N, or --config {beside}")
            if done is not None and max_epochs not in (None, -1) and done >= max_epochs:
                raise ConfigError(f"--ckpt_path {path} has trained {done} epoch{'s' if done != 1 else ''}, and "
                                  f"--trainer.max_epochs is {max_epochs}: nothing is left to train. Raise "
                                  f"--trainer.max_epochs to train on from it, or evaluate it with cdflow test "
                                  f"--config {run_config_of(path) or 'CONFIG'} --ckpt_path {path}")

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
        self._check_checkpoint_fits()
        cfg = self._get(self.config_init, "trainer", default={})
        check_trainer_settings(cfg)  # before the run folder and the logger exist
        if self.subcommand == "fit" and isinstance(self.model, ContinuousDepthClassifier):
            self.model.check_validation_loop(cfg.get("limit_val_batches"), cfg.get("fast_dev_run"))
        net = getattr(self.model, "net", None)
        if str(cfg.get("precision")) in FLOAT16_ON_ANY_DEVICE and net is not None:  # the network's solvers
            check_precision(cfg["precision"], adaptive_solvers(net), self.model.solver_flag)
        root = Path(cfg.get("default_root_dir") or DEFAULT_ROOT)
        if self.subcommand == "fit":
            root = self._claim_run_folder(root)
            kwargs["default_root_dir"] = str(root)
        try:
            if "logger" not in kwargs and cfg.get("logger") in (None, True):
                if cfg.get("fast_dev_run") or self.subcommand == "predict":
                    kwargs["logger"] = False
                else:
                    opts = asdict(self._get(self.config_init, "wandb") or WandbOptions())
                    opts["name"] = opts.get("name") or run_name(root)
                    kwargs["logger"] = make_logger(root, **opts)
            callbacks = list(cfg.get("callbacks") or [])
            if cfg.get("enable_progress_bar", True) is not False and not any(isinstance(c, ProgressBar)
                                                                             for c in callbacks):
                callbacks.append(CompactRichProgressBar())
            kwargs["callbacks"] = [*callbacks, self.fit_start]
            plugins = cfg.get("plugins")
            plugins = list(plugins) if isinstance(plugins, (list, tuple)) else ([] if plugins is None else [plugins])
            if "plugins" not in kwargs and not any(isinstance(p, CheckpointIO) for p in plugins):
                kwargs["plugins"] = [*plugins, AtomicCheckpointIO()]
            return super().instantiate_trainer(**kwargs)
        except BaseException:
            self._release_run_folder()
            raise

    def _claim_run_folder(self, root: Path) -> Path:
        """Claim and lock the folder this fit writes into (`claim_run_folder`: `root` itself, a new
        ``version_<n>`` in it, or the run folder of ``--ckpt_path``), print it, and point the checkpoint
        callbacks, ``ckpt_path`` and the saved config at it. A DDP worker takes the folder of its rank 0."""
        section = self.config[self.subcommand]
        if _launched_worker():
            folder, ckpt_path = worker_run_folder(root, section.get("ckpt_path"), os.environ.get(RUN_FOLDER_ENV))
        else:
            self.run_folder = claim_run_folder(root, section.get("ckpt_path"))
            folder, ckpt_path = self.run_folder.path, self.run_folder.ckpt_path
            os.environ[RUN_FOLDER_ENV] = str(folder)
            print(f"cdflow: {self.run_folder.note}")
        checkpoints = folder / "checkpoints"
        for key in ("checkpoint", "last_checkpoint"):
            callback = self._get(self.config_init, key)
            if isinstance(callback, ModelCheckpoint):
                callback.dirpath = os.path.realpath(checkpoints)
            if section.get(f"{key}.dirpath") is not None:
                section[f"{key}.dirpath"] = str(checkpoints)
        section["trainer.default_root_dir"] = str(folder)  # config.yaml describes the checkpoints beside it
        section["ckpt_path"] = self.config_init[self.subcommand]["ckpt_path"] = ckpt_path
        return folder

    def _release_run_folder(self) -> None:
        if self.run_folder is not None:
            self.run_folder.release()
            self.run_folder = None
            os.environ.pop(RUN_FOLDER_ENV, None)

    # -- subcommand hooks -------------------------------------------------------------------------------
    def _run_subcommand(self, subcommand: str) -> None:
        """Run it; on Ctrl-C (Lightning exits with status 1) print the summary with the resume command first.
        The run folder's lock is released at the end, however it ends."""
        try:
            super()._run_subcommand(subcommand)
        except SystemExit:
            if subcommand == "fit" and self.trainer.interrupted:
                if self.trainer.is_global_zero:
                    print(self._summary(None, None), flush=True)
                raise SystemExit(130) from None  # the shell's status for Ctrl-C (Lightning exits with 1)
            raise
        finally:
            self._release_run_folder()

    def _summary(self, test_results: list[dict[str, float]] | None, tested_ckpt: str | None) -> str:
        fit_seconds = self._fit_seconds
        if fit_seconds is None and self._fit_started is not None:
            fit_seconds = time.perf_counter() - self._fit_started
        return run_summary(self.trainer, test_results, tested_ckpt, fit_seconds,
                           restored_best=getattr(self.model, "restored_best", False),
                           best_weights=getattr(self.model, "best_weights_path", None),
                           start=self.fit_start, args=self.argv,
                           last=self._last_ckpt or last_checkpoint(self.trainer))

    def before_fit(self) -> None:
        self._fit_started = time.perf_counter()

    def after_fit(self) -> None:
        """Test the best checkpoint (or the final weights without one) and print the run summary."""
        trainer = self.trainer
        self._fit_seconds = None if self._fit_started is None else time.perf_counter() - self._fit_started
        self._last_ckpt = last_checkpoint(trainer)  # before the test restores the callbacks' older state
        if trainer.interrupted or not self._get(self.config, "test_after_fit", True):
            if trainer.is_global_zero:
                print(self._summary(None, None))
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
            print(self._summary(self.test_results, ckpt))

    # -- predict ----------------------------------------------------------------------------------------
    def predict(self, model: Any, datamodule: Any = None, **kwargs: Any) -> None:
        """``cdflow predict``: the trainer's predictions of the data module's predict set, written as a CSV
        table (see :mod:`cdflow.training.predictions`) whose path is printed."""
        trainer = self.trainer
        if trainer.world_size > 1:
            raise ConfigError("cdflow predict writes one table from one process: run it with --trainer.devices 1")
        kwargs["return_predictions"] = True
        outputs = trainer.predict(model, datamodule=datamodule, **kwargs) or []
        batches = [b for group in outputs for b in (group if isinstance(group, list) else [group])]
        if not batches:
            raise DataError("the data module's predict set is empty (predict_dataloader gave no batch): nothing "
                            "to predict; check --trainer.limit_predict_batches and the data module's split")
        ckpt = trainer.ckpt_path

        def cat(key: str) -> Any:
            return torch.cat([b[key] for b in batches]) if all(key in b for b in batches) else None

        names = getattr(datamodule, "label_names", None)
        if names is None and ckpt:
            from cdflow.data.label_names import read_label_names

            folders = dict.fromkeys([run_dir_of(ckpt), Path(ckpt).resolve().parent])
            names = next((n for n in map(read_label_names, folders) if n is not None), None)
        target = self._get(self.config, "predictions_file")
        if target is None:
            target = default_predictions_path(ckpt) if ckpt else Path(trainer.default_root_dir) / "predictions.csv"
        probs = cat("probs")
        try:
            index = getattr(datamodule, "predict_index", None)  # e.g. the file rows of a table's test split
            if index is not None and len(index) != probs.shape[0]:
                index = None
            path = write_predictions(target, probs, spread=cat("spread"), labels=cat("labels"),
                                     splits=cat("splits"), index=index, label_names=names)
        except OSError as err:
            raise ConfigError(f"cannot write the predictions to {target} ({err.strerror or err}): choose another "
                              "file with --predictions_file PATH") from None
        self.predictions_path = path
        if trainer.is_global_zero:
            spread = ", std_<class> (Monte Carlo spread)" if cat("spread") is not None else ""
            print(f"cdflow: predictions of {probs.shape[0]} examples by {ckpt} written to {path}\n"
                  f"  columns: index{', split' if cat('splits') is not None else ''}"
                  f"{', label' if cat('labels') is not None else ''}, prediction, p_<class>{spread}")


def run_cli(args: ArgsType = None) -> CdflowCLI:
    """Run the CLI on `args` (default: ``sys.argv``) and return it; cdflow errors exit with status 1.

    W&B is quiet (``WANDB_SILENT=true``: no banner, no run history at the end) unless the environment sets
    ``WANDB_SILENT`` otherwise; the summary says where the W&B run is.
    """
    os.environ.setdefault("WANDB_SILENT", "true")
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
    # cdflow points the checkpoint callbacks at the run folder itself: evaluating a checkpoint of another
    # folder is expected, not a misconfiguration
    warnings.filterwarnings("ignore", message=r".*The dirpath has changed from.*")
    if os.environ.get("CDFLOW_KEEP_FREED_MEMORY", "1") != "0":
        keep_freed_memory()  # tensors freed every epoch are reused, not page-faulted back in (see alloc.py)
    run_cli()


if __name__ == "__main__":
    main()
