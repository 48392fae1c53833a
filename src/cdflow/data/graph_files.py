"""`GraphFileDataModule`: node features, labels and an (optionally weighted) edge list from files, served
transductively as one full batch.

File formats (see also README, "Your own data"):

* one ``.npz``: ``x`` [N, F] (or the CSR arrays ``x_data``, ``x_indices``, ``x_indptr``, ``x_shape`` of
  sparse features), ``y`` [N], ``edge_index`` [2, E] or [E, 2] (node ids 0..N−1), optional ``edge_weight``
  [E] and ``train_mask``, ``val_mask``, ``test_mask`` [N];
* or CSV files: nodes (``path``: a label column, feature columns, optional ``id`` and mask columns) and edges
  (``edges``: columns ``source``, ``target`` and optional ``weight``; node ids are the nodes file's ``id``
  column, or row numbers 0..N−1 without one). ``edges`` also replaces the edges of an ``.npz``.

The edge list is made undirected: each edge in both directions, repeated edges merged (largest weight),
self-loops dropped. Edge weights reach the Laplacian through the batch's `cdflow.graph.Graph`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cdflow.data.base import CdflowDataModule
from cdflow.data.files import (
    MASK_KEYS,
    Table,
    check_path,
    encode_labels,
    feature_matrix,
    read_csv,
    read_masks,
    read_table,
    to_float,
)
from cdflow.data.graphs import _csr, random_split
from cdflow.data.label_names import LabelNamesMixin
from cdflow.data.validate import check_finite
from cdflow.errors import ConfigError, DataError
from cdflow.graph import Graph

CSR_KEYS = tuple(f"x_{k}" for k in ("data", "indices", "indptr", "shape"))


def undirected_edges(
    edge_index: np.ndarray, edge_weight: np.ndarray | None, num_nodes: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """Both directions of every edge, sorted, without self-loops; repeated edges keep their largest weight."""
    row, col = edge_index
    keep = row != col
    row, col = row[keep], col[keep]
    keys = np.concatenate([row * num_nodes + col, col * num_nodes + row])
    uniq, inverse = np.unique(keys, return_inverse=True)
    out = np.stack([uniq // num_nodes, uniq % num_nodes]).astype(np.int64)
    if edge_weight is None:
        return out, None
    w = np.concatenate([edge_weight[keep], edge_weight[keep]])
    merged = np.full(len(uniq), -np.inf)
    np.maximum.at(merged, inverse, w)
    return out, merged


def _node_ids(table: Table, name: str, index: dict[str, int] | None, num_nodes: int, what: str) -> np.ndarray:
    """Column `name` of an edge table as node rows: through the nodes' id column (`index`), else integers."""
    values = table.column(name, "edge")
    if index is not None:
        cells = values.astype(str)
        unknown = [i for i, c in enumerate(cells) if c not in index]
        if unknown:
            i = unknown[0]
            raise DataError(
                f"{table.path}: {name} {str(cells[i])!r} at {table.where(i)} is not an id of the nodes file {what} "
                f"({len(unknown)} such edge end(s)). Fix the edge list or add those nodes."
            )
        return np.array([index[c] for c in cells], dtype=np.int64)
    ids = to_float(table, values, name)
    bad = np.flatnonzero(ids != np.round(ids))
    if len(bad):
        raise DataError(f"{table.path}: {name} {str(values[bad[0]])!r} at {table.where(int(bad[0]))} is not a node id.")
    return ids.astype(np.int64)


class GraphFileDataModule(LabelNamesMixin, CdflowDataModule):
    """A graph from files (module docstring), transductive full batch; labels (strings or any integers) map to
    ``0..K−1`` in sorted order and ``label_names`` keeps the originals (in checkpoints and ``labels.json``).

    The files are read and checked in ``__init__``, so ``num_features``, ``input_shape``, ``num_classes`` and
    ``num_nodes`` are known before setup.

    Args:
        path: ``.npz`` graph, or the nodes CSV.
        edges: edges CSV (``source``, ``target``[, ``weight``]); needed with a nodes CSV.
        label: the label column of a nodes CSV (in an ``.npz`` the labels are ``y``).
        features: feature columns of a nodes CSV (default: all but label, id and masks).
        id_column: the nodes CSV column holding the ids the edges use (row numbers if there is none).
        train_per_class, val_per_class: the seeded per-class random split (`cdflow.data.graphs.random_split`)
            used when the file has no ``train_mask``/``val_mask``/``test_mask``; all other nodes are tested.
        classes: class names in class order (default: the sorted labels of the file).
        sparse_features: hand x to the model as a `cdflow.sparse.SparseMatrix` (as `GraphDataModule`).
        seed: split seed.
    """

    def __init__(
        self,
        path: str,
        edges: str | None = None,
        label: str = "label",
        features: list[str] | None = None,
        id_column: str = "id",
        train_per_class: int = 20,
        val_per_class: int = 30,
        classes: list[str] | None = None,
        sparse_features: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__(transductive=True, seed=seed)
        self.save_hyperparameters()
        if train_per_class < 1 or val_per_class < 0:
            raise ConfigError(
                f"--data.train_per_class must be ≥ 1 and --data.val_per_class ≥ 0, got {train_per_class}, "
                f"{val_per_class}."
            )
        nodes = read_table(check_path(path, (".npz", ".csv"), "graph file"))
        if nodes.arrays is not None:
            x, labels, label_field, index = self._read_npz(nodes, label, features)
        else:
            x, labels, label_field, index = self._read_nodes_csv(nodes, label, features, id_column)
        n = x.shape[0]
        if edges is not None:
            edge_index, edge_weight = self._read_edges_csv(check_path(edges, (".csv",), "edges file"), index, n, path)
        elif nodes.arrays is not None:
            edge_index, edge_weight = self._npz_edges(nodes, n)
        else:
            raise ConfigError(
                f"{path} is a nodes CSV: give its edges file too (--data.edges edges.csv, columns source,target"
                "[,weight])."
            )
        y, self.label_names = encode_labels(nodes, labels, label_field, classes)
        check_finite(torch.from_numpy(x), "node features", source=str(nodes.path))
        masks = read_masks(nodes, n)
        if masks is None:
            masks = self._split(y, str(nodes.path))
        self.edge_index, weight = (torch.from_numpy(a) if a is not None else None
                                   for a in undirected_edges(edge_index, edge_weight, n))
        self.edge_weight = None if weight is None else weight.to(torch.float32)
        self.x = torch.from_numpy(x.astype(np.float32))
        self.y = torch.from_numpy(y)
        self.masks = {key: torch.from_numpy(m) for key, m in zip(MASK_KEYS, masks)}
        self.num_classes = len(self.label_names)
        self.num_features = x.shape[1]
        self.input_shape = (self.num_features,)

    @property
    def num_nodes(self) -> int:
        """Number of nodes N."""
        return int(self.x.shape[0])

    # -- reading ----------------------------------------------------------------------------------------
    @staticmethod
    def _read_npz(
        table: Table, label: str, features: list[str] | None
    ) -> tuple[np.ndarray, np.ndarray, str, None]:
        arrays = table.arrays
        assert arrays is not None
        if features is not None:
            raise ConfigError(f"--data.features selects columns of a nodes CSV; {table.path} is an .npz: leave it out.")
        if "x" in arrays:
            x = arrays["x"]
            if x.ndim != 2:
                raise DataError(f"{table.path}: x must be a 2-D array [N, F], got shape {x.shape}.")
            x = to_float(table, x, "x")
        elif all(k in arrays for k in CSR_KEYS):
            x = _csr(arrays, "x", table.path).toarray().astype(np.float64)
        else:
            raise DataError(
                f"{table.path}: no node features: give x [N, F] or the CSR arrays {list(CSR_KEYS)} "
                f"(arrays found: {sorted(arrays)})."
            )
        key = "y" if "y" in arrays else label
        if key not in arrays:
            raise DataError(f"{table.path}: no label array 'y' [N] (arrays found: {sorted(arrays)}). Add it.")
        labels = arrays[key]
        if labels.shape != (x.shape[0],):
            raise DataError(
                f"{table.path}: {key} has shape {labels.shape} but x has {x.shape[0]} rows: one label per node."
            )
        return x, labels, key, None

    @staticmethod
    def _read_nodes_csv(
        table: Table, label: str, features: list[str] | None, id_column: str
    ) -> tuple[np.ndarray, np.ndarray, str, dict[str, int] | None]:
        labels = table.column(label, "label")
        index = None
        if id_column in table.columns:
            ids = table.columns[id_column].astype(str).tolist()
            index = {node: row for row, node in enumerate(ids)}
            if len(index) != len(ids):
                dupes = sorted({i for i in ids if ids.count(i) > 1})[:10]
                raise DataError(
                    f"{table.path}: the id column {id_column!r} repeats the ids {dupes}; ids must be unique."
                )
        skip = {label, id_column, *MASK_KEYS}
        names = list(features) if features is not None else [c for c in table.columns if c not in skip]
        return feature_matrix(table, names), labels, label, index

    @staticmethod
    def _read_edges_csv(
        path: Path, index: dict[str, int] | None, n: int, nodes_path: str
    ) -> tuple[np.ndarray, np.ndarray | None]:
        table = read_csv(path)
        source = _node_ids(table, "source", index, n, nodes_path)
        target = _node_ids(table, "target", index, n, nodes_path)
        weight = to_float(table, table.columns["weight"], "weight") if "weight" in table.columns else None
        return GraphFileDataModule._check_edges(table, np.stack([source, target]), weight, n, "source/target")

    @staticmethod
    def _npz_edges(table: Table, n: int) -> tuple[np.ndarray, np.ndarray | None]:
        arrays = table.arrays
        assert arrays is not None
        if "edge_index" not in arrays:
            raise DataError(
                f"{table.path}: no edge_index array [2, E] (arrays found: {sorted(arrays)}). Add it, or give an "
                "edges CSV with --data.edges."
            )
        ei = arrays["edge_index"]
        if ei.ndim != 2 or 2 not in ei.shape:
            raise DataError(
                f"{table.path}: edge_index must have shape [2, E] or [E, 2], got {ei.shape}. "
                "Store one (source, target) pair per edge."
            )
        if ei.shape[0] != 2:
            ei = ei.T
        if ei.dtype.kind not in "iu":
            as_float = to_float(table, ei, "edge_index")
            if not np.all(as_float == np.round(as_float)):
                raise DataError(f"{table.path}: edge_index holds non-integer node ids; store integers 0..N-1.")
            ei = as_float
        weight = arrays.get("edge_weight")
        if weight is not None:
            weight = to_float(table, weight.reshape(-1) if weight.ndim == 2 and 1 in weight.shape else weight,
                              "edge_weight")
            if weight.ndim != 1:
                raise DataError(f"{table.path}: edge_weight must be 1-D [E], got shape {weight.shape}.")
        return GraphFileDataModule._check_edges(table, ei.astype(np.int64), weight, n, "edge_index")

    @staticmethod
    def _check_edges(
        table: Table, edge_index: np.ndarray, weight: np.ndarray | None, n: int, field: str
    ) -> tuple[np.ndarray, np.ndarray | None]:
        if edge_index.size and (edge_index.min() < 0 or edge_index.max() >= n):
            top, low = int(edge_index.max()), int(edge_index.min())
            raise DataError(
                f"{table.path}: {field} refers to node {top if top >= n else low}, but there are N={n} nodes "
                f"(ids 0..{n - 1}; largest id found {top}). Number the nodes from 0, or fix the edge list."
            )
        if weight is not None:
            e = edge_index.shape[1]
            if weight.shape != (e,):
                raise DataError(
                    f"{table.path}: {len(weight)} edge weights for {e} edges; give one weight per edge."
                )
            bad = np.flatnonzero(~np.isfinite(weight) | (weight < 0))
            if len(bad):
                raise DataError(
                    f"{table.path}: edge weight {weight[bad[0]]} at {table.where(int(bad[0]))} is negative or not "
                    f"finite ({len(bad)} such); weights must be finite and ≥ 0."
                )
        return edge_index, weight

    def _split(self, y: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        hp = self.hparams
        need = hp.train_per_class + hp.val_per_class
        counts = np.bincount(y, minlength=len(self.label_names))
        for k in np.flatnonzero((counts > 0) & (counts < need)):
            raise DataError(
                f"{where}: class {self.label_names[k]!r} has only {counts[k]} nodes, fewer than train_per_class + "
                f"val_per_class = {need}. Lower --data.train_per_class / --data.val_per_class, or give "
                f"{', '.join(MASK_KEYS)}."
            )
        return random_split(y, hp.seed, hp.train_per_class, hp.val_per_class)

    # -- batches ----------------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        """The full-batch dict (once), its `Graph` carrying the edge weights; adds the `LabelNames` callback."""
        self.attach_label_names_callback()
        if self.batch is not None:
            return
        self.set_batch(
            {"x": self.x, "y": self.y, **self.masks, "edge_index": self.edge_index},
            sparse_features=self.hparams.sparse_features,
        )
        if self.edge_weight is not None:
            assert self.batch is not None
            self.batch["graph"] = Graph(self.edge_index, self.num_nodes, edge_weight=self.edge_weight,
                                        x=self.batch["x"], name=type(self).__name__)
