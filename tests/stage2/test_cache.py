"""The content-addressed cache: a hit gives what a fresh computation gives; any input changes the key."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stage1_embed.folds import make_folds
from stage2_boost.boosters import create_booster
from stage2_boost.cache import ContentCache, cached_folds, cached_refit, content_key, data_digest
from stage2_boost.config import Stage2Config
from stage2_boost.cv import cross_validate, prepare_folds
from stage2_boost.data import load_stage_data
from stage2_boost.features import create_feature_groups
from stage2_boost.train import run_training
from tests.stage2.helpers import FAST, make_embeddings, synthetic_manifest, write_stage1

GROUPS = ["metadata", "patient", "embedding", "probe", "ugly-duckling", "acquisition", "source"]


def groups() -> list:
    return create_feature_groups(["metadata", "embedding", "probe"], ["bb"], "pca", 4, 0)


def _folds(cache: ContentCache, key: str, data, train, folds, test) -> list:  # type: ignore[no-untyped-def]
    def compute() -> list:
        return prepare_folds(data, train, folds, groups, 0, test)

    return cached_folds(cache, key, compute, groups, data.target)


def test_a_cache_hit_equals_a_fresh_build(features: Path, tmp_path: Path) -> None:
    data = load_stage_data(features, None)
    train, test = data.split_index("train"), data.split_index("test")
    folds = make_folds(data.frame.iloc[train], 3, 0)
    cache = ContentCache(tmp_path / "cache")
    fresh = _folds(ContentCache(None), "k", data, train, folds, test)
    first = _folds(cache, "k", data, train, folds, test)
    again = _folds(cache, "k", data, train, folds, test)
    assert len(list((tmp_path / "cache" / "folds").iterdir())) == 1
    for a, b, c in zip(fresh, first, again, strict=True):
        for name in ("X_fit", "X_stop", "X_valid", "X_test"):
            pd.testing.assert_frame_equal(getattr(a, name), getattr(c, name))
        np.testing.assert_array_equal(a.valid_rows, c.valid_rows)
        np.testing.assert_array_equal(a.y_fit, c.y_fit)
        for index, array in ((1, "components"), (2, "coef")):
            assert (a.groups[index].get_state()[1][array].tobytes()
                    == b.groups[index].get_state()[1][array].tobytes()
                    == c.groups[index].get_state()[1][array].tobytes())  # fmt: skip
    # a damaged entry is rebuilt, not trusted
    entry = next((tmp_path / "cache" / "folds").iterdir())
    next(entry.glob("*.X_fit.parquet")).write_bytes(b"garbage")
    rebuilt = _folds(cache, "k", data, train, folds, test)
    pd.testing.assert_frame_equal(rebuilt[0].X_fit, fresh[0].X_fit)


def test_any_single_value_the_features_read_changes_the_key(features: Path) -> None:
    """Property: every column of the row table (metadata values included), every embedding
    value, the labels and the fold split are part of the key; equal inputs give equal keys."""
    data = load_stage_data(features, None)
    base = data_digest(data.frame, data.embeddings, data.experts)
    assert data_digest(data.frame.copy(), {k: v.copy() for k, v in data.embeddings.items()},
                       {}) == base  # fmt: skip
    rng = np.random.default_rng(0)
    seen = {base}
    for column in data.frame.columns:
        for row in rng.choice(len(data.frame), 3, replace=False):
            frame = data.frame.copy()
            value = frame.at[row, column]
            if pd.api.types.is_numeric_dtype(frame[column]):
                frame.at[row, column] = (0 if pd.isna(value) else value) + 1
            else:
                frame.at[row, column] = f"{value}-changed"
            key = data_digest(frame, data.embeddings, data.experts)
            assert key not in seen, (column, row)
            seen.add(key)
    for slug, vectors in data.embeddings.items():
        for index in rng.choice(vectors.size, 5, replace=False):
            changed = vectors.copy()
            changed.flat[index] += np.float32(1e-6)
            key = data_digest(data.frame, {**data.embeddings, slug: changed}, data.experts)
            assert key not in seen
            seen.add(key)
    train = data.split_index("train")
    folds = make_folds(data.frame.iloc[train], 3, 0)
    keys = {content_key("folds", base, train, folds), content_key("folds", base, train, folds)}
    keys.add(content_key("folds", base, train, make_folds(data.frame.iloc[train], 3, 1)))
    keys.add(content_key("folds", base, train[1:], folds[1:]))
    assert len(keys) == 3 and base not in keys


@pytest.mark.parametrize("model", ["lgbm", "xgb"])
def test_refits_are_reused_only_for_the_same_refit(
    features: Path, tmp_path: Path, model: str
) -> None:
    data = load_stage_data(features, None)
    train, test = data.split_index("train"), data.split_index("test")
    folds = make_folds(data.frame.iloc[train], 3, 0)
    cache = ContentCache(tmp_path)
    matrices = _folds(cache, "k", data, train, folds, test)
    adapter = create_booster(model, seed=0, n_rows=len(train))
    params = adapter.default_params()
    fresh = cross_validate(adapter, matrices, params, n_rounds=7, keep_models=True)
    first = cached_refit(cache, adapter, matrices, params, 7)
    refits = tmp_path / f"refits-{model}"
    assert len(list(refits.iterdir())) == 1
    again = cached_refit(cache, adapter, matrices, params, 7)
    for result in (first, again):
        np.testing.assert_array_equal(result.oof, fresh.oof)
        np.testing.assert_array_equal(result.test_pred, fresh.test_pred)
        assert result.fold_aucs == fresh.fold_aucs and result.importance == fresh.importance
    np.testing.assert_allclose(  # the read-back fold models predict as the fitted ones did
        adapter.predict(again.models[1], matrices[1].X_valid),
        adapter.predict(fresh.models[1], matrices[1].X_valid), rtol=0, atol=1e-7,
    )  # fmt: skip
    cached_refit(cache, adapter, matrices, params, 8)  # other rounds
    cached_refit(cache, adapter, matrices, {**params, next(iter(params)): 0.123}, 7)  # parameters
    cached_refit(cache, create_booster(model, seed=1, n_rows=len(train)), matrices, params, 7)
    other_folds = _folds(cache, "other", data, train, folds, test)  # other fold matrices
    cached_refit(cache, adapter, other_folds, params, 7)
    assert len(list(refits.iterdir())) == 5
    for entry in refits.iterdir():
        (entry / "predictions.npz").write_bytes(b"garbage")
    for _ in range(2):  # a damaged entry is recomputed, then reused
        np.testing.assert_array_equal(
            cached_refit(cache, adapter, matrices, params, 7).oof, fresh.oof
        )


def test_a_rerun_after_a_metadata_change_is_not_served_stale_features(tmp_path: Path) -> None:
    """The case from the issue: ages changed so that age alone separates the classes; the rerun
    (cache on) must see them, and must not resume the study tuned on the old ages."""
    manifest = synthetic_manifest()
    embeddings = {"bb": make_embeddings(manifest)}
    features = write_stage1(tmp_path / "features", manifest, embeddings)
    config = Stage2Config(features_dir=features, feature_groups=("metadata", "embedding"),
                          models=("lgbm",), **{**FAST, "n_trials": 2})  # fmt: skip
    before = run_training(config)
    assert before.metrics["oof_auc"] < 0.99
    train = manifest["split"] == "train"
    manifest.loc[train, "age_approx"] = np.where(manifest.loc[train, "target"] == 1, 85.0, 20.0)
    write_stage1(features, manifest, embeddings)
    after = run_training(config)
    fresh = run_training(replace(config, no_cache=True, out_dir=tmp_path / "fresh"))
    assert after.metrics["oof_auc"] == fresh.metrics["oof_auc"] != before.metrics["oof_auc"]
    assert after.metrics["models"]["lgbm"]["params"] == fresh.metrics["models"]["lgbm"]["params"]
    assert after.models[0].study != before.models[0].study
    assert after.models[0].n_trials == 2  # a new study: no trials of the old ages in it
    again = run_training(config)  # same data: the same study goes on, the cache serves it
    assert again.models[0].study == after.models[0].study and again.models[0].n_trials == 4
    metrics = json.loads((config.stage2_dir / "metrics.json").read_text())
    assert metrics["data_digest"] in metrics["models"]["lgbm"]["study"]


@pytest.mark.parametrize("change", ["library", "code"])
def test_a_library_or_code_change_recomputes_stage2(
    tmp_path: Path, change: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    import stage2_boost.cache as cache_module

    manifest = synthetic_manifest()
    features = write_stage1(tmp_path / "f", manifest, {"bb": make_embeddings(manifest)})
    config = Stage2Config(features_dir=features, feature_groups=("metadata", "embedding"),
                          models=("lgbm",), **{**FAST, "n_trials": 0})  # fmt: skip
    run_training(config)
    with caplog.at_level(logging.INFO, logger="stage2_boost.cache"):
        run_training(config)
    assert "reused" in caplog.text  # the same code and libraries: served from the cache
    caplog.clear()
    if change == "library":
        real = cache_module.library_versions
        monkeypatch.setattr(
            cache_module, "library_versions", lambda names: real(names) | {"lightgbm": "0.1"}
        )
    else:
        monkeypatch.setattr(cache_module, "code_digest", lambda *packages: "edited")
    cache_module.environment_digest.cache_clear()
    try:
        with caplog.at_level(logging.INFO, logger="stage2_boost.cache"):
            run_training(config)
    finally:
        monkeypatch.undo()
        cache_module.environment_digest.cache_clear()
    assert "reused" not in caplog.text


def test_keys_see_every_value_of_any_part() -> None:
    """A long Series, or one inside a list, with a middle value changed: another key (its str()
    would have been the same)."""
    series = pd.Series(np.arange(2000, dtype=float))
    changed = series.copy()
    changed[1000] = -1.0
    assert str(series) == str(changed)
    assert content_key("x", series) != content_key("x", changed)
    assert content_key("x", [series, 1]) != content_key("x", [changed, 1])
    assert content_key("x", {"a": 1, "b": 2}) != content_key("x", {"b": 2, "a": 1})  # plot order
    assert content_key("x", np.float64(0.5), Path("a")) == content_key("x", 0.5, "a")


@pytest.mark.parametrize("damage", ["cut", "garbage"])
def test_every_kind_of_damaged_entry_is_recomputed(tmp_path: Path, damage: str) -> None:
    """Fold matrices (.parquet, .npz, .safetensors), refits (.npz, booster files) and figures
    (.png): cut short, or the same size of garbage, and the rerun gives the same results."""
    manifest = synthetic_manifest()
    features = write_stage1(tmp_path / "f", manifest, {"bb": make_embeddings(manifest)})
    config = Stage2Config(features_dir=features, feature_groups=("metadata", "probe"),
                          **{**FAST, "n_trials": 0, "report": True})  # fmt: skip
    first = run_training(config)
    cache = config.stage2_dir / "cache"
    kinds = {p.name for p in cache.iterdir()}
    assert {"folds", "refits-lgbm", "refits-xgb", "figures"} <= kinds and "thumbnails" not in kinds
    for file in cache.rglob("*"):
        if file.is_file() and not file.name.startswith("."):
            data = file.read_bytes()
            file.write_bytes(data[: len(data) // 2] if damage == "cut" else bytes(len(data)))
    again = run_training(config)
    assert again.metrics["oof_auc"] == first.metrics["oof_auc"]
    assert again.metrics["models"]["lgbm"]["oof_auc"] == first.metrics["models"]["lgbm"]["oof_auc"]
    for png in (config.stage2_dir / "report").glob("*.png"):
        assert png.read_bytes().startswith(b"\x89PNG") and png.read_bytes().endswith(
            b"IEND\xaeB`\x82"
        )
