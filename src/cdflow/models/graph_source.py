"""Where a model's Laplacian comes from: a given edge list, or a Gaussian kNN graph on features."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.distributed as dist
from torch import Tensor

from cdflow.errors import ConfigError, DataError
from cdflow.graph import knn_gaussian_graph, knn_rownorm_graph, laplacian_from_edges, laplacian_from_weights


@dataclass
class GraphSpec:
    """How to build L.

    source: ``edges`` (the batch's edge_index) or ``knn`` (Gaussian kNN graph on the state being diffused:
        input features, hidden features or outputs).
    laplacian: ``gcn`` (COIN: diag(Â·1) − Â, Â = D̃^{-1/2}(A+I)D̃^{-1/2}), ``sym``, ``rw``, ``combinatorial``;
        kNN graphs use L = diag(W·1) − W of the normalised, symmetrised weights (Diff-ResNet).
    knn_k, knn_k_scale: the COIN/Diff-ResNet recipe (k nearest counting self; scale from the k_scale-th).
    knn_kind: ``gaussian`` (self-tuning, symmetric) or ``rownorm`` (toys: exp(−|xi−xj|²/ε²), rows sum to 1;
        then L = I − P).
    knn_eps: ε of the row-normalised variant.
    per_batch: rebuild the graph for every batch (mini-batch diffusion); otherwise build once and cache
        (a fixed point set, e.g. the transductive full batch).
    differentiable: let gradients flow through the kNN weights (neighbour choice is never differentiated).
    gather: under DDP, build the kNN graph on the *global* batch (the rows of every rank, gathered with
        gradients) and diffuse it as a whole, so that N processes with batches of B train exactly like one
        process with the concatenated batch of N·B (each rank solves the global batch: N× the compute per
        rank). Off (the default), each rank builds the graph of its own B rows. No effect outside DDP.
    """

    source: Literal["edges", "knn"] = "edges"
    laplacian: Literal["gcn", "sym", "rw", "combinatorial"] = "gcn"
    knn_k: int = 8
    knn_k_scale: int = 4
    knn_kind: Literal["gaussian", "rownorm"] = "gaussian"
    knn_eps: float = 0.5
    per_batch: bool = False
    differentiable: bool = False
    gather: bool = False

    def __post_init__(self) -> None:
        if self.source not in ("edges", "knn"):
            raise ConfigError(f"graph source must be 'edges' or 'knn', got {self.source!r}")
        if self.knn_kind not in ("gaussian", "rownorm"):
            raise ConfigError(f"knn_kind must be 'gaussian' or 'rownorm', got {self.knn_kind!r}")
        if self.gather and self.source != "knn":
            raise ConfigError(
                "graph.gather=true gathers mini-batches across ranks for a kNN graph; with source 'edges' every "
                "rank already holds the whole graph: set --model.graph.gather false or --model.graph.source knn"
            )


class LaplacianCache:
    """Builds L from a `GraphSpec` and caches it when the point set is fixed."""

    def __init__(self, spec: GraphSpec) -> None:
        self.spec = spec
        self._key: tuple | None = None
        self._value: Tensor | None = None

    def __call__(self, features: Tensor, edge_index: Tensor | None) -> Tensor:
        spec = self.spec
        key = (features.shape, features.device, None if edge_index is None else edge_index.data_ptr())
        if spec.source == "knn":  # a kNN graph depends on the values, not only the shape
            key = key + (None if features.is_sparse else features.data_ptr(),)
        cache = not (spec.per_batch or spec.gather)  # a gathered batch is a new tensor every call
        if cache and self._key == key and self._value is not None:
            return self._value
        if spec.source == "edges":
            if edge_index is None:
                raise ConfigError(
                    "graph source 'edges' needs a batch with an edge_index (a graph DataModule); "
                    "use --model.graph.source knn to build a kNN graph from the features instead"
                )
            lap = laplacian_from_edges(edge_index, features.shape[0], kind=spec.laplacian, dtype=features.dtype)
        elif features.is_sparse:
            return self(features.to_dense(), edge_index)
        elif spec.knn_k > features.shape[0]:
            raise DataError(
                f"the batch has {features.shape[0]} points but the kNN graph needs graph.knn_k={spec.knn_k} "
                "neighbours (self included): lower --model.graph.knn_k, or use batches of at least knn_k points "
                "(the last batch of an epoch may be smaller: raise batch_size or make it divide the data size)"
            )
        elif spec.knn_kind == "gaussian":
            w = knn_gaussian_graph(features, k=spec.knn_k, k_scale=spec.knn_k_scale,
                                   differentiable=spec.differentiable, scale_floor=1e-8)
            lap = laplacian_from_weights(w, "combinatorial")
        else:
            p = knn_rownorm_graph(features, k=spec.knn_k, eps=spec.knn_eps, differentiable=spec.differentiable)
            lap = laplacian_from_weights(p, "rw")
        if cache:
            self._key, self._value = key, lap
        return lap


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
