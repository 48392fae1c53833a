"""Graph baselines in plain torch, K independent members at once (K = 1 is one model): log-probabilities
[N, K, C]. Inputs are `SparseMatrix`: node features x and the GCN-normalised adjacency Â.

    Â = D̃^{-1/2} (A + I) D̃^{-1/2},  D̃ = diag((A + I)·1)                       (Kipf & Welling)

* `MLP`    dropout → x W₁ + b₁ → ReLU → dropout → W₂ (no graph)
* `GCN`    dropout → Â x W₁ + b₁ → ReLU → dropout → Â h W₂ + b₂
* `APPNP`  H = MLP(x);  Z ← (1 − α) Â Z + α H, n_iter times from Z = H       (Gasteiger et al.)
* `SGC`    logits = (Â^K x) W + b, Â^K x computed once                        (Wu et al.)

Dropout masks are independent per member (input dropout acts on the non-zeros of x).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from cdflow.graph import adjacency_from_edges, sparse_from_entries
from cdflow.models.layers import MemberLinear, dropout
from cdflow.sparse import SparseMatrix

__all__ = ["APPNP", "GCN", "MLP", "SGC", "gcn_adjacency"]


def gcn_adjacency(edge_index: Tensor, num_nodes: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Â = D̃^{-1/2}(A + I)D̃^{-1/2} of an (unweighted, symmetrised) edge list, as a sparse COO tensor.

    Existing self-loops are kept at weight 1 (no double counting)."""
    a = adjacency_from_edges(edge_index, num_nodes, dtype=dtype).coalesce()
    row, col = a.indices()
    diag = torch.arange(num_nodes, device=row.device)
    off = row != col
    row, col = torch.cat([row[off], diag]), torch.cat([col[off], diag])
    val = torch.cat([a.values()[off], torch.ones(num_nodes, dtype=dtype, device=row.device)])
    deg = torch.zeros(num_nodes, dtype=dtype, device=row.device).index_add(0, row, val)
    dis = deg.pow(-0.5)
    return sparse_from_entries(row, col, dis[row] * val * dis[col], num_nodes)


def _propagate(adj: SparseMatrix, h: Tensor) -> Tensor:
    """Â h for h [N, K, H] (one sparse product over all members)."""
    n, k, d = h.shape
    return adj.mm(h.reshape(n, k * d)).view(n, k, d)


class _Members(nn.Module):
    """Shared `reset_parameters(gens)` over the MemberLinear layers of a model."""

    sparse_input = True  # takes x as a cdflow.sparse.SparseMatrix

    @property
    def members(self) -> int:
        return self.k

    def reset_parameters(self, gens: Sequence[torch.Generator]) -> None:
        for layer in self.modules():
            if isinstance(layer, MemberLinear):
                layer.reset_parameters(gens)


class MLP(_Members):
    """Two-layer perceptron on the node features: logits = W₂ dropout(ReLU(W₁ dropout(x) + b₁)) + b₂."""

    def __init__(self, in_features: int, num_classes: int, hidden: int = 64, dropout: float = 0.5, k: int = 1) -> None:
        super().__init__()
        self.k, self.dropout = k, dropout
        self.l1 = MemberLinear(k, in_features, hidden)
        self.l2 = MemberLinear(k, hidden, num_classes)

    def logits(self, x: SparseMatrix) -> Tensor:
        h = torch.relu(self.l1.forward_shared(x, self.dropout, self.training))
        return self.l2(dropout(h, self.dropout, self.training))

    def forward(self, x: SparseMatrix, adj: SparseMatrix | None = None) -> Tensor:
        return torch.log_softmax(self.logits(x), dim=-1)


class GCN(_Members):
    """Two-layer GCN: log_softmax(Â dropout(ReLU(Â dropout(x) W₁ + b₁)) W₂ + b₂)."""

    def __init__(self, in_features: int, num_classes: int, hidden: int = 64, dropout: float = 0.8, k: int = 1) -> None:
        super().__init__()
        self.k, self.dropout = k, dropout
        self.l1 = MemberLinear(k, in_features, hidden, bias=False)
        self.b1 = nn.Parameter(torch.zeros(k, hidden))
        self.l2 = MemberLinear(k, hidden, num_classes, bias=False)
        self.b2 = nn.Parameter(torch.zeros(k, num_classes))

    def reset_parameters(self, gens: Sequence[torch.Generator]) -> None:
        super().reset_parameters(gens)
        with torch.no_grad():
            self.b1.zero_()
            self.b2.zero_()

    def forward(self, x: SparseMatrix, adj: SparseMatrix) -> Tensor:
        h = torch.relu(_propagate(adj, self.l1.forward_shared(x, self.dropout, self.training)) + self.b1)
        h = _propagate(adj, self.l2(dropout(h, self.dropout, self.training))) + self.b2
        return torch.log_softmax(h, dim=-1)


class APPNP(_Members):
    """MLP predictions H propagated by personalised PageRank: Z ← (1 − α) Â Z + α H, `n_iter` times."""

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        hidden: int = 64,
        dropout: float = 0.5,
        alpha: float = 0.1,
        n_iter: int = 10,
        k: int = 1,
    ) -> None:
        super().__init__()
        self.k, self.alpha, self.n_iter = k, alpha, n_iter
        self.mlp = MLP(in_features, num_classes, hidden, dropout, k)

    def forward(self, x: SparseMatrix, adj: SparseMatrix) -> Tensor:
        h = self.mlp.logits(x)
        z = h
        for _ in range(self.n_iter):
            z = (1.0 - self.alpha) * _propagate(adj, z) + self.alpha * h
        return torch.log_softmax(z, dim=-1)


class SGC(_Members):
    """Simplified graph convolution: logits = (Â^K x) W + b, with S = Â^K x computed once and cached as
    sparse rows (S keeps the sparsity of the K-hop neighbourhoods: 20% non-zero on Cora, 9% on Citeseer)."""

    def __init__(self, in_features: int, num_classes: int, hops: int = 2, k: int = 1) -> None:
        super().__init__()
        self.k, self.hops = k, hops
        self.lin = MemberLinear(k, in_features, num_classes)
        self._cache: tuple[SparseMatrix, SparseMatrix, SparseMatrix] | None = None

    def smoothed(self, x: SparseMatrix, adj: SparseMatrix) -> SparseMatrix:
        """S = Â^K x, cached for the same (x, Â) objects (held by the cache, so a new object never takes
        the address, and thus the cache entry, of a freed one)."""
        if self._cache is None or self._cache[0] is not x or self._cache[1] is not adj:
            with torch.no_grad():
                s = x.to_dense().to(self.lin.weight.dtype)
                for _ in range(self.hops):
                    s = adj.mm(s)
            self._cache = (x, adj, SparseMatrix.from_tensor(s))
        return self._cache[2]

    def forward(self, x: SparseMatrix, adj: SparseMatrix) -> Tensor:
        return torch.log_softmax(self.lin.forward_shared(self.smoothed(x, adj)), dim=-1)
