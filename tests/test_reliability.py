"""Faults and reproducibility: kills, full disks, concurrent runs, identical reruns, no secrets."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import optuna
import pytest
from filelock import FileLock

from stage1_embed import common
from stage1_embed.common import CRASH_VARIABLE
from stage1_embed.config import Stage1Config
from stage1_embed.errors import OutputError
from stage1_embed.pipeline import run_stage1
from stage1_embed.schema import read_embeddings
from stage2_boost.config import Stage2Config
from stage2_boost.train import run_training
from tests.conftest import ISIC, REPO, lite0_dir, require
from tests.stage2.helpers import FAST


def test_atomic_write_leaves_the_old_file_when_the_disk_is_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "metrics.json"
    target.write_text("old")

    def full_disk(*_: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(common.os, "replace", full_disk)
    with pytest.raises(OutputError, match=r"disk is full.*Previous outputs were left untouched"):
        common.atomic_write_text(target, "new")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_stage2_on_a_full_disk_keeps_the_previous_outputs(
    features: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = Stage2Config(features_dir=features, n_components=4, **FAST)
    run_training(config)
    out = config.stage2_dir
    before = {
        p.name: p.read_bytes()
        for p in out.iterdir()
        if p.is_file() and p.suffix in (".json", ".parquet", ".csv")
    }
    monkeypatch.setattr(
        common.os, "replace", lambda *_: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full"))
    )
    with pytest.raises(OutputError, match="disk is full"):
        run_training(replace(config, n_trials=0))
    after = {
        p.name: p.read_bytes()
        for p in out.iterdir()
        if p.is_file() and p.suffix in (".json", ".parquet", ".csv")
    }
    assert before == after and not list(out.glob(".*.tmp"))


def test_second_stage2_run_on_the_same_folder_is_refused(features: Path) -> None:
    config = Stage2Config(features_dir=features, **FAST)
    config.stage2_dir.mkdir(parents=True)
    with (
        FileLock(str(config.stage2_dir / ".stage2.lock")),
        pytest.raises(OutputError, match="Another stage 2 run"),
    ):
        run_training(config)


def test_storage_password_never_reaches_outputs(features: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'o.db'}"
    result = run_training(
        Stage2Config(features_dir=features, storage=url, **{**FAST, "report": True})
    )
    assert result.metrics["storage"] == url  # no password to hide; the field is masked by mask_url
    from stage2_boost.tune import mask_url

    secret = "postgresql://u:hunter2@db/x"
    assert "hunter2" not in json.dumps(Stage2Config(storage=secret).to_json())
    assert "hunter2" not in mask_url(secret)


def test_stage1_embeddings_are_bit_identical_on_rerun(tiny_dataset: Path, tmp_path: Path) -> None:
    spec = f"local-dir:{lite0_dir()}"
    config = Stage1Config(data_dir=tiny_dataset, backbones=(spec,), num_workers=0, progress=False)
    run_stage1(replace(config, out_dir=tmp_path / "a"))
    run_stage1(replace(config, out_dir=tmp_path / "b"))
    a = read_embeddings(tmp_path / "a" / "embeddings" / "tf_efficientnet_lite0.parquet")
    b = read_embeddings(tmp_path / "b" / "embeddings" / "tf_efficientnet_lite0.parquet")
    assert a.keys.equals(b.keys) and np.array_equal(a.vectors, b.vectors)


@pytest.mark.slow
def test_killed_study_resumes_and_the_interrupted_trial_is_failed(features: Path) -> None:
    out = features / "stage2"
    args = [sys.executable, "-m", "stage2_boost", "train", "--features", str(features), "--folds", "3",
            "--components", "4", "--models", "lgbm", "--no-report", "--bootstrap", "50"]  # fmt: skip
    killed = subprocess.run(  # SIGKILLs itself inside its fifth trial
        [*args, "--trials", "500"], cwd=REPO, capture_output=True,
        env={**os.environ, CRASH_VARIABLE: "trial:5"},
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL
    storage = f"sqlite:///{out / 'optuna.db'}"
    name = optuna.get_all_study_summaries(storage)[0].study_name
    before = optuna.load_study(study_name=name, storage=storage).trials
    finished_before = sum(t.state.is_finished() for t in before)
    resumed = subprocess.run(
        [*args, "--trials", "2"], cwd=REPO, check=True, capture_output=True, text=True
    )
    after = optuna.load_study(study_name=name, storage=storage).trials
    states = [t.state for t in after]
    assert optuna.trial.TrialState.RUNNING not in states
    assert len(after) == len(before) + 2
    assert (
        sum(t.state.is_finished() and t.state != optuna.trial.TrialState.FAIL for t in after)
        >= finished_before
    )
    interrupted = [t for t in after if t.state == optuna.trial.TrialState.FAIL]
    assert len(interrupted) == len(before) - finished_before
    assert f"{len(interrupted)} interrupted trial(s) marked failed" in resumed.stderr


def test_stage2_refuses_features_made_from_an_older_csv(tiny_dataset: Path, tmp_path: Path) -> None:
    from stage2_boost.data import load_stage_data
    from stage2_boost.errors import ContractError

    run_stage1(Stage1Config(data_dir=tiny_dataset, out_dir=tmp_path / "out", backbones=()))
    load_stage_data(tmp_path / "out", None)
    csv = tiny_dataset / "train.csv"
    csv.write_text(csv.read_text().replace("torso", "head/neck", 1))
    with pytest.raises(
        ContractError, match=r"has changed since stage 1.*features are stale.*--stage 1"
    ):
        load_stage_data(tmp_path / "out", None)


_ONE_TRIAL = """
import sys, time
from pathlib import Path
from stage1_embed.folds import make_folds
from stage2_boost.boosters import LightGBMAdapter
from stage2_boost.cv import cross_validate, prepare_folds
from stage2_boost.data import load_stage_data
from stage2_boost.features import create_feature_groups
data = load_stage_data(Path(sys.argv[1]), None)
rows = data.split_index("train")
folds = prepare_folds(data, rows, make_folds(data.frame.iloc[rows], 5, 42),
                      lambda: create_feature_groups(["metadata", "patient"], [], "pca", 4, 0), 42)
adapter = LightGBMAdapter(seed=0, n_rows=len(folds[0].fit_rows), n_features=folds[0].X_fit.shape[1])
for fold in folds:
    fold.native(adapter)
started = time.perf_counter()
cross_validate(adapter, folds, adapter.default_params())
print(time.perf_counter() - started)
"""


def _trial_seconds(features: Path) -> float:
    done = subprocess.run([sys.executable, "-c", _ONE_TRIAL, str(features)], cwd=REPO,
                          capture_output=True, text=True, check=True)  # fmt: skip
    return float(done.stdout.strip().splitlines()[-1])


@pytest.mark.shared
@pytest.mark.slow
def test_a_trial_beside_a_busy_process_is_not_many_times_slower(tmp_path: Path) -> None:
    """One busy process in a session of its own (another terminal's pure-Python loop) takes one
    of the two cores. A full-scale LightGBM trial (the real train.csv, metadata + patient) ran
    85-210x slower beside it when one fold at a time had every core (each of its short OpenMP
    regions waited for the thread that was not running); with folds side by side, one thread
    each, it loses about what the lost core is worth."""
    csv = require(ISIC / "csv" / "train.csv")
    run_stage1(Stage1Config(data_dir=tmp_path, train_csv=csv, out_dir=tmp_path / "out",
                            backbones=(), progress=False))  # fmt: skip
    _trial_seconds(tmp_path / "out")  # warm the page cache and the imports
    alone = min(_trial_seconds(tmp_path / "out") for _ in range(2))
    other = subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)
    try:
        time.sleep(0.5)
        beside = _trial_seconds(tmp_path / "out")
    finally:
        other.kill()
        other.wait()
    assert beside < 3 * alone + 0.5, f"{beside:.1f} s beside a busy process, {alone:.1f} s alone"


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_outputs_written_atomically_respect_the_umask(tmp_path: Path, umask: int) -> None:
    """A temp-file-then-rename output used to keep mkstemp's private 0600 (manifest.parquet,
    metrics.json, predictions.csv), unreadable by a teammate beside the 0644 boosters."""
    before = os.umask(umask)
    try:
        common.atomic_write_text(tmp_path / "metrics.json", "{}")
        with common.atomic_folder(tmp_path / "model") as staging:
            (staging / "model.json").write_text("{}")
    finally:
        os.umask(before)
    assert (tmp_path / "metrics.json").stat().st_mode & 0o777 == 0o666 & ~umask
    assert (tmp_path / "model").stat().st_mode & 0o777 == 0o777 & ~umask
