"""Shared pytest fixtures.

``shared_data`` points at the real CT/MR test volumes in ``../shared/data`` (beside the repository), and
``bundle_schema`` at MONAI's bundle metadata schema in ``../shared/bundle_schema`` (beside the data).
When they are absent the tests that need them are skipped with a clear reason, unless
``REP3D_REQUIRE_SHARED_DATA=1`` (set by ``.ci/run``), which turns the skip into a failure; the run then ends
with one line that says how many tests were skipped for it and why (``pytest_sessionfinish`` below).
"""

import os
from pathlib import Path
from typing import List

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """Location of the real test volumes (override with ``REP3D_SHARED_DATA``)."""
    return Path(os.environ.get("REP3D_SHARED_DATA", REPO_ROOT.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


SHARED_MISSING = "expected ../shared beside the repository"  # in every skip reason of ``require``


def require(path: Path, what: str) -> Path:
    """``path`` if it is a file; otherwise a skip, or a failure under ``REP3D_REQUIRE_SHARED_DATA=1``."""
    if not path.is_file():
        reason = f"{what} not found at {path} ({SHARED_MISSING})"
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


def shared_data_skips(reports) -> List[str]:
    """The skip reasons of the skipped test reports that ``require`` skipped (one per test)."""
    reasons = [report.longrepr[2] for report in reports if isinstance(report.longrepr, tuple)]
    return [reason.removeprefix("Skipped: ") for reason in reasons if SHARED_MISSING in reason]


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_sessionfinish(session):
    """After pytest's last line (the counts), one loud line if tests were skipped for want of ``../shared``."""
    result = yield
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skips = shared_data_skips(reporter.stats.get("skipped", [])) if reporter is not None else []
    if skips:
        why = "; ".join(sorted(set(reason.replace(f" ({SHARED_MISSING})", "") for reason in skips)))
        reporter.write_sep(
            "!",
            f"{len(skips)} real-data tests SKIPPED: {why}. Put the data in ../shared beside the repository or "
            "set REP3D_SHARED_DATA (REP3D_REQUIRE_SHARED_DATA=1 fails instead)",
            red=True,
            bold=True,
        )
    return result
