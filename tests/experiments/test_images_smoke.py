"""`python -m experiments.images.run --smoke` writes well-formed results: every dataset × labels × kind (the graph
model at every point of the γ × n_steps grid), finite accuracies in [0, 1], the graph model's point chosen on
validation accuracy, and the markdown tables."""

import json
import math
import statistics

import pytest
from smoke_runner import experiments_module, run_smoke

from cdflow.errors import ConfigError

KINDS = ("none", "graph", "noise")


def test_images_smoke_outputs_are_well_formed(tmp_path):
    run_smoke("experiments.images.run", tmp_path, timeout=180, WANDB_MODE="offline")
    payload = json.loads((tmp_path / "images_smoke.json").read_text())
    keys = {"mode", "seeds", "mnist_seeds", "command", "machine", "wall_s", "settings", "summary", "runs"}
    assert keys <= set(payload)
    assert {"cpu", "cores", "torch", "torch_threads", "loadavg"} <= set(payload["machine"])
    labels, st = payload["settings"]["labels"], payload["settings"]
    grid = [(g, n) for g in st["gamma_grid"] for n in st["steps_grid"]]
    assert len(grid) > 1 and len(set(st["steps_grid"])) > 1  # the smoke mode exercises both grids
    runs = payload["runs"]
    expected = set()
    for ds, seeds in (("digits", payload["seeds"]), ("mnist", payload["mnist_seeds"])):
        for lab in labels:
            for s in seeds:
                expected |= {(ds, lab, k, s, None, None) for k in KINDS if k != "graph"}
                expected |= {(ds, lab, "graph", s, g, n) for g, n in grid}
    assert {(r["dataset"], r["labels_per_class"], r["kind"], r["seed"], r.get("gamma"), r.get("n_steps"))
            for r in runs} == expected
    for r in runs:
        assert 0.0 <= r["unlabelled_acc"] <= 1.0 and 0.0 <= r["val_acc"] <= 1.0
        assert r["n_labelled"] == 10 * r["labels_per_class"] < r["n_points"]
        # labelled, validation and scored points partition the set
        assert r["n_labelled"] + r["n_val"] + r["n_scored"] == r["n_points"] and r["n_val"] > 0
        if r["dataset"] == "mnist":
            assert r["n_val"] == 10 * st["mnist_val_per_class"]
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
    # the choice: per dataset/labels the grid point of highest validation accuracy, recomputed from the records
    selection = payload["selection"]
    assert set(selection) == {f"{ds}/{lab}" for ds in ("digits", "mnist") for lab in labels}
    for key, sel in selection.items():
        ds, lab = key.split("/")
        graph = [r for r in runs if (r["dataset"], str(r["labels_per_class"]), r["kind"]) == (ds, lab, "graph")]
        val = {p: statistics.fmean(r["val_acc"] for r in graph if (r["gamma"], r["n_steps"]) == p) for p in grid}
        best = max(val.values())
        assert (sel["chosen"]["gamma"], sel["chosen"]["n_steps"]) == min(p for p in grid if val[p] == best)
        assert [(p["gamma"], p["n_steps"]) for p in sel["grid"]] == sorted(grid)
        assert [p["val_mean"] for p in sel["grid"]] == pytest.approx([val[p] for p in sorted(grid)])
        assert f"**{sel['chosen']['val_mean']:.3f} ± " in md
    # each summary entry is the mean of its raw records, as the table prints it: graph at the default point,
    # graph_val at the chosen point
    config = experiments_module("images.config")
    default = (config.HPARAMS["diffusion_graph"]["gamma"], config.HPARAMS["diffusion_graph"]["n_steps"])
    assert {key.split("/")[2] for key in payload["summary"]} == {"none", "graph", "graph_val", "noise"}
    for key, entry in payload["summary"].items():
        ds, lab, row = key.split("/")
        kind = "graph" if row == "graph_val" else row
        rs = [r for r in runs if (r["dataset"], str(r["labels_per_class"]), r["kind"]) == (ds, lab, kind)]
        if row == "graph":
            rs = [r for r in rs if (r["gamma"], r["n_steps"]) == default]
        if row == "graph_val":
            chosen = selection[f"{ds}/{lab}"]["chosen"]
            rs = [r for r in rs if (r["gamma"], r["n_steps"]) == (chosen["gamma"], chosen["n_steps"])]
        assert entry["n"] == len(rs) >= 1
        assert entry["unlabelled_mean"] == pytest.approx(statistics.fmean(r["unlabelled_acc"] for r in rs))
        assert f"{entry['unlabelled_mean']:.3f} ± {entry['unlabelled_std']:.3f} ({entry['n']})" in md
    # the report is a function of the json: --report-only rebuilds the same page from it
    (tmp_path / "images_smoke.md").unlink()
    run = experiments_module("images.run")
    run.main(["--smoke", "--out", str(tmp_path), "--report-only"])
    assert (tmp_path / "images_smoke.md").read_text() == md


def test_images_report_only_refuses_run_options(tmp_path):
    run = experiments_module("images.run")
    for extra in (["--merge"], ["--only", "digits"], ["--labels", "1"], ["--kinds", "none"]):
        with pytest.raises(ConfigError, match="runs nothing"):
            run.main(["--smoke", "--out", str(tmp_path), "--report-only", *extra])
    with pytest.raises(ConfigError, match="≥ 1"):
        run.main(["--smoke", "--out", str(tmp_path), "--labels", "0"])
