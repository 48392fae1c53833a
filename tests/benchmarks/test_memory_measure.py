"""The suite's memory measurement (benchmarks.memory) sees what a process allocates, and only that.

Probes are fresh `python -m benchmarks.memory --probe` processes (standard library only, milliseconds to
start) that allocate and touch a known amount between the baseline and the peak reading.
"""

import pytest

from benchmarks.common import Goal
from benchmarks.memory import fresh_process, loglog_slope

SIZES = (1000, 2000, 4000)
AT_MOST_LINEAR = Goal("<=", 1.0)  # the graph_scaling goal


def _probe(kind: str, n: int) -> dict:
    return fresh_process("benchmarks.memory", ["--probe", kind, n], timeout_s=60)


def _exponent(kind: str) -> tuple[float, float, list[dict]]:
    reports = [_probe(kind, n) for n in SIZES]
    slope, se = loglog_slope(SIZES, [r["measured_mib"] for r in reports])
    return slope, se, reports


def test_quadratic_allocation_has_exponent_two_and_fails_the_linear_goal():
    slope, se, reports = _exponent("square")  # N×N float64: 7.6, 30.5, 122 MiB
    assert abs(slope - 2) <= 0.3, (slope, reports)
    for r in reports:  # the figure is the allocation, not the interpreter
        assert r["measured_mib"] == pytest.approx(r["allocated_mib"], rel=0.1, abs=2.0), r
    assert not AT_MOST_LINEAR.met(slope, se)


def test_linear_allocation_is_reported_as_linear():
    slope, se, reports = _exponent("linear")  # N·10⁴ float64: 76, 153, 305 MiB
    assert abs(slope - 1) <= 0.3, (slope, reports)
    assert round(slope) == 1 and se < 0.1
    for r in reports:
        assert r["measured_mib"] == pytest.approx(r["allocated_mib"], rel=0.1, abs=2.0), r


def test_parent_peak_does_not_leak_into_the_child():
    parent = bytearray(500 * 2**20)  # 500 MiB resident in this process before the child starts
    parent[::4096] = b"\x01" * len(range(0, len(parent), 4096))
    report = _probe("linear", 100)  # 7.6 MiB
    del parent
    assert report["measured_mib"] == pytest.approx(report["allocated_mib"], rel=0.1, abs=2.0), report
    assert report["peak_mib"] < 200, report  # the child's own peak: interpreter + probe, not the parent's 500 MiB
    # for the record: the child's getrusage ru_maxrss, the old method, carries the parent's peak on Linux
    print(f"child ru_maxrss {report['ru_maxrss_mib']:.0f} MiB, VmHWM {report['peak_mib']:.0f} MiB")


def test_loglog_slope_spread():
    slope, se = loglog_slope([1, 2, 4, 8], [3, 6, 12, 24])
    assert slope == pytest.approx(1) and se == pytest.approx(0, abs=1e-12)
    slope, se = loglog_slope([1, 2, 4], [1, 5, 16])
    assert se > 0.1
    assert loglog_slope([1, 2], [1, 2])[1] != loglog_slope([1, 2], [1, 2])[1]  # nan: no residual, no spread
