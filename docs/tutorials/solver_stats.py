"""Reading the solver statistics (NFE, steps, adjoint) and the offline W&B run of a `cdflow fit`."""
import glob
import os
import subprocess
import sys

import torch

from cdflow import ContinuousDepth, Convection, MLPVelocity, SolverSpec
from cdflow.training import read_offline_run

torch.manual_seed(0)
x = torch.randn(256, 8)
v = MLPVelocity(dim=8, width=32, depth=2, activation="tanh")
print(f"{'method':<8} {'adjoint':<20} {'nfe_fwd':>7} {'nfe_bwd':>7} {'steps':>5} {'acc/rej':>7} {'bwd steps':>9}")
for spec in [SolverSpec(method="rk4", step_size=0.25),
             SolverSpec(method="dopri5", rtol=1e-5, atol=1e-6),
             SolverSpec(method="dopri5", rtol=1e-5, atol=1e-6, adjoint="backsolve"),
             SolverSpec(method="dopri5", rtol=1e-5, atol=1e-6, adjoint="backsolve", seminorm=True)]:
    block = ContinuousDepth([Convection(v)], spec)
    block(x).pow(2).sum().backward()                       # the backward counts fill in during backward()
    s = block.stats
    adj = spec.adjoint + (" + seminorm" if spec.seminorm else "")
    acc = "-" if s.steps_accepted is None else f"{s.steps_accepted}/{s.steps_rejected}"
    print(f"{spec.method:<8} {adj:<20} {s.nfe_forward:>7} {s.nfe_backward:>7} {s.steps:>5} {acc:>7} "
          f"{s.backward_steps:>9}")
print("as logged:", block.stats.as_dict())

# A short `cdflow fit` logging to W&B offline (no account, no network), then its log read back without `wandb sync`.
repo = os.environ.get("CDFLOW_REPO", os.getcwd())
cmd = ["cdflow", "fit", "--config", "experiments/configs/moons.yaml", "--trainer.max_epochs", "3",
       "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", "runs/moons"]
print("\n$ WANDB_MODE=offline", " ".join(cmd))
cli = [os.path.join(os.path.dirname(sys.executable), "cdflow"), *cmd[1:]]
cli[3] = os.path.join(repo, cmd[3])
out = subprocess.run(cli, capture_output=True, text=True, env={**os.environ, "WANDB_MODE": "offline"})
if out.returncode != 0:
    sys.exit(out.stderr[-3000:])
folders = sorted(glob.glob("runs/moons/wandb/offline-run-*"))
print("offline runs:", [os.path.relpath(f, "runs/moons") for f in folders])
run = read_offline_run(folders[-1])
keys = sorted(k for k in run.summary if not k.startswith(("_", "figures/")))
print("summary keys:", keys)
print("val/acc per epoch:", [round(a, 3) for a in run.metric("val/acc")])
print("train/nfe_forward per logged step:", run.metric("train/nfe_forward")[:12])
print("solver config:", {k: v for k, v in (run.config.get("solver") or {}).items()
                         if k in ("method", "rtol", "atol", "adjoint")})
print(f"test/acc {run.summary['test/acc']:.3f}, test/nfe_forward {run.summary['test/nfe_forward']}")
