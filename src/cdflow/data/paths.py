"""Where datasets live, how their integrity is checked, and how missing files are fetched.

Every loader takes a ``root`` folder; when it is not given, the ``CDFLOW_DATA`` environment variable
names it. Files are checked against SHA-256 sums before they are parsed (pickles above all: a pickle
with the wrong hash is never unpickled). Downloads use only the standard library and, offline, fail
with a message that lists exactly which files to put into which folder.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cdflow.errors import DataError

ENV_VAR = "CDFLOW_DATA"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class RemoteFile:
    """A dataset file: its name in the dataset folder, where it can be downloaded, and its SHA-256."""

    name: str
    url: str
    sha256: str | None = None


def data_root(root: str | os.PathLike[str] | None = None) -> Path:
    """Return the datasets folder: ``root`` if given, else ``$CDFLOW_DATA``.

    Raises:
        DataError: neither is set, or the folder does not exist.
    """
    source = "the `root` argument"
    if root is None or str(root) == "":
        env = os.environ.get(ENV_VAR, "")
        if not env:
            raise DataError(
                f"No data folder given: pass `root=` (e.g. `--data.root /path/to/data`) or set the "
                f"{ENV_VAR} environment variable to the folder that holds mnist/, gnn-benchmark/, ... "
                f"(in this project: `export {ENV_VAR}=../shared/data`)."
            )
        root, source = env, f"${ENV_VAR}"
    path = Path(root).expanduser().absolute()
    if not path.is_dir():
        raise DataError(
            f"Data folder {path} (from {source}) does not exist or is not a folder. "
            f"Pass an existing folder as `root=` or fix {ENV_VAR}."
        )
    return path


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Return the hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def corrupt_message(path: Path, expected: str, actual: str, *, url: str | None = None) -> str:
    """The message for a file whose hash is wrong: both hashes and how to fix it."""
    fix = f"download it again from {url}" if url else "replace it with a fresh copy"
    return (
        f"{path} is corrupt or truncated: its SHA-256 is {actual}, expected {expected}. "
        f"Delete {path} and {fix}."
    )


def verify_checksum(path: str | os.PathLike[str], expected: str, *, url: str | None = None) -> None:
    """Check that ``path`` has SHA-256 ``expected``.

    Raises:
        DataError: the file is missing, or its hash differs ("corrupt or truncated", both hashes, the fix).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist; cannot verify its checksum.")
    actual = sha256_file(path)
    if actual != expected.lower():
        raise DataError(corrupt_message(path, expected.lower(), actual, url=url))


def download(
    url: str, dest: str | os.PathLike[str], sha256: str | None = None, *, timeout: float = 60.0
) -> Path:
    """Download ``url`` to ``dest`` (atomically, via a temporary file) and check its SHA-256.

    Raises:
        DataError: the download failed (offline, HTTP error, read-only folder) — the message names the
            URL and the exact file to put in place by hand — or the downloaded bytes have the wrong hash.
    """
    dest = Path(dest)
    tmp_name: str | None = None
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(url, timeout=timeout) as response:
            with tempfile.NamedTemporaryFile(dir=dest.parent, prefix=f".{dest.name}.", delete=False) as tmp:
                tmp_name = tmp.name
                shutil.copyfileobj(response, tmp, _CHUNK)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        if tmp_name is not None:
            Path(tmp_name).unlink(missing_ok=True)
        raise DataError(
            f"Could not download {url} ({exc}). Without internet, put the file there by hand:\n"
            f"  {dest.name}  ->  {dest.parent.absolute()}/\n(source: {url})"
        ) from exc
    assert tmp_name is not None
    if sha256 is not None:
        actual = sha256_file(tmp_name)
        if actual != sha256.lower():
            Path(tmp_name).unlink(missing_ok=True)
            raise DataError(
                f"Downloaded {url} but its SHA-256 is {actual}, expected {sha256.lower()}: the download is "
                f"corrupt or truncated, or the origin changed. Nothing was written to {dest}; try again, or "
                f"put a verified copy there by hand."
            )
    os.replace(tmp_name, dest)
    return dest


def fetch_missing(
    folder: Path, files: Mapping[str, RemoteFile], *, dataset: str, allow_download: bool = True
) -> None:
    """Make sure every file of ``files`` is in ``folder``, downloading the missing ones.

    Raises:
        DataError: some files are missing and could not be downloaded; the message lists each missing
            file with its full target path and source URL.
    """
    missing = [f for f in files.values() if not (folder / f.name).is_file()]
    if not missing:
        return
    errors: list[str] = []
    if allow_download:
        for remote in missing:
            try:
                download(remote.url, folder / remote.name, remote.sha256)
            except DataError as exc:
                errors.append(str(exc).splitlines()[0])
        missing = [f for f in missing if not (folder / f.name).is_file()]
        if not missing:
            return
    listing = "\n".join(f"  {folder.absolute() / f.name}   (from {f.url})" for f in missing)
    why = f"downloading failed: {errors[0]}" if errors else "downloading is switched off (download=False)"
    raise DataError(
        f"{dataset}: {len(missing)} file(s) missing from {folder.absolute()} and {why}\n"
        f"Put these files there (the data root is `root=` or ${ENV_VAR}):\n{listing}"
    )
