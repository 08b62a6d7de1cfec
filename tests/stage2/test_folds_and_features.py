"""Fold properties, leakage, and every feature group on tiny data."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stage1_embed.errors import DataError
from stage1_embed.folds import load_or_make_folds, make_folds
from stage2_boost.config import GROUPS
from stage2_boost.cv import prepare_folds
from stage2_boost.data import load_stage_data
from stage2_boost.errors import ConfigError
from stage2_boost.features import (
    build_features,
    create_feature_groups,
    feature_group_of,
    transform_all,
)
from stage2_boost.features.patient_context import leave_one_out_z
from stage2_boost.features.ugly_duckling import patient_outlier_stats
from tests.stage2.helpers import make_embeddings, synthetic_manifest, write_stage1


@pytest.fixture
def data(tmp_path: Path):
    manifest = synthetic_manifest()
    write_stage1(tmp_path, manifest, {"bb": make_embeddings(manifest)})
    return load_stage_data(tmp_path, None)


def train_part(data) -> pd.DataFrame:
    return data.frame.iloc[data.split_index("train")]


def test_folds_are_patient_grouped_and_deterministic(data) -> None:
    train = train_part(data)
    folds = make_folds(train, 5, seed=3)
    per_patient = pd.Series(folds).groupby(train["patient_id"].to_numpy()).nunique()
    assert (per_patient == 1).all() and set(folds) == set(range(5))
    assert np.array_equal(folds, make_folds(train, 5, seed=3))
    assert not np.array_equal(folds, make_folds(train, 5, seed=4))
    positives = pd.Series(train["target"].to_numpy(int)).groupby(folds).sum()
    assert positives.min() >= 1


def test_folds_are_saved_and_reused(data, tmp_path: Path) -> None:
    train = train_part(data)
    first, reused = load_or_make_folds(train, 5, 7, tmp_path / "folds.parquet")
    again, reused_again = load_or_make_folds(train, 5, 7, tmp_path / "folds.parquet")
    assert not reused and reused_again and np.array_equal(first, again)
    _, reused_other_seed = load_or_make_folds(train, 5, 8, tmp_path / "folds.parquet")
    assert not reused_other_seed


def test_single_class_and_too_few_positives_are_refused(data) -> None:
    train = train_part(data).copy()
    with pytest.raises(DataError, match="single class"):
        make_folds(train.assign(target=0), 5, 0)
    few = train.assign(target=0)
    few.iloc[:3, few.columns.get_loc("target")] = 1
    with pytest.raises(DataError, match="3 malignant image\\(s\\), fewer than the 5 folds"):
        make_folds(few, 5, 0)
    with pytest.raises(DataError, match="no training images, only test images"):
        make_folds(train.iloc[:0], 5, 0)  # e.g. a folder that scoring wrote


def test_warns_when_a_fold_has_few_positives(data, caplog: pytest.LogCaptureFixture) -> None:
    train = train_part(data).assign(target=0)
    train.iloc[[0, 10, 20, 30, 40, 50], train.columns.get_loc("target")] = 1
    with caplog.at_level(logging.WARNING):
        make_folds(train, 5, 0)
    lines = [r.getMessage() for r in caplog.records if "malignant" in r.getMessage()]
    assert len(lines) == 1, "one line per split, naming it"  # was one line per fold
    assert lines[0].startswith("folds (seed 0): fold 0 has 1") and "fewer than 5" in lines[0]


def groups_factory(names=GROUPS):
    return lambda: create_feature_groups(names, ["bb"], "pca", 4, 0)


def test_leakage_validation_labels_and_images_do_not_reach_training_features(data) -> None:
    train_rows = data.split_index("train")
    folds = make_folds(data.frame.iloc[train_rows], 4, 0)
    before = prepare_folds(data, train_rows, folds, groups_factory(), 0)
    valid = before[0].valid_rows
    data.frame.loc[valid, "target"] = np.random.default_rng(0).permutation(
        data.frame.loc[valid, "target"].to_numpy()
    )
    data.embeddings["bb"][valid] = np.random.default_rng(1).normal(
        0, 5, data.embeddings["bb"][valid].shape
    )
    after = prepare_folds(data, train_rows, folds, groups_factory(), 0)
    pd.testing.assert_frame_equal(before[0].X_fit, after[0].X_fit)
    pd.testing.assert_frame_equal(before[0].X_stop, after[0].X_stop)
    image_cols = [c for c in before[0].X_valid if not c.startswith(("bb__", "patient_scores__"))]
    pd.testing.assert_frame_equal(before[0].X_valid[image_cols], after[0].X_valid[image_cols])


def test_every_group_on_tiny_data(data) -> None:
    rows = data.split_index("train")
    data.experts["ex"] = np.random.default_rng(0).uniform(0.01, 0.99, len(data.frame))
    for name in GROUPS:
        names = ["probe", name] if name == "patient-scores" else [name]  # it derives from scores
        groups = create_feature_groups(names, ["bb"], "pca", 4, 0, experts=["ex"])
        frame = build_features(groups, data, rows, [rows])[0]
        assert len(frame) == len(rows) and frame.shape[1] > 0, name
        assert {feature_group_of(c) for c in frame.columns} == set(names), name
    meta = (
        create_feature_groups(["metadata"], [], "pca", 4, 0)[0]
        .fit(data, rows)
        .transform(data, rows)
    )
    assert (
        meta["meta__site"].isna().sum()
        == data.frame.iloc[rows]["anatom_site_general_challenge"].isna().sum()
    )
    assert str(meta["meta__sex"].dtype) == "category"


def test_patient_statistics_are_per_split_and_label_free(data) -> None:
    group = create_feature_groups(["patient"], [], "pca", 4, 0)[0]
    all_rows = np.arange(len(data.frame))
    before = group.transform(data, all_rows)
    data.frame["target"] = 1 - data.frame["target"].fillna(0)
    group2 = create_feature_groups(["patient"], [], "pca", 4, 0)[0]
    pd.testing.assert_frame_equal(before, group2.transform(data, all_rows))
    assert (before["patient__n_images"] == 5).all()


def test_ugly_duckling_finds_the_odd_lesion() -> None:
    vectors = np.array([[1, 0, 0], [0.95, 0.05, 0], [0.9, 0.1, 0], [0, 0, 1.0]])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    stats = patient_outlier_stats(vectors)
    assert stats[:, 0].argmax() == 3 and stats[3, 2] == 1.0 and stats[3, 1] > 1
    assert stats[3, 3] > stats[0, 3]


def test_single_image_patients_get_missing_ugly_duckling_values(tmp_path: Path) -> None:
    manifest = synthetic_manifest(n_patients=10, per_patient=1, n_test_patients=0)
    write_stage1(tmp_path, manifest, {"bb": make_embeddings(manifest)})
    data = load_stage_data(tmp_path, None)
    ud = create_feature_groups(["ugly-duckling"], ["bb"], "pca", 4, 0)[0]
    assert ud.transform(data, np.arange(10)).isna().all().all()


def test_probe_scores_training_rows_out_of_fold(tmp_path: Path) -> None:
    """On pure-noise embeddings an in-sample probe would look perfect; ours stays near chance."""
    from sklearn.metrics import roc_auc_score

    manifest = synthetic_manifest(n_patients=60, per_patient=4, n_test_patients=0)
    noise = np.random.default_rng(3).normal(size=(len(manifest), 300)).astype(np.float32)
    write_stage1(tmp_path, manifest, {"bb": noise})
    data = load_stage_data(tmp_path, None)
    rows = data.split_index("train")
    probe = create_feature_groups(["probe"], ["bb"], "pca", 4, 0)[0].fit(data, rows)
    y = data.frame["target"].to_numpy(dtype=int, na_value=0)[rows]
    oof_auc = roc_auc_score(y, probe.transform(data, rows)["bb__probe"])
    in_sample_auc = roc_auc_score(y, probe.model_.decision_function(noise[rows]))
    assert in_sample_auc > 0.95 and abs(oof_auc - 0.5) < 0.15


def test_importing_stage2_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = ("import sys, stage2_boost.train, stage2_boost.__main__, stage2_boost.report, "
            "stage2_boost.inspect_studies; print('torch' in sys.modules, 'timm' in sys.modules)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"


@pytest.mark.parametrize(
    ("module", "absent"),
    [
        ("stage2_boost.cli", ("lightgbm", "xgboost", "torch", "optuna", "sklearn", "pandas")),
        ("stage2_boost.runs", ("lightgbm", "xgboost", "torch", "optuna", "sklearn")),
        ("stage2_boost.inspect_studies", ("lightgbm", "xgboost", "torch")),
        ("stage2_boost", ("lightgbm", "xgboost", "torch", "optuna", "sklearn", "pandas")),
    ],
)
def test_the_parser_runs_and_inspect_import_only_what_they_use(
    module: str, absent: tuple[str, ...]
) -> None:
    """``--help`` builds the parser from stage2_boost.cli; ``runs`` and ``inspect`` add their module."""
    import subprocess
    import sys

    code = f"import sys, {module}; print([m for m in {absent!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_patient_context_scores_each_image_against_its_patients_others(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    values = rng.normal(size=(6, 3))
    z = leave_one_out_z(values)
    for i in range(6):
        others = np.delete(values, i, axis=0)
        assert np.allclose(z[i], (values[i] - others.mean(0)) / others.std(0))
    manifest = synthetic_manifest(n_patients=8, per_patient=6, n_test_patients=0)
    vectors = rng.normal(0, 0.1, (len(manifest), 16)) + 1.0
    vectors[::6] = -vectors[::6]  # the first image of every patient looks like none of the others
    write_stage1(tmp_path, manifest, {"bb": vectors})
    data = load_stage_data(tmp_path, None)
    rows = np.arange(len(manifest))
    (group,) = create_feature_groups(["patient-context"], ["bb"], "pca", 4, 0)
    frame = group.fit(data, rows).transform(data, rows)
    lof = frame["bb__pc_lof"].to_numpy().reshape(8, 6)
    assert (lof.argmax(axis=1) == 0).all() and (lof[:, 0] > 2).all()


def test_patients_sharing_an_identical_image_share_a_fold(tmp_path: Path) -> None:
    """One picture under two patient ids never sits in two folds, unless asked (issue 28)."""
    from stage1_embed.folds import fold_groups

    train = synthetic_manifest(n_patients=40, per_patient=3, n_test_patients=0)
    train.loc[[0, 9], "content_sha256"] = "same picture"  # patients P_0000 and P_0003
    train.loc[[12, 30], "content_sha256"] = "another"  # P_0004 and P_0010: chains stay apart
    groups = fold_groups(train)
    assert groups[0] == groups[9] == groups[10] == "P_0000" and groups[12] == groups[30] == "P_0004"
    assert (groups != train["patient_id"]).sum() == 6  # P_0003's and P_0010's images
    folds, _ = load_or_make_folds(train, 5, 7, tmp_path / "folds.parquet")
    assert folds[0] == folds[9] and folds[12] == folds[30]
    assert set(pd.read_parquet(tmp_path / "folds.parquet")["group"]) == set(groups)
    _, reused = load_or_make_folds(train, 5, 7, tmp_path / "folds.parquet", merge_duplicates=False)
    assert not reused  # the opt-out is another fold assignment, not the saved one
    assert (fold_groups(train, merge_duplicates=False) == train["patient_id"]).all()


def test_the_summary_says_how_many_images_were_regrouped(tmp_path: Path) -> None:
    from stage2_boost.cli import format_run_summary
    from stage2_boost.config import Stage2Config
    from stage2_boost.train import run_training
    from tests.stage2.helpers import FAST

    manifest = synthetic_manifest()
    manifest.loc[[0, 5], "content_sha256"] = "same picture"
    features = write_stage1(tmp_path / "f", manifest, {"bb": make_embeddings(manifest)})
    metrics = run_training(
        Stage2Config(features_dir=features, feature_groups=("metadata",), **FAST)
    ).metrics
    assert metrics["folds"]["regrouped"] == 5  # the second patient's five images
    assert "5 image(s) regrouped" in format_run_summary(metrics, tmp_path)


def test_a_training_image_is_never_its_own_patients_neighbour(tmp_path: Path) -> None:
    """Each patient's images are identical and share one random label: counting the patient's
    own images would make the vote perfect; leaving them out leaves chance."""
    from sklearn.metrics import roc_auc_score

    manifest = synthetic_manifest(n_patients=80, per_patient=3, n_test_patients=0)
    rng = np.random.default_rng(4)
    labels = rng.random(80) < 0.3
    manifest["target"] = np.repeat(labels, 3).astype(int)
    write_stage1(tmp_path, manifest, {"bb": np.repeat(rng.normal(size=(80, 32)), 3, axis=0)})
    data = load_stage_data(tmp_path, None)
    rows = data.split_index("train")
    (group,) = create_feature_groups(["neighbours"], ["bb"], "pca", 4, 0)
    frame = group.fit(data, rows).transform(data, rows)
    assert abs(roc_auc_score(manifest["target"], frame["bb__knn_share"]) - 0.5) < 0.15
    # a new image identical to a training patient's is that patient's neighbour
    group.own_ = {}
    fresh = group.transform(data, rows)
    assert roc_auc_score(manifest["target"], fresh["bb__knn_closest"]) > 0.99


def test_the_diagnosis_head_keeps_one_column_per_class_in_every_fold(data) -> None:
    rows = data.split_index("train")
    without_melanoma = rows[data.frame["diagnosis"].to_numpy()[rows] != "melanoma"]
    (group,) = create_feature_groups(["diagnosis"], ["bb"], "pca", 4, 0)
    every = group.fit(data, rows).transform(data, rows)
    assert list(every.columns) == ["bb__dx_melanoma", "bb__dx_nevus", "bb__dx_unknown"]
    assert np.allclose(every.sum(axis=1), 1)
    partial = group.fit(data, without_melanoma).transform(data, rows)
    assert list(partial.columns) == list(every.columns) and (partial["bb__dx_melanoma"] == 0).all()
    data.frame["diagnosis"] = "unknown"
    with pytest.raises(ConfigError, match="needs two or more diagnoses"):
        group.fit(data, rows)


def test_patient_scores_are_each_score_against_the_patients_images() -> None:
    from stage2_boost.data import StageData
    from stage2_boost.features.patient_scores import PatientScoreFeatures

    frame = pd.DataFrame({"patient_id": ["a", "a", "a", "b"], "split": "train", "target": 0})
    built = pd.DataFrame({"bb__probe": [1.0, 2.0, 6.0, 5.0], "bb__pca_00": [9.0, 9, 9, 9]})
    out = PatientScoreFeatures().derive(StageData(frame), np.arange(4), built)
    assert list(out.columns) == ["patient_scores__bb_probe_z", "patient_scores__bb_probe_rank"]
    z = out["patient_scores__bb_probe_z"].to_numpy()
    assert np.allclose(z[:3], (np.array([1, 2, 6]) - 3) / np.std([1, 2, 6], ddof=1))
    assert np.isnan(z[3]) and np.isnan(out["patient_scores__bb_probe_rank"][3])
    assert out["patient_scores__bb_probe_rank"][:3].tolist() == pytest.approx([1 / 3, 2 / 3, 1])


@pytest.mark.parametrize("name", ["probe", "diagnosis", "neighbours"])
def test_a_saved_label_group_scores_new_rows_as_the_fitted_one(data, name, tmp_path: Path) -> None:
    from stage2_boost.model.load import read_group_state
    from stage2_boost.model.save import write_group_state

    train, test = data.split_index("train"), data.split_index("test")
    fitted = create_feature_groups([name], ["bb"], "pca", 4, 0)
    build_features(fitted, data, train, [])
    values = write_group_state(fitted, tmp_path / "state.safetensors")
    fresh = create_feature_groups([name], ["bb"], "pca", 4, 0)
    read_group_state(fresh, values, tmp_path / "state.safetensors")
    expected = transform_all(fitted, data, test)
    pd.testing.assert_frame_equal(transform_all(fresh, data, test), expected, rtol=1e-6)


def test_experts_and_the_expert_group_are_named_together(tmp_path: Path) -> None:
    """Experts named with groups that leave out 'expert' would be loaded and silently unused."""
    from stage2_boost.config import Stage2Config
    from stage2_boost.data import StageData
    from stage2_boost.train import resolve_groups

    frame = synthetic_manifest(n_patients=3, per_patient=2, n_test_patients=0)
    with_expert = StageData(frame=frame, experts={"ex": np.full(len(frame), 0.5)})
    config = Stage2Config(features_dir=tmp_path, out_dir=tmp_path, feature_groups=("metadata",))
    with pytest.raises(ConfigError, match="leave out 'expert'"):
        resolve_groups(config, with_expert)
    with pytest.raises(ConfigError, match="needs --experts"):
        resolve_groups(
            replace(config, feature_groups=("metadata", "expert")), StageData(frame=frame)
        )
    assert resolve_groups(replace(config, feature_groups=None), with_expert)[-1] == "expert"
