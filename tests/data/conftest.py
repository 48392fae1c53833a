"""Fixtures for the data tests: the real data folder, and a guard that keeps tests off the network."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The read-only real data folder ($CDFLOW_DATA, else ../shared/data of this checkout)."""
    path = Path(os.environ.get("CDFLOW_DATA", "/work/shared/data"))
    assert path.is_dir(), f"real data folder {path} is missing; set CDFLOW_DATA"
    return path


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make every non-file urlopen fail as if offline; return the list of URLs that were tried."""
    tried: list[str] = []
    real_urlopen = urllib.request.urlopen

    def fake_urlopen(url, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        target = url if isinstance(url, str) else url.full_url
        if target.startswith("file:"):
            return real_urlopen(url, *args, **kwargs)
        tried.append(target)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    return tried
