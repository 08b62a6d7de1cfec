"""Stage 2: gradient-boosted stacking over stage 1's embeddings and metadata.

For a notebook or a script that iterates (the libraries are imported once, on first use)::

    import stage2_boost
    result = stage2_boost.train("data/out/demo", n_trials=20, feature_groups=("metadata", "patient"))
    result.metrics["oof_auc"], result.metrics["oof_auc_ci95"]
    scored = stage2_boost.predict("data/out/demo/stage2/model", "data/out/new-clinic")
    scored.predictions.head()

Importing this package loads nothing heavy; the command line is ``python -m stage2_boost``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .model.predict import PredictSummary
    from .train import RunResult

__all__ = ["predict", "train"]


def train(features_dir: str | Path, **settings: Any) -> RunResult:
    """One training run, as ``python -m stage2_boost train --features FEATURES_DIR``.

    ``settings`` are the fields of :class:`stage2_boost.config.Stage2Config` (``n_trials``,
    ``feature_groups``, ``models``, ``out_dir``, ...). Returns the run's metrics and models."""
    from .config import Stage2Config
    from .train import run_training

    return run_training(Stage2Config(features_dir=Path(features_dir), **settings))


def predict(
    model_dir: str | Path, features_dir: str | Path, out_dir: str | Path | None = None,
    split: str | None = None, explain: bool = False,
) -> PredictSummary:  # fmt: skip
    """Score stage 1's outputs in ``features_dir`` with a saved model, as ``python -m stage2_boost
    predict``; writes predictions.csv to ``out_dir`` (default: ``features_dir``) and returns them
    in ``.predictions``."""
    from .model.predict import run_predict

    return run_predict(Path(model_dir), Path(features_dir), Path(out_dir or features_dir), split,
                       explain)  # fmt: skip
