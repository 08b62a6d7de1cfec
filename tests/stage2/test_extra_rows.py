"""Extra training rows in stage 2: they train in every fold, never validate, never stop early."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stage1_embed.folds import make_folds
from stage1_embed.schema import read_provenance
from stage2_boost.config import Stage2Config
from stage2_boost.cv import prepare_folds
from stage2_boost.data import load_stage_data
from stage2_boost.errors import ConfigError, ContractError
from stage2_boost.features import create_feature_groups
from stage2_boost.outputs import read_runs
from stage2_boost.train import run_training
from tests.stage2.helpers import (
    FAST,
    make_embeddings,
    synthetic_manifest,
    write_embedding_file,
    write_stage1,
)


@pytest.fixture
def extra_features(tmp_path: Path) -> Path:
    """Stage 1 outputs of an extra set: 30 lesions of another source, train rows only."""
    manifest = synthetic_manifest(n_patients=30, per_patient=2, n_test_patients=0, seed=7)
    manifest["image_name"] = "EXTRA_" + manifest["image_name"]
    manifest["patient_id"] = "other:" + manifest["patient_id"]
    return write_stage1(tmp_path / "extra", manifest, {"bb": make_embeddings(manifest, seed=3)},
                        dataset="other")  # fmt: skip


def test_extra_rows_join_every_training_part_and_no_validation_fold(
    features: Path, extra_features: Path
) -> None:
    data = load_stage_data(features, None, [extra_features])
    train_rows, extra_rows = data.train_index()
    assert len(extra_rows) == 60 and data.frame["source"].iloc[extra_rows].eq("other").all()
    assert not data.is_extra[train_rows].any() and not data.is_extra[data.split_index("test")].any()

    def groups() -> list:
        return create_feature_groups(["metadata", "patient", "embedding"], ["bb"], "pca", 4, 0)

    for seed in range(6):  # a property over fold seeds
        folds = make_folds(data.frame.iloc[train_rows], 3, seed)
        matrices = prepare_folds(data, train_rows, folds, groups, seed, extra_rows=extra_rows)
        for fold in matrices:
            assert not data.is_extra[fold.valid_rows].any()
            assert not data.is_extra[fold.stop_rows].any()  # early stopping on primary patients
            assert set(extra_rows) <= set(fold.fit_rows)
            assert len(fold.X_fit) == len(fold.fit_rows)
        scored = np.concatenate([f.valid_rows for f in matrices])
        assert sorted(scored) == sorted(train_rows)


def test_patient_features_are_computed_within_each_source(features: Path, tmp_path: Path) -> None:
    manifest = synthetic_manifest(n_patients=4, per_patient=3, n_test_patients=0, seed=9)
    manifest["image_name"] = "EXTRA_" + manifest["image_name"]  # same patient ids as the primary
    extra = write_stage1(tmp_path / "same-ids", manifest, {"bb": make_embeddings(manifest)},
                         dataset="other")  # fmt: skip
    data = load_stage_data(features, None, [extra])
    from stage2_boost.features.patient import PatientFeatures

    values = PatientFeatures().compute(data)["patient__n_images"]
    assert (values[data.is_extra] == 3).all()
    assert (values[~data.is_extra] == 5).all()


def test_training_with_extra_data_scores_the_primary_rows_only(
    features: Path, extra_features: Path
) -> None:
    config = Stage2Config(features_dir=features, n_components=4, extra_data=(extra_features,),
                          feature_groups=("metadata", "patient", "embedding", "source"), **FAST)  # fmt: skip
    result = run_training(config)
    metrics = json.loads((config.stage2_dir / "metrics.json").read_text())
    oof = pd.read_parquet(config.stage2_dir / "oof.parquet")
    assert not oof["image_name"].str.startswith("EXTRA_").any()
    assert metrics["n_train"] == len(oof) == 200
    assert metrics["extra"]["n_rows"] == 60 and metrics["extra"]["sources"]["other"]["n_rows"] == 60
    assert metrics["extra"]["oof_auc"] is None
    assert read_runs(config.stage2_dir / "runs.csv")["n_extra"].tolist() == [60]
    assert ".x-other." in result.models[0].study  # its own study: not mixed with runs without
    test_pred = pd.read_parquet(config.stage2_dir / "test_pred.parquet")
    assert len(test_pred) == 25 and not test_pred["image_name"].str.startswith("EXTRA_").any()


def test_extra_data_must_match_the_primary_embeddings(
    features: Path, extra_features: Path, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="Run stage 1 with --extra-data"):
        _ = Stage2Config(
            features_dir=features, extra_data=(tmp_path / "nowhere",)
        ).extra_features_dirs
    manifest = pd.read_parquet(extra_features / "manifest.parquet")
    other = write_stage1(tmp_path / "wider", manifest, {}, dataset="wider")
    digest = read_provenance(other / "manifest.parquet")["inputs_digest"]
    write_embedding_file(other, "bb", manifest, make_embeddings(manifest),
                         {"inputs_digest": digest, "preprocessing": {"input_size": [3, 380, 380]}})  # fmt: skip
    with pytest.raises(ContractError, match="other preprocessing"):
        load_stage_data(features, None, [other])
    dup = synthetic_manifest(n_patients=2, per_patient=2, n_test_patients=0)  # primary's names
    clash = write_stage1(tmp_path / "clash", dup, {"bb": make_embeddings(dup)}, dataset="clash")
    with pytest.raises(ContractError, match="--drop-extra-duplicates"):
        load_stage_data(features, None, [clash])
