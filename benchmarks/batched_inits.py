"""Batched initialisations: K = 20 initialisations of the Cora COIN model trained together (stacked
weights, one sparse product for all members) vs one after another, for the same number of epochs.

Two sequential baselines: the same batched implementation with K = 1 (the gain from batching alone), and
the plain `cdflow.models.COIN` module (what a user would loop over). Full-batch Adam (lr 0.01, weight
decay 5e-4), 20 explicit diffusion steps with τ = 0.35 (the paper's Cora setting), fixed epochs.
"""

from __future__ import annotations

import os
import time

import torch
import torch.nn.functional as F

from benchmarks.common import Row
from cdflow.data import load_graph, random_split
from cdflow.graph import laplacian_from_edges
from cdflow.models import COIN
from cdflow.models.batched import BatchedCOIN, SparseRows, stacked_nll


def _train_batched(k: int, x: SparseRows, lap: SparseRows, y, idx, epochs: int) -> float:
    torch.manual_seed(0)
    model = BatchedCOIN(k, x.n_cols, int(y.max()) + 1)
    opt = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=5e-4)
    start = time.perf_counter()
    for _ in range(epochs):
        opt.zero_grad()
        stacked_nll(model(x, lap), y, idx).sum().backward()
        opt.step()
    return time.perf_counter() - start


def _train_plain(x, edge_index, y, idx, epochs: int) -> float:
    torch.manual_seed(0)
    model = COIN(x.shape[1], int(y.max()) + 1)
    opt = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=5e-4)
    start = time.perf_counter()
    for _ in range(epochs):
        opt.zero_grad()
        F.nll_loss(model(x, edge_index)[idx], y[idx]).backward()
        opt.step()
    return time.perf_counter() - start


def run(quick: bool, device: torch.device, k: int = 20) -> list[Row]:
    epochs = 3 if quick else 20
    g = load_graph("cora", os.environ.get("CDFLOW_DATA"))
    train, _, _ = random_split(g.y, seed=0)
    idx = torch.as_tensor(train).nonzero().flatten()
    x = SparseRows.from_tensor(g.x)
    lap = SparseRows.from_tensor(laplacian_from_edges(g.edge_index, g.x.shape[0], kind="gcn").to_dense())
    # interleave: together, then one after another (K = 1 batched), then the plain module
    together = _train_batched(k, x, lap, g.y, idx, epochs)
    sequential = sum(_train_batched(1, x, lap, g.y, idx, epochs) for _ in range(k if not quick else 2))
    x_sparse = g.x.to_sparse()
    plain = sum(_train_plain(x_sparse, g.edge_index, g.y, idx, epochs) for _ in range(k if not quick else 2))
    if quick:  # timed 2 of the K sequential runs; scale to K
        sequential, plain = sequential * k / 2, plain * k / 2
    speedup = sequential / together
    rows = [
        Row("batched_inits", f"Cora COIN K={k}, {epochs} epochs, together vs K=1 batched one after another",
            "speed-up", speedup, "x", goal="≥ 4", met=speedup >= 4,
            extra={"together_s": together, "sequential_s": sequential, "scaled_from_2_runs": quick}),
        Row("batched_inits", f"Cora COIN K={k}, {epochs} epochs, together vs plain cdflow.models.COIN loop",
            "speed-up", plain / together, "x",
            extra={"together_s": together, "plain_sequential_s": plain, "scaled_from_2_runs": quick}),
    ]
    return rows
