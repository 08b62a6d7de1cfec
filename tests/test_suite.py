"""The suite itself: a clone without ../shared leaves out exactly the tests marked ``shared``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO


def _collected(*args: str, shared: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MELANOMA_SHARED_DIR": str(shared)}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
        cwd=REPO, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip


@pytest.mark.slow
def test_a_clone_without_shared_leaves_out_the_shared_tests_and_says_so(tmp_path: Path) -> None:
    (tmp_path / "present").mkdir()  # any existing folder: nothing is left out, all are listed
    listed = _collected("-m", "shared", shared=tmp_path / "present").stdout.splitlines()
    marked = {line for line in listed if "::" in line}
    without = _collected(shared=tmp_path / "absent")
    kept = {line for line in without.stdout.splitlines() if "::" in line}
    assert marked and not marked & kept
    assert f"{len(marked)} tests on the real shared data were left out" in without.stdout
