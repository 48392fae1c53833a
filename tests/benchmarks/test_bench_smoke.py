"""`make bench QUICK=1` as a smoke: every benchmark produces well-formed rows (speed is not asserted)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_bench_produces_well_formed_results(tmp_path):
    env = dict(os.environ, CDFLOW_BENCH_OUT=str(tmp_path), DEVICE="cpu", OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "benchmarks.run", "--quick"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    payload = json.loads((tmp_path / "latest-quick.json").read_text())
    assert payload["errors"] == {}
    assert {"cpu", "cores", "torch", "torch_threads"} <= set(payload["machine"])
    benches = {r["bench"] for r in payload["rows"]}
    assert benches == {"overhead", "adjoint_memory", "stiff_diffusion", "graph_scaling", "fast_path", "coin_scale",
                       "hardware", "compile"}
    for row in payload["rows"]:
        assert {"bench", "case", "metric", "value", "goal", "met"} <= set(row)
        assert row["met"] in (True, False, None)
        if row["goal"]:
            assert row["met"] is not None and math.isfinite(row["value"])
    md = (tmp_path / "latest-quick.md").read_text()
    assert md.count("\n|") >= len(payload["rows"]) + 1
