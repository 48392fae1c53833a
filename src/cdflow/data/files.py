"""Reading a user's data file into named numpy columns, with labels mapped to 0..K−1 and optional masks.

Formats: CSV (a header row, then one row per example; read with the `csv` module), Parquet (needs
``pyarrow``), ``.npz`` (named arrays) and ``.npy`` (a structured array, whose fields are columns, or a plain
2-D numeric array whose *last* column is the label). Every problem raises a `DataError` naming the file,
the field and the fix. Used by `TabularDataModule` and `GraphFileDataModule`; no Lightning here.
"""

from __future__ import annotations

import csv
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cdflow.data.validate import check_masks
from cdflow.errors import DataError

MASK_KEYS = ("train_mask", "val_mask", "test_mask")
TABLE_SUFFIXES = (".csv", ".parquet", ".pq", ".npz", ".npy")
_TRUE, _FALSE = {"1", "true", "t", "yes", "y", "1.0"}, {"0", "false", "f", "no", "n", "0.0"}


@dataclass
class Table:
    """Columns of one file: name → 1-D array (CSV cells stay strings until converted), in file order.

    ``line_offset``: file line of data row 0 (CSV: 2, after the header), for messages; None otherwise.
    ``arrays``: the 2-D arrays of an ``.npz`` (e.g. ``x``, ``edge_index``), kept as they are.
    """

    path: Path
    columns: dict[str, np.ndarray]
    line_offset: int | None = None
    arrays: dict[str, np.ndarray] | None = None

    def where(self, row: int) -> str:
        """``row 3 (line 5)`` for a CSV, ``row 3`` otherwise."""
        return f"row {row}" + (f" (line {row + self.line_offset})" if self.line_offset is not None else "")

    def column(self, name: str, what: str) -> np.ndarray:
        """The column `name`, or a DataError listing the columns found."""
        if name not in self.columns:
            found = ", ".join(repr(c) for c in self.columns) or "none"
            fix = {"label": "name the label column with --data.label", "feature": "list existing columns in "
                   "--data.features", "edge": "edges files have the columns source,target[,weight]"}.get(what, "")
            raise DataError(f"{self.path}: no {what} column {name!r}; columns found: {found}. Fix: {fix}.")
        return self.columns[name]


def check_path(path: str | Path, suffixes: tuple[str, ...], what: str = "data file") -> Path:
    """`path` as a Path; DataError if it does not exist or its extension is not one of `suffixes`."""
    p = Path(path).expanduser()
    if not p.is_file():
        hint = " (it is a folder; give the file inside it)" if p.is_dir() else ""
        raise DataError(f"{what} {p} does not exist{hint}. Check --data.path (relative paths start at {Path.cwd()}).")
    if p.suffix.lower() not in suffixes:
        raise DataError(
            f"{what} {p}: unknown extension {p.suffix or '(none)'!r}; supported: {', '.join(suffixes)}. "
            "Convert the file or rename it with the right extension."
        )
    return p


def read_csv(path: Path) -> Table:
    """A CSV file with a header row; every cell a string (stripped)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = [row for row in csv.reader(fh) if any(cell.strip() for cell in row)]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read it as a UTF-8 CSV file ({exc}). Save it as CSV (UTF-8).") from exc
    if not rows:
        raise DataError(f"{path} is empty: a CSV file needs a header row and one row per example.")
    header = [h.strip() for h in rows[0]]
    if any(not h for h in header):
        raise DataError(f"{path}: the header row has an empty column name at column {header.index('') + 1}.")
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise DataError(f"{path}: the header names the columns {dupes} more than once; rename them.")
    body = rows[1:]
    if not body:
        raise DataError(f"{path} has a header but no data rows.")
    for i, row in enumerate(body):
        if len(row) != len(header):
            raise DataError(
                f"{path}: row {i} (line {i + 2}) has {len(row)} cells but the header has {len(header)} columns "
                f"({', '.join(header)}). Fix that line (a missing or extra comma, or an unquoted comma in a cell)."
            )
    cells = np.array([[c.strip() for c in row] for row in body], dtype=str).reshape(len(body), len(header))
    return Table(path, {h: cells[:, j] for j, h in enumerate(header)}, line_offset=2)


def read_parquet(path: Path) -> Table:
    """A Parquet file (needs ``pyarrow``)."""
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise DataError(
            f"{path}: reading Parquet needs the package pyarrow, which is not installed. "
            "Install it (pip install pyarrow) or save the table as CSV."
        ) from exc
    try:
        table = pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 — pyarrow raises many types for a corrupt file
        raise DataError(f"{path}: cannot read it as a Parquet file ({exc}).") from exc
    columns = {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}
    return Table(path, {k: np.asarray(v) for k, v in columns.items()})


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` file (no pickles)."""
    try:
        with np.load(path, allow_pickle=False) as loaded:
            return {k: loaded[k] for k in loaded.files}
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise DataError(
                f"{path} holds an object array, which cdflow does not unpickle. Save labels as a str array "
                "(np.asarray(labels, dtype=str)) and features as numbers."
            ) from exc
        raise DataError(f"{path}: cannot read it as a .npz file ({exc}). Write it with np.savez.") from exc
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: cannot read it as a .npz file ({exc}). Write it with np.savez.") from exc


def read_npy(path: Path) -> Table:
    """A ``.npy`` file: a structured array (fields are columns) or a 2-D array whose last column is the label."""
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(
            f"{path}: cannot read it as a .npy array without pickles ({exc}). Save numbers with np.save, "
            "or features and labels with np.savez(path, x=x, y=y)."
        ) from exc
    if array.dtype.names:
        return Table(path, {name: np.asarray(array[name]).reshape(-1) for name in array.dtype.names})
    if array.ndim != 2 or array.shape[1] < 2 or array.dtype.kind not in "biuf":
        raise DataError(
            f"{path}: a plain .npy file must be a 2-D numeric array [N, F + 1] whose last column is the label, "
            f"got {array.dtype} of shape {array.shape}. Save features and labels with np.savez(path, x=x, y=y)."
        )
    columns = {f"x{j}": array[:, j] for j in range(array.shape[1] - 1)}
    columns["label"] = array[:, -1]
    return Table(path, columns)


def read_table(path: Path) -> Table:
    """CSV / Parquet / .npy as columns; a ``.npz`` as its 1-D arrays (columns) and the others (``arrays``)."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return read_csv(path)
    if suffix in (".parquet", ".pq"):
        return read_parquet(path)
    if suffix == ".npy":
        return read_npy(path)
    arrays = read_npz(path)
    return Table(path, {k: v for k, v in arrays.items() if v.ndim == 1}, arrays=arrays)


def to_float(table: Table, values: np.ndarray, name: str) -> np.ndarray:
    """`values` (a column or array named `name`) as float64; DataError naming the first non-numeric cell."""
    if values.dtype.kind in "biuf":
        return values.astype(np.float64)
    flat = values.reshape(len(values), -1)
    try:
        return flat.astype(np.float64).reshape(values.shape)
    except (ValueError, TypeError):
        pass
    for i, row in enumerate(flat):
        for cell in row:
            try:
                float(cell)
            except (ValueError, TypeError):
                raise DataError(
                    f"{table.path}: non-numeric value {str(cell)!r} in column {name!r} at {table.where(i)}. "
                    "Features must be numbers: fix the cell, or leave the column out with --data.features."
                ) from None
    raise DataError(f"{table.path}: column {name!r} cannot be read as numbers.")  # pragma: no cover


def feature_matrix(table: Table, names: list[str]) -> np.ndarray:
    """Columns `names` as a float64 matrix [N, F]."""
    if not names:
        raise DataError(f"{table.path}: no feature columns (found only {list(table.columns)}). Add features.")
    return np.stack([to_float(table, table.column(n, "feature"), n) for n in names], axis=1)


def _as_int_labels(table: Table, values: np.ndarray, name: str) -> np.ndarray | None:
    """Integer labels from an int / integral float / integer-string column; None if they are names."""
    if values.dtype.kind in "iu":
        return values.astype(np.int64)
    if values.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(values) | (values != np.round(values)))
        if len(bad):
            raise DataError(
                f"{table.path}: label {name!r} has the non-integer value {values[bad[0]]} at "
                f"{table.where(int(bad[0]))}. "
                "Labels are classes: integers or names (a regression target is not supported)."
            )
        return values.astype(np.int64)
    try:
        return np.array([int(v) for v in values], dtype=np.int64)
    except (ValueError, TypeError):
        return None


def encode_labels(
    table: Table, values: np.ndarray, name: str, classes: list[str] | None = None
) -> tuple[np.ndarray, list[str]]:
    """Map labels (strings or arbitrary integers) to ``0..K−1`` in sorted order (numeric order for integers).

    Returns ``y`` (int64 [N]) and the original names as strings (``names[k]`` is class k). With `classes`,
    class k is ``classes[k]`` instead (to encode a file with the classes of another one).
    """
    values = np.asarray(values).reshape(-1)
    if values.dtype.kind == "b":
        values = values.astype(str)
    if values.dtype.kind in "USO":
        values = np.array([str(v).strip() for v in values], dtype=str)
        empty = np.flatnonzero(values == "")
        if len(empty):
            raise DataError(
                f"{table.path}: label {name!r} is empty at {table.where(int(empty[0]))} "
                f"({len(empty)} empty label(s) in all). Every example needs a label: fill or drop those rows."
            )
    ints = _as_int_labels(table, values, name)
    keys = np.array([str(v) for v in (ints if ints is not None else values)], dtype=str)
    if classes is not None:
        names = [str(c) for c in classes]
        if len(set(names)) != len(names):
            raise DataError(f"--data.classes lists a class twice: {names}.")
        index = {c: k for k, c in enumerate(names)}
        unknown = sorted(set(keys.tolist()) - set(names))
        if unknown:
            raise DataError(
                f"{table.path}: label {name!r} has values {unknown[:10]} that are not in --data.classes {names}. "
                "Add them to the classes or drop those rows."
            )
        return np.array([index[k] for k in keys], dtype=np.int64), names
    if ints is not None:
        uniq, y = np.unique(ints, return_inverse=True)
        names = [str(int(v)) for v in uniq]
    else:
        uniq, y = np.unique(keys, return_inverse=True)
        names = [str(v) for v in uniq]
    if len(names) < 2:
        raise DataError(
            f"{table.path}: label {name!r} holds a single class {names}; classification needs at least two. "
            "Check the label column (--data.label)."
        )
    return y.astype(np.int64).reshape(-1), names


def _to_bool(table: Table, values: np.ndarray, name: str) -> np.ndarray:
    values = np.asarray(values).reshape(-1)
    if values.dtype.kind == "b":
        return values
    if values.dtype.kind in "iuf":
        bad = np.flatnonzero((values != 0) & (values != 1))
        if not len(bad):
            return values.astype(bool)
        cell = values[bad[0]]
    else:
        lowered = np.char.lower(values.astype(str))
        is_true, is_false = np.isin(lowered, list(_TRUE)), np.isin(lowered, list(_FALSE))
        bad = np.flatnonzero(~(is_true | is_false))
        if not len(bad):
            return is_true
        cell = values[bad[0]]
    raise DataError(
        f"{table.path}: mask {name!r} has the value {str(cell)!r} at {table.where(int(bad[0]))}; "
        "masks hold 0/1 or true/false."
    )


def read_masks(table: Table, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The ``train_mask``, ``val_mask``, ``test_mask`` columns / arrays as bool [N], checked; None if absent.

    DataError if only some are given, if they overlap, or if one selects nothing.
    """
    present = [k for k in MASK_KEYS if k in table.columns]
    if not present:
        return None
    if len(present) < len(MASK_KEYS):
        missing = [k for k in MASK_KEYS if k not in present]
        raise DataError(
            f"{table.path} gives {present} but not {missing}: give all three masks, or none to split by "
            "fractions / per class."
        )
    masks = tuple(_to_bool(table, table.columns[k], k) for k in MASK_KEYS)
    for key, mask in zip(MASK_KEYS, masks):
        if mask.shape != (n,):
            raise DataError(f"{table.path}: {key} has {mask.shape[0]} entries but there are {n} examples.")
        if not mask.any():
            raise DataError(f"{table.path}: {key} selects no example; every split needs at least one.")
    check_masks(*(torch.from_numpy(m) for m in masks), n, source=str(table.path))
    return masks  # type: ignore[return-value]
