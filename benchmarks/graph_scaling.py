"""Scaling of the kNN-Gaussian graph + Laplacian build (cdflow.graph) with the number of points N.

Measures, per N, `knn_gaussian_graph(x, k, k_scale)` followed by `laplacian_from_weights(W)` on float32
Gaussian data x ∈ R^{N×d}. Each size runs in a fresh Python subprocess so that memory is not polluted by
earlier sizes:

* time_s          wall-clock seconds of the build (after imports and data generation);
* peak_rss_mib    peak resident set size of the subprocess (getrusage ru_maxrss; includes torch itself);
* build_rss_mib   peak_rss_mib minus the RSS just before the build: memory attributable to the build.

Growth exponents are least-squares slopes of log(time) and log(build memory) against log(N).
Threads: the subprocesses inherit OMP_NUM_THREADS (set it; the result records torch's thread count).

CLI: ``python benchmarks/graph_scaling.py [--quick] [--sizes 5000 10000 20000] [--d 64]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Sequence

QUICK_SIZES = (1000, 2000, 4000)
DEFAULT_SIZES = (5000, 10000, 20000)


def _rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _measure(n: int, d: int, k: int, k_scale: int, seed: int) -> dict[str, float]:
    """One size, in this process (call it in a fresh subprocess for clean memory figures)."""
    import resource

    import torch

    from cdflow.graph import knn_gaussian_graph, laplacian_from_weights

    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen)
    before = _rss_mib()
    start = time.perf_counter()
    w = knn_gaussian_graph(x, k=k, k_scale=k_scale)
    lap = laplacian_from_weights(w, "combinatorial")
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    return {
        "n": n,
        "time_s": elapsed,
        "peak_rss_mib": peak,
        "build_rss_mib": max(peak - before, 0.0),
        "nnz": int(lap._nnz()),
        "threads": torch.get_num_threads(),
    }


def _slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    pts = [(math.log(a), math.log(b)) for a, b in zip(xs, ys) if a > 0 and b > 0]
    if len(pts) < 2:
        return float("nan")
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx if sxx > 0 else float("nan")


def run(
    sizes: Sequence[int] | None = None,
    d: int = 64,
    quick: bool = False,
    k: int = 8,
    k_scale: int = 4,
    seed: int = 0,
    timeout_s: float = 600.0,
) -> dict[str, object]:
    """Time and memory of the graph build for each N in `sizes` (default 5k/10k/20k; quick: 1k/2k/4k).

    Returns {"rows": [per-size dicts], "time_exponent", "memory_exponent", "memory_metric", "d", "k",
    "k_scale"}. Each size runs in a subprocess (python this_file --measure ...).
    """
    if sizes is None:
        sizes = QUICK_SIZES if quick else DEFAULT_SIZES
    env = dict(os.environ)
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    rows = []
    for n in sizes:
        cmd = [sys.executable, os.path.abspath(__file__), "--measure", str(n), str(d), str(k), str(k_scale)]
        cmd.append(str(seed))
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout_s, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"graph_scaling N={n} failed:\n{done.stderr[-2000:]}")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    ns = [r["n"] for r in rows]
    return {
        "rows": rows,
        "time_exponent": _slope(ns, [r["time_s"] for r in rows]),
        "memory_exponent": _slope(ns, [r["build_rss_mib"] for r in rows]),
        "memory_metric": "peak RSS (getrusage ru_maxrss) of a fresh subprocess; build = peak - RSS before",
        "d": d,
        "k": k,
        "k_scale": k_scale,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measure", nargs=5, type=int, metavar=("N", "D", "K", "K_SCALE", "SEED"))
    parser.add_argument("--sizes", nargs="+", type=int)
    parser.add_argument("--d", type=int, default=64)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(_measure(*args.measure)))
        return
    print(json.dumps(run(args.sizes, args.d, args.quick), indent=2))


if __name__ == "__main__":
    main()
