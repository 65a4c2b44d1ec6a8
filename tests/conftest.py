"""Shared pytest fixtures.

``shared_data`` points at the real CT/MR test volumes in ``../shared/data`` (beside the repository), and
``bundle_schema`` at MONAI's bundle metadata schema in ``../shared/bundle_schema`` (beside the data).
When they are absent the tests that need them are skipped with a clear reason, unless
``REP3D_REQUIRE_SHARED_DATA=1`` (set by ``.ci/run``), which turns the skip into a failure.
"""

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """Location of the real test volumes (override with ``REP3D_SHARED_DATA``)."""
    return Path(os.environ.get("REP3D_SHARED_DATA", REPO_ROOT.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


def require(path: Path, what: str) -> Path:
    """``path`` if it is a file; otherwise a skip, or a failure under ``REP3D_REQUIRE_SHARED_DATA=1``."""
    if not path.is_file():
        reason = f"{what} not found at {path} (expected ../shared beside the repository)"
        if os.environ.get("REP3D_REQUIRE_SHARED_DATA") == "1":
            pytest.fail(reason + " and REP3D_REQUIRE_SHARED_DATA=1")
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    require(path / "totalseg_ct_abdomen_3mm" / "example_ct_sm.nii.gz", "real test data")
    return path


@pytest.fixture(scope="session")
def bundle_schema() -> Path:
    """MONAI's bundle metadata schema (``meta_schema_20240725.json``, kept offline beside the data)."""
    return require(shared_data_dir().parent / "bundle_schema" / "meta_schema_20240725.json", "bundle schema")


@pytest.fixture
def one_thread():
    """One torch thread: on 2 shared cores a second thread mostly waits (see ``rep3d_networks.ops``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
