"""`Graph`: a fixed graph as a DataModule hands it to models, and the Laplacians built from it once.

A graph DataModule builds one `Graph` in ``setup`` (its edges, and the node features when the node set is
fixed) and puts it in every batch. A model asks it for the Laplacian it needs: ``graph.laplacian("gcn")``
or ``graph.knn(k=8, k_scale=4)``; each is built on the first request and kept on this object (keyed by the
request's settings, never by a memory address), so an epoch costs no rebuild and a new graph is a new
object. Immutable: the tensors it holds must not be edited in place.
"""

from __future__ import annotations

import torch
from torch import Tensor

from cdflow.errors import DataError
from cdflow.graph.build import LaplacianKind
from cdflow.graph.laplacian import Laplacian
from cdflow.sparse import SparseMatrix

__all__ = ["Graph"]


class Graph:
    """Edges [2, E] (optionally weighted) on `num_nodes` nodes, with optional fixed node features x."""

    __slots__ = ("_edge_index", "_num_nodes", "_edge_weight", "_x", "_memo", "name")

    def __init__(
        self,
        edge_index: Tensor | None,
        num_nodes: int,
        edge_weight: Tensor | None = None,
        x: Tensor | SparseMatrix | None = None,
        name: str = "graph",
    ) -> None:
        if edge_index is not None and (edge_index.ndim != 2 or edge_index.shape[0] != 2):
            raise DataError(f"edge_index must have shape [2, E], got {tuple(edge_index.shape)}")
        if x is not None and x.shape[0] != num_nodes:
            raise DataError(f"the graph has {num_nodes} nodes but x has {x.shape[0]} rows")
        self._edge_index, self._num_nodes, self._edge_weight, self._x = edge_index, int(num_nodes), edge_weight, x
        self._memo: dict[tuple, Laplacian] = {}
        self.name = name

    @property
    def edge_index(self) -> Tensor | None:
        return self._edge_index

    @property
    def num_nodes(self) -> int:
        return self._num_nodes

    @property
    def has_edges(self) -> bool:
        return self._edge_index is not None

    def laplacian(self, kind: LaplacianKind = "gcn", dtype: torch.dtype = torch.float32) -> Laplacian:
        """The Laplacian of the edges (built once per kind and dtype)."""
        if self._edge_index is None:
            raise DataError(
                f"{self.name} has no edges; use a kNN graph of the features (--model.graph.source knn)"
            )
        key = ("edges", kind, dtype)
        if key not in self._memo:
            self._memo[key] = Laplacian.from_edges(self._edge_index, self._num_nodes, kind=kind,
                                                   edge_weight=self._edge_weight, dtype=dtype)
        return self._memo[key]

    def knn(self, k: int = 8, k_scale: int = 4, graph: str = "gaussian", eps: float = 0.5,
            dtype: torch.dtype = torch.float32) -> Laplacian:
        """The kNN Laplacian of the fixed node features (built once per setting; see `Laplacian.from_knn`)."""
        if self._x is None:
            raise DataError(f"{self.name} holds no node features to build a kNN graph from")
        key = ("knn", k, k_scale, graph, eps, dtype)
        if key not in self._memo:
            x = self._x.to_dense() if isinstance(self._x, SparseMatrix) else self._x
            self._memo[key] = Laplacian.from_knn(x.to(dtype), k=k, k_scale=k_scale, graph=graph, eps=eps)
        return self._memo[key]

    def to(self, device: str | torch.device | None = None, *args, **kwargs) -> Graph:
        """Move to a device (Lightning moves batches by it; dtype casts do not apply); built Laplacians move
        with it. Returns self when it is already there."""
        device = kwargs.get("device", device)
        if not isinstance(device, (str, torch.device)):
            return self
        dev = torch.device(device)
        here = self._edge_index if self._edge_index is not None else self._x
        if here is None or here.device == dev:
            return self
        def move(t):
            return None if t is None else t.to(dev)
        out = Graph(move(self._edge_index), self._num_nodes, move(self._edge_weight), move(self._x), self.name)
        out._memo.update({k: v.to(dev) for k, v in self._memo.items()})
        return out

    def __repr__(self) -> str:
        edges = "no edges" if self._edge_index is None else f"{self._edge_index.shape[1]} directed edges"
        return f"Graph({self.name}: {self._num_nodes} nodes, {edges})"
