"""The MNIST report, rendered from the raw record of `experiments.mnist.run` only: every figure in it is read
from that record."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def render(rec: dict[str, Any], provenance: Callable[..., list[str]]) -> str:
    """Markdown for one reproduction record."""
    epochs = [e for e in rec["epochs"] if "val/acc" in e]  # the epochs that ended with a validation
    test = rec["test"]
    val = [e["val/acc"] for e in epochs if "val/acc" in e]
    best = max(range(len(val)), key=val.__getitem__) if val else None
    solver = rec["solver"]
    nfe_f = sorted({e["train/nfe_forward"] for e in rec["epochs"] if "train/nfe_forward" in e})
    nfe_b = sorted({e["train/nfe_backward"] for e in rec["epochs"] if "train/nfe_backward" in e})
    nfe_v = sorted({e["val/nfe_forward"] for e in epochs if "val/nfe_forward" in e})
    n = len(epochs)
    stem = "mnist" if rec["mode"] == "reduced" else f"mnist_{rec['mode']}"
    lines = [
        "# MNIST neural ODE (ODE-Net) on CPU",
        "",
        f"Mode **{rec['mode']}**: `{rec['config']}` trained by `cdflow fit` for {n} epoch(s) "
        f"({rec['train_examples']:,} training / {rec['val_examples']:,} validation / {rec['test_examples']:,} test "
        f"images; {rec['parameters']:,} parameters). Raw record: `{stem}.json`.",
        "",
        *provenance([rec["command"]], rec["machine"], rec.get("loadavg_end"), rec.get("env")),
        "## Result",
        "",
        "| test acc | test loss | best val acc (epoch) | fit wall time | wall s / epoch |",
        "|---|---|---|---|---|",
        f"| **{test.get('test/acc', float('nan')):.4f}** | {test.get('test/loss', float('nan')):.4f} | "
        + (f"{val[best]:.4f} ({epochs[best]['epoch']})" if best is not None else "–")
        + f" | {rec['fit_seconds']:.0f} s | {rec['fit_seconds'] / max(n, 1):.0f} |",
        "",
        "Validation accuracy per epoch: " + (", ".join(f"{v:.4f}" for v in val) if val else "–") + ".",
        "",
        f"Solver: {solver['method']}"
        + (f" with step {solver['step_size']:g} over [0, {solver['t1']:g}]" if solver.get("step_size") else "")
        + f"; drift evaluations per training step forward {', '.join(f'{v:g}' for v in nfe_f) or '–'}, "
        f"backward {', '.join(f'{v:g}' for v in nfe_b) or '–'}, per validation batch "
        f"{', '.join(f'{v:g}' for v in nfe_v) or '–'} (as logged). The test accuracy is that of the "
        "weights `cdflow fit` tests after training (its best-validation checkpoint).",
        "",
    ]
    return "\n".join(lines)
