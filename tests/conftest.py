"""Shared fixtures: the real dataset beside the project and the embedded default dataset."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = Path(
    os.environ.get(
        "SEGLIB_REAL_DATA",
        ROOT.parent / "shared" / "data" / "aerial-dubai" / "Semantic segmentation dataset",
    )
)

# Under pytest-xdist (`make test-all`) each worker's NNI web UIs look for a port from their own
# start, so two experiments started at once never pick the same free port.
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
if WORKER.startswith("gw"):
    os.environ["SEGLIB_NNI_PORT"] = str(8080 + 300 * int(WORKER[2:]))


@pytest.fixture(scope="session")
def real_data_root() -> Path:
    """The real Kaggle dataset, read in place (never copied into the repository)."""
    if not REAL_DATA.is_dir():
        pytest.skip(f"real dataset not found at {REAL_DATA} (set SEGLIB_REAL_DATA)")
    return REAL_DATA


@pytest.fixture(scope="session")
def embedded_root(tmp_path_factory) -> Path:
    """The embedded default dataset, written once per test session in the Kaggle layout."""
    from seglib.data.embedded import write_embedded

    return write_embedded(tmp_path_factory.mktemp("embedded"))


@pytest.fixture(scope="module")
def data(embedded_root, tmp_path_factory):
    """The embedded dataset, with a patch cache of the test module's own (SEGLIB_CACHE)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SEGLIB_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield embedded_root
