"""DDP on 2 CPU processes (gloo) trains exactly like one process on the concatenated batch.

``ddp_worker.py`` runs every case on two ranks (torchrun-style environment); the single-process reference
is trained here, in float64, on the concatenation of the two ranks' recorded batches from the same initial
weights. Also checked: epoch-level metrics are reduced over ranks, graph diffusion with
``graph.gather=true`` spans the global batch (and per-rank graphs do not), SDE noise is seeded per rank,
and the ``cdflow`` CLI runs with ``--trainer.strategy ddp --trainer.devices 2``.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from cdflow.training.distributed import fold_rank, rank_seed

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
TOL = 1e-12  # float64; the observed differences are ~1e-16


def _worker():
    spec = importlib.util.spec_from_file_location("ddp_worker", HERE / "ddp_worker.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "PYTHONWARNINGS": "ignore", **extra}
    if Path("/sys/class/net/lo").exists():  # gloo on the loopback interface: no network needed
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "MASTER_PORT", "SLURM_PROCID", "SLURM_NTASKS"):
        if key not in extra:  # nothing of an enclosing launcher may leak into the workers
            env.pop(key, None)
    return env


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> dict[str, list[dict]]:
    """Launch the two ranks once (all cases) and load what each rank recorded."""
    out = tmp_path_factory.mktemp("ddp")
    port = str(_free_port())
    procs = []
    for rank in (0, 1):
        env = _env(MASTER_ADDR="127.0.0.1", MASTER_PORT=port, WORLD_SIZE="2", RANK=str(rank),
                   LOCAL_RANK=str(rank), NODE_RANK="0", WANDB_MODE="disabled")
        log = open(out / f"rank{rank}.log", "w")  # noqa: SIM115 — closed below
        procs.append((subprocess.Popen([sys.executable, str(HERE / "ddp_worker.py"), str(out)], env=env,
                                       stdout=log, stderr=subprocess.STDOUT, cwd=REPO), log))
    try:
        codes = [proc.wait(timeout=240) for proc, _ in procs]
    finally:
        for proc, log in procs:
            if proc.poll() is None:
                proc.kill()
            log.close()
    if any(codes):
        logs = "\n".join((out / f"rank{r}.log").read_text()[-3000:] for r in (0, 1))
        pytest.fail(f"DDP workers exited with {codes}:\n{logs}")
    cases = ("plain", "gather", "pergraph", "noise")
    return {c: [torch.load(out / f"{c}_rank{r}.pt", weights_only=False) for r in (0, 1)] for c in cases}


class _Grads(L.Callback):
    def __init__(self) -> None:
        self.grads: list[dict[str, torch.Tensor]] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.grads.append({n: p.grad.detach().clone() for n, p in pl_module.named_parameters() if p.grad is not None})


def _single_process(case: str, recs: list[dict]) -> tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Final weights and per-step gradients of one process trained on the concatenated batches."""
    worker = _worker()
    model = worker.build_model(case)
    model.load_state_dict(recs[0]["initial"])
    batches = [[torch.cat(parts) for parts in zip(*steps, strict=True)]
               for steps in zip(recs[0]["batches"], recs[1]["batches"], strict=True)]
    grads = _Grads()
    trainer = L.Trainer(accelerator="cpu", devices=1, precision="64-true", max_steps=worker.STEPS, limit_val_batches=0,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[grads])
    trainer.fit(model, train_dataloaders=DataLoader(batches, batch_size=None))
    return {k: v.detach() for k, v in model.state_dict().items()}, grads.grads


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point())


@pytest.mark.parametrize("case", ["plain", "gather"])
def test_ddp_equals_one_process_on_the_concatenated_batch(records, case):
    recs = records[case]
    assert [r["world_size"] for r in recs] == [2, 2] and [r["rank"] for r in recs] == [0, 1]
    assert not torch.equal(recs[0]["batches"][0][0], recs[1]["batches"][0][0])  # the ranks saw different data
    assert recs[0]["batches"][0][0].dtype == torch.float64
    final, grads = _single_process(case, recs)
    assert len(grads) == len(recs[0]["grads"]) == 3
    grad_diff = max(_max_diff(g, h) for g, h in zip(grads, recs[0]["grads"], strict=True))
    param_diff = max(_max_diff(final, r["final"]) for r in recs)
    print(f"{case}: max |Δgrad| = {grad_diff:.3g}, max |Δparam| = {param_diff:.3g}")
    assert grad_diff < TOL and param_diff < TOL
    assert _max_diff(recs[0]["final"], recs[0]["initial"]) > 1e-3  # it did train


def test_per_rank_graphs_differ_from_the_global_batch(records):
    """Without gather each rank's kNN graph spans its own 16 points only: the documented default."""
    recs = records["pergraph"]
    final, grads = _single_process("pergraph", recs)
    assert max(_max_diff(g, h) for g, h in zip(grads, recs[0]["grads"], strict=True)) > 1e-4
    assert _max_diff(final, recs[0]["final"]) > 1e-4


def test_epoch_metrics_are_reduced_over_ranks(records):
    r0, r1 = records["plain"]
    n = r0["val_n"] + r1["val_n"]
    global_loss = (r0["val_sum"] + r1["val_sum"]) / n
    global_acc = (r0["val_correct"] + r1["val_correct"]) / n
    for rec in (r0, r1):
        assert rec["logged"]["val/loss"] == pytest.approx(global_loss, abs=1e-12)
        assert rec["logged"]["val/acc"] == pytest.approx(global_acc, abs=1e-12)
    assert r0["val_sum"] / r0["val_n"] != pytest.approx(r1["val_sum"] / r1["val_n"])  # local values differ
    assert r0["logged"]["train/acc"] == r1["logged"]["train/acc"]


def test_sde_noise_is_seeded_per_rank_and_reproducible(records):
    r0, r1 = records["noise"]
    assert r0["seed"] == 7 and r1["seed"] == rank_seed(7, 1) != 7
    assert float((r0["noise_probe"] - r1["noise_probe"]).abs().max()) > 1e-3  # different Brownian paths
    worker = _worker()
    for rank, rec in ((0, r0), (1, r1)):  # each rank's paths are a function of (seed, rank) alone
        model = worker.build_model("noise").double()
        model.load_state_dict(rec["initial"])
        fold_rank(model.net, rank)
        with torch.no_grad():
            again = model.net.train()(worker.probe_input())
        torch.testing.assert_close(again, rec["noise_probe"], rtol=0, atol=1e-14)


def test_fold_rank_is_idempotent_and_keeps_rank_zero():
    worker = _worker()
    net = worker.build_model("noise").net
    assert fold_rank(net, 3) == [net] and net.seed == rank_seed(7, 3)
    fold_rank(net, 3)
    assert net.seed == rank_seed(7, 3)  # not folded twice
    fold_rank(net, 0)
    assert net.seed == 7


def test_cli_fit_with_ddp_strategy(tmp_path):
    """``cdflow fit --trainer.strategy ddp --trainer.devices 2``: Lightning launches rank 1 itself."""
    root = tmp_path / "run"
    cmd = [sys.executable, "-m", "cdflow.cli", "fit", "--config", str(REPO / "experiments" / "configs" / "moons.yaml"),
           "--trainer.default_root_dir", str(root), "--trainer.accelerator", "cpu", "--trainer.strategy", "ddp",
           "--trainer.devices", "2", "--trainer.num_nodes", "1", "--trainer.max_epochs", "1",
           "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
           "--trainer.limit_test_batches", "1",
           "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
           "--model.width", "8", "--model.solver.method", "rk4", "--model.solver.step_size", "0.5",
           "--trainer.callbacks", "[]"]
    env = _env(WANDB_MODE="offline", WANDB_SILENT="true", MASTER_PORT=str(_free_port()))
    done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "distributed_backend=gloo" in done.stderr + done.stdout
    assert "Starting with 2 processes" in done.stderr + done.stdout
    assert done.stdout.count("cdflow run summary") == 1  # printed by rank 0 only
    assert (root / "checkpoints" / "last.ckpt").is_file()
    assert len(list((root / "wandb").glob("offline-run-*"))) == 1  # one W&B run, not one per rank
