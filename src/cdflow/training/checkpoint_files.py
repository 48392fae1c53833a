"""Cheap checks of ``--ckpt_path`` before anything loads it: each bad file gets a `ConfigError` naming the fix.

PyTorch's own errors for these files are misleading (``PytorchStreamReader failed``, a bare ``EOFError``,
or advice about ``weights_only`` for a YAML file). A checkpoint is a zip archive (torch ≥ 1.6) holding a
``data.pkl``; only the archive's directory (at its end) is read, so the check costs nothing for big files.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from cdflow.errors import ConfigError

#: Lightning's special values of ``ckpt_path`` (resolved by the trainer or by cdflow, not files).
SPECIAL = ("last", "best", "hpc", "registry")
EVAL_SUBCOMMANDS = ("validate", "test", "predict")
_CONFIG_SUFFIXES = (".yaml", ".yml", ".json", ".toml", ".cfg", ".ini")


def _checkpoints_near(path: Path) -> list[Path]:
    """Readable-looking checkpoint files in `path` (a folder) or its ``checkpoints/`` folder, newest last."""
    found = [p for folder in (path, path / "checkpoints") if folder.is_dir()
             for p in folder.glob("*.ckpt") if p.is_file() and zipfile.is_zipfile(p)]
    return sorted(found, key=lambda p: p.stat().st_mtime_ns)


def _hint(path: Path) -> str:
    near = _checkpoints_near(path if path.is_dir() else path.parent)
    if not near:
        return "give a .ckpt file written by cdflow fit (<run folder>/checkpoints/last.ckpt or best-*.ckpt)"
    others = [p for p in near if p.resolve() != path.resolve()]
    return f"use another checkpoint, e.g. --ckpt_path {others[-1]}" if others else "give a .ckpt written by cdflow fit"


def check_checkpoint_file(ckpt_path: str | Path) -> None:
    """Refuse, with a `ConfigError` naming the fix, a ``--ckpt_path`` that is missing, a folder, empty,
    truncated or not a PyTorch checkpoint at all (a config file, say). Lightning's special values pass."""
    if str(ckpt_path) in SPECIAL:
        return
    path = Path(ckpt_path)
    flag = f"--ckpt_path {ckpt_path}"
    if not path.exists():
        where = path.parent if path.parent.is_dir() else None
        near = _checkpoints_near(where) if where is not None else []
        shown = ", ".join(p.name for p in near[-5:])
        raise ConfigError(f"{flag} does not exist" + (f"; checkpoints in {where}: {shown}" if near else
                                                      "; give a .ckpt file written by cdflow fit "
                                                      "(<run folder>/checkpoints/last.ckpt or best-*.ckpt)"))
    if path.is_dir():
        near = _checkpoints_near(path)
        raise ConfigError(f"{flag} is a folder, not a checkpoint file: "
                          + (f"give one of its checkpoints, e.g. --ckpt_path {near[-1]}" if near
                             else "it holds no .ckpt file; give a checkpoint written by cdflow fit"))
    size = path.stat().st_size
    if size == 0:
        raise ConfigError(f"{flag} is empty (0 bytes): it was never written completely (a run killed while "
                          f"saving, or a failed copy); {_hint(path)}")
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as err:
        raise ConfigError(f"{flag} cannot be read ({err.strerror or err}): check its permissions "
                          f"(chmod u+r {ckpt_path}) or copy it somewhere readable") from None
    if head.startswith(b"PK"):
        if not zipfile.is_zipfile(path):
            raise ConfigError(f"{flag} is truncated or corrupt ({size} bytes, its zip directory is missing: a run "
                              f"killed while saving, or an incomplete copy); {_hint(path)}")
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError) as err:
            raise ConfigError(f"{flag} is corrupt ({err}); {_hint(path)}") from None
        if not any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
            raise ConfigError(f"{flag} is a zip archive but not a PyTorch checkpoint (no data.pkl in it); "
                              f"{_hint(path)}")
        return
    if head[:1] == b"\x80":
        return  # torch's legacy (pickle) format: torch.load reads it
    config = path.suffix.lower() in _CONFIG_SUFFIXES
    raise ConfigError(
        f"{flag} is not a checkpoint ({'a config file' if config else 'not a PyTorch file'}): --ckpt_path takes "
        "the .ckpt written by cdflow fit (<run folder>/checkpoints/last.ckpt or best-*.ckpt)"
        + (f"; a config goes to --config {ckpt_path}" if config else "")
    )


def unreadable_checkpoint(ckpt_path: str | Path, err: BaseException) -> ConfigError:
    """The error for a checkpoint that passed `check_checkpoint_file` but that torch cannot load."""
    first = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return ConfigError(f"--ckpt_path {ckpt_path} cannot be read as a checkpoint ({type(err).__name__}: {first}); "
                       f"it is corrupt or was not written by cdflow fit; {_hint(Path(ckpt_path))}")


def eval_checkpoint(subcommand: str, ckpt_path: str | None, last: Path | None) -> str:
    """The checkpoint ``cdflow validate|test|predict`` uses: refuses none (the untrained initial weights) and
    ``best`` (known only right after a fit), resolves ``last`` to `last` (the newest ``last.ckpt`` of the run
    folders, found by the caller) and checks a file with `check_checkpoint_file`."""
    example = f"--ckpt_path {last}" if last is not None else "--ckpt_path <run folder>/checkpoints/last.ckpt"
    if ckpt_path is None:
        raise ConfigError(f"cdflow {subcommand} needs trained weights: give {example} (or best-*.ckpt); without "
                          f"--ckpt_path it would {subcommand} the untrained initial weights")
    if ckpt_path == "best":
        raise ConfigError(f"--ckpt_path best names the best checkpoint of a fit in the same process; for "
                          f"cdflow {subcommand} give the file: <run folder>/checkpoints/best-*.ckpt")
    if ckpt_path == "last":
        if last is None:
            raise ConfigError("--ckpt_path last: no checkpoints/last.ckpt under --trainer.default_root_dir (nor in "
                              "its version_* folders); give the checkpoint file, or the --trainer.default_root_dir "
                              "of the run")
        return str(last)
    check_checkpoint_file(ckpt_path)
    return ckpt_path
