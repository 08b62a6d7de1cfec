"""``python -m stage2_boost {train,predict,inspect,runs,compare,ablate}``: the CPU half, rerun in seconds.

The parser imports nothing heavy: ``--help``, ``runs`` and ``inspect`` never load LightGBM,
XGBoost or torch (``runs`` not Optuna either); each command imports what it uses."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stage1_embed.common import run_cli, setup_logging

from .config import GROUPS, MODELS, PRUNE_ROUNDS, SEARCH_BINS
from .errors import ConfigError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m stage2_boost", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="tune LightGBM/XGBoost, measure OOF AUC, write outputs")
    t.add_argument("--features", dest="features_dir", type=Path, default=Path("data/out"),
                   help="stage 1 output folder (manifest.parquet, embeddings/)")  # fmt: skip
    t.add_argument("--out", type=Path, help="stage 2 folder (default: FEATURES/stage2)")
    t.add_argument("--groups", help=f"comma-separated feature groups from {','.join(GROUPS)}")
    t.add_argument("--backbones", help="comma-separated embedding slugs (default: all present)")
    t.add_argument("--reduction", default="pca", choices=["pca", "raw"])
    t.add_argument(
        "--components",
        type=int,
        help="PCA components per backbone (default: from the malignant count, 4-32)",
    )
    t.add_argument("--models", default="lgbm,xgb", help=f"comma-separated from {','.join(MODELS)}")
    t.add_argument("--folds", type=int, default=5)
    t.add_argument("--seed", type=int, default=42)
    t.add_argument("--trials", type=int, default=20, help="trials added to each study this run")
    t.add_argument("--timeout", type=float, help="seconds of tuning per model")
    t.add_argument("--storage", help="Optuna storage URL (default sqlite:///OUT/optuna.db)")
    t.add_argument(
        "--heartbeat-grace",
        type=int,
        default=30,
        help="seconds after which a trial of a killed worker is marked failed (shared storage)",
    )
    t.add_argument(
        "--device",
        default="cpu",
        help="cpu | cuda | auto: XGBoost on the GPU (LightGBM's PyPI wheel is CPU-only)",
    )
    t.add_argument(
        "--threads",
        type=int,
        help="threads the boosters use in all (default: the cores this process may use, from its "
        "affinity and cgroup quota): folds are fitted side by side, one thread each; several "
        "workers on one machine: cores / workers",
    )
    t.add_argument(
        "--search-bins",
        type=int,
        default=SEARCH_BINS,
        help=f"histogram bins of the tuning fits (default {SEARCH_BINS}; 0: the libraries' full "
        "255/256); the reported refits always use full resolution",
    )
    t.add_argument(
        "--prune-rounds",
        action=argparse.BooleanOptionalAction,
        default=PRUNE_ROUNDS,
        help="prune a trial on its first fold's early-stopping AUC every few rounds, not only "
        "after whole folds",
    )
    t.add_argument("--max-rounds", type=int, default=2000)
    t.add_argument("--early-stopping", type=int, default=100)
    t.add_argument(
        "--bootstrap", type=int, default=1000, help="patient bootstrap resamples for the CI"
    )
    t.add_argument(
        "--extra-data",
        type=Path,
        action="append",
        default=[],
        help="extra training set: the folder given to stage 1's --extra-data (its outputs are in "
        "FEATURES/extra/<name>) or a stage 1 output folder; repeatable; rows only ever train",
    )
    t.add_argument(
        "--save-model",
        type=Path,
        help="also keep this run's model in DIR (it is always written to OUT/model)",
    )
    t.add_argument(
        "--experts",
        help="fine-tuned experts to stack (backbone specs or slugs of FEATURES/experts/*.parquet)",
    )
    t.add_argument("--expert-transform", default="logit", choices=["logit", "rank"])
    t.add_argument(
        "--ablate",
        action="store_true",
        help="also refit the chosen models without each feature group in turn (tuned parameters "
        "kept, no new search): what each group is worth, with paired intervals",
    )
    t.add_argument(
        "--no-merge-duplicates",
        action="store_true",
        help="keep patients apart even when they share an identical image (by default they "
        "share a fold, so one picture never sits in two folds)",
    )
    t.add_argument("--target", default="melanoma", choices=["melanoma", "diagnosis"],
                   help="diagnosis: the multi-class model on the embeddings alone, per-class AUC "
                   "and balanced accuracy (no stack, no study)")  # fmt: skip
    t.add_argument("--no-report", action="store_true")
    t.add_argument(
        "--no-cache",
        action="store_true",
        help="compute everything afresh instead of reusing OUT/cache (entries are keyed by the "
        "content of their inputs, code and libraries, so this is rarely needed)",
    )
    for name, helptext in (
        ("inspect", "list Optuna studies, or show one with plots"),
        ("runs", "the run log"),
        (
            "compare",
            "did a change help? two runs' OOF metrics with paired patient-bootstrap intervals",
        ),
        ("ablate", "what each feature group of a finished run is worth, added to that run"),
    ):
        s = sub.add_parser(name, help=helptext)
        s.add_argument("--out", type=Path, help="stage 2 folder (default: the newest "
                       "data/out/*/stage2 that holds one, which ./run_all.sh writes)")  # fmt: skip
        if name == "inspect":
            s.add_argument("--storage", help="Optuna storage URL (default sqlite:///OUT/optuna.db)")
            s.add_argument("--study", help="study name (default: list all)")
            s.add_argument("--top", type=int, default=5, help="best trials to show")
        if name == "ablate":
            s.add_argument("run", nargs="?", help="run id, unique prefix, latest (default) or best")
        if name == "compare":
            s.add_argument("run_a", nargs="?", help="baseline run: id, unique prefix, latest or "
                           "best (default: the second newest run)")  # fmt: skip
            s.add_argument("run_b", nargs="?", help="the run to judge (default: the newest)")
            s.add_argument("--baseline", choices=["best"], help="compare with the best other run")
            s.add_argument("--model", default="blend", help="blend (default) or a model: lgbm, xgb")
            s.add_argument("--bootstrap", type=int,
                           help="patient resamples (default: run B's, normally 1000)")  # fmt: skip
            s.add_argument("--json", action="store_true", help="print one JSON object")
    pr = sub.add_parser("predict", help="score embedded images with a saved model")
    pr.add_argument("--model", type=Path, required=True, help="model folder (OUT/stage2/model)")
    pr.add_argument("--features", dest="features_dir", type=Path, required=True,
                    help="stage 1 outputs of the images to score (python -m stage1_embed --model ...)")  # fmt: skip
    pr.add_argument("--out", type=Path, help="where predictions.csv goes (default: FEATURES)")
    pr.add_argument(
        "--split", choices=["train", "test"], help="split to score (default: test if any)"
    )
    pr.add_argument("--explain", action="store_true",
                    help="add each image's top contributions by feature group (TreeSHAP)")  # fmt: skip
    for s in sub.choices.values():
        s.add_argument("-v", "--verbose", action="store_true")
    return p


def _split(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(x.strip() for x in text.split(",") if x.strip())


def _expert_slugs(text: str | None) -> tuple[str, ...]:
    """Specs as run_all.sh passes them (e.g. local-dir:/w/tf_efficientnet_lite0) or bare slugs."""
    from stage1_embed.schema import backbone_slug

    return tuple(backbone_slug(s) for s in _split(text) or ())


def _train(args: argparse.Namespace) -> int:
    from .config import Stage2Config
    from .train import run_training

    config = Stage2Config(
        features_dir=args.features_dir, out_dir=args.out, feature_groups=_split(args.groups),
        backbones=_split(args.backbones), reduction=args.reduction, n_components=args.components,
        models=_split(args.models) or (), n_folds=args.folds, seed=args.seed, n_trials=args.trials,
        timeout=args.timeout, storage=args.storage, max_rounds=args.max_rounds,
        early_stopping=args.early_stopping, n_bootstrap=args.bootstrap, report=not args.no_report,
        ablate=args.ablate,
        extra_data=tuple(args.extra_data), heartbeat_grace=args.heartbeat_grace,
        save_model=args.save_model, no_cache=args.no_cache, device=args.device,
        experts=_expert_slugs(args.experts), expert_transform=args.expert_transform, threads=args.threads,
        search_bins=args.search_bins or None, prune_rounds=args.prune_rounds,
        merge_duplicates=not args.no_merge_duplicates,
    )  # fmt: skip
    if args.target == "diagnosis":
        from .diagnosis import format_diagnosis, run_diagnosis

        print(format_diagnosis(run_diagnosis(config), config.stage2_dir))
        return 0
    result = run_training(config)
    print(format_run_summary(result.metrics, result.out_dir))
    return 0


def format_run_summary(metrics: dict, out: Path) -> str:
    backbones = (
        ", ".join(
            f"{slug} ({'pretrained' if p.get('pretrained') else 'RANDOM weights'})"
            for slug, p in metrics["backbone_provenance"].items()
        )
        or "none (metadata only)"
    )
    folds = metrics["folds"]
    lines = [f"run {metrics['run_id']} on {metrics['dataset']}: {metrics['n_train']} train images "
             f"({metrics['n_pos']} malignant, {metrics['n_patients']} patients), {metrics['n_test']} test",
             f"  features {'+'.join(metrics['feature_groups'])}; backbones {backbones}",
             f"  {folds['n_folds']} patient-grouped folds (tuning seed {folds['tuning_seed']}, evaluation seed "
             f"{folds['eval_seed']}); {metrics['trials_this_run']} trials added per model"]  # fmt: skip
    if folds.get("regrouped"):
        lines.append(f"  {folds['regrouped']} image(s) regrouped: patients sharing an identical "
                     "image share a fold (--no-merge-duplicates keeps them apart)")  # fmt: skip
    for name, m in metrics["models"].items():
        tuning = f"{m['tuning_auc']:.4f}" if m["tuning_auc"] is not None else "untuned"
        lines.append(f"  {name:<6} OOF AUC {m['oof_auc']:.4f} [{m['oof_auc_ci95'][0]:.4f}, {m['oof_auc_ci95'][1]:.4f}]"
                     f"  tuning AUC {tuning}  ({m['n_trials_in_study']} trials in study)")  # fmt: skip
        if str(m.get("choice", "")).startswith("defaults:"):
            lines.append(f"         parameters: {m['choice']}")
    low, high = metrics["oof_auc_ci95"]
    lines.append(f"  blend  OOF AUC {metrics['oof_auc']:.4f} [{low:.4f}, {high:.4f}]")
    if metrics.get("oof_bootstrap_dropped"):
        lines.append(f"         ({metrics['oof_bootstrap_dropped']} of {metrics['config']['n_bootstrap']} "
                     "bootstrap replicates drew no malignant or no benign image and are left out)")  # fmt: skip
    if metrics.get("chance"):
        lines.append(f"  CHANCE LEVEL: {metrics['chance']}")
    lines += [f"  colours: {note}" for note in metrics.get("colours") or []]
    cal = metrics["calibration"]
    lines.append(f"  calibrated probability: Brier {cal['brier']:.4f} (base rate {cal['brier_base_rate']:.4f}), "
                 f"ECE {cal['ece']:.4f}; model saved to {metrics['model']['folders'][0]}")  # fmt: skip
    extra = metrics.get("extra") or {}
    if extra.get("n_rows"):
        lines.append(f"  extra training rows: {extra['n_rows']} ({extra['n_pos']} malignant) from "
                     f"{', '.join(extra['sources'])}; AUCs above are on the primary rows only")  # fmt: skip
    from .compare import short_delta

    lines += clinical_lines(metrics)
    lines += ablation_lines(metrics.get("ablation") or {})
    versus = metrics.get("versus") or {}
    for role, entry in versus.items():
        if role == "best" and entry["run"] == versus["previous"]["run"]:
            continue
        lines.append(f"  versus the {role} run on these images ({entry['run']}, {entry['oof_auc']:.4f}): "
                     f"ΔAUC {short_delta(entry)}, paired")  # fmt: skip
    best = versus.get("best")
    if best and best["delta_auc_ci95"][1] < 0:
        lines.append(f"  WORSE than run {best['run']}: {out / 'model'} now holds this run's model; that "
                     f"run's is in {out / 'runs' / best['run'] / 'model'} (--model takes either)")  # fmt: skip
    lines.append(
        f"outputs: {out} (report: {out / 'report' / 'report.html'}, open it in a browser; "
        "and report.md)"
    )
    return "\n".join(lines)


def clinical_lines(metrics: dict) -> list[str]:
    """The blend's ISIC 2024 metrics with their intervals; the unsupported ones say why."""
    from .metrics import METRICS, SHORT, interval_text

    parts, missing = [], []
    for name in METRICS:
        if name == "auc":
            continue
        value = metrics.get(f"oof_{name}")
        if value is None:
            missing.append(name)
            continue
        parts.append(f"{SHORT[name]} {interval_text(value, metrics[f'oof_{name}_ci95'])}")
    lines = ["  blend " + "; ".join(parts[i : i + 3]) for i in range(0, len(parts), 3)]
    reasons = metrics.get("not_reported") or {}
    lines += [f"  not reported: {name} ({reasons.get(name)})" for name in missing]
    return lines


def ablation_lines(ablation: dict) -> list[str]:
    from .compare import delta_text

    rows = ablation.get("groups") or []
    if not rows:
        return []
    lines = ["  what each feature group is worth (blend with it minus without it, tuned parameters "
             "kept, paired 95% CI):"]  # fmt: skip
    if ablation.get("unreadable"):
        lines.append(f"    ({ablation['unreadable']})")
    width = max(len(row["group"]) for row in rows)
    for row in rows:
        pauc = ""
        if row.get("delta_pauc80") is not None:
            pauc = f"; ΔpAUC80 {delta_text(row['delta_pauc80'], row['delta_pauc80_ci95'])}"
        lines.append(f"    {row['group']:<{width}} ΔAUC "
                     f"{delta_text(row['delta_auc'], row['delta_auc_ci95'])}{pauc}")  # fmt: skip
    return lines


def newest_stage2(holding: str, root: Path = Path("data/out")) -> Path:
    """The most recently written ``root/*/stage2`` folder that holds ``holding``; says which."""
    from .errors import OutputError

    found = sorted(root.glob(f"*/stage2/{holding}"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise OutputError(
            f"No stage 2 folder under {root}/ holds {holding}: train first (./run_all.sh), or "
            "pass --out with the stage 2 folder (e.g. --out data/out/my-isic/stage2)."
        )
    print(f"(the newest stage 2 folder under {root}/: {found[-1].parent}; --out chooses another)",
          file=sys.stderr)  # fmt: skip
    return found[-1].parent


def main(argv: list[str] | None = None) -> int:
    """Run one command; the exit code: 0, 2 for a user error (one paragraph), 130 on Ctrl-C."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    setup_logging(args.verbose)

    def _main() -> int:
        if args.command == "train":
            return _train(args)
        if args.command == "predict":
            from .model.predict import format_predict_summary, run_predict

            summary = run_predict(args.model, args.features_dir, args.out or args.features_dir,
                                  args.split, args.explain)  # fmt: skip
            print(format_predict_summary(summary))
            return 0
        if args.command == "inspect":
            from .inspect_studies import inspect_command

            out = args.out or (None if args.storage else newest_stage2("optuna.db"))
            return inspect_command(out or Path("."), args.storage, args.study, args.top)
        from .outputs import RUNS_FILE

        if args.command == "compare":
            from .compare import compare_command

            if args.baseline and args.run_a and args.run_b:
                raise ConfigError(
                    "Give two runs or --baseline best with at most one run, not both."
                )
            run_b = args.run_b or (args.run_a if args.baseline else None)
            run_a = None if args.baseline else args.run_a
            return compare_command(args.out or newest_stage2(RUNS_FILE), run_a, run_b,
                                   args.baseline, args.model, args.bootstrap, args.json)  # fmt: skip
        if args.command == "ablate":
            from .ablate import ablate_run

            stage2 = args.out or newest_stage2(RUNS_FILE)
            metrics = ablate_run(stage2, args.run)
            lines = ablation_lines(metrics["ablation"]) or ["  nothing to leave out: one group"]
            print("\n".join([f"run {metrics['run_id']}:", *lines]))
            print(f"added to {stage2 / 'runs' / metrics['run_id'] / 'metrics.json'} (no new run, "
                  "no model replaced)")  # fmt: skip
            return 0
        from .runs import print_runs

        return print_runs(args.out or newest_stage2(RUNS_FILE))

    return run_cli(_main)


if __name__ == "__main__":
    sys.exit(main())
