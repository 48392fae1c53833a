"""IDX reader on synthetic files, and the real MNIST / Fashion-MNIST files."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest

from cdflow.data.idx import IDX_SHA256, load_mnist, parse_idx, read_idx, write_idx
from cdflow.data.paths import sha256_file
from cdflow.errors import DataError

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize(
    "array",
    [
        np.arange(10, dtype=np.uint8),
        np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8),
        np.arange(-6, 6, dtype=np.int16).reshape(3, 4),
        np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 2, 2),
        np.arange(12, dtype=np.float64).reshape(12),
        np.array([-(2**31), 2**31 - 1], dtype=np.int32),
    ],
    ids=["labels", "images", "int16", "float32", "float64", "int32"],
)
def test_idx_round_trip(tmp_path: Path, array: np.ndarray, suffix: str) -> None:
    path = write_idx(tmp_path / f"file{suffix}", array)
    back = read_idx(path)
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)


def test_idx_magic_numbers_are_mnist_ones(tmp_path: Path) -> None:
    labels = write_idx(tmp_path / "l", np.zeros(3, np.uint8)).read_bytes()
    images = write_idx(tmp_path / "i", np.zeros((2, 28, 28), np.uint8)).read_bytes()
    assert labels[:4] == bytes([0, 0, 0x08, 0x01]) and images[:4] == bytes([0, 0, 0x08, 0x03])


def test_truncated_raw_idx_fails(tmp_path: Path) -> None:
    data = write_idx(tmp_path / "f", np.ones((4, 28, 28), np.uint8)).read_bytes()
    (tmp_path / "cut").write_bytes(data[:-100])
    with pytest.raises(DataError, match=r"truncated.*\(4, 28, 28\)"):
        read_idx(tmp_path / "cut")


def test_truncated_gzip_fails(tmp_path: Path) -> None:
    data = write_idx(tmp_path / "f.gz", np.random.default_rng(1).integers(0, 255, (50, 28, 28), np.uint8))
    blob = data.read_bytes()
    (tmp_path / "cut.gz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "cut.gz")


def test_gzip_of_a_short_body_fails(tmp_path: Path) -> None:
    raw = write_idx(tmp_path / "f", np.ones(100, np.uint8)).read_bytes()
    with gzip.open(tmp_path / "short.gz", "wb") as handle:
        handle.write(raw[:50])
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "short.gz")


def test_bad_headers_fail() -> None:
    with pytest.raises(DataError, match="not an IDX file"):
        parse_idx(b"\x01\x02\x08\x01")
    with pytest.raises(DataError, match="not an IDX file"):
        parse_idx(b"")
    with pytest.raises(DataError, match="unknown IDX type"):
        parse_idx(bytes([0, 0, 0x07, 1, 0, 0, 0, 1, 5]))
    with pytest.raises(DataError, match="truncated"):
        parse_idx(bytes([0, 0, 0x08, 3, 0, 0, 0, 1]))
    with pytest.raises(DataError, match="trailing"):
        parse_idx(bytes([0, 0, 0x08, 1, 0, 0, 0, 1, 5, 6]))


@pytest.mark.parametrize("kind", ["mnist", "fashion-mnist"])
def test_shared_gz_files_match_sha256sums(data_dir: Path, kind: str) -> None:
    sums = dict(line.split()[::-1] for line in (data_dir / "SHA256SUMS").read_text().splitlines() if line)
    for name in sorted((data_dir / kind).glob("*.gz")):
        assert sha256_file(name) == sums[f"{kind}/{name.name}"]


def test_real_mnist(data_dir: Path) -> None:
    images, labels = load_mnist(data_dir, "train", "mnist")
    assert images.shape == (60000, 28, 28) and images.dtype == np.uint8
    assert labels.dtype == np.int64 and labels.min() == 0 and labels.max() == 9
    assert np.bincount(labels).tolist() == MNIST_TRAIN_COUNTS
    assert labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    images, labels = load_mnist(data_dir, "test", "mnist")
    assert images.shape == (10000, 28, 28) and np.bincount(labels).tolist() == MNIST_TEST_COUNTS


def test_real_fashion_mnist(data_dir: Path) -> None:
    for split, n in (("train", 60000), ("test", 10000)):
        images, labels = load_mnist(data_dir, split, "fashion-mnist")
        assert images.shape == (n, 28, 28)
        assert np.bincount(labels, minlength=10).tolist() == [n // 10] * 10


def test_uncompressed_copy_is_accepted(data_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "mnist"
    folder.mkdir()
    for stem in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        with gzip.open(data_dir / "mnist" / f"{stem}.gz") as src, open(folder / stem, "wb") as dst:
            shutil.copyfileobj(src, dst)
    images, labels = load_mnist(tmp_path, "test", "mnist", download=False)
    assert images.shape == (10000, 28, 28) and labels[:3].tolist() == [7, 2, 1]


def test_tampered_content_fails_checksum(data_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "mnist"
    folder.mkdir()
    shutil.copyfile(data_dir / "mnist" / "t10k-images-idx3-ubyte.gz", folder / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(data_dir / "mnist" / "t10k-labels-idx1-ubyte.gz").copy()
    labels[0] = (labels[0] + 1) % 10
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", labels)
    with pytest.raises(DataError) as info:
        load_mnist(tmp_path, "test", "mnist", download=False)
    message = str(info.value)
    assert "corrupt or truncated" in message and IDX_SHA256["mnist"]["t10k-labels-idx1-ubyte"] in message
    assert "t10k-labels-idx1-ubyte.gz" in message
    load_mnist(tmp_path, "test", "mnist", verify=False, download=False)  # parses fine without the check


def test_missing_mnist_offline_says_which_files_where(tmp_path: Path, offline: list[str]) -> None:
    with pytest.raises(DataError) as info:
        load_mnist(tmp_path, "test", "fashion-mnist")
    message = str(info.value)
    for stem in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        assert str(tmp_path / "fashion-mnist" / stem) in message
    origin = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
    assert all(url.startswith(origin) for url in offline)
    assert len(offline) == 2


def test_missing_mnist_without_download(tmp_path: Path, offline: list[str]) -> None:
    with pytest.raises(DataError, match=str(tmp_path / "mnist" / "train-images-idx3-ubyte.gz")):
        load_mnist(tmp_path, "train", "mnist", download=False)
    assert offline == []


def test_unknown_kind_and_split(data_dir: Path) -> None:
    with pytest.raises(DataError, match="kind"):
        load_mnist(data_dir, "train", "kmnist")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="split"):
        load_mnist(data_dir, "valid", "mnist")  # type: ignore[arg-type]
