"""Shared fixtures: the real data folder (``ATLASREG_DATA``; .ci/run sets it to ../shared/data).

``ATLASREG_DATA`` is resolved once, here, when the session starts: a relative path (as in the README's test
command) is made absolute for every test, notebook and subprocess, whatever folder they run in.

Without the data folder, tests that need it are skipped with one line saying how to get it, and tests that do
not need it run. With ``ATLASREG_REQUIRE_DATA=1`` (CI sets it) a missing data folder fails those tests instead:
CI never passes by skipping.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

if os.environ.get("ATLASREG_DATA"):
    os.environ["ATLASREG_DATA"] = str(Path(os.environ["ATLASREG_DATA"]).expanduser().resolve())

HOW_TO_GET_DATA = ("set ATLASREG_DATA to the folder holding the real test data (see the README, 'Test'); "
                   "`atlasreg data fetch NAME --download` fetches a dataset's public originals")


def _data_dir() -> Path:
    env = os.environ.get("ATLASREG_DATA")
    return Path(env) if env else (REPO.parent / "shared" / "data")


def data_available() -> bool:
    return (_data_dir() / "README.md").is_file()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = _data_dir()
    if not (d / "README.md").is_file():
        msg = f"real test data not found at {d}: {HOW_TO_GET_DATA}"
        if os.environ.get("ATLASREG_REQUIRE_DATA") == "1":
            pytest.fail(msg + " (ATLASREG_REQUIRE_DATA=1: required here)")
        pytest.skip(msg)
    return d


@pytest.fixture(scope="session")
def ccf25_atlas(data_dir):
    """The real Allen CCFv3 25 µm annotation as the ``ccf`` space (µm, asr), loaded once per session.

    The TIF is stored LR, AP (0 = anterior), DV (0 = dorsal); loaded as asr like the CCF. Hemispheres come
    from the midline split (exact for the symmetric CCF).
    """
    from atlasreg import Atlas

    d = data_dir / "atlas"
    return Atlas.load(annotation=d / "ABA_25um_2017_annotation.tif", ontology=d / "allen_structure_tree.csv",
                      voxel_size=25, file_orientation="ras", orientation="asr", space="ccf")


def pytest_report_header(config):
    d = _data_dir()
    return f"atlasreg test data: {d}" + ("" if data_available() else f" (NOT FOUND: {HOW_TO_GET_DATA})")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not data_available():
        n = len(terminalreporter.stats.get("skipped", []))
        terminalreporter.write_line(f"{n} tests skipped: real test data not found at {_data_dir()}; "
                                    f"{HOW_TO_GET_DATA}", yellow=True)
