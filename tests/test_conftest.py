"""``tests/conftest.py``: without ``../shared`` a run ends with one loud line counting the real-data tests it skipped.

Each case runs pytest in a subprocess on a five-test suite beside a copy of the conftest, as ``make test`` does,
with ``REP3D_SHARED_DATA`` pointing at a missing folder or at one holding the (empty) files the fixtures look for.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

SUITE = """
import pytest


def test_ct(shared_data):
    pass


def test_ct_again(shared_data):
    pass


def test_schema(bundle_schema):
    pass


@pytest.mark.skip(reason="unrelated to the data")
def test_other_skip():
    pass


def test_without_data():
    pass
"""
SHARED_FILES = ("data/totalseg_ct_abdomen_3mm/example_ct_sm.nii.gz", "bundle_schema/meta_schema_20240725.json")


def run_suite(folder: Path, shared_data: Path) -> list:
    """The output lines of ``python -m pytest -q -ra`` on ``SUITE`` (``REP3D_REQUIRE_SHARED_DATA`` unset)."""
    folder.mkdir()
    shutil.copy(Path(__file__).with_name("conftest.py"), folder / "conftest.py")
    (folder / "test_suite.py").write_text(SUITE)
    env = {k: v for k, v in os.environ.items() if k != "REP3D_REQUIRE_SHARED_DATA"}
    env["REP3D_SHARED_DATA"] = str(shared_data)
    command = [sys.executable, "-m", "pytest", "-q", "-ra", "-p", "no:cacheprovider", str(folder)]
    result = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=120)
    return result.stdout.strip().splitlines()


def test_without_shared_the_run_ends_with_the_count_of_real_data_skips(tmp_path):
    shared = tmp_path / "missing"
    lines = run_suite(tmp_path / "suite", shared / "data")
    assert "1 passed, 4 skipped" in lines[-2], lines
    last = lines[-1]
    assert last.startswith("! 3 real-data tests SKIPPED: ") and last.endswith(" !"), lines
    for reason in (
        f"real test data not found at {shared / SHARED_FILES[0]}",
        f"bundle schema not found at {shared / SHARED_FILES[1]}",
    ):
        assert reason in last, (reason, last)
    assert "unrelated" not in last and "REP3D_SHARED_DATA" in last, last


def test_with_shared_there_is_no_such_line(tmp_path):
    shared = tmp_path / "shared"
    for name in SHARED_FILES:
        (shared / name).parent.mkdir(parents=True, exist_ok=True)
        (shared / name).touch()
    lines = run_suite(tmp_path / "suite", shared / "data")
    assert "4 passed, 1 skipped" in lines[-1] and not any("real-data" in line for line in lines), lines
