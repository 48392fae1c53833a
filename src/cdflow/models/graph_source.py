"""Where a model's Laplacian comes from: a given edge list, or a Gaussian kNN graph on features."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Union

import torch
import torch.distributed as dist
from torch import Tensor

from cdflow.errors import ConfigError, DataError
from cdflow.graph import Graph, Laplacian
from cdflow.sparse import SparseMatrix


@dataclass
class GraphSpec:
    """How to build L.

    source: ``auto`` (default: the batch's edges when it has any, else a kNN graph), ``edges`` (the batch's
        edges; an error without them) or ``knn`` (Gaussian kNN graph on the input features, also on data that
        has edges). The run logs which graph it used.
    laplacian: ``gcn`` (COIN: diag(Â·1) − Â, Â = D̃^{-1/2}(A+I)D̃^{-1/2}), ``sym``, ``rw``, ``combinatorial``;
        kNN graphs use L = diag(W·1) − W of the normalised, symmetrised weights (Diff-ResNet).
    knn_k, knn_k_scale: the COIN/Diff-ResNet recipe (k nearest counting self; scale from the k_scale-th).
    knn_kind: ``gaussian`` (self-tuning, symmetric) or ``rownorm`` (toys: exp(−|xi−xj|²/ε²), rows sum to 1;
        then L = I − P).
    knn_eps: ε of the row-normalised variant.
    per_batch: rebuild the kNN graph of a fixed node set on every call (mini-batches always get their own).
    differentiable: let gradients flow through the kNN weights (neighbour choice is never differentiated).
    gather: under DDP, build the kNN graph on the *global* batch (the rows of every rank, gathered with
        gradients) and diffuse it as a whole, so that N processes with batches of B train exactly like one
        process with the concatenated batch of N·B (each rank solves the global batch: N× the compute per
        rank). Off (the default), each rank builds the graph of its own B rows. No effect outside DDP.
    """

    source: Literal["auto", "edges", "knn"] = "auto"
    laplacian: Literal["gcn", "sym", "rw", "combinatorial"] = "gcn"
    knn_k: int = 8
    knn_k_scale: int = 4
    knn_kind: Literal["gaussian", "rownorm"] = "gaussian"
    knn_eps: float = 0.5
    per_batch: bool = False
    differentiable: bool = False
    gather: bool = False

    def __post_init__(self) -> None:
        if self.source not in ("auto", "edges", "knn"):
            raise ConfigError(f"graph source must be 'auto', 'edges' or 'knn', got {self.source!r}")
        for name in ("knn_k", "knn_k_scale"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 2:
                raise ConfigError(f"--model.graph.{name} must be an int ≥ 2 (the point itself counts), got {value!r}")
        if self.knn_kind not in ("gaussian", "rownorm"):
            raise ConfigError(f"knn_kind must be 'gaussian' or 'rownorm', got {self.knn_kind!r}")
        if self.gather and self.source == "edges":
            raise ConfigError(
                "graph.gather=true gathers mini-batches across ranks for a kNN graph; with source 'edges' every "
                "rank already holds the whole graph: set --model.graph.gather false or --model.graph.source knn"
            )


GraphInput = Union[Laplacian, Graph, Tensor, None]  # noqa: UP007 — a runtime alias (Python 3.10)


def resolve_graph(spec: GraphSpec, x: Tensor | SparseMatrix, graph: GraphInput, dtype: torch.dtype) -> Laplacian:
    """The Laplacian a model diffuses over, from its `GraphSpec` and what the batch gave it.

    graph may be a ready `Laplacian` (used as is), a `Graph` from a DataModule (its Laplacian of
    ``spec.laplacian`` kind, or its kNN graph, each built once on that object), an ``edge_index`` [2, E]
    (built on every call: build a `Laplacian` once instead where the graph is fixed), or None.
    source ``auto`` takes the edges when there are any and a kNN graph of x otherwise; ``edges`` requires
    them; ``knn`` builds a kNN graph of x — of the fixed node set once (a `Graph` holding x), or of each
    batch anew (mini-batches, `per_batch`, `differentiable`).
    """
    if isinstance(graph, Laplacian):
        return graph if graph.dtype == dtype else graph.to(dtype)
    edges = graph.edge_index if isinstance(graph, Graph) else graph
    source = spec.source
    if source == "auto":
        source = "edges" if edges is not None else "knn"
    if source == "edges":
        if edges is None:
            raise ConfigError(
                "graph source 'edges' needs a batch with edges (a graph DataModule); use --model.graph.source "
                "knn to build a kNN graph from the features instead"
            )
        if isinstance(graph, Graph):
            return graph.laplacian(spec.laplacian, dtype=dtype)
        return Laplacian.from_edges(edges, x.shape[0], kind=spec.laplacian, dtype=dtype)
    if spec.knn_k > x.shape[0]:
        raise DataError(
            f"the batch has {x.shape[0]} points but the kNN graph needs graph.knn_k={spec.knn_k} neighbours "
            "(self included): lower --model.graph.knn_k, or use batches of at least knn_k points (the last batch "
            "of an epoch may be smaller: raise batch_size or make it divide the data size)"
        )
    fixed = isinstance(graph, Graph) and not (spec.per_batch or spec.differentiable or spec.gather)
    if fixed:
        try:
            return graph.knn(spec.knn_k, spec.knn_k_scale, spec.knn_kind, spec.knn_eps, dtype=dtype)
        except DataError:
            pass  # a graph without node features: build from x below
    dense = x.to_dense() if isinstance(x, SparseMatrix) else (x.to_dense() if x.is_sparse else x)
    return Laplacian.from_knn(dense.to(dtype), k=spec.knn_k, k_scale=spec.knn_k_scale, graph=spec.knn_kind,
                              eps=spec.knn_eps, differentiable=spec.differentiable)


def gather_rows(*tensors: Tensor) -> tuple[list[Tensor], slice]:
    """Every rank's rows of each tensor, concatenated in rank order, and the slice of this rank's own rows.

    Uses `torch.distributed.nn.functional.all_gather`, whose backward sums the gradients of all ranks into
    each rank's rows. Batches of different sizes are padded for the exchange and trimmed after. Outside an
    initialised process group of more than one process the tensors come back unchanged.
    """
    n = tensors[0].shape[0]
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return list(tensors), slice(0, n)
    from torch.distributed.nn.functional import all_gather

    world, rank = dist.get_world_size(), dist.get_rank()
    sizes = [torch.zeros(1, dtype=torch.long, device=tensors[0].device) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([n], dtype=torch.long, device=tensors[0].device))
    counts = [int(s) for s in sizes]
    longest = max(counts)
    out = []
    for t in tensors:
        padded = t if n == longest else torch.cat([t, t.new_zeros(longest - n, *t.shape[1:])])
        parts = all_gather(padded.contiguous())
        out.append(torch.cat([part[:count] for part, count in zip(parts, counts, strict=True)]))
    start = sum(counts[:rank])
    return out, slice(start, start + n)
