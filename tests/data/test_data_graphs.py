"""Cora / Citeseer (gnn-benchmark npz and Planetoid), the random split, and the COVID graphs."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cdflow.data.covid import load_covid
from cdflow.data.graphs import GraphData, load_graph, random_split
from cdflow.data.planetoid import load_planetoid
from cdflow.errors import DataError

# Published sizes of the largest connected components (Shchur et al. 2018; Diff-ResNet / COIN tables).
LCC = {"cora": (2485, 5069, 7), "citeseer": (2110, 3668, 6)}


def _undirected_checks(g: GraphData) -> None:
    src, dst = g.edge_index
    assert not bool((src == dst).any()), "self-loops left"
    pairs = set(zip(src.tolist(), dst.tolist()))
    assert all((d, s) in pairs for s, d in pairs), "edge_index is not symmetric"
    assert len(pairs) == g.edge_index.shape[1], "duplicate edges"


@pytest.mark.parametrize("name", ["cora", "citeseer"])
def test_gnn_benchmark_lcc(data_dir: Path, name: str) -> None:
    g = load_graph(name, data_dir)
    nodes, edges, classes = LCC[name]
    assert g.num_nodes == nodes and g.edge_index.shape[1] == 2 * edges and g.num_classes == classes
    assert g.x.dtype == torch.float32 and g.y.dtype == torch.long and g.edge_index.dtype == torch.long
    _undirected_checks(g)
    torch.testing.assert_close(g.x.sum(dim=1), torch.ones(nodes))
    assert set(torch.unique(g.y).tolist()) == set(range(classes))
    # connected: a breadth-first search from node 0 reaches every node
    neighbours: dict[int, list[int]] = {}
    for s, d in g.edge_index.t().tolist():
        neighbours.setdefault(s, []).append(d)
    reached, frontier = {0}, [0]
    while frontier:
        nxt = {d for s in frontier for d in neighbours[s]} - reached
        reached |= nxt
        frontier = list(nxt)
    assert len(reached) == nodes


def _reference_split(labels: np.ndarray, seed: int, n_train: int, n_val: int) -> tuple[list, list]:
    """Shchur et al.'s sample_per_class, restated: per class in order, choice among allowed indices."""
    rng = np.random.RandomState(seed)
    classes = sorted(set(labels.tolist()))
    train: list[int] = []
    for c in classes:
        pool = [i for i in range(len(labels)) if labels[i] == c]
        train += rng.choice(pool, n_train, replace=False).tolist()
    val: list[int] = []
    for c in classes:
        pool = [i for i in range(len(labels)) if labels[i] == c and i not in set(train)]
        val += rng.choice(pool, n_val, replace=False).tolist()
    return train, val


def test_random_split_protocol(data_dir: Path) -> None:
    y = load_graph("cora", data_dir).y.numpy()
    train, val, test = random_split(y, seed=3)
    assert train.dtype == bool and train.shape == y.shape
    assert np.bincount(y[train]).tolist() == [20] * 7 and np.bincount(y[val]).tolist() == [30] * 7
    assert not (train & val).any() and not (train & test).any() and not (val & test).any()
    assert (train | val | test).all() and test.sum() == 2485 - 350
    again = random_split(y, seed=3)
    assert all((a == b).all() for a, b in zip((train, val, test), again))
    assert not (random_split(y, seed=4)[0] == train).all()
    ref_train, ref_val = _reference_split(y, 3, 20, 30)
    assert set(np.flatnonzero(train)) == set(ref_train)
    assert set(np.flatnonzero(val)) == set(ref_val)


def test_random_split_too_few_nodes() -> None:
    with pytest.raises(DataError, match="Class 1 has only 3 nodes"):
        random_split(np.array([0] * 60 + [1] * 3), seed=0)


@pytest.mark.parametrize(
    ("name", "nodes", "edges", "n_train", "features"),
    [("cora", 2708, 10556, 140, 1433), ("citeseer", 3327, 9104, 120, 3703)],
)
def test_planetoid_public_split(
    data_dir: Path, name: str, nodes: int, edges: int, n_train: int, features: int
) -> None:
    g, train, val, test = load_planetoid(name, data_dir)
    assert g.x.shape == (nodes, features) and g.edge_index.shape == (2, edges)
    assert (train.sum(), val.sum(), test.sum()) == (n_train, 500, 1000)
    assert np.flatnonzero(train).tolist() == list(range(n_train))
    _undirected_checks(g)
    sums = g.x.sum(dim=1)
    nonzero = sums > 0
    torch.testing.assert_close(sums[nonzero], torch.ones(int(nonzero.sum())))
    assert int((~nonzero).sum()) == (0 if name == "cora" else 15)  # Citeseer's padded isolated nodes
    assert not bool((~nonzero & torch.from_numpy(train | val | test)).any())


def test_planetoid_cora_train_labels_are_balanced(data_dir: Path) -> None:
    g, train, _, _ = load_planetoid("cora", data_dir)
    assert torch.bincount(g.y[torch.from_numpy(train)]).tolist() == [20] * 7


def test_missing_npz_names_expected_path(tmp_path: Path, offline: list[str]) -> None:
    with pytest.raises(DataError) as info:
        load_graph("citeseer", tmp_path)
    message = str(info.value)
    assert str(tmp_path / "gnn-benchmark" / "citeseer.npz") in message
    assert "https://github.com/shchur/gnn-benchmark/raw/master/data/npz/citeseer.npz" in message
    assert offline == ["https://github.com/shchur/gnn-benchmark/raw/master/data/npz/citeseer.npz"]


def test_missing_root_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_graph("cora", tmp_path / "nowhere")


def test_corrupt_npz_is_rejected(data_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "gnn-benchmark").mkdir()
    blob = (data_dir / "gnn-benchmark" / "cora.npz").read_bytes()
    (tmp_path / "gnn-benchmark" / "cora.npz").write_bytes(blob[:-1000])
    with pytest.raises(DataError, match="corrupt or truncated"):
        load_graph("cora", tmp_path, download=False)
    with pytest.raises(DataError, match="cora.npz"):
        load_graph("cora", tmp_path, verify=False, download=False)


def test_tampered_pickle_is_never_unpickled(data_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "planetoid"
    folder.mkdir()
    for source in (data_dir / "planetoid").glob("ind.cora.*"):
        shutil.copyfile(source, folder / source.name)
    (folder / "ind.cora.graph").write_bytes(b"cos\nsystem\n(S'echo pwned'\ntR.")
    with pytest.raises(DataError, match="ind.cora.graph is corrupt or truncated"):
        load_planetoid("cora", tmp_path, download=False)


def test_covid(data_dir: Path) -> None:
    data = load_covid(data_dir)
    assert data.cases.shape == (61, 129) and data.cases.dtype == torch.float32
    assert data.num_days == 61 and data.num_nodes == 129
    assert len(data.edge_index) == len(data.edge_weight) == 61
    for ei, w in zip(data.edge_index, data.edge_weight):
        assert ei.dtype == torch.long and ei.shape[0] == 2 and ei.shape[1] == w.shape[0]
        assert int(ei.min()) >= 0 and int(ei.max()) < 129 and bool((w > 0).all())
    assert float(data.cases.min()) >= 0
    assert data.edge_index[0].shape[1] == 2158
