"""`python -m experiments.toys.run --smoke` writes well-formed results: accuracies, XOR l/d curve, figures."""

import json
import math
import statistics

import pytest
from smoke_runner import run_smoke

DATASETS = ("moons", "circles", "spirals")

def test_toys_smoke_outputs_are_well_formed(tmp_path):
    run_smoke("experiments.toys.run", tmp_path, timeout=120)
    payload = json.loads((tmp_path / "toys_smoke.json").read_text())
    assert {"mode", "seeds", "command", "machine", "wall_s", "summary", "runs", "xor"} <= set(payload)
    assert {"cpu", "cores", "torch", "loadavg"} <= set(payload["machine"])
    runs = payload["runs"]
    assert len(runs) == len(DATASETS) * len(payload["seeds"]) * 2 * 2  # datasets × seeds × diffusion × protocol
    for r in runs:
        assert {"dataset", "seed", "diffusion", "protocol", "test_acc_final", "test_acc_best_val", "history"} <= set(r)
        assert 0.0 <= r["test_acc_final"] <= 1.0 and 0.0 <= r["test_acc_best_val"] <= 1.0
        assert all(math.isfinite(v) for v in r["history"]["loss"])
        if r["diffusion"]:  # the precomputed (I − τL)ⁿ equals n explicit diffusion layers
            assert r["propagator_vs_explicit_max_abs_diff"] < 1e-3
    acc = payload["summary"]["accuracy"]
    kinds = ("diffusion", "no_diffusion")
    assert {f"{p}/{d}/{k}" for p in ("split", "all") for d in DATASETS for k in kinds} == set(acc)
    for curve in payload["xor"]:
        n = len(curve["ratio"])
        assert n == len(curve["l"]) == len(curve["d"]) > 1
        assert all(v > 0 and math.isfinite(v) for v in curve["ratio"] + curve["l"] + curve["d"])
        assert curve["ratio"][-1] > curve["ratio"][0]  # diffusion raises l/d
    md = (tmp_path / "toys_smoke.md").read_text()
    assert "| moons |" in md and "python -m experiments.toys.run --smoke" in md
    # values: each summary cell is the mean of its runs; moons is learnable (measured 0.85 without diffusion,
    # 0.98 with), and the table prints the summary
    for key, entry in acc.items():
        protocol, ds, kind = key.split("/")
        rs = [r for r in runs if (r["protocol"], r["dataset"], r["diffusion"]) == (protocol, ds, kind == "diffusion")]
        assert entry["final_mean"] == pytest.approx(statistics.fmean(r["test_acc_final"] for r in rs))
        assert entry["best_val_mean"] == pytest.approx(statistics.fmean(r["test_acc_best_val"] for r in rs))
    assert acc["split/moons/no_diffusion"]["final_mean"] > 0.7 and acc["split/moons/diffusion"]["final_mean"] > 0.9
    moons = [acc[f"split/moons/{k}"] for k in ("no_diffusion", "diffusion")]
    assert " | ".join(f"{e['final_mean']:.3f} ± {e['final_std']:.3f}" for e in moons) in md
    for name in ("toys_decision_boundaries", "toys_trajectories", "toys_xor_ld"):
        assert (tmp_path / "figures" / f"{name}_smoke.png").stat().st_size > 1000
