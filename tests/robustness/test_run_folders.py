"""Run folders are safe: a new run never overwrites another's files, one folder has one writer (a lock),
temporary checkpoint files are per process, and a folder that cannot be written stops the run at once."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
import yaml

import cdflow.training.run_folder as rf
from cdflow.cli import run_cli
from cdflow.errors import CdflowError, RunFolderError, RunFolderInUse
from cdflow.training.atomic_checkpoint import atomic_torch_save

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CONFIGS = REPO / "experiments" / "configs"


def _args(root: Path, *extra: str, hidden: int = 8, epochs: int = 1) -> list[str]:
    return [
        "fit", "--config", str(CONFIGS / "digits.yaml"), "--trainer.default_root_dir", str(root),
        "--trainer.max_epochs", str(epochs), "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--model.hidden", str(hidden), "--model.width", "8", "--model.solver.method", "euler",
        "--model.solver.step_size", "0.5", "--trainer.callbacks", "[]", "--test_after_fit", "false", *extra,
    ]


@pytest.fixture
def csv_logging(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setattr(sys, "argv", ["cdflow"])


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _consistent(folder: Path) -> dict:
    """The run in `folder`: its config.yaml and its last.ckpt describe the same run (hidden size, epochs)."""
    configs = sorted(folder.glob("csv/version_*/config.yaml")) or [folder / "config.yaml"]
    config = yaml.safe_load(configs[-1].read_text())
    ckpt = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert config["trainer"]["default_root_dir"] == str(folder)
    assert ckpt["hyper_parameters"]["hidden"] == config["model"]["hidden"], folder
    assert ckpt["global_step"] == 2 * config["trainer"]["max_epochs"], folder  # 2 batches an epoch
    return {"hidden": config["model"]["hidden"], "epochs": config["trainer"]["max_epochs"]}


def test_three_runs_get_three_folders_and_ckpt_path_last_resumes_the_newest(tmp_path, csv_logging, capsys):
    root = tmp_path / "runs"
    run_cli(_args(root, hidden=8))
    first = (root / "checkpoints" / "last.ckpt").read_bytes()
    run_cli(_args(root, hidden=12))
    run_cli(_args(root, hidden=16))
    out = capsys.readouterr().out
    assert f"cdflow: run folder {root / 'version_2'} ({root} holds earlier runs)" in out
    assert (root / "checkpoints" / "last.ckpt").read_bytes() == first  # the first run's files are untouched
    assert [_consistent(f)["hidden"] for f in (root, root / "version_1", root / "version_2")] == [8, 12, 16]
    assert not list(root.rglob(rf.LOCK_NAME))  # released

    resumed = run_cli(_args(root, "--ckpt_path", "last", hidden=16, epochs=2))
    assert f"resuming from {root / 'version_2' / 'checkpoints' / 'last.ckpt'}" in capsys.readouterr().out
    assert resumed.trainer.global_step == 4 and resumed.trainer.default_root_dir == str(root / "version_2")
    assert _consistent(root / "version_2") == {"hidden": 16, "epochs": 2}  # config.yaml rewritten with the run
    assert sorted(rf.versions(root)) == [1, 2]


def test_a_resume_into_a_folder_another_run_writes_is_refused(tmp_path, csv_logging, capsys):
    root = tmp_path / "runs"
    (root / "checkpoints").mkdir(parents=True)
    torch.save({"hyper_parameters": {}}, root / "checkpoints" / "last.ckpt")  # of a run still going
    with rf.RunLock.acquire(root), pytest.raises(SystemExit) as info:
        run_cli(_args(root, "--ckpt_path", str(root / "checkpoints" / "last.ckpt")))
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert f"cdflow: error: RunFolderInUse: the run folder {root} is in use by another cdflow run (PID {os.getpid()}" \
        in err
    assert "Wait for that run to finish" in err and "--trainer.default_root_dir" in err and "remove" in err
    assert "Traceback" not in err
    assert sorted(p.name for p in root.iterdir()) == ["checkpoints"]  # nothing written, the lock released


def test_lock_refuses_a_second_holder_and_takes_over_a_stale_one(tmp_path, capsys):
    with rf.RunLock.acquire(tmp_path) as lock:
        assert (tmp_path / rf.LOCK_NAME).read_text() == f"{os.getpid()}\n"
        assert rf.RunLock.try_acquire(tmp_path) is None
        with pytest.raises(RunFolderInUse, match=f"PID {os.getpid()}") as info:
            rf.RunLock.acquire(tmp_path)
        assert isinstance(info.value, CdflowError)
    assert not lock.held and not (tmp_path / rf.LOCK_NAME).exists()

    dead = _dead_pid()
    (tmp_path / rf.LOCK_NAME).write_text(f"{dead}\n")  # left by a killed run: the file, but no lock on it
    with rf.RunLock.acquire(tmp_path) as lock:
        assert lock.stale_pid == dead and (tmp_path / rf.LOCK_NAME).read_text() == f"{os.getpid()}\n"
    assert f"taking over the stale lock of {tmp_path} (left by PID {dead}, which is no longer running)" in \
        capsys.readouterr().err


def test_runs_starting_at_the_same_moment_get_distinct_folders(tmp_path):
    root = tmp_path / "runs"
    claimed: list[rf.RunFolder] = []
    start = threading.Barrier(6)

    def claim() -> None:
        start.wait()
        claimed.append(rf.claim_run_folder(root))

    threads = [threading.Thread(target=claim) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    paths = sorted(str(c.path.relative_to(root)) for c in claimed)
    assert paths == [".", "version_1", "version_2", "version_3", "version_4", "version_5"]
    for c in sorted(claimed, key=lambda c: str(c.path), reverse=True):
        c.release()
    assert not root.exists() or not list(root.iterdir())  # nothing written: the folders made for them are gone


def test_two_fits_started_together_into_one_folder_each_keep_their_own_files(tmp_path):
    """Two `cdflow fit` processes, same --trainer.default_root_dir, started at the same moment: each ends in a
    folder of its own whose config.yaml describes its checkpoints. The first logs to W&B (offline) without
    WANDB_SILENT, as a user's shell would: cdflow keeps W&B quiet (no run history) all the same."""
    root = tmp_path / "runs"
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SILENT"}
    env.update(OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", HOME=str(tmp_path))
    procs = [subprocess.Popen([sys.executable, "-m", "cdflow.cli", *_args(root, hidden=hidden, epochs=epochs)],
                              env={**env, "WANDB_MODE": mode}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, cwd=tmp_path)
             for hidden, epochs, mode in ((8, 1, "offline"), (16, 2, "disabled"))]
    outputs = [p.communicate(timeout=240) for p in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0 and "Traceback" not in err, err[-3000:]
        assert "Run history" not in out + err and "wandb:" not in out + err, (out + err)[-3000:]
    assert "W&B offline run" in outputs[0][0]  # it did log to W&B
    folders = [f for f in rf.run_folders(root) if (f / "checkpoints").is_dir()]
    assert [f.name for f in folders] == [root.name, "version_1"]
    assert sorted(_consistent(f)["hidden"] for f in folders) == [8, 16]  # each config.yaml is its checkpoints'
    assert not list(root.rglob(".last.ckpt.*.tmp")) and not list(root.rglob(rf.LOCK_NAME))


def test_a_ddp_worker_writes_where_its_rank_0_does(tmp_path):
    """Workers claim nothing: the folder of rank 0 (from the environment), ``last`` resolved to the same file."""
    root = tmp_path / "runs"
    for age, folder in enumerate((root / "version_1", root)):
        (folder / "checkpoints").mkdir(parents=True)
        torch.save({}, folder / "checkpoints" / "last.ckpt")
        os.utime(folder / "checkpoints" / "last.ckpt", (1e9 - age, 1e9 - age))  # version_1's is the newest
    newest = str(root / "version_1" / "checkpoints" / "last.ckpt")
    assert rf.worker_run_folder(root, "last") == (root / "version_1", newest)
    assert rf.worker_run_folder(root, None, claimed=root / "version_2") == (root / "version_2", None)
    assert rf.worker_run_folder(root, None) == (root, None)  # rank 0 broadcasts the checkpoint folder
    assert not list(root.rglob(rf.LOCK_NAME))


@pytest.mark.parametrize("layout", ["below a file", "is a file"])
def test_a_folder_that_cannot_be_written_stops_before_anything_starts(tmp_path, monkeypatch, capsys, layout):
    monkeypatch.setenv("WANDB_MODE", "offline")  # the W&B fallback notice must not appear either
    monkeypatch.setattr(sys, "argv", ["cdflow"])
    blocker = tmp_path / "notes.txt"
    blocker.write_text("not a folder")
    root = blocker / "run" if layout == "below a file" else blocker
    with pytest.raises(SystemExit) as info:
        run_cli(_args(root))
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert f"cdflow: error: RunFolderError: cannot write the run folder {root}: {blocker} is a file, not a folder; " \
           "choose another folder with --trainer.default_root_dir DIR" in err
    assert "Traceback" not in err and "W&B could not start" not in err
    assert blocker.read_text() == "not a folder"


def test_a_folder_without_write_permission_names_the_fix(tmp_path, monkeypatch):
    """Simulated with `os.access` (as root, chmod does not stop writes)."""
    real_access = os.access
    monkeypatch.setattr(rf.os, "access", lambda p, mode: False if Path(p) == tmp_path / "ro" else real_access(p, mode))
    (tmp_path / "ro").mkdir()
    with pytest.raises(RunFolderError, match=r"no permission to write in .*/ro; .* or make it writable \(chmod u\+w "):
        rf.claim_run_folder(tmp_path / "ro")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_refused(tmp_path):
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o555)
    try:
        with pytest.raises(RunFolderError, match="no permission to write in"):
            rf.claim_run_folder(tmp_path / "ro" / "run")
    finally:
        (tmp_path / "ro").chmod(0o755)


def test_temporary_files_are_per_process_and_only_strays_of_gone_processes_are_removed(tmp_path):
    target = tmp_path / "last.ckpt"
    live = tmp_path / f".last.ckpt.{os.getppid()}.abc.tmp"  # another process, still writing
    gone = tmp_path / f".last.ckpt.{_dead_pid()}.def.tmp"
    for tmp in (live, gone):
        tmp.write_bytes(b"half a checkpoint")
    seen: list[str] = []
    real_save = torch.save

    def spy(obj, handle, *args, **kwargs):
        seen.extend(p.name for p in tmp_path.glob(".last.ckpt.*.tmp") if p not in (live, gone))
        real_save(obj, handle, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch, "save", spy)
        atomic_torch_save({"step": 1}, target)
    assert len(seen) == 1 and seen[0].startswith(f".last.ckpt.{os.getpid()}.")  # this process's own
    assert live.exists() and not gone.exists()
    assert torch.load(target)["step"] == 1
