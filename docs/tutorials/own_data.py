"""Your own data: a CSV table and a graph in an .npz, read by TabularDataModule / GraphFileDataModule."""
import csv
import os
import subprocess
import sys

import numpy as np
from sklearn.datasets import load_wine

from cdflow.data.graph_files import GraphFileDataModule
from cdflow.data.tabular import TabularDataModule

# A table: scikit-learn's wine data (bundled, no download) written as a CSV with named labels.
wine = load_wine()
with open("wine.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow([*wine.feature_names, "label"])
    for row, target in zip(wine.data, wine.target):
        w.writerow([*row, wine.target_names[target]])
dm = TabularDataModule("wine.csv", batch_size=32)            # label column "label"; 70/15/15 stratified split
print(f"wine.csv: {dm.num_features} features, {dm.num_classes} classes {dm.label_names}")

# A graph: a two-block stochastic block model with noisy features, as one .npz (x, y, edge_index).
rng = np.random.default_rng(0)
n, blocks = 200, 2
y = np.repeat(np.arange(blocks), n // blocks)
p = np.where(y[:, None] == y[None, :], 0.08, 0.005)
src, dst = np.nonzero(np.triu(rng.random((n, n)) < p, 1))
x = rng.normal(size=(n, 16)) + 0.3 * y[:, None]
np.savez("sbm.npz", x=x.astype(np.float32), y=y, edge_index=np.stack([src, dst]))
gdm = GraphFileDataModule("sbm.npz", train_per_class=10, val_per_class=20)
print(f"sbm.npz: {gdm.num_features} features, {gdm.num_classes} classes, {len(src)} undirected edges")

# Both by the command line (few epochs, to stay fast).
cdflow = os.path.join(os.path.dirname(sys.executable), "cdflow")
common = ["--trainer.enable_progress_bar", "false", "--trainer.logger", "false"]
for cmd in (["cdflow", "fit", "--data", "TabularDataModule", "--data.path", "wine.csv", "--trainer.max_epochs", "10"],
            ["cdflow", "fit", "--data", "GraphFileDataModule", "--data.path", "sbm.npz",
             "--model.diffusion.kind", "graph", "--model.solver.method", "rk4", "--model.solver.step_size", "0.25",
             "--trainer.max_epochs", "20"]):
    print("\n$", " ".join(cmd))
    out = subprocess.run([cdflow, *cmd[1:], *common, "--trainer.default_root_dir", f"runs/{cmd[3]}"],
                         capture_output=True, text=True)
    lines = out.stdout.strip().splitlines()
    print("\n".join(line for line in lines if line.startswith(("cdflow run", "  fit", "  test", "graph", "data"))))
    if out.returncode != 0:
        sys.exit(out.stderr[-3000:])
