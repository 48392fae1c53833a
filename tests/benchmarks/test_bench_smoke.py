"""`make bench QUICK=1` as a smoke: every benchmark produces well-formed rows (speed is not asserted)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

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
    assert len(rows) == 5 and all(r["met"] is not None for r in rows.values())


def test_quick_bench_produces_well_formed_results(tmp_path):
    payload = _quick_bench(tmp_path, FAST)
    benches = {r["bench"] for r in payload["rows"]}
    assert benches == set(FAST)
    for row in payload["rows"]:
        assert {"bench", "case", "metric", "value", "goal", "met"} <= set(row)
        assert row["met"] in (True, False, None)
        if row["goal"]:
            assert row["met"] is not None and math.isfinite(row["value"])
    md = (tmp_path / "latest-quick.md").read_text()
    assert md.count("\n|") >= len(payload["rows"]) + 1
