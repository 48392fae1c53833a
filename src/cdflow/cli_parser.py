"""The ``cdflow`` command's parser: its ``--help`` text, short parse errors, and checks of the parsed flags.

jsonargparse prints the whole usage (pages of options) before every parse error; `CdflowArgumentParser`
prints only the error and a hint instead::

    cdflow fit: error: --model.hidden: 'abc' is not an int
    (see cdflow fit --help)

and says what to do when ``--data`` names no data module (a file name, a typo).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import NoReturn

from jsonargparse import DefaultHelpFormatter
from lightning.pytorch import LightningDataModule
from lightning.pytorch.cli import LightningArgumentParser

from cdflow.errors import CdflowError

DESCRIPTION = """\
cdflow trains continuous-depth networks written as convection-diffusion equations, dx/dt = v(x, t) + diffusion:
neural ODE and SDE classifiers and graph diffusion models (COIN, Diff-ResNet), with PyTorch Lightning."""

EPILOG = """\
examples:
  cdflow fit --config experiments/configs/digits.yaml        # a neural ODE on the 8x8 digits
  cdflow fit --config experiments/configs/coin_cora.yaml     # COIN on the Cora citation graph
  cdflow predict --config runs/digits/config.yaml --ckpt_path runs/digits/checkpoints/last.ckpt
                                                             # -> runs/digits/predictions-last.csv

cdflow SUBCOMMAND --help lists the options of a subcommand (fit, validate, test, predict)."""

#: File names given to ``--data`` that get the "use TabularDataModule / GraphFileDataModule" advice.
FILE_SUFFIXES = (".csv", ".tsv", ".txt", ".npz", ".npy", ".parquet", ".pq", ".feather", ".xlsx", ".gz")
SUBCOMMANDS = ("fit", "validate", "test", "predict")
_IMPORT_FAILURES = ("import path", "No module named", "has no attribute", "not accessible")


class CdflowHelpFormatter(argparse.RawDescriptionHelpFormatter, DefaultHelpFormatter):
    """jsonargparse's help, keeping the line breaks of the description and of the examples."""


def refuse(prog: str, err: CdflowError) -> NoReturn:
    """End like a parse error: ``<prog>: error: <Type>: <message>`` and the help hint, exit status 2."""
    print(f"{prog}: error: {type(err).__name__}: {err}\n(see {prog} --help)", file=sys.stderr)
    raise SystemExit(2)


def data_module_names() -> list[str]:
    """The short names of cdflow's (imported) data modules, usable as ``--data NAME``."""
    found: set[str] = set()
    todo = list(LightningDataModule.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        base = cls.__module__ == "cdflow.data.base"  # CdflowDataModule: the base class, not a data set
        if cls.__module__.startswith("cdflow.") and not base and not cls.__name__.startswith("_"):
            found.add(cls.__name__)
    return sorted(found)


def _file_advice(name: str) -> str:
    return (f"--data: no data module named {name!r}; to train on a file use --data TabularDataModule --data.path "
            f"{name} (for a graph: --data GraphFileDataModule --data.path {name})")


def check_data_flag(args: list[str]) -> None:
    """``--data wine.csv`` on the command line: say which data module reads files (jsonargparse would read an
    existing file as the data module's YAML config and fail on its content)."""
    for i, arg in enumerate(args):
        value = args[i + 1] if arg == "--data" and i + 1 < len(args) else (
            arg.split("=", 1)[1] if arg.startswith("--data=") else None)
        if value is not None and Path(value).suffix.lower() in FILE_SUFFIXES:
            subcommand = next((a for a in args if a in SUBCOMMANDS), None)
            prog = f"cdflow {subcommand}" if subcommand else "cdflow"
            sys.stderr.write(f"{prog}: error: {_file_advice(value)}\n(see {prog} --help)\n")
            raise SystemExit(2)


#: jsonargparse's innermost type error: "Expected a <class 'int'>. Got value: abc" (or a Literal's choices).
_EXPECTED = re.compile(r"Expected a (?:typing\.Literal\[(?P<choices>.*?)\]|<class '(?P<cls>[\w.]+)'>)\. "
                       r"Got value: (?P<value>.*)$", re.M)
#: Plain type names in one-line errors.
_TYPE_NAMES = {"int": "an int", "float": "a number", "bool": "true or false", "str": "a string", "NoneType": "null"}


def _choices(text: str) -> str:
    return ", ".join(c.strip().strip("'\"") for c in text.split(","))


def _expected(kind: str) -> str:
    """"<class 'int'>" → 'an int' (a Literal's choices are listed by the caller)."""
    cls = re.fullmatch(r"<class '([\w.]+)'>", kind)
    return _type_name(cls.group(1) if cls else kind)


def _type_name(path: str) -> str:
    """'int' → 'an int', 'pathlib.Path' → 'a Path'."""
    name = path.rsplit(".", 1)[-1]
    return _TYPE_NAMES.get(name, f"a {name}")


#: A setting's line in jsonargparse's (nested, indented) report.
_KEY = re.compile(r'^( *)Parser key "([^"]*)":', re.M)
_UNION = "Does not validate against any of the Union subtypes"


def _flag_at(message: str, pos: int, indent: int) -> str:
    """The dotted flag of the report line at `pos` indented `indent`: the keys of the settings that hold it, the
    outermost first (jsonargparse nests a setting's report under its parents', one indentation level deeper)."""
    chain = []
    for m in reversed([m for m in _KEY.finditer(message) if m.start() < pos]):
        if len(m.group(1)) < indent:
            chain.append(m.group(2))
            indent = len(m.group(1))
    return ".".join(k for k in reversed(chain) if k)


def _union_of_types(message: str) -> tuple[str, str, list[str]] | None:
    """The innermost union of plain types that refused a value: (flag, value, the "Expected a …" kinds)."""
    found = None
    for m in _KEY.finditer(message):
        indent = len(m.group(1))
        block = []
        for line in message[m.end():].splitlines()[1:]:
            if len(line) - len(line.lstrip()) <= indent:
                break
            block.append(line.strip())
        errors = [b[2:] for b in block if b.startswith("- ")]
        given = [b[len("Given value: "):] for b in block if b.startswith("Given value: ")]
        plain = not any(b.startswith("Parser key") for b in block)
        if block and block[0] == _UNION and plain and given and errors and \
                all(e.startswith("Expected a ") for e in errors):
            found = (_flag_at(message, m.start() + 1, indent + 1), given[-1].strip(),
                     [e[len("Expected a "):].strip() for e in errors])
    return found


def _type_error(message: str) -> str | None:
    """jsonargparse's report of a value of the wrong type (two lines, or a dozen for a union or a nested setting)
    as one line naming the flag: the value and the choices or the type expected. None for any other message."""
    hit = _EXPECTED.search(message)
    if hit is not None:
        line_start = message.rfind("\n", 0, hit.start()) + 1
        indent = len(message[line_start:hit.start()]) - len(message[line_start:hit.start()].lstrip())
        flag, value = _flag_at(message, hit.start(), indent), hit.group("value").strip()
        if hit.group("choices") is not None:
            return f"--{flag}: {value!r} is not a valid choice; choose from {_choices(hit.group('choices'))}"
        return f"--{flag}: {value!r} is not {_type_name(hit.group('cls'))}"
    union = _union_of_types(message)
    if union is None:
        return None  # a nested setting's report without a type error, or another failure
    flag, value, kinds = union
    literals = [re.fullmatch(r"typing\.Literal\[(.*)\]", k) for k in kinds]
    choices = list(dict.fromkeys(c for m in literals if m for c in _choices(m.group(1)).split(", ")))
    expected = ([f"one of {', '.join(choices)}"] if choices else []) + \
        [_expected(k) for k, m in zip(kinds, literals) if m is None]
    return f"--{flag}: {value!r} is not valid; expected {' or '.join(expected)}"


def explain_parse_error(message: str) -> str:
    """`message`, or for a ``--data`` value that names no data module, what to type instead; for a value of the
    wrong type or outside a setting's choices, one line naming the flag and what it takes."""
    typed = _type_error(message)
    if typed is not None:
        return typed
    given = re.search(r"^\s*Given value: (.+)$", message, re.M)
    if not message.startswith('Parser key "data"') or given is None or "Given value type: <class 'str'>" not in message:
        return message
    name = given.group(1).strip()
    path = Path(name)
    if path.suffix.lower() in FILE_SUFFIXES or os.sep in name or path.is_file():
        return _file_advice(name)
    if any(marker in message for marker in _IMPORT_FAILURES):
        detail = re.search(r"Problem with given class_path '[^']*':\s*\n?\s*(.+)", message)
        return (f"--data: no data module named {name!r}" + (f" ({detail.group(1).strip()})" if detail else "")
                + f"; cdflow's data modules: {', '.join(data_module_names())}; or your own by import path "
                "(--data my_package.MyDataModule, a LightningDataModule on PYTHONPATH)")
    return message


class CdflowArgumentParser(LightningArgumentParser):
    """Lightning's parser with short errors: the message and a one-line hint, without the usage text."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error or os.environ.get("JSONARGPARSE_DEBUG"):
            super().error(message, ex)  # jsonargparse raises here (nested parsing, debug mode)
        parser = getattr(ex, "subcommand_parser", None) or self
        prog = parser.prog.replace(" [options]", "")
        sys.stderr.write(f"{prog}: error: {explain_parse_error(message)}\n(see {prog} --help)\n")
        self.exit(2)
