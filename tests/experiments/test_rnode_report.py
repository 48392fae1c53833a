"""The RNODE report renders from a hand-built record (no training): λ is chosen on validation accuracy alone, and
every figure and verdict follows the record."""

from __future__ import annotations

import copy

import pytest
from smoke_runner import experiments_module

MACHINE = {"cpu": "test cpu", "cores": 2, "torch_threads": 1, "torch": "2.x", "python": "3.x",
           "loadavg": [0.0, 0.0, 0.0]}


def _run(dataset: str, lam: float, seed: int, val: float, test: float, nfe: float) -> dict:
    return {"dataset": dataset, "lambda": lam, "seed": seed, "command": "cdflow fit ...", "best_val_acc": val,
            "final_val_nfe_forward": nfe, "test_acc": test, "test_loss": 0.1, "test_nfe_forward": nfe,
            "fit_seconds": 100.0, "train_nfe_forward_last_epoch": nfe, "reg_kinetic_last_epoch": None if lam == 0
            else 2.0, "reg_jacobian_last_epoch": None if lam == 0 else 3.0, "epochs": []}


def _record(mnist: bool = False) -> dict:
    runs = [_run("digits", 0.0, 0, 0.960, 0.970, 26.0), _run("digits", 0.01, 0, 0.958, 0.990, 17.0),
            _run("digits", 0.03, 0, 0.959, 0.995, 20.0),  # best validation accuracy, but NFE only 1.3× lower
            _run("digits", 0.1, 0, 0.950, 0.999, 8.0),  # best test and NFE, but 1 validation point lower
            _run("digits", 0.0, 1, 0.965, 0.980, 26.0), _run("digits", 0.01, 1, 0.962, 0.972, 14.0)]
    rec = {"mode": "reduced", "grid": [0.01, 0.03, 0.1], "seeds": [0, 1], "val_margin": 0.5, "chosen_lambda": None,
           "mnist": None, "command": "python -m experiments.rnode.run", "wall_seconds": 600.0, "machine": MACHINE,
           "loadavg_end": [0.0, 0.0, 0.0], "env": {}, "runs": runs}
    run = experiments_module("rnode.run")
    rec["chosen_lambda"] = run.choose_lambda(runs, rec["val_margin"])
    if mnist:
        rec["mnist"] = {"epochs": 1, "limit_train_batches": None, "config_epochs": 5, "lambda": 0.01,
                        "grid": [0.01], "lambda_from": "digits"}
        rec["runs"] += [_run("mnist", 0.0, 0, 0.98, 0.985, 32.0), _run("mnist", 0.01, 0, 0.98, 0.984, 20.0)]
    return rec


def test_lambda_is_chosen_on_validation_figures_only():
    rec = _record()
    # 0.1 has the best test accuracy and NFE but costs 1 validation point; 0.03 the best validation accuracy but
    # its validation NFE is only 26 / 20 = 1.3× lower
    assert rec["chosen_lambda"] == 0.01
    run = experiments_module("rnode.run")
    wider = copy.deepcopy(rec["runs"])
    assert run.choose_lambda(wider, 1.0) == 0.01  # 0.1 now qualifies, but 0.01 validates better
    wider[3]["best_val_acc"] = 0.958  # a tie goes to the larger λ
    assert run.choose_lambda(wider, 1.0) == 0.1
    worse = copy.deepcopy(rec["runs"])
    worse[1]["best_val_acc"] = 0.90
    assert run.choose_lambda(worse, 0.5) is None
    slow = copy.deepcopy(rec["runs"])
    slow[1]["train_nfe_forward_last_epoch"] = 18.0  # validation NFE 1.53× lower, training steps only 1.44×
    assert run.choose_lambda(slow, 0.5) is None
    assert run.choose_lambda(rec["runs"], 0.5, "mnist") is None  # no MNIST runs
    mnist = [_run("mnist", 0.0, 0, 0.97, 0.97, 30.0), _run("mnist", 1e-3, 0, 0.968, 0.5, 18.0),
             _run("mnist", 1e-2, 0, 0.80, 0.99, 14.0)]
    assert run.choose_lambda(rec["runs"] + mnist, 0.5, "mnist") == 1e-3  # MNIST's own validation figures


def test_report_states_the_record():
    report = experiments_module("rnode.report")
    rec = _record()
    md = report.render(rec, experiments_module("common").provenance)
    assert "Chosen: λ = 0.01." in md and "(95.50%)" in md  # 96.0 − 0.5
    # digits: none 26, 26 → 26; RNODE 17, 14 → 15.5: 26 / 15.5 = 1.68×; accuracy (0.99+0.972)/2 − 0.975 = +0.60
    assert "1.68× (training, last epoch)" in md and "(≤ 17.3)" in md and "+0.60 points" in md and "**met**" in md
    assert "| none | 97.50 ± 0.71 |" in md
    assert "## MNIST ODE-Net\n\nNot run" in md


@pytest.mark.parametrize(("change", "reason"), [
    ({"train_nfe_forward_last_epoch": 22.0, "test_nfe_forward": 22.0}, "the NFE ratio is below 1.5×"),
    ({"test_acc": 0.93}, "the test accuracy fell by more than 0.5 points"),
])
def test_verdict_follows_the_record(change, reason):
    report = experiments_module("rnode.report")
    rec = _record()
    for r in rec["runs"]:
        if r["lambda"] == 0.01 and r["seed"] == 1:
            r.update(change)
    md = report.render(rec, experiments_module("common").provenance)
    assert "**not met**" in md and reason in md


def test_reduced_mnist_is_labelled_reduced():
    report = experiments_module("rnode.report")
    md = report.render(_record(mnist=True), experiments_module("common").provenance)
    assert "**reduced**: 1 epoch(s) of the config's 5" in md
    assert "1.60× (training, last epoch)" in md and "-0.10 points" in md  # 32 / 20; 98.4 − 98.5


def _mnist_grid(arms: list[tuple[float, float, float, float]]) -> tuple[dict, float | None]:
    """The digits record plus MNIST arms (λ, val, test, NFE) of seed 0, λ chosen by the rule on MNIST."""
    rec = _record()
    rec["runs"] += [_run("mnist", lam, 0, val, test, nfe) for lam, val, test, nfe in arms]
    lam = experiments_module("rnode.run").choose_lambda(rec["runs"], rec["val_margin"], "mnist")
    rec["mnist"] = {"epochs": 2, "limit_train_batches": None, "config_epochs": 5, "lambda": lam,
                    "grid": [a[0] for a in arms if a[0] > 0], "lambda_from": "mnist validation"}
    return rec, lam


def test_mnist_grid_choice_is_rendered_from_mnist_validation():
    report = experiments_module("rnode.report")
    rec, _ = _mnist_grid([(0.0, 0.97, 0.975, 30.0), (1e-3, 0.968, 0.972, 18.0), (1e-2, 0.80, 0.99, 14.0)])
    md = report.render(rec, experiments_module("common").provenance)
    assert "## Choosing λ on validation (mnist, seed 0)" in md and "Chosen: λ = 0.001." in md
    assert "(96.50%)" in md and "chosen on MNIST's validation figures" in md
    assert "30 / 18" not in md and "1.67× (training, last epoch)" in md and "-0.30 points" in md


def test_mnist_grid_without_a_choice_shows_every_arm_for_information():
    report = experiments_module("rnode.report")
    rec, lam = _mnist_grid([(0.0, 0.97, 0.975, 30.0), (1e-3, 0.96, 0.965, 18.0), (1e-4, 0.972, 0.978, 26.0)])
    assert lam is None  # 1e-3 costs a validation point, 1e-4 saves only 1.15× NFE
    md = report.render(rec, experiments_module("common").provenance)
    assert "Chosen: none (no λ of the grid qualifies)" in md
    assert "| 0.001 | 96.00 | 96.50 | -1.00 | 18.0 | 18 | 1.67× | 100 |" in md
    assert "| 0.0001 | 97.20 | 97.80 | +0.30 | 26.0 | 26 | 1.15× | 100 |" in md
    assert "**not met** (no λ of the grid met it on validation)" in md


def test_reused_runs_are_not_trained_again_and_are_named(monkeypatch):
    run = experiments_module("rnode.run")
    args = run.fit_args(run.CONFIGS / "mnist.yaml", run.Path("/tmp/r") / "mnist-lam0.001-seed0", 0, 1e-3, ["--x", "1"])
    command = "cdflow " + " ".join(args).replace(str(run.ROOT) + run.os.sep, "")
    old = {**_run("mnist", 1e-3, 0, 0.96, 0.965, 20.0), "command": command, "reused_from": "old.json"}
    import cdflow.cli

    monkeypatch.setattr(cdflow.cli, "run_cli", lambda *a, **k: (_ for _ in ()).throw(AssertionError("trained")))
    got = run.one_run("mnist", run.CONFIGS / "mnist.yaml", run.Path("/tmp/r"), 0, 1e-3, ["--x", "1"], {command: old})
    assert got == old and got is not old
    rec = _record()
    rec["runs"].append(got)
    rec["reused_commands"] = ["python -m experiments.rnode.run --old"]
    md = experiments_module("rnode.report").render(rec, experiments_module("common").provenance)
    assert "Runs taken from `old.json` (identical commands, not trained again" in md and "mnist λ=0.001 seed 0" in md
    assert "python -m experiments.rnode.run --old   # runs reused from this earlier record" in md


@pytest.mark.parametrize(("args", "message"), [
    (["--mnist-grid", "0.1"], "add --mnist to run them"),
    (["--mnist-lambda", "0.1"], "add --mnist to run them"),
    (["--reuse", "{broken}"], "is not an RNODE record"),
    (["--reuse", "{list}"], "is not an RNODE record"),
    (["--reuse", "{missing}"], "no record at"),
])
def test_run_refuses_flags_it_would_ignore_or_cannot_read(tmp_path, capsys, args, message):
    """Refused before any training: MNIST settings without --mnist, a --reuse file that is no record."""
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "list.json").write_text("[1, 2]")
    names = {"broken": tmp_path / "broken.json", "list": tmp_path / "list.json", "missing": tmp_path / "no.json"}
    with pytest.raises(SystemExit) as info:
        experiments_module("rnode.run").main(["--smoke", "--out", str(tmp_path / "out"), "--root",
                                              str(tmp_path / "runs"), *[a.format(**names) for a in args]])
    assert info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()


#: Fake MNIST figures per λ (validation, test, NFE): 3e-4 meets the goal on validation, 1e-3 costs 1 point.
_FAKE_MNIST = {0.0: (0.970, 0.972, 32.0), 1e-4: (0.971, 0.973, 26.0), 3e-4: (0.969, 0.974, 20.0),
               1e-3: (0.960, 0.975, 16.0), 0.01: (0.83, 0.83, 10.0)}


@pytest.mark.parametrize(("flags", "arms", "lam", "source"), [
    ([], [0.0, 1e-4, 3e-4, 1e-3], 3e-4, "mnist validation"),  # the default: MNIST's grid, MNIST's validation
    (["--mnist-grid", "0.0001", "0.01"], [0.0, 1e-4, 0.01], None, "mnist validation"),  # no λ meets the rule
    (["--mnist-lambda", "0.01"], [0.0, 0.01], 0.01, "--mnist-lambda"),  # one λ, no choice
])
def test_mnist_lambda_is_chosen_on_mnist_validation_unless_set(tmp_path, monkeypatch, flags, arms, lam, source):
    """--mnist alone trains MNIST_GRID and chooses on MNIST's validation (not the digits' λ, whose scale differs)."""
    run = experiments_module("rnode.run")
    trained: list[tuple[str, float]] = []

    def fake(dataset, config, root, seed, lam_, extra, reuse=None):
        trained.append((dataset, lam_))
        if dataset == "digits":
            return _run("digits", lam_, seed, 0.96 - lam_, 0.97, 26.0 if lam_ == 0 else 14.0)
        val, test, nfe = _FAKE_MNIST[lam_]
        return _run("mnist", lam_, seed, val, test, nfe)

    monkeypatch.setattr(run, "one_run", fake)
    rec = run.main(["--mnist", "--grid", "0.01", "--seeds", "0", "--out", str(tmp_path), "--root", str(tmp_path),
                    *flags])
    assert [lam_ for ds, lam_ in trained if ds == "mnist"] == arms
    assert rec["mnist"]["lambda"] == lam and rec["mnist"]["lambda_from"] == source
    assert run.MNIST_GRID == (1e-4, 3e-4, 1e-3)


def test_a_record_kept_under_another_name_names_its_own_file():
    report = experiments_module("rnode.report")
    prov = experiments_module("common").provenance
    assert "Raw record: `rnode.json`." in report.render(_record(), prov)
    assert "Raw record: `rnode_mnist5.json`." in report.render(_record(), prov, "rnode_mnist5")
