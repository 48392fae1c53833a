"""Out-of-sample diffusion for drawing decision regions of the (transductive) diffusion model.

A query point g joins the graph as a receiving node: its k nearest nodes among {g} ∪ data (g itself
first, weight 1), Gaussian weights w_gj = exp(−‖g − x_j‖²/ε²) normalised to sum one, p_gg the self weight.
It diffuses with the data, z_g ← z_g − τ (z_g − p_gg z_g − Σ_j p_gj z_j), while the data rows are unchanged
(no data node sees g), so the data features and accuracies do not depend on the queries.
"""

from __future__ import annotations

import torch
from torch import Tensor

from cdflow.heat import explicit_diffusion


def query_weights(query: Tensor, data: Tensor, k: int, eps: float, chunk: int = 4096) -> tuple[Tensor, Tensor]:
    """(Q [G, N] sparse, p_self [G]): row-normalised weights of each query to its k−1 nearest data points."""
    rows, cols, vals, selfw = [], [], [], []
    for start in range(0, query.shape[0], chunk):
        q = query[start : start + chunk]
        d2, idx = torch.topk(torch.cdist(q, data) ** 2, k - 1, dim=1, largest=False)
        w = torch.exp(-d2 / eps**2)
        total = 1.0 + w.sum(dim=1, keepdim=True)
        rows.append(torch.arange(start, start + q.shape[0])[:, None].expand_as(idx).reshape(-1))
        cols.append(idx.reshape(-1))
        vals.append((w / total).reshape(-1))
        selfw.append(1.0 / total[:, 0])
    index = torch.stack([torch.cat(rows), torch.cat(cols)])
    shape = (query.shape[0], data.shape[0])
    q_mat = torch.sparse_coo_tensor(index, torch.cat(vals), shape, check_invariants=False).coalesce()
    return q_mat, torch.cat(selfw)


def diffuse_with_queries(
    z_data: Tensor, z_query: Tensor, l_mat: Tensor, q_mat: Tensor, p_self: Tensor, tau: float, n_steps: int
) -> tuple[Tensor, Tensor]:
    """n explicit diffusion steps of data and queries together; returns (data, query) features."""
    for _ in range(n_steps):
        neighbour_mean = p_self[:, None] * z_query + torch.sparse.mm(q_mat, z_data)
        z_query = z_query - tau * (z_query - neighbour_mean)
        z_data, _ = explicit_diffusion(z_data, l_mat, tau, 1)
    return z_data, z_query
