"""data_root, checksums, download and fetch_missing (offline: no test touches the network)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from cdflow.data.paths import RemoteFile, data_root, download, fetch_missing, sha256_file, verify_checksum
from cdflow.errors import CdflowError, DataError


def test_data_root_prefers_argument_over_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDFLOW_DATA", "/nonexistent/elsewhere")
    assert data_root(tmp_path) == tmp_path
    assert data_root(str(tmp_path)) == tmp_path


def test_data_root_falls_back_to_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDFLOW_DATA", str(tmp_path))
    assert data_root() == tmp_path


def test_data_root_unset_says_how_to_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CDFLOW_DATA", raising=False)
    with pytest.raises(DataError, match="root=.*CDFLOW_DATA"):
        data_root()


def test_data_root_missing_folder_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "no-such-data"
    with pytest.raises(DataError, match="no-such-data.*does not exist"):
        data_root(missing)
    monkeypatch.setenv("CDFLOW_DATA", str(missing))
    with pytest.raises(DataError, match=r"no-such-data.*\$CDFLOW_DATA"):
        data_root()


def test_errors_are_cdflow_and_value_errors() -> None:
    assert issubclass(DataError, CdflowError) and issubclass(DataError, ValueError)


def test_sha256_file_matches_hashlib(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(b"x" * 3_000_000)
    assert sha256_file(path) == hashlib.sha256(b"x" * 3_000_000).hexdigest()


def test_verify_checksum_reports_both_hashes_and_fix(tmp_path: Path) -> None:
    path = tmp_path / "file.bin"
    path.write_bytes(b"hello")
    good = hashlib.sha256(b"hello").hexdigest()
    verify_checksum(path, good.upper())
    with pytest.raises(DataError) as info:
        verify_checksum(path, "0" * 64, url="https://example.org/file.bin")
    message = str(info.value)
    assert "corrupt or truncated" in message and good in message and "0" * 64 in message
    assert f"Delete {path}" in message and "https://example.org/file.bin" in message


def test_real_files_match_shared_sha256sums(data_dir: Path) -> None:
    """Small real files verify against SHA256SUMS (the large ones are covered by the loaders' own checks)."""
    sums = dict(line.split()[::-1] for line in (data_dir / "SHA256SUMS").read_text().splitlines() if line)
    for name in ("covid/england_covid.json", "gnn-benchmark/cora.npz", "mnist/t10k-labels-idx1-ubyte.gz"):
        verify_checksum(data_dir / name, sums[name])


def test_download_from_file_url_checks_hash(tmp_path: Path) -> None:
    source = tmp_path / "src.bin"
    source.write_bytes(b"payload")
    digest = hashlib.sha256(b"payload").hexdigest()
    dest = download(source.as_uri(), tmp_path / "out" / "dest.bin", digest)
    assert dest.read_bytes() == b"payload"
    with pytest.raises(DataError, match="corrupt or truncated"):
        download(source.as_uri(), tmp_path / "out" / "bad.bin", "1" * 64)
    assert not (tmp_path / "out" / "bad.bin").exists()
    leftovers = [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]
    assert not leftovers, "temporary file left behind"


def test_download_offline_names_file_and_folder(tmp_path: Path, offline: list[str]) -> None:
    url = "https://example.org/data/cora.npz"
    with pytest.raises(DataError) as info:
        download(url, tmp_path / "gnn-benchmark" / "cora.npz", None)
    message = str(info.value)
    assert url in message and "cora.npz" in message and str(tmp_path / "gnn-benchmark") in message
    assert offline == [url]
    assert not (tmp_path / "gnn-benchmark" / "cora.npz").exists()


def test_fetch_missing_without_download_lists_every_path(tmp_path: Path, offline: list[str]) -> None:
    files = {k: RemoteFile(f"{k}.bin", f"https://example.org/{k}.bin") for k in ("a", "b")}
    (tmp_path / "b.bin").write_bytes(b"present")
    with pytest.raises(DataError) as info:
        fetch_missing(tmp_path, files, dataset="demo", allow_download=False)
    message = str(info.value)
    assert str(tmp_path / "a.bin") in message and "https://example.org/a.bin" in message
    assert "b.bin" not in message and "download=False" in message
    assert offline == []


def test_fetch_missing_offline_lists_files_and_folder(tmp_path: Path, offline: list[str]) -> None:
    files = {k: RemoteFile(f"{k}.bin", f"https://example.org/{k}.bin") for k in ("a", "b")}
    with pytest.raises(DataError) as info:
        fetch_missing(tmp_path, files, dataset="demo")
    message = str(info.value)
    assert "2 file(s) missing" in message
    assert str(tmp_path / "a.bin") in message and str(tmp_path / "b.bin") in message
    assert sorted(offline) == ["https://example.org/a.bin", "https://example.org/b.bin"]


def test_package_exports_resolve_lazily() -> None:
    import cdflow.data as data

    assert sorted(data.__all__) == sorted(data._EXPORTS)
    for name in data.__all__:
        assert getattr(data, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        data.nope  # noqa: B018
