"""What the same lesion in two folds does to the out-of-fold AUC, and whether the data check's
merge undoes it: every image of the shared half of HAM10000's lesions, each image given its own
patient id (as datasets without patient ids do), melanoma vs the six other diagnoses.

    .venv/bin/python benchmarks/lesion_folds.py --work /tmp/melanoma-lesions

Three stage 2 runs on the same Lite0 embeddings and settings, differing only in the fold groups:
one patient per image (``--no-merge-duplicates``: a lesion's images fall into different folds),
the images merged by ``python -m stage1_embed check``'s same-lesion pairs (the default once the
check has run), and the true lesions (``lesion_id``). Each AUC has a bootstrap interval over true
lesions, and each run is paired against the true-lesion run on the same images (resampling the
same lesions for both).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import SHARED, machine, require_shared
from stage1_embed.check import run_check
from stage1_embed.config import Stage1Config
from stage1_embed.folds import write_same_lesion_links
from stage1_embed.pipeline import run_stage1
from stage2_boost.config import Stage2Config
from stage2_boost.metrics import bootstrap_auc_ci, paired_differences
from stage2_boost.train import run_training
from tests.conftest import lite0_dir

LESIONS = SHARED / "data" / "ham10000_lesions"


def true_links(manifest: pd.DataFrame, truth: pd.DataFrame) -> list[dict[str, str]]:
    """Every pair of images of one lesion, as the data check would write them."""
    rows = manifest.merge(truth[["image_name", "lesion_id"]], on="image_name")
    links = []
    for _, group in rows.groupby("lesion_id"):
        first = group.iloc[0]
        for _, other in group.iloc[1:].iterrows():
            links.append({"image_a": first["image_name"], "image_b": other["image_name"],
                          "sha256_a": first["content_sha256"], "sha256_b": other["content_sha256"]})  # fmt: skip
    return links


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", type=Path, default=Path("/tmp/melanoma-lesions"))
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args()
    truth = pd.read_csv(require_shared(LESIONS) / "train.csv")
    args.work.mkdir(parents=True, exist_ok=True)
    csv = args.work / "one_patient_per_image.csv"
    truth.assign(patient_id=truth["image_name"]).to_csv(csv, index=False)
    features = args.work / "features"
    stage1 = Stage1Config(train_csv=csv, images_dir=LESIONS / "jpeg" / "train", out_dir=features,
                          backbones=(f"local-dir:{lite0_dir()}",), progress=False)  # fmt: skip
    run_stage1(stage1)
    started = time.perf_counter()
    check = run_check(stage1)
    check_seconds = time.perf_counter() - started
    # the true lesions: the same features with every same-lesion pair as the links (hard links;
    # the links file is replaced, never written through)
    exact = args.work / "features-true-lesions"
    shutil.rmtree(exact, ignore_errors=True)
    shutil.copytree(features, exact, copy_function=os.link, ignore=shutil.ignore_patterns("stage2"))
    manifest = pd.read_parquet(features / "manifest.parquet")
    write_same_lesion_links(exact, true_links(manifest, truth))
    runs = {
        "one patient per image": (features, False),
        "merged by the data check": (features, True),
        "true lesions": (exact, True),
    }
    oof = {}
    for label, (folder, merge) in runs.items():
        out = args.work / "stage2" / label.replace(" ", "-")
        started = time.perf_counter()
        result = run_training(Stage2Config(features_dir=folder, out_dir=out, n_trials=args.trials,
                                           merge_duplicates=merge, report=False))  # fmt: skip
        print(f"{label}: {time.perf_counter() - started:.0f} s, "
              f"{result.metrics['folds']}")  # fmt: skip
        oof[label] = pd.read_parquet(out / "oof.parquet").set_index("image_name")["blend"]
    lesion = truth.set_index("image_name")["lesion_id"]
    target = truth.set_index("image_name")["target"]
    names = oof["true lesions"].index
    pairs = [p for p in check["near_duplicates"] if not p["same_patient"]]
    hits = sum(lesion[p["image_a"]] == lesion[p["image_b"]] for p in pairs)
    n_true = int((lesion.value_counts() * (lesion.value_counts() - 1) // 2).sum())
    print(f"machine: {machine()}; {len(names)} images, {int(target[names].sum())} melanomas, "
          f"{lesion.nunique()} lesions; Lite0, {args.trials} trials")  # fmt: skip
    print(f"data check: {len(pairs)} same-lesion pairs across patients in {check_seconds:.0f} s, "
          f"precision {hits / max(1, len(pairs)):.3f}, recall {hits / n_true:.3f} "
          f"of {n_true} true pairs")  # fmt: skip
    print(
        "| fold groups | OOF AUC [95% CI, lesion bootstrap] | minus true lesions [paired 95% CI] |"
    )
    print("| --- | --- | --- |")
    y, units = target[names].to_numpy(), lesion[names].to_numpy()
    reference = oof["true lesions"][names].to_numpy()
    for label, scores in oof.items():
        score = scores[names].to_numpy()
        low, high = bootstrap_auc_ci(y, score, units)
        d = paired_differences(y, reference, score, units)
        dlow, dhigh = d["delta_auc_ci95"]
        print(f"| {label} | {d['b_auc']:.3f} [{low:.3f}, {high:.3f}] | "
              f"{d['delta_auc']:+.3f} [{dlow:+.3f}, {dhigh:+.3f}] |")  # fmt: skip


if __name__ == "__main__":
    main()
