"""`python -m experiments.mnist.run --smoke`: the record holds what the run did and the report says what the record
holds."""

from __future__ import annotations

import json

from experiments.mnist.run import main


def test_mnist_smoke_record_and_report_agree(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path.parent)  # the run folder goes below tmp_path, not the project
    rec = main(["--smoke", "--out", str(tmp_path / "out"), "--root", str(tmp_path / "runs")])
    saved = json.loads((tmp_path / "out" / "mnist_smoke.json").read_text())
    assert saved["test"] == rec["test"] and 0.0 <= rec["test"]["test/acc"] <= 1.0
    assert [e["epoch"] for e in rec["epochs"] if "val/acc" in e] == [0]  # one epoch, as --smoke asks
    assert rec["train_examples"] == 55_000 and rec["val_examples"] == 5_000 and rec["test_examples"] == 10_000
    md = (tmp_path / "out" / "mnist_smoke.md").read_text()
    assert f"**{rec['test']['test/acc']:.4f}**" in md and "for 1 epoch(s)" in md
    assert f"{rec['epochs'][0]['val/acc']:.4f}" in md
    assert rec["solver"]["method"] == "rk4" and "rk4 with step 0.25" in md
