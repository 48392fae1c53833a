"""``python -m experiments.robustness.run [--smoke|--full] [--out DIR] [--conv-ckpt PATH]``.

Trains a neural ODE and the convection–diffusion SDE (same network) on MNIST per seed and measures their
accuracy under Gaussian input noise and an L∞ PGD attack; ``--conv-ckpt`` adds the conv neural ODE of a
``cdflow fit --config experiments/configs/mnist.yaml`` checkpoint. Writes ``DIR/robustness.md``
(``robustness_<mode>.md`` in smoke and full mode) and ``DIR/robustness_<mode>.json``. Default DIR: experiments/results.
Modes: smoke (CI, seconds), reduced (default: 2 seeds, 2 epochs, 1,000 test images), full (3 seeds, 3 epochs,
all 10,000 test images).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from experiments.common import artefact, mode_of, runner_parser
from experiments.robustness.config import HPARAMS, settings_for
from experiments.robustness.data import mnist_pixels
from experiments.robustness.evaluate import evaluate
from experiments.robustness.models import build_model, load_conv_ode, set_mean_field
from experiments.robustness.report import machine_info, markdown, summarise
from experiments.robustness.train import train_model


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = runner_parser(__doc__, "tiny run for CI (< 20 s)", "3 seeds, 3 epochs, the whole test set")
    p.add_argument("--conv-ckpt", default=None, help="also evaluate this conv neural ODE checkpoint")
    return p.parse_args(argv)


def _log(r: dict[str, Any]) -> None:
    accs = " ".join(f"{k} {v:.3f}" for k, v in r["acc"].items())
    print(f"{r['model']:15s} seed {r['seed']}: {accs} (eval {r['eval_s']:.0f} s)", flush=True)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = _parse(argv)
    settings = settings_for(mode_of(args))
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    info = machine_info()
    start = time.perf_counter()
    x_train, y_train = mnist_pixels("train", settings.train_images)
    x_test, y_test = mnist_pixels("test", settings.eval_images)
    runs: list[dict[str, Any]] = []
    for seed in settings.seeds:
        for kind, sigma in [("ode", 0.0), *(("sde", sig) for sig in settings.sde_sigmas)]:
            name = kind if kind == "ode" else f"sde_s{sigma:g}"
            torch.manual_seed(seed)
            model = build_model(kind, seed, settings.n_samples, sigma)
            fit = train_model(model, x_train, y_train, settings, seed)
            print(f"{name} seed {seed}: loss {fit['epoch_loss']}, s/epoch {fit['epoch_s']}", flush=True)
            runs.append({"model": name, "sigma": sigma, "seed": seed, **fit,
                         **evaluate(model, x_test, y_test, settings, seed)})
            _log(runs[-1])
            if kind == "sde":
                set_mean_field(model, True)
                result = evaluate(model, x_test, y_test, settings, seed)
                runs.append({"model": f"{name}_mean_field", "sigma": sigma, "seed": seed, **result})
                _log(runs[-1])
    if args.conv_ckpt:
        model = load_conv_ode(args.conv_ckpt)
        runs.append({"model": "conv_ode", "seed": 0, "checkpoint": args.conv_ckpt,
                     **evaluate(model, x_test, y_test, settings, 0)})
        _log(runs[-1])
    bad = [r["model"] for r in runs if not all(math.isfinite(v) for v in r["acc"].values())]
    if bad:
        raise RuntimeError(f"non-finite accuracies for {bad}")
    argv_str = " ".join(sys.argv[1:]) if argv is None else " ".join(argv)
    payload = {
        "mode": settings.mode, "seeds": list(settings.seeds),
        "command": f"python -m experiments.robustness.run {argv_str}".strip(),
        "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")},
        "machine": info, "loadavg_end": [round(v, 2) for v in os.getloadavg()],
        "wall_s": time.perf_counter() - start, "hparams": HPARAMS,
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in settings.__dict__.items()},
        "summary": summarise(runs), "runs": runs,
    }
    md = out / artefact("robustness", settings.mode, "md")
    (out / f"robustness_{settings.mode}.json").write_text(json.dumps(payload, indent=1))
    md.write_text(markdown(payload, settings))
    print(f"wrote {md} and robustness_{settings.mode}.json ({payload['wall_s']:.1f} s)")
    return payload


if __name__ == "__main__":
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    main()
