"""Shared benchmark machinery: interleaved repeated timing, peak memory, machine description, result rows."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch


@dataclass
class Row:
    """One reported figure: which benchmark, what was measured, the value, and the goal it is held to."""

    bench: str
    case: str
    metric: str
    value: float
    unit: str = ""
    spread: float | None = None
    goal: str = ""
    met: bool | None = None
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def device_from_env() -> torch.device:
    """`DEVICE=cpu|cuda` forces a device; otherwise CUDA when present."""
    name = os.environ.get("DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_times(
    variants: dict[str, Callable[[], object]], repeats: int, warmup: int, device: torch.device
) -> dict[str, list[float]]:
    """Time each variant `repeats` times, interleaving variants round-robin after `warmup` rounds."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for rnd in range(warmup + repeats):
        for name, fn in variants.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            if rnd >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def median_spread(samples: list[float]) -> tuple[float, float]:
    """Median and half the inter-quartile range (a robust spread)."""
    med = statistics.median(samples)
    if len(samples) < 4:
        return med, 0.0
    q = statistics.quantiles(samples, n=4)
    return med, (q[2] - q[0]) / 2


def _rss_kib(field_name: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field_name):
                return int(line.split()[1])
    return 0


def exact_rss() -> None:
    """Make the resident set follow live memory: glibc serves every allocation ≥ 64 KiB by mmap and returns
    it on free (M_MMAP_THRESHOLD), instead of keeping freed blocks in its heap, which would hide or inflate
    peaks. It slows large allocations, so call it only before a memory-measuring phase that runs last."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 128 * 1024)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):  # pragma: no cover - non-glibc
        pass


def _malloc_trim() -> None:
    """Give freed heap memory back to the OS so the next peak is measured from a clean base."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # pragma: no cover - non-glibc
        pass


def peak_memory_mib(fn: Callable[[], object], device: torch.device) -> float:
    """Peak memory of `fn` above what was in use before it.

    CUDA: the caching allocator's `max_memory_allocated`. CPU: the process's peak resident set (VmHWM),
    reset through /proc/self/clear_refs before the call, minus the resident set before it.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    _malloc_trim()
    base = _rss_kib("VmRSS:")
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:  # pragma: no cover - non-Linux
        pass
    fn()
    return max(0, _rss_kib("VmHWM:") - base) / 1024


MEMORY_METHOD = {
    "cpu": "peak resident set (VmHWM after a /proc/self/clear_refs reset) minus the resident set before, with "
           "glibc set to mmap every allocation ≥ 64 KiB so the resident set follows live tensors",
    "cuda": "torch.cuda.max_memory_allocated minus memory allocated before",
}


def machine() -> dict:
    """CPU model, cores, torch version and threads, GPU if any."""
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:  # pragma: no cover
        pass
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return info


def results_dir() -> Path:
    """benchmarks/results, or $CDFLOW_BENCH_OUT (the smoke test writes into a temporary folder)."""
    path = Path(os.environ.get("CDFLOW_BENCH_OUT") or Path(__file__).resolve().parent / "results")
    path.mkdir(parents=True, exist_ok=True)
    return path
