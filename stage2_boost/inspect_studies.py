"""``python -m stage2_boost inspect``: list the Optuna studies, or show one with plots."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import optuna
import pandas as pd

from .errors import ConfigError
from .tune import mask_url, open_storage

States = optuna.trial.TrialState


def inspect_command(out: Path, storage_url: str | None, study: str | None, top: int) -> int:
    url = storage_url or f"sqlite:///{(Path(out) / 'optuna.db').resolve()}"
    if storage_url is None and not (Path(out) / "optuna.db").is_file():
        raise ConfigError(
            f"No Optuna database at {Path(out) / 'optuna.db'}: run training first, or pass --out/--storage."
        )
    storage = open_storage(url)
    if study is None:
        print(format_study_list(storage))
        print(
            f"\nstorage: {mask_url(url)}\nshow one: python -m stage2_boost inspect --out {out} --study NAME"
        )
        print(f"dashboard: optuna-dashboard {mask_url(url)}")
        return 0
    print(describe_study(storage, study, top, Path(out) / "studies"))
    return 0


def study_table(storage: Any) -> pd.DataFrame:
    rows = []
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=True):
        s = optuna.load_study(study_name=summary.study_name, storage=storage)
        counts = pd.Series([t.state for t in s.trials]).value_counts()
        starts = [t.datetime_start for t in s.trials if t.datetime_start]
        rows.append({
            "study": summary.study_name, "complete": int(counts.get(States.COMPLETE, 0)),
            "pruned": int(counts.get(States.PRUNED, 0)), "failed": int(counts.get(States.FAIL, 0)),
            "running": int(counts.get(States.RUNNING, 0)),
            "best": round(summary.best_trial.value, 4) if summary.best_trial and summary.best_trial.value is not None else None,
            "last trial": max(starts).strftime("%Y-%m-%d %H:%M") if starts else "-",
        })  # fmt: skip
    return pd.DataFrame(rows)


def format_study_list(storage: Any) -> str:
    table = study_table(storage)
    return "no studies yet" if table.empty else table.to_string(index=False)


def describe_study(storage: Any, name: str, top: int, plot_dir: Path) -> str:
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError as err:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        raise ConfigError(f"No study named {name!r}; the storage has {names}.") from err
    done = [t for t in study.trials if t.state == States.COMPLETE]
    lines = [f"study {name}: {len(study.trials)} trials, {len(done)} complete"]
    for trial in sorted(done, key=lambda t: t.value or 0, reverse=True)[:top]:
        folds = ", ".join(f"{a:.3f}" for a in trial.user_attrs.get("fold_aucs", []))
        lines.append(f"  #{trial.number}: {trial.value:.4f}  folds [{folds}]  {trial.params}")
    if len(done) >= 2:
        importances = optuna.importance.get_param_importances(study)
        lines.append(
            "parameter importances: " + ", ".join(f"{k} {v:.2f}" for k, v in importances.items())
        )
        lines.append(
            "plots: "
            + ", ".join(str(p) for p in save_study_plots(study, plot_dir, list(importances)[:2]))
        )
    return "\n".join(lines)


def save_study_plots(study: optuna.Study, folder: Path, top_params: list[str]) -> list[Path]:
    """Optimisation history, parameter importances, slice and contour of the top parameters (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    folder.mkdir(parents=True, exist_ok=True)
    plots = {
        "history": lambda: ovm.plot_optimization_history(study),
        "importances": lambda: ovm.plot_param_importances(study),
        "slice": lambda: ovm.plot_slice(study, params=top_params),
    }
    if len(top_params) == 2:
        plots["contour"] = lambda: ovm.plot_contour(study, params=top_params)
    paths = []
    for kind, make in plots.items():
        axes = make()
        figure: Any = axes.flat[0].figure if hasattr(axes, "flat") else axes.figure
        path = folder / f"{study.study_name}.{kind}.png"
        figure.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(figure)
        paths.append(path)
    return paths
