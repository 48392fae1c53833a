"""What the experiment smoke tests share: running a runner as CI does, and importing `experiments` modules.

Imported as `smoke_runner` (pytest puts this folder on sys.path, as for tests/robustness/flaky_net.py).
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def run_smoke(module: str, out: Path, timeout: float = 300, **env: str) -> None:
    """`python -m <module> --smoke --out <out>` from the repository root (as CI and `make` run it), one quiet
    thread; extra environment variables as keywords. Fails with the tail of its output if it fails."""
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE", **env)
    cmd = [sys.executable, "-m", module, "--smoke", "--out", str(out)]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def experiments_module(name: str) -> ModuleType:
    """Import experiments.<name> from the repository root (the tests folder also has an `experiments`)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    pkg = sys.modules.get("experiments")
    if pkg is not None and getattr(pkg, "__file__", None) is None:  # the tests' namespace package
        del sys.modules["experiments"]
    return importlib.import_module(f"experiments.{name}")
