"""cdflow.graph.Graph: a fixed graph's Laplacians, each built once on the object and equal to a fresh build."""

from __future__ import annotations

import pytest
import torch

from cdflow.errors import DataError
from cdflow.graph import Graph, Laplacian
from cdflow.sparse import SparseMatrix

F64 = torch.float64


def _graph(with_x: bool = True) -> Graph:
    n = 20
    i = torch.arange(n)
    ei = torch.cat([torch.stack([i, (i + 1) % n]), torch.stack([i[::5], (i[::5] + 7) % n])], dim=1)
    x = torch.randn(n, 3, generator=torch.Generator().manual_seed(0)) if with_x else None
    return Graph(ei, n, x=x, name="ring")


def test_edge_laplacians_are_built_once_per_kind_and_dtype() -> None:
    g = _graph()
    gcn = g.laplacian("gcn")
    assert g.laplacian("gcn") is gcn and g.has_edges and g.num_nodes == 20
    torch.testing.assert_close(gcn.to_dense(), Laplacian.from_edges(g.edge_index, 20, "gcn").to_dense(), rtol=0, atol=0)
    sym = g.laplacian("sym")
    assert sym is not gcn and sym.kind == "sym"
    g64 = g.laplacian("gcn", dtype=F64)
    assert g64 is not gcn and g64.dtype == F64 and g.laplacian("gcn", dtype=F64) is g64


def test_knn_laplacians_are_built_once_per_setting() -> None:
    g = _graph()
    a = g.knn(k=5, k_scale=3)
    assert g.knn(k=5, k_scale=3) is a and g.knn(k=6, k_scale=3) is not a
    ref = Laplacian.from_knn(g._x, k=5, k_scale=3)
    torch.testing.assert_close(a.to_dense(), ref.to_dense(), rtol=0, atol=0)
    rown = g.knn(k=5, graph="rownorm", eps=0.8)
    assert rown.kind == "rw" and not rown.symmetric
    sparse = Graph(g.edge_index, 20, x=SparseMatrix.from_tensor(g._x))
    torch.testing.assert_close(sparse.knn(k=5, k_scale=3).to_dense(), a.to_dense(), rtol=0, atol=0)


def test_missing_parts_and_bad_shapes() -> None:
    with pytest.raises(DataError, match="holds no node features"):
        _graph(with_x=False).knn()
    with pytest.raises(DataError, match="has no edges"):
        Graph(None, 5, x=torch.zeros(5, 2), name="points").laplacian()
    assert not Graph(None, 5).has_edges
    with pytest.raises(DataError, match=r"shape \[2, E\]"):
        Graph(torch.zeros(4, 2, dtype=torch.long), 5)
    with pytest.raises(DataError, match="5 nodes but x has 4 rows"):
        Graph(None, 5, x=torch.zeros(4, 2))


def test_to_the_same_device_is_the_same_object() -> None:
    g = _graph()
    lap = g.laplacian()
    assert g.to("cpu") is g and g.to(torch.device("cpu")) is g and g.to(torch.float64) is g
    assert g.laplacian() is lap
    assert repr(g) == "Graph(ring: 20 nodes, 24 directed edges)"
