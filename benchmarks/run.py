"""`make bench`: run every benchmark, write benchmarks/results/latest.{json,md} (latest-gpu.* on CUDA).

    python -m benchmarks.run [--quick] [--only NAME ...]

Each benchmark interleaves its compared variants, repeats them after a warm-up, and reports median and
spread; every row with a goal says whether it is met beyond its spread (benchmarks.common.Goal). Memory is
the peak of a process started for that measurement alone (benchmarks.memory). DEVICE=cpu|cuda forces the device.
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

from benchmarks.common import Row, device_from_env, machine, results_dir  # noqa: E402

# memory rows are measured in fresh processes (benchmarks.memory), so the order does not affect them
NAMES = ("overhead", "stiff_diffusion", "exponential", "graph_scaling", "fast_path", "coin_scale", "hardware",
         "compile", "adjoint_memory")


def _module_runner(name: str):
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
    lines += ["", "met: yes only where the goal holds beyond the spread (value + spread within an upper bound, value − "
              "spread within a lower bound); a row without a spread (one sample) is not judged. Memory: peak of a "
              "fresh process per measurement (VmHWM after the work minus after imports and data).",
              "", "Details of every row (samples, NFE, memory method, why a row is not judged) are in the JSON file "
              "beside this one.", ""]
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
