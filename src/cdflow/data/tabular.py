"""`TabularDataModule`: features and a label from one file (CSV, Parquet, ``.npz``, ``.npy``), as ``(x, y)``
mini-batches.

File formats (see also README, "Your own data"):

* CSV / Parquet: one row per example; a label column (``label``), feature columns (all others by default),
  optional ``train_mask``, ``val_mask``, ``test_mask`` columns (0/1 or true/false);
* ``.npz``: arrays ``x`` [N, F] and ``y`` [N], optional ``train_mask``, ``val_mask``, ``test_mask`` [N];
* ``.npy``: a structured array (fields are columns, as in a CSV) or a 2-D numeric array [N, F + 1] whose
  last column is the label.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch.utils.data import TensorDataset

from cdflow.data.base import CdflowDataModule, minibatch_loader, tensor_dataset
from cdflow.data.files import (
    MASK_KEYS,
    TABLE_SUFFIXES,
    Table,
    check_path,
    encode_labels,
    feature_matrix,
    read_masks,
    read_table,
    to_float,
)
from cdflow.data.label_names import LabelNamesMixin
from cdflow.data.splits import stratified_split
from cdflow.data.validate import check_finite
from cdflow.errors import ConfigError, DataError

SPLITS = ("train", "val", "test")


def check_fractions(split: tuple[float, float, float] | list[float]) -> tuple[float, float, float]:
    """``(train, val, test)`` fractions: three numbers ≥ 0 summing to 1, train and test > 0."""
    if len(split) != 3:
        raise ConfigError(f"--data.split takes three fractions (train, val, test), got {list(split)}.")
    fractions = tuple(float(f) for f in split)
    if any(not math.isfinite(f) or f < 0 for f in fractions) or fractions[0] <= 0 or fractions[2] <= 0:
        raise ConfigError(f"--data.split fractions must be ≥ 0 with train and test > 0, got {list(fractions)}.")
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise ConfigError(
            f"--data.split fractions {list(fractions)} sum to {sum(fractions):g}, not 1; e.g. [0.7, 0.15, 0.15]."
        )
    return fractions  # type: ignore[return-value]


def split_by_fractions(
    y: np.ndarray, names: list[str], fractions: tuple[float, float, float], seed: int, where: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A seeded stratified split (`cdflow.data.splits.stratified_split`); DataError naming the class that is
    too small for it."""
    parts = sum(f > 0 for f in fractions)
    counts = np.bincount(y, minlength=len(names))
    for k in np.flatnonzero((counts > 0) & (counts < max(parts, 2))):
        raise DataError(
            f"{where}: class {names[k]!r} has only {counts[k]} example(s), too few for a stratified "
            f"train/val/test split (at least {max(parts, 2)} needed). Add examples, drop the class, or give "
            f"the split as {', '.join(MASK_KEYS)} columns."
        )
    try:
        return stratified_split(y, seed, val_fraction=fractions[1], test_fraction=fractions[2])
    except ValueError as exc:
        if isinstance(exc, ConfigError):
            raise
        raise DataError(
            f"{where}: cannot split {len(y)} examples of {len(names)} classes by the fractions {list(fractions)} "
            f"({exc}). Use larger fractions for val/test, more examples, or give {', '.join(MASK_KEYS)}."
        ) from exc


class TabularDataModule(LabelNamesMixin, CdflowDataModule):
    """Features and labels from one file, as shuffled ``(x [B, F] float32, y [B])`` mini-batches.

    The file is read, checked, split and standardised in ``__init__`` (so ``num_features``, ``input_shape``
    and ``num_classes`` are known before setup). Labels (strings or arbitrary integers) become ``0..K−1`` in
    sorted order; ``label_names`` keeps the originals (saved in checkpoints and ``labels.json``).

    Args:
        path: CSV, Parquet (``.parquet``/``.pq``, needs pyarrow), ``.npz`` or ``.npy`` file (module docstring).
        label: the label column (CSV, Parquet, structured ``.npy``); in an ``.npz`` the labels are ``y``.
        features: feature columns (CSV, Parquet, structured ``.npy``); default all but the label and masks.
        split: ``(train, val, test)`` fractions of a seeded stratified split, used when the file has no
            ``train_mask``/``val_mask``/``test_mask`` (with them, rows in no mask are left out).
        standardize: subtract the mean and divide by the std of each feature, both of the training part only.
        classes: class names in class order (default: the sorted labels of the file); to encode a file like
            the one a checkpoint was trained on.
        predict_path: a file of rows to predict (``cdflow predict``), with the same feature columns (an
            ``.npz``: array ``x``) and, optionally, the label column; standardised with the training
            statistics. Without it, ``cdflow predict`` predicts the test split.
        batch_size, num_workers, seed: loaders; `seed` also seeds the split.
    """

    def __init__(
        self,
        path: str,
        label: str = "label",
        features: list[str] | None = None,
        split: tuple[float, float, float] = (0.7, 0.15, 0.15),
        standardize: bool = True,
        classes: list[str] | None = None,
        predict_path: str | None = None,
        batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(transductive=False, batch_size=batch_size, num_workers=num_workers, seed=seed)
        self.save_hyperparameters()
        fractions = check_fractions(split)
        table = read_table(check_path(path, TABLE_SUFFIXES))
        raw, labels, label_field, self.feature_names = self._read(table, label, features)
        y, self.label_names = encode_labels(table, labels, label_field, classes)
        where = str(table.path)
        bad = np.argwhere(~np.isfinite(raw))
        if len(bad):
            row, col = (int(v) for v in bad[0])
            raise DataError(
                f"{where}: feature {self.feature_names[col]!r} is {raw[row, col]} at {table.where(row)} "
                f"({len(bad)} NaN/inf value(s) in all, in {len(np.unique(bad[:, 1]))} column(s)). Fill or drop "
                "those rows (cdflow does not impute)."
            )
        masks = read_masks(table, len(y))
        if masks is None:
            masks = split_by_fractions(y, self.label_names, fractions, seed, where)
        self.masks = dict(zip(SPLITS, masks))
        #: the file row (0-based, header excluded) of each example of the predict set (the test split, or
        #: every row of `predict_path`)
        self.predict_index = torch.from_numpy(np.flatnonzero(self.masks["test"]))
        self.y = torch.from_numpy(y)
        self._raw = raw
        self.num_classes = len(self.label_names)
        self.num_features = raw.shape[1]
        self.input_shape = (self.num_features,)
        self.mean = raw[self.masks["train"]].mean(axis=0) if standardize else np.zeros(raw.shape[1])
        std = raw[self.masks["train"]].std(axis=0) if standardize else np.ones(raw.shape[1])
        self.std = np.where(std > 0, std, 1.0)  # a constant feature stays constant (0) instead of NaN
        self.x = self._standardized()
        self._predict: tuple[np.ndarray, torch.Tensor | None] | None = None
        if predict_path is not None:
            self._predict = self._read_predict(predict_path, label)
            self.predict_index = torch.arange(len(self._predict[0]))

    @staticmethod
    def _read(
        table: Table, label: str, features: list[str] | None
    ) -> tuple[np.ndarray, np.ndarray, str, list[str]]:
        """(features float64 [N, F], raw labels [N], the label's field name, feature names)."""
        arrays = table.arrays
        if arrays is not None and "x" in arrays:  # .npz with x and y
            if features is not None:
                raise ConfigError(
                    f"--data.features selects columns of a CSV/Parquet file; {table.path} is an .npz whose "
                    "features are the array x: leave --data.features out."
                )
            key = "y" if "y" in arrays else label
            if key not in arrays:
                raise DataError(
                    f"{table.path}: no label array 'y' (arrays found: {sorted(arrays)}). "
                    "Save the labels too: np.savez(path, x=x, y=y)."
                )
            x, labels = arrays["x"], arrays[key]
            if x.ndim != 2 or labels.ndim != 1 or x.shape[0] != labels.shape[0]:
                raise DataError(
                    f"{table.path}: x must be [N, F] and {key} [N], got x {x.shape} and {key} {labels.shape}."
                )
            return to_float(table, x, "x"), labels, key, [f"x{j}" for j in range(x.shape[1])]
        if arrays is not None and not table.columns:
            raise DataError(
                f"{table.path}: found the arrays {sorted(arrays)}, expected x [N, F] and y [N] "
                "(np.savez(path, x=x, y=y))."
            )
        labels = table.column(label, "label")
        skip = {label, *MASK_KEYS}
        names = list(features) if features is not None else [c for c in table.columns if c not in skip]
        if label in names:
            raise ConfigError(f"--data.features lists the label column {label!r}; leave it out.")
        return feature_matrix(table, names), labels, label, names

    def _read_predict(self, path: str, label: str) -> tuple[np.ndarray, torch.Tensor | None]:
        """(raw features [M, F], labels [M] or None) of the rows to predict."""
        table = read_table(check_path(path, TABLE_SUFFIXES, "file to predict"))
        arrays = table.arrays
        if arrays is not None and "x" in arrays:
            raw = to_float(table, arrays["x"], "x")
            labels = arrays.get("y")
            field = "y"
        else:
            missing = [n for n in self.feature_names if n not in table.columns]
            if missing:
                raise DataError(f"{table.path}: the feature column(s) {missing[:5]} of the training file are missing "
                                f"(found {list(table.columns)[:10]}): the rows to predict need the same features.")
            raw = feature_matrix(table, self.feature_names)
            labels = table.column(label, "label") if label in table.columns else None
            field = label
        if raw.ndim != 2 or raw.shape[1] != self.num_features:
            raise DataError(f"{table.path}: {raw.shape[1] if raw.ndim == 2 else raw.shape} features, but the "
                            f"model is trained on {self.num_features}: give the same feature columns.")
        check_finite(torch.from_numpy(raw), "features to predict", source=str(table.path))
        y = None
        if labels is not None:
            y = torch.from_numpy(encode_labels(table, labels, field, self.label_names)[0])
        return raw, y

    def predict_dataloader(self) -> Any:
        """The test split, or the rows of ``predict_path`` (``(x,)`` or ``(x, y)`` batches, in file order)."""
        if self._predict is None:
            return super().predict_dataloader()
        raw, y = self._predict
        x = torch.from_numpy(((raw - self.mean) / self.std).astype(np.float32))  # the training statistics
        data = TensorDataset(x) if y is None else TensorDataset(x, y)
        return minibatch_loader(data, self._batch_size, self._num_workers, shuffle=False, seed=self._seed)

    def _standardized(self) -> torch.Tensor:
        return torch.from_numpy(((self._raw - self.mean) / self.std).astype(np.float32))

    def setup(self, stage: str | None = None) -> None:
        """The three ``(x, y)`` datasets (once); adds the `LabelNames` callback to the trainer."""
        self.attach_label_names_callback()
        if self.datasets:
            return
        name = type(self).__name__
        self.datasets = {
            key: tensor_dataset(self.x[torch.from_numpy(mask)], self.y[torch.from_numpy(mask)], self.num_classes,
                                name=f"{name} {key}")
            for key, mask in self.masks.items()
        }

    def state_dict(self) -> dict[str, Any]:
        """Class names and the standardisation statistics (of the training part)."""
        return {**super().state_dict(), "feature_mean": self.mean.tolist(), "feature_std": self.std.tolist()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Check the class names; standardise with the checkpoint's statistics (those the model was trained on)."""
        super().load_state_dict(state_dict)
        if "feature_mean" not in state_dict:
            return
        mean, std = np.asarray(state_dict["feature_mean"]), np.asarray(state_dict["feature_std"])
        if mean.shape != self.mean.shape:
            raise DataError(
                f"the checkpoint was trained on {mean.shape[0]} features but {self.hparams.path} has "
                f"{self.num_features}: use a file with the same feature columns."
            )
        if not (np.allclose(mean, self.mean) and np.allclose(std, self.std)):
            self.mean, self.std = mean, std
            self.x = self._standardized()
            self.datasets = {}
            self.setup(None)


__all__ = ["TabularDataModule", "check_fractions", "split_by_fractions"]
