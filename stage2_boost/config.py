"""Stage 2 settings: one frozen dataclass, defaults in code, CLI flags override them.

Light on purpose (no pandas, scikit-learn or boosters): the CLI's parser and ``--help`` use it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from .errors import ConfigError

MODELS = ("lgbm", "xgb")  # the booster adapters (boosters.BOOSTERS)
GROUPS = ("metadata", "patient", "embedding", "probe", "ugly-duckling", "patient-context",
          "neighbours", "diagnosis", "patient-scores", "acquisition", "source", "expert")  # fmt: skip
DEFAULT_GROUPS = ("metadata", "patient", "embedding", "probe", "ugly-duckling", "neighbours")
IMAGE_GROUPS = frozenset({"embedding", "probe", "ugly-duckling", "patient-context", "neighbours",
                          "diagnosis"})  # fmt: skip

SEARCH_BINS = 63
PRUNE_ROUNDS = True


@dataclass(frozen=True)
class Stage2Config:
    features_dir: Path = Path("data/out")
    out_dir: Path | None = None  # default: <features_dir>/stage2
    feature_groups: tuple[str, ...] | None = None  # None: every applicable default group
    backbones: tuple[str, ...] | None = None  # None: every embedding file present
    reduction: str = "pca"
    n_components: int | None = None  # None: auto_components (from the malignant count)
    models: tuple[str, ...] = ("lgbm", "xgb")
    n_folds: int = 5
    seed: int = 42
    n_trials: int = 20
    timeout: float | None = None
    storage: str | None = None  # default: sqlite:///<out>/optuna.db
    max_rounds: int = 2000
    early_stopping: int = 100
    n_bootstrap: int = 1000
    report: bool = True
    ablate: bool = False  # refit without each feature group in turn (compare.ablation_table)
    experts: tuple[str, ...] = ()  # slugs of FEATURES/experts/<slug>.parquet to stack
    expert_transform: str = "logit"  # logit | rank
    threads: int | None = None  # boosters' threads in all (default: usable cores; plan_threads)
    device: str = "cpu"  # cpu | cuda | auto: where XGBoost trains (LightGBM: CPU; boosters.py)
    no_cache: bool = False  # compute afresh instead of reusing OUT/cache (cache.py)
    extra_data: tuple[Path, ...] = ()  # --extra-data: dataset folders or stage 1 output folders
    save_model: Path | None = None  # a copy of the model folder kept outside OUT/stage2/model
    heartbeat_grace: int = 30  # seconds before a killed worker's RUNNING trial is marked FAIL
    # Cheaper trials (multi-fidelity search): histogram bins of the tuning fits (None: the
    # libraries' full 255/256; the reported refits always use those) and pruning a trial on its
    # first fold's early-stopping curve, not only after whole folds.
    search_bins: int | None = SEARCH_BINS
    prune_rounds: bool = PRUNE_ROUNDS
    # patients sharing an identical image (content digest) share a fold (stage1_embed.folds)
    merge_duplicates: bool = True

    def __post_init__(self) -> None:
        if self.reduction not in ("pca", "raw"):
            raise ConfigError(f"--reduction {self.reduction!r}: use pca or raw.")
        unknown = [m for m in self.models if m not in MODELS]
        if unknown or not self.models:
            raise ConfigError(f"--models {list(self.models)}: choose from {','.join(MODELS)}.")
        if self.feature_groups is not None:
            bad = [g for g in self.feature_groups if g not in GROUPS]
            if bad:
                raise ConfigError(
                    f"Unknown feature group(s) {bad}; choose from {','.join(GROUPS)}."
                )
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ConfigError(f"--device {self.device!r}: use auto, cpu or cuda.")
        if self.search_bins is not None and not 2 <= self.search_bins <= 1024:
            raise ConfigError(f"--search-bins {self.search_bins}: use 2 to 1024 (or 0: full).")
        if self.heartbeat_grace < 3:
            raise ConfigError("--heartbeat-grace must be at least 3 seconds.")
        if self.n_folds < 2:
            raise ConfigError("--folds must be at least 2.")
        if self.n_trials < 0 or (self.n_components is not None and self.n_components < 1):
            raise ConfigError("--trials must be >= 0 and --components >= 1.")

    @property
    def stage2_dir(self) -> Path:
        return self.out_dir or Path(self.features_dir) / "stage2"

    @property
    def extra_features_dirs(self) -> list[Path]:
        """Stage 1 outputs of each extra set: the folder itself if it holds a manifest, else
        FEATURES/extra/<name> (where ``python -m stage1_embed --extra-data`` wrote it)."""
        from stage1_embed.schema import MANIFEST_FILE, extra_features_dir

        found = []
        for folder in self.extra_data:
            path = Path(folder)
            if not (path / MANIFEST_FILE).is_file():
                path = extra_features_dir(self.features_dir, path)
            if not (path / MANIFEST_FILE).is_file():
                raise ConfigError(
                    f"--extra-data {folder}: no stage 1 outputs at {path}. Run stage 1 with "
                    f"--extra-data {folder} first (./run_all.sh --extra-data does both)."
                )
            found.append(path)
        return found

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{(self.stage2_dir / 'optuna.db').resolve()}"

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> Stage2Config:
        """A run's recorded config (:meth:`to_json`) as a config again. The storage URL is not
        kept (it was recorded with its password masked): the result refits, it does not tune."""
        kept = {k: v for k, v in values.items() if k in {f.name for f in fields(cls)}}
        for key in ("feature_groups", "backbones", "models", "experts"):
            if kept.get(key) is not None:
                kept[key] = tuple(kept[key])
        for key in ("features_dir", "out_dir", "save_model"):
            if kept.get(key) is not None:
                kept[key] = Path(kept[key])
        kept["extra_data"] = tuple(Path(p) for p in kept.get("extra_data") or ())
        return cls(**kept | {"storage": None})

    def to_json(self) -> dict[str, Any]:
        from .tune import mask_url

        values = asdict(self)
        values["storage"] = mask_url(self.storage_url)
        values["extra_data"] = [str(p) for p in self.extra_data]
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in values.items()}
