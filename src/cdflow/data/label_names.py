"""The original class names of a file-based data module: kept in checkpoints and written to ``labels.json``.

A module with labels read from a file (strings, or integers such as 3, 7, 42) maps them to ``0..K−1`` and
keeps ``label_names`` (``label_names[k]`` is class k, as a string). They reach:

* the checkpoint, through the module's ``state_dict()`` (Lightning stores it with every checkpoint); loading
  a checkpoint whose names differ from the file's stops with a `DataError`;
* ``<trainer.default_root_dir>/labels.json`` (``{"label_names": [...]}``), written on fit start by the
  `LabelNames` callback, which such a module adds to its trainer in ``setup`` (so ``cdflow fit`` writes it
  whatever ``trainer.callbacks`` says). `read_label_names` reads it back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from cdflow.errors import DataError

LABELS_FILE = "labels.json"


def write_label_names(folder: str | Path, names: list[str]) -> Path:
    """Write ``<folder>/labels.json`` (``{"label_names": names}``) and return its path."""
    path = Path(folder) / LABELS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{LABELS_FILE}.tmp")
    tmp.write_text(json.dumps({"label_names": [str(n) for n in names]}, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def read_label_names(folder: str | Path) -> list[str] | None:
    """The names in ``<folder>/labels.json``, or None when there is no such file."""
    path = Path(folder) / LABELS_FILE
    if not path.is_file():
        return None
    try:
        names = json.loads(path.read_text(encoding="utf-8"))["label_names"]
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path} is not a cdflow labels file ({exc}); delete it and run fit again.") from exc
    return [str(n) for n in names]


class LabelNames(Callback):
    """On fit start (global rank 0), write the data module's ``label_names`` to
    ``<default_root_dir>/labels.json``; does nothing for a data module without them."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        names = getattr(trainer.datamodule, "label_names", None)
        if names is not None and trainer.is_global_zero:
            write_label_names(trainer.default_root_dir, names)


class LabelNamesMixin:
    """For data modules with ``label_names``: the names in ``state_dict`` / ``load_state_dict``, and a
    `LabelNames` callback on the trainer (call `attach_label_names_callback` from ``setup``)."""

    label_names: list[str]
    trainer: L.Trainer | None

    def attach_label_names_callback(self) -> None:
        """Add a `LabelNames` callback to the attached trainer unless it has one."""
        trainer = getattr(self, "trainer", None)
        if trainer is not None and not any(isinstance(cb, LabelNames) for cb in trainer.callbacks):
            trainer.callbacks.append(LabelNames())

    def state_dict(self) -> dict[str, Any]:
        """Saved in every checkpoint: the class names, in class order."""
        return {"label_names": list(self.label_names)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Check that the checkpoint's class names are this file's; DataError otherwise."""
        saved = state_dict.get("label_names")
        if saved is None or list(saved) == list(self.label_names):
            return
        raise DataError(
            f"the checkpoint was trained with the classes {list(saved)} but {type(self).__name__} read "
            f"{list(self.label_names)} from its file, so class indices would mean different things. Use a file "
            f"with the checkpoint's classes, or pass them in order: --data.classes '{json.dumps(list(saved))}'."
        )
