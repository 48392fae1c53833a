"""Citation graphs (Cora, Citeseer) in the gnn-benchmark ``.npz`` format, with the COIN / Diff-ResNet
preprocessing and their random split protocol.

Preprocessing, as in Shchur et al.'s ``SparseGraph.standardize`` used by the Diff-ResNet code: make the
adjacency unweighted and symmetric, remove self-loops, keep the largest connected component (Cora: 2,485
of 2,708 nodes; Citeseer: 2,110 of 3,312); binarise the bag-of-words features, then normalise each row to
sum 1 (all-zero rows stay zero).
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import connected_components

from cdflow.data.paths import RemoteFile, data_root, fetch_missing, verify_checksum
from cdflow.data.validate import check_edge_index, check_finite, check_labels
from cdflow.errors import DataError

GraphName = Literal["cora", "citeseer"]

GNN_BENCHMARK_URL = "https://github.com/shchur/gnn-benchmark/raw/master/data/npz/"

#: The gnn-benchmark files with their SHA-256 (the copies in ``../shared/data/gnn-benchmark``).
GNN_BENCHMARK_FILES: dict[str, RemoteFile] = {
    "cora": RemoteFile(
        "cora.npz",
        GNN_BENCHMARK_URL + "cora.npz",
        "068e22d90c3849b4057dfb05851741428992af058efcd4e7ebb4186f3d581de2",
    ),
    "citeseer": RemoteFile(
        "citeseer.npz",
        GNN_BENCHMARK_URL + "citeseer.npz",
        "280278b21b434c047922e8389518861416fb3ad39389c27865ff0e6bbb0aaab7",
    ),
}


@dataclass
class GraphData:
    """A node-classification graph: features ``x [N, F]``, labels ``y [N]``, ``edge_index [2, E]``.

    ``edge_index`` lists each undirected edge in both directions, without self-loops.
    """

    x: torch.Tensor
    y: torch.Tensor
    edge_index: torch.Tensor
    num_classes: int
    name: str

    @property
    def num_nodes(self) -> int:
        """Number of nodes N."""
        return int(self.x.shape[0])

    @property
    def num_features(self) -> int:
        """Number of node features F."""
        return int(self.x.shape[1])

    def validate(self) -> GraphData:
        """Check finite features, labels in range and edge ids in range; return self."""
        check_finite(self.x, "x", source=self.name)
        check_labels(self.y, self.num_classes, "y", source=self.name)
        check_edge_index(self.edge_index, self.num_nodes, source=self.name)
        return self


def standardize_adjacency(adj: sp.spmatrix) -> sp.csr_matrix:
    """Unweighted, symmetric, self-loop-free copy of ``adj`` (float32 CSR with ones)."""
    adj = sp.csr_matrix(adj, dtype=np.float32)
    adj.data[:] = 1.0
    adj = (adj + adj.T).tocsr()
    adj.setdiag(0)
    adj.eliminate_zeros()
    adj.data[:] = 1.0
    return adj


def largest_component(adj: sp.csr_matrix) -> np.ndarray:
    """Sorted node ids of the largest connected component of the symmetric graph ``adj``."""
    _, component = connected_components(adj, directed=False)
    return np.flatnonzero(component == np.argmax(np.bincount(component)))


def binarize_row_normalize(features: sp.spmatrix) -> np.ndarray:
    """Binary bag-of-words (non-zero → 1), then rows divided by their sum (all-zero rows stay zero)."""
    features = sp.csr_matrix(features, dtype=np.float32)
    features.eliminate_zeros()
    features.data[:] = 1.0
    rowsum = np.asarray(features.sum(axis=1)).ravel()
    inv = np.divide(1.0, rowsum, out=np.zeros_like(rowsum), where=rowsum > 0)
    return np.asarray((sp.diags(inv) @ features).todense(), dtype=np.float32)


def adjacency_to_edge_index(adj: sp.spmatrix) -> torch.Tensor:
    """``[2, E]`` long tensor of the non-zeros of ``adj``, sorted by (row, column)."""
    coo = sp.coo_matrix(adj)
    order = np.lexsort((coo.col, coo.row))
    return torch.from_numpy(np.vstack([coo.row[order], coo.col[order]]).astype(np.int64))


def _csr(npz: dict[str, np.ndarray], prefix: str, path: os.PathLike[str] | str) -> sp.csr_matrix:
    keys = [f"{prefix}_{k}" for k in ("data", "indices", "indptr", "shape")]
    missing = [k for k in keys if k not in npz]
    if missing:
        raise DataError(f"{path} lacks the arrays {missing}: it is not a gnn-benchmark .npz file.")
    try:
        return sp.csr_matrix((npz[keys[0]], npz[keys[1]], npz[keys[2]]), shape=tuple(npz[keys[3]]))
    except ValueError as exc:
        raise DataError(f"{path}: the {prefix}_* arrays do not form a valid CSR matrix ({exc}).") from exc


def load_npz_graph(path: str | os.PathLike[str], name: str | None = None, *, lcc: bool = True) -> GraphData:
    """Load a gnn-benchmark ``.npz`` file and apply the COIN / Diff-ResNet preprocessing.

    Args:
        path: the ``.npz`` file (``adj_*`` and ``attr_*`` CSR arrays and ``labels``).
        name: dataset name for messages (default: the file stem).
        lcc: keep only the largest connected component.
    """
    name = name or os.path.splitext(os.path.basename(path))[0]
    try:
        with np.load(path, allow_pickle=False) as loaded:
            npz = {k: loaded[k] for k in loaded.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(
            f"Cannot read {path} as a .npz file ({exc}). Delete it and download it again."
        ) from exc
    adj = standardize_adjacency(_csr(npz, "adj", path))
    attr = _csr(npz, "attr", path)
    if "labels" not in npz:
        raise DataError(f"{path} has no 'labels' array (only multi-class single-label graphs are supported).")
    labels = np.asarray(npz["labels"]).astype(np.int64)
    n = adj.shape[0]
    if adj.shape != (n, n) or attr.shape[0] != n or labels.shape != (n,):
        raise DataError(
            f"{path}: inconsistent sizes: adjacency {adj.shape}, attributes {attr.shape}, "
            f"labels {labels.shape}."
        )
    if lcc:
        keep = largest_component(adj)
        adj, attr, labels = adj[keep][:, keep], attr[keep], labels[keep]
    classes, y = np.unique(labels, return_inverse=True)
    if classes.min(initial=0) < 0:
        raise DataError(
            f"{path}: negative labels {classes[classes < 0].tolist()} (unlabelled nodes are not supported)."
        )
    return GraphData(
        x=torch.from_numpy(binarize_row_normalize(attr)),
        y=torch.from_numpy(y.astype(np.int64)),
        edge_index=adjacency_to_edge_index(adj),
        num_classes=len(classes),
        name=name,
    ).validate()


def load_graph(
    name: GraphName, root: str | os.PathLike[str] | None = None, *, verify: bool = True, download: bool = True
) -> GraphData:
    """Load Cora or Citeseer from ``<root>/gnn-benchmark/<name>.npz`` (fetched if missing)."""
    if name not in GNN_BENCHMARK_FILES:
        raise DataError(f"Unknown graph {name!r}; available: {sorted(GNN_BENCHMARK_FILES)}.")
    remote = GNN_BENCHMARK_FILES[name]
    folder = data_root(root) / "gnn-benchmark"
    fetch_missing(folder, {name: remote}, dataset=name, allow_download=download)
    path = folder / remote.name
    if verify and remote.sha256:
        verify_checksum(path, remote.sha256, url=remote.url)
    return load_npz_graph(path, name)


def random_split(
    labels: np.ndarray | torch.Tensor, seed: int, train_per_class: int = 20, val_per_class: int = 30
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The gnn-benchmark / Diff-ResNet random split: per class, ``train_per_class`` training nodes, then per
    class ``val_per_class`` validation nodes among the rest; all remaining nodes are the test set.

    Sampling follows Shchur et al.'s ``get_train_val_test_split`` with ``np.random.RandomState(seed)``
    (classes in increasing order, ``choice(..., replace=False)``), so a seed gives the same split as theirs.

    Returns:
        Boolean masks ``(train, val, test)`` of shape ``[N]``.
    """
    labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels).astype(np.int64)
    if train_per_class < 1 or val_per_class < 0:
        raise DataError(
            f"train_per_class must be >= 1 and val_per_class >= 0, got {train_per_class}, {val_per_class}."
        )
    rng = np.random.RandomState(seed)
    classes = np.unique(labels)
    n = len(labels)
    for c in classes:
        count = int((labels == c).sum())
        if count < train_per_class + val_per_class:
            raise DataError(
                f"Class {c} has only {count} nodes, fewer than train_per_class + val_per_class = "
                f"{train_per_class + val_per_class}. Lower them or drop that class."
            )

    def sample(per_class: int, forbidden: np.ndarray) -> np.ndarray:
        picks = [
            rng.choice(np.flatnonzero((labels == c) & ~forbidden), per_class, replace=False) for c in classes
        ]
        return np.concatenate(picks) if picks else np.zeros(0, dtype=np.int64)

    train = np.zeros(n, dtype=bool)
    train[sample(train_per_class, train)] = True
    val = np.zeros(n, dtype=bool)
    if val_per_class:
        val[sample(val_per_class, train)] = True
    test = ~(train | val)
    return train, val, test
