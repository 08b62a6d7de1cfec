"""The fold-feature cache: a hit gives the same matrices and state; every key part invalidates."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stage1_embed.folds import make_folds
from stage2_boost.boosters import create_booster
from stage2_boost.cv import cross_validate
from stage2_boost.data import StageData, load_stage_data
from stage2_boost.features import create_feature_groups
from stage2_boost.fold_cache import cached_prepare_folds, fold_cache_key
from stage2_boost.refit_cache import REFITS, cached_refit, refit_key

PARTS = {"groups": ["metadata", "embedding", "probe"], "backbones": ["bb"], "reduction": "pca",
         "n_components": 4, "seed": 0, "test": True}  # fmt: skip


def groups() -> list:
    return create_feature_groups(["metadata", "embedding", "probe"], ["bb"], "pca", 4, 0)


def test_a_cache_hit_equals_a_fresh_build(features: Path, tmp_path: Path) -> None:
    tmp_path = tmp_path / "cache"
    data = load_stage_data(features, None)
    train, test = data.split_index("train"), data.split_index("test")
    folds = make_folds(data.frame.iloc[train], 3, 0)
    fresh = cached_prepare_folds(None, PARTS, data, train, folds, groups, 0, test)
    first = cached_prepare_folds(tmp_path, PARTS, data, train, folds, groups, 0, test)
    again = cached_prepare_folds(tmp_path, PARTS, data, train, folds, groups, 0, test)
    assert len(list(tmp_path.iterdir())) == 1
    for a, b, c in zip(fresh, first, again, strict=True):
        for name in ("X_fit", "X_stop", "X_valid", "X_test"):
            pd.testing.assert_frame_equal(getattr(a, name), getattr(c, name))
        np.testing.assert_array_equal(a.valid_rows, c.valid_rows)
        np.testing.assert_array_equal(a.y_fit, c.y_fit)
        assert (
            a.groups[1].get_state()[1]["components"].tobytes()
            == c.groups[1].get_state()[1]["components"].tobytes()
        )
        assert (
            b.groups[2].get_state()[1]["coef"].tobytes()
            == c.groups[2].get_state()[1]["coef"].tobytes()
        )
    # a damaged entry is rebuilt, not trusted
    entry = next(tmp_path.iterdir())
    next(entry.glob("*.X_fit.parquet")).write_bytes(b"garbage")
    rebuilt = cached_prepare_folds(tmp_path, PARTS, data, train, folds, groups, 0, test)
    pd.testing.assert_frame_equal(rebuilt[0].X_fit, fresh[0].X_fit)


def test_every_key_part_changes_the_key(features: Path) -> None:
    data = load_stage_data(features, None)
    train = data.split_index("train")
    folds = make_folds(data.frame.iloc[train], 3, 0)
    none = np.zeros(0, np.int64)
    base = fold_cache_key(data, PARTS, folds, none)
    assert fold_cache_key(data, dict(PARTS), folds.copy(), none) == base  # deterministic
    changed = {
        **{f"part {k}": fold_cache_key(data, {**PARTS, k: v}, folds, none) for k, v in {
            "groups": ["metadata"], "backbones": ["other"], "reduction": "raw", "n_components": 8,
            "seed": 1, "test": False}.items()},
        "fold split": fold_cache_key(data, PARTS, make_folds(data.frame.iloc[train], 3, 1), none),
        "extra rows": fold_cache_key(data, PARTS, folds, np.array([0])),
        "labels": fold_cache_key(_with(data, target_flip=True), PARTS, folds, none),
        "embedding settings": fold_cache_key(_with(data, settings="other"), PARTS, folds, none),
        "stage 1 input": fold_cache_key(_with(data, fingerprint="other"), PARTS, folds, none),
        "rows": fold_cache_key(_with(data, rename=True), PARTS, folds, none),
    }  # fmt: skip
    assert base not in changed.values() and len(set(changed.values())) == len(changed)


def _with(data: StageData, target_flip: bool = False, settings: str | None = None,
          fingerprint: str | None = None, rename: bool = False) -> StageData:  # fmt: skip
    frame = data.frame.copy()
    if target_flip:
        first = frame.index[frame["split"] == "train"][0]
        frame.loc[first, "target"] = 1 - frame.loc[first, "target"]
    if rename:
        frame.loc[0, "image_name"] = "RENAMED"
    provenance = {**data.provenance, **({"input_fingerprint": fingerprint} if fingerprint else {})}
    embedding = {s: {**p, **({"settings_hash": settings} if settings else {})}
                 for s, p in data.embedding_provenance.items()}  # fmt: skip
    return replace(data, frame=frame, provenance=provenance, embedding_provenance=embedding)


@pytest.mark.parametrize("model", ["lgbm", "xgb"])
def test_refit_cache_reuses_only_the_same_refit(features: Path, tmp_path: Path, model: str) -> None:
    data = load_stage_data(features, None)
    train, test = data.split_index("train"), data.split_index("test")
    folds = make_folds(data.frame.iloc[train], 3, 0)
    matrices = cached_prepare_folds(tmp_path, PARTS, data, train, folds, groups, 0, test)
    adapter = create_booster(model, seed=0, n_rows=len(train))
    params = adapter.default_params()
    fresh = cross_validate(adapter, matrices, params, n_rounds=7, keep_models=True)
    first = cached_refit(adapter, matrices, params, 7)
    refits = matrices[0].cache_entry / REFITS
    assert len(list(refits.iterdir())) == 1
    again = cached_refit(adapter, matrices, params, 7)
    for result in (first, again):
        np.testing.assert_array_equal(result.oof, fresh.oof)
        np.testing.assert_array_equal(result.test_pred, fresh.test_pred)
        assert result.fold_aucs == fresh.fold_aucs and result.importance == fresh.importance
    # the read-back fold models predict as the fitted ones did
    np.testing.assert_allclose(
        adapter.predict(again.models[1], matrices[1].X_valid),
        adapter.predict(fresh.models[1], matrices[1].X_valid), rtol=0, atol=1e-7,
    )  # fmt: skip
    cached_refit(adapter, matrices, params, 8)  # other rounds
    cached_refit(adapter, matrices, {**params, next(iter(params)): 0.123}, 7)  # other parameters
    cached_refit(create_booster(model, seed=1, n_rows=len(train)), matrices, params, 7)  # seed
    assert len(list(refits.iterdir())) == 4
    damaged = refits / refit_key(adapter, params, 7)[:32] / "predictions.npz"
    damaged.write_bytes(b"garbage")
    for _ in range(2):  # a damaged entry is recomputed, then reused
        np.testing.assert_array_equal(cached_refit(adapter, matrices, params, 7).oof, fresh.oof)
