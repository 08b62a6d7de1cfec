"""Stage 1 split over processes on real JPEGs: started together, killed and restarted, mismatched.

Each shard is a real ``python -m stage1_embed --num-shards N --shard-index i`` process sharing one
output folder, as a SLURM array or plain background processes run them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from stage1_embed.common import CRASH_VARIABLE
from tests.conftest import REPO, WEIGHTS, lite0_dir, require

pytestmark = pytest.mark.slow
SLUG = "tf_efficientnet_lite0"
N_IMAGES, CHUNK = 192, 16


@pytest.fixture(scope="module")
def jpegs(isic_layout: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """192 of the real shared ISIC JPEGs in the Kaggle layout."""
    csv = pd.read_csv(isic_layout / "train.csv").head(N_IMAGES)
    root = tmp_path_factory.mktemp("shards") / "isic192"
    (root / "jpeg" / "train").mkdir(parents=True)
    for name in csv["image_name"]:
        (root / "jpeg" / "train" / f"{name}.jpg").symlink_to(
            (isic_layout / "jpeg" / "train" / f"{name}.jpg").resolve()
        )
    csv.to_csv(root / "train.csv", index=False)
    return root


def command(data: Path, out: Path, *extra: str) -> list[str]:
    spec = f"local-dir:{lite0_dir()}"
    return [sys.executable, "-m", "stage1_embed", "--data", str(data), "--out", str(out),
            "--backbones", spec, "--chunk-size", str(CHUNK), "--batch-size", "16",
            "--workers", "0", "--no-progress", *extra]  # fmt: skip


def shard(data: Path, out: Path, index: int, n: int, *extra: str) -> list[str]:
    return command(data, out, "--num-shards", str(n), "--shard-index", str(index), *extra)


def run(args: list[str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def embedded(done: subprocess.CompletedProcess[str]) -> int:
    return int(next(line for line in done.stdout.splitlines() if line.startswith(SLUG)).split()[1])


@pytest.fixture(scope="module")
def reference(jpegs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("single")
    run(command(jpegs, out))
    return out / "embeddings" / f"{SLUG}.parquet"


def parts_of(out: Path) -> list[Path]:
    return sorted((out / "embeddings" / ".parts").glob("*/part-*.parquet"))


def test_three_shards_started_together_equal_one_process(
    jpegs: Path, reference: Path, tmp_path: Path
) -> None:
    out = tmp_path / "sharded"
    processes = [
        subprocess.Popen(
            shard(jpegs, out, i, 3),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-3000:]
    assembled = pq.read_table(out / "embeddings" / f"{SLUG}.parquet")
    assert assembled.equals(pq.read_table(reference))  # same rows, order and float bits
    assert not (out / "embeddings" / ".parts" / "shard-plan.json").exists()


def test_a_killed_shard_restarts_losing_at_most_one_chunk(
    jpegs: Path, reference: Path, tmp_path: Path
) -> None:
    out = tmp_path / "killed"
    killed = subprocess.run(  # SIGKILLs itself once its second chunk is saved
        shard(jpegs, out, 0, 2), cwd=REPO, stderr=subprocess.DEVNULL,
        env={**os.environ, CRASH_VARIABLE: "part:2"},
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL
    kept = len(parts_of(out))
    shard0_chunks = len(range(0, N_IMAGES // CHUNK, 2))
    assert kept == 2 < shard0_chunks  # killed mid-way, its finished chunks on disk
    resumed = run(shard(jpegs, out, 0, 2))
    assert embedded(resumed) == (shard0_chunks - kept) * CHUNK  # only the unfinished chunks
    assert "wait for other shards" in resumed.stdout
    run(shard(jpegs, out, 1, 2))  # the last shard assembles
    assert pq.read_table(out / "embeddings" / f"{SLUG}.parquet").equals(pq.read_table(reference))


def test_a_shard_with_other_settings_refuses_to_join(jpegs: Path, tmp_path: Path) -> None:
    out = tmp_path / "mixed"
    run(shard(jpegs, out, 0, 2))
    for extra, what in ((("--input-size", "256"), f"settings of {SLUG}"),
                        (("--num-shards", "3"), "num_shards")):  # fmt: skip
        args = shard(jpegs, out, 1, 2)
        if extra[0] == "--num-shards":
            args = command(jpegs, out, "--num-shards", "3", "--shard-index", "1")
        else:
            args += list(extra)
        done = subprocess.run(args, cwd=REPO, capture_output=True, text=True)
        assert done.returncode == 2 and "cannot join the sharded run" in done.stderr
        assert what in done.stderr and "Traceback" not in done.stderr
    other = f"local-dir:{require(WEIGHTS / 'mobilenetv2_100_tfslim_quant')}"
    args = shard(jpegs, out, 1, 2)
    args[args.index("--backbones") + 1] = other
    done = subprocess.run(args, cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 2 and "backbones" in done.stderr
