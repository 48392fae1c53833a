"""Scaling of the kNN-Gaussian graph + Laplacian build (cdflow.graph) with the number of points N.

Measures, per N, `knn_gaussian_graph(x, k, k_scale)` followed by `laplacian_from_weights(W)` on float32
Gaussian data x ∈ R^{N×d}. Every figure comes from its own fresh process (``python -m benchmarks.graph_scaling
--measure N D K K_SCALE SEED time|memory``): imports, data, a warm-up build on the first 512 points (first-call
costs outside the measurement), then one measured build:

* time_s     wall-clock seconds of the build (glibc's default allocator); `rounds` rounds of all sizes,
             interleaved round-robin over N, one process at a time;
* build_mib  peak resident set (VmHWM) after the build minus the resident set of imports, data and warm-up
             (`benchmarks.memory.PeakMeter`: freed memory trimmed, peak reset through /proc/self/clear_refs), in
             a process whose glibc maps every allocation ≥ 64 KiB on its own from the start (`exact_rss`), so
             that the figure follows live tensors: the memory the build needs. (With the default allocator the
             same build's figure varies between runs by 2× or more with what glibc keeps of freed blocks; with
             exact_rss it repeats to a fraction of a MiB, so each size is measured once. exact_rss slows
             allocations, so memory processes are never timed.)

Growth exponents are least-squares slopes of log(value) against log(N) (times: over every (N, round)), their
standard errors as spread. Goal: build memory at most linear in N (exponent ≤ 1 beyond its spread). The sizes
lie above the kNN chunk budget (2²³ distance entries, N ≥ 2897), where the build's chunked design applies;
below it the distance block is N×N by design. The build runs on the CPU whatever DEVICE says. Threads: the
processes inherit OMP_NUM_THREADS.

CLI: ``python -m benchmarks.graph_scaling [--quick] [--sizes 5000 10000 20000] [--d 64] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from collections.abc import Sequence

QUICK_SIZES = (3000, 6000, 12000)
DEFAULT_SIZES = (12_500, 25_000, 50_000, 100_000)
WARMUP_POINTS = 512


def _build(x, k: int, k_scale: int):
    from cdflow.graph import knn_gaussian_graph, laplacian_from_weights

    return laplacian_from_weights(knn_gaussian_graph(x, k=k, k_scale=k_scale), "combinatorial")


def _measure(n: int, d: int, k: int, k_scale: int, seed: int, mode: str) -> dict[str, float]:
    """One size, in this process: call it only in a fresh process (`python -m benchmarks.graph_scaling --measure`).

    mode "time": a warm-up build on the first 512 points, then the timed build (glibc's default allocator).
    mode "memory": glibc set first to map every allocation ≥ 64 KiB on its own (`benchmarks.memory.exact_rss`:
    slower allocations, hence never in a timed process), the same warm-up, then the build between the readings
    of a `PeakMeter`."""
    from benchmarks.memory import PeakMeter, exact_rss

    if mode == "memory":
        exact_rss()
    import torch

    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen)
    _build(x[: min(n, WARMUP_POINTS)], k, k_scale)
    gc.collect()
    out: dict = {"n": n, "mode": mode, "threads": torch.get_num_threads()}
    if mode == "time":
        start = time.perf_counter()
        lap = _build(x, k, k_scale)
        out["time_s"] = time.perf_counter() - start
    else:
        meter = PeakMeter()
        lap = _build(x, k, k_scale)
        mem = meter.stop()
        out.update(build_mib=mem["measured_mib"], baseline_mib=mem["baseline_mib"], peak_mib=mem["peak_mib"],
                   startup_peak_mib=mem["startup_peak_mib"], peak_reset=mem["peak_reset"])
    out["nnz"] = int(lap._nnz())
    return out


def measure(sizes: Sequence[int], d: int = 64, rounds: int = 1, k: int = 8, k_scale: int = 4, seed: int = 0,
            timeout_s: float = 600.0) -> dict[str, object]:
    """Times: every size `rounds` times, each in a fresh process, interleaved (round-robin over N), one process
    at a time. Memory: every size once (it repeats to a fraction of a MiB), each in a fresh process, two side by
    side (untimed). Raw samples and the fitted exponents."""
    from benchmarks.memory import fresh_process, fresh_processes, loglog_slope

    times = [fresh_process("benchmarks.graph_scaling", ["--measure", n, d, k, k_scale, seed, "time"],
                           timeout_s=timeout_s) for _ in range(rounds) for n in sizes]
    mem = fresh_processes([("benchmarks.graph_scaling", ["--measure", n, d, k, k_scale, seed, "memory"])
                           for n in sizes], parallel=2, timeout_s=timeout_s)
    mem_exp, mem_se = loglog_slope([s["n"] for s in mem], [s["build_mib"] for s in mem])
    time_exp, time_se = loglog_slope([s["n"] for s in times], [s["time_s"] for s in times])
    return {"times": times, "memory": mem, "memory_exponent": mem_exp, "memory_exponent_se": mem_se,
            "time_exponent": time_exp, "time_exponent_se": time_se, "d": d, "k": k, "k_scale": k_scale,
            "rounds": rounds}


def run(quick: bool, device) -> list:
    from benchmarks.common import Goal, Row, goal_row, median_spread
    from benchmarks.memory import METHOD

    sizes = QUICK_SIZES if quick else DEFAULT_SIZES
    rounds = 1 if quick else 3
    res = measure(sizes, d=64, rounds=rounds)
    rows: list[Row] = []
    for n in sizes:
        ts = [s for s in res["times"] if s["n"] == n]
        ms = [s for s in res["memory"] if s["n"] == n]
        t, t_sp = median_spread([s["time_s"] for s in ts])
        rows.append(Row("graph_scaling", f"N={n} d=64 build", "time", t, "s", spread=t_sp,
                        extra={"samples": ts, "rounds": rounds}))
        rows.append(Row("graph_scaling", f"N={n} d=64 build", "peak memory above baseline", ms[0]["build_mib"], "MiB",
                        extra={"samples": ms, "memory_method": METHOD["cpu"] + "; glibc exact_rss"}))
    fit = {"sizes": list(sizes), "time_rounds": rounds, "memory_method": METHOD["cpu"] + "; glibc exact_rss",
           "spread": "standard error of the least-squares slope"}
    rows.append(goal_row("graph_scaling", f"build memory growth, N={sizes[0]}…{sizes[-1]}", "log-log slope",
                         res["memory_exponent"], "", res["memory_exponent_se"],
                         Goal("<=", 1.0, note="at most linear in N"), extra=fit))
    rows.append(Row("graph_scaling", f"build time growth, N={sizes[0]}…{sizes[-1]}", "log-log slope",
                    res["time_exponent"], "", spread=res["time_exponent_se"], extra=fit))
    if sizes[-1] >= 100_000:
        last = [s["time_s"] for s in res["times"] if s["n"] == sizes[-1]]
        t, t_sp = median_spread(last)
        rows.append(goal_row("graph_scaling", f"N={sizes[-1]:.0e} build", "time", t, "s", t_sp,
                             Goal("<=", 60.0, " s"), extra={"times_s": last}))
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measure", nargs=6, metavar=("N", "D", "K", "K_SCALE", "SEED", "time|memory"))
    parser.add_argument("--sizes", nargs="+", type=int)
    parser.add_argument("--d", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.measure:
        *shape, mode = args.measure
        if mode not in ("time", "memory"):
            parser.error("the mode of --measure is time or memory")
        print(json.dumps(_measure(*map(int, shape), mode=mode)))
        return
    sizes = args.sizes or (QUICK_SIZES if args.quick else DEFAULT_SIZES)
    print(json.dumps(measure(sizes, args.d, args.rounds), indent=2))


if __name__ == "__main__":
    main()
