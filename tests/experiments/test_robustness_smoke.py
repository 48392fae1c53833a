"""`python -m experiments.robustness.run --smoke` writes well-formed results, and the PGD attack stays in its
ε-ball and in [0, 1]."""

import json
import math

import pytest
import torch
from smoke_runner import experiments_module, run_smoke


def test_robustness_smoke_outputs_are_well_formed(tmp_path):
    run_smoke("experiments.robustness.run", tmp_path, timeout=180)
    payload = json.loads((tmp_path / "robustness_smoke.json").read_text())
    assert {"mode", "seeds", "command", "machine", "wall_s", "settings", "hparams", "summary", "runs"} <= set(payload)
    assert {"cpu", "cores", "torch", "torch_threads", "loadavg"} <= set(payload["machine"])
    s = payload["settings"]
    models = {r["model"] for r in payload["runs"]}
    assert models == {"ode", "sde_s0.5", "sde_s0.5_mean_field"}
    for r in payload["runs"]:
        keys = {"clean", *(f"noise_{v:g}" for v in s["noise_sigmas"])}
        modes = s["paths"] if r["model"] == "sde_s0.5" else ["det"]
        keys |= {f"pgd_{e:g}_{m}" for e in s["eps"] for m in modes}
        assert set(r["acc"]) == keys
        assert all(0.0 <= v <= 1.0 and math.isfinite(v) for v in r["acc"].values())
        if r["model"] in ("ode", "sde_s0.5"):
            assert all(math.isfinite(v) for v in r["epoch_loss"]) and r["nfe_forward_per_step"] >= 10
    md = (tmp_path / "robustness_smoke.md").read_text()
    assert "python -m experiments.robustness.run --smoke" in md and "| neural ODE (MLP, Euler) |" in md
    assert "nan" not in md.lower()
    # values: one epoch learns MNIST far above chance (measured 0.775), PGD lowers every model's accuracy, and
    # the summary is the mean of the runs
    for r in payload["runs"]:
        clean = r["acc"]["clean"]
        assert clean > 0.5, r
        assert all(v < clean for k, v in r["acc"].items() if k.startswith("pgd_")), r
    for model, entry in payload["summary"].items():
        rs = [r for r in payload["runs"] if r["model"] == model]
        assert entry["n"] == len(rs)
        for key, mean in entry["mean"].items():
            assert mean == pytest.approx(sum(r["acc"][key] for r in rs) / len(rs))


def test_pgd_stays_in_the_ball_and_raises_the_loss():
    attacks = experiments_module("robustness.attacks")
    gaussian_noise, pgd_linf = attacks.gaussian_noise, attacks.pgd_linf
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 3))
    x, y = torch.rand(16, 6), torch.randint(0, 3, (16,))
    gen = torch.Generator().manual_seed(0)
    x_adv = pgd_linf(model, x, y, eps=0.1, steps=10, generator=gen)
    assert float((x_adv - x).abs().max()) <= 0.1 + 1e-6 and 0.0 <= float(x_adv.min()) and float(x_adv.max()) <= 1.0
    loss = torch.nn.functional.cross_entropy
    with torch.no_grad():
        assert float(loss(model(x_adv), y)) > float(loss(model(x), y))
    noisy = gaussian_noise(x, 0.3, torch.Generator().manual_seed(1))
    assert 0.0 <= float(noisy.min()) and float(noisy.max()) <= 1.0 and not torch.equal(noisy, x)


def test_normalisation_constants_match_the_data_module():
    from cdflow.data.modules import MNIST_STATS

    models = experiments_module("robustness.models")
    assert (models.MEAN, models.STD) == MNIST_STATS["mnist"]
