"""Shared fixtures: the real data folder (``ATLASREG_DATA``, set by .ci/run to ../shared/data)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _data_dir() -> Path:
    env = os.environ.get("ATLASREG_DATA")
    return Path(env) if env else (REPO.parent / "shared" / "data")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = _data_dir()
    if not (d / "README.md").exists():
        pytest.fail(f"real test data not found at {d}: set ATLASREG_DATA to the shared data folder")
    return d
