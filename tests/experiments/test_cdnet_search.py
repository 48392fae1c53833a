"""The continuous net's validation-only search (`experiments.graph.search_cdnet`): its choice rule, the stable
step counts it gives explicit steps, its smoke run (no test accuracy in the record), the configured rows
(`configs.CDNET`) against the committed record, and the report section drawn from the record."""

from __future__ import annotations

import json
import math

import pytest
from smoke_runner import ROOT, experiments_module, run_smoke

from cdflow.data.paths import data_root


def _have(*parts: str) -> bool:
    try:
        return data_root().joinpath(*parts).exists()
    except Exception:
        return False


def _score(val: float, wall: float) -> dict:
    return {"val_mean": val, "wall_mean_s": wall}


def test_pick_takes_the_best_validation_accuracy_and_the_fastest_of_ties():
    search = experiments_module("graph.search_cdnet")
    scores = [_score(0.80, 1.0), _score(0.83, 9.0), _score(0.829, 3.0), _score(0.82, 0.5)]
    assert search.pick(scores, tie=0.0) == 1
    assert search.pick(scores, tie=0.0025) == 2  # 0.829 is within the tie of 0.83 and faster
    assert search.pick(scores, tie=0.02) == 3


@pytest.mark.parametrize("integrator, convection, bound", [("explicit", "euler", 1.9), ("drift", "rk4", 2.5),
                                                           ("drift", "euler", 1.9)])
def test_explicit_and_drift_steps_are_the_least_stable_count(integrator, convection, bound):
    """γT/n ≤ bound/λ_max for the n the search gives, and n − 1 steps would not be (explicit Euler diverges past
    2/λ_max; RK4's real stability interval is 2.78)."""
    search = experiments_module("graph.search_cdnet")
    lam = 5.78
    p = search._stable({**search.BASE, "integrator": integrator, "convection": convection, "n_steps": 1,
                        "gamma": 6.0, "t1": 1.0}, {"lam_max": lam})
    n = p["n_steps"]
    assert 6.0 / n <= bound / lam < 6.0 / (n - 1)
    split = search._stable({**search.BASE, "n_steps": 1}, {"lam_max": lam})  # exact sub-steps: no bound
    assert split["n_steps"] == 1


def test_coin_form_is_coins_network_with_a_zero_convection():
    search = experiments_module("graph.search_cdnet")
    info = {"lam_max": 5.78, "coin_time": 7.0}
    p = search._coin_form(False)({**search.BASE, "t1": 0.3, "input_dropout": 0.8}, info)
    assert p["propagate"] == "probabilities" and p["convection_init"] == "zero"
    assert math.isclose(p["gamma"] * p["t1"], 7.0) and p["input_dropout"] == p["hidden_dropout"] == 0.0
    assert search._coin_form(True)({**search.BASE, "input_dropout": 0.8}, info)["input_dropout"] == 0.8


def test_factor_values_move_only_their_coordinate():
    """T with γT kept; γT with T kept; the integrator keeps the other settings."""
    search = experiments_module("graph.search_cdnet")
    info = {"lam_max": 5.78}
    base = dict(search.BASE)
    p = search._convection_time(0.1)(base, info)
    assert p["t1"] == 0.1 and math.isclose(p["gamma"] * p["t1"], base["gamma"] * base["t1"])
    q = search._diffusion_time(8.0)(p, info)
    assert q["t1"] == 0.1 and math.isclose(q["gamma"] * q["t1"], 8.0)
    r = search._integrator("split", "krylov")(q, info)
    assert {k: v for k, v in r.items() if k != "method"} == {k: v for k, v in q.items() if k != "method"}


@pytest.mark.skipif(not _have("gnn-benchmark", "cora.npz"), reason="Cora not in the data folder")
def test_search_smoke_records_validation_only(tmp_path):
    run_smoke("experiments.graph.search_cdnet", tmp_path)
    saved = json.loads((tmp_path / "cdnet_search_smoke.json").read_text())
    assert "test_acc" not in json.dumps(saved) and "test" not in {k for r in saved["datasets"]["cora"]["runs"]
                                                                 for k in r}
    res = saved["datasets"]["cora"]
    assert [s["factor"] for s in res["steps"]] == [f["name"] for f in saved["factors"]] and len(res["steps"]) == 2
    assert res["chosen"] in res["refined"] and res["chosen"]["splits"] == res["refine_splits"]
    for run in res["runs"]:
        assert 0.0 <= run["val_acc"] <= 1.0 and run["epochs"] >= 1
    md = experiments_module("graph.search_report").search_section(saved)
    assert any(line.startswith("Chosen for Cora:") for line in md)
    # stage 2 starts from stage 1's choice and records validation only too
    search = experiments_module("graph.search_cdnet")
    out2 = tmp_path / "stage2"
    search.main(["--smoke", "--stage2", str(tmp_path / "cdnet_search_smoke.json"), "--out", str(out2)])
    stage2 = json.loads((out2 / "cdnet_search_stage2_smoke.json").read_text())
    res2 = stage2["datasets"]["cora"]
    assert stage2["stage"] == 2 and res2["start"] == {"convection_init": "default", **res["chosen"]["point"]}
    assert [v["value"] for v in res2["steps"][0]["values"]][:2] == ["stage 1's point",
                                                                     "stage 1's, zero convection output"]
    assert "test_acc" not in json.dumps(stage2)
    md2 = "\n".join(experiments_module("graph.search_report").search_section(stage2))
    assert "validation-only search, stage 2" in md2 and "from stage 1's chosen point" in md2
    with pytest.raises(SystemExit, match="no stage-1 record"):
        search.main(["--smoke", "--stage2", str(tmp_path / "missing.json"), "--out", str(out2)])
    # stage 3 starts from stage 2's choice, under a time budget measured on COIN's row in the same search
    out3 = tmp_path / "stage3"
    with pytest.raises(SystemExit, match="stage-1 record; it takes a stage-2 record"):
        search.main(["--smoke", "--stage3", str(tmp_path / "cdnet_search_smoke.json"), "--out", str(out3)])
    search.main(["--smoke", "--stage3", str(out2 / "cdnet_search_stage2_smoke.json"), "--out", str(out3)])
    stage3 = json.loads((out3 / "cdnet_search_stage3_smoke.json").read_text())
    res3 = stage3["datasets"]["cora"]
    assert stage3["stage"] == 3 and res3["start"] == {**search.STAGE3_START, **res2["chosen"]["point"]}
    budget = res3["budget"]
    assert budget["budget_s"] == pytest.approx(3.0 * budget["coin"]["wall_mean_s"]) and budget["coin"]["wall_s"]
    assert [v["point"]["consistency"] for v in res3["steps"][0]["values"]] == [0.0, 0.0, 1.0, 1.0, 1.5, 1.5, 2.0, 2.0]
    assert "test_acc" not in json.dumps(stage3)
    md3 = "\n".join(experiments_module("graph.search_report").search_section(stage3))
    assert "validation-only search, stage 3" in md3 and "Time budget: 3× COIN's time per run" in md3


def test_pick_keeps_to_the_budget():
    """Within the budget the best validation wins (ties: the fastest); over it a point cannot be chosen, unless
    no point is within it."""
    pick = experiments_module("graph.search_cdnet").pick
    scores = [{"val_mean": 0.85, "wall_mean_s": 9.0}, {"val_mean": 0.84, "wall_mean_s": 5.0},
              {"val_mean": 0.8399, "wall_mean_s": 4.0}]
    assert pick(scores) == 0
    assert pick(scores, budget_s=8.0) == 2  # 0.84 and 0.8399 tie (0.25 points); the faster is taken
    assert pick(scores, tie=0.0, budget_s=8.0) == 1
    assert pick(scores, budget_s=1.0) == 0  # none within: the budget cannot choose


def test_configured_rows_are_the_recorded_choice():
    """`configs.CDNET` is the chosen point of the committed search record of the latest stage, for every dataset
    it searched (stage n starts from stage n−1's choice)."""
    results = ROOT / "experiments" / "results"
    stage1 = json.loads((results / "cdnet_search.json").read_text())
    chosen = {ds: res["chosen"]["point"] for ds, res in stage1["datasets"].items()}
    for stage in (2, 3):
        path = results / f"cdnet_search_stage{stage}.json"
        if not path.exists():
            continue
        record = json.loads(path.read_text())
        for ds, res in record["datasets"].items():
            start = {k: v for k, v in res["start"].items() if k in chosen[ds]}  # a stage adds new settings' defaults
            assert start == chosen[ds], (stage, ds)  # it continued from the committed earlier stage
            chosen[ds] = res["chosen"]["point"]
    configs = experiments_module("graph.configs")
    for ds, point in chosen.items():
        assert configs.CDNET[ds] == point, ds


def _record(chosen_val: float = 0.84) -> dict:
    search = experiments_module("graph.search_cdnet")
    a = dict(search.BASE)
    b = {**a, "propagate": "logits"}
    scores = [{"value": "features", "point": a, "splits": [0, 1], "val_acc": [0.8, 0.78], "val_mean": 0.79,
               "wall_mean_s": 10.0, "epochs_mean": 100},
              {"value": "logits", "point": b, "splits": [0, 1], "val_acc": [0.85, 0.81], "val_mean": 0.83,
               "wall_mean_s": 12.0, "epochs_mean": 100}]
    refined = [{"point": b, "splits": [0, 1, 2], "val_acc": [0.85, 0.81, 0.86], "val_mean": chosen_val,
                "wall_mean_s": 12.0, "epochs_mean": 100}]
    return {"command": "python -m experiments.graph.search_cdnet", "wall_s": 600.0, "workers": 2, "tie": 0.0025,
            "size": {"screen_splits": 2, "refine_splits": 3, "refine": 1},
            "datasets": {"cora": {"steps": [{"factor": "head position (propagate)", "values": scores,
                                             "refused": [{"value": "x", "why": "because"}], "chosen": "logits"}],
                                  "refine_splits": [0, 1, 2], "refined": refined, "chosen": refined[0]}}}


def test_search_section_states_the_record():
    section = experiments_module("graph.search_report").search_section
    md = "\n".join(section(_record()))
    assert "| head position (propagate) | logits | 83.00 | 85.00 81.00 | 12.0 | **chosen** |" in md
    assert "| head position (propagate) | features | 79.00 | 80.00 78.00 | 10.0 |  |" in md
    assert "| head position (propagate) | x | refused: because | | | |" in md
    assert "random splits 0–1 (one initialisation each)" in md and "run on splits 0–2" in md
    assert "Chosen for Cora: predict then propagate (head before the solve); T = 1, γ = 5 (γT = 5)" in md
    assert "mean validation accuracy 84.00% over 3 splits." in md
    assert "mean validation accuracy 86.00% over 3 splits." in "\n".join(section(_record(0.86)))
    assert section(None) == []
    markdown = experiments_module("graph.markdown")
    md = markdown.markdown(_graph_payload(_record()))
    assert "## Continuous net: validation-only search" in md
    assert "Cora: predict then propagate (head before the solve); T = 1, γ = 5" in md  # the row's recorded setting


def _graph_payload(search: dict) -> dict:
    report = experiments_module("graph.report")
    run = {"phase": "main", "dataset": "cora", "split_protocol": "random", "model": "cdnet", "label": "cdnet",
           "kwargs": search["datasets"]["cora"]["chosen"]["point"], "split": 0, "split_seed": 1, "init": 0,
           "init_seed": 0, "members_in_batch": 1, "batch_wall_s": 2.0, "wall_s": 2.0, "pid": 1, "epochs": 100,
           "best_epoch": 50, "train_acc": 1.0, "val_acc": 0.8, "val_loss": 0.5, "test_acc": 0.8, "nan": False}
    proto = {"name": "reduced", "datasets": ["cora"], "n_splits": 10, "n_inits": 1, "public_inits": 1,
             "tune_splits": 1, "tune_inits": 1, "workers": 1,
             "training": {"lr": 0.01, "weight_decay": 5e-4, "max_epochs": 1000, "patience": 50,
                          "improve_on_tie": False}}
    summary = report.summarise([run])
    return {"mode": "reduced", "command": "x", "protocol": proto, "loadavg_end": [0, 0, 0], "wall_s": 1.0,
            "machine": {"cpu": "c", "cores": 2, "torch_threads": 1, "torch": "2", "python": "3",
                        "loadavg": [0, 0, 0]},
            "json_name": "graph.json", "chosen": {}, "summary": summary, "full_protocol_estimate": None,
            "runs": [run], "cdnet_search": search}


def test_floors_state_the_continuous_rows():
    """The continuous net's accuracy floor and its time per run against COIN's, from the summary."""
    report = experiments_module("graph.report")
    row = {"test_mean": 0.83, "n": 30, "wall_per_run_s": 12.0}
    summary = {"random/cora/cdnet": row, "random/cora/coin-explicit": {**row, "test_mean": 0.82, "wall_per_run_s": 5.0},
               "random/citeseer/cdnet": {**row, "test_mean": 0.71}}
    summary = {k: {**v, "n_nan": 0} for k, v in summary.items()}
    rows, _ = report.floors(summary, None, None)
    got = {r["floor"]: (r["value"], r["met"]) for r in rows}
    assert got["cora continuous net mean test acc ≥ 82.5%"] == ("83.00% (n=30)", True)
    assert got["cora continuous net time per run ≤ 3× COIN's (explicit)"] == ("12.00 s / 5.00 s = 2.40×", True)
    assert got["citeseer continuous net mean test acc ≥ 72%"] == ("71.00% (n=30)", False)
    assert "citeseer continuous net time per run ≤ 3× COIN's (explicit)" not in got  # no COIN row to compare
