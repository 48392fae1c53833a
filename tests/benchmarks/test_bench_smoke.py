"""`make bench QUICK=1` as a smoke: every benchmark produces well-formed rows whose goals agree with their judgement,
and the figures obey what cannot be otherwise (memory grows with N, both sides of a comparison do the same work).
Speed is not asserted."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.common import Goal

ROOT = Path(__file__).resolve().parents[2]
#: fast_path starts a dozen `cdflow fit` processes even in quick mode (about 100 s): its smoke is `slow`
FAST = ("overhead", "stiff_diffusion", "graph_scaling", "coin_scale", "hardware", "compile", "adjoint_memory")


def _quick_bench(tmp_path: Path, only: tuple[str, ...] | None) -> dict:
    env = dict(os.environ, CDFLOW_BENCH_OUT=str(tmp_path), DEVICE="cpu", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "benchmarks.run", "--quick"] + (["--only", *only] if only else [])
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    payload = json.loads((tmp_path / "latest-quick.json").read_text())
    assert payload["errors"] == {}
    assert {"cpu", "cores", "torch", "torch_threads"} <= set(payload["machine"])
    return payload


@pytest.mark.slow
def test_quick_fast_path_bench(tmp_path):
    payload = _quick_bench(tmp_path, ("fast_path",))
    rows = {r["case"]: r for r in payload["rows"]}
    assert len(rows) == 5
    _check_goals(payload["rows"])
    assert all(r["met"] is not None or r["extra"].get("not_judged") for r in rows.values())


def _check_goals(rows: list[dict]) -> None:
    """Each goal's text is the bound its judgement used, and `met` is that bound held beyond the spread."""
    for row in rows:
        assert row["met"] in (True, False, None)
        if row["goal"]:
            rule = row["extra"]["goal_rule"]
            goal = Goal(rule["op"], rule["bound"])
            assert row["goal"].startswith(str(goal)), (row["goal"], rule)
            if row["met"]:
                assert goal.met(row["value"], row["spread"]), row
        else:
            assert row["met"] is None, row
            assert "goal_if_judged" not in row["extra"] or row["extra"]["not_judged"], row


def test_quick_bench_produces_well_formed_results(tmp_path):
    payload = _quick_bench(tmp_path, FAST)
    benches = {r["bench"] for r in payload["rows"]}
    assert benches == set(FAST)
    for row in payload["rows"]:
        assert {"bench", "case", "metric", "value", "goal", "met"} <= set(row)
        if row["goal"]:
            assert row["met"] is not None and math.isfinite(row["value"])
    _check_goals(payload["rows"])
    md = (tmp_path / "latest-quick.md").read_text()
    assert md.count("\n|") >= len(payload["rows"]) + 1
    by_bench = {b: [r for r in payload["rows"] if r["bench"] == b] for b in benches}

    # graph_scaling: the build's memory is the child's own, so it differs between sizes and grows with N
    mem = [r for r in by_bench["graph_scaling"] if r["metric"].startswith("peak memory")]
    assert len(mem) >= 3
    values = [r["value"] for r in mem]
    assert all(math.isfinite(v) and v > 0 for v in values) and len(set(values)) == len(values), values
    assert values[-1] > values[0], values
    peaks = [s["peak_mib"] for r in mem for s in r["extra"]["samples"]]
    assert len(set(peaks)) == len(peaks), peaks  # not one inherited peak for every N
    slopes = {r["case"].split(",")[0]: r["value"] for r in by_bench["graph_scaling"] if r["metric"] == "log-log slope"}
    assert 0 < slopes["build memory growth"] < 2.5 and 0 < slopes["build time growth"] < 3.5, slopes

    # adjoint_memory: backprop through the solver stores its steps, so 16× the depth takes more memory
    adj = {r["case"]: r["value"] for r in by_bench["adjoint_memory"] if r["metric"].startswith("peak memory")}
    assert all(math.isfinite(v) and v > 0 for v in adj.values()), adj
    assert adj["backprop B=256 T=16"] > adj["backprop B=256 T=1"], adj
    # the checkpointed adjoint is backprop's gradient; backsolve's reverse solve fails on the decaying channel
    grad = {r["case"]: r["value"] for r in by_bench["adjoint_memory"] if r["metric"] == "gradient error"}
    assert len(grad) == 6 and all(v <= 1e-12 for c, v in grad.items() if c.startswith("checkpoint")), grad
    assert grad["backsolve vs backprop, decaying channel λT=20"] > 1, grad

    # comparisons do the same work on both sides
    assert all(r["extra"]["same_nfe"] and r["extra"]["same_output"] for r in by_bench["overhead"])
    for r in by_bench["hardware"]:
        assert r["extra"]["nfe"] > 0 and r["extra"].get("nfe_timed_solve", r["extra"]["nfe"]) == r["extra"]["nfe"]
