"""``python -m stage2_boost compare``: did a change help? Two runs' out-of-fold predictions on the
images both scored, paired by patient.

Two runs on the same images share most of their sampling noise: a paired patient bootstrap (the
same resampled patients for both runs) gives the difference an interval far narrower than either
run's own, which is what "B is better than A" needs.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .chance import chance_text
from .errors import OutputError
from .evidence import Evidence, has_evidence, read_evidence, resolve_run, runs_with_evidence
from .metrics import METRICS, delong_paired_p, paired_differences
from .outputs import RUNS_FILE, json_ready, read_runs


def compare_evidence(
    a: Evidence, b: Evidence, model: str = "blend", n_boot: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """B minus A on the images both runs scored, every metric with a paired patient-bootstrap 95%
    interval, and DeLong's paired p-value (which assumes independent images)."""
    for run in (a, b):
        if model not in run.oof.columns:
            raise OutputError(f"Run {run.run_id} has no {model!r} predictions; it has "
                              f"{', '.join(run.models)}. Choose one with --model.")  # fmt: skip
    keys = ["image_name", "patient_id", "fold", "target", model]
    both = a.oof[keys].merge(b.oof[keys], on="image_name", suffixes=("_a", "_b"))
    if both.empty:
        raise OutputError(
            f"Runs {a.run_id} and {b.run_id} share no images: they were trained on different "
            "data, so there is nothing paired to compare."
        )
    differ = both["target_a"] != both["target_b"]
    if differ.any():
        image = both.loc[differ, "image_name"].iloc[0]
        raise OutputError(
            f"Runs {a.run_id} and {b.run_id} disagree on the label of {differ.sum()} image(s), "
            f"e.g. {image}: the train.csv changed between them, so their AUCs measure different "
            "things. Rerun the older configuration on the current data and compare that."
        )
    target = both["target_a"].to_numpy(bool)
    patients = both["patient_id_a"].astype(str).to_numpy()
    score_a, score_b = both[f"{model}_a"].to_numpy(float), both[f"{model}_b"].to_numpy(float)
    notes = []
    only_a, only_b = len(a.oof) - len(both), len(b.oof) - len(both)
    if only_a or only_b:
        notes.append(f"{only_a} image(s) only in {a.run_id} and {only_b} only in {b.run_id} are "
                     "left out; the comparison is on the images both scored")  # fmt: skip
    same_folds = bool((both["fold_a"] == both["fold_b"]).all())
    if not same_folds:
        notes.append("the runs used different evaluation fold splits (other --folds or --seed): "
                     "the difference includes the split's own noise")  # fmt: skip
    result: dict[str, Any] = {
        "run_a": a.run_id, "run_b": b.run_id, "model": model, "n_images": len(both),
        "n_pos": int(target.sum()), "n_patients": len(np.unique(patients)),
        "only_a": only_a, "only_b": only_b, "same_folds": same_folds,
        "p_delong": delong_paired_p(target, score_a, score_b),
        "p_delong_note": "DeLong's paired test; it assumes independent images",
        "n_bootstrap": n_boot,
    }  # fmt: skip
    result |= paired_differences(target, score_a, score_b, patients, n_boot, seed)
    for role, run in (("A", a), ("B", b)):
        chance = chance_text(result[f"{role.lower()}_auc_ci95"])
        if chance:
            notes.append(f"{role} ({run.run_id}) on these images: {chance}")
    result["notes"] = notes
    result["differences"] = config_differences(a.metrics, b.metrics)
    result["verdict"] = verdict(result)
    return result


# settings that say nothing about what was trained (where outputs went, how fast, how it is shown)
_NOT_SETTINGS = {"out_dir", "report", "no_cache", "threads", "heartbeat_grace", "save_model",
                 "storage", "ablate", "n_bootstrap", "n_trials", "timeout"}  # fmt: skip


def run_settings(metrics: dict[str, Any]) -> dict[str, Any]:
    """What shaped a run's predictions, flat: data, code and libraries, features, backbones and
    every parameter."""
    config = {k: v for k, v in (metrics.get("config") or {}).items() if k not in _NOT_SETTINGS}
    found = {"dataset": metrics.get("dataset"), "data": metrics.get("data_digest"),
             "code and libraries": metrics.get("code"),
             "feature groups": ",".join(metrics.get("feature_groups") or []),
             "backbones": ",".join(metrics.get("backbones") or []) or "none",
             "features": metrics.get("n_features"), **config}  # fmt: skip
    for name, model in (metrics.get("models") or {}).items():
        found[f"{name} rounds"] = model.get("n_rounds")
        found |= {f"{name} {k}": v for k, v in (model.get("params") or {}).items()}
    return found


def config_differences(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """Every setting that differs between runs A and B (``{"setting", "a", "b"}``), so a verdict
    can be read as the effect of those changes."""
    sa, sb = run_settings(a), run_settings(b)
    return [{"setting": k, "a": sa.get(k), "b": sb.get(k)}
            for k in [*sa, *(k for k in sb if k not in sa)] if sa.get(k) != sb.get(k)]  # fmt: skip


def _setting_text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def delta_text(delta: float, ci95: Sequence[float]) -> str:
    """``+0.0120 [+0.0040, +0.0210]``: a paired difference with its interval."""
    return f"{delta:+.4f} [{ci95[0]:+.4f}, {ci95[1]:+.4f}]"


def verdict(result: dict[str, Any]) -> str:
    """One plain line on whether B beats A by AUC, from the paired interval."""
    low, high = result["delta_auc_ci95"]
    shown = f"ΔAUC {delta_text(result['delta_auc'], (low, high))}"
    if low > 0:
        return f"{result['run_b']} is better than {result['run_a']}: {shown}"
    if high < 0:
        return f"{result['run_b']} is worse than {result['run_a']}: {shown}"
    return f"no difference shown between {result['run_a']} and {result['run_b']}: {shown}"


def format_comparison(result: dict[str, Any]) -> str:
    lines = [
        f"A = {result['run_a']}, B = {result['run_b']} ({result['model']}): {result['n_images']} "
        f"images both scored ({result['n_pos']} malignant, {result['n_patients']} patients)",
        f"{'metric':<52} {'A':>8} {'B':>8}  B - A [95% CI, paired patient bootstrap]",
    ]
    for name, (label, lower_better) in METRICS.items():
        if name in result["not_reported"]:
            lines.append(f"{label:<52} not reported: {result['not_reported'][name]}")
            continue
        better = " (lower is better)" if lower_better else ""
        lines.append(f"{label:<52} {result[f'a_{name}']:>8.4f} {result[f'b_{name}']:>8.4f}  "
                     f"{delta_text(result[f'delta_{name}'], result[f'delta_{name}_ci95'])}{better}")  # fmt: skip
    lines.append(f"DeLong's paired test (assumes independent images): p = {result['p_delong']:.3g}")
    changes = result.get("differences") or []
    lines.append("what differs (A -> B): " + ("; ".join(
        f"{d['setting']} {_setting_text(d['a'])} -> {_setting_text(d['b'])}" for d in changes
    ) if changes else "nothing recorded: the same data, features and parameters"))  # fmt: skip
    lines += [f"note: {note}" for note in result["notes"]]
    lines.append(result["verdict"])
    return "\n".join(lines)


def compare_command(
    out: Path, run_a: str | None, run_b: str | None, baseline: str | None, model: str,
    n_boot: int | None, as_json: bool,
) -> int:  # fmt: skip
    """Resolve the runs (default: the two newest that kept evidence), compare, print. The
    bootstrap uses run B's seed and resample count (unless ``n_boot`` is given), so the numbers
    equal those B's training summary printed against the same run."""
    b_id = resolve_run(out, run_b or "latest")
    if run_a is None and baseline is None:
        earlier = [r for r in runs_with_evidence(out) if r != b_id]
        if not earlier:
            raise OutputError(f"Only one run in {out} kept evidence ({b_id}): train another "
                              "run, then compare the two.")  # fmt: skip
        a_id = earlier[-1]
    else:
        a_id = resolve_run(out, run_a or baseline or "best", exclude=b_id)
    a, b = read_evidence(out, a_id), read_evidence(out, b_id)
    config = b.metrics.get("config") or {}
    result = compare_evidence(a, b, model, n_boot or int(config.get("n_bootstrap") or 1000),
                              int(config.get("seed", 42)))  # fmt: skip
    if as_json:
        print(json.dumps(json_ready(result), indent=2))
    else:
        print(format_comparison(result))
    return 0


def ablation_table(
    without: dict[str, np.ndarray], full: np.ndarray, target: np.ndarray, patients: np.ndarray,
    n_boot: int, seed: int, chance: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """What each feature group is worth: the blend with every group minus the blend refitted
    without it (positive: the group helps), each with a paired patient-bootstrap interval.
    ``chance``: why the full model ranks no better than chance, which makes the rows unreadable."""
    rows = []
    for group, score in without.items():
        d = paired_differences(target, score, full, patients, n_boot, seed)
        rows.append({"group": group, "oof_auc_without": d["a_auc"], "delta_auc": d["delta_auc"],
                     "delta_auc_ci95": d["delta_auc_ci95"], "delta_pauc80": d.get("delta_pauc80"),
                     "delta_pauc80_ci95": d.get("delta_pauc80_ci95")})  # fmt: skip
    return {
        "method": "each group left out in turn and the chosen models refitted with their tuned "
        "parameters and rounds on the same evaluation folds (no new search); delta = with the "
        "group minus without it, paired patient bootstrap",
        "groups": rows,
        "unreadable": "these rows cannot be read: the model with every group is at chance level "
        f"({chance}), so what a group adds to it means nothing"
        if chance and rows
        else None,
    }


def versus_earlier(stage2: Path, run: Evidence, n_boot: int, seed: int) -> dict[str, Any]:
    """This run's blend against the previous and the best earlier run (by OOF AUC) that scored
    exactly the same images with the same labels (the run log's ``images`` digest):
    ``{"previous": ..., "best": ...}``, each with the paired ΔAUC and ΔpAUC80 and a verdict;
    empty when no earlier run fits. Only those runs' predictions are read."""
    log = read_runs(Path(stage2) / RUNS_FILE)
    if "images" not in log.columns:  # a log from before runs kept evidence
        return {}
    same = log[(log["images"] == run.metrics["images"]) & (log["run_id"].astype(str) != run.run_id)]
    same = same[[has_evidence(stage2, str(r)) for r in same["run_id"]]]
    if same.empty:
        return {}
    chosen = {"previous": str(same["run_id"].iloc[-1]),
              "best": str(same.loc[same["oof_auc"].idxmax(), "run_id"])}  # fmt: skip
    versus, done = {}, {}
    for role, run_id in chosen.items():
        if run_id not in done:  # the previous run is often the best one too
            done[run_id] = compare_evidence(
                read_evidence(stage2, run_id), run, "blend", n_boot, seed
            )
        result = done[run_id]
        versus[role] = {"run": run_id, "oof_auc": result["a_auc"]} | {
            k: result.get(k) for k in ("delta_auc", "delta_auc_ci95", "delta_pauc80",
                                       "delta_pauc80_ci95", "verdict")
        }  # fmt: skip
    return versus


def short_delta(entry: dict[str, Any] | None) -> str:
    """``+0.0120 [+0.0040, +0.0210]``: a paired ΔAUC for the run log."""
    return delta_text(entry["delta_auc"], entry["delta_auc_ci95"]) if entry else "-"
