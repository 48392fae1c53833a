"""`make bench`: run every benchmark, write benchmarks/results/latest.{json,md} (latest-gpu.* on CUDA).

    python -m benchmarks.run [--quick] [--only NAME ...]

Each benchmark interleaves its compared variants, repeats them after a warm-up, and reports median and
spread; every row carries its goal and whether it is met. DEVICE=cpu|cuda forces the device.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import traceback

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from benchmarks.common import Row, device_from_env, machine, results_dir  # noqa: E402

# adjoint_memory runs last: its memory phase switches glibc to mmap-backed allocations (benchmarks.common.exact_rss)
NAMES = ("overhead", "stiff_diffusion", "graph_scaling", "fast_path", "coin_scale", "hardware", "compile",
         "adjoint_memory")


def _graph_scaling(quick: bool, device: torch.device) -> list[Row]:
    from benchmarks import graph_scaling

    sizes = (1000, 2000, 4000) if quick else (1000, 10_000, 50_000, 100_000)
    res = graph_scaling.run(sizes=sizes, d=64, quick=quick)
    rows = [Row("graph_scaling", f"N={r['n']} d=64", "time", r["time_s"], "s", extra=r) for r in res["rows"]]
    last = res["rows"][-1]
    rows.append(Row("graph_scaling", "memory growth exponent", "log-log slope", res["memory_exponent"], "",
                    goal="≤ 1 (at most linear in N)", met=res["memory_exponent"] <= 1.15,
                    extra={"memory_metric": res["memory_metric"]}))
    rows.append(Row("graph_scaling", "time growth exponent", "log-log slope", res["time_exponent"], ""))
    if last["n"] >= 100_000:
        rows.append(Row("graph_scaling", "N=1e5 build", "time", last["time_s"], "s", goal="≤ 60 s",
                        met=last["time_s"] <= 60))
    return rows


def _module_runner(name: str):
    if name == "graph_scaling":
        return _graph_scaling
    module = __import__(f"benchmarks.{name}", fromlist=["run"])
    return module.run


def _fmt(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.3g}"


def to_markdown(payload: dict) -> str:
    m = payload["machine"]
    lines = [
        f"# cdflow benchmarks ({'QUICK' if payload['quick'] else 'full'}, device {payload['device']})",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores; torch {m['torch']} with {m['torch_threads']} threads; "
        f"GPU: {m['gpu'] or 'none'}; Python {m['python']}. Generated {payload['date']} by `{payload['command']}` "
        f"in {payload['wall_s']:.0f} s.",
        "",
        "| benchmark | case | metric | value | spread | goal | met |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in payload["rows"]:
        met = "" if r["met"] is None else ("yes" if r["met"] else "**no**")
        spread = "" if r["spread"] is None else _fmt(r["spread"])
        lines.append(f"| {r['bench']} | {r['case']} | {r['metric']} | {_fmt(r['value'])} {r['unit']} | {spread} "
                     f"| {r['goal']} | {met} |")
    if payload["errors"]:
        lines += ["", "## Errors", ""] + [f"- {name}: {err}" for name, err in payload["errors"].items()]
    lines += ["", "Details of every row (times, NFE, memory method) are in the JSON file beside this one.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="the one-minute version")
    parser.add_argument("--only", nargs="*", choices=NAMES, help="run only these benchmarks")
    args = parser.parse_args(argv)
    device = device_from_env()
    started = time.time()
    rows: list[Row] = []
    errors: dict[str, str] = {}
    for name in args.only or NAMES:
        t0 = time.time()
        print(f"[bench] {name} …", flush=True)
        try:
            rows += _module_runner(name)(args.quick, device)
        except Exception as exc:  # a failing benchmark is reported, the others still run
            errors[name] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
        print(f"[bench] {name} done in {time.time() - t0:.1f} s", flush=True)
    payload = {
        "quick": args.quick,
        "device": str(device),
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "make bench" + (" QUICK=1" if args.quick else ""),
        "wall_s": time.time() - started,
        "rows": [r.as_dict() for r in rows],
        "errors": errors,
    }
    stem = "latest-gpu" if device.type == "cuda" else "latest"
    if args.quick:
        stem += "-quick"
    out = results_dir()
    previous = out / f"{stem}.json"
    if args.only and previous.exists():  # re-running some benchmarks keeps the others' rows
        old = json.loads(previous.read_text())
        kept = [r for r in old["rows"] if r["bench"] not in set(args.only)]
        payload["rows"] = kept + payload["rows"]
        payload["rows"].sort(key=lambda r: NAMES.index(r["bench"]) if r["bench"] in NAMES else len(NAMES))
        payload["command"] += f" (then {' '.join(args.only)} re-run)"
    (out / f"{stem}.json").write_text(json.dumps(payload, indent=1, default=str))
    (out / f"{stem}.md").write_text(to_markdown(payload))
    print(to_markdown(payload))
    print(f"[bench] wrote {out / (stem + '.md')} and .json")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
