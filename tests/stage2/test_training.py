"""Adapters, the Optuna objective, full training runs, outputs, and the stage boundary checks."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from stage1_embed.folds import make_folds
from stage1_embed.schema import read_manifest
from stage2_boost.boosters import BOOSTERS, create_booster
from stage2_boost.config import Stage2Config
from stage2_boost.cv import cross_validate, prepare_folds
from stage2_boost.data import load_stage_data
from stage2_boost.errors import ConfigError, ContractError
from stage2_boost.features import create_feature_groups
from stage2_boost.inspect_studies import describe_study, study_table
from stage2_boost.train import run_training
from stage2_boost.tune import ROUND_WARMUP, make_objective, mask_url, open_storage
from tests.conftest import ISIC, require
from tests.stage2.helpers import (
    FAST,
    make_embeddings,
    write_embedding_file,
)


@pytest.fixture
def config(features: Path) -> Stage2Config:
    return Stage2Config(features_dir=features, n_components=4, **FAST)


@pytest.mark.parametrize("name", sorted(BOOSTERS))
def test_every_adapter_fits_and_predicts_probabilities(name: str) -> None:
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=600), "b": rng.normal(size=600),
                      "c": pd.Categorical(rng.choice(["x", "y", None], 600))})  # fmt: skip
    y = (X["a"] + 0.3 * rng.normal(size=600) > 0.8).astype(int).to_numpy()
    adapter = create_booster(name, seed=0, max_rounds=300, early_stopping=20)
    fitted = adapter.fit(
        adapter.prepare(X[:400], y[:400], X[400:500], y[400:500]), adapter.default_params()
    )
    pred = adapter.predict(fitted, X[500:])
    assert pred.shape == (100,) and (pred >= 0).all() and (pred <= 1).all()
    assert roc_auc_score(y[500:], pred) > 0.9 and fitted.best_iteration >= 1
    assert set(adapter.gain_importance(fitted)) <= {
        "a",
        "b",
        "c",
    } and "a" in adapter.gain_importance(fitted)
    fixed = adapter.fit(adapter.prepare(X[:500], y[:500]), adapter.default_params(), n_rounds=25)
    assert (
        fixed.best_iteration == 25 and roc_auc_score(y[500:], adapter.predict(fixed, X[500:])) > 0.9
    )
    params = adapter.suggest_params(optuna.trial.FixedTrial(adapter.default_params()))
    assert params == adapter.default_params()


def test_objective_runs_under_fixed_trial(features: Path) -> None:
    data = load_stage_data(features, None)
    rows = data.split_index("train")
    folds = make_folds(data.frame.iloc[rows], 3, 0)
    prepared = prepare_folds(
        data,
        rows,
        folds,
        lambda: create_feature_groups(["metadata", "embedding"], ["bb"], "pca", 4, 0),
        0,
    )
    adapter = create_booster("lgbm", max_rounds=100, early_stopping=10)
    trial = optuna.trial.FixedTrial(adapter.default_params())
    value = make_objective(adapter, prepared, {"groups": ["metadata"]})(trial)
    assert 0.5 < value <= 1.0


@pytest.mark.parametrize("name", sorted(BOOSTERS))
def test_tuning_fits_use_the_search_bins_and_refits_the_full_ones(
    features: Path, name: str
) -> None:
    data = load_stage_data(features, None)
    rows = data.split_index("train")
    folds = prepare_folds(data, rows, make_folds(data.frame.iloc[rows], 3, 0),
                          lambda: create_feature_groups(["metadata"], [], "pca", 4, 0), 0)  # fmt: skip
    coarse = create_booster(name, max_rounds=50, early_stopping=10, search_bins=15)
    bins = {"lgbm": lambda p: p[2]["max_bin"], "xgb": lambda p: p[2]}[name]
    assert bins(folds[0].native(coarse)) == 15
    assert bins(folds[0].native(coarse, whole=True)) == coarse.full_bins
    full = create_booster(name, max_rounds=50, early_stopping=10)
    assert bins(folds[0].native(full)) == full.full_bins  # a separate entry, not the coarse one


def _three_folds(features: Path) -> list:
    data = load_stage_data(features, None)
    rows = data.split_index("train")
    return prepare_folds(data, rows, make_folds(data.frame.iloc[rows], 3, 0),
                         lambda: create_feature_groups(["metadata", "embedding"], ["bb"], "pca", 4, 0), 0)  # fmt: skip


@pytest.mark.parametrize("name", sorted(BOOSTERS))
def test_round_pruning_stops_a_poor_trial_inside_its_first_fold(features: Path, name: str) -> None:
    folds = _three_folds(features)
    adapter = create_booster(name, max_rounds=200, early_stopping=200)
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner(
        n_startup_trials=2, n_warmup_steps=ROUND_WARMUP))  # fmt: skip
    for rounds in range(10, 210, 10):  # two finished trials that were perfect at every step
        study.add_trial(optuna.create_trial(value=1.0, params={}, distributions={},
                                            intermediate_values={rounds: 1.0}))  # fmt: skip
    seen: list[int] = []
    objective = make_objective(adapter, folds, {"groups": []}, prune_rounds=True)

    def watched(trial: optuna.Trial) -> float:
        original = trial.report
        trial.report = lambda value, step: (seen.append(step), original(value, step))[1]  # type: ignore[method-assign]
        return objective(trial)

    study.optimize(watched, n_trials=1)
    trial = study.trials[-1]
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert trial.user_attrs["pruned"].startswith(f"after {ROUND_WARMUP} rounds of fold 0")
    assert seen == [ROUND_WARMUP]  # every 10 rounds from the warm-up on (earlier are never judged)


def test_training_writes_valid_outputs_and_resumes_studies(config: Stage2Config) -> None:
    first = run_training(config)
    out = config.stage2_dir
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("oof_auc", "oof_auc_ci95", "tuning_auc", "models", "fold_aucs", "n_train", "n_pos",
                "feature_groups", "backbones", "run_id"):  # fmt: skip
        assert key in metrics, key
    low, high = metrics["oof_auc_ci95"]
    assert low <= metrics["oof_auc"] <= high and metrics["oof_auc"] > 0.7
    assert (
        set(metrics["models"]) == {"lgbm", "xgb"}
        and len(metrics["models"]["lgbm"]["fold_aucs"]) == 3
    )
    oof = pd.read_parquet(out / "oof.parquet")
    assert {"image_name", "patient_id", "fold", "target", "lgbm", "xgb", "blend"} <= set(
        oof.columns
    )
    assert len(oof) == metrics["n_train"] and oof["image_name"].is_unique
    assert (oof.groupby("patient_id")["fold"].nunique() == 1).all()
    submission = pd.read_csv(out / "submission.csv")
    manifest, _ = read_manifest(config.features_dir)
    assert list(submission.columns) == ["image_name", "target"]
    assert set(submission["image_name"]) == set(manifest.query("split == 'test'")["image_name"])
    assert submission["target"].between(0, 1).all()
    second = run_training(config)
    assert second.models[0].n_trials == 4 and first.run_id != second.run_id
    assert len(pd.read_csv(out / "runs.csv")) == 2


def test_same_seed_same_results(config: Stage2Config, tmp_path: Path) -> None:
    a = run_training(replace(config, out_dir=tmp_path / "a"))
    b = run_training(replace(config, out_dir=tmp_path / "b"))
    assert a.metrics["oof_auc"] == b.metrics["oof_auc"]
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "a" / "oof.parquet"),
        pd.read_parquet(tmp_path / "b" / "oof.parquet"),
    )


def test_acquisition_reports_auc_without_it(config: Stage2Config) -> None:
    result = run_training(
        replace(config, feature_groups=("metadata", "acquisition"), models=("lgbm",))
    )
    (row,) = result.metrics["ablation"]["groups"]  # without --ablate: acquisition only
    assert row["group"] == "acquisition" and 0 <= row["oof_auc_without"] <= 1


def test_report_plots_exist_and_are_not_empty(config: Stage2Config) -> None:
    run_training(replace(config, report=True))
    report = config.stage2_dir / "report"
    for name in ("roc.png", "fold_auc.png", "importance.png", "auc_by_subgroup.png"):
        assert (report / name).stat().st_size > 5_000, name
    text = (report / "report.md").read_text()
    assert "OOF AUC (blend)" in text and "roc.png" in text


def test_report_figures_are_redrawn_only_when_what_they_show_changes(config: Stage2Config) -> None:
    run_training(replace(config, report=True))
    report, drawn = config.stage2_dir / "report", config.stage2_dir / "cache" / "figures"
    assert len(list(report.glob("*.png"))) == 5 and len(list(drawn.iterdir())) == 5
    run_training(replace(config, report=True, n_trials=0))  # same parameters: refits reused
    assert len(list(drawn.iterdir())) == 5  # nothing new drawn
    (report / "importance.png").write_bytes(b"edited by hand")
    run_training(replace(config, report=True, n_trials=0, n_bootstrap=60))  # other intervals
    assert len(list(drawn.iterdir())) == 6  # only the ROC plot shows them (in its legend)
    assert (report / "importance.png").read_bytes()[:4] == b"\x89PNG"  # the cached figure again


def test_ctrl_c_lets_the_running_trial_finish(features: Path) -> None:
    import signal

    from stage2_boost.tune import open_study, run_study

    study = open_study(
        open_storage(f"sqlite:///{features / 'optuna.db'}"), "data.lgbm.interrupt", 0
    )
    calls = []

    def objective(trial: optuna.Trial) -> float:
        calls.append(trial.number)
        if trial.number == 1:
            signal.raise_signal(signal.SIGINT)  # Ctrl-C in the middle of a trial
        return trial.suggest_float("x", 0, 1)

    before = signal.getsignal(signal.SIGINT)  # SIG_IGN under nohup, Python's handler otherwise
    with pytest.raises(KeyboardInterrupt):
        run_study(study, objective, n_trials=10, timeout=None)
    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert calls == [0, 1] and states == [optuna.trial.TrialState.COMPLETE] * 2
    assert signal.getsignal(signal.SIGINT) is before  # the caller's handler is back


def test_embeddings_from_another_input_are_refused(features: Path) -> None:
    manifest, _ = read_manifest(features)
    write_embedding_file(
        features, "bb", manifest, make_embeddings(manifest), {"inputs_digest": "other"}
    )
    with pytest.raises(ContractError, match="different input"):
        load_stage_data(features, None)


def test_missing_backbone_file_is_refused(features: Path) -> None:
    with pytest.raises(ContractError, match=r"Embedding file .*nope.parquet is missing.*--stage 1"):
        load_stage_data(features, ["nope"])


def test_nan_embeddings_are_refused(features: Path) -> None:
    manifest, meta = read_manifest(features)
    vectors = make_embeddings(manifest)
    vectors[3, 2] = np.nan
    write_embedding_file(
        features, "bb", manifest, vectors, {"inputs_digest": meta["inputs_digest"]}
    )
    with pytest.raises(ContractError, match="NaN/inf embeddings for 1 image"):
        load_stage_data(features, None)


def test_schema_version_mismatch_is_refused(features: Path) -> None:
    manifest, meta = read_manifest(features)
    path = write_embedding_file(
        features,
        "bb",
        manifest,
        make_embeddings(manifest),
        {"inputs_digest": meta["inputs_digest"]},
    )
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    meta_json = json.loads(table.schema.metadata[b"melanoma_stack"]) | {"schema_version": 99}
    pq.write_table(
        table.replace_schema_metadata({b"melanoma_stack": json.dumps(meta_json).encode()}), path
    )
    with pytest.raises(ContractError, match="schema version 99"):
        load_stage_data(features, None)


def test_embeddings_missing_rows_are_refused(features: Path) -> None:
    manifest, meta = read_manifest(features)
    part = manifest.iloc[5:]
    write_embedding_file(
        features,
        "bb",
        part,
        make_embeddings(part),
        {"inputs_digest": meta["inputs_digest"]},
    )
    with pytest.raises(ContractError, match="lacks embeddings for 5 image"):
        load_stage_data(features, None)


def test_unreachable_storage_hides_the_password() -> None:
    url = "postgresql://melanoma:s3cret-pw@127.0.0.1:1/optuna"
    with pytest.raises(ConfigError) as info:
        open_storage(url)
    assert "s3cret-pw" not in str(info.value) and "***" in str(info.value)
    assert mask_url(url) == "postgresql://melanoma:***@127.0.0.1:1/optuna"


def test_inspect_lists_pruned_and_failed_trials(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 'optuna.db'}")
    study = optuna.create_study(study_name="demo.lgbm.x", storage=storage, direction="maximize")

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("learning_rate", 0.01, 0.2)
        trial.set_user_attr("fold_aucs", [0.7, 0.8])
        if trial.number == 3:
            raise optuna.TrialPruned()
        if trial.number == 4:
            raise RuntimeError("boom")
        return 0.6 + x

    study.optimize(objective, n_trials=6, catch=(RuntimeError,))
    row = study_table(storage).iloc[0]
    assert (row["complete"], row["pruned"], row["failed"]) == (4, 1, 1)
    text = describe_study(storage, "demo.lgbm.x", 3, tmp_path / "plots")
    assert "#" in text and "folds [0.700, 0.800]" in text
    assert all(p.stat().st_size > 2_000 for p in (tmp_path / "plots").glob("*.png"))
    assert len(list((tmp_path / "plots").glob("*.png"))) >= 3


@pytest.mark.shared
@pytest.mark.slow
def test_metadata_only_on_the_real_train_csv(tmp_path: Path) -> None:
    """The full 33,126-row train.csv with no image: patient statistics lift AUC above 0.70."""
    from stage1_embed.config import Stage1Config
    from stage1_embed.pipeline import run_stage1

    csv = require(ISIC / "csv" / "train.csv")
    run_stage1(
        Stage1Config(data_dir=tmp_path, train_csv=csv, out_dir=tmp_path / "out", backbones=())
    )
    result = run_training(Stage2Config(features_dir=tmp_path / "out", n_trials=0, models=("lgbm",),
                                       n_bootstrap=200, report=False))  # fmt: skip
    assert result.metrics["n_train"] == 33126 and result.metrics["n_pos"] == 584
    assert result.metrics["oof_auc"] >= 0.70


def test_threads_go_to_whole_folds_first() -> None:
    from stage2_boost.boosters import plan_threads

    assert plan_threads(2, 33_126, 11, 5, "cpu") == (2, 1)  # two folds at once, a thread each
    assert plan_threads(16, 33_126, 203, 5, "cpu") == (5, 3)  # spare cores: threads per fit
    assert plan_threads(16, 1_847, 40, 5, "cpu") == (5, 1)  # a small fit stays on one thread
    assert plan_threads(1, 33_126, 203, 5, "cpu") == (1, 1)
    assert plan_threads(8, 33_126, 203, 5, "cuda") == (1, 8)  # one GPU: one fit at a time


@pytest.mark.parametrize("name", sorted(BOOSTERS))
def test_folds_side_by_side_give_what_one_at_a_time_gives(features: Path, name: str) -> None:
    folds = _three_folds(features)
    together = create_booster(name, max_rounds=100, early_stopping=10, threads=3)
    alone = create_booster(name, max_rounds=100, early_stopping=10, threads=1)
    assert (together.workers, alone.workers) == (3, 1)
    params = together.default_params()
    a, b = cross_validate(together, folds, params), cross_validate(alone, folds, params)
    np.testing.assert_array_equal(a.oof, b.oof)
    assert a.fold_aucs == b.fold_aucs and a.best_iterations == b.best_iterations


def test_a_metadata_only_run_names_no_backbone(config: Stage2Config) -> None:
    """It used to list every embedding file present in its summary, runs.csv and saved model
    (so scoring with it embedded images for nothing)."""
    from stage2_boost.cli import format_run_summary

    result = run_training(replace(config, feature_groups=("metadata", "patient"), models=("lgbm",)))
    assert result.metrics["backbones"] == [] and result.metrics["backbone_provenance"] == {}
    assert "backbones none (metadata only)" in format_run_summary(result.metrics, result.out_dir)
    assert pd.read_csv(result.out_dir / "runs.csv")["backbones"].tolist() == ["-"]
    saved = json.loads((result.out_dir / "model" / "model.json").read_text())
    assert saved["backbones"] == {}


def _trial(params: dict, fold_aucs: list[float], **attrs: object) -> optuna.trial.FrozenTrial:
    distributions = {k: optuna.distributions.FloatDistribution(0.001, 100) for k in params}
    return optuna.trial.create_trial(params=params, distributions=distributions,
                                     value=float(np.mean(fold_aucs)),
                                     user_attrs={"fold_aucs": fold_aucs, **attrs})  # fmt: skip


def test_the_defaults_stay_unless_a_trial_beats_them_beyond_one_standard_error() -> None:
    from stage2_boost.tune import best_choice

    adapter = create_booster("lgbm")
    defaults = adapter.default_params()
    study = optuna.create_study(direction="maximize")
    study.add_trial(_trial(defaults, [0.80, 0.78, 0.82, 0.79, 0.81], start="starting values"))
    study.add_trial(_trial({**defaults, "lambda_l2": 5.0}, [0.83, 0.76, 0.84, 0.78, 0.82]))  # luck
    choice = best_choice(study, adapter)
    assert choice.params == defaults and choice.reason.startswith("defaults: the best trial (1)")
    study.add_trial(_trial({**defaults, "lambda_l2": 9.0}, [0.84, 0.82, 0.86, 0.83, 0.85]))  # real
    choice = best_choice(study, adapter)
    assert choice.params["lambda_l2"] == 9.0 and "beyond one standard error" in choice.reason


def test_a_new_study_tries_the_starting_values_first(config: Stage2Config) -> None:
    result = run_training(replace(config, models=("lgbm",)))
    storage = open_storage(config.storage_url)
    study = optuna.load_study(study_name=result.models[0].study, storage=storage)
    first = study.trials[0]
    adapter = create_booster("lgbm", n_rows=len(result.models[0].cv.oof))
    assert first.user_attrs["start"] == "starting values"
    assert set(first.params) == set(adapter.default_params())


def test_gallery_cards_show_one_number_that_orders_as_the_ranks(config: Stage2Config) -> None:
    """p on a card is the run's calibration of the blend, so a better rank never shows a lower
    p, and equal ranks (tied scores) say so and show the same p (issue 29, item 6)."""
    import re

    run_training(replace(config, report=True))
    page = (config.stage2_dir / "report" / "report.html").read_text()
    cards = re.findall(r"p = ([0-9.]+) · rank (\d+) of \d+( \(tied\))?", page)
    assert len(cards) >= 10
    by_rank = sorted({(int(rank), float(p), bool(tied)) for p, rank, tied in cards})
    ps = [p for _, p, _ in by_rank]
    assert ps == sorted(ps, reverse=True)
    ranks = [rank for rank, _, _ in by_rank]
    assert len(ranks) == len(set(ranks)), "one p per rank"


def test_the_fold_plot_shows_every_fold_and_marks_chance() -> None:
    """Folds below 0.4 had no visible bar when the axis started there (issue 29, item 7)."""
    import matplotlib

    matplotlib.use("Agg")
    from stage2_boost.report import _fold_plot

    figure = _fold_plot({"lgbm": [0.342, 0.383, 0.91], "blend": [0.35, 0.40, 0.95]})
    ax = figure.axes[0]
    low, high = ax.get_ylim()
    bars = ax.patches
    assert len(bars) == 6
    for bar in bars:
        assert low <= bar.get_y() and bar.get_y() + bar.get_height() <= high
        assert bar.get_height() > 0.3  # drawn from the axis' bottom, so visible
    assert any(line.get_ydata()[0] == 0.5 for line in ax.get_lines())
