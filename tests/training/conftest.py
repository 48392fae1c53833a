"""Fixtures of the training tests."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture
def require_data() -> Callable[..., None]:
    """``require_data("mnist")`` skips the test when ``$CDFLOW_DATA/mnist`` is missing (no downloads in tests)."""

    def check(*parts: str) -> None:
        root = os.environ.get("CDFLOW_DATA")
        path = Path(root).joinpath(*parts) if root else None
        if path is None or not path.exists():
            pytest.skip(f"needs the data set at $CDFLOW_DATA/{'/'.join(parts)}")

    return check
