"""Cora and Citeseer in the Planetoid format with the public split of GCN / GAT / GRAND.

Files ``<root>/planetoid/ind.<name>.{x,tx,allx,y,ty,ally,graph,test.index}`` (Yang et al. 2016). The
pickles are checked against their SHA-256 before being unpickled, so a tampered file is never executed.

Node order follows Kipf's GCN loader: nodes ``0..len(allx)-1`` take ``allx``/``ally``, the test nodes
listed in ``test.index`` (in file order) take ``tx``/``ty``. Citeseer has 15 isolated nodes outside both
lists; as in the GCN code they are kept with all-zero features and label 0, and belong to no mask.
The graph is made symmetric with self-loops and duplicates removed (Cora: 10,556 directed edges,
Citeseer: 9,104, as in PyTorch Geometric). Features are binarised and row-normalised like the npz graphs.
Masks: train = the first ``len(y)`` nodes (Cora 140, Citeseer 120), val = the next 500, test = the 1,000
nodes of ``test.index``.
"""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from cdflow.data.graphs import GraphData, GraphName, adjacency_to_edge_index, binarize_row_normalize
from cdflow.data.paths import RemoteFile, data_root, fetch_missing, verify_checksum
from cdflow.data.validate import check_masks
from cdflow.errors import DataError

PLANETOID_URL = "https://github.com/kimiyoung/planetoid/raw/master/data/"
_PARTS = ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")

#: SHA-256 of the Planetoid files (the copies in ``../shared/data/planetoid``).
PLANETOID_SHA256: dict[str, dict[str, str]] = {
    "cora": {
        "allx": "9419ba2f26f5c35243db64aba110e0f35a04851609e0dc5433450676ca6b8543",
        "ally": "2b998f5cc7fedc86e7f97ca2498f47a1ffc1462c29e2d578b23bf3f62b6e7d71",
        "graph": "58f13302f39dde8852dad6fe6d15b89b077b6d7f837626bce671ef80344b383d",
        "test.index": "297ce89af2b51a6a194181c7dbe1796c6a1cf9cd9349a88383b1b1e227867875",
        "tx": "b9afbaa4a400df991f6f02ef677e1e44da55ffc04801fd02f9e673987829226a",
        "ty": "41f5ac76596a1699cc33f53084a2419e92961c42bb75f36fc38e616d348532ad",
        "x": "23cfa55d91c6f624233f5eb7b6e3f141f1bd2b2ae39608a63cf5d084bb27baab",
        "y": "94465c14eb53e04ca262198dcbb2521ee8af60fb3f3d546cd6ca24a511b0e7d1",
    },
    "citeseer": {
        "allx": "2ac30345d95c9ec933a817ee0bdd6a5f077f8c184a20e696910192d534414668",
        "ally": "f704b2d986dde6c2669934de1f3ae5696a6cf9455c0f6b2646a2d135ea0a1c95",
        "graph": "d79a4ef9d3e7169aee8946145f6b7306e35bc79bffad26346cfb94e10e9912a7",
        "test.index": "2af990671580b6b2df5d158d1038f8292e30c9cd821b5453f399659b25b723d4",
        "tx": "539a8906a2da97628d212f2fdd668c109a8b3f0d36574b59e5d3fd5b5303da21",
        "ty": "55e5bd1ba1e733a04598753ad1a8d57957f4b8f89e74519f41f4f4938767e4ce",
        "x": "d20de19150741e555de0ed037195630fc194114ebc7fd72ced62810148aa22f6",
        "y": "8ba87e515d8e3ee3cf52f6d2c5b86aa73f11ecad825a808455209ec26cd54924",
    },
}

NUM_VAL = 500


def _unpickle(path: Path) -> object:
    try:
        with open(path, "rb") as handle, warnings.catch_warnings():
            # The 2016 pickles name scipy.sparse.csr, a deprecated alias of scipy.sparse.
            warnings.simplefilter("ignore", DeprecationWarning)
            return pickle.load(handle, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, ValueError) as exc:
        raise DataError(
            f"Cannot unpickle {path} ({exc}): the file is corrupt. Delete it and fetch it again."
        ) from exc


def _graph_adjacency(graph: dict[int, list[int]], n: int, path: Path) -> sp.csr_matrix:
    rows = np.fromiter((k for k, vs in graph.items() for _ in vs), dtype=np.int64)
    cols = np.fromiter((v for vs in graph.values() for v in vs), dtype=np.int64)
    if len(rows) and (min(rows.min(), cols.min()) < 0 or max(rows.max(), cols.max()) >= n):
        raise DataError(f"{path} refers to nodes outside 0..{n - 1}.")
    adj = sp.coo_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n, n)).tocsr()
    adj = (adj + adj.T).tocsr()
    adj.setdiag(0)
    adj.eliminate_zeros()
    adj.data[:] = 1.0
    return adj


def load_planetoid(
    name: GraphName, root: str | os.PathLike[str] | None = None, *, verify: bool = True, download: bool = True
) -> tuple[GraphData, np.ndarray, np.ndarray, np.ndarray]:
    """Load Planetoid Cora / Citeseer with the public split.

    Returns:
        ``(graph, train_mask, val_mask, test_mask)`` with boolean numpy masks of shape ``[N]``.
    """
    if name not in PLANETOID_SHA256:
        raise DataError(f"Unknown Planetoid graph {name!r}; available: {sorted(PLANETOID_SHA256)}.")
    folder = data_root(root) / "planetoid"
    files = {
        p: RemoteFile(f"ind.{name}.{p}", f"{PLANETOID_URL}ind.{name}.{p}", PLANETOID_SHA256[name][p])
        for p in _PARTS
    }
    fetch_missing(folder, files, dataset=f"planetoid {name}", allow_download=download)
    if verify:
        for remote in files.values():
            verify_checksum(folder / remote.name, remote.sha256 or "", url=remote.url)
    parts = {p: _unpickle(folder / f.name) for p, f in files.items() if p != "test.index"}
    index_path = folder / files["test.index"].name
    try:
        test_index = np.loadtxt(index_path, dtype=np.int64, ndmin=1)
    except ValueError as exc:
        raise DataError(f"{index_path} must hold one integer per line ({exc}).") from exc

    allx, tx = sp.csr_matrix(parts["allx"]), sp.csr_matrix(parts["tx"])
    ally, ty, y_train = (np.asarray(parts[k]) for k in ("ally", "ty", "y"))
    graph = parts["graph"]
    if not isinstance(graph, dict):
        raise DataError(f"{folder / files['graph'].name} must hold a dict of adjacency lists.")
    n = max(len(graph), allx.shape[0] + tx.shape[0], int(test_index.max()) + 1)
    if tx.shape[0] != len(test_index) or ty.shape[0] != len(test_index) or ally.shape[0] != allx.shape[0]:
        raise DataError(f"planetoid {name}: tx/ty/allx/ally sizes do not match test.index ({folder}).")
    if test_index.min() < allx.shape[0]:
        raise DataError(f"planetoid {name}: test.index overlaps the allx nodes; the files are inconsistent.")

    node_of_row = np.concatenate([np.arange(allx.shape[0]), test_index])  # tx[k] is node test_index[k]
    stacked = sp.vstack([allx, tx]).tocoo()
    features = sp.csr_matrix(
        (stacked.data.astype(np.float32), (node_of_row[stacked.row], stacked.col)), shape=(n, allx.shape[1])
    )
    onehot = np.zeros((n, ally.shape[1]), dtype=np.float32)
    onehot[: ally.shape[0]] = ally
    onehot[test_index] = ty
    labels = onehot.argmax(axis=1).astype(np.int64)

    train = np.zeros(n, dtype=bool)
    train[: len(y_train)] = True
    val = np.zeros(n, dtype=bool)
    val[len(y_train) : len(y_train) + NUM_VAL] = True
    test = np.zeros(n, dtype=bool)
    test[test_index] = True

    data = GraphData(
        x=torch.from_numpy(binarize_row_normalize(features)),
        y=torch.from_numpy(labels),
        edge_index=adjacency_to_edge_index(_graph_adjacency(graph, n, folder / files["graph"].name)),
        num_classes=int(ally.shape[1]),
        name=f"{name}-planetoid",
    ).validate()
    check_masks(torch.from_numpy(train), torch.from_numpy(val), torch.from_numpy(test), n, source=data.name)
    return data, train, val, test
