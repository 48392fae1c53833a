"""COIN and Diff-ResNet on Cora: the library loop with members, then `cdflow fit`. Few epochs, to stay fast."""
import os
import subprocess
import sys

import torch

from cdflow.data.modules import GraphDataModule
from cdflow.models import COIN, DiffResNet
from cdflow.models.layers import member_accuracy
from cdflow.training import MemberTraining, StoppingRule, fit_node_members

MAX_EPOCHS = 100       # the paper trains until early stopping (patience 50), typically a few hundred epochs

dm = GraphDataModule("cora", split="random", seed=0)               # reads $CDFLOW_DATA/gnn-benchmark/cora.npz
dm.setup()
b = dm.batch
x, graph, y = b["x"], b["graph"], b["y"]                             # x: a cdflow.sparse.SparseMatrix
idx = {k: b[f"{k}_mask"].nonzero().flatten() for k in ("train", "val", "test")}
print(f"Cora (largest connected component): {graph.num_nodes} nodes, {x.n_cols} features, "
      f"{len(idx['train'])} / {len(idx['val'])} / {len(idx['test'])} train / val / test nodes")
print("features:", x)

training = MemberTraining(lr=0.01, weight_decay=5e-4, max_epochs=MAX_EPOCHS, rule=StoppingRule(patience=50))
models = {
    # u⁰ = softmax(W₂(x + ReLU(W₁x + b₁)) + b₂), then 20 explicit steps u ← u − 0.35 L u
    "COIN (explicit, τ = 0.35)": COIN(1433, 7, members=5, tau=0.35, n_steps=20, integrator="explicit", seed=0),
    # the same diffusion time applied as exp(−7 L) by Krylov: no step-size bound
    "COIN (split, Krylov)": COIN(1433, 7, members=5, tau=0.35, n_steps=20, integrator="split", method="krylov",
                                 seed=0),
    # p = ReLU(W_in x), h⁰ = p + ReLU(W₁p + b₁), 20 × [dropout → h ← h − 0.25 L h], logits = W₂ h + b₂
    # (hidden=None is the reference code's F-wide network, 1433 × 1433: about 15× slower per epoch)
    "Diff-ResNet (hidden 64)": DiffResNet(1433, 7, members=5, hidden=64, tau=0.25, n_steps=20, dropout=0.25,
                                          seed=0),
}
for name, model in models.items():
    torch.manual_seed(0)
    fit, forward = fit_node_members(model, x, graph, y, idx["train"], idx["val"], training,
                                    deterministic=isinstance(model, COIN))
    model.eval()
    with torch.no_grad():
        acc = member_accuracy(forward(), y, idx["test"])            # [members]
    print(f"{name:<27} 5 members in {fit.wall_s:5.1f} s ({fit.epochs} epochs): "
          f"test accuracy {100 * acc.mean():.1f} ± {100 * acc.std():.1f}%")

# The same COIN by the command line (experiments/configs/coin_cora.yaml), here capped at 60 epochs.
cmd = ["cdflow", "fit", "--config", "experiments/configs/coin_cora.yaml", "--model.members", "5",
       "--trainer.max_epochs", "60", "--trainer.enable_progress_bar", "false", "--trainer.logger", "false",
       "--trainer.default_root_dir", "runs/coin_cora"]
print("$", " ".join(cmd))
repo = os.environ.get("CDFLOW_REPO", os.getcwd())
cli = [os.path.join(os.path.dirname(sys.executable), "cdflow")] + cmd[1:]
cli[cli.index("experiments/configs/coin_cora.yaml")] = os.path.join(repo, "experiments/configs/coin_cora.yaml")
out = subprocess.run(cli, capture_output=True, text=True)
print("\n".join(line for line in out.stdout.strip().splitlines() if not line.startswith(("┏", "┃", "┡", "└", "│ "))
                )[-2500:])
if out.returncode != 0:
    sys.exit(out.stderr[-3000:])
