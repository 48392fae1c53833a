"""`python -m experiments.rnode.run --smoke`: the record holds what the runs did and the report says what it holds."""

from __future__ import annotations

import json

import pytest
from smoke_runner import experiments_module


@pytest.mark.slow
def test_rnode_smoke_record_and_report_agree(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = experiments_module("rnode.run")
    rec = run.main(["--smoke", "--out", str(tmp_path / "out"), "--root", str(tmp_path / "runs"), "--grid", "0.05"])
    saved = json.loads((tmp_path / "out" / "rnode_smoke.json").read_text())
    assert saved["runs"] == rec["runs"] and [r["lambda"] for r in rec["runs"]][:2] == [0.0, 0.05]
    base, reg = rec["runs"][:2]
    assert base["regularization"] == {"kinetic": 0.0, "jacobian": 0.0, "probe": "gaussian"}
    assert reg["regularization"]["kinetic"] == reg["regularization"]["jacobian"] == 0.05
    assert reg["reg_kinetic_last_epoch"] > 0 and reg["reg_jacobian_last_epoch"] > 0
    assert base["reg_kinetic_last_epoch"] is None and base["train_nfe_forward_last_epoch"] >= 8
    md = (tmp_path / "out" / "rnode_smoke.md").read_text()
    assert f"| 0.05 | {100 * reg['best_val_acc']:.2f} |" in md
