"""Which image features earn a place among the defaults? Each candidate feature group is added
to the default stack and judged by ``compare`` against the defaults on the same folds: the
paired patient-bootstrap interval of the difference in OOF AUC and pAUC80, and the seconds the
run took (for a stage 1 candidate, stage 2 only: stage 1's own cost is printed apart).

    .venv/bin/python benchmarks/image_candidates.py --work /tmp/melanoma-candidates
    .venv/bin/python benchmarks/image_candidates.py --sets ham-half --candidates neighbours

Sets: the HAM10000 half (melanoma vs nevus, one image per lesion), every image of the HAM10000
lesions (melanoma vs the six other diagnoses, patient = lesion), and the shared ISIC JPEGs in
natural colours (27 melanomas: direction only). Stage 1 runs once per set with the default
backbones (cached under --work); each set's runs share one stage 2 folder, so they share folds.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import HAM, SHARED, WEIGHTS, isic_jpeg_layout, machine, require_shared
from stage1_embed.config import Stage1Config
from stage1_embed.pipeline import run_stage1
from stage2_boost.compare import compare_evidence
from stage2_boost.config import DEFAULT_GROUPS, Stage2Config
from stage2_boost.evidence import read_evidence
from stage2_boost.train import run_training

# candidate -> (feature groups added to the defaults, stage 1 settings changed)
CANDIDATES: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "neighbours": (("neighbours",), {}),
    "diagnosis": (("diagnosis",), {}),
    "patient-scores": (("patient-scores",), {}),
    "neighbours + patient-scores": (("neighbours", "patient-scores"), {}),
    "shades-of-gray": ((), {"colour_constancy": "shades-of-gray"}),
    "catavgmax pooling": ((), {"pooling": "catavgmax"}),
    "last two stages": ((), {"stages": ("last", "last-1")}),
    "head + last two stages": ((), {"stages": ("head", "last", "last-1")}),
    "last three stages": ((), {"stages": ("last", "last-1", "last-2")}),
    "input 288 px": ((), {"input_size": 288}),
    "hflip + vflip TTA": ((), {"tta": ("hflip", "vflip")}),
    "pos-neg stage pooling": ((), {"stage_pooling": "pos-neg"}),
    "GeM stage pooling": ((), {"stage_pooling": "gem"}),
}
# candidate -> the expert recipe's changes to the CPU defaults: Lite0 fine-tuned in the evaluation
# folds (the expert stage), stacked as the `expert` group
EXPERTS: dict[str, dict[str, Any]] = {
    "expert": {},
    "expert 160 px": {"image_size": 160},
    "expert EMA": {"ema": 0.99},
    "expert EMA 6 epochs": {"ema": 0.99, "epochs": 6},
    "expert layer decay 0.85": {"layer_decay": 0.85},
    "expert mixup 0.4": {"mixup": 0.4},
}
EXPERT_SPEC = f"local-dir:{WEIGHTS / 'tf_efficientnet_lite0'}"
SETS = ("ham-half", "ham-lesions", "isic")


def features_of(name: str, work: Path, **settings: Any) -> tuple[Path, Stage1Config]:
    """Stage 1 output (default backbones, with ``settings``) for one set, made once."""
    words = ["-".join(v) if isinstance(v, tuple) else str(v) for v in settings.values()]
    out = work / name / "-".join(["features", *words])
    if name == "ham-half":
        config = Stage1Config(data_dir=require_shared(HAM), out_dir=out, progress=False)
    elif name == "ham-lesions":
        lesions = require_shared(SHARED / "data" / "ham10000_lesions")
        config = Stage1Config(train_csv=lesions / "train.csv", images_dir=lesions / "jpeg" / "train",
                              out_dir=out, progress=False)  # fmt: skip
    else:
        data = isic_jpeg_layout(work / "isic-data")
        config = Stage1Config(data_dir=data, out_dir=out, progress=False)
    config = replace(config, **settings)
    run_stage1(config)
    return out, config


def run_expert(stage1: Stage1Config, recipe: dict[str, Any]) -> tuple[str, float]:
    """Fine-tune Lite0 with ``recipe`` in the evaluation folds, in its own process as run_all.sh
    runs it (torch's and LightGBM's OpenMP runtimes in one process crashed LightGBM here); the
    expert's slug and the seconds it took. Each expert candidate overwrites the last one's
    probabilities (its stage 2 run comes first)."""
    data = stage1.data_dir or (stage1.train_csv.parent if stage1.train_csv else Path("."))
    command = [sys.executable, "-m", "stage1_embed.experts", "--data", str(data),
               "--out", str(stage1.out_dir), "--experts", EXPERT_SPEC, "--no-progress"]  # fmt: skip
    if stage1.images_dir:
        command += ["--images", str(stage1.images_dir)]
    for key, value in recipe.items():
        command += [f"--{key.replace('_', '-')}", str(value)]
    started = time.perf_counter()
    subprocess.run(command, check=True)
    return Path(EXPERT_SPEC.removeprefix("local-dir:")).name, time.perf_counter() - started


def interval(result: dict, name: str) -> str:
    low, high = result[f"delta_{name}_ci95"]
    return f"{result[f'delta_{name}']:+.3f} [{low:+.3f}, {high:+.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/melanoma-candidates"))
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS)
    parser.add_argument("--candidates", nargs="+", default=list(CANDIDATES),
                        choices=[*CANDIDATES, *EXPERTS])  # fmt: skip
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    print(f"machine: {machine()}; {args.trials} trials per model; {time.strftime('%Y-%m-%d')}")
    print("| set | candidate | defaults AUC | with it | ΔAUC [paired 95% CI] | ΔpAUC80 [paired 95% CI] "
          "| seconds (defaults / with it) |\n| --- | --- | --- | --- | --- | --- | --- |")  # fmt: skip
    for name in args.sets:
        runs, expert_seconds = {}, {}
        for label in ["defaults", *args.candidates]:
            extra, settings = CANDIDATES.get(label, ((), {}))
            features, stage1 = features_of(name, args.work, **settings)
            experts: tuple[str, ...] = ()
            if label in EXPERTS:
                slug, expert_seconds[label] = run_expert(stage1, EXPERTS[label])
                experts, extra = (slug,), ("expert",)
            config = Stage2Config(features_dir=features, out_dir=args.work / name / "stage2",
                                  feature_groups=(*DEFAULT_GROUPS, *extra), n_trials=args.trials,
                                  experts=experts, report=False)  # fmt: skip
            started = time.perf_counter()
            runs[label] = (run_training(config).run_id, time.perf_counter() - started)
        base = read_evidence(args.work / name / "stage2", runs["defaults"][0])
        for label in args.candidates:
            expert_cost = (f" (expert stage: {expert_seconds[label]:.0f})"
                           if label in expert_seconds else "")  # fmt: skip
            result = compare_evidence(
                base, read_evidence(args.work / name / "stage2", runs[label][0])
            )
            print(f"| {name} | + {label} | {result['a_auc']:.3f} | {result['b_auc']:.3f} | "
                  f"{interval(result, 'auc')} | {interval(result, 'pauc80')} | "
                  f"{runs['defaults'][1]:.0f} / {runs[label][1]:.0f}{expert_cost} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
