"""Every shipped config in experiments/configs runs one fast_dev_run step through the CLI; `make train`'s default
is the digits config."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import pytest
import yaml

from cdflow.cli import run_cli

ROOT = Path(__file__).resolve().parents[2]
MAKEFILE = ROOT / "Makefile"
CONFIGS = sorted((ROOT / "experiments" / "configs").glob("*.yaml"))
# Smaller batches keep the conv ODE of the image configs cheap on CPU; the model is the configured one.
SMALL_BATCH = {"mnist.yaml": 8, "fashion_mnist.yaml": 8}
DATA = {"mnist.yaml": ("mnist",), "fashion_mnist.yaml": ("fashion-mnist",), "cora.yaml": ("gnn-benchmark", "cora.npz")}


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_config_fast_dev_run(config, tmp_path, monkeypatch, require_data):
    if config.name in DATA:
        require_data(*DATA[config.name])
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setattr(sys, "argv", ["cdflow"])
    args = ["fit", "--config", str(config), "--trainer.default_root_dir", str(tmp_path),
            "--trainer.fast_dev_run", "true", "--trainer.enable_progress_bar", "false"]
    if config.name in SMALL_BATCH:
        args += ["--data.init_args.batch_size", str(SMALL_BATCH[config.name])]
    cli = run_cli(args)
    assert cli.test_results and "test/acc" in cli.test_results[0]
    assert cli.trainer.global_step == 1


def make_variables(text: str) -> dict[str, str]:
    """The Makefile's simple variable definitions (``NAME ?= value``, ``:=``, ``=``), unexpanded."""
    pattern = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*(?:\?=|:=|=)[ \t]*(.*?)\s*$", re.M)
    return {name: value for name, value in pattern.findall(text)}


def make_recipe(text: str, target: str) -> list[str]:
    """The recipe lines (tab-indented, after ``target:``) of one rule."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(rf"^{re.escape(target)}\s*:", line))
    recipe = []
    for line in lines[start + 1:]:
        if not line.startswith("\t"):
            break
        recipe.append(line[1:])
    return recipe


def make_expand(text: str, variables: dict[str, str]) -> str:
    """Expand $(NAME) and $(if cond,then) innermost first, as make does for these two forms."""
    inner = re.compile(r"\$\(([^$()]*)\)")
    while (m := inner.search(text)) is not None:
        body = m.group(1)
        if body.startswith("if "):
            cond, _, then = body[3:].partition(",")
            value = then if cond.strip() else ""
        else:
            value = make_expand(variables.get(body, ""), variables)
        text = text[:m.start()] + value + text[m.end():]
    return text


def _assert_contains(expected, actual, where="config"):
    """Every key of `expected` is in `actual` with the same value (`actual` may hold more defaults)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), where
        for key, value in expected.items():
            assert key in actual, f"{where}.{key} missing"
            _assert_contains(value, actual[key], f"{where}.{key}")
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"


def test_digits_default_config_matches_make_train(monkeypatch, capsys):
    """`make train` with no variables runs `cdflow fit --config experiments/configs/digits.yaml` (read from the
    Makefile's `CONFIG ?=` default and its `train:` recipe), and that command resolves to the digits config."""
    text = MAKEFILE.read_text()
    variables = make_variables(text)
    assert variables["CONFIG"] == "experiments/configs/digits.yaml"
    recipe = make_recipe(text, "train")
    assert len(recipe) == 1, recipe
    argv = shlex.split(make_expand(recipe[0], variables))
    assert argv[0] == make_expand("$(VENV)/bin/cdflow", variables)
    assert re.search(r'^cdflow = "cdflow\.cli:main"$', (ROOT / "pyproject.toml").read_text(), re.M)
    assert argv[1:] == ["fit", "--config", "experiments/configs/digits.yaml"]
    expected = yaml.safe_load((ROOT / argv[3]).read_text())
    assert expected["data"]["class_path"].endswith("DigitsDataModule")
    assert expected["trainer"]["default_root_dir"] == "runs/digits"
    monkeypatch.chdir(ROOT)  # the recipe's path is relative to the Makefile's folder
    monkeypatch.setattr(sys, "argv", ["cdflow"])
    with pytest.raises(SystemExit) as done:
        run_cli([*argv[1:], "--print_config"])
    assert done.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    _assert_contains(expected, printed)
