"""A neural-ODE classifier of two moons in ten lines, then the same by the `cdflow fit` command."""
import os
import subprocess
import sys

import torch

from cdflow import ContinuousDepth, Convection, MLPVelocity, SolverSpec
from cdflow.data import make_moons

torch.manual_seed(0)
x, y = make_moons(n_per_class=250, noise=0.1, seed=0)                     # x [500, 2], y [500]
flow = ContinuousDepth([Convection(MLPVelocity(dim=2, width=32, depth=2, activation="tanh"))],
                       SolverSpec(method="dopri5", rtol=1e-3, atol=1e-4, t1=1.0))  # dx/dt = v_θ(t, x)
model = torch.nn.Sequential(flow, torch.nn.Linear(2, 2))                   # prediction = head(x(T))
opt = torch.optim.Adam(model.parameters(), lr=1e-2)
for _ in range(150):
    loss = torch.nn.functional.cross_entropy(model(x), y)
    opt.zero_grad(); loss.backward(); opt.step()                          # noqa: E702
print(f"loss {loss.item():.3f}  train accuracy {(model(x).argmax(1) == y).float().mean().item():.3f}")
print("last solve:", flow.stats)

# Solver swaps: the same trained flow under other methods of torchdiffeq (no retraining).
for spec in [SolverSpec(method="rk4", step_size=0.1), SolverSpec(method="euler", step_size=0.05),
             SolverSpec(method="bosh3", rtol=1e-5, atol=1e-6)]:
    flow.solver = spec
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    print(f"{spec.method:>6}: accuracy {acc:.3f}, nfe_forward {flow.stats.nfe_forward}")

# The same model by the command line (experiments/configs/moons.yaml), with a solver swap, 2 epochs only.
config = os.path.join(os.environ.get("CDFLOW_REPO", os.getcwd()), "experiments/configs/moons.yaml")
cmd = ["cdflow", "fit", "--config", config, "--model.solver.method", "rk4", "--model.solver.step_size", "0.25",
       "--trainer.max_epochs", "2", "--trainer.enable_progress_bar", "false", "--trainer.logger", "false",
       "--trainer.default_root_dir", "runs/moons"]
print("$", " ".join(cmd[:2] + ["--config", "experiments/configs/moons.yaml"] + cmd[4:]))
cli = [os.path.join(os.path.dirname(sys.executable), "cdflow")] + cmd[1:]   # the venv's cdflow
out = subprocess.run(cli, capture_output=True, text=True)
print("\n".join(out.stdout.strip().splitlines()[-12:]))
if out.returncode != 0:
    sys.exit(out.stderr[-3000:])

# The run's figures (written by the figure callbacks) appear below on this page.
figures = os.environ.get("CDFLOW_DOCS_FIGURES")
if figures:
    import shutil
    for name in ("decision_boundary.png", "trajectories.png"):
        src = os.path.join("runs/moons/figures", name)
        if os.path.exists(src):
            shutil.copy(src, os.path.join(figures, name))
