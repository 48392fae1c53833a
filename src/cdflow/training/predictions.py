"""Predictions as a CSV table: one row per example, its predicted class, the class probabilities and, for
models with SDE noise, their Monte Carlo spread.

Columns, in order:

* ``index``: the example's row in what was predicted (the node id for a graph; for mini-batches its row in
  the data module's file when the module gives ``predict_index``, as `TabularDataModule` does, else the
  position in the predict set, by default the test split);
* ``split`` (graphs only): ``train``, ``val``, ``test`` or ``none`` (in no mask);
* ``label`` (when the data carry labels): the true class;
* ``prediction``: the most probable class;
* ``p_<class>``: the probability of each class (members averaged, for a model with several);
* ``std_<class>`` (SDE noise, ``diffusion.n_samples`` > 1): the standard deviation of that probability across
  the Monte Carlo paths whose mean is ``p_<class>``.

Classes are written by name when `label_names` are given (the data module's, or a run's ``labels.json``),
else by index. No Lightning here: :func:`write_predictions` takes plain tensors.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from cdflow.errors import ConfigError

SPLITS = ("none", "train", "val", "test")  # the codes of `split_codes`


def split_codes(n: int, train: Tensor | None, val: Tensor | None, test: Tensor | None) -> Tensor:
    """Per-node split code [n] (index into `SPLITS`) from boolean masks; a later mask wins on overlap."""
    codes = torch.zeros(n, dtype=torch.long)
    for code, mask in enumerate((train, val, test), start=1):
        if mask is not None:
            codes[mask.detach().to("cpu", torch.bool)] = code
    return codes


def run_dir_of(ckpt_path: str | Path) -> Path:
    """The run folder of a checkpoint: the folder holding its ``checkpoints/`` folder (where ``config.yaml`` and
    ``labels.json`` are written), else the checkpoint's own folder."""
    folder = Path(ckpt_path).resolve().parent
    return folder.parent if folder.name == "checkpoints" else folder


def run_config_of(ckpt_path: str | Path) -> Path | None:
    """The ``config.yaml`` of a checkpoint's run: beside the run folder's ``checkpoints/`` (W&B or no logger), else
    the newest ``csv/version_<n>/config.yaml`` (the CSV logger's folder); None if the run has none."""
    run = run_dir_of(ckpt_path)
    if (run / "config.yaml").is_file():
        return run / "config.yaml"
    versions = [p for p in (run / "csv").glob("version_*/config.yaml") if p.parent.name[8:].isdigit()]
    return max(versions, key=lambda p: int(p.parent.name[8:]), default=None)


def default_predictions_path(ckpt_path: str | Path) -> Path:
    """``<run folder>/predictions-<checkpoint name>.csv`` (one file per checkpoint, none overwrites another's)."""
    return run_dir_of(ckpt_path) / f"predictions-{Path(ckpt_path).stem}.csv"


def _names(label_names: Sequence[str] | None, num_classes: int) -> list[str]:
    if label_names is None:
        return [str(k) for k in range(num_classes)]
    if len(label_names) != num_classes:
        raise ConfigError(
            f"{len(label_names)} class names were given for a model with {num_classes} classes: use the labels.json "
            "written with this checkpoint, or none"
        )
    return [str(n) for n in label_names]


def write_predictions(
    path: str | Path,
    probs: Tensor,
    *,
    spread: Tensor | None = None,
    labels: Tensor | None = None,
    splits: Tensor | None = None,
    index: Tensor | None = None,
    label_names: Sequence[str] | None = None,
) -> Path:
    """Write the table of the module docstring to `path` (its folder is created) and return the path.

    Args:
        probs: class probabilities [N, C].
        spread: their Monte Carlo standard deviations [N, C], or None.
        labels: true class indices [N] (values outside 0..C−1 are written as they are), or None.
        splits: split codes [N] (see `split_codes`), or None.
        index: row ids [N] (default 0..N−1).
        label_names: the name of each class (default: its index).
    """
    probs = probs.detach().to("cpu", torch.float64)
    n, c = probs.shape
    names = _names(label_names, c)
    for name, t in (("spread", spread), ("labels", labels), ("splits", splits), ("index", index)):
        if t is not None and t.shape[0] != n:
            raise ValueError(f"{name} has {t.shape[0]} rows but probs has {n}")
    header = ["index"] + (["split"] if splits is not None else []) + (["label"] if labels is not None else [])
    header += ["prediction"] + [f"p_{name}" for name in names]
    if spread is not None:
        header += [f"std_{name}" for name in names]
    pred = probs.argmax(dim=1).tolist()
    idx = list(range(n)) if index is None else index.detach().cpu().tolist()
    p_rows = probs.tolist()
    s_rows = spread.detach().to("cpu", torch.float64).tolist() if spread is not None else None
    y = labels.detach().cpu().tolist() if labels is not None else None
    sp = splits.detach().cpu().tolist() if splits is not None else None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # written whole, then renamed
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(header)
        for i in range(n):
            row: list[object] = [idx[i]]
            if sp is not None:
                row.append(SPLITS[sp[i]])
            if y is not None:
                row.append(names[y[i]] if 0 <= y[i] < c else y[i])
            row.append(names[pred[i]])
            row += [f"{p:.6g}" for p in p_rows[i]]
            if s_rows is not None:
                row += [f"{s:.6g}" for s in s_rows[i]]
            out.writerow(row)
    tmp.replace(path)
    return path
