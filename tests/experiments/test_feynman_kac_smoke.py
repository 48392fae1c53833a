"""`python -m experiments.feynman_kac.run --smoke` writes well-formed results and the gap shrinks with n."""

import json
import math
import statistics

import pytest
from smoke_runner import run_smoke


def test_feynman_kac_smoke_outputs_are_well_formed(tmp_path):
    run_smoke("experiments.feynman_kac.run", tmp_path, timeout=120)
    payload = json.loads((tmp_path / "feynman_kac_smoke.json").read_text())
    assert {"mode", "seeds", "command", "machine", "wall_s", "summary", "result", "problem"} <= set(payload)
    result, summary = payload["result"], payload["summary"]
    ns, ms = payload["settings"]["ns"], payload["settings"]["ms"]
    assert len(result["runs"]) == len(ns) * len(ms) * len(payload["seeds"])
    for r in result["runs"]:
        assert all(math.isfinite(r[k]) and r[k] >= 0 for k in ("gap", "max_se", "mc_error"))
    for m in ms:  # the gap at the most blocks is below the gap at the fewest
        assert summary["cells"][f"{ns[-1]}/{m}"]["gap_mean"] < summary["cells"][f"{ns[0]}/{m}"]["gap_mean"]
    bias = [result["bias_M_inf"][str(n)] for n in ns]
    assert all(b1 < b0 for b0, b1 in zip(bias, bias[1:]))
    assert all(0.7 < o < 1.3 for o in summary["weak_orders"])  # weak order 1
    # the PDE solver converges at second order to the closed form, and its error is far below the gaps
    for row in result["pde_validation"][1:]:
        assert 1.8 < row["observed_order"] < 2.2
    assert result["pde_validation"][-1]["max_error"] < 1e-3 and result["pde_error_estimate"] < 1e-3
    assert result["library_check"]["within_4_max_se"]
    md = (tmp_path / "feynman_kac_smoke.md").read_text()
    assert "| n |" in md
    for n in ns:  # each cell is the mean of its runs, as the table prints it
        for m in ms:
            cell = summary["cells"][f"{n}/{m}"]
            rs = [r for r in result["runs"] if (r["n"], r["M"]) == (n, m)]
            assert cell["runs"] == len(rs)
            assert cell["gap_mean"] == pytest.approx(statistics.fmean(r["gap"] for r in rs))
            assert f"{cell['gap_mean']:.4f} ± {cell['gap_std']:.4f}" in md
    assert (tmp_path / "figures" / "fk_gap_smoke.png").stat().st_size > 1000
