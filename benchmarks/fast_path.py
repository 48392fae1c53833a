"""The paper's graph model through the framework's main path: `cdflow fit` against the library's plain loop.

Rows:

* **coin_cora_fit** — `cdflow fit --config experiments/configs/coin_cora.yaml` (Cora, random split of seed 0,
  COIN seed 0, the paper's rule), run as a user runs it (a fresh process, W&B off, CSV metrics), against the
  research loop: `cdflow.training.fit_node_members` on the same split, seed and rule, in a fresh process set up
  as the protocol runner sets up its workers. Milliseconds per epoch of each (cdflow: the mean of the
  `time/epoch_s` it logs, each epoch's wall time with its validation; loop: its wall time over its epochs; both
  include the first epoch, which builds the Laplacian), their per-round ratio (goal ≤ 1.5), the test
  accuracies (goal: equal within 0.5 points) and the whole command's wall time (goal < 15 s). The two are
  interleaved, `repeats` times each after one warm-up of each.
* **members** — `--model.members K` (K = 20; quick: 4) against K separate `cdflow fit` runs of members'
  seeds (`--model.model.init_args.seed k`), wall time of the whole commands, start-up included (goal ≥ 3×),
  and the largest difference between a member's test accuracy and its separate run's (goal ≤ 0.5 points).
  After one warm-up run, R runs of the K-member model (quick 2, full 3) are spread evenly among the K
  separate runs.

Goals are judged beyond the spread (benchmarks.common.Goal); quick mode's single round of the coin rows has no
spread, so its time rows are reported, not judged.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import Goal, Row, goal_row, median_spread, paired_ratio

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "experiments" / "configs" / "coin_cora.yaml"


def _cdflow(args: list[str], root: Path) -> dict:
    """Run `cdflow fit --config coin_cora.yaml ARGS` in a fresh process; its wall time, reported fit time and
    epochs, and its test metrics (from the run's CSV log)."""
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_WAIT_POLICY": "PASSIVE"}
    cmd = [str(Path(sys.executable).parent / "cdflow"), "fit", "--config", str(CONFIG),
           "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(root), *args]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"cdflow fit failed ({proc.returncode}): {proc.stderr[-2000:]}")
    fit_line = next(line for line in proc.stdout.splitlines() if line.strip().startswith("fit:"))
    words = fit_line.split()
    epochs, fit_s = int(words[1]), float(words[-2])
    rows = list(csv.DictReader(open(next(root.glob("csv/version_*/metrics.csv")))))
    epoch_s = [float(r["time/epoch_s"]) for r in rows if r.get("time/epoch_s")]
    test = next(r for r in reversed(rows) if r.get("test/acc"))
    accs = {k: float(v) for k, v in test.items() if k.startswith("test/acc_member") and v}
    return {"wall_s": wall, "fit_s": fit_s, "epochs": epochs, "epochs_s": sum(epoch_s), "timed_epochs": len(epoch_s),
            "test_acc": float(test["test/acc"]),
            "member_accs": [accs[k] for k in sorted(accs)] or [float(test["test/acc"])]}


def _research_loop() -> dict:
    """The library's loop in a fresh process set up as the protocol runner sets up its workers."""
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.fast_path", "--loop"], capture_output=True, text=True,
                          env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"the library loop failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _research_loop_here() -> dict:
    """The library's plain loop on the config's data, split, seed and rule (with `keep_freed_memory`, as the
    protocol runner's workers and `cdflow fit`)."""
    from cdflow.training.alloc import keep_freed_memory

    keep_freed_memory()
    from cdflow.data.modules import GraphDataModule
    from cdflow.models import COIN
    from cdflow.models.layers import member_accuracy
    from cdflow.training import MemberTraining, StoppingRule, fit_node_members

    dm = GraphDataModule("cora", split="random", seed=0)
    dm.setup()
    b = dm.batch
    x, graph, y = b["x"], b["graph"], b["y"]
    idx = {k: b[f"{k}_mask"].nonzero().flatten() for k in ("train", "val", "test")}
    model = COIN(1433, 7, tau=0.35, n_steps=20, integrator="explicit", seed=0)

    fit, forward = fit_node_members(model, x, graph, y, idx["train"], idx["val"],
                                    MemberTraining(lr=0.01, weight_decay=5e-4, rule=StoppingRule(patience=50)),
                                    deterministic=True)
    with torch.no_grad():
        test = float(member_accuracy(forward(), y, idx["test"])[0])
    return {"wall_s": fit.wall_s, "epochs": fit.epochs, "test_acc": test}


def _coin_rows(quick: bool) -> list[Row]:
    repeats = 1 if quick else 3
    fits, loops = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for rnd in range(repeats + 1):  # round 0 is the warm-up of both
            fit = _cdflow([], Path(tmp) / f"fit{rnd}")
            loop = _research_loop()
            if rnd > 0:
                fits.append(fit)
                loops.append(loop)
    fit_ms = [1e3 * f["epochs_s"] / f["timed_epochs"] for f in fits]
    loop_ms = [1e3 * r["wall_s"] / r["epochs"] for r in loops]
    ratio, spread, ratios = paired_ratio(fit_ms, loop_ms)
    gap = max(abs(f["test_acc"] - r["test_acc"]) for f, r in zip(fits, loops)) * 100
    walls = [f["wall_s"] for f in fits]
    wall, wall_spread = median_spread(walls)
    extra = {"cdflow_ms_per_epoch": fit_ms, "loop_ms_per_epoch": loop_ms, "ratios": ratios,
             "cdflow_epochs": [f["epochs"] for f in fits], "loop_epochs": [r["epochs"] for r in loops],
             "cdflow_test_acc": [f["test_acc"] for f in fits], "loop_test_acc": [r["test_acc"] for r in loops],
             "command_wall_s": walls, "threads": torch.get_num_threads(), "repeats": repeats}
    return [
        goal_row("fast_path", "cdflow fit coin_cora.yaml vs library loop, ms/epoch", "time ratio", ratio, "x",
                 spread, Goal("<=", 1.5, "x"), extra=extra),
        goal_row("fast_path", "cdflow fit coin_cora.yaml vs library loop, test accuracy", "largest gap", gap,
                 "points", 0.0, Goal("<=", 0.5, " points"), extra={**extra, "spread": "largest over the rounds"}),
        goal_row("fast_path", "cdflow fit coin_cora.yaml, whole command", "wall time", wall, "s", wall_spread,
                 Goal("<", 15.0, " s"), extra=extra),
    ]


def _member_rows(quick: bool) -> list[Row]:
    """K separate runs and R runs of `--model.members K`, the R spread evenly among the K, after a warm-up run.

    Speed-up = (sum of the K separate walls) / median together wall; its spread propagates the relative spreads
    of the together walls and of the sum (√K × the separate runs' spread)."""
    k, together_runs = (4, 2) if quick else (20, 3)
    at = {round(i * k / together_runs) for i in range(together_runs)}  # before these separate runs
    together, separate = [], []
    with tempfile.TemporaryDirectory() as tmp:
        _cdflow(["--model.model.init_args.seed", "0"], Path(tmp) / "warmup")
        for i in range(k):
            if i in at:
                together.append(_cdflow(["--model.members", str(k)], Path(tmp) / f"together{len(together)}"))
            separate.append(_cdflow(["--model.model.init_args.seed", str(i)], Path(tmp) / f"seed{i}"))
    sep_walls = [r["wall_s"] for r in separate]
    sep_sum = sum(sep_walls)
    t_wall, t_spread = median_spread([r["wall_s"] for r in together])
    sep_spread = median_spread(sep_walls)[1] * len(sep_walls) ** 0.5
    speedup = sep_sum / t_wall
    spread = speedup * ((t_spread / t_wall) ** 2 + (sep_spread / sep_sum) ** 2) ** 0.5
    gaps = [abs(a - r["test_acc"]) * 100 for run in together for a, r in zip(run["member_accs"], separate)]
    extra = {"together_wall_s": [r["wall_s"] for r in together], "separate_wall_s": sep_walls,
             "member_test_acc": [r["member_accs"] for r in together],
             "separate_test_acc": [r["test_acc"] for r in separate],
             "together_epochs": [r["epochs"] for r in together], "separate_epochs": [r["epochs"] for r in separate]}
    return [
        goal_row("fast_path", f"--model.members {k} vs {k} separate cdflow fit runs (start-up included)", "speed-up",
                 speedup, "x", spread, Goal(">=", 3.0, "x"), extra=extra),
        goal_row("fast_path", f"--model.members {k} vs separate runs, per-member test accuracy", "largest gap",
                 max(gaps), "points", 0.0, Goal("<=", 0.5, " points"),
                 extra={**extra, "spread": "largest over members and together runs"}),
    ]


def run(quick: bool, device: torch.device) -> list[Row]:
    if device.type != "cpu":
        return []  # the configs and the comparison are CPU runs; the GPU rows are the other benchmarks'
    return _coin_rows(quick) + _member_rows(quick)


if __name__ == "__main__" and sys.argv[1:] == ["--loop"]:
    print(json.dumps(_research_loop_here()))
