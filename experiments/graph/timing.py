"""Wall time of one Cora COIN run (faithful explicit setting; split seed 0, one initialisation, to early
stopping, by the library loop `cdflow.training.fit_members`), with 1 and 2 torch threads, and the load
average around it.

``python -m experiments.graph.timing [--out DIR]`` measures it alone and writes ``DIR/graph_timing.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from cdflow.training.alloc import keep_freed_memory
from experiments.common import RESULTS
from experiments.graph.configs import COIN_CORA, Training, model_specs
from experiments.graph.data import SPLIT_SEEDS
from experiments.graph.units import task, train

#: The timed run: Cora, explicit COIN with the authors' τ and steps, random split 0, initialisation seed 0.
SPLIT, INIT_SEED = 0, 0


def timing_setting() -> dict[str, Any]:
    """What `time_single_run` times (recorded with the timings and stated by the report)."""
    return {"dataset": "cora", "model": "coin-explicit", **COIN_CORA, "split": SPLIT, "split_seed": SPLIT_SEEDS[SPLIT],
            "init_seed": INIT_SEED}


def time_single_run(threads: int, repeats: int = 2) -> list[dict[str, Any]]:
    """Time `repeats` fresh Cora COIN runs (K = 1) with `threads` torch threads (data loading excluded)."""
    t = task("cora", False)
    masks = t.masks(SPLIT)
    spec = next(s for s in model_specs("cora", COIN_CORA) if s.key == "coin-explicit")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    out = []
    try:
        for _ in range(repeats):
            load = [round(v, 2) for v in os.getloadavg()]
            model = spec.build([INIT_SEED], t.num_features, t.num_classes)
            start = time.perf_counter()
            results, _ = train(model, t.x, t.lap, t.y, masks, Training(), deterministic=True)
            wall = time.perf_counter() - start
            out.append({"threads": threads, "wall_s": wall, "epochs": results[0].epochs,
                        "ms_per_epoch": 1e3 * wall / results[0].epochs, "test_acc": results[0].test_acc,
                        "loadavg_before": load, "loadavg_after": [round(v, 2) for v in os.getloadavg()]})
    finally:
        torch.set_num_threads(previous)
    return out


def measure(threads: tuple[int, ...] = (1, 2)) -> dict[str, Any]:
    """Timings for each thread count (build cost of the data excluded; one warm-up run first)."""
    time_single_run(1, repeats=1)  # warm-up: caches, allocator
    runs = [r for n in threads for r in time_single_run(n)]
    return {"runs": runs, "setting": timing_setting(), "cpu_count": os.cpu_count(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset)")}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    keep_freed_memory()
    result = measure()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "graph_timing.json").write_text(json.dumps(result, indent=1))
    for r in result["runs"]:
        print(f"threads {r['threads']}: {r['wall_s']:.2f} s, {r['epochs']} epochs, {r['ms_per_epoch']:.1f} ms/epoch, "
              f"load {r['loadavg_before']}")
    return result


if __name__ == "__main__":
    main()
