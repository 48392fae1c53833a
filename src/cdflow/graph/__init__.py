"""Graphs for the diffusion term −γ L x: building them (`build`) and the operator integrators take (`Laplacian`).

    from cdflow.graph import Laplacian
    L = Laplacian.from_edges(edge_index, num_nodes, kind="gcn")     # once per graph
    L = Laplacian.from_knn(x, k=8, k_scale=4)                        # the COIN / Diff-ResNet kNN recipe
"""

from cdflow.graph.build import (
    LAPLACIAN_KINDS,
    adjacency_from_edges,
    degrees,
    is_symmetric,
    knn_gaussian_graph,
    knn_rownorm_graph,
    laplacian_from_edges,
    laplacian_from_weights,
    random_walk_operator,
    sparse_from_entries,
)
from cdflow.graph.graph import Graph
from cdflow.graph.laplacian import Laplacian, SpectralBound, spectral_bound

__all__ = [
    "LAPLACIAN_KINDS",
    "Graph",
    "Laplacian",
    "SpectralBound",
    "adjacency_from_edges",
    "degrees",
    "is_symmetric",
    "knn_gaussian_graph",
    "knn_rownorm_graph",
    "laplacian_from_edges",
    "laplacian_from_weights",
    "random_walk_operator",
    "sparse_from_entries",
    "spectral_bound",
]
