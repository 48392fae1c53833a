"""Peak memory of one measurement, taken in a process started for that measurement alone.

Every memory row of the suite is measured this way:

* the parent starts ``python -m benchmarks.<module> ARGS`` (`fresh_process`): a new interpreter, so nothing of
  the parent's memory is counted. (`getrusage(...).ru_maxrss` is not used: Linux carries the parent's peak into
  a forked or vforked child's ru_maxrss across exec, so every child reports at least the parent's peak.)
* the child imports, creates its data (and warms up), then opens a `PeakMeter`: freed heap is returned to the
  OS (malloc_trim), the kernel's peak resident set is reset (``/proc/self/clear_refs`` ← 5) and the baseline is
  read: VmHWM from /proc/self/status, i.e. the resident set of imports and data. After the measured work,
  `PeakMeter.stop` reads VmHWM again; the measured figure is the difference (peak − baseline).
* on CUDA the child reads torch.cuda.max_memory_allocated above memory_allocated at the baseline instead.

This module imports only the standard library, so a child that needs no torch (the tests' probes) starts in
milliseconds: ``python -m benchmarks.memory --probe square|linear N`` allocates N×N or N·10⁴ float64.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

METHOD = {
    "cpu": "VmHWM of a fresh `python -m` process: peak after the measured work minus the peak after imports and "
           "data creation (malloc_trim, then the peak reset through /proc/self/clear_refs)",
    "cuda": "torch.cuda.max_memory_allocated of a fresh `python -m` process above memory_allocated before the work",
}


def status_kib(field: str) -> int:
    """A field of /proc/self/status in KiB (VmHWM: peak resident set; VmRSS: resident set); 0 where absent."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:  # pragma: no cover - non-Linux
        pass
    return 0


def malloc_trim() -> None:
    """Give freed heap memory back to the OS, so that reusing it during the measurement counts as growth."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # pragma: no cover - non-glibc
        pass


def exact_rss() -> None:
    """Make the resident set follow live memory: glibc serves every allocation ≥ 64 KiB by mmap and returns it on
    free (a fixed M_MMAP_THRESHOLD) instead of keeping freed blocks in its heap. It slows large allocations:
    call it only in a child that measures memory and no time."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 128 * 1024)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):  # pragma: no cover - non-glibc
        pass


def reset_peak() -> bool:
    """Reset the kernel's peak resident set (VmHWM) to the current resident set; False where not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:  # pragma: no cover - non-Linux or restricted /proc
        return False


class PeakMeter:
    """Open after imports, data creation and warm-up; `stop()` after the measured work (in a fresh process)."""

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        gc.collect()
        malloc_trim()
        self.startup_peak_kib = status_kib("VmHWM")
        self.reset = reset_peak()
        self.baseline_kib = status_kib("VmHWM")
        self.cuda_base = 0
        if device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.cuda_base = torch.cuda.memory_allocated()

    def stop(self) -> dict:
        peak_kib = status_kib("VmHWM")
        out = {
            "measured_mib": max(0, peak_kib - self.baseline_kib) / 1024,
            "baseline_mib": self.baseline_kib / 1024,
            "peak_mib": peak_kib / 1024,
            "startup_peak_mib": self.startup_peak_kib / 1024,
            "peak_reset": self.reset,
            "method": METHOD["cpu"],
        }
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
            out["host_measured_mib"] = out["measured_mib"]
            out["measured_mib"] = (torch.cuda.max_memory_allocated() - self.cuda_base) / 2**20
            out["method"] = METHOD["cuda"]
        return out


def _env() -> dict:
    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    paths = [str(ROOT), str(ROOT / "src")] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def _command(module: str, args: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", module, *map(str, args)]


def _parse(module: str, args: Sequence[str], code: int, stdout: str, stderr: str) -> dict:
    if code != 0:
        raise RuntimeError(f"python -m {module} {' '.join(map(str, args))} failed ({code}):\n{stderr[-2000:]}")
    return json.loads(stdout.strip().splitlines()[-1])


def fresh_process(module: str, args: Sequence[str] = (), timeout_s: float = 600.0) -> dict:
    """Run ``python -m module args`` in a new interpreter and return the JSON object it prints last."""
    done = subprocess.run(_command(module, args), capture_output=True, text=True, env=_env(), cwd=ROOT,
                          timeout=timeout_s, check=False)
    return _parse(module, args, done.returncode, done.stdout, done.stderr)


def fresh_processes(jobs: Sequence[tuple[str, Sequence[str]]], parallel: int = 1,
                    timeout_s: float = 600.0) -> list[dict]:
    """`fresh_process` for each (module, args), at most `parallel` at a time, results in the order of `jobs`.

    Only for memory measurements: each figure is its own process's, so running them side by side does not
    change it (it would change times)."""
    results: list[dict | None] = [None] * len(jobs)
    running: list[tuple[int, subprocess.Popen, float]] = []
    pending = list(enumerate(jobs))
    while pending or running:
        while pending and len(running) < max(1, parallel):
            i, (module, args) = pending.pop(0)
            proc = subprocess.Popen(_command(module, args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True, env=_env(), cwd=ROOT)
            running.append((i, proc, time.monotonic()))
        i, proc, started = running.pop(0)
        try:
            stdout, stderr = proc.communicate(timeout=max(1.0, timeout_s - (time.monotonic() - started)))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
        module, args = jobs[i]
        results[i] = _parse(module, args, proc.returncode, stdout, stderr)
    return results  # type: ignore[return-value]


def loglog_slope(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Least-squares slope of log y against log x and its standard error (nan with fewer than 3 points, which
    leave no residual to estimate it from). Repeats at the same x are pooled: their scatter enters the error."""
    pts = [(math.log(a), math.log(b)) for a, b in zip(xs, ys) if a > 0 and b > 0]
    if len(pts) < 2:
        return float("nan"), float("nan")
    n = len(pts)
    mx = sum(p[0] for p in pts) / n
    my = sum(p[1] for p in pts) / n
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    if sxx <= 0:
        return float("nan"), float("nan")
    slope = sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx
    if n < 3:
        return slope, float("nan")
    rss = sum((p[1] - my - slope * (p[0] - mx)) ** 2 for p in pts)
    return slope, math.sqrt(rss / (n - 2) / sxx)


def _probe(kind: str, n: int) -> dict:
    """Allocate and touch N×N (square) or N·10⁴ (linear) float64 between the baseline and the peak reading."""
    import resource

    meter = PeakMeter()
    nbytes = 8 * (n * n if kind == "square" else n * 10_000)
    buf = bytearray(nbytes)
    buf[::4096] = b"\x01" * len(range(0, nbytes, 4096))  # every page resident, whatever the allocator does
    out = meter.stop()
    out.update(kind=kind, n=n, allocated_mib=nbytes / 2**20,
               ru_maxrss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    del buf
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probe", nargs=2, metavar=("square|linear", "N"), required=True)
    args = parser.parse_args(argv)
    kind, n = args.probe
    if kind not in ("square", "linear"):
        parser.error("the probe is square or linear")
    print(json.dumps(_probe(kind, int(n))))


if __name__ == "__main__":
    main()
