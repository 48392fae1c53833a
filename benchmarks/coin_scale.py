"""Cost of a COIN epoch as the graph grows: N = 10⁵ against N = 10⁶ nodes (quick: 10⁴ against 10⁵).

A synthetic graph of N nodes and 10·N random undirected edges, sparse 500-dimensional features (10 non-zeros a
row), 7 classes; COIN with hidden 64 and 10 explicit diffusion steps (τ = 0.1) on its GCN-form Laplacian,
built once per graph (`cdflow.graph.Laplacian`, not timed). One epoch = forward + backward + Adam step on the
loss of every node. The work grows linearly (nnz of features and Laplacian ∝ N), so the epoch at 10× the
nodes should cost about 10×: goal ≤ 12× beyond the spread of the per-round ratios. Epochs of the two sizes are
interleaved after a warm-up.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from benchmarks.common import Goal, Row, goal_row, interleaved_times, median_spread, paired_ratio

FEATURES, NNZ_PER_ROW, CLASSES, EDGES_PER_NODE = 500, 10, 7, 10
GOAL = Goal("<=", 12.0, "x")


def _problem(n: int, seed: int = 0):
    from cdflow.graph import Laplacian
    from cdflow.models import COIN
    from cdflow.sparse import SparseMatrix

    gen = torch.Generator().manual_seed(seed)
    rows = torch.arange(n).repeat_interleave(NNZ_PER_ROW)
    cols = torch.randint(0, FEATURES, (n * NNZ_PER_ROW,), generator=gen)
    key = torch.unique(rows * FEATURES + cols)  # distinct entries
    x = SparseMatrix.from_coo(key // FEATURES, key % FEATURES, torch.rand(key.numel(), generator=gen), (n, FEATURES))
    edges = torch.randint(0, n, (2, EDGES_PER_NODE * n), generator=gen)
    edges = edges[:, edges[0] != edges[1]]
    lap = Laplacian.from_edges(edges, n, kind="gcn")
    y = torch.randint(0, CLASSES, (n,), generator=gen)
    torch.manual_seed(seed)
    model = COIN(FEATURES, CLASSES, hidden=64, tau=0.1, n_steps=10)
    opt = torch.optim.Adam(model.parameters(), lr=0.01, fused=True)

    def epoch() -> None:
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.nll_loss(model(x, lap), y).backward()
        opt.step()

    return epoch, {"n": n, "features_nnz": x.nnz, "laplacian_nnz": lap.nnz}


def _measure(small: int, large: int, repeats: int) -> dict:
    """In a fresh process set up as `cdflow fit` sets itself up (`keep_freed_memory`)."""
    from cdflow.training.alloc import keep_freed_memory

    keep_freed_memory()
    ep_small, info_small = _problem(small)
    ep_large, info_large = _problem(large)
    times = interleaved_times({"small": ep_small, "large": ep_large}, repeats=repeats, warmup=2,
                              device=torch.device("cpu"))
    return {"times": times, "small": info_small, "large": info_large}


def run(quick: bool, device: torch.device) -> list[Row]:
    if device.type != "cpu":
        return []
    small, large = (10_000, 100_000) if quick else (100_000, 1_000_000)
    repeats = 3 if quick else 7  # ≥ 4 rounds: the spread is half the inter-quartile range of the ratios
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.coin_scale", str(small), str(large), str(repeats)],
                          capture_output=True, text=True, env=env, cwd=Path(__file__).resolve().parents[1])
    if proc.returncode != 0:
        raise RuntimeError(f"coin_scale failed ({proc.returncode}): {proc.stderr[-2000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    times, info_small, info_large = res["times"], res["small"], res["large"]
    t_small, s_small = median_spread(times["small"])
    t_large, s_large = median_spread(times["large"])
    ratio, spread, ratios = paired_ratio(times["large"], times["small"])
    extra = {"small": info_small, "large": info_large, "times_small_s": times["small"],
             "times_large_s": times["large"], "threads": torch.get_num_threads()}
    return [
        Row("coin_scale", f"COIN epoch, N={small:.0e}", "time", t_small, "s", spread=s_small, extra=extra),
        Row("coin_scale", f"COIN epoch, N={large:.0e}", "time", t_large, "s", spread=s_large, extra=extra),
        goal_row("coin_scale", f"COIN epoch N={large:.0e} / N={small:.0e} (work ×{large // small})", "time ratio",
                 ratio, "x", spread, GOAL, extra={**extra, "per_round": ratios}),
    ]


if __name__ == "__main__":
    print(json.dumps(_measure(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))))
