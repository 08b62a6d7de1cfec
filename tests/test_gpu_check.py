"""The prepared GPU check runs on a CPU machine too: CPU figures measured, GPU rows skipped."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def test_gpu_check_quick_runs_and_prints_one_table(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--work", str(tmp_path), "--quick"],
                          cwd=REPO, capture_output=True, text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    table = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    assert table[0] == "| section | measurement | result | peak GPU memory |"
    sections = {line.split(" | ")[0].strip("| ") for line in table[2:]}
    assert {
        "1 correctness",
        "2 stage 1",
        "3 decode",
        "4 stage 2",
        "5 fine-tuning",
        "6 versions",
    } <= sections
    assert "FAILED" not in done.stdout
    assert "ONNX Runtime vs torch, CPU | min cosine" in done.stdout
    if not torch.cuda.is_available():
        assert "skipped (no CUDA)" in done.stdout
