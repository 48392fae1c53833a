"""`python -m experiments.images.run --smoke` writes well-formed results: every dataset × labels × kind, finite
accuracies in [0, 1], and the markdown tables."""

import json
import math
import statistics

import pytest
from smoke_runner import run_smoke

KINDS = ("none", "graph", "noise")


def test_images_smoke_outputs_are_well_formed(tmp_path):
    run_smoke("experiments.images.run", tmp_path, timeout=180, WANDB_MODE="offline")
    payload = json.loads((tmp_path / "images_smoke.json").read_text())
    keys = {"mode", "seeds", "mnist_seeds", "command", "machine", "wall_s", "settings", "summary", "runs"}
    assert keys <= set(payload)
    assert {"cpu", "cores", "torch", "torch_threads", "loadavg"} <= set(payload["machine"])
    labels = payload["settings"]["labels"]
    runs = payload["runs"]
    expected = {("digits", lab, k, s) for lab in labels for k in KINDS for s in payload["seeds"]}
    expected |= {("mnist", lab, k, s) for lab in labels for k in KINDS for s in payload["mnist_seeds"]}
    assert {(r["dataset"], r["labels_per_class"], r["kind"], r["seed"]) for r in runs} == expected
    for r in runs:
        assert 0.0 <= r["unlabelled_acc"] <= 1.0
        assert r["n_labelled"] == 10 * r["labels_per_class"] < r["n_points"]
        assert math.isfinite(r["train_loss_final"]) and r["wall_s"] >= 0
        if r["dataset"] == "digits":
            assert 0.0 <= r["test_acc"] <= 1.0
    for key, entry in payload["summary"].items():
        assert key.split("/")[0] in ("digits", "mnist") and entry["n"] >= 1
        assert 0.0 <= entry["unlabelled_mean"] <= 1.0 and math.isfinite(entry["unlabelled_std"])
    md = (tmp_path / "images_smoke.md").read_text()
    assert "python -m experiments.images.run --smoke" in md and "| labels / class |" in md
    assert "nan" not in md.lower()
    # values: every model learns from one label per class above twice chance (10 classes; measured ≥ 0.32),
    # and each summary entry is the mean of its raw records, as the table prints it
    for r in runs:
        assert r["unlabelled_acc"] > 0.2, r
    for key, entry in payload["summary"].items():
        ds, lab, kind = key.split("/")
        rs = [r for r in runs if (r["dataset"], str(r["labels_per_class"]), r["kind"]) == (ds, lab, kind)]
        assert entry["n"] == len(rs)
        assert entry["unlabelled_mean"] == pytest.approx(statistics.fmean(r["unlabelled_acc"] for r in rs))
        assert f"{entry['unlabelled_mean']:.3f} ± {entry['unlabelled_std']:.3f} ({entry['n']})" in md
