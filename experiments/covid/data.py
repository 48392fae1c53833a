"""England COVID-19 forecasting with 90% of the targets missing: snapshots, masks and graph operators.

From `load_covid` (61 days × 129 regions, one directed weighted mobility graph per day):

* masking m: keep each (snapshot, region) target with probability 0.1, drawn with
  ``np.random.RandomState(m)`` and redrawn until every region keeps ≥ 2 distinct observed values;
* per-region standardisation z = (cases − μ_r)/(σ_r + 1e-10) over the whole series, as PyTorch Geometric
  Temporal's ``EnglandCovidDatasetLoader`` (`standardise="observed"`: μ_r, σ_r of region r's observed
  targets only, which the ≥ 2 distinct values keep well defined);
* snapshot t = 0 … T−1 (T = 61 − 8 = 53), as PyTorch Geometric Temporal's loader: features
  X_t = z[t : t+8]ᵀ (8 lags, all known), target Y_t = z[t+8], graph of day t;
* temporal split of the snapshots: the first round(0.2 T) train, the next round(0.2 T) validation, the
  rest (60%) test; training and validation use the observed targets only, the test uses every target
  (the hidden ones restored).

All snapshots are processed at once: node (t, r) is row t·129 + r, and the daily operators form one
block-diagonal sparse matrix (COIN's Laplacians as one `cdflow.graph.Laplacian`, the GCN adjacencies as
one `cdflow.sparse.SparseMatrix`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from cdflow.data.covid import CovidData, load_covid
from cdflow.graph import Laplacian
from cdflow.sparse import SparseMatrix

LAGS = 8
KEEP = 0.1


@dataclass
class CovidTask:
    """One masking: features x [T·R, 8], targets y [T·R], index sets, and the block-diagonal operators."""

    x: Tensor
    y: Tensor
    train: Tensor
    val: Tensor
    test: Tensor
    lap: Laplacian
    adj: SparseMatrix
    n_regions: int
    n_snapshots: int
    mask_attempts: int
    observed: int


def sample_mask(n_snapshots: int, n_regions: int, values: np.ndarray, seed: int, keep: float = KEEP,
                max_attempts: int = 10_000) -> tuple[np.ndarray, int]:
    """Boolean [T, R] mask of observed targets, redrawn until each region keeps ≥ 2 distinct values."""
    rng = np.random.RandomState(seed)
    for attempt in range(1, max_attempts + 1):
        mask = rng.rand(n_snapshots, n_regions) < keep
        if all(np.unique(values[mask[:, r], r]).size >= 2 for r in range(n_regions)):
            return mask, attempt
    raise RuntimeError(f"no mask with ≥ 2 distinct observed values per region in {max_attempts} draws")


def block_diag(blocks: list[tuple[np.ndarray, np.ndarray, np.ndarray]], n: int) -> SparseMatrix:
    """Sparse block-diagonal matrix of per-day (row, col, value) triples, each block n × n."""
    rows, cols, vals = [], [], []
    for t, (r, c, v) in enumerate(blocks):
        rows.append(r + t * n)
        cols.append(c + t * n)
        vals.append(v)
    size = n * len(blocks)
    idx = torch.from_numpy(np.stack([np.concatenate(rows), np.concatenate(cols)]))
    vals_t = torch.from_numpy(np.concatenate(vals)).float()
    mat = torch.sparse_coo_tensor(idx, vals_t, (size, size), check_invariants=False).coalesce()
    return SparseMatrix.from_tensor(mat)


def day_operators(data: CovidData, day: int) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
    """COIN's Laplacian and the GCN adjacency of one day, as (row, col, value) triples.

    COIN: A₀ = A with a zero diagonal, Â = D^{-1/2} A₀ D^{-1/2} (D = row sums of A₀; isolated rows 0),
    L = diag(Â·1) − Â. GCN: Â_gcn = D^{-1/2} A D^{-1/2} of the graph as given (self-loops included; a
    region without one gets weight 1), D its row sums.
    """
    n = data.num_nodes
    ei = data.edge_index[day].numpy()
    w = data.edge_weight[day].numpy().astype(np.float64)
    a = np.zeros((n, n))
    np.add.at(a, (ei[0], ei[1]), w)
    a0 = a.copy()
    np.fill_diagonal(a0, 0.0)
    deg = a0.sum(1)
    dis = np.divide(1.0, np.sqrt(deg), out=np.zeros(n), where=deg > 0)
    ahat = dis[:, None] * a0 * dis[None, :]
    lap = np.diag(ahat.sum(1)) - ahat
    a_loop = a.copy()
    diag = np.diag(a_loop).copy()
    np.fill_diagonal(a_loop, np.where(diag > 0, diag, 1.0))
    d2 = a_loop.sum(1) ** -0.5
    agcn = d2[:, None] * a_loop * d2[None, :]
    return tuple(np.nonzero(lap)) + (lap[np.nonzero(lap)],), tuple(np.nonzero(agcn)) + (agcn[np.nonzero(agcn)],)


def build_task(data: CovidData, masking: int, lags: int = LAGS, standardise: str = "series") -> CovidTask:
    """The task of masking seed `masking` (see the module docstring)."""
    cases = data.cases.numpy().astype(np.float64)
    n_days, n_regions = cases.shape
    n_snap = n_days - lags
    targets = cases[lags:]
    mask, attempts = sample_mask(n_snap, n_regions, targets, masking)
    if standardise == "series":
        mu, sd = cases.mean(0), cases.std(0) + 1e-10
    else:
        mu = np.array([targets[mask[:, r], r].mean() for r in range(n_regions)])
        sd = np.array([targets[mask[:, r], r].std() for r in range(n_regions)])
    z = (cases - mu) / sd
    x = np.stack([z[t : t + lags].T for t in range(n_snap)])  # [T, R, lags]
    y = z[lags:]  # [T, R]
    n_train = round(0.2 * n_snap)
    n_val = round(0.2 * n_snap)
    period = np.repeat(np.arange(n_snap), n_regions).reshape(n_snap, n_regions)
    train = mask & (period < n_train)
    val = mask & (period >= n_train) & (period < n_train + n_val)
    test = period >= n_train + n_val
    ops = [day_operators(data, t) for t in range(n_snap)]
    return CovidTask(
        x=torch.from_numpy(x.reshape(-1, lags)).float(),
        y=torch.from_numpy(y.reshape(-1)).float(),
        train=torch.from_numpy(np.flatnonzero(train)),
        val=torch.from_numpy(np.flatnonzero(val)),
        test=torch.from_numpy(np.flatnonzero(test)),
        lap=Laplacian.from_matrix(block_diag([o[0] for o in ops], n_regions), kind="daily-mobility"),
        adj=block_diag([o[1] for o in ops], n_regions),
        n_regions=n_regions,
        n_snapshots=n_snap,
        mask_attempts=attempts,
        observed=int(mask.sum()),
    )


def load(root: str | os.PathLike[str] | None = None) -> CovidData:
    return load_covid(root)
