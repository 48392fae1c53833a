"""W&B misconfigured, unreachable or failing mid-run never stops training (CSV fallback, or W&B switched off
with one warning), and an offline run holds the ``.wandb`` file that ``wandb sync`` uploads later.

(`wandb.init` raising is covered in ``tests/training/test_wandb_logging.py``.)
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import wandb
from lightning.pytorch.loggers import CSVLogger

from cdflow.cli import run_cli
from cdflow.training.loggers import make_logger
from cdflow.training.safe_wandb import SafeWandbLogger
from cdflow.training.wandb_preflight import server_address, unreachable_reason

CONFIGS = Path(__file__).resolve().parents[2] / "experiments" / "configs"
FAKE_KEY = "0123456789abcdef" * 2 + "01234567"  # 40 characters, like a real key


@pytest.fixture(autouse=True)
def _isolated_wandb(monkeypatch, tmp_path):
    """No credentials, no ~/.netrc, no W&B environment of the machine; any run is finished afterwards."""
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL", "WANDB_INIT_TIMEOUT", "HTTPS_PROXY", "https_proxy",
                "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(sys, "argv", ["cdflow"])
    yield
    if wandb.run is not None:
        wandb.finish()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens there once the socket is closed


def _moons(root: Path, *extra: str) -> list[str]:
    return ["fit", "--config", str(CONFIGS / "moons.yaml"), "--trainer.default_root_dir", str(root),
            "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
            "--trainer.limit_test_batches", "1", "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false", "--trainer.callbacks", "[]", "--model.width", "8",
            "--model.solver.method", "rk4", "--model.solver.step_size", "0.5", *extra]


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("cdflow.training")]


def test_a_bad_wandb_mode_falls_back_to_csv_and_trains(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("WANDB_MODE", "bogus")
    with caplog.at_level(logging.WARNING):
        cli = run_cli(_moons(tmp_path / "run"))
    assert isinstance(cli.trainer.logger, CSVLogger) and cli.trainer.global_step == 2
    msgs = _warnings(caplog)
    assert len(msgs) == 1 and "W&B could not start" in msgs[0] and "mode" in msgs[0] and "bogus" in msgs[0]
    assert "test/acc" in (tmp_path / "run" / "csv" / "version_0" / "metrics.csv").read_text()


def test_an_unreachable_server_falls_back_within_seconds(tmp_path, monkeypatch, caplog):
    port = _closed_port()
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
    assert server_address() == ("127.0.0.1", port)
    start = time.perf_counter()
    with caplog.at_level(logging.WARNING):
        logger = make_logger(tmp_path / "run")
    elapsed = time.perf_counter() - start
    assert isinstance(logger, CSVLogger) and elapsed < 10  # W&B alone would wait ~100 s
    (msg,) = _warnings(caplog)
    assert f"cannot connect to the W&B server 127.0.0.1:{port}" in msg and "logging to CSV" in msg
    assert wandb.run is None


def test_the_preflight_passes_reachable_servers_and_proxies(monkeypatch):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert unreachable_reason(f"http://127.0.0.1:{server.getsockname()[1]}") is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    assert unreachable_reason(f"http://127.0.0.1:{_closed_port()}") is None  # through a proxy: W&B decides


def test_a_server_that_never_answers_is_bounded_by_init_timeout(tmp_path, monkeypatch, caplog):
    """Connections are accepted but never answered: W&B gives up after init_timeout (here 1 s)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []

    def accept_and_ignore() -> None:
        with contextlib.suppress(OSError):  # the socket is closed at the end of the test
            while True:
                accepted.append(server.accept()[0])

    threading.Thread(target=accept_and_ignore, daemon=True).start()
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{server.getsockname()[1]}")
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", "1")
    start = time.perf_counter()
    try:
        with caplog.at_level(logging.WARNING):
            logger = make_logger(tmp_path / "run")
    finally:
        server.close()
        for conn in accepted:
            conn.close()
    elapsed = time.perf_counter() - start
    print(f"never-answering server: fell back after {elapsed:.1f} s; {_warnings(caplog)}")
    assert isinstance(logger, CSVLogger) and elapsed < 15


def test_wandb_failing_mid_run_does_not_stop_training(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("WANDB_MODE", "offline")
    calls = {"n": 0}
    real_log = wandb.sdk.wandb_run.Run.log

    def flaky_log(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] >= 2:
            raise wandb.Error("the W&B service went away (simulated)")
        return real_log(self, *args, **kwargs)

    monkeypatch.setattr(wandb.sdk.wandb_run.Run, "log", flaky_log)
    root = tmp_path / "run"
    with caplog.at_level(logging.WARNING):
        cli = run_cli(_moons(root, "--trainer.max_epochs", "2"))
    assert isinstance(cli.trainer.logger, SafeWandbLogger) and cli.trainer.logger.failed
    assert cli.trainer.global_step == 4 and cli.test_results  # trained and tested to the end
    (msg,) = [m for m in _warnings(caplog) if "W&B log_metrics failed" in m]
    assert "simulated" in msg and "training goes on" in msg
    assert (root / "checkpoints" / "last.ckpt").is_file()


def test_an_offline_run_can_be_synced_later(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    root = tmp_path / "run"
    run_cli(_moons(root))
    (run_dir,) = (root / "wandb").glob("offline-run-*")
    (log,) = run_dir.glob("run-*.wandb")  # the transaction log that `wandb sync` uploads
    # wandb's service process writes the log; on a loaded machine it can land a moment after finish() returns
    deadline = time.monotonic() + 30
    while log.stat().st_size <= 1000 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert log.read_bytes()[:4] == b":W&B" and log.stat().st_size > 1000
    env = {**os.environ, "WANDB_SILENT": "false"}
    done = subprocess.run([sys.executable, "-m", "wandb", "sync", "--dry-run", str(run_dir)], env=env,
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Would sync 1 run(s)" in done.stdout + done.stderr and log.name in done.stdout + done.stderr
