"""Shared pytest fixtures.

``shared_data`` points at the real CT/MR test volumes in ``../shared/data`` (beside the repository).
When the folder is absent the tests that need it are skipped with a clear reason, unless
``REP3D_REQUIRE_SHARED_DATA=1`` (set by ``.ci/run``), which turns the skip into a failure.
"""

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """Location of the real test volumes (override with ``REP3D_SHARED_DATA``)."""
    return Path(os.environ.get("REP3D_SHARED_DATA", REPO_ROOT.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if not (path / "totalseg_ct_abdomen_3mm" / "example_ct_sm.nii.gz").is_file():
        reason = f"real test data not found at {path} (expected ../shared/data beside the repository)"
        if os.environ.get("REP3D_REQUIRE_SHARED_DATA") == "1":
            pytest.fail(reason + " and REP3D_REQUIRE_SHARED_DATA=1")
        pytest.skip(reason)
    return path
