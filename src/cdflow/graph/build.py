"""Building graphs and graph Laplacians for the diffusion term −γ L x of dx = [v_θ(x, t) − γ L x] dt.

The builders return coalesced torch sparse COO tensors, made from index lists with differentiable scatter
operations (so weights may carry autograd); kNN graphs are found in row chunks keeping O(N·k) memory.
Integrators never see these tensors: `cdflow.graph.Laplacian` wraps a built matrix once, validated, in the
fast product format (`cdflow.sparse.SparseMatrix`).

Laplacian kinds, for a non-negative weight matrix A with degrees d_i = Σ_j A_ij:

* ``combinatorial``  L = D − A                                 (symmetric PSD, L·1 = 0)
* ``sym``            L = I − D^{-1/2} A D^{-1/2}               (symmetric PSD, spectrum in [0, 2])
* ``rw``             L = I − P,  P = D^{-1} A                  (not symmetric; rows of P sum to one)
* ``gcn``            Â = D̃^{-1/2} (A + I) D̃^{-1/2},  L = diag(Â·1) − Â   (COIN / Diff-ResNet graph form)

Isolated nodes (d_i = 0) never produce NaN: D^{-1/2} and D^{-1} are taken as 0 there and the identity is
restricted to non-isolated nodes, so an isolated node has an all-zero Laplacian row (it does not diffuse:
exp(−tL) leaves it unchanged), and P has an all-zero row there.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from cdflow.errors import ConfigError, DataError

LaplacianKind = Literal["sym", "rw", "gcn", "combinatorial"]
LAPLACIAN_KINDS: tuple[str, ...] = ("sym", "rw", "gcn", "combinatorial")

__all__ = [
    "LAPLACIAN_KINDS",
    "adjacency_from_edges",
    "degrees",
    "is_symmetric",
    "knn_gaussian_graph",
    "knn_rownorm_graph",
    "laplacian_from_edges",
    "laplacian_from_weights",
    "random_walk_operator",
    "sparse_from_entries",
]

# Default kNN chunk: rows × N distance entries per chunk (2**23 float32 entries = 32 MiB).
_CHUNK_ENTRIES = 2**23


# --------------------------------------------------------------------------------------------------------
# sparse helpers
# --------------------------------------------------------------------------------------------------------
def sparse_from_entries(
    row: Tensor, col: Tensor, val: Tensor, n: int, reduce: Literal["sum", "amax"] = "sum"
) -> Tensor:
    """Coalesced n×n sparse COO matrix with entries (row, col, val); duplicates combined by `reduce`.

    Implemented with `unique` + `index_add`/`scatter_reduce`, so gradients flow to `val`.
    """
    key = row.to(torch.int64) * n + col.to(torch.int64)
    uniq, inverse = torch.unique(key, sorted=True, return_inverse=True)
    if reduce == "sum":
        out = val.new_zeros(uniq.numel()).index_add(0, inverse, val)
    else:
        out = val.new_full((uniq.numel(),), -math.inf).scatter_reduce(0, inverse, val, reduce="amax")
    idx = torch.stack([torch.div(uniq, n, rounding_mode="floor"), uniq % n])
    return torch.sparse_coo_tensor(idx, out, (n, n), is_coalesced=True, check_invariants=False)


def _coo(m: Tensor) -> tuple[Tensor, Tensor, Tensor, int]:
    """(row, col, values, n) of a square matrix given as sparse COO/CSR or dense."""
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise DataError(f"expected a square matrix, got shape {tuple(m.shape)}; pass an N×N weight matrix")
    if m.layout == torch.strided:
        m = m.to_sparse()
    elif m.layout != torch.sparse_coo:
        m = m.to_sparse_coo()
    m = m.coalesce()
    idx = m.indices()
    return idx[0], idx[1], m.values(), m.shape[0]


def degrees(w: Tensor) -> Tensor:
    """Row sums d_i = Σ_j W_ij of a (sparse or dense) square matrix."""
    row, _, val, n = _coo(w)
    return val.new_zeros(n).index_add(0, row, val)


def is_symmetric(m: Tensor, atol: float = 1e-10) -> bool:
    """Whether max |M − Mᵀ| ≤ atol·max(1, max |M|)."""
    row, col, val, n = _coo(m)
    if val.numel() == 0:
        return True
    diff = sparse_from_entries(torch.cat([row, col]), torch.cat([col, row]), torch.cat([val, -val]), n)
    scale = max(1.0, float(val.detach().abs().max()))
    return float(diff.values().detach().abs().max()) <= atol * scale


def _safe_pow(d: Tensor, p: float) -> Tensor:
    """d**p where d > 0, else 0 (no inf/NaN in values or gradients)."""
    pos = d > 0
    return torch.where(pos, torch.where(pos, d, torch.ones_like(d)).pow(p), torch.zeros_like(d))


# --------------------------------------------------------------------------------------------------------
# Laplacians
# --------------------------------------------------------------------------------------------------------
def adjacency_from_edges(
    edge_index: Tensor,
    num_nodes: int,
    edge_weight: Tensor | None = None,
    symmetrize: bool = True,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Sparse adjacency A from an edge list, A_ij = w_e for e = (i, j).

    Duplicate edges are dropped (their weights merged by maximum, so a repeated unweighted edge stays 1);
    with `symmetrize=True` A ← max(A, Aᵀ). Self-loops in the list are kept. Weights must be finite, ≥ 0.
    """
    if not isinstance(num_nodes, int) or num_nodes < 1:
        raise ConfigError(f"num_nodes must be a positive int, got {num_nodes!r}")
    if edge_index.ndim != 2 or edge_index.shape[0] != 2:
        raise DataError(
            f"edge_index must have shape [2, E], got {tuple(edge_index.shape)}; transpose an [E, 2] list"
        )
    if edge_index.dtype.is_floating_point or edge_index.dtype == torch.bool:
        raise DataError(f"edge_index must be an integer tensor, got {edge_index.dtype}; use .long()")
    ei = edge_index.to(torch.int64)
    if ei.numel() and (int(ei.min()) < 0 or int(ei.max()) >= num_nodes):
        raise DataError(
            f"edge_index has node ids in [{int(ei.min())}, {int(ei.max())}] but num_nodes={num_nodes}; "
            "ids must lie in [0, num_nodes); pass the right num_nodes or relabel the nodes"
        )
    if dtype is None:
        dtype = edge_weight.dtype if edge_weight is not None else torch.get_default_dtype()
    if edge_weight is None:
        edge_weight = torch.ones(ei.shape[1], dtype=dtype, device=ei.device)
    else:
        if edge_weight.shape != (ei.shape[1],):
            raise DataError(
                f"edge_weight must have shape [E]=[{ei.shape[1]}], got {tuple(edge_weight.shape)}"
            )
        _check_weights(edge_weight.detach(), "edge_weight")
        edge_weight = edge_weight.to(dtype)
    row, col = ei[0], ei[1]
    if symmetrize:
        row, col = torch.cat([row, col]), torch.cat([col, row])
        edge_weight = torch.cat([edge_weight, edge_weight])
    return sparse_from_entries(row, col, edge_weight, num_nodes, reduce="amax")


def _check_weights(val: Tensor, name: str) -> None:
    if not torch.isfinite(val).all():
        raise DataError(f"{name} has {int((~torch.isfinite(val)).sum())} non-finite entries; clean them")
    if (val < 0).any():
        raise DataError(
            f"{name} has {int((val < 0).sum())} negative weights; a Laplacian needs weights ≥ 0 to be PSD"
        )


def laplacian_from_weights(w: Tensor, kind: LaplacianKind = "combinatorial") -> Tensor:
    """Laplacian of a non-negative weight matrix W (sparse or dense), as a coalesced sparse COO tensor.

    combinatorial: L = D − W (Diff-ResNet: on the kNN-Gaussian W, L = diag(W·1) − W; for a row-normalised
    W, D = I and this is the toys' I − W). sym: L = I − D^{-1/2} W D^{-1/2}. rw: L = I − D^{-1} W.
    gcn: Â = D̃^{-1/2}(W + I)D̃^{-1/2}, L = diag(Â·1) − Â. Isolated nodes get zero rows (see module doc).
    Gradients flow to W's values.
    """
    if kind not in LAPLACIAN_KINDS:
        raise ConfigError(f"unknown Laplacian kind {kind!r}; valid kinds: {', '.join(LAPLACIAN_KINDS)}")
    row, col, val, n = _coo(w)
    _check_weights(val.detach(), "weights")
    diag = torch.arange(n, device=val.device)
    if kind == "gcn":
        row, col = torch.cat([row, diag]), torch.cat([col, diag])
        val = torch.cat([val, val.new_ones(n)])
    deg = val.new_zeros(n).index_add(0, row, val)
    if kind == "combinatorial":
        off, dvals = val, deg
    elif kind == "sym":
        dis = _safe_pow(deg, -0.5)
        off, dvals = dis[row] * val * dis[col], (deg > 0).to(val.dtype)
    elif kind == "rw":
        off, dvals = _safe_pow(deg, -1.0)[row] * val, (deg > 0).to(val.dtype)
    else:  # gcn
        dis = _safe_pow(deg, -0.5)
        off = dis[row] * val * dis[col]
        dvals = val.new_zeros(n).index_add(0, row, off)
    return sparse_from_entries(torch.cat([row, diag]), torch.cat([col, diag]), torch.cat([-off, dvals]), n)


def laplacian_from_edges(
    edge_index: Tensor,
    num_nodes: int,
    kind: LaplacianKind = "sym",
    edge_weight: Tensor | None = None,
    symmetrize: bool = True,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Graph Laplacian of an edge list: `laplacian_from_weights(adjacency_from_edges(...), kind)`.

    kinds: sym L = I − D^{-1/2}AD^{-1/2}; rw L = I − D^{-1}A; gcn L = diag(Â·1) − Â with
    Â = D̃^{-1/2}(A+I)D̃^{-1/2} (COIN); combinatorial L = D − A. Duplicate edges are dropped, the list is
    symmetrised when `symmetrize`; isolated nodes give zero rows (no NaN).
    """
    if kind not in LAPLACIAN_KINDS:
        raise ConfigError(f"unknown Laplacian kind {kind!r}; valid kinds: {', '.join(LAPLACIAN_KINDS)}")
    a = adjacency_from_edges(edge_index, num_nodes, edge_weight, symmetrize, dtype)
    return laplacian_from_weights(a, kind)


def random_walk_operator(w: Tensor) -> Tensor:
    """Random-walk operator P = D^{-1} W (rows sum to one; isolated nodes give zero rows)."""
    row, col, val, n = _coo(w)
    _check_weights(val.detach(), "weights")
    deg = val.new_zeros(n).index_add(0, row, val)
    return sparse_from_entries(row, col, _safe_pow(deg, -1.0)[row] * val, n)


# --------------------------------------------------------------------------------------------------------
# kNN graphs
# --------------------------------------------------------------------------------------------------------
def _check_points(x: Tensor, k: int, name_k: str = "k") -> None:
    if not isinstance(x, Tensor) or x.ndim != 2:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise DataError(f"x must be a [N, F] tensor, got {shape}; flatten features with x.flatten(1)")
    if not x.dtype.is_floating_point:
        raise DataError(f"x must be floating point, got {x.dtype}; use x.float()")
    bad = ~torch.isfinite(x.detach()).all(dim=1)
    if bad.any():
        rows = bad.nonzero().flatten().tolist()
        shown = ", ".join(map(str, rows[:10])) + (", ..." if len(rows) > 10 else "")
        raise DataError(f"x has NaN/Inf in {len(rows)} rows ({shown}); drop or impute those rows")
    if k > x.shape[0]:
        raise DataError(f"{name_k}={k} exceeds the number of points N={x.shape[0]}; use {name_k} ≤ N")


def _check_int(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an int ≥ {minimum}, got {value!r}")
    return value


def _knn_indices(x: Tensor, kk: int, chunk_size: int | None) -> Tensor:
    """Indices [N, kk] of the kk nearest points of each row (self first), O(chunk·N + N·kk) memory.

    Per chunk of rows, d²_ij = ‖x_i‖² + ‖x_j‖² − 2 x_i·x_j is ranked by torch.topk; the row constant ‖x_i‖²
    (and the clamp at 0) cannot change a row's ranking, so only ‖x_j‖² − 2 x_i·x_j is formed. x is centred
    first (distances are unchanged; cancellation is not), half precision is ranked in float32. The diagonal
    is set to −inf so the point itself is always selected first. Exact distances are recomputed after.
    """
    n = x.shape[0]
    if chunk_size is None:
        chunk_size = max(1, min(n, _CHUNK_ENTRIES // max(n, 1)))
    chunk_size = _check_int(chunk_size, "chunk_size", 1)
    xd = x.detach()
    if xd.dtype not in (torch.float32, torch.float64):
        xd = xd.float()
    xd = xd - xd.mean(dim=0, keepdim=True)
    sq = (xd * xd).sum(dim=1)[None, :]
    out = torch.empty(n, kk, dtype=torch.int64, device=x.device)
    for start in range(0, n, chunk_size):
        stop = min(n, start + chunk_size)
        score = torch.addmm(sq, xd[start:stop], xd.T, alpha=-2.0)
        r = torch.arange(stop - start, device=x.device)
        score[r, r + start] = -math.inf
        out[start:stop] = torch.topk(score, kk, dim=1, largest=False, sorted=False).indices
    return out


def _pair_sqdist(x: Tensor, idx: Tensor, chunk_size: int) -> Tensor:
    """Exact ‖x_i − x_{idx[i, m]}‖² [N, kk] from differences (no cancellation; differentiable)."""
    parts = []
    for start in range(0, x.shape[0], chunk_size):
        stop = min(x.shape[0], start + chunk_size)
        diff = x[start:stop, None, :] - x[idx[start:stop]]
        parts.append((diff * diff).sum(dim=-1))
    return torch.cat(parts) if len(parts) > 1 else parts[0]


def _sorted_neighbours(
    x: Tensor, kk: int, chunk_size: int | None, differentiable: bool
) -> tuple[Tensor, Tensor]:
    """(squared distances, indices) of the kk nearest points of each row, sorted ascending, self first."""
    idx = _knn_indices(x, kk, chunk_size)
    gather_chunk = max(1, _CHUNK_ENTRIES // max(1, kk * x.shape[1]))
    with torch.set_grad_enabled(differentiable and torch.is_grad_enabled()):
        d2 = _pair_sqdist(x if differentiable else x.detach(), idx, gather_chunk)
        d2, order = torch.sort(d2, dim=1, stable=True)
    return d2, torch.gather(idx, 1, order)


def knn_gaussian_graph(
    x: Tensor,
    k: int = 8,
    k_scale: int = 4,
    *,
    chunk_size: int | None = None,
    differentiable: bool = False,
    strict_kth: bool = False,
    scale_floor: float | None = None,
) -> Tensor:
    """Self-tuning kNN Gaussian graph of COIN / Diff-ResNet, as a symmetric sparse COO matrix W.

    For each point i, with distances d_ij = ‖x_i − x_j‖ and the point itself counted as its own nearest
    neighbour (d_ii = 0):

    1. N_i = the k smallest d_ij (self + k−1 neighbours); with `strict_kth=True` only d_ij < (k-th smallest),
       i.e. k−1 entries (self + k−2 neighbours), exactly as the reference code's
       ``distance < kthvalue(distance, k)``;
    2. local scale s_i = the k_scale-th smallest d_ij (self counted, so the (k_scale−1)-th neighbour);
    3. w_ij = exp(−(d_ij / s_i)²) for j ∈ N_i — the self-loop w_ii = exp(0) = 1 is kept, as in the reference;
       it cancels in the combinatorial Laplacian D − W but enters the normalisation below;
    4. W ← D^{-1/2} W D^{-1/2} with D = diag(W·1) (≥ 1 thanks to the self-loop);
    5. W ← (W + Wᵀ)/2.

    Diff-ResNet then diffuses with L = diag(W·1) − W: ``laplacian_from_weights(W, "combinatorial")``.

    Neighbours are found without grad in row chunks (memory O(chunk·N + N·k), never N×N×F); the weights are
    recomputed from exact differences, with autograd w.r.t. x when `differentiable=True`, else under no_grad.
    Duplicate points can make s_i = 0: this raises DataError naming the rows, unless `scale_floor` > 0 is
    given, in which case s_i ← max(s_i, scale_floor).
    """
    k = _check_int(k, "k", 2)
    k_scale = _check_int(k_scale, "k_scale", 2)
    _check_points(x, k)
    _check_points(x, k_scale, "k_scale")
    if scale_floor is not None and not scale_floor > 0:
        raise ConfigError(f"scale_floor must be > 0 or None, got {scale_floor!r}")
    n = x.shape[0]
    kk = max(k, k_scale)
    with torch.set_grad_enabled(differentiable and torch.is_grad_enabled()):
        d2, idx = _sorted_neighbours(x, kk, chunk_size, differentiable)
        s2 = d2[:, k_scale - 1]
        zero = s2.detach() <= 0
        if zero.any():
            if scale_floor is None:
                rows = zero.nonzero().flatten().tolist()
                shown = ", ".join(map(str, rows[:10])) + (", ..." if len(rows) > 10 else "")
                raise DataError(
                    f"local scale s_i = 0 for {len(rows)} points (rows {shown}): each has ≥ {k_scale - 1} "
                    f"exact duplicates, so the k_scale={k_scale}-th distance is 0; deduplicate x, raise "
                    "k_scale, or pass scale_floor=<small positive distance>"
                )
            s2 = s2.clamp(min=scale_floor**2)
        d2k = d2[:, :k]
        w = torch.exp(-d2k / s2[:, None])
        row = torch.arange(n, device=x.device)[:, None].expand(n, k)
        col = idx[:, :k]
        if strict_kth:
            keep = d2k.detach() < d2k.detach()[:, k - 1 : k]
            w, row, col = w[keep], row[keep], col[keep]
        else:
            w, row, col = w.reshape(-1), row.reshape(-1), col.reshape(-1)
        deg = w.new_zeros(n).index_add(0, row, w)
        dis = _safe_pow(deg, -0.5)
        w = dis[row] * w * dis[col]
        return sparse_from_entries(torch.cat([row, col]), torch.cat([col, row]), torch.cat([w, w]) * 0.5, n)


def knn_rownorm_graph(
    x: Tensor,
    k: int = 25,
    eps: float = 0.5,
    *,
    chunk_size: int | None = None,
    differentiable: bool = False,
) -> Tensor:
    """The Diff-ResNet toys' graph: a row-stochastic (non-symmetric) random-walk operator P.

    w_ij = exp(−‖x_i − x_j‖² / ε²); keep the k largest w_ij of each row (the k nearest points, self
    included, w_ii = 1); P_ij = w_ij / Σ_j w_ij, so P·1 = 1. The toys diffuse with L = I − P
    (= `laplacian_from_weights(P, "combinatorial")`, since P's degrees are 1).
    """
    k = _check_int(k, "k", 1)
    _check_points(x, k)
    if not (isinstance(eps, (int, float)) and eps > 0 and math.isfinite(eps)):
        raise ConfigError(f"eps must be a positive finite float, got {eps!r}")
    n = x.shape[0]
    with torch.set_grad_enabled(differentiable and torch.is_grad_enabled()):
        d2, idx = _sorted_neighbours(x, k, chunk_size, differentiable)
        w = torch.exp(-d2 / eps**2)
        w = w / w.sum(dim=1, keepdim=True)  # ≥ w_ii = 1 before normalising: never 0
        row = torch.arange(n, device=x.device)[:, None].expand(n, k).reshape(-1)
        return sparse_from_entries(row, idx.reshape(-1), w.reshape(-1), n)
