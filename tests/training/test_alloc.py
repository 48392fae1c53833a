"""keep_freed_memory: freed tensors stay in the heap, so the next epoch's tensors are not page-faulted in again."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import resource, sys
    import torch
    from cdflow.training.alloc import keep_freed_memory
    if sys.argv[1] == "keep":
        assert keep_freed_memory()

    def epoch():  # what a training epoch does: many large temporaries, all freed at its end
        ts = [torch.empty(2**20).fill_(1.0) for _ in range(40)]  # 40 tensors of 4 MiB
        del ts
    epoch()
    epoch()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        epoch()
    print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 5)
    """
)


def _python(script: str, *args: str) -> str:
    out = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, check=True, cwd=ROOT)
    return out.stdout.strip()


def _faults_per_epoch(mode: str) -> int:
    return int(_python(SCRIPT, mode))


def test_freed_tensors_are_reused_without_page_faults():
    pages = 40 * 2**20 * 4 // 4096  # 40,960 pages of 4 KiB touched per epoch
    assert _faults_per_epoch("keep") < pages // 100


def test_trim_threshold_fits_mallopts_c_int():
    """ctypes truncates a Python int to the C int without a word: 2³⁶ became 0, the worst threshold."""
    check = ("import ctypes\nfrom cdflow.training.alloc import TRIM_THRESHOLD as t\n"
             "print(ctypes.c_int(t).value == t > 2**30)")
    assert _python(check) == "True"
