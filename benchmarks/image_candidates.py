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
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import HAM, SHARED, isic_jpeg_layout, machine, require_shared
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
}
SETS = ("ham-half", "ham-lesions", "isic")


def features_of(name: str, work: Path, **settings: Any) -> Path:
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
    run_stage1(replace(config, **settings))
    return out


def interval(result: dict, name: str) -> str:
    low, high = result[f"delta_{name}_ci95"]
    return f"{result[f'delta_{name}']:+.3f} [{low:+.3f}, {high:+.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/melanoma-candidates"))
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS)
    parser.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=CANDIDATES)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    print(f"machine: {machine()}; {args.trials} trials per model; {time.strftime('%Y-%m-%d')}")
    print("| set | candidate | defaults AUC | with it | ΔAUC [paired 95% CI] | ΔpAUC80 [paired 95% CI] "
          "| seconds (defaults / with it) |\n| --- | --- | --- | --- | --- | --- | --- |")  # fmt: skip
    for name in args.sets:
        runs = {}
        for label, (extra, settings) in [
            ("defaults", ((), {})),
            *((c, CANDIDATES[c]) for c in args.candidates),
        ]:
            features = features_of(name, args.work, **settings)
            config = Stage2Config(features_dir=features, out_dir=args.work / name / "stage2",
                                  feature_groups=(*DEFAULT_GROUPS, *extra), n_trials=args.trials,
                                  report=False)  # fmt: skip
            started = time.perf_counter()
            runs[label] = (run_training(config).run_id, time.perf_counter() - started)
        base = read_evidence(args.work / name / "stage2", runs["defaults"][0])
        for label in args.candidates:
            result = compare_evidence(
                base, read_evidence(args.work / name / "stage2", runs[label][0])
            )
            print(f"| {name} | + {label} | {result['a_auc']:.3f} | {result['b_auc']:.3f} | "
                  f"{interval(result, 'auc')} | {interval(result, 'pauc80')} | "
                  f"{runs['defaults'][1]:.0f} / {runs[label][1]:.0f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
