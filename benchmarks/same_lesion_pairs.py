"""Which signal finds the same lesion photographed twice? Precision and recall of image pairs
against HAM10000's ``lesion_id``, on every image of the shared half of its lesions.

    .venv/bin/python benchmarks/same_lesion_pairs.py --work /tmp/melanoma-lesions
    .venv/bin/pip install imagehash   # optional: adds the perceptual-hash rows

Candidates: the cosine similarity of stage 1's Lite0 embeddings (every pair, and only pairs whose
age, sex and site agree, as a lesion's images do), and perceptual hashes (pHash, dHash, wHash:
Hamming distance). Stage 1 runs once (cached under --work).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import SHARED, WEIGHTS, machine, require_shared
from stage1_embed.config import Stage1Config
from stage1_embed.pipeline import run_stage1

LESIONS = SHARED / "data" / "ham10000_lesions"


def rows(label: str, score: np.ndarray, same: np.ndarray, cuts: list[float]) -> list[str]:
    """One table row per cut: pairs with ``score >= cut``."""
    out = []
    for cut in cuts:
        found = score >= cut
        hits = int((found & same).sum())
        out.append(f"| {label} | {cut:g} | {int(found.sum())} | {hits / max(1, found.sum()):.3f} "
                   f"| {hits / same.sum():.3f} |")  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", type=Path, default=Path("/tmp/melanoma-lesions"))
    args = parser.parse_args()
    truth = pd.read_csv(require_shared(LESIONS) / "train.csv")
    args.work.mkdir(parents=True, exist_ok=True)
    csv = args.work / "one_patient_per_image.csv"
    truth.assign(patient_id=truth["image_name"]).to_csv(csv, index=False)
    out = args.work / "features"
    run_stage1(Stage1Config(train_csv=csv, images_dir=LESIONS / "jpeg" / "train", out_dir=out,
                            backbones=(f"local-dir:{WEIGHTS / 'tf_efficientnet_lite0'}",),
                            progress=False))  # fmt: skip
    emb = pd.read_parquet(out / "embeddings" / "tf_efficientnet_lite0.parquet")
    t = truth.set_index("image_name").loc[emb["image_name"]]
    x = np.stack(emb["embedding"].to_numpy()).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    upper = np.triu_indices(len(x), 1)
    lesion = t["lesion_id"].to_numpy()
    same = lesion[upper[0]] == lesion[upper[1]]
    similarity = x @ x.T
    np.fill_diagonal(similarity, -1)
    cosine = similarity[upper]
    repeats = pd.Series(lesion).map(pd.Series(lesion).value_counts()).to_numpy() > 1
    first = (lesion[similarity.argmax(1)] == lesion)[repeats].mean()
    print(f"the nearest image by Lite0 cosine is of the same lesion for {first:.1%} of the "
          f"{int(repeats.sum())} images whose lesion has another image")  # fmt: skip
    key = (
        t["sex"].astype(str)
        + t["age_approx"].astype(str)
        + t["anatom_site_general_challenge"].astype(str)
    ).to_numpy()
    agree = key[upper[0]] == key[upper[1]]
    print(f"machine: {machine()}; {len(x)} images, {len(lesion) - len(set(lesion))} repeat images, "
          f"{int(same.sum())} same-lesion pairs")  # fmt: skip
    print(
        "| signal | threshold | pairs found | precision | recall |\n| --- | --- | --- | --- | --- |"
    )
    lines = rows("Lite0 cosine", cosine, same, [0.90, 0.94, 0.96])
    lines += rows(
        "Lite0 cosine, age/sex/site agree", np.where(agree, cosine, -1), same, [0.80, 0.88, 0.90]
    )
    try:
        import imagehash
        from PIL import Image
    except ImportError:
        lines.append("| perceptual hashes | - | - | - | - (pip install imagehash) |")
    else:
        for kind in ("phash", "dhash", "whash"):
            bits = np.array([getattr(imagehash, kind)(Image.open(LESIONS / "jpeg" / "train" / f"{n}.jpg")).hash.ravel()
                             for n in emb["image_name"]], dtype=np.float32)  # fmt: skip
            distance = (bits @ (1 - bits).T + (1 - bits) @ bits.T)[upper]
            lines += rows(f"{kind}, minus Hamming distance", -distance, same, [0, -2, -4])
    lines += keypoint_rows(emb["image_name"].tolist(), t, x, lesion)
    print("\n".join(lines))


def keypoint_rows(
    names: list[str], meta: pd.DataFrame, x: np.ndarray, lesion: np.ndarray
) -> list[str]:
    """The data check's method (same_lesion.py): each image's nearest images by cosine within
    its age/sex/site block, checked by ORB keypoints and a RANSAC similarity transform; a row
    per inlier threshold, recall against every same-lesion pair."""
    from PIL import Image

    from stage1_embed.same_lesion import NEIGHBOURS, candidate_pairs, inliers, keypoints

    started = time.perf_counter()
    pairs = candidate_pairs(meta.reset_index(), x)
    points = [keypoints(Image.open(LESIONS / "jpeg" / "train" / f"{n}.jpg")) for n in names]
    counts = np.array([inliers(points[i], points[j]) for i, j in pairs])
    seconds = time.perf_counter() - started
    same = lesion[pairs[:, 0]] == lesion[pairs[:, 1]]
    n_true = int((pd.Series(lesion).value_counts().pipe(lambda c: c * (c - 1) // 2)).sum())
    out = [f"| {NEIGHBOURS} nearest (cosine, same age/sex/site), then keypoints: candidates "
           f"| - | {len(pairs)} | {same.mean():.3f} | {same.sum() / n_true:.3f} |"]  # fmt: skip
    for cut in (6, 8, 10, 20):
        found = counts >= cut
        hits = int((found & same).sum())
        out.append(f"| ... keypoint inliers (ORB + RANSAC) | >= {cut} | {int(found.sum())} | "
                   f"{hits / max(1, found.sum()):.3f} | {hits / n_true:.3f} |")  # fmt: skip
    out.append(f"| (keypoints of every image and the checks of every candidate: {seconds:.0f} s) "
               "| | | | |")  # fmt: skip
    return out


if __name__ == "__main__":
    main()
